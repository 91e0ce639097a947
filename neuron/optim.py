"""Optimizers as pure functions of (parameters, gradients, state): SGD, momentum and Adam."""
from __future__ import annotations

from typing import Mapping

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def state_names(optimizer: str, param_names: tuple[str, ...] = ("W", "b")) -> tuple[str, ...]:
    """Names of the optimizer state arrays kept beside parameters `param_names` (checkpointed with them)."""
    if optimizer == "sgd":
        return ()
    if optimizer == "momentum":
        return tuple(f"v{p}" for p in param_names)
    if optimizer == "adam":
        return tuple(f"m{p}" for p in param_names) + tuple(f"v{p}" for p in param_names)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def init_state(optimizer: str, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero optimizer state for `params`."""
    return {name: np.zeros_like(params[name[1:]]) for name in state_names(optimizer, tuple(params))}


def apply_update(
    optimizer: str,
    params: dict[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    state: dict[str, np.ndarray],
    lr: float,
    momentum: float,
    step: int,
    weight_decay: float = 0.0,
) -> None:
    """Update `params` and `state` in place from `grads`; `step` counts updates from 1 (Adam's bias correction).

    sgd: p -= lr * g; momentum: v = mu * v + g, p -= lr * v; adam: PyTorch's Adam with betas 0.9/0.999, eps 1e-8.
    A weight decay adds weight_decay * p to every gradient first (L2, as PyTorch's weight_decay).
    """
    for name, p in params.items():
        g = grads[name]  # same shape as p
        if weight_decay:
            g = g + weight_decay * p  # like p
        if optimizer == "sgd":
            p -= lr * g  # (u, f) or (u,)
        elif optimizer == "momentum":
            v = state[f"v{name}"]  # like p
            v *= momentum  # like p
            v += g  # like p
            p -= lr * v  # like p
        elif optimizer == "adam":
            b1, b2 = ADAM_BETAS
            m, v = state[f"m{name}"], state[f"v{name}"]  # like p
            m *= b1  # like p
            m += (1 - b1) * g  # like p
            v *= b2  # like p
            v += (1 - b2) * (g * g)  # like p
            bc1 = 1 - b1**step  # ()
            bc2 = 1 - b2**step  # ()
            denom = np.sqrt(v) / np.sqrt(bc2) + ADAM_EPS  # like p, as torch.optim.Adam
            p -= (lr / bc1) * (m / denom)  # like p
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
