"""The local runtime: one OS process per neuron on this machine, supervised and restarted when one dies."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from neuron.role import Role
from neuron.service import EXIT_USAGE
from neuron.topology import Topology
from orchestrator.errors import NeuronLost, TrainingError
from orchestrator.runtimes.base import Runtime, Services

log = logging.getLogger(__name__)

# processes started per second at most: a big run (or a crash loop) must not fork faster than the host copes
SPAWN_RATE = 20.0
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def process_roles(topo: Topology) -> dict[str, tuple[Role, bool]]:
    """The processes of `topo` by name: (role, with the head?). A single-shard output layer hosts the head.

    In one process the logits and their gradient stay off the broker: two hops fewer a step.
    """
    together = topo.shards[-1] == 1
    return {role.name: (role, together and role.layer == topo.depth)
            for role in topo.roles() if not (together and role.is_head)}


class ProcessGroup(Runtime):
    """The neuron processes of one run (every neuron plus the loss head), each `python -m neuron`."""

    can_replace = True

    def __init__(self, topo: Topology, broker_url: str, store_url: str, *, max_restarts: int = 50,
                 log_level: str = "WARNING") -> None:
        self.topo, self.broker_url, self.store_url = topo, broker_url, store_url
        self.max_restarts, self.log_level = max_restarts, log_level
        self.roles: dict[str, Role] = {role.name: role for role in topo.roles()}
        self.processes = process_roles(topo)
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = 0
        self._stopping = False
        self._next_spawn = 0.0  # monotonic time before which no process is started

    @classmethod
    def create(cls, topo: Topology, services: Services) -> ProcessGroup:
        """Processes for the actors of `topo`, reaching the run's broker and store by URL."""
        return cls(topo, services.broker_url, services.store_url)

    def _spawn(self, name: str) -> subprocess.Popen:
        wait = self._next_spawn - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next_spawn = max(self._next_spawn, time.monotonic()) + 1.0 / SPAWN_RATE
        env = dict(os.environ)
        # URLs travel in the environment, never on a command line that `ps` shows to every user
        role, with_head = self.processes[name]
        env.update(role.env())
        if with_head:
            env["CUTTLEFISH_WITH_HEAD"] = "1"
        env.update(CUTTLEFISH_RUN_ID=self.topo.run_id, CUTTLEFISH_BROKER=self.broker_url, CUTTLEFISH_STORE=self.store_url,
                   CUTTLEFISH_LOG_LEVEL=env.get("CUTTLEFISH_LOG_LEVEL", self.log_level),
                   OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, (_ROOT, env.get("PYTHONPATH")))))
        # the neuron asks the kernel to kill it with this process (CUTTLEFISH_PARENT_PID): a killed driver
        # must not leave neurons consuming the run's queues behind a resumed one
        env["CUTTLEFISH_PARENT_PID"] = str(os.getpid())
        return subprocess.Popen([sys.executable, "-m", "neuron"], env=env, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        """Start every neuron process."""
        for name in self.processes:
            self.procs[name] = self._spawn(name)

    def pids(self) -> dict[str, int]:
        """Process id of each actor (the head's is its host's when it shares one)."""
        pids = {name: p.pid for name, p in self.procs.items()}
        host = next((name for name, (_, with_head) in self.processes.items() if with_head), None)
        if host in pids:
            pids["head"] = pids[host]
        return pids

    def check(self) -> None:
        """Restart any neuron that exited; raise NeuronLost so the driver replays from its checkpoint."""
        if self._stopping:
            return
        lost = []
        for name, proc in self.procs.items():
            status = proc.poll()
            if status is None:
                continue
            if status == EXIT_USAGE:  # bad flags or environment: a restart would fail the same way
                raise TrainingError(f"neuron {name} refused its settings (exit status {status}); see its output")
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise TrainingError(f"neuron {name} exited with status {status}; "
                                    f"{self.max_restarts} restarts used up")
            log.warning("neuron %s exited with status %s; restarting it", name, status)
            self.procs[name] = self._spawn(name)
            lost.append(f"{name} (status {status})")
        if lost:
            raise NeuronLost(f"neuron process {', '.join(lost)} died and was restarted")

    def stats(self) -> dict[str, dict]:
        """The process id of each actor, and the restarts of the whole group."""
        return {name: {"pid": pid, "restarts": self.restarts} for name, pid in self.pids().items()}

    def replace_layer(self, topo: Topology, layer: int) -> None:
        """Stop the neurons of `layer` and start the set `topo` splits it into; the others keep running.

        The output layer's processes and the head's are replaced together: the head moves into (or out of)
        the output layer's process as that layer has one neuron (or more).
        """
        new = process_roles(topo)
        old = {name: self.procs.pop(name) for name, (role, with_head) in list(self.processes.items())
               if role.layer == layer or (layer == topo.depth and (role.is_head or with_head))}
        for name, proc in old.items():
            del self.processes[name]
            proc.terminate()  # SIGTERM: the neuron finishes the message at hand and exits 0
        for proc in old.values():  # gone before a successor consumes the same queue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.topo = topo
        self.roles = {role.name: role for role in topo.roles()}
        for name, spec in new.items():
            if name not in self.processes:
                self.processes[name] = spec
                self.procs[name] = self._spawn(name)

    def stop(self, timeout: float = 15.0) -> None:
        """Wait for the neurons to exit after the driver's stop message, then terminate what is left."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

