"""The chain of one RabbitMQ training step, segment by segment: who waits for whom, and for how long.

    python bench/step_chain.py [--amqp URL --redis URL] [--steps 600] [--out bench/results/step_chain.json]

An exact step of 784-256-256-10 with one neuron per layer (batch 128) is a chain: L1's forward, a hop, L2's,
a hop, L3's with the loss head beside it and L3's backward, a hop, L2's backward, a hop, and L1's backward,
update and next forward. Every neuron process is timed from the inside (bench/chain_hook, loaded through
PYTHONPATH: handles, decodes, publishes, kernels, on the machine's shared monotonic clock) and each
segment's median over the steady-state steps is written out. Without URLs RabbitMQ and Redis are started
as containers (tests/services.py).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_speed import NETS, config_of, service_urls  # noqa: E402
from orchestrator.data.mnist import load_mnist  # noqa: E402
from orchestrator.training.runner import train_run  # noqa: E402

ACT, GRAD = 1, 2


def _records(folder: str) -> dict[str, dict]:
    """Per actor: (kind, step) -> the handle's start and end, its publishes and kernels (ns)."""
    out: dict[str, dict] = collections.defaultdict(dict)
    for path in glob.glob(os.path.join(folder, "*.log")):
        events = [line.split() for line in pathlib.Path(path).read_text().splitlines()]
        decodes = sorted((int(e[1]), int(e[3]), int(e[4])) for e in events if e[0] == "D")
        inner = sorted([(int(e[1]), int(e[2]), "P", ".".join(e[3].split(".")[-2:])) for e in events if e[0] == "P"]
                       + [(int(e[1]), int(e[2]), "K", e[3]) for e in events if e[0] == "K"])
        for e in (e for e in events if e[0] == "H"):
            start, end, actor = int(e[1]), int(e[2]), e[3]
            decode = next(((k, s) for t, k, s in decodes if start <= t <= end), None)
            if decode is None:
                continue
            out[actor][decode] = {"start": start, "end": end,
                                  "inner": [x for x in inner if start <= x[0] and x[1] <= end]}
    return out


def _publish(record: dict, queue: str) -> tuple[int, int]:
    return next((a, b) for a, b, what, name in record["inner"] if what == "P" and name.endswith(queue))


def chain(records: dict[str, dict]) -> dict:
    """Median and 90th percentile (ms) of each segment of the step's chain, over the steady-state steps."""
    l1, l2, l3, head = (records[name] for name in ("L1.0", "L2.0", "L3.0", "head"))
    steps = sorted(s for k, s in l2 if k == ACT)
    segments: dict[str, list[float]] = collections.defaultdict(list)
    inside: dict[str, list[float]] = collections.defaultdict(list)
    for s in steps[len(steps) // 4:-5]:  # past the warm-up, short of the end
        try:
            l1_in, l2_act, l3_act, head_act = l1[(GRAD, s - 1)], l2[(ACT, s)], l3[(ACT, s)], head[(ACT, s)]
            l3_grad, l2_grad, l1_next = l3[(GRAD, s)], l2[(GRAD, s)], l1[(GRAD, s)]
            p1, p2 = _publish(l1_in, "L2.0"), _publish(l2_act, "L3.0")
            p3, p4, p5 = _publish(l3_grad, "L2.0"), _publish(l2_grad, "L1.0"), _publish(l1_next, "L2.0")
        except (KeyError, StopIteration):
            continue
        parts = [
            ("L1: gradient in to forward out (decode, backward, update, forward, encode)", p1[0] - l1_in["start"]),
            ("L1: publish of its activations", p1[1] - p1[0]),
            ("hop L1 -> L2 (end of publish to L2 handling it)", l2_act["start"] - p1[1]),
            ("L2: forward (decode, kernel, encode)", p2[0] - l2_act["start"]),
            ("L2: publish of its activations", p2[1] - p2[0]),
            ("hop L2 -> L3", l3_act["start"] - p2[1]),
            ("L3: forward, handed to the head in-process", head_act["start"] - l3_act["start"]),
            ("head: loss and gradient, loss report to the driver", l3_grad["start"] - head_act["start"]),
            ("L3: backward to its publish", p3[0] - l3_grad["start"]),
            ("L3: publish of its gradient", p3[1] - p3[0]),
            ("hop L3 -> L2", l2_grad["start"] - p3[1]),
            ("L2: backward (decode, kernel, encode)", p4[0] - l2_grad["start"]),
            ("L2: publish of its gradient", p4[1] - p4[0]),
            ("hop L2 -> L1", l1_next["start"] - p4[1]),
        ]
        for name, ns in parts:
            segments[name].append(ns / 1e6)
        segments["the whole step (L1's publish to its next)"].append((p5[0] - p1[0]) / 1e6)
        for a, b, what, name in l1_in["inner"]:
            if what == "K":
                inside[name].append((b - a) / 1e6)
    if not segments:
        raise SystemExit("no complete step in the trace")

    def stats(values: list[float]) -> dict:
        values = sorted(values)
        return {"median_ms": round(statistics.median(values), 3), "p90_ms": round(values[int(0.9 * len(values))], 3)}
    return {"steps": len(next(iter(segments.values()))),
            "segments": {name: stats(v) for name, v in segments.items()},
            "l1_kernels": {name: stats(v) for name, v in inside.items()}}


def main(argv=None) -> int:
    """Trace one RabbitMQ run of 784-256-256-10 [1, 1, 1] and write its chain."""
    p = argparse.ArgumentParser()
    p.add_argument("--amqp", default=os.environ.get("CUTTLEFISH_TEST_AMQP_URL"))
    p.add_argument("--redis", default=os.environ.get("CUTTLEFISH_TEST_REDIS_URL"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--data", default=os.environ.get("CUTTLEFISH_DATA", str(ROOT.parent / "shared/datasets/mnist")))
    p.add_argument("--out", default=str(ROOT / "bench/results/step_chain.json"))
    args = p.parse_args(argv)
    if args.steps < 40:  # the first quarter is warm-up and the last five steps are cut off
        p.error("--steps must be at least 40 to leave steady-state steps to time")
    train = load_mnist("train", args.data)
    with contextlib.ExitStack() as stack:
        amqp, redis_url, _ = service_urls(stack, args.amqp, args.redis)
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cf-chain-"))
        # the neuron processes inherit the environment: the hook loads in each (and only there)
        os.environ["CUTTLEFISH_CHAIN_TRACE"] = folder
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT / "bench/chain_hook"),
                                                                 os.environ.get("PYTHONPATH"))))
        config = config_of(NETS["b128"][0], "1,1,1/1", args.steps, amqp, redis_url)
        t0 = time.monotonic()
        train_run(config, train, None, run_id=f"chain-{os.getpid()}", max_steps=args.steps, target="local")
        seconds = time.monotonic() - t0
        result = chain(_records(folder))
    out = {"benchmark": "the chain of one RabbitMQ step, timed inside every neuron process (bench/chain_hook)",
           "network": "784-256-256-10, batch 128, [1, 1, 1], the head beside L3", "run_seconds": round(seconds, 1),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
