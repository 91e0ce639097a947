"""What the driver sends into the network: a training step's inputs and labels, and an evaluation's batches."""
from __future__ import annotations

import numpy as np

from broker.base import Broker
from neuron import codec, protocol
from neuron.role import HEAD
from neuron.topology import Topology, micro_sizes
from orchestrator.data.mnist import batch_slices


def send_step(broker: Broker, topo: Topology, generation: int, step: int, x: np.ndarray, y: np.ndarray,
              flags: int) -> None:
    """Send step `step`: labels `y` to the loss head, inputs `x` (raw pixels) to layer 1 in micro-batches."""
    sizes = micro_sizes(x.shape[0], topo.micro_batches)
    tag, key = topo.run_tag, topo.key
    first = topo.layer_queues(1)
    broker.publish_object([HEAD.queue(topo.run_id)], *codec.outgoing(
        protocol.LABELS, tag, generation, step, nmicro=len(sizes), array=y.astype(np.int32), key=key))
    offset = 0
    for micro, rows in enumerate(sizes):
        broker.publish_object(first, *codec.outgoing(
            protocol.ACT, tag, generation, step, micro=micro, nmicro=len(sizes), flags=flags,
            array=x[offset:offset + rows], key=key))
        offset += rows


def send_evaluation(broker: Broker, topo: Topology, generation: int, version: int,
                    x: np.ndarray) -> list[tuple[int, int]]:
    """Send the inputs `x` (raw pixels) for prediction by checkpoint `version`; the row span of each micro-batch."""
    first = topo.layer_queues(1)
    spans = batch_slices(x.shape[0], topo.max_rows)
    for micro, (a, b) in enumerate(spans):
        body = codec.encode(protocol.ACT, topo.run_tag, generation, version, micro=micro,
                            flags=protocol.EVAL, array=x[a:b], key=topo.key)
        broker.publish_many(first, body)
    return spans
