"""NumPy emulation of kernels/conv_winograd.cu's index math and transforms, on tiny shapes, against a direct
float64 convolution (tests/conv_reference.py's ``conv_ref``), forward, backward-data and backward-weights.

Each kernel is replayed over all of its threads at once (NumPy arrays of thread indices), on flat buffers
with the launch plan and workspace layout of custom_impl/gpu/conv/winograd.py (its passes): the workspace and the
outputs start NaN-filled, so an element read before it is written, or never written, shows up as NaN. The
GEMM reads U with row stride Ip and reduction end I, V and Mo with row length Tp, as conv_winograd_gemm does.

Then the same in float32 (transforms rounded to float32, the GEMM in float32) against the tolerance of
tests/custom_impl/gpu/test_conv_winograd.py, to see how much margin that tolerance leaves. Runs on the CPU, no CuPy:

    python3 lab/conv/winograd_emulate.py
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "custom_impl", "gpu"))

from conv_reference import EPS32, conv_ref  # noqa: E402
from custom_impl.gpu.conv.winograd import WeightsPass, backward_pass, checked_problem, forward_pass  # noqa: E402
from test_conv_winograd import wgrad_abs, wgrad_ref, winograd_abs, winograd_ref  # noqa: E402


# F(3x3, 4x4) (the weight gradient's "winograd4"): conv_winograd.cu's Bt, A and G^T
BT4 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
A4 = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [1, -1, 1, -1], [1, 2, 4, 8], [1, -2, 4, -8], [0, 0, 0, 1]], float)
GT4 = np.array([[1 / 4, -1 / 6, -1 / 6, 1 / 24, 1 / 24, 0], [0, -1 / 6, 1 / 6, 1 / 12, -1 / 12, 0],
                [0, -1 / 6, -1 / 6, 1 / 6, 1 / 6, 1]])
G4 = GT4.T                                                          # F(4x4, 3x3)'s filter transform (6x3)
AT4 = A4.T                                                          # and its output transform (4x6)
# F(2x2, 5x5) on the same points (0, +-1, +-2, infinity), so the same Bt: G (6x5), row j p_j^k / prod (p_j - p_l)
G25 = np.array([[6, 0, 0, 0, 0], [-4, -4, -4, -4, -4], [-4, 4, -4, 4, -4], [1, 2, 4, 8, 16],
                [1, -2, 4, -8, 16], [0, 0, 0, 0, 24]], float) / 24
AT25 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], float)
SIX = {(4, 3): (G4, AT4), (2, 5): (G25, AT25)}   # (tile, kernel size) -> (G, At) of the 6x6 domain


def _transform4(ws, off, g, src, channels, plane_hw, origin, size, mat, dt):
    """One F(4x4) transform kernel (thread (channel, t)): the size x size patch of each channel's plane of
    ``src`` (N, channels, *plane_hw) at ``origin(tp, tq)`` (zeros outside the plane) through mat . mat^T,
    into 36 slices of (channels, Tp) at ws[off:], zero columns past T."""
    Tp, T = g.Tp, g.T
    flat = src.astype(dt).ravel()
    Hs, Ws = plane_hw
    t = np.arange(T)
    tq, nt = t % g.tQ, t // g.tQ
    tp, n = nt % g.tP, nt // g.tP
    h0, w0 = origin(tp, tq)
    m = mat.astype(dt)
    for c in range(channels):
        plane = (n * channels + c) * Hs * Ws
        d = np.empty((size, size, T), dt)
        for a, b in itertools.product(range(size), range(size)):
            h, w = h0 + a, w0 + b
            ok = (h >= 0) & (h < Hs) & (w >= 0) & (w < Ws)
            d[a, b] = np.where(ok, flat[np.where(ok, plane + h * Ws + w, 0)], 0)
        v = np.einsum("ia,abt,jb->ijt", m, d, m).astype(dt)
        for xi in range(36):
            ws[off + xi * channels * Tp + c * Tp + np.arange(Tp)] = np.concatenate([v[xi // 6, xi % 6],
                                                                                   np.zeros(Tp - T)])


def emulate_input4(ws, off_v, g, inp, dt):
    """conv_winograd4_input / conv_winograd25_input: V (36, C, Tp) at ws[off_v:], the 6x6 patch at
    (m tp - ph, m tq - pw) through Bt . Bt^T (the matrices, not the kernel's operation order)."""
    m = g.m
    _transform4(ws, off_v, g, inp, g.C_in, (g.Hi, g.Wi), lambda tp, tq: (m * tp - g.ph, m * tq - g.pw), 6, BT4, dt)


def emulate_dy4(ws, off_y, g, dy, dt):
    """conv_winograd4_dy / conv_winograd25_dy: Y (36, K, Tp) at ws[off_y:], the m x m dy tile at (m tp, m tq)
    (zeros past P, Q) through A . A^T, A = At^T."""
    m, a = g.m, SIX[g.m, g.r][1].T
    _transform4(ws, off_y, g, dy, g.C_out, (g.Ho, g.Wo), lambda tp, tq: (m * tp, m * tq), m, a, dt)


def emulate_input(ws, off_v, ps, inp, dt):
    """conv_winograd_input: grid (ceil(Tp/256), C_in), thread (c, t): V (16, C_in, Tp) at ws[off_v:], zero rows
    past T."""
    xflat = inp.astype(dt).ravel()
    CT = ps.C_in * ps.Tp
    for c in range(ps.C_in):
        t = np.arange(ps.Tp)
        pad_t = t[t >= ps.T]
        for xi in range(16):
            ws[off_v + xi * CT + c * ps.Tp + pad_t] = 0
        t = t[t < ps.T]
        tq, nt = t % ps.tQ, t // ps.tQ
        tp, n = nt % ps.tP, nt // ps.tP
        h0, w0 = 2 * tp - ps.ph, 2 * tq - ps.pw
        plane = (n * ps.C_in + c) * ps.Hi * ps.Wi
        d = np.empty((4, 4, t.size), dt)
        for a, bb in itertools.product(range(4), range(4)):
            h, w = h0 + a, w0 + bb
            ok = (h >= 0) & (h < ps.Hi) & (w >= 0) & (w < ps.Wi)
            d[a, bb] = np.where(ok, xflat[np.where(ok, plane + h * ps.Wi + w, 0)], 0)
        e = np.stack([d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]])
        for a in range(4):
            vals = (e[a, 0] - e[a, 2], e[a, 1] + e[a, 2], e[a, 2] - e[a, 1], e[a, 1] - e[a, 3])
            for j in range(4):
                ws[off_v + (a * 4 + j) * CT + c * ps.Tp + t] = vals[j]


def emulate_pass(ps, inp, Wt, b, flip, dt):
    """One pass of the four kernels: inp (N, C_in, Hi, Wi) -> out (N, C_out, Ho, Wo), arithmetic in dt."""
    ws = np.full(ps.size, np.nan, dt)
    off_v, off_m = ps.n_u, ps.n_u + ps.n_v
    assert off_v % 4 == 0 and off_m % 4 == 0 and ps.Tp % 4 == 0 and ps.Ip % 4 == 0
    K, C = (ps.C_in, ps.C_out) if flip else (ps.C_out, ps.C_in)
    wflat = Wt.astype(dt).ravel()
    half = dt(0.5)

    # conv_winograd_filter: idx over O*Ip
    O, I, Ip = ps.C_out, ps.C_in, ps.Ip
    idx = np.arange(O * Ip)
    o, i = idx // Ip, idx % Ip
    OI = O * Ip
    live = i < I
    k = np.where(flip, i, o)[live]
    c = np.where(flip, o, i)[live]
    g = np.empty((3, 3, live.sum()), dt)
    for r, s in itertools.product(range(3), range(3)):
        tap = (2 - r) * 3 + (2 - s) if flip else r * 3 + s
        g[r, s] = wflat[(k * C + c) * 9 + tap]
    u = [[None] * 3 for _ in range(4)]
    for s in range(3):
        u[0][s] = g[0, s]
        u[1][s] = half * (g[0, s] + g[1, s] + g[2, s])
        u[2][s] = half * (g[0, s] - g[1, s] + g[2, s])
        u[3][s] = g[2, s]
    for xi in range(16):
        ws[xi * OI + idx[~live]] = 0
    for a in range(4):
        vals = (u[a][0], half * (u[a][0] + u[a][1] + u[a][2]), half * (u[a][0] - u[a][1] + u[a][2]), u[a][2])
        for j in range(4):
            ws[(a * 4 + j) * OI + idx[live]] = vals[j]

    emulate_input(ws, off_v, ps, inp, dt)
    CT = ps.C_in * ps.Tp

    # conv_winograd_gemm: Mo[z] (O x Tp) = U[z][:, :I] (row stride Ip) @ V[z] (I x Tp)
    for z in range(16):
        Uz = ws[z * OI: (z + 1) * OI].reshape(O, Ip)[:, :I]
        Vz = ws[off_v + z * CT: off_v + (z + 1) * CT].reshape(I, ps.Tp)
        assert not np.isnan(Uz).any() and not np.isnan(Vz).any(), "GEMM reads an unwritten U / V element"
        ws[off_m + z * O * ps.Tp: off_m + (z + 1) * O * ps.Tp] = (Uz @ Vz).ravel()

    # conv_winograd_output: grid (ceil(T/256), C_out), thread (k, t)
    out = np.full((ps.N, ps.C_out, ps.Ho, ps.Wo), np.nan, dt)
    oflat = out.reshape(-1)
    KTp = ps.C_out * ps.Tp
    t = np.arange(ps.T)
    tq, nt = t % ps.tQ, t // ps.tQ
    tp, n = nt % ps.tP, nt // ps.tP
    for k in range(ps.C_out):
        m = np.stack([ws[off_m + xi * KTp + k * ps.Tp + t] for xi in range(16)]).reshape(4, 4, -1)
        f = np.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])
        bias = dt(0) if b is None else dt(b[k])
        plane = (n * ps.C_out + k) * ps.Ho * ps.Wo
        for a in range(2):
            p, q = 2 * tp + a, 2 * tq
            o0 = f[a, 0] + f[a, 1] + f[a, 2] + bias
            o1 = f[a, 1] - f[a, 2] - f[a, 3] + bias
            okp = p < ps.Ho
            oflat[(plane + p * ps.Wo + q)[okp]] = o0[okp]
            okq = okp & (q + 1 < ps.Wo)
            oflat[(plane + p * ps.Wo + q + 1)[okq]] = o1[okq]
    assert not np.isnan(out).any(), "output element never written"
    return out


def emulate_pass4(ps, inp, Wt, b, flip, dt):
    """One F(4x4, 3x3) or F(2x2, 5x5) pass (conv_winograd{4,25}_filter, conv_winograd{4,25}_input,
    conv_winograd_gemm over 36 slices, conv_winograd{4,25}_output) on the flat workspace layout of ``_Pass``,
    the transforms as the matrices (not the kernels' operation order): inp (N, C_in, Hi, Wi) -> out
    (N, C_out, Ho, Wo)."""
    assert ps.xis == 36
    G, AT = SIX[ps.m, ps.r]
    mt = ps.m
    ws = np.full(ps.size, np.nan, dt)
    off_v, off_m = ps.n_u, ps.n_u + ps.n_v
    assert off_v % 4 == 0 and off_m % 4 == 0 and ps.Tp % 4 == 0 and ps.Ip % 4 == 0
    O, I, Ip, Tp = ps.C_out, ps.C_in, ps.Ip, ps.Tp
    # conv_winograd4_filter: U[xi][o][i] = (G g G^T)[xi], g = W[k, c] (flip: W[k, c] rotated, k = i, c = o)
    w = Wt.astype(dt)
    g = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3) if flip else w      # (O, I, r, r)
    u = np.einsum("ar,oirs,bs->aboi", G.astype(dt), g, G.astype(dt)).astype(dt)
    for xi in range(36):
        slab = np.zeros((O, Ip), dt)
        slab[:, :I] = u[xi // 6, xi % 6]
        ws[xi * O * Ip: (xi + 1) * O * Ip] = slab.ravel()
    emulate_input4(ws, off_v, ps, inp, dt)
    # conv_winograd_gemm, grid.z = 36: Mo[z] (O x Tp) = U[z][:, :I] @ V[z] (I x Tp)
    for z in range(36):
        Uz = ws[z * O * Ip: (z + 1) * O * Ip].reshape(O, Ip)[:, :I]
        Vz = ws[off_v + z * I * Tp: off_v + (z + 1) * I * Tp].reshape(I, Tp)
        assert not np.isnan(Uz).any() and not np.isnan(Vz).any(), "GEMM reads an unwritten U / V element"
        ws[off_m + z * O * Tp: off_m + (z + 1) * O * Tp] = (Uz @ Vz).ravel()
    # conv_winograd4_output: thread (k, t): y[n, k, m tp + i, m tq + j] = (At m A)[i][j] + b[k], inside P x Q
    out = np.full((ps.N, O, ps.Ho, ps.Wo), np.nan, dt)
    t = np.arange(ps.T)
    tq, nt = t % ps.tQ, t // ps.tQ
    tp, n = nt % ps.tP, nt // ps.tP
    at = AT.astype(dt)
    for k in range(O):
        m = np.stack([ws[off_m + xi * O * Tp + k * Tp + t] for xi in range(36)]).reshape(6, 6, -1)
        y = np.einsum("ia,abt,jb->ijt", at, m, at).astype(dt) + (dt(0) if b is None else dt(b[k]))
        for i, j in itertools.product(range(mt), range(mt)):
            p, q = mt * tp + i, mt * tq + j
            ok = (p < ps.Ho) & (q < ps.Wo)
            out[n[ok], k, p[ok], q[ok]] = y[i, j][ok]
    assert not np.isnan(out).any(), "output element never written"
    return out


def emulate_weights(wp, dy, x, dt):
    """The four backward-weights kernels (conv_winograd(4)_input, conv_winograd(4)_dy, conv_winograd_wgrad_gemm
    split over t, conv_winograd(4)_wgrad_output) on the flat workspace layout of ``WeightsPass`` (either dy tile),
    chunk by chunk as ``winograd._run_weights`` launches them: dW (K, C, 3, 3) in dt."""
    K, C, xis = wp.K, wp.C, wp.xis
    ws = np.full(wp.size, np.nan, dt)
    off_y, off_m = wp.n_v, wp.n_v + wp.n_y
    assert off_y % 4 == 0 and off_m % 4 == 0
    for n0, g, t_chunk, splits, slab in wp.chunks:
        Tp, T = g.Tp, g.T
        assert Tp % 4 == 0 and (splits == 1 or t_chunk % wp.cfg.bk == 0) and g.m == wp.tile
        assert xis * C * Tp <= wp.n_v and xis * K * Tp <= wp.n_y and (slab + splits) * xis * K * C <= wp.n_m
        ws[:off_m] = np.nan    # a chunk must not read what the one before it left in V or Y
        t_all = np.arange(Tp)
        t = t_all[t_all < T]
        tq, nt = t % g.tQ, t // g.tQ
        tp, n = nt % g.tP, nt // g.tP

        CT, KT = C * Tp, K * Tp
        if xis == 36:
            emulate_input4(ws, 0, g, x[n0:n0 + g.N], dt)
            emulate_dy4(ws, off_y, g, dy[n0:n0 + g.N], dt)
        else:
            emulate_input(ws, 0, g, x[n0:n0 + g.N], dt)    # V at the workspace's start
            emulate_dy(ws, off_y, g, dy[n0:n0 + g.N], dt, t_all, t, tp, tq, n)

        # conv_winograd_wgrad_gemm: z = s*xis + xi, Mw[slab + s][xi] (K x C) = Y[xi][:, range] @ V[xi][:, range]^T
        out = off_m + slab * xis * K * C
        for s_ in range(splits):
            lo, hi = s_ * t_chunk, min(Tp, (s_ + 1) * t_chunk)
            assert lo < hi, "an empty split"
            for xi in range(xis):
                Yz = ws[off_y + xi * KT: off_y + (xi + 1) * KT].reshape(K, Tp)[:, lo:hi]
                Vz = ws[xi * CT: (xi + 1) * CT].reshape(C, Tp)[:, lo:hi]
                assert not np.isnan(Yz).any() and not np.isnan(Vz).any(), "GEMM reads an unwritten Y / V element"
                z = s_ * xis + xi
                ws[out + z * K * C: out + (z + 1) * K * C] = (Yz @ Vz.T).ravel()

    # conv_winograd(4)_wgrad_output: thread idx = k*C + c, every chunk's slabs summed in order
    KC = K * C
    idx = np.arange(KC)
    m = np.stack([ws[off_m + xi * KC + idx] for xi in range(xis)])
    for s in range(1, wp.slabs):
        m = m + np.stack([ws[off_m + (s * xis + xi) * KC + idx] for xi in range(xis)])
    assert not np.isnan(m).any(), "output transform reads an unwritten partial"
    if xis == 36:
        r = wp.geo.r
        gt = SIX[wp.tile, r][0].T.astype(dt)
        return np.einsum("ra,abi,sb->irs", gt, m.reshape(6, 6, -1), gt).astype(dt).reshape(K, C, r, r)
    return output_weights(m.reshape(4, 4, -1), K, C, dt)


def emulate_dy(ws, off_y, g, dy, dt, t_all, t, tp, tq, n):
    """conv_winograd_dy: grid (ceil(Tp/256), K), thread (k, t): Y (16, K, Tp) at ws[off_y:], zero rows past T."""
    K, Tp, T = g.C_out, g.Tp, g.T
    KT = K * Tp
    dyflat = dy.astype(dt).ravel()
    P, Q = g.Ho, g.Wo
    for k in range(K):
        for xi in range(16):
            ws[off_y + xi * KT + k * Tp + t_all[t_all >= T]] = 0
        plane = (n * K + k) * P * Q
        e = np.empty((2, 2, t.size), dt)
        for i, j in itertools.product(range(2), range(2)):
            p, q = 2 * tp + i, 2 * tq + j
            ok = (p < P) & (q < Q)
            e[i, j] = np.where(ok, dyflat[np.where(ok, plane + p * Q + q, 0)], 0)
        f = np.stack([e[0], e[0] + e[1], e[0] - e[1], -e[1]])
        for a in range(4):
            vals = (f[a, 0], f[a, 0] + f[a, 1], f[a, 0] - f[a, 1], -f[a, 1])
            for j in range(4):
                ws[off_y + (a * 4 + j) * KT + k * Tp + t] = vals[j]


def output_weights(m, K, C, dt):
    """conv_winograd_wgrad_output's transform of the summed partials m (4, 4, K*C): dW (K, C, 3, 3)."""
    half = dt(0.5)
    hh = half * (m[1] + m[2])
    f = np.stack([m[0] + hh, half * (m[1] - m[2]), hh + m[3]])      # (3, 4, KC)
    dW = np.empty((K * C, 3, 3), dt)
    for r in range(3):
        h = half * (f[r, 1] + f[r, 2])
        dW[:, r, 0] = f[r, 0] + h
        dW[:, r, 1] = half * (f[r, 1] - f[r, 2])
        dW[:, r, 2] = h + f[r, 3]
    return dW.reshape(K, C, 3, 3)


CASES = [  # (N, C, H, W, K, padding)
    (1, 1, 5, 7, 1, 1), (2, 3, 5, 7, 5, 0), (1, 5, 7, 9, 6, 2), (2, 3, 6, 6, 4, 1), (1, 2, 1, 7, 3, 1),
    (2, 5, 2, 3, 3, (2, 1)), (1, 3, 9, 4, 2, (1, 0)), (3, 2, 3, 3, 5, 0), (1, 6, 8, 5, 7, (0, 2)),
]


# 5x5 kernels (F(2x2, 5x5) / F(5x5, 2x2)): (N, C, H, W, K, padding), padding up to 4, 1-row and 1-column outputs
CASES5 = [
    (1, 1, 5, 7, 1, 2), (2, 3, 6, 9, 5, 0), (1, 5, 7, 9, 6, 4), (2, 3, 5, 5, 4, (3, 1)), (1, 2, 1, 7, 3, (2, 2)),
    (3, 2, 9, 5, 5, (4, 0)), (2, 4, 14, 14, 3, 2),
]


def _draw(rng, case, r: int):
    """One case's random float32 x, W (K, C, r, r), b and dy (drawn in that order), its (ph, pw), and the
    float64 forward y (no bias) and backward function of the direct convolution."""
    N, C, H, Wd, K, pad = case
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    x = rng.standard_normal((N, C, H, Wd)).astype(np.float32)
    W = rng.standard_normal((K, C, r, r)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    y, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (ph, pw))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    return x, W, b, dy, (ph, pw), y, back


def check_5x5(rng) -> float:
    """Every CASES5 case through the F(2x2, 5x5) passes and the F(5x5, 2x2) weight gradient: exact (1e-12) in
    float64, and in float32 within the bound of tests/custom_impl/gpu/test_conv_winograd_5x5.py (S_abs the
    pipeline on absolute values and matrices, L = 36 C + 10 / 36 K + 10 / 36 T + 10). Returns the worst
    float32 error / tolerance."""
    bt, g5, at5 = np.abs(BT4), np.abs(G25), np.abs(AT25)
    worst = 0.0
    for case in CASES5:
        N, C, H, Wd, K, _ = case
        x, W, b, dy, (ph, pw), y_ref, back = _draw(rng, case, 5)
        x64, W64, dy64 = x.astype(np.float64), W.astype(np.float64), dy.astype(np.float64)
        assert np.allclose(winograd_ref(x64, W64, (ph, pw), BT4, G25, AT25), y_ref, rtol=1e-12, atol=1e-12)
        y_ref += b[:, None, None]
        dx_ref, dW_ref = back(dy64)[:2]
        assert np.allclose(wgrad_ref(dy64, x64, (ph, pw), BT4, G25, AT25), dW_ref, rtol=1e-12, atol=1e-12)
        prob = checked_problem(x.shape, W.shape, 1, (ph, pw), "emulate")
        fp, bp = forward_pass(prob), backward_pass(prob)
        assert (fp.m, fp.r, fp.xis, bp.ph, bp.pw) == (2, 5, 36, 4 - ph, 4 - pw)
        W_flip = np.ascontiguousarray(W64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        # NOTE: the flip flag is explicit: fp and bp are one memoised object where the pass is symmetric
        for ps, flip, inp, bias, ref, s_abs, L in (
                (fp, False, x, b, y_ref, winograd_ref(np.abs(x64), np.abs(W64), (ph, pw), bt, g5, at5)
                 + np.abs(b)[:, None, None], 36 * C + 10),
                (bp, True, dy, None, dx_ref, winograd_ref(np.abs(dy64), np.abs(W_flip), (4 - ph, 4 - pw), bt, g5, at5),
                 36 * K + 10)):
            err = np.abs(emulate_pass4(ps, inp, W, bias, flip, np.float64) - ref).max()
            assert err < 1e-12 * max(1, np.abs(ref).max()), err
            out = emulate_pass4(ps, inp, W, bias, flip, np.float32)
            tol = 4 * np.sqrt(L) * EPS32 * s_abs + 4 * EPS32 * np.abs(ref) + 1e-30
            worst = max(worst, (np.abs(out.astype(np.float64) - ref) / tol).max())
        dW_abs = wgrad_ref(np.abs(dy64), np.abs(x64), (ph, pw), bt, g5, at5)
        for splits, images in itertools.product((None, 1, 3), (None, 1, 2)):
            wp = WeightsPass(prob, 132, splits=splits, images=images)
            assert wp.xis == 36 and (wp.geo.m, wp.geo.r) == (2, 5)
            err = np.abs(emulate_weights(wp, dy, x, np.float64) - dW_ref).max()
            assert err < 1e-12 * max(1, np.abs(dW_ref).max()), (splits, images, err)
            out = emulate_weights(wp, dy, x, np.float32)
            T = sum(g.T for _, g, _, _, _ in wp.chunks)
            tol = 4 * np.sqrt(36 * T + 10) * EPS32 * dW_abs + 4 * EPS32 * np.abs(dW_ref) + 1e-30
            worst = max(worst, (np.abs(out.astype(np.float64) - dW_ref) / tol).max())
        print(f"5x5 N{N} C{C} {H}x{Wd} K{K} pad {(ph, pw)}: y {y_ref.shape}, dx, dW exact in float64")
    assert worst < 1, worst
    return worst


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    for case in CASES:
        N, C, H, Wd, K, _ = case
        x, W, b, dy, (ph, pw), y_ref, back = _draw(rng, case, 3)
        x64, W64 = x.astype(np.float64), W.astype(np.float64)
        y_ref += b[:, None, None]
        dx_ref = back(dy.astype(np.float64))[0]
        prob = checked_problem(x.shape, W.shape, 1, (ph, pw), "emulate")
        fp, bp = forward_pass(prob), backward_pass(prob)
        y = emulate_pass(fp, x, W, b, False, np.float64)
        dx = emulate_pass(bp, dy, W, None, True, np.float64)
        ey, edx = np.abs(y - y_ref).max(), np.abs(dx - dx_ref).max()
        assert ey < 1e-12 * max(1, np.abs(y_ref).max()) and edx < 1e-12 * max(1, np.abs(dx_ref).max()), (ey, edx)
        # F(4x4, 3x3): exact in float64 too, forward and backward-data
        fp4, bp4 = forward_pass(prob, tile=4), backward_pass(prob, tile=4)
        y4 = emulate_pass4(fp4, x, W, b, False, np.float64)
        dx4 = emulate_pass4(bp4, dy, W, None, True, np.float64)
        ey4, edx4 = np.abs(y4 - y_ref).max(), np.abs(dx4 - dx_ref).max()
        assert ey4 < 1e-12 * max(1, np.abs(y_ref).max()) and edx4 < 1e-12 * max(1, np.abs(dx_ref).max()), (ey4, edx4)
        # float32: the margin left by the test's tolerance (4 sqrt(L) eps S_abs + 4 eps |ref|)
        W_flip = np.ascontiguousarray(W64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        for out, ref, s_abs, L in (
                (emulate_pass(fp, x, W, b, False, np.float32), y_ref,
                 winograd_abs(x64, W64, (ph, pw)) + np.abs(b)[:, None, None], 16 * C + 10),
                (emulate_pass(bp, dy, W, None, True, np.float32), dx_ref,
                 winograd_abs(dy.astype(np.float64), W_flip, (2 - ph, 2 - pw)), 16 * K + 10),
                (emulate_pass4(fp4, x, W, b, False, np.float32), y_ref,
                 winograd_abs(x64, W64, (ph, pw)) + np.abs(b)[:, None, None], 16 * C + 10),
                (emulate_pass4(bp4, dy, W, None, True, np.float32), dx_ref,
                 winograd_abs(dy.astype(np.float64), W_flip, (2 - ph, 2 - pw)), 16 * K + 10)):
            tol = 4 * np.sqrt(L) * EPS32 * s_abs + 4 * EPS32 * np.abs(ref) + 1e-30
            ratio = (np.abs(out.astype(np.float64) - ref) / tol).max()
            assert ratio < 1, ratio
            worst = max(worst, ratio)
        # backward-weights, with the planned split and with splits 1 and 3 (t_chunk multiple of BK), over the
        # whole batch and in chunks of one image (and of two: a short last chunk where N is odd)
        dW_ref = back(dy.astype(np.float64))[1]
        dW_abs = wgrad_abs(dy.astype(np.float64), x64, (ph, pw))
        edw = 0.0
        for splits, images, tile in itertools.product((None, 1, 3), (None, 1, 2), (2, 4)):
            wp = WeightsPass(prob, 132, splits=splits, images=images, tile=tile)
            dW = emulate_weights(wp, dy, x, np.float64)
            edw = max(edw, np.abs(dW - dW_ref).max())
            assert edw < 1e-12 * max(1, np.abs(dW_ref).max()), (splits, images, tile, edw)
            out = emulate_weights(wp, dy, x, np.float32)
            T = sum(g.T for _, g, _, _, _ in wp.chunks)
            tol = 4 * np.sqrt(16 * T + 10) * EPS32 * dW_abs + 4 * EPS32 * np.abs(dW_ref) + 1e-30
            ratio = (np.abs(out.astype(np.float64) - dW_ref) / tol).max()
            assert ratio < 1, ratio
            worst = max(worst, ratio)
        print(f"N{N} C{C} {H}x{Wd} K{K} pad {(ph, pw)}: y {y.shape} err {ey:.1e}, dx {dx.shape} err {edx:.1e}, "
              f"dW err {edw:.1e}")
    print(f"all {len(CASES)} cases match the direct convolution (float64); float32 worst err/tol {worst:.3f}")
    worst5 = check_5x5(rng)
    print(f"all {len(CASES5)} 5x5 cases match (float64); float32 worst err/tol {worst5:.3f}")


if __name__ == "__main__":
    main()
