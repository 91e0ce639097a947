"""The actor state machines driven by hand: one thread, a memory broker, messages in the order a test picks."""
from __future__ import annotations

import numpy as np
import pytest

from broker.memory import MemoryBroker
from neuron import codec, protocol
from neuron.dense import DenseNeuron
from neuron.head import LossHead
from neuron.kernels import dense_backward_params, dense_forward, softmax_cross_entropy
from neuron.role import DRIVER, HEAD, Role
from neuron.topology import Topology
from orchestrator.config import parse_config
from orchestrator.config.plan import build_plan
from orchestrator.data.mnist import Dataset
from orchestrator.data.model import init_params
from orchestrator.errors import NeuronLost, TrainingError
from orchestrator.training.driver import Driver
from orchestrator.training.options import DriverOptions
from orchestrator.training.reference import ReferenceTrainer, train_reference
from orchestrator.training.runner import make_schedule
from paramstore.checkpoint import Checkpoints
from paramstore.memory import MemoryStore

KEY = b"k" * 32  # the run's message key, as its driver would store it

def _run(topo: Topology):
    """A memory broker with the run's queues, and a store holding checkpoint 0 of seeded weights."""
    broker = MemoryBroker()
    for queue in topo.all_queues():
        broker.declare(queue, dead_letter=topo.dead_letter_queue)
    checkpoints = Checkpoints(MemoryStore(), topo.run_id)
    params = init_params(topo.sizes, topo.activation, topo.dtype, seed=3)
    Driver(topo, broker, checkpoints, DriverOptions()).initialize(params, {"step": 0})
    return broker, checkpoints, params


def _send(broker, topo, to: Role, kind, generation, step, *, source=DRIVER, **fields):
    to_field = {"to": to} if kind == protocol.GRAD else {}  # a GRAD is signed for its receiver
    broker.publish(to.queue(topo.run_id), codec.encode(kind, topo.run_tag, generation, step, source=source,
                                                             key=topo.key, **to_field, **fields))


def _start(broker, topo, actor, generation, version=0):
    _send(broker, topo, actor.role, protocol.CONTROL, generation, 0, data=protocol.Start(generation, version).to_data())
    _pump(broker, actor)


def _pump(broker, actor):
    """Hand the actor every message waiting in its queue, in order."""
    while (delivery := broker.get(actor.queue, timeout=0)) is not None:
        actor.handle(delivery)


def _taken(broker, topo, receiver: Role):
    """Every message waiting for `receiver`, decoded as it would decode them."""
    out = []
    while (delivery := broker.get(receiver.queue(topo.run_id), timeout=0)) is not None:
        out.append(codec.decode(delivery.body, topo.schema_for(*receiver)))
    return out


def _reports(broker, topo):
    return [protocol.parse_report(m.data) for m in _taken(broker, topo, DRIVER)]


TWO_LAYERS = Topology("t", sizes=(4, 3, 2), shards=(2, 1), dtype="float64", batch_size=4, micro_batches=2,
                      learning_rate=0.5).with_key(KEY)


def test_output_neuron_waits_for_every_part_and_joins_them_in_source_order():
    broker, checkpoints, params = _run(TWO_LAYERS)
    neuron = DenseNeuron(TWO_LAYERS, 2, 0, broker, checkpoints)
    _start(broker, TWO_LAYERS, neuron, generation=1)
    assert _reports(broker, TWO_LAYERS) == [protocol.Ready("L2.0", 1, 0)]
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(2, 2)), rng.normal(size=(2, 1))  # the slices of L1.0 (rows 0-1) and L1.1 (row 2)
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, 0, source=Role(1, 1), micro=0, nmicro=2, array=x1)
    _pump(broker, neuron)
    assert _taken(broker, TWO_LAYERS, HEAD) == []  # half the inputs: nothing to compute yet
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, 0, source=Role(1, 0), micro=0, nmicro=2, array=x0)
    _pump(broker, neuron)
    [out] = _taken(broker, TWO_LAYERS, HEAD)
    _, expected = dense_forward(np.concatenate([x0, x1], axis=1), *params[1], "linear")
    assert (out.kind, out.step, out.micro, out.nmicro, out.source) == (protocol.ACT, 0, 0, 2, Role(2, 0))
    np.testing.assert_array_equal(out.array, expected)


def test_a_duplicate_is_counted_and_dropped():
    broker, checkpoints, _ = _run(TWO_LAYERS)
    neuron = DenseNeuron(TWO_LAYERS, 2, 0, broker, checkpoints)
    _start(broker, TWO_LAYERS, neuron, generation=1)
    part = np.ones((2, 2))
    for _ in range(2):
        _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, 0, source=Role(1, 0), micro=0, nmicro=2, array=part)
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, 0, source=Role(1, 1), micro=0, nmicro=2,
          array=np.ones((2, 1)))
    _pump(broker, neuron)
    assert neuron.stats["duplicate"] == 1 and neuron.stats["rejected"] == 0
    assert len(_taken(broker, TWO_LAYERS, HEAD)) == 1


def test_generations_future_messages_wait_stale_ones_are_dropped_and_old_stops_ignored():
    broker, checkpoints, _ = _run(TWO_LAYERS)
    neuron = DenseNeuron(TWO_LAYERS, 2, 0, broker, checkpoints)
    early = dict(source=Role(1, 0), micro=0, nmicro=2, array=np.ones((2, 2)))
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 2, 0, **early)  # before any start
    _pump(broker, neuron)
    _start(broker, TWO_LAYERS, neuron, generation=1)
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 2, 0, source=Role(1, 1), micro=0, nmicro=2,
          array=np.ones((2, 1)))
    _pump(broker, neuron)
    assert _taken(broker, TWO_LAYERS, HEAD) == []  # generation 2 has not started: both parts wait
    _start(broker, TWO_LAYERS, neuron, generation=2)
    [out] = _taken(broker, TWO_LAYERS, HEAD)
    assert out.generation == 2
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, 0, **early)
    _start(broker, TWO_LAYERS, neuron, generation=1)  # a start of an older generation
    assert neuron.stats["stale"] == 2 and neuron.generation == 2
    _send(broker, TWO_LAYERS, neuron.role, protocol.CONTROL, 1, 0, data=protocol.Stop(1).to_data())
    _pump(broker, neuron)
    assert neuron.running
    _send(broker, TWO_LAYERS, neuron.role, protocol.CONTROL, 2, 0, data=protocol.Stop(2).to_data())
    _pump(broker, neuron)
    assert not neuron.running


def test_the_step_window_bounds_how_far_ahead_a_message_may_be():
    broker, checkpoints, _ = _run(TWO_LAYERS)
    neuron = DenseNeuron(TWO_LAYERS, 2, 0, broker, checkpoints)
    _start(broker, TWO_LAYERS, neuron, generation=1)
    part = dict(source=Role(1, 0), micro=0, nmicro=2, array=np.ones((2, 2)))
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, protocol.STEP_WINDOW, **part)
    _send(broker, TWO_LAYERS, neuron.role, protocol.ACT, 1, protocol.STEP_WINDOW + 1, **part)
    _pump(broker, neuron)
    assert neuron.stats["rejected"] == 1
    [letter] = _taken_raw(broker, TWO_LAYERS.dead_letter_queue)
    assert "too far ahead" in letter.reason


def _taken_raw(broker, queue):
    out = []
    while (delivery := broker.get(queue, timeout=0)) is not None:
        out.append(delivery)
    return out


ONE_LAYER = Topology("one", sizes=(3, 2), shards=(1,), dtype="float64", batch_size=4, micro_batches=2,
                     learning_rate=0.25).with_key(KEY)


def test_a_step_sums_micro_batch_gradients_in_order_updates_once_and_checkpoints():
    broker, checkpoints, params = _run(ONE_LAYER)
    neuron = DenseNeuron(ONE_LAYER, 1, 0, broker, checkpoints)
    _start(broker, ONE_LAYER, neuron, generation=1)
    _reports(broker, ONE_LAYER)
    rng = np.random.default_rng(1)
    xs, gs = [rng.normal(size=(2, 3)) for _ in range(2)], [rng.normal(size=(2, 2)) for _ in range(2)]
    for micro in (1, 0):  # the micro-batches arrive out of order
        _send(broker, ONE_LAYER, neuron.role, protocol.ACT, 1, 0, micro=micro, nmicro=2, flags=protocol.CHECKPOINT,
              array=xs[micro])
    _pump(broker, neuron)
    outputs = _taken(broker, ONE_LAYER, HEAD)
    assert [m.micro for m in outputs] == [1, 0]  # each micro-batch goes on as soon as its inputs are complete
    for out in outputs:
        np.testing.assert_array_equal(out.array, dense_forward(xs[out.micro], *params[0], "linear")[1])
    _send(broker, ONE_LAYER, neuron.role, protocol.GRAD, 1, 0, source=HEAD, micro=1, array=gs[1])
    _pump(broker, neuron)
    assert neuron.step == 0  # one gradient of two: no update yet
    _send(broker, ONE_LAYER, neuron.role, protocol.GRAD, 1, 0, source=HEAD, micro=0, array=gs[0])
    _pump(broker, neuron)
    (dw0, db0), (dw1, db1) = (dense_backward_params(x, g) for x, g in zip(xs, gs))
    w, b = params[0]
    np.testing.assert_array_equal(neuron.params["W"], w - 0.25 * (dw0 + dw1))
    np.testing.assert_array_equal(neuron.params["b"], b - 0.25 * (db0 + db1))
    assert neuron.step == 1 and neuron.stats["steps"] == 1
    assert _reports(broker, ONE_LAYER) == [protocol.Saved("L1.0", 1, 1, [0, 2])]
    assert checkpoints.store.get_json(checkpoints.keys.slice(1, 1, 0, 2)) is not None
    _send(broker, ONE_LAYER, neuron.role, protocol.ACT, 1, 0, micro=0, nmicro=2, array=xs[0])  # a past step
    _pump(broker, neuron)
    assert neuron.stats["duplicate"] == 1 and _taken(broker, ONE_LAYER, HEAD) == []


def test_a_gradient_without_its_forward_is_rejected():
    broker, checkpoints, _ = _run(ONE_LAYER)
    neuron = DenseNeuron(ONE_LAYER, 1, 0, broker, checkpoints)
    _start(broker, ONE_LAYER, neuron, generation=1)
    _send(broker, ONE_LAYER, neuron.role, protocol.GRAD, 1, 0, source=HEAD, micro=0, array=np.ones((2, 2)))
    _pump(broker, neuron)
    assert neuron.stats["rejected"] == 1 and neuron.step == 0
    [letter] = _taken_raw(broker, ONE_LAYER.dead_letter_queue)
    assert "matches no forward" in letter.reason


def test_a_gradient_copied_from_a_sibling_neuron_is_rejected_before_it_counts():
    topo = Topology("sib", sizes=(3, 4), shards=(2,), dtype="float64", batch_size=2, micro_batches=1,
                    learning_rate=0.25).with_key(KEY)
    broker, checkpoints, params = _run(topo)
    neurons = [DenseNeuron(topo, 1, i, broker, checkpoints) for i in range(2)]
    for neuron in neurons:
        _start(broker, topo, neuron, generation=1)
    rng = np.random.default_rng(2)
    x, grads = rng.normal(size=(2, 3)), [rng.normal(size=(2, 2)) for _ in range(2)]
    for neuron in neurons:
        _send(broker, topo, neuron.role, protocol.ACT, 1, 0, micro=0, nmicro=1, array=x)
        _pump(broker, neuron)
    first, second = neurons
    # the head's gradient for L1.0, signed for it, put into L1.1's queue ahead of L1.1's own (same shape)
    copied = codec.encode(protocol.GRAD, topo.run_tag, 1, 0, source=HEAD, array=grads[0], key=KEY, to=first.role)
    broker.publish(second.queue, copied)
    _pump(broker, second)
    assert second.stats["rejected"] == 1 and second.stats["unsigned"] == 1 and second.step == 0
    [letter] = _taken_raw(broker, topo.dead_letter_queue)
    assert "BadSignature" in letter.reason
    _send(broker, topo, second.role, protocol.GRAD, 1, 0, source=HEAD, array=grads[1])
    _pump(broker, second)
    dw, db = dense_backward_params(x, grads[1])
    w, b = params[0]
    np.testing.assert_array_equal(second.params["W"], w[2:4] - 0.25 * dw)
    np.testing.assert_array_equal(second.params["b"], b[2:4] - 0.25 * db)


def test_the_head_waits_for_labels_then_returns_each_neuron_its_columns_and_the_loss():
    topo = Topology("h", sizes=(4, 3), shards=(2,), dtype="float64", batch_size=3, micro_batches=1).with_key(KEY)
    broker, _, _ = _run(topo)
    head = LossHead(topo, broker)
    _start(broker, topo, head, generation=1)
    _reports(broker, topo)
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(3, 3)), np.array([2, 0, 1], dtype=np.int32)
    _send(broker, topo, HEAD, protocol.ACT, 1, 0, source=Role(1, 1), nmicro=1, array=logits[:, 2:])
    _send(broker, topo, HEAD, protocol.ACT, 1, 0, source=Role(1, 0), nmicro=1, array=logits[:, :2])
    _pump(broker, head)
    assert _taken(broker, topo, Role(1, 0)) == []  # the logits are complete but the labels are missing
    _send(broker, topo, HEAD, protocol.LABELS, 1, 0, nmicro=1, array=labels)
    _pump(broker, head)
    loss_sum, grad, pred = softmax_cross_entropy(logits, labels.astype(np.int64), 3)
    [g0], [g1] = _taken(broker, topo, Role(1, 0)), _taken(broker, topo, Role(1, 1))
    np.testing.assert_array_equal(g0.array, grad[:, :2])
    np.testing.assert_array_equal(g1.array, grad[:, 2:])
    [loss] = _reports(broker, topo)
    assert loss == protocol.Loss("head", 0, loss_sum / 3, int((pred == labels).sum()), 3)
    _send(broker, topo, HEAD, protocol.LABELS, 1, 0, nmicro=1, array=labels)  # step 0 is over
    _pump(broker, head)
    assert head.stats["duplicate"] == 1 and head.step == 1


class Lockstep(MemoryBroker):
    """A memory broker that, whenever the driver looks at its queue, first lets every actor handle its mail."""

    def __init__(self) -> None:
        super().__init__()
        self.actors: list = []

    def get(self, queue, timeout=None):
        if queue.endswith(".driver"):
            busy = True
            while busy:
                busy = False
                for actor in self.actors:
                    delivery = super().get(actor.queue, timeout=0)
                    if delivery is not None:
                        actor.handle(delivery)
                        busy = True
            timeout = 0  # nothing else runs: whatever is not there now never comes
        return super().get(queue, timeout)


def _lockstep_run(steps=6):
    config = parse_config("""
neural_network: {num_of_hidden_layers: 1, num_nodes_per_layer: 6, num_classes: 10, shards_per_layer: [2, 1]}
training: {data_batch_size: 8, micro_batches: 2, optimizer: momentum, learning_rate: 0.05, dtype: float64,
           checkpoint_every: 2, seed: 5}
""")
    rng = np.random.default_rng(3)
    train = Dataset(images=rng.integers(0, 256, size=(40, 784), dtype=np.uint8),
                    labels=rng.integers(0, 10, size=40).astype(np.uint8))
    schedule = make_schedule(config, len(train), steps)
    topo = build_plan(config, "lockstep", schedule.steps_per_epoch).with_key(KEY)
    broker = Lockstep()
    checkpoints = Checkpoints(MemoryStore(), topo.run_id)
    driver = Driver(topo, broker, checkpoints, DriverOptions(checkpoint_every=2, stall_timeout=5.0))
    driver.declare()
    params = init_params(topo.sizes, topo.activation, topo.dtype, 5)
    driver.initialize(params, {"step": 0})
    broker.actors = [DenseNeuron(topo, *role, broker, checkpoints) for role in topo.neurons()] + [LossHead(topo, broker)]
    return config, train, schedule, driver, params


def test_the_driver_runs_a_whole_run_in_one_thread_and_matches_the_reference():
    config, train, schedule, driver, params = _lockstep_run()
    result = driver.run(train, None, schedule, 0, 1)
    tr = config.training
    trainer = ReferenceTrainer(params, config.network.activation, tr.optimizer, tr.learning_rate, tr.momentum)
    expected = train_reference(trainer, train, schedule, tr.dtype)
    for (w, b), (ew, eb) in zip(result.params, expected):
        np.testing.assert_allclose(w, ew, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b, eb, rtol=0, atol=1e-12)
    assert driver.checkpoints.latest() == schedule.total_steps == result.steps


def test_the_driver_acts_on_reports_of_its_generation_only():
    _, _, _, driver, _ = _lockstep_run()
    driver.start_generation(1, 0)
    topo, broker = driver.topo, driver.broker

    def report(event, generation=1):
        data = event if isinstance(event, dict) else protocol.report_data(event)
        _send(broker, topo, DRIVER, protocol.REPORT, generation, 0, source=HEAD, data=data)

    report(protocol.Loss("head", 0, 1.5, 3, 8), generation=0)  # an old generation's loss
    report({"event": "loss", "actor": "head", "step": "zero"})  # malformed: ignored, not fatal
    driver._pump(0)
    driver._pump(0)
    assert driver._losses == {}
    report(protocol.Loss("head", 0, 1.5, 3, 8))
    driver._pump(0)
    assert driver._losses == {0: {"loss": 1.5, "samples": 8}}
    report(protocol.Hello("L1.0", 1, "host"))  # a ready neuron says hello again: it restarted
    with pytest.raises(NeuronLost):
        driver._pump(0)
    report(protocol.Failed("L1.1", "diverged"))
    with pytest.raises(TrainingError, match="L1.1 failed: diverged"):
        driver._pump(0)
