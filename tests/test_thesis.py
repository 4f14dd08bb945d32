"""The thesis network 2-3-1 (ReLU hidden layer, sigmoid output, binary cross-entropy) on a worked example.

The derivation of the thesis, for a batch of N samples x (N, 2) with 0/1 labels y (N,):

    a1 = x W1^T + b1          (N, 3)     h  = relu(a1)
    a2 = h W2^T + b2          (N, 1)     z  = sigmoid(a2)
    L  = -1/N sum_n [ y log z + (1 - y) log(1 - z) ]

    dL/da2 = (z - y) / N      (N, 1)     the sigmoid and the cross-entropy cancel to this
    dW2    = (dL/da2)^T h     (1, 3)     db2 = sum_n dL/da2      (1,)
    dh     = dL/da2 W2        (N, 3)
    da1    = dh * relu'(a1)   (N, 3)     relu'(a) = 1 if a > 0 else 0
    dW1    = da1^T x          (3, 2)     db1 = sum_n da1         (3,)

computed here in plain float64 NumPy from numbers written out below, and compared with what both
implementations return after set_params with the same numbers; then SGD steps by hand.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelspec
from helpers import assert_close, build_model

# The worked example. Chosen so every hidden pre-activation a1 is at least 0.05 away from the relu kink,
# with both signs present (some hidden units are switched off for some samples) and both labels.
X = np.array([[0.5, -1.2],
              [1.5, 0.3],
              [-0.7, 0.8],
              [0.2, 2.0]], dtype=np.float32)          # (N=4, 2)
Y = np.array([1, 0, 1, 0], dtype=np.int64)             # (N,)
W1 = np.array([[0.4, -0.6],
               [0.9, 0.2],
               [-0.3, 0.7]], dtype=np.float32)          # (3, 2)
B1 = np.array([0.1, -0.1, 0.05], dtype=np.float32)     # (3,)
W2 = np.array([[0.8, -0.5, 1.1]], dtype=np.float32)    # (1, 3)
B2 = np.array([-0.3], dtype=np.float32)                # (1,)
PARAMS = {"0.weight": W1, "0.bias": B1, "2.weight": W2, "2.bias": B2}

# Hand math in float64 against float32 implementations of a 2-3-1 network: every value is a sum of at most
# 4 products, so float32 rounding (6e-8 relative per op) stays below 1e-6; 1e-5 relative leaves a margin,
# and 1e-7 absolute covers entries that are exactly 0 by the relu mask (both sides give 0 there).
RTOL, ATOL = 1e-5, 1e-7


def thesis_forward_backward(p: dict, x=X, y=Y):
    """Loss and gradients of the thesis derivation, step by step, in float64."""
    w1, b1, w2, b2 = (p[k].astype(np.float64) for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    x = x.astype(np.float64)
    yc = y.astype(np.float64)[:, None]      # (N, 1)
    n = x.shape[0]
    a1 = x @ w1.T + b1                      # (N, 3)
    h = np.maximum(a1, 0.0)                 # (N, 3)
    a2 = h @ w2.T + b2                      # (N, 1)
    z = 1.0 / (1.0 + np.exp(-a2))           # (N, 1)
    loss = -np.mean(yc * np.log(z) + (1.0 - yc) * np.log(1.0 - z))
    da2 = (z - yc) / n                      # (N, 1)  output gradient
    dw2 = da2.T @ h                         # (1, 3)
    db2 = da2.sum(axis=0)                   # (1,)
    dh = da2 @ w2                           # (N, 3)
    da1 = dh * (a1 > 0)                     # (N, 3)  relu'
    dw1 = da1.T @ x                         # (3, 2)
    db1 = da1.sum(axis=0)                   # (3,)
    return float(loss), {"0.weight": dw1, "0.bias": db1, "2.weight": dw2, "2.bias": db2}, a1


def test_worked_example_is_away_from_the_kink():
    _, _, a1 = thesis_forward_backward(PARAMS)
    assert np.min(np.abs(a1)) >= 0.05
    assert (a1 > 0).any() and (a1 < 0).any()


def test_hand_derivation_matches_float64_finite_differences():
    """The derivation itself, checked entry by entry against central differences (h = 1e-6, float64)."""
    loss, grads, _ = thesis_forward_backward(PARAMS)
    for name, g in grads.items():
        for idx in np.ndindex(g.shape):
            plus = {k: v.astype(np.float64).copy() for k, v in PARAMS.items()}
            minus = {k: v.astype(np.float64).copy() for k, v in PARAMS.items()}
            plus[name][idx] += 1e-6
            minus[name][idx] -= 1e-6
            fd = (thesis_forward_backward(plus)[0] - thesis_forward_backward(minus)[0]) / 2e-6
            # float64 central difference: truncation ~1e-12, rounding ~1e-10
            assert abs(fd - g[idx]) <= 1e-8, f"{name}{idx}: derivation {g[idx]} vs FD {fd}"


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_gradients_equal_thesis_derivation(impl):
    model = build_model(impl, "thesis-2-3-1")
    model.set_params(PARAMS)
    loss_hand, grads_hand, a1 = thesis_forward_backward(PARAMS)
    logits = np.asarray(model.to_numpy(model.forward(X)))
    a2 = np.maximum(a1, 0) @ W2.T.astype(np.float64) + B2
    assert_close(logits, a2, RTOL, ATOL, f"{impl}: logits a2")
    loss, grads = model.loss_and_grads(X, Y)
    assert_close(loss, loss_hand, RTOL, ATOL, f"{impl}: loss")
    assert sorted(grads) == sorted(grads_hand)
    for name, g in grads_hand.items():
        assert_close(grads[name], g, RTOL, ATOL, f"{impl}: gradient {name}")


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_sgd_steps_by_hand(impl):
    """Step 1: w1 = w0 - lr*g0 (the velocity starts as the gradient); step 2: v = m*g0 + g1, w2 = w1 - lr*v."""
    lr, m = 0.5, 0.9
    model = build_model(impl, "thesis-2-3-1")
    model.set_params(PARAMS)
    loss0, g0, _ = thesis_forward_backward(PARAMS)
    step_loss = float(model.train_step(X, Y, lr, momentum=m))
    assert_close(step_loss, loss0, RTOL, ATOL, f"{impl}: loss returned by step 1 (before the update)")
    p1 = {k: PARAMS[k].astype(np.float64) - lr * g0[k] for k in PARAMS}
    got = model.get_params()
    for k in PARAMS:
        assert_close(got[k], p1[k], RTOL, ATOL, f"{impl}: {k} after one SGD step")
    loss1, g1, _ = thesis_forward_backward(p1)
    step_loss = float(model.train_step(X, Y, lr, momentum=m))
    assert_close(step_loss, loss1, RTOL, ATOL, f"{impl}: loss returned by step 2")
    p2 = {k: p1[k] - lr * (m * g0[k] + g1[k]) for k in PARAMS}
    got = model.get_params()
    for k in PARAMS:
        assert_close(got[k], p2[k], RTOL, ATOL, f"{impl}: {k} after two SGD steps with momentum")


def test_thesis_spec_is_2_3_1():
    spec = modelspec.load("thesis-2-3-1")
    assert spec.param_shapes() == {"0.weight": (3, 2), "0.bias": (3,), "2.weight": (1, 3), "2.bias": (1,)}
    assert spec.loss == "sigmoid_binary_cross_entropy" and spec.output_dim == 1
