"""One neuron as an OS process (`python -m neuron`): connect, wait for the run, beat, serve until stopped.

Everything comes from flags or the environment, so a container needs no arguments but its role:
CUTTLEFISH_RUN_ID, CUTTLEFISH_LAYER (a number, or "head"), CUTTLEFISH_INDEX, CUTTLEFISH_BROKER,
CUTTLEFISH_STORE, CUTTLEFISH_CONFIG (a YAML config whose broker and paramstore URLs are the defaults). The network's shape
is read from the run's manifest, written by the driver, so every neuron of a run agrees with it.
With CUTTLEFISH_WITH_HEAD=1 (--with-head) the only neuron of the output layer also plays the loss head, on
the same thread: the logits and their gradient then never cross the broker (neuron/host.py).
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, TypeVar

import yaml
from threadpoolctl import threadpool_limits

from broker import connect
from broker.base import Broker
from broker.errors import BrokerError
from broker.schemes import redact_url
from neuron.actor import Actor
from neuron.dense import DenseNeuron
from neuron.errors import NeuronError
from neuron.head import LossHead
from neuron.host import Colocated, run_together
from neuron.protocol import Hello
from neuron.role import HEAD, HEAD_WORD, Role
from neuron.topology import RUN_ID, Topology
from paramstore import open_store
from paramstore.checkpoint import Checkpoints
from paramstore.errors import StoreError, StoreRefused
from paramstore.run import RunRecord

log = logging.getLogger("neuron")

EXIT_USAGE = 2
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class UsageError(Exception):
    """A flag or environment variable is missing or malformed."""


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m neuron", description="Run one Cuttlefish neuron (or the loss head).")
    p.add_argument("--run-id", default=env("CUTTLEFISH_RUN_ID"), help="the run to serve [CUTTLEFISH_RUN_ID]")
    p.add_argument("--layer", default=env("CUTTLEFISH_LAYER"), help="layer number, or 'head' [CUTTLEFISH_LAYER]")
    p.add_argument("--index", default=env("CUTTLEFISH_INDEX", "0"), help="shard index in the layer [CUTTLEFISH_INDEX]")
    p.add_argument("--config", default=env("CUTTLEFISH_CONFIG"), help="YAML config; its broker and store are the defaults")
    p.add_argument("--broker", default=env("CUTTLEFISH_BROKER"), help="broker URL [CUTTLEFISH_BROKER]")
    p.add_argument("--store", default=env("CUTTLEFISH_STORE"), help="parameter store URL [CUTTLEFISH_STORE]")
    p.add_argument("--wait", type=float, default=float(env("CUTTLEFISH_WAIT", "300")),
                   help="seconds to wait for the broker, the store and the run's manifest")
    p.add_argument("--with-head", action="store_true", default=env("CUTTLEFISH_WITH_HEAD", "") in ("1", "true"),
                   help="the single neuron of the output layer also plays the loss head [CUTTLEFISH_WITH_HEAD=1]")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--log-level", default=env("CUTTLEFISH_LOG_LEVEL", "INFO"),
                   help=f"logging: {', '.join(LOG_LEVELS)} [CUTTLEFISH_LOG_LEVEL] (default INFO)")
    return p


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A logging level name, in any case; anything else is refused (argparse.ArgumentTypeError)."""
    level = str(text).strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"unknown log level {text!r}; known: {', '.join(LOG_LEVELS)}")
    return level


def _retry(what: str, fn: Callable[[], T], deadline: float, errors: tuple) -> T:
    """fn() until it succeeds or `deadline` passes (then its last error propagates)."""
    delay = 0.5
    while True:
        try:
            return fn()
        except errors as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.info("waiting for %s: %s", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _config_urls(path: str) -> tuple[str | None, str | None]:
    """The broker and paramstore URLs of a YAML config; the driver validates the rest of it, not the neuron."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"config error: {path}: {exc}") from None
    urls = []
    for key in ("broker", "paramstore"):
        value = data.get(key) if isinstance(data, dict) else None
        if value is not None and not (isinstance(value, str) and "://" in value):
            raise UsageError(f"config error: {key}: must be a URL such as 'memory://'")
        urls.append(value)
    return urls[0], urls[1]


def _settings(args: argparse.Namespace) -> tuple[str, Role, str, str]:
    if not args.run_id or not RUN_ID.match(args.run_id):
        raise UsageError(f"--run-id (or CUTTLEFISH_RUN_ID) must be 1-64 of A-Z a-z 0-9 _ . - (got {args.run_id!r})")
    if args.layer is None:
        raise UsageError("--layer (or CUTTLEFISH_LAYER) is required: a layer number or 'head'")
    try:
        int(args.index), args.layer == HEAD_WORD or int(args.layer)
    except ValueError:
        raise UsageError(f"--layer must be a number or 'head' and --index a number (got {args.layer!r}, {args.index!r})") from None
    try:
        role = Role.parse(args.layer, args.index)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    broker_url, store_url = args.broker, args.store
    if args.config and not (broker_url and store_url):
        config_broker, config_store = _config_urls(args.config)
        broker_url, store_url = broker_url or config_broker, store_url or config_store
    if not broker_url or not store_url:
        raise UsageError("a broker and a store URL are needed: --broker/--store, CUTTLEFISH_BROKER/STORE or --config")
    return args.run_id, role, broker_url, store_url


def _topology(checkpoints: Checkpoints, deadline: float) -> Topology:
    def read() -> Topology:
        manifest = checkpoints.manifest()
        if manifest is None or manifest.topology is None:
            raise LookupError(f"run {checkpoints.run_id} has no manifest yet")
        key = checkpoints.record.message_key()
        if key is None:
            raise LookupError(f"run {checkpoints.run_id} has no message key yet")
        return Topology.from_dict(dict(manifest.topology)).with_key(key)
    return _retry("the run's manifest", read, deadline, (LookupError, StoreError))


def make_actor(topo: Topology, role: Role, broker: Broker, checkpoints: Checkpoints) -> Actor:
    """The actor that plays `role` in `topo`: a dense neuron or the loss head."""
    if role.is_head:
        return LossHead(topo, broker)
    if not (1 <= role.layer <= topo.depth and 0 <= role.index < topo.shards[role.layer - 1]):
        raise UsageError(f"the run has no neuron {role.name} (layers 1-{topo.depth}, shards {list(topo.shards)})")
    return DenseNeuron(topo, role.layer, role.index, broker, checkpoints)


class Heartbeat:
    """A thread that records the actor's status in the store every `interval` seconds."""

    def __init__(self, actor: Actor, record: RunRecord, interval: float) -> None:
        self.actor, self.record, self.interval = actor, record, interval
        # several missed beats, not one slow store write, mark a neuron as gone
        self.ttl = max(5 * interval, 5.0)
        self.stop = threading.Event()
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="cuttlefish-heartbeat", daemon=True)

    def status(self) -> dict:
        """What the heartbeat records: identity, generation, step, message counters, queue depth."""
        a = self.actor
        return {"actor": a.name, "pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
                "time": time.time(), "generation": a.generation, "step": a.step, "stats": dict(a.stats)}

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.record.beat(self.actor.name, self.status(), ttl=self.ttl)
            except StoreError as exc:  # a store outage must not kill the neuron; the driver notices the silence
                log.warning("heartbeat of %s failed: %s", self.actor.name, exc)

    def start(self) -> None:
        """Beat once now, then every interval."""
        self.record.beat(self.actor.name, self.status(), ttl=self.ttl)
        self._thread.start()


def serve(run_id: str, role: Role, broker_url: str, store_url: str, *, wait: float = 300.0,
          heartbeat: float = 1.0, stop: threading.Event | None = None, with_head: bool = False) -> int:
    """Connect, build the actor (and the head with it), announce it and handle messages until a stop; returns the exit status."""
    deadline = time.monotonic() + wait
    store = _retry(f"the store at {redact_url(store_url)}", lambda: open_store(store_url), deadline, (StoreError,))
    broker = None
    try:
        broker = _retry(f"the broker at {redact_url(broker_url)}", lambda: connect(broker_url), deadline, (BrokerError,))
        checkpoints = Checkpoints(store, run_id)
        topo = _topology(checkpoints, deadline)
        roles = [role]
        if with_head:
            if role.is_head or role.layer != topo.depth or topo.shards[-1] != 1:
                raise UsageError(f"--with-head needs the only neuron of the output layer L{topo.depth}.0, not {role.name}")
            roles.append(HEAD)
        router = Colocated(broker, [r.queue(run_id) for r in roles])
        actors = [make_actor(topo, r, router if with_head else broker, checkpoints) for r in roles]
        for queue in topo.all_queues():  # idempotent; a neuron may come up before the driver
            broker.declare(queue, dead_letter=topo.dead_letter_queue)
        beats = [Heartbeat(actor, checkpoints.record, heartbeat) for actor in actors]
        for beat, actor in zip(beats, actors):
            beat.start()
            actor.report(Hello(actor.name, os.getpid(), socket.gethostname()))
            log.info("%s of run %s serving %s", actor.name, run_id, actor.queue)
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                if with_head:
                    run_together(actors, router, stop)
                else:
                    actors[0].run(stop)
        except NeuronError as exc:  # e.g. divergence: the same data would fail again, so the run must end
            log.exception("%s failed", actors[0].name)
            actors[0].fail(exc)
            return 1
        except StoreRefused as exc:  # out of memory, read-only, disk full: a restart would fail the same way
            log.error("%s: %s", actor.name, exc)
            actor.fail(exc)
            return 1
        except (BrokerError, StoreError) as exc:  # an outage: a restart and a new generation recover it
            log.error("%s lost a service: %s", actors[0].name, exc)
            return 1
        finally:
            for beat in beats:
                beat.stop.set()
        for actor in actors:
            log.info("%s stopped: %s", actor.name, dict(actor.stats))
        return 0
    finally:
        if broker is not None:
            broker.close()
        store.close()


def _die_with_parent() -> bool:
    """Under a supervisor (CUTTLEFISH_PARENT_PID): be killed with it; False if it is already gone."""
    parent = os.environ.get("CUTTLEFISH_PARENT_PID", "")
    if not parent.isdigit():
        return True
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the neuron outlives a killed supervisor until the driver stops it
    return os.getppid() == int(parent)


def main(argv: list[str] | None = None) -> int:
    """Run one neuron; 0 when told to stop, 1 when it failed, 2 for bad flags or environment."""
    if not _die_with_parent():
        print("neuron: the supervising process is gone", file=sys.stderr)
        return 1
    args = _parser().parse_args(argv)
    try:
        level = log_level(args.log_level)
    except argparse.ArgumentTypeError as exc:
        print(f"neuron: --log-level / CUTTLEFISH_LOG_LEVEL: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pika logs every failed connection attempt as an error with a traceback; ours say what matters
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    stop = threading.Event()
    # docker stop / compose down send SIGTERM: finish the message at hand and exit cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_id, role, broker_url, store_url = _settings(args)
        return serve(run_id, role, broker_url, store_url, wait=args.wait, heartbeat=args.heartbeat, stop=stop,
                     with_head=args.with_head)
    except UsageError as exc:
        print(f"neuron: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BrokerError, StoreError, LookupError) as exc:
        print(f"neuron: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
