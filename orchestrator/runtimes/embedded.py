"""The embedded runtime: every actor of a run on one thread of this process, the driver on another.

The actors hand their messages to each other as objects (neuron/host.py), so a step crosses a thread only
where the driver feeds it and hears its loss. Only one thread computes at a time: an exact step is a chain
(a layer's next forward needs its update, which needs the gradient from the layers above), so a thread per
neuron won no parallelism and cost hand-offs and GIL switches. BLAS keeps its own threads for the
matrix products, as the single-process trainer does; that is where a step's parallelism is.
"""
from __future__ import annotations

import logging
import threading

from broker.base import Broker
from neuron.actor import Actor
from neuron.dense import DenseNeuron
from neuron.head import LossHead
from neuron.host import Colocated, run_together
from neuron.role import HEAD_LAYER
from neuron.topology import Topology
from orchestrator.errors import TrainingError
from orchestrator.runtimes.base import Runtime, Services
from paramstore.checkpoint import Checkpoints

log = logging.getLogger(__name__)


class EmbeddedActors(Runtime):
    """Runs the actors of a topology together on one thread and notices if it died."""

    def __init__(self, topo: Topology, broker: Broker, checkpoints: Checkpoints) -> None:
        queues = [topo.queue(layer, index) for layer, index in topo.neurons()] + [topo.queue(HEAD_LAYER)]
        self.router = Colocated(broker, queues)
        self.actors: list[Actor] = [DenseNeuron(topo, layer, index, self.router, checkpoints)
                                    for layer, index in topo.neurons()]
        self.actors.append(LossHead(topo, self.router))
        self._stop = threading.Event()
        self._crashed: tuple[str, BaseException] | None = None
        self._thread = threading.Thread(target=self._run, name="cuttlefish-actors", daemon=True)

    def _run(self) -> None:
        culprit: list[Actor] = []
        try:
            run_together(self.actors, self.router, self._stop, on_crash=culprit.append)
        except Exception as exc:  # an actor's crash must reach the driver, not vanish with the thread
            actor = culprit[0] if culprit else self.actors[0]
            log.exception("neuron %s crashed", actor.name)
            self._crashed = (actor.name, exc)
            actor.fail(exc)

    @classmethod
    def create(cls, topo: Topology, services: Services) -> EmbeddedActors:
        """The actors of `topo` on one thread, sharing the run's broker and checkpoints."""
        return cls(topo, services.broker, services.checkpoints)

    def start(self) -> None:
        """Start the actors' thread."""
        self._thread.start()

    def check(self) -> None:
        """Raise TrainingError if an actor crashed or the actors' thread exited early."""
        if self._crashed is not None:
            name, exc = self._crashed
            raise TrainingError(f"neuron {name} crashed: {type(exc).__name__}: {exc}")
        if not self._thread.is_alive() and not self._stop.is_set():
            raise TrainingError("the neurons' thread exited unexpectedly")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join the actors' thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> dict[str, dict]:
        """Per-actor message counters."""
        return {a.name: dict(a.stats) for a in self.actors}
