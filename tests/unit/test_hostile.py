"""Hostile and malformed messages sent straight into a neuron's queue mid-run: rejected, counted, harmless."""
from __future__ import annotations

import pickle

import numpy as np

from broker import connect
from neuron import codec
from neuron.topology import Topology
from orchestrator.config import parse_config
from orchestrator.driver import DriverOptions
from orchestrator.plan import build_plan
from orchestrator.runner import train_run

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


def _hostile(topo: Topology, generation: int) -> list[bytes]:
    other = Topology("someone-else", topo.sizes, topo.shards, batch_size=topo.batch_size)
    tag = topo.run_tag
    good = np.zeros((20, 784))
    return [
        b"\x00garbage" * 3,
        pickle.dumps({"W": np.ones(3)}),
        codec.encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=good.astype(np.float32)),  # dtype
        codec.encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.zeros((20, 783))),  # shape
        codec.encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.full((20, 784), np.nan)),
        codec.encode(codec.ACT, tag, generation, 9, source=(0, 0), nmicro=2, array=np.zeros((4000, 784))),  # oversized
        codec.encode(codec.ACT, other.run_tag, generation, 9, source=(0, 0), nmicro=2, array=good),  # other run
        codec.encode(codec.ACT, tag, generation, 10 ** 9, source=(0, 0), nmicro=2, array=good),  # far future
        codec.encode(codec.CONTROL, tag, generation, 0, data={"op": "explode"}),
        codec.encode(codec.GRAD, tag, generation, 9, source=(2, 0), array=np.zeros((20, 8))),  # grad before forward
    ]


def test_hostile_messages_change_nothing(small_mnist):
    train, test = small_mnist
    clean = train_run(CONFIG, train, test, run_id="hostile", max_steps=15)
    broker = connect("memory://")
    topo = build_plan(CONFIG, "hostile")
    old_gen = codec.encode(codec.ACT, topo.run_tag, 0, 3, source=(0, 0), nmicro=2, array=np.zeros((20, 784)))

    def inject(step, loss, samples):
        if step == 4:
            for body in _hostile(topo, 1) + [old_gen]:
                broker.publish(topo.queue(1, 0), body)
            broker.publish(topo.queue(topo.head_layer), b"junk")

    attacked = train_run(CONFIG, train, test, run_id="hostile", max_steps=15, broker=broker,
                         options=DriverOptions(on_step=inject))
    for (wa, ba), (wb, bb) in zip(clean.params, attacked.params):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    stats = attacked.actor_stats
    assert stats["L1.0"]["rejected"] == 10
    assert stats["L1.0"]["stale"] == 1
    assert stats["head"]["rejected"] == 1
    dead = []
    while (d := broker.get(topo.dead_letter_queue, timeout=0.1)) is not None:
        dead.append(d.reason)
    assert len(dead) == 11
    assert any("ForeignMessage" in r for r in dead) and any("NonFiniteValues" in r for r in dead)
