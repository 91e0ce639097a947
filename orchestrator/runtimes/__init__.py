"""Where the actors run: threads in this process, supervised local processes, or elsewhere (watched).

`RUNTIMES` picks the implementation of the `Runtime` interface (runtimes/base.py) by target name.
"""
from __future__ import annotations

from types import MappingProxyType

from neuron.topology import Topology
from orchestrator.errors import TrainingError
from orchestrator.runtimes.base import Runtime, Services
from orchestrator.runtimes.embedded import EmbeddedActors
from orchestrator.runtimes.external import HeartbeatWatch
from orchestrator.runtimes.local import ProcessGroup

RUNTIMES: MappingProxyType[str, type[Runtime]] = MappingProxyType({
    "embedded": EmbeddedActors,  # every actor on one thread, sharing the in-process broker and store
    "local": ProcessGroup,  # a supervised OS process per actor
    "external": HeartbeatWatch,  # the actors run elsewhere; their heartbeats are watched
})
TARGETS = tuple(RUNTIMES)


def runtime_for(target: str, topo: Topology, services: Services) -> Runtime:
    """The runtime of `target` for the actors of `topo`, not started yet."""
    if target not in RUNTIMES:
        raise TrainingError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return RUNTIMES[target].create(topo, services)


__all__ = ["RUNTIMES", "TARGETS", "Runtime", "Services", "runtime_for"]
