"""The neuron package's error tree."""
from __future__ import annotations


class NeuronError(Exception):
    """Base of every neuron error."""


class CodecError(NeuronError):
    """A message could not be decoded or does not fit the plan; it is rejected and dead-lettered."""


class MalformedMessage(CodecError):
    """The bytes are not a well-formed Cuttlefish message (magic, version, lengths, JSON)."""


class UnexpectedMessage(CodecError):
    """A well-formed message that this receiver must not get: wrong kind, source, dtype or shape."""


class BadSignature(CodecError):
    """A message whose HMAC is missing or wrong: not sent by a process holding the run's key."""


class ForeignMessage(CodecError):
    """A message of another training run."""


class NonFiniteValues(CodecError):
    """A float payload holding NaN or infinity."""


class OversizedMessage(CodecError):
    """A message larger than the receiver's limit."""


class ProtocolError(NeuronError):
    """Messages that are each valid but contradict each other (e.g. micro-batch counts of one step differ)."""


class CheckpointMissing(NeuronError):
    """The neuron was told to load a checkpoint the store does not have."""


class TrainingDiverged(NeuronError):
    """A neuron computed NaN or infinity: the run cannot go on (lower the learning rate)."""
