"""NumPy emulation of the index math of kernels/conv_smallc.cu, on tiny shapes, against a float64 reference.

Each kernel is replayed block by block and thread by thread (the inner FMA loops vectorised over the
thread's own registers), with the launch plan of custom_impl/gpu/conv_smallc.py. Shared memory and the
workspace start NaN-filled and outputs NaN-filled, so a read of something never staged or an element never
written shows up as NaN. Runs on the CPU, no CuPy:

    python3 dev/conv_smallc_emulate.py [--quick]
"""
from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from custom_impl.gpu.conv import _dims  # noqa: E402
from custom_impl.gpu.conv_smallc import KT, TW, U, weights_plan  # noqa: E402
from test_gpu_conv import conv_ref  # noqa: E402


def emulate_backward_weights(dy, x, dims, sms):
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    plan = weights_plan(dims, sms)
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
    dW = np.full(n_out, np.nan)
    for bi in range(-(-n_out // 32)):   # conv_smallc_reduce
        part = np.zeros((8, 32))
        for warp in range(8):
            z0, z1 = grid * warp // 8, grid * (warp + 1) // 8
            for lane in range(32):
                i = bi * 32 + lane
                if i < n_out:
                    part[warp, lane] = sum(ws[z * n_out + i] for z in range(z0, z1))
        for lane in range(32):
            i = bi * 32 + lane
            if i < n_out:
                dW[i] = part[:, lane].sum()
    return dW.reshape(K, C, R, S), plan


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
]


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
        dx = emulate_backward_data(dy, Wt, dims)
        err_x = np.abs(dx - dx_ref).max() / max(np.abs(dx_ref).max(), 1e-30)
        for sms in (1, 2, 132):
            dW, plan = emulate_backward_weights(dy, x, dims, sms)
            err_w = np.abs(dW - dW_ref).max() / np.abs(dW_ref).max()
            assert err_w < 1e-12, (case, sms, err_w)
            worst = max(worst, err_w)
        assert err_x < 1e-12, (case, err_x)
        worst = max(worst, err_x)
        print(f"ok {case}  plan(sms=132)={tuple(plan)}  rel err dx {err_x:.1e} dW {err_w:.1e}")
    print(f"all cases ok; worst relative error {worst:.1e}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
