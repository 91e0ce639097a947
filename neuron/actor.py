"""The message loop shared by neurons and the loss head: decode, reject, generations, duplicates, control."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter

from broker.base import Broker, Delivery
from broker.errors import BrokerError
from neuron import codec
from neuron.errors import CodecError, ProtocolError
from neuron.topology import Topology

log = logging.getLogger(__name__)

# how many steps ahead of its own an actor buffers; the driver keeps fewer in flight
STEP_WINDOW = 8
# messages of a generation not yet started that an actor keeps (a restarted peer may be ahead of it)
FUTURE_LIMIT = 4096


class Actor(ABC):
    """One participant of a run with its own inbound queue; subclasses handle data messages."""

    def __init__(self, topo: Topology, layer: int, index: int, broker: Broker) -> None:
        self.topo = topo
        self.layer = layer
        self.index = index
        self.broker = broker
        self.schema = topo.schema_for(layer, index)
        self.queue = topo.queue(layer, index)
        self.driver_queue = topo.queue(0)
        self.generation: int | None = None
        self.step = 0
        self.stats: Counter = Counter()
        self.running = True
        self._future: list[codec.Message] = []
        self._seen: set[tuple] = set()

    @property
    def name(self) -> str:
        """Human name of this actor, e.g. L2.1 or head."""
        return "head" if self.layer == self.topo.head_layer else f"L{self.layer}.{self.index}"

    def run(self, stop: threading.Event | None = None, poll: float = 0.2) -> None:
        """Handle messages until told to stop (a `stop` control message or the `stop` event)."""
        while self.running and not (stop is not None and stop.is_set()):
            delivery = self.broker.get(self.queue, timeout=poll)
            if delivery is not None:
                self.handle(delivery)

    def handle(self, delivery: Delivery) -> None:
        """Decode, route and settle one delivery; bad messages are dead-lettered and counted, never raised."""
        self.stats["in"] += 1
        try:
            msg = codec.decode(delivery.body, self.schema)
            self._dispatch(msg)
        except (CodecError, ProtocolError) as exc:
            self.stats["rejected"] += 1
            log.warning("%s rejected a message: %s", self.name, exc)
            self.broker.reject(delivery, f"{type(exc).__name__}: {exc}")
            return
        self.broker.ack(delivery)

    def _dispatch(self, msg: codec.Message) -> None:
        if msg.kind == codec.CONTROL:
            self._control(msg)
            return
        if self.generation is None or msg.generation > self.generation:
            if len(self._future) >= FUTURE_LIMIT:
                raise ProtocolError(f"more than {FUTURE_LIMIT} messages of a future generation")
            self._future.append(msg)
            return
        if msg.generation < self.generation:
            self.stats["stale"] += 1
            return
        key = (msg.kind, msg.flags & codec.EVAL, msg.step, msg.micro, msg.src_layer, msg.src_index)
        if key in self._seen or msg.step < self.step:
            self.stats["duplicate"] += 1
            return
        if msg.step > self.step + STEP_WINDOW:
            raise ProtocolError(f"step {msg.step} is too far ahead of step {self.step}")
        self.on_data(msg)
        self._seen.add(key)
        self.progress()

    def _control(self, msg: codec.Message) -> None:
        data = msg.data
        op = data.get("op")
        if op == "stop":
            self.running = False
            return
        if op != "start":
            raise ProtocolError(f"unknown control operation {op!r}")
        generation, version = data.get("generation"), data.get("version")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (generation, version)):
            raise ProtocolError("start needs non-negative integer generation and version")
        if self.generation is not None and generation <= self.generation:
            self.stats["stale"] += 1
            return
        self.generation, self.step = generation, version
        self._seen.clear()
        self.on_start(version)
        self.report({"event": "ready", "generation": generation, "version": version})
        pending, self._future = self._future, []
        for queued in pending:
            try:
                self._dispatch(queued)
            except ProtocolError as exc:
                self.stats["rejected"] += 1
                log.warning("%s dropped a buffered message: %s", self.name, exc)

    def forget_before(self, step: int) -> None:
        """Drop duplicate-filter entries of steps before `step` (they can no longer be accepted anyway)."""
        self._seen = {k for k in self._seen if k[2] >= step}

    def send(self, queues, kind: int, step: int, *, micro: int = 0, nmicro: int = 0, flags: int = 0, array=None) -> None:
        """Encode one array message once and publish it to every queue of `queues`."""
        body = codec.encode(kind, self.topo.run_tag, self.generation, step, micro=micro, nmicro=nmicro,
                            source=(self.layer, self.index), flags=flags, array=array)
        self.broker.publish_many(queues, body)
        self.stats["out"] += len(queues)

    def report(self, data: dict) -> None:
        """Send a JSON event to the driver."""
        body = codec.encode(codec.REPORT, self.topo.run_tag, self.generation or 0, self.step,
                            source=(self.layer, self.index), data={**data, "actor": self.name})
        self.broker.publish(self.driver_queue, body)
        self.stats["out"] += 1

    def fail(self, exc: BaseException) -> None:
        """Tell the driver this actor hit an unrecoverable error (the driver then ends or recovers the run)."""
        try:
            self.report({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        except BrokerError:
            log.exception("%s could not report its failure", self.name)

    @abstractmethod
    def on_start(self, version: int) -> None:
        """Reset per-generation state and load checkpoint `version`."""

    @abstractmethod
    def on_data(self, msg: codec.Message) -> None:
        """Buffer one accepted data message (validated, current generation, not a duplicate)."""

    @abstractmethod
    def progress(self) -> None:
        """Do every computation whose inputs are complete."""
