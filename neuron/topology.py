"""What every actor of a run must agree on: layer sizes, row splits, hyperparameters and queue names."""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

import numpy as np

from neuron import codec, protocol
from neuron.kernels import HIDDEN_ACTIVATIONS
from neuron.optim import OPTIMIZERS
from neuron.role import HEAD, HEAD_LAYER, MAX_LAYER, Role

RUN_ID = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$")  # "." and ".." would name folders of a file store
# a neuron may receive one micro-batch of the widest layer plus headroom for the header
MAX_MESSAGE_FLOOR = 1 << 20


def split_rows(units: int, parts: int) -> tuple[tuple[int, int], ...]:
    """Row ranges of `units` rows split into `parts` contiguous near-equal pieces (larger pieces first)."""
    base, extra = divmod(units, parts)
    bounds, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        bounds.append((start, stop))
        start = stop
    return tuple(bounds)


def micro_sizes(rows: int, micro_batches: int) -> tuple[int, ...]:
    """Sizes of the micro-batches of a step of `rows` samples (as np.array_split; never an empty one)."""
    parts = min(micro_batches, rows)
    base, extra = divmod(rows, parts)
    return tuple(base + (1 if p < extra else 0) for p in range(parts))


@dataclass(frozen=True)
class Topology:
    """The run's network as the actors see it; layer 0 is the input (the driver), then layers 1..depth."""

    run_id: str
    sizes: tuple[int, ...]
    shards: tuple[int, ...]
    activation: str = "relu"
    dtype: str = "float32"
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    batch_size: int = 100
    micro_batches: int = 1
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    steps_per_epoch: int = 0  # needed only with lr_decay < 1
    # the run's message key: never in to_dict (the manifest, start messages), repr or comparisons
    key: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not RUN_ID.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r} must match {RUN_ID.pattern}")
        if not 1 <= len(self.sizes) - 1 <= MAX_LAYER:
            raise ValueError(f"a network has 1-{MAX_LAYER} layers after the input, not {len(self.sizes) - 1}")
        if self.activation not in HIDDEN_ACTIVATIONS or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown activation {self.activation!r} or optimizer {self.optimizer!r}")
        if len(self.shards) != len(self.sizes) - 1:
            raise ValueError("one shard count per layer after the input is needed")
        for layer, (units, parts) in enumerate(zip(self.sizes[1:], self.shards), start=1):
            if not 1 <= parts <= units:
                raise ValueError(f"layer {layer}: {parts} shards for {units} units")

    def with_shards(self, layer: int, shards: int) -> "Topology":
        """This topology with `layer` (1-based) split into `shards` neurons (ValueError if impossible)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"no layer {layer}: the network has layers 1-{self.depth}")
        split = list(self.shards)
        split[layer - 1] = shards
        return replace(self, shards=tuple(split))

    def with_key(self, key: bytes) -> "Topology":
        """This topology holding the run's message key (ValueError if it is too short)."""
        return replace(self, key=codec.check_key(key))

    def same_network(self, other: "Topology") -> bool:
        """Whether `other` is this run and network, possibly split differently."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("shards")
        theirs.pop("shards")
        return mine == theirs

    @property
    def depth(self) -> int:
        """Number of layers with weights (hidden layers plus the output layer)."""
        return len(self.sizes) - 1

    @property
    def head_layer(self) -> int:
        """The layer number of the loss head (the same in every run: see neuron/role.py)."""
        return HEAD_LAYER

    @cached_property
    def run_tag(self) -> int:
        """64-bit tag of the run id carried by every message, so another run's messages are recognised."""
        return int.from_bytes(hashlib.blake2b(self.run_id.encode(), digest_size=8).digest(), "little")

    @property
    def np_dtype(self) -> np.dtype:
        """The little-endian NumPy dtype of parameters and activations."""
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def max_rows(self) -> int:
        """The largest micro-batch."""
        return math.ceil(self.batch_size / self.micro_batches)

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of global step `step`: learning_rate * lr_decay ** epoch."""
        if self.lr_decay == 1.0 or not self.steps_per_epoch:
            return self.learning_rate
        return self.learning_rate * self.lr_decay ** (step // self.steps_per_epoch)

    def splits(self, layer: int) -> tuple[tuple[int, int], ...]:
        """Row ranges owned by the neurons of `layer` (1..depth); layer 0 is the driver's single slice."""
        if layer == 0:
            return ((0, self.sizes[0]),)
        return split_rows(self.sizes[layer], self.shards[layer - 1])

    def activation_of(self, layer: int) -> str:
        """Hidden layers use the configured activation; the output layer is linear into the softmax."""
        return "linear" if layer == self.depth else self.activation

    def neurons(self) -> list[Role]:
        """(layer, index) of every neuron, layer by layer."""
        return [Role(layer, i) for layer in range(1, self.depth + 1) for i in range(self.shards[layer - 1])]

    def roles(self) -> list[Role]:
        """Every actor of the run: the neurons layer by layer, then the loss head."""
        return [*self.neurons(), HEAD]

    def queue(self, layer: int, index: int = 0) -> str:
        """The inbound queue of the actor at (layer, index): a neuron, the head or (layer 0) the driver."""
        return Role(layer, index).queue(self.run_id)

    @property
    def dead_letter_queue(self) -> str:
        """Where rejected messages of the run go."""
        return f"cf.{self.run_id}.dead"

    def actor_names(self) -> list[str]:
        """Name of every actor of the run, neurons layer by layer ("L2.1") then the loss head ("head")."""
        return [role.name for role in self.roles()]

    def layer_queues(self, layer: int) -> list[str]:
        """The inbound queues of the neurons of `layer`, by index."""
        return [self.queue(layer, index) for index in range(self.shards[layer - 1])]

    def all_queues(self) -> list[str]:
        """Every inbound queue of the run: neurons, head, driver."""
        return [role.queue(self.run_id) for role in self.roles()] + [self.queue(0)]

    def max_message_bytes(self) -> int:
        """Size limit of one message: the widest micro-batch payload plus header room."""
        widest = max(self.sizes)
        payload = max(self.max_rows * widest, self.batch_size) * self.np_dtype.itemsize
        return max(MAX_MESSAGE_FLOOR, 2 * payload)

    def schema_for(self, layer: int, index: int) -> codec.Schema:
        """What the actor at (layer, index) accepts (see protocol.expected_sources); (0, 0) is the driver."""
        cols = protocol.expected_sources(self, Role(layer, index))
        return codec.Schema(self.run_tag, self.key, self.np_dtype, self.max_rows, self.batch_size, self.max_message_bytes(), cols,
                            receiver=(layer, index))

    def to_dict(self) -> dict:
        """A JSON-ready description (stored in the run manifest), without the key."""
        data = asdict(self)
        del data["key"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Topology":
        """Inverse of to_dict."""
        fields = dict(data)
        fields.pop("key", None)  # a key never travels with a topology
        fields["sizes"] = tuple(fields["sizes"])
        fields["shards"] = tuple(fields["shards"])
        return cls(**fields)
