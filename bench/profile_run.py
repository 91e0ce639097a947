"""Where a step's time goes: py-spy samples of every neuron process and the driver during a RabbitMQ run.

Every thread of every process is sampled (idle ones too) at RATE Hz for SECONDS during the steady state;
each sample is put in one category by the frames on its stack, and the counts become milliseconds per
training step. CPU seconds per step of each process (from /proc) show how busy the two cores are.
"""
from __future__ import annotations

import collections
import os
import pathlib
import re
import subprocess
import tempfile
import time

from orchestrator.training.options import DriverOptions
from orchestrator.training.runner import train_run

RATE, SECONDS, START_STEP = 67, 10, 150
_CLK = os.sysconf("SC_CLK_TCK")

# (category, pattern on the stack, root first, files by base name); the first match wins
MAIN_RULES = [
    ("kernels", r"\((kernels|optim)\.py"),
    ("HMAC", r"\(hmac\.py"),
    ("encode", r"(^|;)(encode|_encode|outgoing[^;]*) \(codec\.py"),
    ("decode", r"(^|;)decode \(codec\.py"),
    ("checkpoint/store", r"\((checkpoint|redis|store|lease|run)\.py"),
    ("waiting for a message", r"(poll \(select_connection\.py|wait \(threading\.py|get \(queue\.py|get \(memory\.py)[^;]*$"),
    ("reading deliveries (socket, frames)", r"(_consume|_on_data_available|decode_frame|_deliver_frame_to_channel|on_message|_dispatch_events)"),
    # the socket writes of a publish include the kernel's TCP work for the broker's end (loopback, bridge)
    ("publish and ack (pika framing, socket writes)",
     r"(basic_publish|basic_ack|basic_reject|(produce|send_message) \(transport\.py)"),
    ("driver: batch preparation", r"(^|;)(pixels|indices|order) \((mnist|schedule)\.py"),
    # the connection's own loop when it is not waiting: its lock and inboxes, pika's event dispatch and timers
    ("servicing the connection (pika's loop, not waiting)",
     r"\((connection|blocking_connection|select_connection|selector_ioloop_adapter|io_services_utils)\.py"),
    ("actor and driver bookkeeping", r"\((actor|dense|head|driver|host|broker|acks)\.py"),
]
IO_RULES = [
    ("io: waiting", r"(poll \(select_connection\.py|wait \(threading\.py)[^;]*$"),
    ("io: reading deliveries", r"(_consume|_on_data_available|decode_frame|_on_deliver|_deliver_frame_to_channel|on_message)"),
    ("io: operations for callers", r"_run_ops \(connection\.py"),
    ("io: write", r"(_produce|send)"),
]


def _category(stack: str, io_thread: bool) -> str:
    for name, pattern in IO_RULES if io_thread else MAIN_RULES:
        if re.search(pattern, stack):
            return name
    return "io: other" if io_thread else "other Python"


def _parse(raw: str) -> dict[str, collections.Counter]:
    """Samples per (thread kind, category) of one py-spy raw file."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, _, frames = stack.partition(";")
        frames = re.sub(r"\([^();]*/", "(", frames)  # base names: py-spy shortens paths unevenly
        if "heartbeat" in head:
            kind = "heartbeat"
        elif "amqp-io" in head:
            kind = "io"
        elif "MainThread" in head or "cuttlefish-actors" in head:
            kind = "main"
        else:
            kind = "other threads"
        threads[kind][_category(frames, kind == "io") if kind in ("main", "io") else kind] += int(count)
    return threads


def _cpu(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


class _Done(Exception):
    """The sampling window is over: end the run."""


class _Sampler:
    """Starts py-spy on every process at START_STEP, and ends the run when the samples are written."""

    def __init__(self, batch: int, container) -> None:
        self.batch, self.container, self.pids, self.times = batch, container, {}, {}
        self.spies, self.t0, self.dir = [], None, tempfile.mkdtemp(prefix="cf-pyspy-")
        self.cpu0: dict[str, float] = {}

    def on_actors(self, group) -> None:
        by_pid: dict[int, list[str]] = {}
        for name, pid in {**group.pids(), "driver": os.getpid()}.items():
            by_pid.setdefault(pid, []).append(name)  # actors sharing a process are sampled once
        self.pids = {"+".join(names): pid for pid, names in by_pid.items()}

    def _container_cpu(self) -> float | None:
        if self.container is None:
            return None
        stats = self.container.stats(stream=False, one_shot=True)
        return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9

    def __call__(self, step: int, *_rest) -> None:
        now = self.times[step] = time.perf_counter()
        if step == START_STEP:
            self.cpu0 = {name: _cpu(pid) for name, pid in self.pids.items()}
            self.cpu0["rabbitmq"] = self._container_cpu()
            for name, pid in self.pids.items():
                path = os.path.join(self.dir, f"{name}.txt")
                self.spies.append((name, path, subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "-d", str(SECONDS), "-r", str(RATE), "--format", "raw",
                     "--idle", "--threads", "--nonblocking", "-o", path],
                    stdout=subprocess.DEVNULL, stderr=open(path + ".err", "w"))))
            self.t0 = now
        elif self.t0 is not None and now > self.t0 + SECONDS:
            self.t1 = now
            self.cpu1 = {name: _cpu(pid) for name, pid in self.pids.items()}
            self.cpu1["rabbitmq"] = self._container_cpu()
            for _, _, proc in self.spies:
                proc.wait(timeout=60)
            raise _Done()


def profile_run(train, config, container=None) -> dict:
    """Sample a process-per-neuron run of `config` (its broker and store must be real services)."""
    sampler = _Sampler(config.training.batch_size, container)
    try:
        train_run(config, train, None, run_id=f"speed-prof-{os.getpid()}", max_steps=100000, target="local",
                  options=DriverOptions(on_step=sampler), on_actors=sampler.on_actors)
        raise RuntimeError("the profiled run ended before its sampling window")
    except _Done:
        pass
    steps = [s for s, t in sampler.times.items() if sampler.t0 <= t <= sampler.t1]
    nsteps = max(steps) - min(steps)
    window = sampler.times[max(steps)] - sampler.times[min(steps)]
    processes = {}
    for name, path, _ in sampler.spies:
        threads = _parse(pathlib.Path(path).read_text())
        ms = {}
        for kind in ("main", "io"):
            for cat, count in threads.get(kind, {}).items():
                ms[cat] = round(count / RATE / nsteps * 1e3, 3)
        cpu = (sampler.cpu1[name] - sampler.cpu0[name]) / nsteps * 1e3
        processes[name] = {"ms_per_step": ms, "cpu_ms_per_step": round(cpu, 3)}
    if sampler.cpu0.get("rabbitmq") is not None:
        processes["rabbitmq (container)"] = {"ms_per_step": {}, "cpu_ms_per_step": round(
            (sampler.cpu1["rabbitmq"] - sampler.cpu0["rabbitmq"]) / nsteps * 1e3, 3)}
    return {"layout": ",".join(map(str, config.network.shards)) + f"/{config.training.micro_batches}",
            "network": "784-256-256-10, batch 128", "sampled_steps": nsteps, "sample_rate_hz": RATE,
            "samples_per_s": round(nsteps * config.training.batch_size / window, 1),
            "wall_ms_per_step": round(window / nsteps * 1e3, 3),
            "note": "py-spy --nonblocking --idle, every thread; a category is the first matching frame rule "
                    "(bench/profile_run.py); waiting includes the wake-up of the hand-off",
            "processes": processes}
