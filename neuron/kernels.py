"""Pure NumPy kernels of a dense layer slice: forward, backward, activations, softmax cross-entropy."""
from __future__ import annotations

import numpy as np

# what the hidden layers may use (the first is the default); the output layer is "linear" into the softmax
HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")


def activate(z: np.ndarray, name: str) -> np.ndarray:
    """Apply the activation `name` elementwise to pre-activations `z`."""
    if name == "relu":
        return np.maximum(z, 0)  # (n, u)
    if name == "tanh":
        return np.tanh(z)  # (n, u)
    if name == "sigmoid":
        # split by sign so exp never overflows for large |z|
        out = np.empty_like(z)  # (n, u)
        pos = z >= 0  # (n, u)
        out[pos] = 1 / (1 + np.exp(-z[pos]))  # (k,)
        ez = np.exp(z[~pos])  # (n*u-k,)
        out[~pos] = ez / (1 + ez)  # (n*u-k,)
        return out
    if name == "linear":
        return z
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(z: np.ndarray, a: np.ndarray, grad_a: np.ndarray, name: str) -> np.ndarray:
    """Gradient wrt pre-activations `z` given the output `a` and the gradient wrt `a`."""
    if name == "relu":
        return grad_a * (z > 0)  # (n, u)
    if name == "tanh":
        return grad_a * (1 - a * a)  # (n, u)
    if name == "sigmoid":
        return grad_a * (a * (1 - a))  # (n, u)
    if name == "linear":
        return grad_a
    raise ValueError(f"unknown activation {name!r}")


def scale_pixels(pixels: np.ndarray, dtype) -> np.ndarray:
    """Inputs in [0, 1] of the floating `dtype` from uint8 `pixels` (n, f): pixels / 255."""
    dt = np.dtype(dtype)
    return pixels.astype(dt) / dt.type(255)  # (n, f)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """Forward of rows `w` (u, f), `b` (u,) on inputs `x` (n, f): returns (z, act(z)), both (n, u)."""
    z = x @ w.T  # (n, f) @ (f, u) -> (n, u)
    z += b  # (n, u) + (u,)
    return z, activate(z, activation)  # (n, u), (n, u)


def dense_backward_input(grad_z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """This slice's contribution to the gradient wrt the layer's input: grad_z (n, u) @ w (u, f)."""
    return grad_z @ w  # (n, u) @ (u, f) -> (n, f)


def dense_backward_params(x: np.ndarray, grad_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the slice's parameters from inputs `x` (n, f) and `grad_z` (n, u): (dW (u, f), db (u,))."""
    dw = grad_z.T @ x  # (u, n) @ (n, f) -> (u, f)
    db = grad_z.sum(axis=0)  # (u,)
    return dw, db


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, denominator: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Summed cross-entropy of `logits` (n, c) against int `labels` (n,), and its gradient divided by `denominator`.

    Returns (loss_sum, grad (n, c), predictions (n,)); the gradient is that of loss_sum / denominator, so a
    micro-batch of a batch of B samples passes denominator=B and the micro-batch gradients add up to the
    gradient of the batch mean.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # (n, c): stable, max is 0
    exp = np.exp(shifted)  # (n, c)
    total = exp.sum(axis=1, keepdims=True)  # (n, 1)
    log_probs = shifted - np.log(total)  # (n, c)
    rows = np.arange(labels.shape[0])  # (n,)
    loss_sum = float(-log_probs[rows, labels].sum())  # ()
    grad = exp / total  # (n, c): softmax
    grad[rows, labels] -= 1  # (n, c)
    grad /= denominator  # (n, c)
    return loss_sum, grad, logits.argmax(axis=1)  # (), (n, c), (n,)


def init_layer(rng: np.random.Generator, fan_out: int, fan_in: int, activation: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Initial weights (fan_out, fan_in) and zero biases: He-uniform for relu, Glorot-uniform otherwise."""
    if activation == "relu":
        limit = np.sqrt(6.0 / fan_in)  # ()
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))  # ()
    w = rng.uniform(-limit, limit, size=(fan_out, fan_in)).astype(dtype)  # (u, f)
    b = np.zeros(fan_out, dtype=dtype)  # (u,)
    return w, b
