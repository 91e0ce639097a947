"""Reproduce the seed paper's single-machine table with the embedded distributed run; writes bench/results/.

    python bench/seed_table.py [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.config import load_config  # noqa: E402
from orchestrator.data.mnist import load_mnist  # noqa: E402
from orchestrator.training.runner import train_run  # noqa: E402

# (config file, the paper's nodes, layers, epochs, accuracy)
ROWS = [
    ("seed-5x3.yaml", "5", 3, 1000, 88.61),
    ("seed-500x4.yaml", "500", 4, 10, 94.99),
    ("seed-50x3.yaml", "50", 3, 2000, 95.82),
    ("seed-deep.yaml", "784, 2500, 2000, 1500, 1000, 500, 10", 5, 30, 96.95),
]


def main(argv=None) -> int:
    """Train each row's config and write JSON plus a Markdown table."""
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*")
    p.add_argument("--data", default=os.environ.get("CUTTLEFISH_DATA", str(ROOT.parent / "shared/datasets/mnist")))
    p.add_argument("--out", default=str(ROOT / "bench/results/seed_table.json"))
    args = p.parse_args(argv)
    train, test = load_mnist("train", args.data), load_mnist("test", args.data)
    out_path = pathlib.Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name, nodes, layers, epochs, acc in ROWS:
        if args.only and name not in args.only:
            continue
        config = load_config(ROOT / "examples" / name)
        t0 = time.perf_counter()
        result = train_run(config, train, test, run_id="seed-table")
        results[name] = {
            "paper": {"nodes": nodes, "layers": layers, "epochs": epochs, "accuracy": acc},
            "ours": {"epochs": config.training.epochs, "shards": list(config.network.shards),
                     "micro_batches": config.training.micro_batches, "optimizer": config.training.optimizer,
                     "accuracy": round(100 * result.test_accuracy, 2), "wall_s": round(time.perf_counter() - t0, 1)},
        }
        print(name, results[name], flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| nodes | hidden layers | paper: epochs | paper: accuracy | ours: epochs | ours: accuracy | neurons per layer | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for name, nodes, layers, epochs, acc in ROWS:
        if name in results:
            r = results[name]["ours"]
            lines.append(f"| {nodes} | {layers} | {epochs or '-'} | {f'{acc:.2f}%' if acc else '-'} | {r['epochs']} | "
                         f"{r['accuracy']:.2f}% | {r['shards']} | {r['wall_s']} s |")
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
