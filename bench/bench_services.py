"""Real-service figures in one run: broker throughput, Redis large values, checkpoints, training over amqp+redis.

    python bench/bench_services.py [--amqp URL --redis URL] [--steps N] [--out bench/results/services.json]

Without URLs it starts RabbitMQ and Redis containers (tests/services.py: the images built by
compose/build-images.sh, else the official ones). Every figure is the best of --repeat runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_embedded import reference_rate, variant_rate  # noqa: E402
from broker import connect  # noqa: E402
from orchestrator.data.mnist import load_mnist  # noqa: E402
from orchestrator.data.model import init_params  # noqa: E402
from paramstore import open_store  # noqa: E402
from paramstore.checkpoint import Checkpoints  # noqa: E402

SIZES = {"4KB": 4 << 10, "128KB": 128 << 10, "1MB": 1 << 20}
TOTAL_BYTES = 64 << 20  # per size: enough messages to reach a steady rate


def broker_throughput(url: str, size: int, repeat: int) -> dict:
    """Messages/s and MB/s through one queue: a publisher and a consumer on their own connections."""
    count = max(200, min(20000, TOTAL_BYTES // size))
    best = 0.0
    for r in range(repeat):
        queue = f"cf.bench.{os.getpid()}.{size}.{r}"
        pub, sub = connect(url), connect(url)
        pub.declare(queue)
        sub.declare(queue)
        body = os.urandom(size)
        done = threading.Event()

        def consume(sub=sub, queue=queue, done=done) -> None:  # this round's, not a later one's
            for _ in range(count):
                d = sub.get(queue, timeout=60)
                if d is None:
                    raise SystemExit("broker benchmark: a message did not arrive within 60 s")
                sub.ack(d)
            done.set()

        t0 = time.perf_counter()
        thread = threading.Thread(target=consume)
        thread.start()
        for _ in range(count):
            pub.publish(queue, body)
        thread.join()
        best = max(best, count / (time.perf_counter() - t0))
        pub.delete(queue)
        pub.close()
        sub.close()
    return {"messages": count, "msgs_per_s": round(best, 1), "MB_per_s": round(best * size / 1e6, 1)}


def redis_large_values(url: str, repeat: int) -> dict:
    """Seconds per 1 MB GET: redis-py's default 64 KB socket reads against the store's 1 MB reads."""
    import redis

    value, out = os.urandom(1 << 20), {}
    tuned = open_store(url)
    tuned.put("cf-bench/1mb", value)
    plain = redis.Redis.from_url(url.split("?")[0])
    for name, get in (("redis-py default", lambda: plain.get("cf-bench/1mb")),
                      ("RedisStore (1 MB reads)", lambda: tuned.get("cf-bench/1mb"))):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(50):
                assert get() == value
            best = min(best, (time.perf_counter() - t0) / 50)
        out[name] = {"ms_per_get": round(best * 1e3, 3), "MB_per_s": round(1 / best, 1)}
    tuned.delete("cf-bench/1mb")
    tuned.close()
    plain.close()
    return out


def checkpoint_times(url: str, sizes: tuple[int, ...], repeat: int) -> dict:
    """Seconds to write (and commit) and to read back every slice of a model with momentum state."""
    params = init_params(sizes, "relu", "float32", 0)
    store = open_store(url)
    ckpt = Checkpoints(store, f"bench-{os.getpid()}")
    nbytes = 2 * sum(w.nbytes + b.nbytes for w, b in params)
    write, read = float("inf"), float("inf")
    for version in range(1, repeat + 1):
        t0 = time.perf_counter()
        for layer, (w, b) in enumerate(params, start=1):
            ckpt.write_slice(version, layer, 0, w.shape[0], {"W": w, "b": b, "vW": w, "vb": b})
        ckpt.commit(version, {layer: [(0, w.shape[0])] for layer, (w, _) in enumerate(params, start=1)})
        write = min(write, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for layer in range(1, len(params) + 1):
            ckpt.read_layer(version, layer, ("W", "b", "vW", "vb"))
        read = min(read, time.perf_counter() - t0)
    for key in store.keys(f"cuttlefish/{ckpt.run_id}/"):
        store.delete(key)
    store.close()
    return {"network": "-".join(map(str, sizes)), "MB": round(nbytes / 1e6, 2),
            "write_commit_s": round(write, 4), "read_s": round(read, 4)}


def training(amqp: str, redis_url: str, steps: int, repeat: int, variants: list[str], data: str) -> dict:
    """Samples/s of 784-256-256-10 (batch 128, float32): single process against a process per neuron."""
    train = load_mnist("train", data)
    best_ref = reference_rate(train, steps, repeat)
    rows = []
    for variant in variants:
        best = variant_rate(train, variant, steps, repeat, target="local", broker=amqp, store=redis_url)
        shards, micro = variant.split("/")
        rows.append({"shards": [int(s) for s in shards.split(",")], "micro_batches": int(micro),
                     "samples_per_s": round(best, 1), "ratio": round(best / best_ref, 3)})
    return {"network": "784-256-256-10", "batch": 128, "dtype": "float32", "steps": steps,
            "measure": "wall time including process start-up and the final checkpoint",
            "single_process_samples_per_s": round(best_ref, 1), "process_per_neuron": rows}


def main(argv=None) -> int:
    """Run every benchmark against one RabbitMQ and one Redis and write the figures as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--amqp", default=os.environ.get("CUTTLEFISH_TEST_AMQP_URL"))
    p.add_argument("--redis", default=os.environ.get("CUTTLEFISH_TEST_REDIS_URL"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["1,1,1/1", "2,1,1/1", "1,1,1/2"])
    p.add_argument("--data", default=os.environ.get("CUTTLEFISH_DATA", str(ROOT.parent / "shared/datasets/mnist")))
    p.add_argument("--out", default=str(ROOT / "bench/results/services.json"))
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        amqp, redis_url = args.amqp, args.redis
        if not (amqp and redis_url):
            from tests import services

            amqp = amqp or stack.enter_context(services.rabbitmq())[0]
            redis_url = redis_url or stack.enter_context(services.redis())[0]
        out = {
            "benchmark": "RabbitMQ and Redis backends, process-per-neuron training",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
            "broker_throughput": {name: broker_throughput(amqp, size, args.repeat) for name, size in SIZES.items()},
            "redis_1MB_get": redis_large_values(redis_url, args.repeat),
            "checkpoint": [checkpoint_times(redis_url, sizes, args.repeat)
                           for sizes in ((784, 256, 256, 10), (784, 1024, 1024, 1024, 10))],
            "training": training(amqp, redis_url, args.steps, args.repeat, args.variants, args.data),
        }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
