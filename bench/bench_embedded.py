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
from orchestrator.data import load_mnist  # noqa: E402
from orchestrator.model import init_params  # noqa: E402
from orchestrator.reference import ReferenceTrainer, train_reference  # noqa: E402
from orchestrator.runner import make_schedule, train_run  # noqa: E402

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
    base = parse_config(CONFIG.format(shards="1, 1, 1", micro=1))
    samples = args.steps * base.training.batch_size
    best_ref = 0.0
    for _ in range(args.repeat):
        trainer = ReferenceTrainer(init_params(base.network.sizes, "relu", "float32", 0), "relu", "momentum", 0.05, 0.9)
        t0 = time.perf_counter()
        train_reference(trainer, train, make_schedule(base, len(train), args.steps), "float32")
        best_ref = max(best_ref, samples / (time.perf_counter() - t0))
    variants = []
    for variant in args.variants:
        shards, micro = variant.split("/")
        config = parse_config(CONFIG.format(shards=shards, micro=int(micro)))
        best = 0.0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = train_run(config, train, None, run_id="bench", max_steps=args.steps)
            best = max(best, samples / (time.perf_counter() - t0))
            if result.steps != args.steps:
                raise SystemExit(f"ran {result.steps} steps, expected {args.steps}")
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
