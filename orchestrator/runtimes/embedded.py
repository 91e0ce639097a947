"""The embedded runtime: every actor of a run in this process, run by the driver's own thread while it waits.

The actors hand their messages to each other as objects (neuron/host.py), and the driver, whenever it
waits for a report, has the actors handle what they have first (wait_for): no message crosses a thread,
and no thread wakes another. Only one of them computes at a time anyway: an exact step is a chain (a
layer's next forward needs its update, which needs the gradient from the layers above), so a thread per
neuron, or one for the actors beside the driver's, won no parallelism and cost hand-offs and GIL
switches. BLAS keeps its own threads for the matrix products, as the single-process trainer does; that
is where a step's parallelism is.
"""
from __future__ import annotations

import logging
import time

from broker.base import Broker, Delivery
from neuron.actor import Actor
from neuron.dense import DenseNeuron
from neuron.head import LossHead
from neuron.host import Colocated, Together
from neuron.role import HEAD_LAYER
from neuron.topology import Topology
from orchestrator.errors import TrainingError
from orchestrator.runtimes.base import Runtime, Services
from paramstore.checkpoint import Checkpoints

log = logging.getLogger(__name__)

IDLE_LOOK = 0.05  # seconds between looks at the actors' queues while they are idle


class EmbeddedActors(Runtime):
    """Runs the actors of a topology on the driver's thread, whenever the driver waits for their messages."""

    def __init__(self, topo: Topology, broker: Broker, checkpoints: Checkpoints) -> None:
        queues = [topo.queue(layer, index) for layer, index in topo.neurons()] + [topo.queue(HEAD_LAYER)]
        self.router = Colocated(broker, queues)
        self.actors: list[Actor] = [DenseNeuron(topo, layer, index, self.router, checkpoints)
                                    for layer, index in topo.neurons()]
        self.actors.append(LossHead(topo, self.router))
        self._together = Together(self.actors, self.router)
        self._crashed: tuple[str, BaseException] | None = None

    @classmethod
    def create(cls, topo: Topology, services: Services) -> EmbeddedActors:
        """The actors of `topo`, sharing the run's broker and checkpoints."""
        return cls(topo, services.broker, services.checkpoints)

    def start(self) -> None:
        """Nothing to start: the actors run inside wait_for."""

    def wait_for(self, broker: Broker, queue: str, timeout: float) -> Delivery | None:
        """The driver's next delivery; until it comes the actors handle every message they have, here."""
        deadline = time.monotonic() + timeout
        while True:
            delivery = broker.get(queue, timeout=0)
            if delivery is not None or self._crashed is not None:
                return delivery
            work = self._together.next(0)
            if work is None:
                # the actors are idle: only the driver (or a stranger) can give them work, so wait on
                # the driver's queue, looking at theirs again now and then
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                delivery = broker.get(queue, timeout=min(left, IDLE_LOOK))
                if delivery is not None:
                    return delivery
                continue
            self._handle(work)
            if time.monotonic() > deadline:  # the driver's own checks (lease, stall) come round on time
                return None

    def _handle(self, delivery: Delivery) -> None:
        actor = self._together.actor_of(delivery)
        if actor is None:
            return
        try:
            actor.handle(delivery)
        except Exception as exc:  # noqa: BLE001 - an actor's crash must reach the driver, not unwind it
            log.exception("neuron %s crashed", actor.name)
            self._crashed = (actor.name, exc)
            actor.fail(exc)

    def check(self) -> None:
        """Raise TrainingError if an actor crashed."""
        if self._crashed is not None:
            name, exc = self._crashed
            raise TrainingError(f"neuron {name} crashed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Nothing runs between the driver's waits: nothing to stop."""

    def stats(self) -> dict[str, dict]:
        """Per-actor message counters."""
        return {a.name: dict(a.stats) for a in self.actors}
