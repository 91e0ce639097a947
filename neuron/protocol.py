"""The step protocol: message kinds and flags, control operations, report events, and who sends what to whom.

One training step t of a network with layers 1..k (each split into neurons Li.s), the loss head H and
the driver D, with the batch split into M micro-batches m = 0..M-1:

1. D sends H the step's LABELS (nmicro = M), and every neuron of layer 1 an ACT per micro-batch
   (micro m, nmicro M, flags: CHECKPOINT on every `checkpoint_every`-th step and the last).
2. A neuron of layer i gathers the ACT of micro-batch m from every neuron of layer i-1 (the driver counts
   as layer 0), computes its slice of act(X W^T + b), keeps (x, z, a) for the backward pass and sends its
   slice as ACT to every neuron of layer i+1 (layer k sends to H).
3. H gathers the logits of m from every neuron of layer k, computes softmax cross-entropy against the
   labels and sends each neuron of layer k the GRAD of its columns.
4. A neuron with every GRAD part of m sums them in source order, computes dW, db and its share of dX, and
   sends each neuron of layer i-1 only the columns that neuron owns (layer 1 sends none).
5. With the gradients of all M micro-batches a neuron sums them in micro-batch order and applies its
   optimizer update once; the step is then t+1. With CHECKPOINT set it writes its slice as version t+1
   and REPORTs "checkpoint". H REPORTs the step's "loss" once all M micro-batches are scored.
6. D keeps at most `window` steps in flight ahead of the last loss it received; once every neuron reported
   "checkpoint" for a version, D commits that version as the run's latest in the store.

Evaluation reuses ACT with the EVAL flag: forward only, and H answers D with PRED (the argmax per row).

A generation is one uninterrupted stretch of the run. D opens it with a CONTROL "start" (generation g,
checkpoint version v, the topology): each actor loads v, answers REPORT "ready" and from then on drops
messages of older generations and duplicates, buffers messages of later generations (bounded in bytes),
and refuses data more than STEP_WINDOW steps ahead of its own step. "stop" ends the actors. A neuron process
says "hello" when it comes up, and "failed" when it cannot go on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Mapping, NamedTuple, TypeGuard, Union

from neuron.errors import ProtocolError
from neuron.role import HEAD, Role

if TYPE_CHECKING:
    from neuron.topology import Topology

# message kinds (the header's kind byte)
ACT = 1  # activations (or the driver's inputs, from layer 0) flowing forward
GRAD = 2  # gradient wrt the receiver's outputs flowing backward
LABELS = 3  # a step's labels, driver -> loss head
PRED = 4  # eval predictions, loss head -> driver
CONTROL = 5  # JSON command, driver -> actor
REPORT = 6  # JSON event, actor -> driver
KINDS = {ACT: "act", GRAD: "grad", LABELS: "labels", PRED: "pred", CONTROL: "control", REPORT: "report"}
JSON_KINDS = frozenset({CONTROL, REPORT})

# flags (the header's flags byte)
EVAL = 1  # forward only, results go to the driver as predictions
CHECKPOINT = 2  # checkpoint after this step's update

# the header's generation and step fields are 32 and 64 bits wide
MAX_GENERATION = (1 << 32) - 1
MAX_STEP = (1 << 63) - 1
# how many steps ahead of its own an actor buffers; the driver keeps fewer in flight
STEP_WINDOW = 8


class Route(NamedTuple):
    """One kind of message: who sends it, who receives it, and what it carries."""

    kind: int
    sender: str
    receiver: str
    carries: str


ROUTES = (
    Route(ACT, "driver", "layer 1", "a micro-batch of inputs (with EVAL: test inputs)"),
    Route(ACT, "layer i", "layer i+1, or the head after the last layer", "the sender's slice of the activations"),
    Route(LABELS, "driver", "head", "the labels of a step, once per step"),
    Route(GRAD, "head", "the last layer", "the gradient of the receiver's columns of the logits"),
    Route(GRAD, "layer i+1", "layer i", "the receiver's columns of the gradient wrt its outputs"),
    Route(PRED, "head", "driver", "predicted classes of an EVAL micro-batch"),
    Route(CONTROL, "driver", "every neuron and the head", "start or stop"),
    Route(REPORT, "every neuron and the head", "driver", "hello, ready, loss, checkpoint or failed"),
)


def expected_sources(topo: Topology, role: Role) -> dict[tuple[int, int, int], int | None]:
    """What `role` accepts: (kind, source layer, source index) -> width of a 2-D array, 0 for 1-D, None for JSON.

    This is ROUTES for one receiver under `topo`; the codec refuses everything else.
    """
    cols: dict[tuple[int, int, int], int | None] = {}
    if role.is_driver:
        for src in [*topo.neurons(), HEAD]:
            cols[(REPORT, *src)] = None
        cols[(PRED, *HEAD)] = 0
        return cols
    cols[(CONTROL, 0, 0)] = None
    previous = topo.depth if role.is_head else role.layer - 1
    for s, (a, b) in enumerate(topo.splits(previous)):
        cols[(ACT, previous, s)] = b - a
    if role.is_head:
        cols[(LABELS, 0, 0)] = 0
        return cols
    a, b = topo.splits(role.layer)[role.index]
    if role.layer == topo.depth:
        cols[(GRAD, *HEAD)] = b - a
    else:
        for s in range(topo.shards[role.layer]):
            cols[(GRAD, role.layer + 1, s)] = b - a
    return cols


# -- control operations (driver -> actors) ------------------------------------------------------------

START = "start"
STOP = "stop"


@dataclass(frozen=True)
class Start:
    """Open `generation` from committed checkpoint `version`, maybe under a new split (`topology`)."""

    generation: int
    version: int
    topology: dict | None = None
    token: int = 0  # the fencing token of the driver's lease: actors obey no driver older than one they saw

    def to_data(self) -> dict:
        """The JSON object of the CONTROL message."""
        data = {"op": START, "generation": self.generation, "version": self.version, "token": self.token}
        if self.topology is not None:
            data["topology"] = self.topology
        return data


@dataclass(frozen=True)
class Stop:
    """End every actor of `generation` or a later one."""

    generation: int
    token: int = 0

    def to_data(self) -> dict:
        """The JSON object of the CONTROL message."""
        return {"op": STOP, "generation": self.generation, "token": self.token}


def parse_control(data: Mapping) -> Start | Stop:
    """The control operation in a CONTROL message's JSON; ProtocolError if it is unknown or out of range."""
    op = data.get("op")
    if op not in (START, STOP):
        raise ProtocolError(f"unknown control operation {op!r}")
    generation, version, token = data.get("generation"), data.get("version", 0), data.get("token", 0)
    if not _bounded(generation, MAX_GENERATION) or not _bounded(version, MAX_STEP) or not _bounded(token, MAX_STEP):
        raise ProtocolError(f"{op} needs integer generation, version and token within the header's range")
    if op == STOP:
        return Stop(generation, token)
    topology = data.get("topology")
    if "topology" in data and not isinstance(topology, dict):
        raise ProtocolError("start carries a malformed topology")
    return Start(generation, version, topology, token)


def _bounded(value: object, limit: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


# -- report events (actors -> driver) -------------------------------------------------------------------

HELLO = "hello"
READY = "ready"
LOSS = "loss"
SAVED = "checkpoint"
FAILED = "failed"


@dataclass(frozen=True)
class Hello:
    """A neuron process came up (a restarted one has lost its state)."""

    actor: str
    pid: int | None = None
    host: str | None = None
    event = HELLO


@dataclass(frozen=True)
class Ready:
    """The actor loaded checkpoint `version` and serves `generation`."""

    actor: str
    generation: int | None = None
    version: int | None = None
    event = READY


@dataclass(frozen=True)
class Loss:
    """The head scored every micro-batch of `step`."""

    actor: str
    step: int
    loss: float
    correct: int | None
    samples: int
    event = LOSS


@dataclass(frozen=True)
class Saved:
    """A neuron wrote its slice (rows of `layer`) as checkpoint `version`."""

    actor: str
    version: int
    layer: int | None = None
    rows: list | None = None
    event = SAVED


@dataclass(frozen=True)
class Failed:
    """The actor cannot go on (divergence, an unloadable checkpoint): the run ends."""

    actor: str
    error: str
    event = FAILED


Report = Union[Hello, Ready, Loss, Saved, Failed]


def report_data(report: Report) -> dict:
    """The JSON object of a REPORT message."""
    # field by field, not asdict: that deep-copies, and a report is sent once a step (its values are not mutated)
    return {"event": report.event, **{f.name: getattr(report, f.name) for f in fields(report)}}


def parse_report(data: Mapping) -> Report | None:
    """The event in a REPORT message's JSON, None for an unknown one; KeyError, TypeError or ValueError if malformed."""
    event, actor = data.get("event"), str(data.get("actor"))
    if event == HELLO:
        return Hello(actor, data.get("pid"), data.get("host"))
    if event == FAILED:
        return Failed(actor, str(data.get("error")))
    if event == READY:
        return Ready(actor, data.get("generation"), data.get("version"))
    if event == LOSS:
        step, loss, samples = data["step"], float(data["loss"]), data["samples"]
        if not (isinstance(step, int) and isinstance(samples, int)):
            raise TypeError("step and samples must be integers")
        return Loss(actor, step, loss, data.get("correct"), samples)
    if event == SAVED:
        version = data["version"]
        if not isinstance(version, int):
            raise TypeError("checkpoint report needs an integer version")
        return Saved(actor, version, data.get("layer"), data.get("rows"))
    return None
