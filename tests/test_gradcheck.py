"""Every layer's and loss's backward against float64 central finite differences along random directions.

For a tiny spec and a batch (x, y), with theta the parameters and v a random direction,

    FD  = (L64(theta + h v) - L64(theta - h v)) / (2 h)      ~ d/dt L(theta + t v) at t = 0
    AD  = <grad, v> = sum_name sum(grad[name] * v[name])    (grad from the model's loss_and_grads)

where L64 is a plain NumPy float64 forward + loss written below from the spec, independent of both
implementations. Each layer under test sits *after* a first dense/conv layer, so the gradient w.r.t. its
input (its backward-data) flows into that first layer's weight gradient and is checked through it.

Kinks: relu at 0 and maxpool ties are the only non-smooth points; with standard normal data a
pre-activation within h = 1e-5 of 0 (or two window entries that close) has probability ~1e-5 per element,
and the seeds below are fixed, so the checks are deterministic.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelspec
from helpers import build_model, random_batch

IMPLS = ["custom", "reference"]

# Central difference in float64: truncation error ~ h^2 |L'''| / 6 ~ 1e-10, rounding ~ 1e-16 |L| / h ~ 1e-11.
FD_STEP = 1e-5
# The analytic gradient comes from a float32 implementation: each of its entries carries ~1e-6 relative
# error per op over a few chained ops (~1e-5 in all), and <grad, v> sums them, so the error is bounded by
# ~1e-5 * sum|grad * v|. 1e-4 of that sum is a 10x margin, and far below what a wrong backward gives
# (a wrong index, transpose or missing factor changes AD by O(1) of the sum).
DIRECTIONAL_RTOL = 1e-4
# The float32 forward against the float64 one: ~1e-6 relative per op, a few layers -> 1e-5 of the loss.
LOSS_RTOL = 1e-5


# ---------------------------------------------------------------------------------------- float64 reference
def _pair_windows(a: np.ndarray, layer: modelspec.Layer):
    """Yield (p, q, window) with window = a[:, :, p*sh : p*sh+R, q*sw : q*sw+S] of the (padded) input."""
    (r, s), (sh, sw) = layer.kernel_size, layer.stride
    _, p_out, q_out = layer.out_shape
    for p in range(p_out):
        for q in range(q_out):
            yield p, q, a[:, :, p * sh:p * sh + r, q * sw:q * sw + s]   # (N, C, R, S)


def forward64(spec: modelspec.ModelSpec, params: dict, x: np.ndarray) -> np.ndarray:
    """Logits (N, output_dim) in float64, looping over output positions (tiny shapes only)."""
    a = x.astype(np.float64)
    n = a.shape[0]
    for layer in spec.layers:
        t = layer.type
        w = params.get(f"{layer.index}.weight")
        b = params.get(f"{layer.index}.bias")
        if t == "dense":
            a = a @ w.T + (b if b is not None else 0.0)                  # (N, U)
        elif t == "conv2d":
            ph, pw = layer.padding
            xp = np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))        # (N, C, H+2ph, W+2pw)
            out = np.empty((n, *layer.out_shape))                      # (N, K, P, Q)
            for p, q, win in _pair_windows(xp, layer):
                out[:, :, p, q] = np.einsum("ncrs,kcrs->nk", win, w)
            a = out + (b[None, :, None, None] if b is not None else 0.0)
        elif t in ("maxpool2d", "avgpool2d"):
            out = np.empty((n, *layer.out_shape))                      # (N, C, P, Q)
            for p, q, win in _pair_windows(a, layer):
                out[:, :, p, q] = win.max(axis=(2, 3)) if t == "maxpool2d" else win.mean(axis=(2, 3))
            a = out
        elif t == "flatten":
            a = a.reshape(n, -1)                                       # (N, C*H*W)
        elif t == "relu":
            a = np.maximum(a, 0.0)
        elif t == "sigmoid":
            a = 1.0 / (1.0 + np.exp(-a))
        elif t == "tanh":
            a = np.tanh(a)
        else:
            raise AssertionError(f"layer type {t!r} has no float64 reference in this test")
    return a


def loss64(spec: modelspec.ModelSpec, logits: np.ndarray, y: np.ndarray) -> float:
    """Mean loss over the batch in float64 (stable forms).

    softmax CE: mean_n( logsumexp(z_n) - z_n[y_n] );  sigmoid BCE: mean_n( max(z,0) - z*y + log(1+e^-|z|) ).
    """
    if spec.loss == "softmax_cross_entropy":
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        return float(np.mean(lse - logits[np.arange(len(y)), y]))
    z = logits[:, 0]
    return float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))


# ---------------------------------------------------------------------------------------- the specs under test
def _spec(name, input_shape, layers, num_classes=3, loss="softmax_cross_entropy"):
    return {"name": name, "input_shape": list(input_shape), "num_classes": num_classes, "loss": loss,
            "layers": layers}


def _dense(u, bias=True):
    return {"type": "dense", "units": u, "bias": bias}


def _conv(k, kernel, stride=1, padding=0, bias=True):
    return {"type": "conv2d", "out_channels": k, "kernel_size": kernel, "stride": stride, "padding": padding,
            "bias": bias}


FLAT = {"type": "flatten"}
HEAD = [FLAT, _dense(3)]          # image -> logits for 3 classes
FIRST_CONV = _conv(3, 3, padding=1)  # the first layer whose weight gradient receives the tested dx

CASES = {
    # dense layers after a dense layer, and the two losses (their dlogits feed every gradient)
    "dense": _spec("g-dense", [5], [_dense(4), {"type": "tanh"}, _dense(6), {"type": "tanh"}, _dense(3)]),
    "dense-nobias": _spec("g-dense-nb", [5], [_dense(4, bias=False), {"type": "tanh"}, _dense(3, bias=False)]),
    "softmax-ce": _spec("g-ce", [4], [_dense(7)], num_classes=7),
    "sigmoid-bce": _spec("g-bce", [4], [_dense(5), {"type": "sigmoid"}, _dense(1)], num_classes=2,
                         loss="sigmoid_binary_cross_entropy"),
    # activations, each after a first dense layer
    "relu": _spec("g-relu", [5], [_dense(6), {"type": "relu"}, _dense(3)]),
    "sigmoid": _spec("g-sigmoid", [5], [_dense(6), {"type": "sigmoid"}, _dense(3)]),
    "tanh": _spec("g-tanh", [5], [_dense(6), {"type": "tanh"}, _dense(3)]),
    # convolutions after a first conv: stride 2 with padding, a 3x5 kernel with rectangular padding/stride
    "conv-s2-p1": _spec("g-conv-s2", [2, 7, 6], [FIRST_CONV, {"type": "tanh"}, _conv(4, 3, stride=2, padding=1),
                                                 *HEAD]),
    "conv-3x5": _spec("g-conv-3x5", [2, 7, 9], [FIRST_CONV, {"type": "tanh"},
                                                _conv(2, [3, 5], stride=[1, 2], padding=[2, 1]), *HEAD]),
    "conv-k1-nobias": _spec("g-conv-k1", [2, 5, 4], [FIRST_CONV, {"type": "sigmoid"},
                                                     _conv(3, 1, bias=False), *HEAD]),
    # pools after a first conv: overlapping (kernel 3, stride 2), plain, rectangular
    "maxpool-overlap": _spec("g-maxpool-o", [2, 7, 9], [FIRST_CONV, {"type": "maxpool2d", "kernel_size": 3,
                                                                     "stride": 2}, *HEAD]),
    "maxpool-2": _spec("g-maxpool-2", [2, 6, 5], [FIRST_CONV, {"type": "maxpool2d", "kernel_size": 2}, *HEAD]),
    "avgpool-overlap": _spec("g-avgpool-o", [2, 7, 9], [FIRST_CONV, {"type": "avgpool2d", "kernel_size": 3,
                                                                     "stride": 2}, *HEAD]),
    "avgpool-rect": _spec("g-avgpool-r", [2, 6, 7], [FIRST_CONV, {"type": "avgpool2d", "kernel_size": [2, 3]},
                                                     *HEAD]),
    # a relu between conv layers (its mask gates the first conv's gradient)
    "conv-relu": _spec("g-conv-relu", [2, 6, 5], [FIRST_CONV, {"type": "relu"}, _conv(2, 3), *HEAD]),
}


def _directional(spec, params64, x, y, v: dict) -> float:
    def at(t):
        shifted = {k: p + t * v[k] if k in v else p for k, p in params64.items()}
        return loss64(spec, forward64(spec, shifted, x), y)
    return (at(FD_STEP) - at(-FD_STEP)) / (2 * FD_STEP)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_backward_matches_finite_differences(case, impl):
    spec = modelspec.ModelSpec.from_dict(CASES[case])
    x, y = random_batch(spec, batch=5, seed=11)
    model = build_model(impl, spec, "cpu", seed=2)
    params64 = {k: v.astype(np.float64) for k, v in model.get_params().items()}

    loss, grads = model.loss_and_grads(x, y)
    want = loss64(spec, forward64(spec, params64, x), y)
    assert abs(loss - want) <= LOSS_RTOL * abs(want), f"{case}/{impl}: loss {loss!r} vs float64 {want!r}"

    rng = np.random.default_rng(7)
    names = list(params64)
    # one direction per parameter tensor (a wrong gradient cannot hide behind another one) and one over all
    for subset in [[n] for n in names] + [names]:
        v = {n: rng.standard_normal(params64[n].shape) for n in subset}
        fd = _directional(spec, params64, x, y, v)
        terms = [np.asarray(grads[n], dtype=np.float64) * v[n] for n in subset]
        ad = float(sum(t.sum() for t in terms))
        scale = float(sum(np.abs(t).sum() for t in terms))
        assert scale > 0, f"{case}/{impl}: gradient of {subset} is exactly zero"
        assert abs(ad - fd) <= DIRECTIONAL_RTOL * scale, (
            f"{case}/{impl}: directional derivative along {subset}: <grad, v> = {ad:.10g}, "
            f"finite difference = {fd:.10g}, |diff| = {abs(ad - fd):.3g} > {DIRECTIONAL_RTOL} * {scale:.3g}")


def test_float64_reference_agrees_with_torch():
    """The test's own float64 forward is itself checked against torch.nn.functional in float64."""
    import torch
    import torch.nn.functional as F

    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    # conv (padding 1) -> tanh -> conv 3x5 (stride (1, 2), padding (2, 1)) -> dense
    spec = modelspec.ModelSpec.from_dict(CASES["conv-3x5"])
    x, _ = random_batch(spec, 3, seed=5)
    p = spec.init_params(4)
    a = F.conv2d(t(x), t(p["0.weight"]), t(p["0.bias"]), padding=1).tanh()
    a = F.conv2d(a, t(p["2.weight"]), t(p["2.bias"]), stride=(1, 2), padding=(2, 1))
    want = F.linear(a.flatten(1), t(p["4.weight"]), t(p["4.bias"])).numpy()
    got = forward64(spec, {k: v.astype(np.float64) for k, v in p.items()}, x)
    # both float64, different summation orders: agree to 1e-12 of the scale
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))

    # conv -> overlapping max pool (kernel 3, stride 2) -> dense; and an overlapping average pool
    for case, pool in (("maxpool-overlap", F.max_pool2d), ("avgpool-overlap", F.avg_pool2d)):
        spec = modelspec.ModelSpec.from_dict(CASES[case])
        x, _ = random_batch(spec, 3, seed=6)
        p = spec.init_params(4)
        a = pool(F.conv2d(t(x), t(p["0.weight"]), t(p["0.bias"]), padding=1), 3, 2)
        want = F.linear(a.flatten(1), t(p["3.weight"]), t(p["3.bias"])).numpy()
        got = forward64(spec, {k: v.astype(np.float64) for k, v in p.items()}, x)
        assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want)), case
