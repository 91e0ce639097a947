"""The training driver ("client"): feeds the neurons, collects losses and predictions, commits checkpoints."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from broker.base import Broker
from neuron import codec, protocol
from neuron.errors import BadSignature, CodecError
from neuron.optim import state_names
from neuron.topology import Topology
from orchestrator.data.mnist import Dataset, pixels
from orchestrator.data.model import Params
from orchestrator.errors import NeuronLost, TrainingError
from orchestrator.runtimes.base import Runtime
from orchestrator.training import feed, rescale
from orchestrator.training.options import DriverOptions
from orchestrator.training.rescale import RescaleRequested
from orchestrator.training.schedule import Schedule
from paramstore.checkpoint import Checkpoints
from paramstore.errors import CheckpointError, LeaseLost
from paramstore.manifest import Rescale, ScaleRequest

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between the runtime's checks of its neurons while messages keep coming


@dataclass
class TrainResult:
    """What a finished run produced."""

    params: Params
    test_accuracy: float | None
    steps: int
    samples: int
    seconds: float
    epoch_accuracy: dict[int, float] = field(default_factory=dict)
    actor_stats: dict[str, dict] = field(default_factory=dict)
    recoveries: int = 0


class _Stalled(NeuronLost):
    """Nothing arrived for stall_timeout seconds during training."""


class Driver:
    """Runs one training run of `topo` over `broker`, checkpointing through `checkpoints`.

    `runtime`, where the actors live, is asked whether they are alive while the driver waits and to replace
    a rescaled layer's neurons; without one the driver relies on the messages alone.
    """

    def __init__(self, topo: Topology, broker: Broker, checkpoints: Checkpoints, options: DriverOptions,
                 runtime: Runtime | None = None) -> None:
        self.broker, self.checkpoints, self.options, self.runtime = broker, checkpoints, options, runtime
        self.queue = topo.queue(0)
        self._set_topology(topo)
        self._look_for_rescale = False
        self._pending_record: tuple[Rescale, float] | None = None  # a rescale under way, since when
        self.generation = 0
        self._ready: set[str] = set()
        self._losses: dict[int, dict] = {}
        self._ckpt_reports: dict[int, set[str]] = {}
        self._committed = -1
        self._preds: dict[int, np.ndarray] = {}
        self._expected_preds: dict[int, int] = {}  # micro -> rows of the evaluation under way
        self._last_message = time.monotonic()
        self._checked = self._last_message  # when the runtime last checked its neurons
        self._starting = False
        self._sent: dict[int, int] = {}  # step -> samples, over every generation
        self.epoch_accuracy: dict[int, float] = {}
        self.recoveries = 0
        self._reconnects = broker.reconnects
        self.stats: Counter = Counter()  # messages the driver rejected ("rejected", of them "unsigned")

    def _set_topology(self, topo: Topology) -> None:
        self.topo = topo
        self.schema = topo.schema_for(0, 0)
        self.actors = topo.actor_names()

    # -- set-up -----------------------------------------------------------------------------------
    def declare(self) -> None:
        """Create every queue of the run, each dead-lettering to the run's dead-letter queue, and empty them.

        Whatever an earlier driver of the run left there belongs to a generation that is over.
        """
        self._declare(self.topo.all_queues())

    def _declare(self, queues) -> None:
        for queue in queues:
            self.broker.declare(queue, dead_letter=self.topo.dead_letter_queue)
            self.broker.purge(queue)

    @property
    def token(self) -> int:
        """The fencing token of this driver's lease on the run (0 without one)."""
        lease = self.checkpoints.record.lease
        return 0 if lease is None else lease.token

    def _latest(self) -> int:
        """The latest committed checkpoint; RunDataLost if the store no longer knows the run."""
        version = self.checkpoints.latest()
        if version is None:
            self.checkpoints.record.current()  # raises RunDataLost when the manifest is gone
            raise TrainingError(f"run {self.topo.run_id} has no committed checkpoint to go back to")
        return version

    def _check_lease(self) -> None:
        lease = self.checkpoints.record.lease
        if lease is not None:
            lease.check()  # LeaseLost, RunDataLost: found by the renewal thread

    def initialize(self, params: Params, info: dict) -> None:
        """Store `params` (with zero optimizer state) as committed checkpoint 0 of a new run (created if need be)."""
        manifest = self.checkpoints.manifest()
        if manifest is None:
            try:
                self.checkpoints.record.create()
            except CheckpointError:
                manifest = self.checkpoints.manifest()
        if manifest is not None and (manifest.latest is not None or manifest.checkpoints):
            raise TrainingError(f"run {self.topo.run_id!r} already exists in the store: pass --resume or another --run-id")
        if tuple(p[0].shape[0] for p in params) != self.topo.sizes[1:]:
            raise TrainingError("initial parameters do not match the network's sizes")
        names = state_names(self.topo.optimizer)
        for layer, (w, b) in enumerate(params, start=1):
            for a, z in self.topo.splits(layer):
                arrays = {"W": w[a:z], "b": b[a:z]}
                arrays.update({n: np.zeros_like(arrays[n[1:]]) for n in names})
                self.checkpoints.write_slice(0, layer, a, z, arrays)
        self._commit(0, info)

    def _commit(self, version: int, info: dict) -> None:
        splits = {layer: list(self.topo.splits(layer)) for layer in range(1, self.topo.depth + 1)}
        self._check_lease()
        self.checkpoints.commit(version, splits, {**info, "generation": self.generation, "token": self.token})
        self.checkpoints.prune(keep=self.options.keep_checkpoints)
        self._committed = version
        self._look_for_rescale = True

    # -- messages ---------------------------------------------------------------------------------
    def _control(self, op: protocol.Start | protocol.Stop) -> None:
        body = codec.encode(protocol.CONTROL, self.topo.run_tag, self.generation, 0, data=op.to_data(),
                            key=self.topo.key)
        self.broker.publish_many([role.queue(self.topo.run_id) for role in self.topo.roles()], body)

    def _check_stall(self, now: float) -> None:
        """Raise if no authentic message came for `stall_timeout` seconds."""
        if now - self._last_message <= self.options.stall_timeout:
            return
        silent = f"no message from any neuron for {self.options.stall_timeout:.0f} s"
        if self.broker.alarm is not None:
            raise TrainingError(f"{silent}: the broker raised {self.broker.alarm}")
        if self._starting:
            missing = sorted(set(self.actors) - self._ready)
            raise TrainingError(f"{silent}; not ready: {', '.join(missing)}")
        raise _Stalled(silent)  # a message lost with a broker connection: replay the steps

    def _pump(self, timeout: float) -> None:
        self._check_lease()
        if self.broker.reconnects != self._reconnects:
            self._reconnects = self.broker.reconnects
            # messages in flight went with the connection: replay now rather than wait for a stall
            raise NeuronLost("the broker connection was lost and is back")
        delivery = (self.broker.get(self.queue, timeout=timeout) if self.runtime is None
                    else self.runtime.wait_for(self.broker, self.queue, timeout))
        # on a clock, not only when the queue is empty: a flood of forged messages must not keep dead
        # neurons from being noticed or a stall from being seen (only authentic messages count as life)
        now = time.monotonic()
        if self.runtime is not None and (delivery is None or now - self._checked > CHECK_EVERY):
            self._checked = now
            self.runtime.check()
        if delivery is None:
            self._check_stall(now)
            return
        try:
            msg = codec.received(delivery, self.schema)
        except CodecError as exc:
            self.stats["rejected"] += 1
            if isinstance(exc, BadSignature):
                self.stats["unsigned"] += 1
            log.warning("driver rejected a message: %s", exc)
            self.broker.reject(delivery, f"{type(exc).__name__}: {exc}")
            self._check_stall(now)
            return
        self._last_message = time.monotonic()
        report = None
        if msg.kind == protocol.REPORT:
            try:
                report = protocol.parse_report(msg.data or {})
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("driver ignored a malformed report %r: %s", msg.data, exc)
                self.broker.ack(delivery)
                return
        if isinstance(report, protocol.Hello):
            self.broker.ack(delivery)
            self._on_hello(report.actor)
            return
        current = msg.generation == self.generation
        if current and msg.kind == protocol.PRED and self._expected_preds.get(msg.micro) != msg.array.shape[0]:
            self.stats["rejected"] += 1
            self.broker.reject(delivery, f"unexpected predictions for micro-batch {msg.micro}")
            return
        self.broker.ack(delivery)
        if not current:
            return
        if msg.kind == protocol.PRED:
            self._preds[msg.micro] = msg.array
            return
        if report is not None:
            self._on_report(report)

    def _on_hello(self, actor: str) -> None:
        # A neuron that was ready has restarted and lost its state; one not ready yet will read the start.
        if actor in self._ready:
            raise NeuronLost(f"neuron {actor} restarted")

    def _on_report(self, report: protocol.Report) -> None:
        if isinstance(report, protocol.Failed):
            raise TrainingError(f"neuron {report.actor} failed: {report.error}")
        if isinstance(report, protocol.Ready):
            self._ready.add(report.actor)
        elif isinstance(report, protocol.Loss):
            self._losses[report.step] = {"loss": report.loss, "samples": report.samples}
        elif isinstance(report, protocol.Saved):
            if report.actor not in self.actors:
                log.warning("driver ignored a checkpoint report of unknown actor %r", report.actor)
                return
            self._ckpt_reports.setdefault(report.version, set()).add(report.actor)

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        self._last_message = time.monotonic()
        while not done():
            try:
                self._pump(0.5)
            except TrainingError as exc:
                raise type(exc)(f"{exc} (while waiting for {what})") from exc

    def _commit_ready(self, info: Callable[[int], dict]) -> None:
        neurons = len(self.actors) - 1
        for version in sorted(self._ckpt_reports):
            if version > self._committed and len(self._ckpt_reports[version]) == neurons:
                self._commit(version, info(version))
                del self._ckpt_reports[version]

    # -- the run ----------------------------------------------------------------------------------
    def start_generation(self, generation: int, version: int) -> None:
        """Tell every actor to start `generation` from checkpoint `version`, and wait until all are ready."""
        self.generation = generation
        self._ready.clear()
        self._losses.clear()
        self._preds.clear()
        self._expected_preds.clear()
        self._ckpt_reports.clear()
        self._committed = version
        # a restarted driver must pick a generation above every one that ever ran
        self.checkpoints.update_manifest(generation=generation)
        self._control(protocol.Start(generation, version, self.topo.to_dict(), self.token))
        self._starting = True
        try:
            self._wait(lambda: len(self._ready) == len(self.actors), "every neuron to load its checkpoint")
        finally:
            self._starting = False

    def run(self, train: Dataset, test: Dataset | None, schedule: Schedule, start: int, generation: int) -> TrainResult:
        """Start `generation` from checkpoint `start` and train to the end, recovering from lost neurons.

        A lost neuron ends the generation: the next one reloads the latest committed checkpoint in every
        neuron and replays the same batches from there, so the final weights are those of an undisturbed run.
        """
        t0, version = time.monotonic(), start
        stalls: dict[int, int] = {}
        while True:
            try:
                self.start_generation(generation, version)
                if self._pending_record is not None:  # training resumes: the pause of a rescale is over
                    (entry, t0), self._pending_record = self._pending_record, None
                    layer = entry.request.layer
                    entry = dataclasses.replace(entry, pause_s=round(time.monotonic() - t0, 3),
                                                to_shards=self.topo.shards[layer - 1])
                    self.checkpoints.record.add_rescale(entry)
                    log.warning("layer %d now has %d neurons; training paused %.2f s",
                                layer, entry.to_shards, entry.pause_s)
                params, accuracy = self.train(train, test, schedule, version)
                break
            except RescaleRequested as req:
                version, generation = self._latest(), self.generation + 1
                self._rescale(req.request, version, generation)
            except NeuronLost as exc:
                if isinstance(exc, _Stalled):
                    stalls[version] = stalls.get(version, 0) + 1
                    if stalls[version] >= 2:  # replaying did not help: too slow or stuck, not a lost message
                        raise TrainingError(f"{exc}, twice from checkpoint {version}") from exc
                self.recoveries += 1
                if self.recoveries > self.options.max_recoveries:
                    raise TrainingError(f"gave up after {self.options.max_recoveries} recoveries: {exc}") from exc
                version, generation = self._latest(), self.generation + 1
                log.warning("%s; generation %d replays from checkpoint %d", exc, generation, version)
        return TrainResult(params, accuracy, schedule.total_steps - start,
                           sum(n for step, n in self._sent.items() if step >= start), time.monotonic() - t0,
                           dict(self.epoch_accuracy), recoveries=self.recoveries)

    def _rescale(self, request: ScaleRequest, version: int, generation: int) -> None:
        """Switch to the requested split; the next start_generation has every actor adopt it."""
        t0 = time.monotonic()
        runtime = self.runtime
        new = rescale.resolve(self.checkpoints.record, self.topo, request,
                              can_replace=runtime is not None and runtime.can_replace, limit=self.options.max_neurons)
        if new is None or runtime is None:
            return
        old, layer = self.topo, request.layer
        gone = [old.queue(layer, i) for i in range(new.shards[layer - 1], old.shards[layer - 1])]
        self._declare([new.queue(layer, i) for i in range(old.shards[layer - 1], new.shards[layer - 1])])
        self._set_topology(new)
        self.checkpoints.update_manifest(topology=new.to_dict())  # new neuron processes read their split here
        runtime.replace_layer(new, layer)
        for queue in gone:
            self.broker.delete(queue)
        self.checkpoints.record.clear_scale_request()
        self._pending_record = (Rescale(request, old.shards[layer - 1], version=version, generation=generation), t0)
        log.warning("rescaling layer %d from %d to %d neurons at checkpoint %d", layer,
                    old.shards[layer - 1], new.shards[layer - 1], version)

    def stop(self) -> None:
        """Tell every actor to exit."""
        lease = self.checkpoints.record.lease
        if lease is not None and isinstance(lease.lost, LeaseLost):
            return  # superseded: the actors belong to the driver that took the run over
        self._control(protocol.Stop(self.generation, self.token))

    def train(self, train: Dataset, test: Dataset | None, schedule: Schedule, start: int) -> tuple[Params, float | None]:
        """Train from committed checkpoint `start` to the schedule's end; the generation must be started.

        Returns the final weights and test accuracy; run() wraps this with recovery and rescaling.
        """
        opts = self.options
        accuracy = None
        order, epoch = None, -1
        total = schedule.total_steps

        def info(version: int) -> dict:
            return {"step": version, "epoch": schedule.epoch_of(max(version - 1, 0)), "total_steps": total}

        for step in range(start, total):
            self._wait(lambda step=step: step - opts.window <= start - 1 or (step - opts.window) in self._losses,
                       f"the loss of step {step - opts.window}")
            self._commit_ready(info)
            if self._look_for_rescale:  # only at a checkpoint: the new split starts from it
                self._look_for_rescale = False
                request = self.checkpoints.record.scale_request()
                if request is not None:
                    raise RescaleRequested(request)
            if schedule.epoch_of(step) != epoch:
                epoch = schedule.epoch_of(step)
                order = schedule.order(epoch)
            idx = schedule.indices(step, order)
            last = step == total - 1
            flags = protocol.CHECKPOINT if (step + 1) % opts.checkpoint_every == 0 or last else 0
            # raw pixels, a quarter of the bytes of the floats; layer 1 scales them exactly as to_inputs does
            feed.send_step(self.broker, self.topo, self.generation, step, pixels(train.images[idx]),
                           train.labels[idx], flags)
            self._sent[step] = len(idx)
            if test is not None and (schedule.ends_epoch(step) or last):
                self._wait(lambda step=step: step in self._losses, f"the loss of step {step}")
                self._report_losses(opts)
                accuracy = self.evaluate(test, step + 1)
                self.epoch_accuracy[epoch] = accuracy
                if opts.on_epoch is not None:
                    opts.on_epoch(epoch, accuracy)
            self._report_losses(opts)
        def final_committed() -> bool:
            self._commit_ready(info)
            return self._committed >= total

        self._wait(final_committed, f"the final checkpoint {total}")
        self._report_losses(opts)
        params = self.checkpoints.read_model(total, self.topo.depth)
        self.checkpoints.update_manifest(status="done", test_accuracy=accuracy)
        return params, accuracy

    def _report_losses(self, opts: DriverOptions) -> None:
        for step in sorted(s for s, d in self._losses.items() if not d.get("reported")):
            self._losses[step]["reported"] = True
            if opts.on_step is not None:
                opts.on_step(step, float(self._losses[step]["loss"]), int(self._losses[step]["samples"]))
            self._losses.pop(step - 2 * opts.window - 2, None)

    def evaluate(self, test: Dataset, version: int) -> float:
        """Accuracy on `test` of the weights at `version`, computed through the neurons."""
        self._preds.clear()
        spans = feed.send_evaluation(self.broker, self.topo, self.generation, version, pixels(test.images))
        self._expected_preds.update({micro: b - a for micro, (a, b) in enumerate(spans)})
        self._wait(lambda: len(self._preds) == len(spans), f"predictions of checkpoint {version}")
        correct = sum(int((self._preds[m] == test.labels[a:b]).sum()) for m, (a, b) in enumerate(spans))
        self._preds.clear()
        self._expected_preds.clear()
        return correct / len(test.labels)
