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


def assert_graph_replays_eager(run, outs) -> None:
    """``run()`` (CuPy launches writing the arrays ``outs``, everything compiled and planned by an earlier
    call) eagerly, then captured into a CUDA graph on a non-blocking stream with ``outs`` NaN-filled, and
    the graph replayed: every output must be bit-identical to the eager run (same kernels, same inputs)."""
    import cupy

    run()
    eager = [cupy.asnumpy(o) for o in outs]
    for o in outs:
        o.fill(np.nan)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        run()
        graph = stream.end_capture()
    graph.launch(stream)
    stream.synchronize()
    for o, want in zip(outs, eager):
        np.testing.assert_array_equal(cupy.asnumpy(o), want)


def _pair(p):
    return (p, p) if isinstance(p, int) else tuple(p)


def _patches(x, padding, tP, tQ, m, alpha):
    """The alpha x alpha input patch of every m x m output tile (at (m tp - ph, m tq - pw)), zeros outside x:
    (N, C, tP, tQ, alpha, alpha)."""
    ph, pw = padding
    N, C, H, Wd = x.shape
    xp = np.zeros((N, C, m * tP + alpha - m, m * tQ + alpha - m))
    rows, cols = min(H, xp.shape[2] - ph), min(Wd, xp.shape[3] - pw)
    xp[:, :, ph: ph + rows, pw: pw + cols] = x[:, :, :rows, :cols]
    d = np.empty((N, C, tP, tQ, alpha, alpha))
    for u in range(alpha):
        for v in range(alpha):
            d[..., u, v] = xp[:, :, u: u + m * tP: m, v: v + m * tQ: m]
    return d


def winograd_ref(x, W, padding, bt, g, at):
    """Winograd F(m x m, r x r) in float64 NumPy with the given transform matrices (m, r and the domain alpha
    read from their shapes: At (m, alpha), G (alpha, r), Bt (alpha, alpha)): (N, K, P, Q). With the absolute
    matrices and |x|, |W| it is S_abs, the bound on every intermediate magnitude of the float32 pipeline
    (tests/custom_impl/gpu/test_conv_winograd.py's module docstring)."""
    ph, pw = _pair(padding)
    N, C, H, Wd = x.shape
    m, alpha = at.shape
    r = g.shape[1]
    P, Q = H + 2 * ph - (r - 1), Wd + 2 * pw - (r - 1)
    tP, tQ = -(-P // m), -(-Q // m)
    V = np.einsum("iu,nctsuv,jv->ijncts", bt, _patches(x, (ph, pw), tP, tQ, m, alpha), bt)
    U = np.einsum("ir,kcrs,js->ijkc", g, W, g)
    M = np.einsum("ijkc,ijncts->ijnkts", U, V)
    Y = np.einsum("ai,ijnkts,bj->nktasb", at, M, at).reshape(N, -1, m * tP, m * tQ)
    return Y[:, :, :P, :Q]


def winograd_wgrad_ref(dy, x, padding, bt, g, at):
    """dW (K, C, r, r) by Winograd F(r x r, m x m) in float64 with the given matrices (m, r and alpha from
    their shapes, as ``winograd_ref``): the alpha x alpha x patches of the forward's tiles
    (Bt d B) against the m x m dy tiles (A e A^T, A = At^T), summed over tiles, then G^T . G.
    With absolute matrices and |dy|, |x| it is S_abs, the bound on every intermediate magnitude."""
    N = x.shape[0]
    P, Q = dy.shape[2:]
    m, alpha = at.shape
    tP, tQ = -(-P // m), -(-Q // m)
    d = _patches(x, _pair(padding), tP, tQ, m, alpha)
    e = np.zeros((N, dy.shape[1], m * tP, m * tQ))
    e[:, :, :P, :Q] = dy
    e = e.reshape(N, -1, tP, m, tQ, m).transpose(0, 1, 2, 4, 3, 5)       # (N, K, tP, tQ, m, m)
    V = np.einsum("iu,nctsuv,jv->ijncts", bt, d, bt)
    Y = np.einsum("ia,nktsab,jb->ijnkts", at.T, e, at.T)
    M = np.einsum("ijnkts,ijncts->ijkc", Y, V)
    return np.einsum("ir,ijkc,js->kcrs", g, M, g)
