"""The embedded runtime: the actors of a run on threads of this process.

Each neuron has a thread of its own, except the run of single-neuron layers that ends the network: those
neurons and the loss head share one thread, since their work is one after another anyway; their messages
then never wait for another thread (neuron/host.py).
"""
from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

from threadpoolctl import threadpool_limits

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


def tail_layers(topo: Topology) -> list[int]:
    """The single-neuron layers that end the network, the first layer only if it is the output layer.

    They share the head's thread; the first layer keeps a thread of its own (its parameter gradients
    overlap the later layers' work).
    """
    if topo.shards[-1] != 1:
        return []
    start = topo.depth
    while start - 1 >= 2 and topo.shards[start - 2] == 1:
        start -= 1
    return list(range(start, topo.depth + 1))


class ThreadedActors(Runtime):
    """Runs the actors of a topology on threads and notices any that died."""

    def __init__(self, topo: Topology, broker: Broker, checkpoints: Checkpoints) -> None:
        tail = tail_layers(topo)
        shared = Colocated(broker, [topo.queue(layer, 0) for layer in tail] + [topo.queue(HEAD_LAYER)])
        self.groups: list[list[Actor]] = [[DenseNeuron(topo, layer, index, broker, checkpoints)]
                                          for layer, index in topo.neurons() if layer not in tail]
        self.groups.append([*(DenseNeuron(topo, layer, 0, shared, checkpoints) for layer in tail), LossHead(topo, shared)]
                           if tail else [LossHead(topo, broker)])
        self.actors: list[Actor] = [actor for group in self.groups for actor in group]
        self._routers = {id(group): shared for group in self.groups if len(group) > 1}
        self._limits = ExitStack()
        self._stop = threading.Event()
        self._errors: dict[str, BaseException] = {}
        self._threads = [threading.Thread(target=self._run, args=(g,), name=f"cuttlefish-{g[0].name}", daemon=True)
                         for g in self.groups]

    def _run(self, group: list[Actor]) -> None:
        actor = group[0]
        try:
            if len(group) == 1:
                actor.run(self._stop)
            else:
                run_together(group, self._routers[id(group)], self._stop)
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
        for group, thread in zip(self.groups, self._threads):
            if not thread.is_alive() and not self._stop.is_set():
                raise TrainingError(f"neuron {group[0].name} exited unexpectedly")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join every actor thread."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._limits.close()

    def stats(self) -> dict[str, dict]:
        """Per-actor message counters."""
        return {a.name: dict(a.stats) for a in self.actors}

