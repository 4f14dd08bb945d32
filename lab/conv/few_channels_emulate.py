"""NumPy emulation of the index math of kernels/conv_few_channels.cu, on tiny shapes, against a float64
reference.

Each kernel is replayed block by block and thread by thread (the inner FMA loops vectorised over the
thread's own registers), with the launch plan of custom_impl/gpu/conv/few_channels.py. Shared memory and the
workspace start NaN-filled and outputs NaN-filled, so a read of something never staged or an element never
written shows up as NaN. Runs on the CPU, no CuPy:

    python3 lab/conv/few_channels_emulate.py [--quick]
"""
from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conv_reference import conv_ref  # noqa: E402
from custom_impl.gpu.conv import conv_dims as _dims  # noqa: E402
from custom_impl.gpu.conv.few_channels import (BANDS_SMEM_BYTES, BANDS_THREADS, FK, FU,  # noqa: E402
                                               FWD_THREADS, KT, REDUCE_BANDS_THREADS, TW, U, bands_plan,
                                               weights_plan)


def emulate_reduce(ws, n_out, grid, warps):
    """conv_few_channels_reduce_rows / _reduce_bands: block bi sums elements bi*32 + lane of the grid
    partials; warp w adds
    partials z in [grid*w/warps, grid*(w+1)/warps) in order, then the warps' sums are added in order."""
    out = np.full(n_out, np.nan)
    for bi in range(-(-n_out // 32)):
        part = np.zeros((warps, 32))
        for warp in range(warps):
            z0, z1 = grid * warp // warps, grid * (warp + 1) // warps
            for lane in range(32):
                i = bi * 32 + lane
                if i < n_out:
                    part[warp, lane] = sum(ws[z * n_out + i] for z in range(z0, z1))
        for lane in range(32):
            i = bi * 32 + lane
            if i < n_out:
                out[i] = part[:, lane].sum()
    return out


def emulate_backward_weights(dy, x, dims, sms):
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    plan = weights_plan(dims, sms, "rows")
    assert plan is not None
    kc, xld, gstride, G, threads, smem_bytes, grid = plan
    assert smem_bytes <= 48 * 1024 and threads <= 384
    CR, CRS = C * R, C * R * S
    T = (kc // KT) * CR
    assert G == threads // T and threads == G * T
    Qp = -(-Q // U) * U
    xcols = (Q - 1) * sw + S
    items = N * P
    groups = grid * G
    base, rem = divmod(items, groups)
    iters = base + (1 if rem > 0 else 0)
    ws = np.full(grid * K * CRS, np.nan)
    dyf, xf = dy.ravel(), x.ravel()
    for b in range(grid):
        smem = np.full(smem_bytes // 4, np.nan)
        for k0 in range(0, K, kc):
            acc = np.zeros((G, T, KT, S))
            for it in range(iters):
                for g in range(G):
                    gg = b * G + g
                    i0 = gg * base + min(gg, rem)
                    cnt = base + (1 if gg < rem else 0)
                    if it >= cnt:
                        continue
                    item = i0 + it
                    n, p = divmod(item, P)
                    ds0 = g * gstride
                    xs0 = ds0 + kc * Qp
                    assert xs0 + CR * xld <= smem.size and (ds0 % 4) == 0
                    for i in range(kc * Qp):          # every thread tl's stripe of the loop, together
                        kk, q = divmod(i, Qp)
                        k = k0 + kk
                        off = ((n * K * P + p) * Q) + k * P * Q + q
                        smem[ds0 + i] = dyf[off] if (k < K and q < Q) else 0.0
                    for i in range(CR * xld):
                        rr, col = divmod(i, xld)
                        c, r = divmod(rr, R)
                        ih, iw = p * sh - ph + r, col - pw
                        ok = col < xcols and 0 <= ih < H and 0 <= iw < W
                        smem[xs0 + i] = xf[((n * C + c) * H + ih) * W + iw] if ok else 0.0
                # __syncthreads(); then each active thread computes
                for g in range(G):
                    gg = b * G + g
                    cnt = base + (1 if gg < rem else 0)
                    if it >= cnt:
                        continue
                    ds0 = g * gstride
                    xs0 = ds0 + kc * Qp
                    for tl in range(T):
                        kq, cr = divmod(tl, CR)
                        xr = xs0 + cr * xld
                        dr = ds0 + kq * KT * Qp
                        for q0 in range(0, Qp, U):
                            idx = xr + q0 * sw + np.arange((U - 1) * sw + S)
                            assert idx.max() < xs0 + CR * xld
                            xv = smem[idx]
                            for kk in range(KT):
                                assert (dr + kk * Qp + q0) % 4 == 0  # float4 alignment
                                d = smem[dr + kk * Qp + q0: dr + kk * Qp + q0 + U]
                                for u in range(U):
                                    acc[g, tl, kk] += d[u] * xv[u * sw: u * sw + S]
                # __syncthreads()
            # group sums in order into red = smem[0 : kc*CRS]
            red = smem  # aliases group 0's buffers, as in the kernel
            for g in range(G):
                for tl in range(T):
                    kq, cr = divmod(tl, CR)
                    for kk in range(KT):
                        idx = (kq * KT + kk) * CRS + cr * S + np.arange(S)
                        red[idx] = acc[g, tl, kk] if g == 0 else red[idx] + acc[g, tl, kk]
            kvalid = min(kc, K - k0)
            out0 = b * K * CRS + k0 * CRS
            ws[out0: out0 + kvalid * CRS] = red[: kvalid * CRS]
    assert np.isfinite(ws).all(), "workspace element never written or NaN read from shared memory"
    n_out = K * CRS
    if grid == 1:
        return ws[:n_out].reshape(K, C, R, S), plan
    return emulate_reduce(ws, n_out, grid, 8).reshape(K, C, R, S), plan   # conv_few_channels_reduce_rows: 8 warps


def emulate_backward_weights_bands(dy, x, dims, sms, plan=None, vec=None):
    """conv_few_channels_wgrad_bands + conv_few_channels_reduce_bands, thread by thread. Each thread's staging walk
    is replayed with the kernel's incremental (row, unit) stepping; a buffer is NaN-filled before it is
    staged (stale data of two items ago must never be read), every element may be staged once, and the
    FMAs use the kernel's sliding x window. Returns (dW, plan)."""
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    if plan is None:
        plan = weights_plan(dims, sms, "bands")
    assert plan is not None
    kc, pb, qs, xld, stage, T, smem_bytes, gridx, kchunks = plan
    if vec is None:
        vec = Q % 4 == 0  # the wrapper also asks for a 16-byte aligned dy
    assert T <= BANDS_THREADS and smem_bytes <= BANDS_SMEM_BYTES and kc % KT == 0
    assert stage % 4 == 0 and qs % 4 == 0 and (qs // 4) % 2 == 1 and xld % 2 == 1
    CR, CRS = C * R, C * R * S
    assert T == (kc // KT) * CR * pb
    XR = (pb - 1) * sh + R
    Qp = -(-Q // U) * U
    xcols = (Qp - 1) * sw + S
    assert xcols <= xld and Qp <= qs
    nb = -(-P // pb)
    items = N * nb
    XV = (U - 1) * sw + S
    XK = max(S - sw, 0)
    ds_floats = kc * pb * qs
    assert ds_floats + C * XR * xld <= stage and smem_bytes // 4 >= max(2 * stage, pb * kc * CRS)
    assert kchunks == -(-K // kc)
    dyf, xf = dy.ravel(), x.ravel()
    ws = np.full(gridx * K * CRS, np.nan)

    # Per-thread constants, as the kernel computes them.
    t = np.arange(T)
    cr, pp, kq = t % CR, (t // CR) % pb, t // (CR * pb)
    c, r = cr // R, cr % R
    upr = Q // 4 if vec else Qp
    d_j, d_row = T % upr, T // upr
    d_pp, d_kk = d_row % pb, d_row // pb
    j_0, pp_0, kk_0 = t % upr, (t // upr) % pb, (t // upr) // pb
    e_col, e_row = T % xcols, T // xcols
    e_xi, e_xc = e_row % XR, e_row // XR
    col_0, xi_0, xc_0 = t % xcols, (t // xcols) % XR, (t // xcols) // XR

    for by in range(kchunks):
        k0 = by * kc
        kvalid = min(kc, K - k0)
        assert kvalid > 0
        for bx in range(gridx):
            smem = np.full(smem_bytes // 4, np.nan)
            base, rem = divmod(items, gridx)
            i0 = bx * base + min(bx, rem)
            cnt = base + (1 if bx < rem else 0)

            def stage_item(buf, n, band):
                p0 = band * pb
                ppvalid = min(pb, P - p0)
                assert 0 < ppvalid and n < N
                smem[buf: buf + stage] = np.nan
                written = np.zeros(stage, bool)
                dyn = (n * K + k0) * P * Q + p0 * Q
                for tt in range(T):
                    kk, ps, j = kk_0[tt], pp_0[tt], j_0[tt]
                    while kk < kvalid:
                        if ps < ppvalid:
                            dst = (kk * pb + ps) * qs
                            src = dyn + (kk * P + ps) * Q
                            if vec:
                                d0, s0 = dst + 4 * j, src + 4 * j
                                assert d0 % 4 == 0 and s0 % 4 == 0 and 4 * j + 4 <= Q and d0 + 4 <= ds_floats
                                assert not written[d0: d0 + 4].any(), "dy staged twice"
                                smem[buf + d0: buf + d0 + 4] = dyf[s0: s0 + 4]
                                written[d0: d0 + 4] = True
                            else:
                                d0 = dst + j
                                assert j < Qp and d0 < ds_floats and not written[d0], "dy staged twice"
                                smem[buf + d0] = dyf[src + j] if j < Q else 0.0
                                written[d0] = True
                        j += d_j
                        jc = 1 if j >= upr else 0
                        j -= jc * upr
                        ps += d_pp + jc
                        pc = 1 if ps >= pb else 0
                        ps -= pc * pb
                        kk += d_kk + pc
                        assert 0 <= j < upr and 0 <= ps < pb
                    xs = ds_floats
                    xn = n * C * H * W
                    ih0 = p0 * sh - ph
                    xc, xi, col = xc_0[tt], xi_0[tt], col_0[tt]
                    while xc < C:
                        ih, iw = ih0 + xi, col - pw
                        ok = 0 <= ih < H and 0 <= iw < W
                        d0 = xs + (xc * XR + xi) * xld + col
                        assert d0 < stage and not written[d0], "x staged twice"
                        smem[buf + d0] = xf[xn + (xc * H + ih) * W + iw] if ok else 0.0
                        written[d0] = True
                        col += e_col
                        cc = 1 if col >= xcols else 0
                        col -= cc * xcols
                        xi += e_xi + cc
                        ic = 1 if xi >= XR else 0
                        xi -= ic * XR
                        xc += e_xc + ic
                        assert 0 <= col < xcols and 0 <= xi < XR
                # every dy row of the valid (k, pp) and every x row must be complete
                for kk in range(kvalid):
                    for ps in range(ppvalid):
                        assert written[(kk * pb + ps) * qs: (kk * pb + ps) * qs + Qp].all(), "dy row not staged"
                for row in range(C * XR):
                    assert written[ds_floats + row * xld: ds_floats + row * xld + xcols].all(), "x row not staged"

            acc = np.zeros((T, KT, S))
            n, band = divmod(i0, nb)
            if cnt > 0:
                stage_item(0, n, band)
            for it in range(cnt):
                n_next, band_next = (n + 1, 0) if band + 1 == nb else (n, band + 1)
                if it + 1 < cnt:
                    stage_item(((it + 1) & 1) * stage, n_next, band_next)  # issued before this item's FMAs
                buf = (it & 1) * stage
                for tt in range(T):
                    if not (kq[tt] * KT < kvalid and pp[tt] < P - band * pb):
                        continue
                    xr = buf + ds_floats + (c[tt] * XR + pp[tt] * sh + r[tt]) * xld
                    dr = buf + (kq[tt] * KT * pb + pp[tt]) * qs
                    xv = np.full(XV, np.nan)
                    xv[:XK] = smem[xr: xr + XK]
                    for q0 in range(0, Qp, U):
                        idx = xr + q0 * sw + np.arange(XK, XV)
                        assert idx.max() < buf + ds_floats + (c[tt] * XR + pp[tt] * sh + r[tt]) * xld + xcols
                        xv[XK:] = smem[idx]
                        rows = dr + np.arange(KT) * pb * qs + q0
                        assert (rows % 4 == 0).all() and rows.max() + U <= buf + ds_floats
                        dv = np.stack([smem[a: a + U] for a in rows])           # (KT, U)
                        win = xv[np.arange(U)[:, None] * sw + np.arange(S)[None, :]]  # (U, S)
                        with np.errstate(invalid="ignore"):
                            acc[tt] += dv @ win
                        xv[:XK] = xv[U * sw: U * sw + XK]
                n, band = n_next, band_next
            # rows' sums in pp order
            red = np.full(smem_bytes // 4, np.nan)
            red[:] = smem
            for tt in range(T):
                for kk in range(KT):
                    i = (pp[tt] * kc + kq[tt] * KT + kk) * CRS + cr[tt] * S
                    red[i: i + S] = acc[tt, kk]
            out0 = bx * K * CRS + k0 * CRS
            plane = kc * CRS
            for i in range(kvalid * CRS):
                v = red[i]
                for q in range(1, pb):
                    v += red[q * plane + i]
                ws[out0 + i] = v
    assert np.isfinite(ws).all(), "workspace element never written or NaN read from shared memory"
    n_out = K * CRS
    if gridx == 1:
        return ws[:n_out].reshape(K, C, R, S), plan
    return emulate_reduce(ws, n_out, gridx, REDUCE_BANDS_THREADS // 32).reshape(K, C, R, S), plan  # _reduce_bands


def emulate_backward_data(dy, Wt, dims):
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    ST = -(-S // sw)
    dx = np.full(N * C * H * W, np.nan)
    w_s = Wt.ravel()
    dyf = dy.ravel()
    RS = R * S
    cols = N * -(-H // sh) * -(-(-(-W // sw)) // TW)
    nblocks = max(1, -(-cols // 256))
    for z in range(sh * sw):
        th, tw = divmod(z, sw)
        h0 = ((th - ph) % sh + sh) % sh
        w0 = ((tw - pw) % sw + sw) % sw
        Hh = (H - h0 + sh - 1) // sh if h0 < H else 0
        Wh = (W - w0 + sw - 1) // sw if w0 < W else 0
        Rt = (R - th + sh - 1) // sh if th < R else 0
        St = (S - tw + sw - 1) // sw if tw < S else 0
        assert St <= ST
        Wb = (Wh + TW - 1) // TW
        for j in range(nblocks * 256):
            if j >= N * Hh * Wb:
                continue
            wb = j % Wb
            t = j // Wb
            hh, n = t % Hh, t // Hh
            ww = wb * TW
            hq = (h0 + ph - th) // sh + hh
            wq = (w0 + pw - tw) // sw + ww
            assert (h0 + ph - th) % sh == 0 and (w0 + pw - tw) % sw == 0
            acc = np.zeros((C, TW))
            for k in range(K):
                for rp in range(Rt):
                    p = hq - rp
                    if not 0 <= p < P:
                        continue
                    r = th + rp * sh
                    v = np.zeros(ST + TW - 1)
                    for m in range(ST + TW - 1):
                        q = wq + m - (ST - 1)
                        if m >= ST - St and 0 <= q < Q:
                            v[m] = dyf[((n * K + k) * P + p) * Q + q]
                    for sp in range(St):
                        s = tw + sp * sw
                        for c in range(C):
                            wv = w_s[k * C * RS + c * RS + r * S + s]
                            acc[c] += wv * v[np.arange(TW) - sp + ST - 1]
            h = h0 + hh * sh
            for c in range(C):
                for i in range(TW):
                    if ww + i < Wh:
                        off = ((n * C + c) * H + h) * W + w0 + (ww + i) * sw
                        assert np.isnan(dx[off]), "pixel written twice"
                        dx[off] = acc[c, i]
    assert np.isfinite(dx).all(), f"{np.isnan(dx).sum()} dx elements never written"
    return dx.reshape(N, C, H, W)


def emulate_forward(x, Wt, b, dims, vec):
    """conv_few_channels_fwd: every thread of the grid (blocks of FWD_THREADS, grid.y = k groups of FK), its
    FK x FU outputs from the x window it loads per (c, r) and W from the block's shared-memory slice."""
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    y = np.full(N * K * P * Q, np.nan)
    xf = x.ravel()
    wf = Wt.ravel()
    CRS = C * R * S
    Qb = -(-Q // FU)
    threads = N * P * Qb
    nx = -(-threads // FWD_THREADS) * FWD_THREADS
    XV = (FU - 1) * sw + S
    for ky in range(-(-K // FK)):
        k0 = ky * FK
        kn = min(FK, K - k0)
        w_s = np.array([wf[k0 * CRS + i] if i < kn * CRS else 0.0 for i in range(FK * CRS)])
        for j in range(nx):
            if j >= threads:
                continue
            qb, t = j % Qb, j // Qb
            p, n = t % P, t // P
            q0 = qb * FU
            iw0 = q0 * sw - pw
            acc = np.zeros((FK, FU))
            for c in range(C):
                for r in range(R):
                    ih = p * sh - ph + r
                    if not 0 <= ih < H:
                        continue
                    xv = np.array([xf[((n * C + c) * H + ih) * W + iw0 + i] if 0 <= iw0 + i < W else 0.0
                                   for i in range(XV)])
                    for kk in range(FK):
                        for s_ in range(S):
                            acc[kk] += w_s[kk * CRS + (c * R + r) * S + s_] * xv[np.arange(FU) * sw + s_]
            full = vec and q0 + FU <= Q
            for kk in range(kn):
                bias = 0.0 if b is None else b[k0 + kk]
                for u in range(FU):
                    if full or q0 + u < Q:
                        assert q0 + u < Q, "float4 store past the row"
                        off = ((n * K + k0 + kk) * P + p) * Q + q0 + u
                        assert np.isnan(y[off]), "output written twice"
                        y[off] = acc[kk, u] + bias
    assert np.isfinite(y).all(), f"{np.isnan(y).sum()} y elements never written"
    return y.reshape(N, K, P, Q)


CASES = [  # (N, C, H, W, K, R, S, stride, padding)
    (1, 1, 5, 7, 1, 1, 1, (1, 1), (0, 0)),
    (3, 2, 9, 11, 5, 2, 3, (1, 1), (1, 0)),
    (2, 3, 13, 17, 5, 3, 3, (2, 2), (1, 1)),
    (1, 5, 9, 11, 6, 5, 5, (2, 1), (2, 2)),
    (2, 8, 9, 11, 3, 7, 7, (3, 3), (3, 3)),
    (3, 3, 15, 14, 9, 2, 2, (3, 3), (0, 0)),      # stride > kernel: empty phases
    (2, 1, 11, 12, 7, 3, 2, (3, 2), (2, 1)),
    (1, 3, 23, 23, 6, 7, 7, (2, 2), (3, 3)),      # stem-like
    (7, 1, 8, 8, 32, 5, 5, (1, 1), (2, 2)),       # LeNet-like, G > 1
    (2, 3, 10, 10, 64, 3, 3, (1, 1), (1, 1)),     # kc chunks? (K*CRS within limits)
    (2, 8, 9, 9, 64, 7, 7, (2, 1), (3, 3)),       # several k-chunks
    (3, 3, 8, 8, 32, 3, 3, (1, 1), (1, 1)),       # CIFAR conv1-like: Q % 4 == 0 (16-byte dy copies)
    (5, 1, 7, 7, 32, 5, 5, (1, 1), (2, 2)),       # LeNet conv1-like, Q = 7
    (2, 1, 9, 8, 7, 2, 1, (1, 3), (0, 0)),        # S < sw (no x columns kept between steps)
    (2, 8, 6, 7, 40, 7, 3, (1, 1), (3, 1)),       # (K/4)*C*R = 560 > 512 threads: the bands split k (grid.y = 2)
]


def _bands_variants(dims):
    """Plans besides weights_plan's: one k per chunk group (many chunks), 1-row and tall bands, 1-3 blocks."""
    N, C, H, W, K, R, S, P, Q = dims[:9]
    out = []
    for kc, pb, grid in ((4, 1, 3), (4, min(P, 3), 2), (-(-K // 4) * 4, P, 1), (8, 2, 5)):
        if (kc // 4) * C * R * pb <= BANDS_THREADS:
            plan = bands_plan(dims, kc, pb, grid)
            if plan.smem <= BANDS_SMEM_BYTES:
                out.append(plan)
    return out


def main(quick=False):
    rng = np.random.default_rng(0)
    worst = 0.0
    for case in (CASES[:6] if quick else CASES):
        N, C, H, W, K, R, S, stride, padding = case
        dims = _dims((N, C, H, W), (K, C, R, S), stride, padding)
        x = rng.standard_normal((N, C, H, W))
        Wt = rng.standard_normal((K, C, R, S))
        _, back = conv_ref(x, Wt, stride, padding)
        dy = rng.standard_normal((N, K, dims[7], dims[8]))
        dx_ref, dW_ref, _ = back(dy)
        b = rng.standard_normal(K)
        y_ref = conv_ref(x, Wt, stride, padding)[0] + b[:, None, None]
        for vec, bias in ((False, b), (dims[8] % 4 == 0, None)):
            y = emulate_forward(x, Wt, bias, dims, vec)
            ref = y_ref if bias is not None else y_ref - b[:, None, None]
            err_y = np.abs(y - ref).max() / np.abs(ref).max()
            assert err_y < 1e-12, (case, vec, err_y)
            worst = max(worst, err_y)
        dx = emulate_backward_data(dy, Wt, dims)
        err_x = np.abs(dx - dx_ref).max() / max(np.abs(dx_ref).max(), 1e-30)
        scale = np.abs(dW_ref).max()
        for sms in (1, 2, 132):
            dW, plan = emulate_backward_weights(dy, x, dims, sms)
            err_w = np.abs(dW - dW_ref).max() / scale
            assert err_w < 1e-12, (case, sms, err_w)
            worst = max(worst, err_w)
        runs = [(weights_plan(dims, sms, "bands"), vec) for sms in (1, 132) for vec in (True, False)]
        runs += [(p, vec) for p in ([] if quick else _bands_variants(dims)) for vec in (True, False)]
        for plan2, vec in runs:
            if vec and dims[8] % 4:
                continue
            dW2, plan2 = emulate_backward_weights_bands(dy, x, dims, None, plan=plan2, vec=vec)
            err_w2 = np.abs(dW2 - dW_ref).max() / scale
            assert err_w2 < 1e-12, (case, plan2, vec, err_w2)
            worst = max(worst, err_w2)
        assert err_x < 1e-12, (case, err_x)
        worst = max(worst, err_x)
        print(f"ok {case}  rows plan(sms=132)={tuple(plan)}  bands {len(runs)} plans, "
              f"e.g. {tuple(weights_plan(dims))}  "
              f"rel err dx {err_x:.1e} dW {err_w:.1e}")
    print(f"all cases ok; worst relative error {worst:.1e}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
