"""A float64 NumPy convolution (forward and both gradients) and the tolerance check that the GPU conv tests
share (tests/custom_impl/gpu/test_conv.py explains the tolerance)."""
from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _windows(xp, r, s, P, Q, sh, sw):
    """xp[:, :, r + p*sh, s + q*sw] for all p < P, q < Q: (N, C, P, Q)."""
    return xp[:, :, r: r + sh * (P - 1) + 1: sh, s: s + sw * (Q - 1) + 1: sw]


def conv_ref(x, W, stride, padding):
    """float64 forward, and the functions giving dx, dW for a dy, by loops over the kernel taps."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, Wd = x.shape
    K, _, R, S = W.shape
    P = (H + 2 * ph - R) // sh + 1
    Q = (Wd + 2 * pw - S) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, K, P, Q))
    for r in range(R):
        for s in range(S):
            y += np.einsum("ncpq,kc->nkpq", _windows(xp, r, s, P, Q, sh, sw), W[:, :, r, s])

    def backward(dy):
        dxp = np.zeros_like(xp)
        dW = np.zeros_like(W)
        for r in range(R):
            for s in range(S):
                dxp[:, :, r: r + sh * (P - 1) + 1: sh, s: s + sw * (Q - 1) + 1: sw] += np.einsum(
                    "nkpq,kc->ncpq", dy, W[:, :, r, s])
                dW[:, :, r, s] = np.einsum("nkpq,ncpq->kc", dy, _windows(xp, r, s, P, Q, sh, sw))
        return dxp[:, :, ph: ph + H, pw: pw + Wd], dW, dy.sum(axis=(0, 2, 3))

    return y, backward


def reference_case(case, seed):
    """Random float32 x, W and dy of ``case`` (N, C, H, W, K, R, S, stride, padding), drawn in that order from
    ``seed``, and their float64 references: (x, W, dy, (y, dx, dW, db), (y, dx, dW) of the absolute values:
    the sums of absolute terms, for tolerances)."""
    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(seed)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    y, back = conv_ref(x.astype(np.float64), W.astype(np.float64), stride, padding)
    y_abs, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), stride, padding)
    dy = _rand(rng, *y.shape)
    dx, dW, db = back(dy.astype(np.float64))
    dx_abs, dW_abs, _ = back_abs(np.abs(dy.astype(np.float64)))
    return x, W, dy, (y, dx, dW, db), (y_abs, dx_abs, dW_abs)


def _assert_close(out, ref, ref_abs, L, what):
    out = np.asarray(out, dtype=np.float64)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert np.all(np.isfinite(out)), f"{what}: {np.sum(~np.isfinite(out))} non-finite (unwritten?) elements"
    tol = 4.0 * np.sqrt(max(L, 1)) * EPS32 * ref_abs + 4.0 * EPS32 * np.abs(ref) + 1e-30
    err = np.abs(out - ref)
    assert not (err > tol).any(), f"{what}: {(err > tol).sum()} of {err.size} off; worst err {err.max():.3g}"
