"""Steady-state speed, side by side in one run: single process, embedded, and a process per neuron over RabbitMQ.

    python bench/bench_speed.py [--sections rates pingpong profile] [--nets b128 b512 mnist deep]
                                [--amqp URL --redis URL] [--out bench/results/speed.json]

Samples/s are steady state: the time from the loss of step `warmup` to the loss of the last step, so
process start-up, queue declarations and the first steps are excluded. Checkpoints are moved past the
measured steps (checkpoint_every is raised), since they measure the store, not the message path. Without
URLs RabbitMQ and Redis are started as containers (tests/services.py). Each figure is the best of --repeat.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
import yaml
from threadpoolctl import threadpool_limits

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pingpong import pingpong  # noqa: E402
from bench.profile_run import profile_run  # noqa: E402
from orchestrator.config import parse_config  # noqa: E402
from orchestrator.data.mnist import load_mnist  # noqa: E402
from orchestrator.data.model import init_params  # noqa: E402
from orchestrator.training.options import DriverOptions  # noqa: E402
from orchestrator.training.reference import ReferenceTrainer, train_reference  # noqa: E402
from orchestrator.training.runner import make_schedule, train_run  # noqa: E402

SMALL = """
neural_network: {{num_of_hidden_layers: 2, num_nodes_per_layer: [256, 256], num_classes: 10}}
training: {{epochs: 100, data_batch_size: {batch}, optimizer: momentum, learning_rate: 0.05, dtype: float32}}
"""
# name -> (config text, steps, warmup, layouts: "shards/micro-batches"; "config" is the file's own layout)
NETS = {
    "b128": (SMALL.format(batch=128), 400, 100, ["1,1,1/1", "2,1,1/1"]),
    "b512": (SMALL.format(batch=512), 200, 50, ["1,1,1/1", "2,1,1/1"]),
    "mnist": ((ROOT / "examples/mnist.yaml").read_text(), 300, 50, ["1,1,1,1/1", "config"]),
    "deep": ((ROOT / "examples/seed-deep.yaml").read_text(), 80, 20, ["1,1,1,1,1,1/1", "config"]),
}
LABELS = {"b128": "784-256-256-10, batch 128", "b512": "784-256-256-10, batch 512",
          "mnist": "examples/mnist.yaml (784-1024x3-10, batch 64)",
          "deep": "examples/seed-deep.yaml (784-2500-2000-1500-1000-500-10, batch 100)"}


def config_of(text: str, layout: str, steps: int, broker: str | None = None, store: str | None = None):
    """The config `text` with `layout` ("shards/micro" or "config") and checkpoints past `steps`."""
    raw = yaml.safe_load(text)
    if layout != "config":
        shards, micro = layout.split("/")
        raw["neural_network"]["shards_per_layer"] = [int(s) for s in shards.split(",")]
        raw["training"]["micro_batches"] = int(micro)
    raw["training"]["checkpoint_every"] = steps + 1000
    raw["training"]["epochs"] = max(int(raw["training"].get("epochs", 1)), 100)
    if broker and store:
        raw["broker"], raw["paramstore"] = broker, store
    return parse_config(yaml.safe_dump(raw))


def layout_name(config) -> str:
    """The layout of `config` as "shards/micro-batches"."""
    return ",".join(map(str, config.network.shards)) + f"/{config.training.micro_batches}"


class StepClock:
    """When each step's loss arrived, and the CPU seconds `cpu()` counted at the warm-up and the last step."""

    def __init__(self, batch: int, warmup: int, last: int, cpu=time.process_time) -> None:
        self.batch, self.warmup, self.last, self.cpu, self.times, self.cpus = batch, warmup, last, cpu, {}, {}

    def __call__(self, step: int, *_rest) -> None:
        self.times[step] = time.perf_counter()
        if step in (self.warmup, self.last):
            self.cpus[step] = self.cpu()

    def figures(self) -> dict:
        """Steady-state samples/s, and CPU milliseconds per step (every process of the run, all cores)."""
        steps = self.last - self.warmup
        return {"samples_per_s": steps * self.batch / (self.times[self.last] - self.times[self.warmup]),
                "cpu_ms_per_step": (self.cpus[self.last] - self.cpus[self.warmup]) / steps * 1e3}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def container_cpu(container) -> float:
    """CPU seconds of a Docker container so far."""
    stats = container.stats(stream=False, one_shot=True) if container is not None else None
    return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9 if stats else 0.0


def reference_rate(train, config, steps: int, warmup: int) -> dict:
    """Steady-state figures of the single-process trainer (orchestrator/training/reference.py)."""
    tr, net = config.training, config.network
    trainer = ReferenceTrainer(init_params(net.sizes, net.activation, tr.dtype, tr.seed), net.activation,
                               tr.optimizer, tr.learning_rate, tr.momentum, tr.lr_decay,
                               make_schedule(config, len(train), None).steps_per_epoch, tr.weight_decay)
    clock = StepClock(tr.batch_size, warmup, steps - 1)
    train_reference(trainer, train, make_schedule(config, len(train), steps), tr.dtype, on_step=clock)
    return clock.figures()


def distributed_rate(train, config, steps: int, warmup: int, target: str, tag: str, container=None) -> dict:
    """Steady-state figures of a distributed run of `config` on `target` (CPU: driver, neurons, RabbitMQ)."""
    pids: list[int] = []

    def cpu() -> float:
        return time.process_time() + sum(proc_cpu(pid) for pid in pids) + container_cpu(container)

    def on_actors(group) -> None:
        if target == "local":
            pids.extend(sorted(set(group.pids().values())))

    clock = StepClock(config.training.batch_size, warmup, steps - 1, cpu)
    run_id = f"speed-{os.getpid()}-{tag}-{time.monotonic_ns() % 10**8}"
    result = train_run(config, train, None, run_id=run_id, max_steps=steps, target=target,
                       options=DriverOptions(on_step=clock), on_actors=on_actors)
    if result.steps != steps:
        raise SystemExit(f"{run_id}: ran {result.steps} steps, expected {steps}")
    return clock.figures()


def single_process(train, config, steps: int, warmup: int) -> dict:
    """The single-process trainer with NumPy's default BLAS threads and with one; "best" is the faster.

    On a loaded machine OpenBLAS's spinning worker threads can make the default several times slower
    than one thread, so each ratio is taken against the best single-process figure of that moment.
    """
    default = reference_rate(train, config, steps, warmup)
    with threadpool_limits(limits=1, user_api="blas"):
        one = reference_rate(train, config, steps, warmup)
    return {"default_threads": _rounded(default), "one_thread": _rounded(one),
            "best": round(max(default["samples_per_s"], one["samples_per_s"]), 1)}


def _rounded(figures: dict) -> dict:
    return {k: round(v, 3 if k.startswith("cpu") else 1) for k, v in figures.items()}


def rates(train, nets: list[str], repeat: int, amqp: str | None, redis_url: str | None, container=None) -> list[dict]:
    """For every network and layout: embedded and over RabbitMQ, each right after the single process.

    ratio: samples/s against the single process's best of that moment; cpu_ratio: the single process's
    CPU per step (one BLAS thread) over the distributed run's (every process, RabbitMQ's container too),
    a figure the load of other work on the machine disturbs much less.
    """
    rows = []
    targets = [("embedded", "embedded", None, None)] + ([("rabbitmq", "local", amqp, redis_url)] if amqp else [])
    for name in nets:
        text, steps, warmup, layouts = NETS[name]
        row = {"network": LABELS[name], "steps": [warmup, steps], "layouts": []}
        for layout in layouts:
            entry = {"layout": layout_name(config_of(text, layout, steps))}
            for label, target, broker, store in targets:
                cfg = config_of(text, layout, steps, broker, store)
                pairs = []
                for _ in range(repeat):  # the best ratio of `repeat` (single process, distributed) pairs
                    ref = single_process(train, cfg, steps, warmup)
                    run = distributed_rate(train, cfg, steps, warmup, target, name, container if broker else None)
                    pairs.append((run["samples_per_s"] / ref["best"], ref, run))
                ratio, ref, run = max(pairs, key=lambda p: p[0])
                entry[label] = {"single_process": ref, **_rounded(run), "ratio": round(ratio, 3),
                                "cpu_ratio": round(max(ref["one_thread"]["cpu_ms_per_step"] / p[2]["cpu_ms_per_step"]
                                                       for p in pairs), 3),
                                "load": os.getloadavg()[0]}
            print(f"{name} {entry}", flush=True)
            row["layouts"].append(entry)
        rows.append(row)
    return rows


def mac_cost(config) -> dict:
    """HMAC-SHA256 cost of one training step of `config` over RabbitMQ: every body signed once, checked per receiver.

    The step's messages follow neuron/protocol.py (inputs as pixels; the head beside a single output neuron
    takes the logits in-process, unsigned); each HMAC is timed here, on this machine, in this run.
    """
    import hmac

    topo = config_of_topology(config)
    key, batch = bytes(32), config.training.batch_size
    bodies: list[tuple[int, int]] = [(batch * topo.sizes[0], topo.shards[0]), (batch * 4, 1), (200, 1)]
    for layer in range(1, topo.depth + 1):
        receivers = topo.shards[layer] if layer < topo.depth else (0 if topo.shards[-1] == 1 else 1)
        for a, b in topo.splits(layer):
            if receivers:
                bodies.append((batch * (b - a) * 4, receivers))  # its activations, to every next neuron
                bodies.append((batch * (b - a) * 4, 1))  # the gradient of its columns, back to it
    us: dict[int, float] = {}
    for size, _ in bodies:
        if size not in us:
            body = os.urandom(size + 64)
            t0, n = time.thread_time(), 0  # CPU time: other work on the machine does not count
            while time.thread_time() - t0 < 0.2:
                hmac.digest(key, body, "sha256")
                n += 1
            us[size] = (time.thread_time() - t0) / n * 1e6
    total = sum(us[size] * (1 + receivers) for size, receivers in bodies)
    return {"layout": layout_name(config), "messages_signed": len(bodies),
            "signature_checks": sum(r for _, r in bodies), "bytes_signed": sum(size for size, _ in bodies),
            "hmac_us_by_body_bytes": {str(k): round(v, 2) for k, v in sorted(us.items())},
            "hmac_cpu_ms_per_step": round(total / 1e3, 3)}


def config_of_topology(config):
    """The plan's topology of `config` (run id irrelevant)."""
    from orchestrator.config.plan import build_plan

    return build_plan(config, "mac-cost", 100)


def markdown(out: dict) -> str:
    """A short human summary of the JSON results."""
    lines = [f"# Speed benchmark ({out['when']})", "", out["measure"], ""]
    if "rates" in out:
        lines += ["| network | layout | mode | samples/s | single process (default / 1 thread) | ratio | "
                  "CPU ms/step | CPU ratio |", "|---|---|---|---|---|---|---|---|"]
        for row in out["rates"]:
            for e in row["layouts"]:
                for mode in ("embedded", "rabbitmq"):
                    if mode in e:
                        m, ref = e[mode], e[mode]["single_process"]
                        lines.append(f"| {row['network']} | {e['layout']} | {mode} | {m['samples_per_s']:,.0f} | "
                                     f"{ref['default_threads']['samples_per_s']:,.0f} / "
                                     f"{ref['one_thread']['samples_per_s']:,.0f} | {m['ratio']:.2f}x | "
                                     f"{m['cpu_ms_per_step']:.2f} | {m['cpu_ratio']:.2f}x |")
        lines.append("")
    if "pingpong" in out:
        lines += ["| broker | body | round trip (median) |", "|---|---|---|"]
        for p in out["pingpong"]:
            lines.append(f"| {p['backend']} | {p['bytes'] // 1024} KB | {p['median_ms']:.3f} ms |")
        lines.append("")
    if "profile" in out:
        prof = out["profile"]
        lines += [f"Profile of a RabbitMQ run ({prof['layout']}, {prof['samples_per_s']:,.0f} samples/s while "
                  f"sampled; ms per step, all threads of each process):", ""]
        cats = sorted({c for p in prof["processes"].values() for c in p["ms_per_step"]})
        lines += ["| process | CPU | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
        for name, p in prof["processes"].items():
            lines.append(f"| {name} | {p['cpu_ms_per_step']:.3f} | "
                         + " | ".join(f"{p['ms_per_step'].get(c, 0):.3f}" for c in cats) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def service_urls(stack: contextlib.ExitStack, amqp: str | None, redis_url: str | None):
    """(amqp URL, redis URL, RabbitMQ's container or None): the URLs given, else containers started in `stack`."""
    rabbit_box = None
    if not (amqp and redis_url):
        from tests import services

        # by the containers' own addresses, as neurons on a compose network reach them (no docker-proxy)
        if not amqp:
            amqp, rabbit_box = stack.enter_context(services.rabbitmq())
            amqp = services.direct(amqp, rabbit_box, 5672)
        if not redis_url:
            redis_url, redis_box = stack.enter_context(services.redis())
            redis_url = services.direct(redis_url, redis_box, 6379)
    return amqp, redis_url, rabbit_box


def main(argv=None) -> int:
    """Run the selected sections against one RabbitMQ and one Redis; write JSON and Markdown."""
    p = argparse.ArgumentParser()
    sections = ["pingpong", "mac", "rates", "profile"]
    p.add_argument("--sections", nargs="+", default=sections, choices=sections)
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--amqp", default=os.environ.get("CUTTLEFISH_TEST_AMQP_URL"))
    p.add_argument("--redis", default=os.environ.get("CUTTLEFISH_TEST_REDIS_URL"))
    p.add_argument("--no-services", action="store_true", help="single process and embedded only")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--data", default=os.environ.get("CUTTLEFISH_DATA", str(ROOT.parent / "shared/datasets/mnist")))
    p.add_argument("--out", default=str(ROOT / "bench/results/speed.json"))
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    train = load_mnist("train", args.data)
    out = {"benchmark": "steady-state speed: single process, embedded, process per neuron over RabbitMQ + Redis",
           "measure": "samples/s from the loss of the warm-up step to the last step's; each ratio against the "
                      "faster single-process figure (default BLAS threads or one) measured just before it; best "
                      f"of {args.repeat} pairs; checkpoints moved past the measured steps; float32",
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                       "load_before": os.getloadavg()}}
    with contextlib.ExitStack() as stack:
        amqp, redis_url, rabbit_box = args.amqp, args.redis, None
        if not args.no_services:
            amqp, redis_url, rabbit_box = service_urls(stack, amqp, redis_url)
        if args.no_services:
            amqp = redis_url = None
        container = rabbit_box.get_wrapped_container() if rabbit_box is not None else None
        if container is None and os.environ.get("CUTTLEFISH_BENCH_RABBITMQ_CONTAINER"):
            import docker  # the container whose CPU time is counted, when the URL was given

            container = docker.from_env().containers.get(os.environ["CUTTLEFISH_BENCH_RABBITMQ_CONTAINER"])
        if "pingpong" in args.sections:
            out["pingpong"] = [pingpong(url, 64 << 10) for url in ("memory://", amqp) if url]
            print(json.dumps(out["pingpong"], indent=1), flush=True)
        if "rates" in args.sections:
            out["rates"] = rates(train, args.nets, args.repeat, amqp, redis_url, container)
        if "mac" in args.sections:
            out["mac"] = [mac_cost(config_of(NETS["b128"][0], layout, 100)) for layout in NETS["b128"][3]]
            print(json.dumps(out["mac"], indent=1), flush=True)
        if "profile" in args.sections and amqp:
            text, _, _, _ = NETS["b128"]
            out["profile"] = profile_run(train, config_of(text, "1,1,1/1", 4000, amqp, redis_url), container)
    out["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
