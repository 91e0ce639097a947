"""Kernels and optimizers against finite differences and hand-written formulas, in float64."""
from __future__ import annotations

import numpy as np
import pytest

from neuron.kernels import (
    activate,
    activation_grad,
    dense_backward_input,
    dense_backward_params,
    dense_forward,
    init_layer,
    softmax_cross_entropy,
)
from neuron.optim import apply_update, init_state, state_names


def _loss(x, w, b, act, labels):
    _, a = dense_forward(x, w, b, act)
    loss, _, _ = softmax_cross_entropy(a, labels, x.shape[0])
    return loss / x.shape[0]


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "linear"])
def test_dense_gradients_match_finite_differences(act):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4))
    w = rng.normal(size=(3, 4))
    b = rng.normal(size=3)
    labels = np.array([0, 2, 1, 1, 0])
    z, a = dense_forward(x, w, b, act)
    _, grad_a, _ = softmax_cross_entropy(a, labels, x.shape[0])
    grad_z = activation_grad(z, a, grad_a, act)
    dw, db = dense_backward_params(x, grad_z)
    dx = dense_backward_input(grad_z, w)
    eps = 1e-6
    for arr, grad in ((w, dw), (b, db), (x, dx)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = _loss(x, w, b, act, labels)
            arr[idx] = old - eps
            down = _loss(x, w, b, act, labels)
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_softmax_cross_entropy_is_stable_and_correct():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 2])
    loss, grad, pred = softmax_cross_entropy(logits, labels, 2)
    expected_row2 = -np.log(np.exp(3) / np.exp([1, 2, 3]).sum())
    assert np.isfinite(loss) and loss == pytest.approx(0.0 + expected_row2)
    assert pred.tolist() == [0, 2]
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-12)


def test_sigmoid_does_not_overflow():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    with np.errstate(over="raise"):
        np.testing.assert_allclose(activate(z, "sigmoid"), [[0.0, 0.5, 1.0]])


def test_micro_batch_gradients_add_up_to_the_batch_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4))
    labels = rng.integers(0, 4, size=8)
    _, full, _ = softmax_cross_entropy(logits, labels, 8)
    parts = [softmax_cross_entropy(logits[i:i + 3], labels[i:i + 3], 8)[1] for i in (0, 3, 6)]
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=1e-15)


def test_init_layer_is_seeded():
    a = init_layer(np.random.default_rng(5), 4, 3, "relu", "float32")
    b = init_layer(np.random.default_rng(5), 4, 3, "relu", "float32")
    assert a[0].dtype == np.float32 and a[0].shape == (4, 3) and np.array_equal(a[0], b[0])
    assert not a[1].any()


def test_sgd_and_momentum_follow_their_formulas():
    p = {"W": np.array([1.0, 2.0])}
    g = {"W": np.array([0.5, -1.0])}
    apply_update("sgd", p, g, {}, 0.1, 0.9, 1)
    np.testing.assert_allclose(p["W"], [0.95, 2.1])
    p = {"W": np.array([1.0, 2.0])}
    s = init_state("momentum", p)
    assert state_names("momentum", ("W",)) == ("vW",)
    apply_update("momentum", p, g, s, 0.1, 0.9, 1)
    apply_update("momentum", p, g, s, 0.1, 0.9, 2)
    # v1 = g, v2 = 0.9 g + g = 1.9 g; W = W0 - 0.1 (g + 1.9 g)
    np.testing.assert_allclose(p["W"], [1.0 - 0.1 * 2.9 * 0.5, 2.0 + 0.1 * 2.9 * 1.0])


def test_adam_matches_pytorch_formula():
    rng = np.random.default_rng(1)
    w = rng.normal(size=5)
    p = {"W": w.copy()}
    s = init_state("adam", p)
    m = np.zeros(5)
    v = np.zeros(5)
    for t in range(1, 6):
        g = rng.normal(size=5)
        apply_update("adam", p, {"W": g}, s, 1e-3, 0.0, t)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 1e-3 / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
    np.testing.assert_allclose(p["W"], w, rtol=1e-12)


def test_weight_decay_adds_l2_gradient():
    p = {"W": np.array([1.0, -2.0])}
    apply_update("sgd", p, {"W": np.array([0.5, 0.5])}, {}, 0.1, 0.0, 1, weight_decay=0.1)
    np.testing.assert_allclose(p["W"], [1.0 - 0.1 * (0.5 + 0.1), -2.0 - 0.1 * (0.5 - 0.2)])
