"""The message loop shared by neurons and the loss head: decode, reject, generations, duplicates, control.

The rules it enforces are the protocol's (neuron/protocol.py); subclasses hold the arithmetic.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter

import numpy as np

from broker.base import Broker, Delivery
from broker.errors import BrokerError
from neuron import codec, protocol
from neuron.errors import BadSignature, CheckpointMissing, CodecError, ProtocolError
from neuron.protocol import CONTROL, EVAL, STEP_WINDOW, Failed, Hello, Ready, Report, report_data
from neuron.role import DRIVER, Role
from neuron.topology import Topology

log = logging.getLogger(__name__)

# bytes of messages of a generation not yet started that an actor keeps (a restarted peer may be ahead)
FUTURE_BYTES = 256 << 20


class Actor(ABC):
    """One participant of a run with its own inbound queue; subclasses handle data messages."""

    def __init__(self, topo: Topology, layer: int, index: int, broker: Broker) -> None:
        self.topo = topo
        self.role = Role(layer, index)
        self._name = self.role.name  # asked for on every step (checks, reports): spelled once
        self.layer = layer
        self.index = index
        self.broker = broker
        self.schema = topo.schema_for(layer, index)
        self.queue = self.role.queue(topo.run_id)
        self.driver_queue = DRIVER.queue(topo.run_id)
        self.generation: int | None = None
        self.token = 0  # the highest fencing token of a driver seen in a control message
        self.step = 0
        self.stats: Counter = Counter()
        self.running = True
        self._future: list[codec.Message] = []
        self._future_bytes = 0
        self._seen: set[tuple] = set()

    @property
    def name(self) -> str:
        """Human name of this actor, e.g. L2.1 or head."""
        return self._name

    def run(self, stop: threading.Event | None = None, poll: float = 0.2) -> None:
        """Handle messages until told to stop (a `stop` control message or the `stop` event)."""
        reconnects = self.broker.reconnects
        while self.running and not (stop is not None and stop.is_set()):
            delivery = self.broker.get(self.queue, timeout=poll)
            if self.broker.reconnects != reconnects:
                reconnects = self.broker.reconnects
                self.announce_reconnect()
            if delivery is not None:
                self.handle(delivery)

    def announce_reconnect(self) -> None:
        """Say hello again after the broker connection came back: what this actor sent just before may be
        gone with it, and a hello from a ready actor makes the driver replay at once."""
        self.report(Hello(self.name))

    def handle(self, delivery: Delivery) -> None:
        """Decode, route and settle one delivery; bad messages are dead-lettered and counted, never raised."""
        self.stats["in"] += 1
        try:
            msg = codec.received(delivery, self.schema)
            # overflow shows up as inf/NaN, which the neurons check for explicitly and report as divergence
            with np.errstate(over="ignore", invalid="ignore"):
                self._dispatch(msg)
        except (CodecError, ProtocolError) as exc:
            self.stats["rejected"] += 1
            if isinstance(exc, BadSignature):
                self.stats["unsigned"] += 1
            log.warning("%s rejected a message: %s", self.name, exc)
            self.broker.reject(delivery, f"{type(exc).__name__}: {exc}")
            return
        self.broker.ack(delivery)

    def _dispatch(self, msg: codec.Message) -> None:
        if msg.kind == CONTROL:
            self._control(msg)
            return
        if self.generation is None or msg.generation > self.generation:
            size = msg.array.nbytes if msg.array is not None else 0
            if self._future_bytes + size > FUTURE_BYTES:
                raise ProtocolError(f"more than {FUTURE_BYTES} bytes of messages of a future generation")
            self._future.append(msg)
            self._future_bytes += size
            return
        if msg.generation < self.generation:
            self.stats["stale"] += 1
            return
        key = (msg.kind, msg.flags & EVAL, msg.step, msg.micro, msg.src_layer, msg.src_index)
        if key in self._seen or msg.step < self.step:
            self.stats["duplicate"] += 1
            return
        if msg.step > self.step + STEP_WINDOW:
            raise ProtocolError(f"step {msg.step} is too far ahead of step {self.step}")
        self.on_data(msg)
        self._seen.add(key)
        self.progress()

    def _control(self, msg: codec.Message) -> None:
        op = protocol.parse_control(msg.data or {})
        generation = op.generation
        if op.token < self.token:  # from a driver that another one has superseded
            self.stats["superseded"] += 1
            return
        self.token = op.token
        if isinstance(op, protocol.Stop):
            # a stop left over from an earlier generation must not end this one
            if self.generation is None or generation >= self.generation:
                self.running = False
            return
        if self.generation is not None and generation <= self.generation:
            self.stats["stale"] += 1
            return
        version = op.version
        if op.topology is not None:  # the driver may have rescaled a layer: every actor adopts the new split
            self.adopt(self._topology_of(op.topology))
        try:
            self.on_start(version)
        except CheckpointMissing as exc:
            # the driver of that generation learns at once; the actor keeps serving the current one
            self.report(Failed(self.name, str(exc)), generation=generation)
            raise ProtocolError(str(exc)) from exc
        self.generation, self.step = generation, version
        self._seen.clear()
        self.report(Ready(self.name, generation, version))
        pending, self._future, self._future_bytes = self._future, [], 0
        for queued in pending:
            try:
                self._dispatch(queued)
            except ProtocolError as exc:
                self.stats["rejected"] += 1
                log.warning("%s dropped a buffered message: %s", self.name, exc)

    def _topology_of(self, raw: object) -> Topology:
        try:
            topo = Topology.from_dict(raw) if isinstance(raw, dict) else None
        except (TypeError, ValueError, KeyError) as exc:
            raise ProtocolError(f"start carries a malformed topology: {exc}") from exc
        if topo is None or not self.topo.same_network(topo):
            raise ProtocolError("start carries the topology of another run or network")
        topo = topo.with_key(self.topo.key)
        if not self.role.is_head and self.index >= topo.shards[self.layer - 1]:
            raise ProtocolError(f"{self.name} is not part of the new split of layer {self.layer}")
        return topo

    def adopt(self, topo: Topology) -> None:
        """Take `topo` (the same network, maybe split differently) as the run's topology from now on."""
        if topo == self.topo:
            return
        for queue in topo.all_queues():  # the new neighbours' queues, before anything is sent to them
            self.broker.declare(queue, dead_letter=topo.dead_letter_queue)
        self.topo = topo
        self.schema = topo.schema_for(self.layer, self.index)
        self.on_topology()
        self.stats["rescaled"] += 1

    def on_topology(self) -> None:  # noqa: B027 - a hook: actors with nothing split-dependent keep this
        """Recompute what depends on the split of the layers (after adopt)."""

    def forget_before(self, step: int) -> None:
        """Drop duplicate-filter entries of steps before `step` (they can no longer be accepted anyway)."""
        self._seen = {k for k in self._seen if k[2] >= step}  # k[2] is the step of the key _dispatch builds

    def send(self, queues: list[str], kind: int, step: int, *, micro: int = 0, nmicro: int = 0, flags: int = 0,
             array: np.ndarray, to: Role | None = None) -> None:
        """Publish one array message to every queue of `queues` (encoded once, where it crosses a wire).

        A GRAD goes to one queue, that of `to`, and is signed for it.
        """
        generation = self.generation if self.generation is not None else 0  # sends follow a start
        message, body = codec.outgoing(kind, self.topo.run_tag, generation, step, micro=micro, nmicro=nmicro,
                                       source=self.role, flags=flags, array=array, key=self.topo.key, to=to)
        self.broker.publish_object(queues, message, body)
        self.stats["out"] += len(queues)

    def report(self, event: Report, generation: int | None = None) -> None:
        """Send an event to the driver (about `generation`, by default the current one)."""
        gen = (self.generation or 0) if generation is None else generation
        message, body = codec.outgoing(protocol.REPORT, self.topo.run_tag, gen, self.step, source=self.role,
                                       data=report_data(event), key=self.topo.key)
        self.broker.publish_object([self.driver_queue], message, body)
        self.stats["out"] += 1

    def fail(self, exc: BaseException) -> None:
        """Tell the driver this actor hit an unrecoverable error (the driver then ends or recovers the run)."""
        try:
            self.report(Failed(self.name, f"{type(exc).__name__}: {exc}"))
        except BrokerError:
            log.exception("%s could not report its failure", self.name)

    @abstractmethod
    def on_start(self, version: int) -> None:
        """Load checkpoint `version` and reset per-generation state; raise CheckpointMissing changing nothing."""

    @abstractmethod
    def on_data(self, msg: codec.Message) -> None:
        """Buffer one accepted data message (validated, current generation, not a duplicate)."""

    @abstractmethod
    def progress(self) -> None:
        """Do every computation whose inputs are complete."""
