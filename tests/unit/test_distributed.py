"""The central invariant: the embedded distributed run equals plain single-process training."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.config import parse_config
from orchestrator.data.model import init_params
from orchestrator.training.options import DriverOptions
from orchestrator.training.reference import ReferenceTrainer, train_reference
from orchestrator.training.runner import make_schedule, train_run
from paramstore import open_store
from paramstore.checkpoint import Checkpoints

STEPS = 30
TOLERANCE = {"float64": 1e-9, "float32": 1e-5}
LEARNING_RATE = {"sgd": 0.05, "momentum": 0.05, "adam": 0.001}


def _config(shards="[3, 2, 2]", micro=4, dtype="float64", optimizer="momentum", every=7):
    return parse_config(f"""
neural_network:
  num_of_hidden_layers: 2
  num_nodes_per_layer: [24, 12]
  num_classes: 10
  shards_per_layer: {shards}
training:
  data_batch_size: 50
  micro_batches: {micro}
  optimizer: {optimizer}
  learning_rate: {LEARNING_RATE[optimizer]}
  dtype: {dtype}
  seed: 4
  checkpoint_every: {every}
""")


def _reference(config, train, steps=STEPS):
    tr = config.training
    schedule = make_schedule(config, len(train), steps)
    trainer = ReferenceTrainer(init_params(config.network.sizes, config.network.activation, tr.dtype, tr.seed),
                               config.network.activation, tr.optimizer, tr.learning_rate, tr.momentum,
                               tr.lr_decay, schedule.steps_per_epoch, tr.weight_decay)
    return train_reference(trainer, train, schedule, tr.dtype)


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for (wa, ba), (wb, bb) in zip(a, b) for x, y in ((wa, wb), (ba, bb)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_distributed_equals_reference(small_mnist, dtype, optimizer):
    train, test = small_mnist
    config = _config(dtype=dtype, optimizer=optimizer)
    result = train_run(config, train, test, run_id="exact", max_steps=STEPS)
    assert result.steps == STEPS
    reference = _reference(config, train)
    assert all(w.dtype == np.dtype(dtype) for w, _ in result.params)
    assert _max_diff(result.params, reference) <= TOLERANCE[dtype]
    # and training did something
    assert _max_diff(result.params, init_params(config.network.sizes, "relu", dtype, 4)) > 1e-3


def test_shard_counts_agree(small_mnist):
    train, test = small_mnist
    runs = [train_run(_config(shards=s, micro=m), train, test, run_id="shards", max_steps=STEPS).params
            for s, m in (("1", 1), ("[3, 2, 2]", 4), ("[24, 12, 10]", 3), ("[5, 1, 3]", 2))]
    for other in runs[1:]:
        assert _max_diff(runs[0], other) <= TOLERANCE["float64"]


def test_stopped_run_resumes_to_the_same_bits(small_mnist, tmp_path):
    train, test = small_mnist
    config = _config(dtype="float32", optimizer="adam")
    whole = train_run(config, train, test, run_id="whole", max_steps=STEPS).params

    class Stop(Exception):
        pass

    def stop_at(step, loss, samples):
        if step == 17:
            raise Stop()

    store = open_store(f"file://{tmp_path}/store")
    with pytest.raises(Stop):
        train_run(config, train, test, run_id="resumed", max_steps=STEPS, store=store,
                  options=DriverOptions(on_step=stop_at))
    latest = Checkpoints(store, "resumed").latest()
    assert latest == 14  # checkpoint_every 7: steps after 14 are lost and replayed
    resumed = train_run(config, train, test, run_id="resumed", max_steps=STEPS, resume=True, store=store)
    assert resumed.steps == STEPS - latest
    for (wa, ba), (wb, bb) in zip(whole, resumed.params):
        assert wa.tobytes() == wb.tobytes() and ba.tobytes() == bb.tobytes()
    manifest = Checkpoints(store, "resumed").manifest()
    assert manifest["generation"] == 2 and manifest["latest"] == STEPS


def test_resume_with_other_shards_continues_the_mathematics(small_mnist, tmp_path):
    train, test = small_mnist
    store = open_store(f"file://{tmp_path}/store")
    first = _config(shards="[3, 2, 2]")
    train_run(first, train, test, run_id="resplit", max_steps=14, store=store)
    second = _config(shards="[2, 5, 1]", micro=2)
    resumed = train_run(second, train, test, run_id="resplit", max_steps=STEPS, resume=True, store=store)
    assert _max_diff(resumed.params, _reference(first, train)) <= TOLERANCE["float64"]


def test_partial_last_batch_epochs_lr_and_weight_decay(small_mnist):
    train, test = small_mnist
    from orchestrator.data.mnist import Dataset

    part = Dataset(train.images[:230], train.labels[:230])  # 5 steps per epoch, the last of 30 samples
    config = _config(micro=4).with_training(epochs=3, lr_decay=0.5, weight_decay=0.01)
    result = train_run(config, part, test, run_id="epochs")
    assert result.steps == 15 and set(result.epoch_accuracy) == {0, 1, 2}
    assert _max_diff(result.params, _reference(config, part, steps=None)) <= TOLERANCE["float64"]


def test_a_neuron_that_cannot_load_ends_the_run_with_a_clear_error(small_mnist, tmp_path):
    from orchestrator.errors import TrainingError

    train, test = small_mnist
    store = open_store(f"file://{tmp_path}/store")
    config = _config(every=5)
    train_run(config, train, test, run_id="broken", max_steps=10, store=store)
    for key in store.keys("cuttlefish/broken/ckpt/0000000010/L2/"):
        store.delete(key)
    with pytest.raises(TrainingError, match="L2"):
        train_run(config, train, test, run_id="broken", max_steps=20, resume=True, store=store,
                  options=DriverOptions(stall_timeout=20))


def test_a_neuron_that_crashes_mid_run_ends_the_embedded_run_at_once(small_mnist, monkeypatch):
    """The actors run on the driver's thread: a crash is reported as the neuron's, not felt as a stall."""
    import time

    from neuron.dense import DenseNeuron
    from orchestrator.errors import TrainingError

    train, test = small_mnist
    forward = DenseNeuron._forward

    def failing(self, key, parts):
        if self.name == "L2.1" and key[1] == 4:
            raise RuntimeError("kernel fault")
        return forward(self, key, parts)
    monkeypatch.setattr(DenseNeuron, "_forward", failing)
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=r"L2\.1.*kernel fault"):
        train_run(_config(), train, test, run_id="crash", max_steps=STEPS, options=DriverOptions(stall_timeout=60))
    assert time.monotonic() - t0 < 20
