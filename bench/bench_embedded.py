"""Samples/s of the embedded distributed run against the single-process trainer, same network, one run.

    python bench/bench_embedded.py [--steps N] [--variants "2,1,1/1" "1,1,1/1" ...] [--out bench/results/embedded.json]

A variant is "shards per layer/micro-batches". Each figure is the best of --repeat runs, wall time
including the run's start-up and final checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.config import parse_config  # noqa: E402
from orchestrator.data.mnist import load_mnist  # noqa: E402
from orchestrator.data.model import init_params  # noqa: E402
from orchestrator.training.reference import ReferenceTrainer, train_reference  # noqa: E402
from orchestrator.training.runner import make_schedule, train_run  # noqa: E402

CONFIG = """
neural_network:
  num_of_hidden_layers: 2
  num_nodes_per_layer: [256, 256]
  num_classes: 10
  shards_per_layer: [{shards}]
training:
  epochs: 100
  data_batch_size: 128
  micro_batches: {micro}
  optimizer: momentum
  learning_rate: 0.05
  dtype: float32
  checkpoint_every: 100000
"""


def reference_rate(train, steps: int, repeat: int) -> float:
    """Best samples/s of the single-process trainer over `steps` steps of the benchmark network."""
    base = parse_config(CONFIG.format(shards="1, 1, 1", micro=1))
    best = 0.0
    for _ in range(repeat):
        trainer = ReferenceTrainer(init_params(base.network.sizes, "relu", "float32", 0), "relu", "momentum", 0.05, 0.9)
        t0 = time.perf_counter()
        train_reference(trainer, train, make_schedule(base, len(train), steps), "float32")
        best = max(best, steps * base.training.batch_size / (time.perf_counter() - t0))
    return best


def variant_rate(train, variant: str, steps: int, repeat: int, *, target: str = "embedded",
                 broker: str | None = None, store: str | None = None) -> float:
    """Best samples/s of the distributed run of `variant` ("shards/micro-batches") on `target`."""
    shards, micro = variant.split("/")
    config = parse_config(CONFIG.format(shards=shards, micro=int(micro)))
    if broker and store:
        config = config.replace(broker=broker, paramstore=store)
    best = 0.0
    for r in range(repeat):
        run_id = f"bench-{os.getpid()}-{variant.replace(',', '').replace('/', 'm')}-{r}"
        t0 = time.perf_counter()
        result = train_run(config, train, None, run_id=run_id, max_steps=steps, target=target)
        best = max(best, steps * config.training.batch_size / (time.perf_counter() - t0))
        if result.steps != steps:
            raise SystemExit(f"ran {result.steps} steps, expected {steps}")
    return best


def main(argv=None) -> int:
    """Run both trainers on the same steps and write the figures as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--variants", nargs="+", default=["2,1,1/1", "1,1,1/1", "2,2,1/2", "2,2,2/4"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data", default=os.environ.get("CUTTLEFISH_DATA", str(ROOT.parent / "shared/datasets/mnist")))
    p.add_argument("--out", default=str(ROOT / "bench/results/embedded.json"))
    args = p.parse_args(argv)
    train = load_mnist("train", args.data)
    best_ref = reference_rate(train, args.steps, args.repeat)
    variants = []
    for variant in args.variants:
        best = variant_rate(train, variant, args.steps, args.repeat)
        shards, micro = variant.split("/")
        variants.append({"shards": [int(s) for s in shards.split(",")], "micro_batches": int(micro),
                         "embedded_samples_per_s": round(best, 1), "ratio": round(best / best_ref, 3)})
    out = {
        "benchmark": "embedded distributed run vs single-process trainer",
        "network": "784-256-256-10", "batch": 128, "dtype": "float32", "optimizer": "momentum",
        "steps": args.steps, "repeats": args.repeat,
        "measure": "best of repeats; wall time including start-up and the final checkpoint",
        "single_process_samples_per_s": round(best_ref, 1),
        "variants": variants,
        "best_ratio": max(v["ratio"] for v in variants),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
