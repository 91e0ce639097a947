"""The plain single-process NumPy trainer with the same semantics: the reference of tests and benchmarks."""
from __future__ import annotations

import numpy as np

from neuron.kernels import (
    activation_grad,
    dense_backward_input,
    dense_backward_params,
    dense_forward,
    softmax_cross_entropy,
)
from neuron.optim import apply_update, init_state
from orchestrator.data.mnist import Dataset, to_inputs
from orchestrator.data.model import Params
from orchestrator.training.schedule import Schedule


def forward(params: Params, x: np.ndarray, activation: str) -> np.ndarray:
    """Logits of inputs `x` (n, n_0): hidden layers use `activation`, the output layer is linear."""
    a = x  # (n, n_0)
    for i, (w, b) in enumerate(params):
        _, a = dense_forward(a, w, b, activation if i < len(params) - 1 else "linear")  # (n, n_i)
    return a  # (n, classes)


def predict(params: Params, x: np.ndarray, activation: str, batch: int = 1000) -> np.ndarray:
    """Predicted classes of `x`, computed in batches."""
    return np.concatenate([forward(params, x[i:i + batch], activation).argmax(axis=1)
                           for i in range(0, x.shape[0], batch)])


def accuracy(params: Params, data: Dataset, activation: str, dtype: str) -> float:
    """Fraction of `data` classified correctly."""
    pred = predict(params, to_inputs(data.images, dtype), activation)
    return float((pred == data.labels).mean())


class ReferenceTrainer:
    """Full-batch forward, backward and update of the whole network in one process."""

    def __init__(self, params: Params, activation: str, optimizer: str, learning_rate: float, momentum: float,
                 lr_decay: float = 1.0, steps_per_epoch: int = 0, weight_decay: float = 0.0) -> None:
        self.params = [{"W": w.copy(), "b": b.copy()} for w, b in params]
        self.state = [init_state(optimizer, p) for p in self.params]
        self.activation, self.optimizer = activation, optimizer
        self.learning_rate, self.momentum = learning_rate, momentum
        self.lr_decay, self.steps_per_epoch, self.weight_decay = lr_decay, steps_per_epoch, weight_decay
        self.updates = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on the batch `x` (B, n_0), `y` (B,); returns the mean loss."""
        k = len(self.params)
        cache = []
        a = x  # (B, n_0)
        for i, p in enumerate(self.params):
            act = self.activation if i < k - 1 else "linear"
            z, out = dense_forward(a, p["W"], p["b"], act)  # (B, n_i), (B, n_i)
            cache.append((a, z, out, act))
            a = out
        loss_sum, grad, _ = softmax_cross_entropy(a, y, y.shape[0])  # (), (B, c), (B,)
        grads = [None] * k
        for i in range(k - 1, -1, -1):
            inp, z, out, act = cache[i]
            grad_z = activation_grad(z, out, grad, act)  # (B, n_i)
            if i > 0:
                grad = dense_backward_input(grad_z, self.params[i]["W"])  # (B, n_{i-1})
            dw, db = dense_backward_params(inp, grad_z)  # (n_i, n_{i-1}), (n_i,)
            grads[i] = {"W": dw, "b": db}
        lr = self.learning_rate
        if self.lr_decay != 1.0 and self.steps_per_epoch:
            lr = self.learning_rate * self.lr_decay ** (self.updates // self.steps_per_epoch)
        self.updates += 1
        for p, g, s in zip(self.params, grads, self.state):
            apply_update(self.optimizer, p, g, s, lr, self.momentum, self.updates, self.weight_decay)
        return loss_sum / y.shape[0]

    def export(self) -> Params:
        """The current parameters as [(W, b), ...]."""
        return [(p["W"].copy(), p["b"].copy()) for p in self.params]


def train_reference(trainer: ReferenceTrainer, data: Dataset, schedule: Schedule, dtype: str,
                    start: int = 0, on_step=None) -> Params:
    """Train from global step `start` to the schedule's end; `on_step(step, loss)` is called after each step."""
    order, epoch = None, -1
    for step in range(start, schedule.total_steps):
        if schedule.epoch_of(step) != epoch:
            epoch = schedule.epoch_of(step)
            order = schedule.order(epoch)
        idx = schedule.indices(step, order)
        loss = trainer.step(to_inputs(data.images[idx], dtype), data.labels[idx].astype(np.int64))
        if on_step is not None:
            on_step(step, loss)
    return trainer.export()
