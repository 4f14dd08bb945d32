"""The CPU layer ops (custom_impl.cpu.ops) against PyTorch in float64, and their signatures against the plan.

Tolerance: float32 results against a float64 oracle, |a - b| <= atol + rtol*|b| with rtol = atol = 1e-4
(float32 accumulation over K <= ~300 terms of unit-scale data: ~sqrt(K) * 6e-8 relative, far below; an
indexing bug is of order 1).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import custom_impl
from custom_impl.cpu import ops

RTOL = ATOL = 1e-4

# The plan's signatures, one per op, the same on both devices.
PLAN = {
    "dense_forward": "(x, W, b=None, act='none', out=None)",
    "dense_backward": "(dy, x, W, need_dx=True, dx=None, dW=None, db=None, need_db=True)",
    "dense_backward_data": "(dy, W, dx=None)",
    "dense_algorithm": "(phase, x_shape, w_shape)",
    "conv2d_forward": "(x, W, b, stride, padding, out=None, workspace=None)",
    "conv2d_backward": "(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None, "
                       "need_db=True)",
    "conv2d_backward_data": "(dy, W, x_shape, stride, padding, dx=None, workspace=None)",
    "conv2d_workspace_size": "(x_shape, w_shape, stride, padding)",
    "conv2d_algorithm": "(phase, x_shape, w_shape, stride, padding)",
    "maxpool2d_forward": "(x, kernel_size, stride, out=None, argmax=None)",
    "maxpool2d_backward": "(dy, argmax, x_shape, kernel_size, stride, dx=None)",
    "avgpool2d_forward": "(x, kernel_size, stride, out=None)",
    "avgpool2d_backward": "(dy, x_shape, kernel_size, stride, dx=None)",
    "activation_forward": "(x, kind, out=None)",
    "activation_backward": "(dy, y, kind, dx=None)",
}


def _params(fn) -> str:
    """The signature without annotations: names and defaults only."""
    sig = inspect.signature(fn)
    return str(sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
                           return_annotation=inspect.Signature.empty))


def test_signatures_match_the_plan():
    assert sorted(ops.__all__) == sorted(PLAN)
    for name, want in PLAN.items():
        assert _params(getattr(ops, name)) == want, name


def test_signatures_match_the_gpu_ops():
    try:
        from custom_impl.gpu import ops as gpu_ops
    except ImportError as err:
        pytest.skip(f"custom_impl.gpu.ops is not importable here ({err})")
    assert sorted(gpu_ops.__all__) == sorted(ops.__all__)
    # The GPU ops share every parameter of the CPU ops, in order; they may take further keyword arguments
    # after them (algo=, relu=, index64=), each with a default, so a call written for one device runs on both.
    for name in PLAN:
        cpu_params = list(inspect.signature(getattr(ops, name)).parameters.values())
        gpu_params = list(inspect.signature(getattr(gpu_ops, name)).parameters.values())
        assert [p.name for p in gpu_params[:len(cpu_params)]] == [p.name for p in cpu_params], name
        assert all(p.default is not inspect.Parameter.empty for p in gpu_params[len(cpu_params):]), name


def test_layer_ops():
    assert custom_impl.layer_ops("cpu") is ops
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        custom_impl.layer_ops("tpu")


def _r(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    bad = np.abs(got - want) > ATOL + RTOL * np.abs(want)
    assert not bad.any(), f"{what}: {bad.sum()} entries off, max |diff| {np.abs(got - want).max():.3g}"


def _t(a):
    return torch.from_numpy(np.asarray(a, np.float64)).requires_grad_()


@pytest.mark.parametrize("n,f,u,act", [(1, 5, 3, "none"), (7, 33, 17, "relu"), (33, 10, 9, "tanh"),
                                       (6, 4, 1, "sigmoid")])
def test_dense(n, f, u, act):
    rng = np.random.default_rng(n)
    x, W, b, dy = _r(rng, n, f), _r(rng, u, f), _r(rng, u), _r(rng, n, u)
    xt, Wt, bt = _t(x), _t(W), _t(b)
    z = F.linear(xt, Wt, bt)
    yt = {"none": z, "relu": torch.relu(z), "tanh": torch.tanh(z), "sigmoid": torch.sigmoid(z)}[act]
    out = np.full((n, u), np.nan, np.float32)
    assert ops.dense_forward(x, W, b, act=act, out=out) is out
    _close(out, yt.detach(), "dense_forward")
    z.backward(torch.from_numpy(dy.astype(np.float64)))   # dy: gradient w.r.t. the pre-activation
    bufs = {k: np.full(v.shape, np.nan, np.float32) for k, v in (("dx", x), ("dW", W), ("db", b))}
    dx, dW, db = ops.dense_backward(dy, x, W, **bufs)
    assert dx is bufs["dx"] and dW is bufs["dW"] and db is bufs["db"]
    _close(dx, xt.grad, "dx")
    _close(dW, Wt.grad, "dW")
    _close(db, bt.grad, "db")
    assert ops.dense_backward(dy, x, W, need_dx=False, need_db=False)[::2] == (None, None)
    dx2 = np.empty_like(x)
    assert ops.dense_backward_data(dy, W, dx=dx2) is dx2
    _close(dx2, xt.grad, "dense_backward_data")


@pytest.mark.parametrize("n,c,h,w,k,r,s,stride,padding", [
    (1, 3, 7, 9, 4, 3, 5, (2, 1), (1, 2)),
    (7, 2, 11, 11, 5, 3, 3, 1, 1),
    (3, 5, 13, 6, 3, 2, 2, 2, 0),
    (2, 1, 28, 28, 6, 5, 5, 1, 2),      # P*Q >= 512: the (n, p, q) column order
])
def test_conv2d(n, c, h, w, k, r, s, stride, padding):
    rng = np.random.default_rng(c * h)
    x, W, b = _r(rng, n, c, h, w), _r(rng, k, c, r, s), _r(rng, k)
    xt, Wt, bt = _t(x), _t(W), _t(b)
    yt = F.conv2d(xt, Wt, bt, stride, padding)
    dy = _r(rng, *yt.shape)
    out = np.full(yt.shape, np.nan, np.float32)
    assert ops.conv2d_forward(x, W, b, stride, padding, out=out) is out
    _close(out, yt.detach(), "conv2d_forward")
    _close(ops.conv2d_forward(x, W, None, stride, padding), F.conv2d(xt, Wt, None, stride, padding).detach(),
           "conv2d_forward without bias")
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    bufs = {k_: np.full(v.shape, np.nan, np.float32) for k_, v in (("dx", x), ("dW", W), ("db", b))}
    dx, dW, db = ops.conv2d_backward(dy, x, W, stride, padding, workspace=None, **bufs)
    assert dx is bufs["dx"] and dW is bufs["dW"] and db is bufs["db"]
    _close(dx, xt.grad, "dx")
    _close(dW, Wt.grad, "dW")
    _close(db, bt.grad, "db")
    none_dx, dW2, none_db = ops.conv2d_backward(dy, x, W, stride, padding, need_dx=False, need_db=False)
    assert none_dx is None and none_db is None
    _close(dW2, Wt.grad, "dW without dx, db")
    dx2 = np.empty_like(x)
    assert ops.conv2d_backward_data(dy, W, x.shape, stride, padding, dx=dx2) is dx2
    _close(dx2, xt.grad, "conv2d_backward_data")
    assert ops.conv2d_workspace_size(x.shape, W.shape, stride, padding) == 0


@pytest.mark.parametrize("shape,kernel,stride", [((1, 1, 5, 5), (2, 2), (2, 2)), ((7, 3, 9, 11), (3, 2), (2, 2)),
                                                 ((3, 2, 8, 7), (3, 3), (1, 1)), ((2, 4, 6, 6), 2, 2),
                                                 ((5, 3, 7, 9), (2, 3), (3, 2))])
def test_pooling(shape, kernel, stride):
    rng = np.random.default_rng(shape[0])
    x = _r(rng, *shape)
    xt = _t(x)
    yt, idx = F.max_pool2d(xt, kernel, stride, return_indices=True)
    dy = _r(rng, *yt.shape)
    y_out, am_out = np.full(yt.shape, np.nan, np.float32), np.full(yt.shape, -1, np.int32)
    y, am = ops.maxpool2d_forward(x, kernel, stride, out=y_out, argmax=am_out)
    assert y is y_out and am is am_out and am.dtype == np.int32
    _close(y, yt.detach(), "maxpool2d_forward")
    # PyTorch's indices are h*W + w within the plane; ours the position r*S + s within the window
    (kr, ks), (sh, sw) = (kernel, kernel) if np.isscalar(kernel) else kernel, (stride, stride) if np.isscalar(stride) else stride
    p, q = np.meshgrid(np.arange(yt.shape[2]), np.arange(yt.shape[3]), indexing="ij")
    h, w = np.divmod(idx.numpy(), shape[3])
    np.testing.assert_array_equal(am, (h - p * sh) * ks + (w - q * sw))
    assert am.min() >= 0 and am.max() < kr * ks
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    dx = np.full(x.shape, np.nan, np.float32)
    assert ops.maxpool2d_backward(dy, am, x.shape, kernel, stride, dx=dx) is dx
    _close(dx, xt.grad, "maxpool2d_backward")

    xt = _t(x)
    yt = F.avg_pool2d(xt, kernel, stride)
    out = np.full(yt.shape, np.nan, np.float32)
    assert ops.avgpool2d_forward(x, kernel, stride, out=out) is out
    _close(out, yt.detach(), "avgpool2d_forward")
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    dx = np.full(x.shape, np.nan, np.float32)
    assert ops.avgpool2d_backward(dy, x.shape, kernel, stride, dx=dx) is dx
    _close(dx, xt.grad, "avgpool2d_backward")


def test_maxpool_ties_and_nan_keep_the_first_maximum():
    # rule of custom_impl/kernels/pool.cu: strict '>' in raster order; a NaN wins and stays
    x = np.array([[[[1, 3, 3, 0], [3, 2, 0, 0], [np.nan, 1, 5, np.nan], [2, np.nan, 5, 5]]]], np.float32)
    y, am = ops.maxpool2d_forward(x, 2, 2)
    assert am[0, 0].tolist() == [[1, 0], [0, 1]]   # window positions r*S + s
    assert y[0, 0, 0].tolist() == [3, 3] and np.isnan(y[0, 0, 1]).all()


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh"])
def test_activation(kind):
    rng = np.random.default_rng(5)
    x, dy = _r(rng, 7, 3, 5) * 3, _r(rng, 7, 3, 5)
    xt = _t(x)
    yt = getattr(torch, kind)(xt)
    out = np.empty_like(x)
    assert ops.activation_forward(x, kind, out=out) is out
    _close(out, yt.detach(), kind)
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    dx = np.empty_like(x)
    assert ops.activation_backward(dy, out, kind, dx=dx) is dx
    _close(dx, xt.grad, f"{kind} backward")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        ops.activation_forward(x, "gelu")
