"""Running a training job: open the broker and store, start the actors, drive the run, close everything."""
from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Callable

from broker import connect
from broker.base import Broker
from broker.schemes import redact_url
from neuron.topology import Topology
from orchestrator.config import Config
from orchestrator.config.plan import build_plan
from orchestrator.data.mnist import Dataset, check_fits
from orchestrator.data.model import Params, init_params
from orchestrator.errors import TrainingError
from orchestrator.runtimes import TARGETS, Runtime, Services, runtime_for
from orchestrator.training.driver import Driver, TrainResult
from orchestrator.training.options import DriverOptions
from orchestrator.training.schedule import Schedule
from paramstore import open_store
from paramstore.base import Store
from paramstore.checkpoint import Checkpoints
from paramstore.errors import CheckpointError, LeaseHeld
from paramstore.lease import Lease
from paramstore.manifest import Manifest


def new_run_id() -> str:
    """A fresh, sortable run id."""
    return time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def make_schedule(config: Config, samples: int, max_steps: int | None) -> Schedule:
    """The sample schedule of `config` over a training set of `samples`."""
    tr = config.training
    return Schedule(samples, tr.batch_size, tr.epochs, tr.seed, tr.shuffle, max_steps)


def _check_resumable(manifest: Manifest, topo: Topology, schedule: Schedule) -> None:
    stored = manifest.topology or {}
    if tuple(stored.get("sizes", ())) != topo.sizes:
        raise TrainingError(f"run {topo.run_id} has layer sizes {stored.get('sizes')}, the config says {list(topo.sizes)}")
    for key in ("optimizer", "dtype", "activation", "batch_size", "learning_rate", "lr_decay", "momentum",
                "weight_decay"):
        if stored.get(key) != getattr(topo, key):
            raise TrainingError(f"run {topo.run_id} was trained with {key}={stored.get(key)!r}, the config says {getattr(topo, key)!r}")
    was = manifest.schedule or {}
    for key in ("samples", "batch_size", "seed", "shuffle"):
        if was.get(key) != getattr(schedule, key):
            raise TrainingError(f"run {topo.run_id} was trained with {key}={was.get(key)!r}; resuming needs the same")


def train_run(
    config: Config,
    train: Dataset,
    test: Dataset | None,
    *,
    run_id: str,
    max_steps: int | None = None,
    resume: bool = False,
    initial: Params | None = None,
    options: DriverOptions | None = None,
    broker: Broker | None = None,
    store: Store | None = None,
    target: str = "embedded",
    on_actors: Callable[[Runtime], None] | None = None,
) -> TrainResult:
    """Train `config` and return the final weights and accuracy.

    `target` "embedded" runs one thread per neuron in this process; "local" one OS process per neuron,
    restarted when it dies (which needs a broker and store that processes share); "external" starts
    nothing: the neurons run elsewhere (containers) and are watched through their heartbeats. `broker` and `store`
    default to fresh connections to the config's URLs; pass shared instances to reuse an in-memory store
    across runs (tests resume that way). `on_actors(runtime)` is called once the actors are up.
    """
    if target not in TARGETS:  # before anything is opened
        raise TrainingError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    check_fits(config.network.num_inputs, config.network.num_classes, training=train, test=test)
    schedule = make_schedule(config, len(train), max_steps)
    topo = build_plan(config, run_id, schedule.steps_per_epoch)
    options = dataclasses.replace(options or DriverOptions(), checkpoint_every=config.training.checkpoint_every,
                                  max_neurons=config.network.max_neurons)
    if options.stall_timeout == DriverOptions.stall_timeout:  # an explicit option wins over the config
        options = dataclasses.replace(options, stall_timeout=config.training.stall_timeout)
    own_broker, own_store = broker is None, store is None
    broker = broker or connect(config.broker)
    store = store or open_store(config.paramstore)
    lease = Lease(store, run_id)
    try:
        # ownership first: a second driver is refused before it touches the run's queues or manifest
        try:
            lease.acquire(wait=lease.ttl + 1 if resume else 0.0)
        except LeaseHeld as exc:
            raise TrainingError(str(exc)) from None
        lease.start_renewing()
        checkpoints = Checkpoints(store, run_id, lease=lease)
        if resume:
            manifest = checkpoints.manifest()
            if manifest is None or manifest.latest is None:
                raise TrainingError(f"nothing to resume: run {run_id!r} has no committed checkpoint in {redact_url(config.paramstore)}")
            _check_resumable(manifest, topo, schedule)
            version, generation = manifest.latest, (manifest.generation or 0) + 1
            if version >= schedule.total_steps:
                raise TrainingError(f"run {run_id!r} is already at step {version} of {schedule.total_steps}")
        else:
            try:
                checkpoints.record.create(status="starting")
            except CheckpointError:
                stored = checkpoints.manifest()  # a run whose first driver died before checkpoint 0 starts afresh
                if stored is None or stored.latest is not None or stored.checkpoints:
                    raise TrainingError(f"run {run_id!r} already exists in the store: pass --resume or another "
                                        "--run-id") from None
        # the key signs every message; it lives in the store, which broker users cannot read
        topo = topo.with_key(checkpoints.record.create_message_key())
        runtime = runtime_for(target, topo, Services(broker, checkpoints, config.broker, config.paramstore))
        driver = Driver(topo, broker, checkpoints, options, runtime)
        driver.declare()
        if not resume:
            version, generation = 0, 1
            driver.generation = generation
            tr = config.training
            params = initial or init_params(topo.sizes, topo.activation, tr.dtype, tr.seed)
            driver.initialize(params, {"step": 0, "epoch": 0})
        checkpoints.update_manifest(generation=generation, status="running", topology=topo.to_dict(),
                                    schedule=dataclasses.asdict(schedule), max_neurons=config.network.max_neurons)
        with runtime:
            if on_actors is not None:
                on_actors(runtime)
            try:
                result = driver.run(train, test, schedule, version, generation)
            finally:
                driver.stop()
        result.actor_stats = runtime.stats()
        return result
    finally:
        lease.release()
        if own_broker:
            broker.close()
        if own_store:
            store.close()
