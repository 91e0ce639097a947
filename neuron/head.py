"""The loss head: gathers the logits, computes softmax cross-entropy, returns each output neuron its gradient."""
from __future__ import annotations

import itertools
import math

import numpy as np

from broker.base import Broker
from neuron import codec, protocol
from neuron.actor import Actor
from neuron.errors import ProtocolError, TrainingDiverged
from neuron.kernels import softmax_cross_entropy
from neuron.role import HEAD, Role
from neuron.topology import Topology, micro_sizes


class LossHead(Actor):
    """The actor after the output layer; it holds no parameters, only the step's labels and loss."""

    def __init__(self, topo: Topology, broker: Broker) -> None:
        super().__init__(topo, *HEAD, broker)
        self.on_topology()
        self._reset()

    def on_topology(self) -> None:
        """The output layer's split and queues under the current topology."""
        self.out_splits = self.topo.splits(self.topo.depth)
        self.out_queues = [self.topo.queue(self.topo.depth, s) for s in range(len(self.out_splits))]

    def _reset(self) -> None:
        self._logits: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}  # (eval, step, micro) -> parts
        self._labels: dict[int, tuple[np.ndarray, tuple[int, ...]]] = {}  # step -> (labels, micro offsets)
        self._loss: dict[int, list] = {}  # step -> [loss sum, correct, micro-batches done]

    def on_start(self, version: int) -> None:
        """Forget everything of the previous generation; the head has nothing to load."""
        self._reset()

    def on_data(self, msg: codec.Message) -> None:
        """Buffer a logits part or a step's labels."""
        if msg.kind == protocol.LABELS:
            labels = msg.values
            if not 1 <= msg.nmicro <= self.topo.micro_batches or labels.shape[0] < msg.nmicro:
                raise ProtocolError(f"{labels.shape[0]} labels cannot make {msg.nmicro} micro-batches")
            if labels.min() < 0 or labels.max() >= self.topo.sizes[-1]:
                raise ProtocolError(f"labels outside 0..{self.topo.sizes[-1] - 1}")
            offsets = tuple(itertools.accumulate(micro_sizes(labels.shape[0], msg.nmicro), initial=0))
            self._labels[msg.step] = (labels.astype(np.int64), offsets)
            return
        if msg.kind != protocol.ACT:
            raise ProtocolError(f"the loss head takes no {protocol.KINDS[msg.kind]} messages")
        parts = self._logits.setdefault((msg.flags & protocol.EVAL, msg.step, msg.micro), {})
        if parts and next(iter(parts.values())).shape[0] != msg.values.shape[0]:
            raise ProtocolError("logits parts disagree in rows")
        parts[msg.src_index] = msg.values

    def progress(self) -> None:
        """Score every micro-batch whose logits (and, in training, labels) are complete."""
        n = len(self.out_splits)
        for key in sorted(k for k, p in self._logits.items() if len(p) == n):
            evaluating, step, micro = key
            if not evaluating and step not in self._labels:
                continue
            parts = self._logits.pop(key)
            logits = parts[0] if n == 1 else np.concatenate([parts[s] for s in range(n)], axis=1)  # (m, c)
            if evaluating:
                self.send([self.driver_queue], protocol.PRED, step, micro=micro, array=logits.argmax(axis=1).astype(np.int32))
            else:
                self._train(step, micro, logits)

    def _train(self, step: int, micro: int, logits: np.ndarray) -> None:
        labels, offsets = self._labels[step]
        nmicro = len(offsets) - 1
        if micro >= nmicro or offsets[micro + 1] - offsets[micro] != logits.shape[0]:
            self._labels.pop(step)
            raise ProtocolError(f"logits of step {step} micro {micro} do not match its labels")
        y = labels[offsets[micro]:offsets[micro + 1]]  # (m,)
        loss_sum, grad, pred = softmax_cross_entropy(logits, y, labels.shape[0])  # (), (m, c), (m,)
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(f"training diverged: the loss of step {step} is not finite")
        for s, (a, b) in enumerate(self.out_splits):
            self.send([self.out_queues[s]], protocol.GRAD, step, micro=micro, array=grad[:, a:b],
                      to=Role(self.topo.depth, s))
        acc = self._loss.setdefault(step, [0.0, 0, 0])
        acc[0] += loss_sum
        acc[1] += int((pred == y).sum())
        acc[2] += 1
        if acc[2] == nmicro:
            del self._loss[step], self._labels[step]
            self.step = step + 1
            self.forget_before(self.step)
            self._logits = {k: v for k, v in self._logits.items() if k[1] >= self.step}
            self.report(protocol.Loss(self.name, step, acc[0] / labels.shape[0], acc[1], int(labels.shape[0])))
