"""The latency floor of one hop: a body bounced between two parties through a broker backend.

memory:// bounces between two threads of this process (the embedded mode's hand-off); amqp:// between
this process and a second one, each with its own connection (the process-per-neuron mode's hop).
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time

from broker import connect

ROUNDS, WARMUP = 400, 50
STOP = b"stop"


def _echo(broker, ping: str, pong: str) -> None:
    while True:
        d = broker.get(ping, timeout=30)
        if d is None:
            return
        broker.ack(d)
        if d.body == STOP:
            return
        broker.publish(pong, d.body)


def _echo_process(url: str, ping: str, pong: str, options: dict) -> None:
    broker = connect(url, **options)
    try:
        broker.declare(ping)
        broker.declare(pong)
        _echo(broker, ping, pong)
    finally:
        broker.close()


def pingpong(url: str, size: int, **options) -> dict:
    """Round-trip times of a `size`-byte body through `url` (a ping and its echo are two hops)."""
    ping, pong = f"cf.pp.{os.getpid()}.ping", f"cf.pp.{os.getpid()}.pong"
    broker = connect(url, **options)
    broker.declare(ping)
    broker.declare(pong)
    broker.purge(ping)
    broker.purge(pong)
    if url.startswith("memory"):
        peer = threading.Thread(target=_echo, args=(broker, ping, pong), daemon=True)
    else:
        peer = multiprocessing.get_context("spawn").Process(target=_echo_process, args=(url, ping, pong, options))
    peer.start()
    body, times = os.urandom(size), []
    try:
        for i in range(ROUNDS + WARMUP):
            t0 = time.perf_counter()
            broker.publish(ping, body)
            d = broker.get(pong, timeout=30)
            if d is None:
                raise RuntimeError(f"ping-pong through {url.split('@')[-1]}: no echo within 30 s")
            broker.ack(d)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        broker.publish(ping, STOP)
        peer.join(timeout=30)
    finally:
        if not url.startswith("memory"):
            broker.delete(ping)
            broker.delete(pong)
        broker.close()
    backend = url.split(":", 1)[0] + "://" + (f" {options}" if options else "")
    return {"backend": backend.strip(), "bytes": size, "rounds": ROUNDS,
            "median_ms": round(statistics.median(times) * 1e3, 4), "mean_ms": round(statistics.fmean(times) * 1e3, 4),
            "p90_ms": round(sorted(times)[int(0.9 * len(times))] * 1e3, 4)}
