"""The external deployment: the neurons run elsewhere (containers, other hosts); the driver watches heartbeats."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

from neuron.topology import Topology
from orchestrator.errors import NeuronLost
from paramstore.checkpoint import Checkpoints
from paramstore.errors import StoreError

log = logging.getLogger(__name__)


class HeartbeatWatch:
    """Notices a neuron whose heartbeat expired or whose process changed (it restarted) since last seen."""

    def __init__(self, topo: Topology, checkpoints: Checkpoints, interval: float = 1.0) -> None:
        self.actors = set(topo.actor_names())
        self.checkpoints, self.interval = checkpoints, interval
        self._seen: dict[str, tuple] = {}  # actor -> (host, pid, started) of the process last seen
        self._next = 0.0

    def rescale(self, topo: Topology, layer: int) -> None:
        """Watch the neurons of the new split of `layer` (started by whoever runs the containers)."""
        self.actors = set(topo.actor_names())
        self._seen = {actor: who for actor, who in self._seen.items()
                      if actor in self.actors and not actor.startswith(f"L{layer}.")}

    def check(self) -> None:
        """Raise NeuronLost if a neuron seen before is gone or is a new process; reads the store once a second."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            beats = self.checkpoints.heartbeats()
        except StoreError as exc:  # the store may be restarting; its absence is not a neuron's death
            log.warning("could not read heartbeats: %s", exc)
            return
        lost = []
        for actor in sorted(self.actors):
            status = beats.get(actor)
            identity = None if status is None else (status.get("host"), status.get("pid"), status.get("started"))
            before = self._seen.get(actor)
            if identity is not None:
                self._seen[actor] = identity
            if before is not None and identity != before:
                lost.append(f"{actor} ({'restarted' if identity else 'heartbeat expired'})")
                if identity is None:
                    del self._seen[actor]
        if lost:
            raise NeuronLost(f"neuron {', '.join(lost)}")


@contextmanager
def external_actors(topo: Topology, checkpoints: Checkpoints) -> Iterator[HeartbeatWatch]:
    """Nothing to start: the neurons of `topo` are run by someone else; yields their heartbeat watch."""
    yield HeartbeatWatch(topo, checkpoints)
