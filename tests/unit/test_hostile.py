"""Hostile and malformed messages sent straight into a neuron's queue mid-run: rejected, counted, harmless."""
from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest

from broker import connect
from neuron import codec
from neuron.topology import Topology
from orchestrator.config import parse_config
from orchestrator.config.plan import build_plan
from orchestrator.errors import TrainingError
from orchestrator.training.options import DriverOptions
from orchestrator.training.runner import train_run
from paramstore import open_store
from paramstore.checkpoint import Checkpoints

CONFIG = parse_config("""
neural_network:
  num_of_hidden_layers: 1
  num_nodes_per_layer: 16
  num_classes: 10
  shards_per_layer: [2, 1]
training:
  data_batch_size: 40
  micro_batches: 2
  optimizer: sgd
  learning_rate: 0.05
  dtype: float64
  checkpoint_every: 5
""")


def _keyed(run_id: str, store) -> Topology:
    """The run's topology with the key its driver stored: what a process of the run would sign with."""
    return build_plan(CONFIG, run_id).with_key(Checkpoints(store, run_id).record.message_key())


def _hostile(topo: Topology, generation: int) -> list[bytes]:
    other = Topology("someone-else", topo.sizes, topo.shards, batch_size=topo.batch_size)
    tag = topo.run_tag
    good = np.zeros((20, 784))
    encode = functools.partial(codec.encode, key=topo.key)
    forged = functools.partial(codec.encode, key=b"attacker-key-of-32-bytes-length!")
    return [
        b"\x00garbage" * 3,
        pickle.dumps({"W": np.ones(3)}),
        encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=good.astype(np.float32)),  # dtype
        encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.zeros((20, 783))),  # shape
        encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.full((20, 784), np.nan)),
        encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.zeros((4000, 784))),  # oversized
        encode(codec.ACT, other.run_tag, generation, 9, source=(0, 0), nmicro=2, array=good),  # other run
        encode(codec.ACT, tag, generation, 10 ** 9, source=(0, 0), nmicro=2, array=good),  # far future
        encode(codec.CONTROL, tag, generation, 0, data={"op": "explode"}),
        encode(codec.GRAD, tag, generation, 9, source=(2, 0), array=np.zeros((20, 8)), to=(1, 0)),  # grad before forward
        # well-formed and plausible, but not signed with the run's key: the next steps' inputs, a stop
        forged(codec.ACT, tag, generation, 5, source=(0, 0), nmicro=2, array=np.ones((20, 784))),
        forged(codec.CONTROL, tag, generation, 0, data={"op": "stop", "generation": generation}),
    ]


def test_hostile_messages_change_nothing(small_mnist):
    train, test = small_mnist
    clean = train_run(CONFIG, train, test, run_id="hostile", max_steps=15)
    broker, store = connect("memory://"), open_store("memory://")

    def inject(step, loss, samples):
        if step == 4:
            topo = _keyed("hostile", store)
            old_gen = codec.encode(codec.ACT, topo.run_tag, 0, 3, source=(0, 0), nmicro=2, array=np.zeros((20, 784)),
                                   key=topo.key)
            for body in _hostile(topo, 1) + [old_gen]:
                broker.publish(topo.queue(1, 0), body)
            broker.publish(topo.queue(topo.head_layer), b"junk")

    attacked = train_run(CONFIG, train, test, run_id="hostile", max_steps=15, broker=broker, store=store,
                         options=DriverOptions(on_step=inject))
    for (wa, ba), (wb, bb) in zip(clean.params, attacked.params):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    stats = attacked.actor_stats
    assert stats["L1.0"]["rejected"] == 12
    assert stats["L1.0"]["unsigned"] == 2
    assert stats["L1.0"]["stale"] == 1
    assert stats["head"]["rejected"] == 1
    dead = []
    while (d := broker.get(build_plan(CONFIG, "hostile").dead_letter_queue, timeout=0.1)) is not None:
        dead.append(d.reason)
    assert len(dead) == 13
    assert any("ForeignMessage" in r for r in dead) and any("NonFiniteValues" in r for r in dead)
    assert sum("BadSignature" in r for r in dead) == 2


def test_hostile_control_messages_are_rejected_not_fatal(small_mnist):
    train, test = small_mnist
    clean = train_run(CONFIG, train, test, run_id="hostile", max_steps=12)
    broker, store = connect("memory://"), open_store("memory://")

    def inject(step, loss, samples):
        if step == 3:
            topo = _keyed("hostile", store)
            tag, encode = topo.run_tag, functools.partial(codec.encode, key=topo.key)
            bodies = [
                codec.sign(codec.HEADER.pack(codec.MAGIC, codec.VERSION, codec.CONTROL, 0, 0, 0, tag, 1, 0, 0, 0, 0, 0)
                           + b"[" * 50000, topo.key),
                encode(codec.CONTROL, tag, 1, 0, data={"op": "start", "generation": 2 ** 40, "version": 0}),
                encode(codec.CONTROL, tag, 1, 0, data={"op": "start", "generation": 7, "version": 999, "token": 1}),  # no checkpoint
                encode(codec.CONTROL, tag, 1, 0, data={"op": "stop", "generation": 0}),  # an old generation's stop
                encode(codec.ACT, tag, 1, 9, source=(0, 0), nmicro=2 ** 31, array=np.zeros((20, 784))),
            ]
            for body in bodies:
                broker.publish(topo.queue(1, 0), body)

    attacked = train_run(CONFIG, train, test, run_id="hostile", max_steps=12, broker=broker, store=store,
                         options=DriverOptions(on_step=inject))
    for (wa, ba), (wb, bb) in zip(clean.params, attacked.params):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    assert attacked.actor_stats["L1.0"]["rejected"] == 4
    assert attacked.actor_stats["L1.0"]["superseded"] == 1  # the stop without the driver's fencing token


def test_leftover_messages_do_not_break_the_next_run(small_mnist):
    train, test = small_mnist
    broker, store = connect("memory://"), open_store("memory://")

    class Stop(Exception):
        pass

    def interrupt(step, loss, samples):
        if step == 7:
            raise Stop()

    with pytest.raises(Stop):
        train_run(CONFIG, train, test, run_id="again", max_steps=15, broker=broker, store=store,
                  options=DriverOptions(on_step=interrupt))
    resumed = train_run(CONFIG, train, test, run_id="again", max_steps=15, resume=True, broker=broker, store=store,
                        options=DriverOptions(stall_timeout=20))
    clean = train_run(CONFIG, train, test, run_id="again", max_steps=15)
    for (wa, ba), (wb, bb) in zip(clean.params, resumed.params):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)


def test_a_diverging_run_ends_at_once_with_a_clear_error(small_mnist):
    train, test = small_mnist
    with pytest.raises(TrainingError, match="diverged"):
        train_run(CONFIG.with_training(learning_rate=1e25, dtype="float32"), train, test, run_id="boom", max_steps=15,
                  options=DriverOptions(stall_timeout=30))
