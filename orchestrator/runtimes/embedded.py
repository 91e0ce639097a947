"""The embedded runtime: every neuron and the loss head on its own thread of this process."""
from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

from threadpoolctl import threadpool_limits

from broker.base import Broker
from neuron.actor import Actor
from neuron.dense import DenseNeuron
from neuron.head import LossHead
from neuron.topology import Topology
from orchestrator.errors import TrainingError
from orchestrator.runtimes.base import Runtime, Services
from paramstore.checkpoint import Checkpoints

log = logging.getLogger(__name__)


class ThreadedActors(Runtime):
    """Runs the actors of a topology on threads and notices any that died."""

    def __init__(self, topo: Topology, broker: Broker, checkpoints: Checkpoints) -> None:
        self.actors: list[Actor] = [DenseNeuron(topo, layer, index, broker, checkpoints)
                                    for layer, index in topo.neurons()]
        self.actors.append(LossHead(topo, broker))
        self._limits = ExitStack()
        self._stop = threading.Event()
        self._errors: dict[str, BaseException] = {}
        self._threads = [threading.Thread(target=self._run, args=(a,), name=f"cuttlefish-{a.name}", daemon=True)
                         for a in self.actors]

    def _run(self, actor: Actor) -> None:
        try:
            actor.run(self._stop)
        except Exception as exc:  # a neuron's crash must reach the driver, not vanish with its thread
            log.exception("neuron %s crashed", actor.name)
            self._errors[actor.name] = exc
            actor.fail(exc)

    @classmethod
    def create(cls, topo: Topology, services: Services) -> ThreadedActors:
        """Threads for the actors of `topo`, sharing the run's broker and checkpoints."""
        return cls(topo, services.broker, services.checkpoints)

    def start(self) -> None:
        """Start every actor thread."""
        # Every neuron thread calls BLAS at once; BLAS's own worker threads would fight them for the cores
        # (OpenBLAS workers spin), so each call runs on its caller's thread and the neurons are the parallelism.
        self._limits.enter_context(threadpool_limits(limits=1, user_api="blas"))
        for thread in self._threads:
            thread.start()

    def check(self) -> None:
        """Raise TrainingError if an actor thread crashed or exited early."""
        for name, exc in self._errors.items():
            raise TrainingError(f"neuron {name} crashed: {type(exc).__name__}: {exc}")
        for actor, thread in zip(self.actors, self._threads):
            if not thread.is_alive() and not self._stop.is_set():
                raise TrainingError(f"neuron {actor.name} exited unexpectedly")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join every actor thread."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._limits.close()

    def stats(self) -> dict[str, dict]:
        """Per-actor message counters."""
        return {a.name: dict(a.stats) for a in self.actors}

