"""Our non-GEMM GPU ops against NumPy float64 references: pooling, activations, losses, SGD.

Every op on odd shapes (batch 1 and 7, sizes that are no multiple of any block), random data (never
zeros), forward and backward; outputs are poisoned with NaN before each launch so an element left
unwritten fails. Then each op is captured in a CUDA graph and replayed on new inputs, which proves it
allocates nothing and never synchronises on the hot path.

Tolerances, |a - b| <= atol + rtol*|b| against the float64 reference:
- selections (max pooling forward, its routing, relu) are exact: no arithmetic happens (0 tolerance);
- one float32 rounding of a short sum or product: rtol 1e-6 (eps = 6e-8, sums of <= 25 terms), and an
  absolute part of 2 ulp of the terms where the result can cancel to near zero (SGD);
- expf / tanhf / logf / log1pf are accurate to 2 ulp in CUDA: rtol 1e-6, plus atol 1e-7 where the
  result can pass through zero (tanh, 1 - y^2);
- softmax / log-sum-exp over K terms: rtol 1e-5 with atol 1e-6 of the scale (K up to 1000 summed in
  float32: error ~ eps * sqrt(K) ~ 2e-6).
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cp():
    import cupy

    return cupy


def _poisoned(shape, dtype=np.float32):
    cp = _cp()
    a = cp.empty(shape, dtype=dtype)
    a.fill(np.nan if np.dtype(dtype).kind == "f" else -7)
    return a


def _close(a, b, rtol, atol, what):
    a = _cp().asnumpy(a).astype(np.float64) if not isinstance(a, np.ndarray) else a.astype(np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.all(np.isfinite(a)), f"{what}: {int(np.sum(~np.isfinite(a)))} non-finite (unwritten?) elements"
    err = np.abs(a - b)
    bad = err > atol + rtol * np.abs(b)
    assert not bad.any(), f"{what}: {int(bad.sum())}/{bad.size} out of tolerance, max abs err {err.max():.3g}"


# ---------------------------------------------------------------------------------------------- references
def _pool_ref(x, kernel, stride, kind):
    """float64 pooling forward and a function dy -> dx (first max of each window, like PyTorch)."""
    n, c, h, w = x.shape
    (r, s), (sh, sw) = kernel, stride
    p, q = (h - r) // sh + 1, (w - s) // sw + 1
    y = np.empty((n, c, p, q))
    where = np.empty((n, c, p, q), dtype=np.int64)
    for i in range(p):
        for j in range(q):
            win = x[:, :, i * sh:i * sh + r, j * sw:j * sw + s].reshape(n, c, r * s)
            if kind == "max":
                where[:, :, i, j] = np.argmax(win, axis=2)  # first maximum
                y[:, :, i, j] = win.max(axis=2)
            else:
                y[:, :, i, j] = win.mean(axis=2)

    def backward(dy):
        dx = np.zeros((n, c, h, w))
        for i in range(p):
            for j in range(q):
                if kind == "max":
                    rr, ss = np.divmod(where[:, :, i, j], s)
                    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
                    np.add.at(dx, (nn, cc, i * sh + rr, j * sw + ss), dy[:, :, i, j])
                else:
                    dx[:, :, i * sh:i * sh + r, j * sw:j * sw + s] += dy[:, :, i, j][:, :, None, None] / (r * s)
        return dx

    return y, backward


# (N, C, H, W, kernel, stride): non-overlapping, overlapping (stride < kernel), gaps (stride > kernel),
# rectangular, a window as large as the input, batch 1.
POOL_CASES = [
    (7, 3, 13, 17, (2, 2), (2, 2)),
    (1, 5, 13, 17, (3, 3), (2, 2)),
    (7, 3, 11, 9, (3, 2), (1, 3)),
    (3, 2, 13, 17, (2, 3), (3, 4)),
    (2, 3, 5, 7, (5, 7), (1, 1)),
    (1, 1, 1, 1, (1, 1), (1, 1)),
]


# (kind, fused relu, 64-bit indexing, backward algo): every kernel entry point (algo "auto" picks the
# tiled backward for the cases with stride >= window, the gather one for overlapping windows)
POOL_VARIANTS = [("max", False, False, "auto"), ("max", False, True, "auto"), ("max", False, False, "gather"),
                 ("max", True, False, "auto"), ("max", True, True, "gather"),
                 ("avg", False, False, "auto"), ("avg", False, True, "auto"), ("avg", False, False, "gather")]


@pytest.mark.parametrize("kind,relu,index64,algo", POOL_VARIANTS,
                         ids=["-".join(str(v) for v in p) for p in POOL_VARIANTS])
@pytest.mark.parametrize("n,c,h,w,kernel,stride", POOL_CASES)
def test_pool_forward_backward(kind, relu, index64, algo, n, c, h, w, kernel, stride):
    from custom_impl.gpu import pool

    cp = _cp()
    rng = np.random.default_rng(n * 1000 + h * 10 + w)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x64 = x.astype(np.float64)
    # fused relu: the reference is the unfused pair, relu then pool (torch's semantics, ties included)
    y_ref, back = _pool_ref(np.maximum(x64, 0) if relu else x64, kernel, stride, kind)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = back(dy.astype(np.float64)) * ((x64 > 0) if relu else 1.0)
    xd, dyd = cp.asarray(x), cp.asarray(dy)
    yd, dxd = _poisoned(y_ref.shape), _poisoned(x.shape)
    if kind == "max":
        yd, am = pool.maxpool2d_forward(xd, kernel, stride, out=yd, argmax=_poisoned(y_ref.shape, np.int32),
                                        relu=relu, index64=index64)
        pool.maxpool2d_backward(dyd, am, x.shape, kernel, stride, dx=dxd, y=yd, relu=relu, index64=index64,
                                algo=algo)
        _close(yd, y_ref, 0, 0, "maxpool forward (a selection: exact)")
        # each dx is a sum of <= ceil(R/sh)*ceil(S/sw) routed dy values: one rounding per term
        _close(dxd, dx_ref, 1e-6, 1e-7, "maxpool backward")
    else:
        pool.avgpool2d_forward(xd, kernel, stride, out=yd, index64=index64)
        pool.avgpool2d_backward(dyd, x.shape, kernel, stride, dx=dxd, index64=index64, algo=algo)
        _close(yd, y_ref, 1e-6, 1e-6, "avgpool forward (float32 sum of R*S <= 35 terms)")
        _close(dxd, dx_ref, 1e-6, 1e-6, "avgpool backward (float32 sum of covering dy/(R*S))")


def test_maxpool_ties_route_to_first_max():
    from custom_impl.gpu import pool

    cp = _cp()
    rng = np.random.default_rng(5)
    # small integers: most windows hold ties; overlapping windows route to the first max of each window
    x = rng.integers(-2, 3, size=(3, 2, 9, 11)).astype(np.float32)
    kernel, stride = (3, 3), (2, 2)
    y_ref, back = _pool_ref(x.astype(np.float64), kernel, stride, "max")
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    yd, am = pool.maxpool2d_forward(cp.asarray(x), kernel, stride)
    dxd = pool.maxpool2d_backward(cp.asarray(dy), am, x.shape, kernel, stride)
    _close(yd, y_ref, 0, 0, "maxpool forward with ties")
    _close(dxd, back(dy.astype(np.float64)), 1e-6, 1e-7, "maxpool backward with ties (first max)")


# ---------------------------------------------------------------------------------------------- activations
ACT_REF = {
    "relu": (lambda x: np.maximum(x, 0), lambda y: (y > 0).astype(np.float64)),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda y: y * (1 - y)),
    "tanh": (np.tanh, lambda y: 1 - y * y),
}


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (7, 37), (3, 5, 13, 17), (33, 1000)])
def test_activation_forward_backward(act, shape):
    from custom_impl.gpu.activation import activation_backward, activation_forward

    cp = _cp()
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.flat[0] = 95.0   # saturating values: sigmoid/tanh must give 1, not NaN
    if x.size > 1:
        x.flat[1] = -95.0
    f, fprime = ACT_REF[act]
    y_ref = f(x.astype(np.float64))
    yd = activation_forward(cp.asarray(x), act, out=_poisoned(shape))
    _close(yd, y_ref, 1e-6, 1e-7, f"{act} forward (2-ulp transcendental)")
    dy = rng.standard_normal(shape).astype(np.float32)
    y32 = cp.asnumpy(yd).astype(np.float64)  # backward is defined on the float32 output it is given
    dx_ref = dy * fprime(y32)
    dxd = activation_backward(cp.asarray(dy), yd, act, dx=_poisoned(shape))
    _close(dxd, dx_ref, 1e-6, 1e-7, f"{act} backward (two float32 roundings)")
    # in place (dx is dy), as the model does after a fused dense epilogue
    dyd = cp.asarray(dy)
    activation_backward(dyd, yd, act, dx=dyd)
    _close(dyd, dx_ref, 1e-6, 1e-7, f"{act} backward in place")


# ---------------------------------------------------------------------------------------------- losses
def _softmax_xent_ref(z, y):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    per = lse - z[np.arange(len(y)), y]
    p = np.exp(z - lse[:, None])
    p[np.arange(len(y)), y] -= 1
    return per.mean(), p / len(y)


@pytest.mark.parametrize("n,k,scale", [(1, 10, 1.0), (7, 3, 3.0), (33, 37, 1.0), (300, 1000, 2.0),
                                       (5, 11, 1e4)])
def test_softmax_cross_entropy(n, k, scale):
    from custom_impl.gpu.loss import softmax_cross_entropy

    cp = _cp()
    rng = np.random.default_rng(n + k)
    z = (rng.standard_normal((n, k)) * scale).astype(np.float32)  # scale 1e4: exp would overflow unshifted
    y = rng.integers(0, k, size=n).astype(np.int64)
    loss_ref, dz_ref = _softmax_xent_ref(z, y)
    loss, dz = softmax_cross_entropy(cp.asarray(z), cp.asarray(y), dz=_poisoned((n, k)), loss=_poisoned((1,)),
                                     per_sample=_poisoned((n,)))
    assert loss.shape == ()
    # loss: log-sum-exp in float32 over K terms, then a mean over N (n = 300 > 256 threads of the reduce)
    _close(loss, loss_ref, 1e-5, 1e-6 * max(1.0, abs(loss_ref)), "softmax cross-entropy loss")
    _close(dz, dz_ref, 1e-5, 1e-6 * float(np.abs(dz_ref).max()), "softmax cross-entropy gradient")


def test_softmax_cross_entropy_bad_label_is_nan():
    from custom_impl.gpu.loss import softmax_cross_entropy

    cp = _cp()
    z = cp.asarray(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    loss, _ = softmax_cross_entropy(z, cp.asarray(np.array([0, 4, 1], dtype=np.int64)))
    assert np.isnan(float(loss)), "an out-of-range label must show as a NaN loss, never a silent value"


@pytest.mark.parametrize("n,scale", [(1, 1.0), (33, 3.0), (700, 1.0), (9, 200.0)])
def test_sigmoid_binary_cross_entropy(n, scale):
    from custom_impl.gpu.loss import sigmoid_binary_cross_entropy

    cp = _cp()
    rng = np.random.default_rng(n)
    z = (rng.standard_normal((n, 1)) * scale).astype(np.float32)  # scale 200: naive log(sigmoid) gives -inf
    y = rng.integers(0, 2, size=n).astype(np.int64)
    z64, y64 = z[:, 0].astype(np.float64), y.astype(np.float64)
    per = np.maximum(z64, 0) - z64 * y64 + np.log1p(np.exp(-np.abs(z64)))
    dz_ref = ((1 / (1 + np.exp(-z64)) - y64) / n)[:, None]
    loss, dz = sigmoid_binary_cross_entropy(cp.asarray(z), cp.asarray(y), dz=_poisoned((n, 1)),
                                            loss=_poisoned((1,)), per_sample=_poisoned((n,)))
    _close(loss, per.mean(), 1e-5, 1e-6, "binary cross-entropy loss (2-ulp log1pf/expf, mean of N terms)")
    _close(dz, dz_ref, 1e-6, 1e-7 / n, "binary cross-entropy gradient (2-ulp expf, one division)")


# ---------------------------------------------------------------------------------------------- SGD
@pytest.mark.parametrize("n", [1, 37, 100_003])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_update(n, momentum):
    from custom_impl.gpu.sgd import sgd_update

    cp = _cp()
    rng = np.random.default_rng(n)
    w, g, v = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    lr = 0.037
    wd, gd, vd = cp.asarray(w), cp.asarray(g), cp.asarray(v)
    sgd_update(wd, gd, vd, lr, momentum)
    w64, g64, v64 = w.astype(np.float64), g.astype(np.float64), v.astype(np.float64)
    if momentum:
        v_ref = momentum * v64 + g64
        w_ref = w64 - lr * v_ref
    else:
        v_ref = v64  # torch keeps no velocity with momentum 0: ours is left untouched
        w_ref = w64 - lr * g64
    # m*v + g and w - lr*v cancel for some entries: the rounding error scales with the terms (|m v| + |g|
    # up to ~8 for N(0,1) data; measured 4e-7 at n = 100003 on an H100), not with the result, so the
    # absolute part is 2 ulp of the terms' magnitude, 2 * 6e-8 * 8 = 1e-6.
    _close(vd, v_ref, 1e-6, 1e-6, "velocity (two float32 roundings)")
    _close(wd, w_ref, 1e-6, 1e-6, "weights (one fused multiply-add of the rounded velocity)")


# ---------------------------------------------------------------------------------------------- graphs
def test_ops_capture_and_replay_in_a_cuda_graph():
    """Every op with preallocated outputs records into a CUDA graph (no allocation, no host sync)."""
    from custom_impl.gpu import pool
    from custom_impl.gpu.activation import activation_backward, activation_forward
    from custom_impl.gpu.loss import softmax_cross_entropy
    from custom_impl.gpu.sgd import sgd_update

    cp = _cp()
    rng = np.random.default_rng(11)
    n, c, h, w, k = 5, 3, 9, 11, 6
    x = cp.asarray(rng.standard_normal((n, c, h, w)).astype(np.float32))
    a = cp.empty_like(x)
    pooled = cp.empty((n, c, 4, 5), np.float32)
    am = cp.empty((n, c, 4, 5), np.int32)
    dpool = cp.empty_like(x)
    z = cp.asarray(rng.standard_normal((n, k)).astype(np.float32))
    labels = cp.asarray(rng.integers(0, k, n).astype(np.int64))
    dz, loss, per = cp.empty_like(z), cp.empty((1,), np.float32), cp.empty((n,), np.float32)
    wflat, gflat, vflat = (cp.asarray(rng.standard_normal(77).astype(np.float32)) for _ in range(3))

    def run():
        activation_forward(x, "tanh", out=a)
        pool.maxpool2d_forward(a, (3, 3), (2, 2), out=pooled, argmax=am)
        pool.maxpool2d_backward(pooled, am, a.shape, (3, 3), (2, 2), dx=dpool)
        activation_backward(dpool, a, "tanh", dx=dpool)
        softmax_cross_entropy(z, labels, dz=dz, loss=loss, per_sample=per)
        sgd_update(wflat, gflat, vflat, 0.1, 0.9)

    run()  # compile everything first (module loading is no stream work)
    w0, v0 = wflat.copy(), vflat.copy()
    run()
    eager = [cp.asnumpy(t) for t in (a, pooled, dpool, dz, loss, wflat, vflat)]
    wflat[...] = w0  # the graph starts from the state the eager second run started from
    vflat[...] = v0
    stream = cp.cuda.Stream(non_blocking=True)
    pool_bytes = cp.get_default_memory_pool().used_bytes()
    with stream:
        stream.begin_capture()
        run()
        graph = stream.end_capture()
    assert cp.get_default_memory_pool().used_bytes() == pool_bytes, "an op allocated while being captured"
    for t in (a, pooled, dpool, dz, loss):
        t.fill(np.nan)
    graph.launch(stream)
    stream.synchronize()
    # same kernels on the same inputs: bitwise identical
    for got, want in zip((a, pooled, dpool, dz, loss, wflat, vflat), eager):
        np.testing.assert_array_equal(cp.asnumpy(got), want)


def test_wrappers_reject_bad_arrays():
    from custom_impl.gpu import pool
    from custom_impl.gpu.activation import activation_forward

    cp = _cp()
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))  # float64
    with pytest.raises(ValueError, match="float32"):
        activation_forward(x, "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        activation_forward(x.astype(np.float32), "gelu")
    with pytest.raises(ValueError, match="contiguous"):
        pool.avgpool2d_forward(x.astype(np.float32)[:, :, :, ::2], (2, 2), (2, 2))
    with pytest.raises(ValueError, match="shape"):
        pool.avgpool2d_forward(x.astype(np.float32), (2, 2), (2, 2), out=cp.empty((2, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="stride >= window"):
        pool.avgpool2d_backward(cp.empty((2, 3, 3, 3), np.float32), (2, 3, 8, 8), (3, 3), (2, 2), algo="tiled")
    with pytest.raises(ValueError, match="needs y"):
        y, am = pool.maxpool2d_forward(x.astype(np.float32), (2, 2), (2, 2), relu=True)
        pool.maxpool2d_backward(y, am, x.shape, (2, 2), (2, 2), relu=True)
