"""The external runtime: the neurons run elsewhere (containers, other hosts); the driver watches heartbeats."""
from __future__ import annotations

import logging
import time

from neuron.topology import Topology
from orchestrator.errors import NeuronLost
from orchestrator.runtimes.base import Runtime, Services
from paramstore.errors import StoreError
from paramstore.run import RunRecord

log = logging.getLogger(__name__)


class HeartbeatWatch(Runtime):
    """Notices a neuron whose heartbeat expired or whose process changed (it restarted) since last seen.

    Whoever runs the containers replaces a rescaled layer's neurons (e.g. `scale --target compose`).
    """

    can_replace = True

    def __init__(self, topo: Topology, record: RunRecord, interval: float = 1.0) -> None:
        self.layers = {role.name: role.layer for role in topo.roles()}
        self.actors = set(self.layers)
        self.record, self.interval = record, interval
        self._seen: dict[str, tuple] = {}  # actor -> (host, pid, started) of the process last seen
        self._next = 0.0

    @classmethod
    def create(cls, topo: Topology, services: Services) -> HeartbeatWatch:
        """A watch over the heartbeats of `topo`'s actors in the run's store."""
        return cls(topo, services.checkpoints.record)

    def start(self) -> None:
        """Nothing to start: the neurons are run by someone else."""

    def stop(self) -> None:
        """Nothing to stop: the driver's stop message ends the neurons."""

    def replace_layer(self, topo: Topology, layer: int) -> None:
        """Watch the neurons of the new split of `layer` (started by whoever runs the containers)."""
        self.layers = {role.name: role.layer for role in topo.roles()}
        self.actors = set(self.layers)
        self._seen = {actor: who for actor, who in self._seen.items()
                      if actor in self.actors and self.layers[actor] != layer}

    def check(self) -> None:
        """Raise NeuronLost if a neuron seen before is gone or is a new process; reads the store once a second."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            beats = self.record.heartbeats()
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

