"""A line-by-line Python transliteration of lab/conv/winograd_wgrad_fused.cu's index arithmetic, checked against
the direct weight gradient in float64 on the CPU (no GPU needed):

    python3 lab/conv/winograd_wgrad_fused_emulate.py

Each block runs one at a time; the phases between its barriers (staging into shared memory, the dy and x
transforms, the warps' sums) run for every thread in turn, with the kernel's shared-memory offsets, strides
and zero-fill conditions, so a wrong index shows as a wrong or NaN weight. The cases cover two k blocks and
two c blocks (K = 66, C = 33), odd P and Q (ragged tiles), padding 0..2, chunks of 1 or 2 tile rows, and
a row of 9 tiles on the FW_TQ = 12 layout. The
matrices are lab/conv/winograd_emulate.py's (conv_winograd.cu's). It checks the arithmetic, not CUDA's
execution (cp.async ordering, barriers), which only a GPU run does (lab/conv/winograd_wgrad_fused_probe.py).
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from lab.conv.winograd_emulate import AT25, BT4, G25  # noqa: E402

A25, GT25 = AT25.T, G25.T


FW_K, FW_C, THREADS = 64, 32, 384   # k and c per block, threads per block (the kernel's defines)
assert THREADS == 2 * FW_C * 6 and 2 * FW_K * 2 <= THREADS   # the kernel's static_asserts


class Layout:
    """The kernel's shared-memory layout for FW_TQ tiles a row: offsets and strides in floats."""

    def __init__(self, fw_tq: int = 8):
        self.tq = fw_tq
        self.xld, self.dld = 2 * fw_tq + 4, 2 * fw_tq          # FW_XLD, FW_DLD
        self.xc, self.dk = 6 * self.xld + 1, 2 * self.dld + 1   # FW_XC, FW_DK
        self.xs, self.ds = FW_C * self.xc, FW_K * self.dk       # FW_XS, FW_DS
        self.ys = 2 * self.xs + 2 * self.ds                     # Ys after the two staging buffers of x and dy
        self.vs = self.ys + 12 * fw_tq * FW_K
        self.size = self.vs + 12 * fw_tq * FW_C


def stage(smem, lay, x, dy, shape, row, xo, do):
    """fw_stage: tile row ``row`` = (n, tp) of x and dy into smem at xo (x) and do (dy), zeros outside; thread
    tid copies half (tid % 2) of staged row tid // 2."""
    N, C, H, W, K, P, Q, pad, tP, k0, c0 = shape
    n, tp = divmod(row, tP)
    for tid in range(THREADS):
        h = tid & 1
        c, i = divmod(tid >> 1, 6)
        cc, ih = c0 + c, 2 * tp - pad + i
        row_ok = cc < C and 0 <= ih < H
        j0 = h * (lay.xld // 2)
        src = ((n * C + (cc if row_ok else 0)) * H + (ih if row_ok else 0)) * W
        dst = xo + c * lay.xc + i * lay.xld + j0
        for jj in range(lay.xld // 2):
            iw = j0 + jj - pad
            ok = row_ok and 0 <= iw < W
            smem[dst + jj] = x[src + iw] if ok else 0.0
        if tid < 2 * FW_K * 2:
            k, a = divmod(tid >> 1, 2)
            kk, p = k0 + k, 2 * tp + a
            row_ok = kk < K and p < P
            q0 = h * (lay.dld // 2)
            src = ((n * K + (kk if row_ok else 0)) * P + (p if row_ok else 0)) * Q
            dst = do + k * lay.dk + a * lay.dld + q0
            for qq in range(lay.dld // 2):
                ok = row_ok and q0 + qq < Q
                smem[dst + qq] = dy[src + q0 + qq] if ok else 0.0


def transforms(smem, lay, g, tQ, xs, ds):
    """The block's dy and x transforms of one tile row into Ys and Vs (its group's rows a = 2g, 2g + 1)."""
    for item in range(tQ * FW_K):
        t, k = divmod(item, FW_K)
        e0 = ds + k * lay.dk + 2 * t
        e1 = e0 + lay.dld
        for al in range(2):
            a = 2 * g + al
            u = np.array([A25[a, 0] * smem[e0] + A25[a, 1] * smem[e1],
                          A25[a, 0] * smem[e0 + 1] + A25[a, 1] * smem[e1 + 1]])
            for b, v in enumerate(A25 @ u):
                smem[lay.ys + ((al * 6 + b) * lay.tq + t) * FW_K + k] = v
    for item in range(tQ * FW_C):
        t, c = divmod(item, FW_C)
        d = xs + c * lay.xc + 2 * t
        for al in range(2):
            a = 2 * g + al
            rv = np.array([sum(BT4[a, i] * smem[d + i * lay.xld + j] for i in range(6)) for j in range(6)])
            for b, v in enumerate(BT4 @ rv):
                smem[lay.vs + ((al * 6 + b) * lay.tq + t) * FW_C + c] = v


def run(x, dy, pad, chunk, fw_tq=8):
    """The kernels fw_wgrad_partial, fw_reduce and fw_output on float64 arrays x (N, C, H, W), dy (N, K, P, Q),
    ``chunk`` tile rows a block: dW (K, C, 5, 5)."""
    lay = Layout(fw_tq)
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1:]
    xf, dyf = x.ravel(), dy.ravel()
    tP, tQ = (P + 1) // 2, (Q + 1) // 2
    assert tQ <= fw_tq
    kblocks, cblocks = -(-K // FW_K), -(-C // FW_C)
    rows = N * tP
    chunks = -(-rows // chunk)
    part = np.full(chunks * 36 * K * C, np.nan)
    for bx in range(chunks):
        for g in range(3):
            for bz in range(kblocks * cblocks):
                k0, c0 = (bz % kblocks) * FW_K, (bz // kblocks) * FW_C
                shape = (N, C, H, W, K, P, Q, pad, tP, k0, c0)
                smem = np.full(lay.size, np.nan)
                acc = np.zeros((THREADS, 8, 8))
                for r in range(bx * chunk, min(rows, (bx + 1) * chunk)):
                    cur = (r - bx * chunk) & 1
                    xs, ds = cur * lay.xs, 2 * lay.xs + cur * lay.ds
                    stage(smem, lay, xf, dyf, shape, r, xs, ds)
                    transforms(smem, lay, g, tQ, xs, ds)
                    for tid in range(THREADS):   # the warps' products
                        warp, lane = divmod(tid, 32)
                        kq, cq = divmod(lane, 4)
                        yrow = lay.ys + warp * lay.tq * FW_K + kq * 8
                        vrow = lay.vs + warp * lay.tq * FW_C + cq * 8
                        for t in range(tQ):
                            acc[tid] += np.outer(smem[yrow + t * FW_K:yrow + t * FW_K + 8],
                                                 smem[vrow + t * FW_C:vrow + t * FW_C + 8])
                for tid in range(THREADS):
                    warp, lane = divmod(tid, 32)
                    kq, cq = divmod(lane, 4)
                    base = ((bx * 3 + g) * 12 + warp) * K * C
                    for i in range(8):
                        for j in range(8):
                            k, c = k0 + kq * 8 + i, c0 + cq * 8 + j
                            if k < K and c < C:
                                part[base + k * C + c] = acc[tid, i, j]
    KC = K * C
    mt = np.zeros(36 * KC)
    for idx in range(36 * KC):   # fw_reduce
        xi, kc = divmod(idx, KC)
        g, xl = divmod(xi, 12)
        mt[idx] = sum(part[((ch * 3 + g) * 12 + xl) * KC + kc] for ch in range(chunks))
    dW = np.zeros(KC * 25)
    for kc in range(KC):         # fw_output
        tmp = np.array([GT25 @ np.array([mt[(6 * a + b) * KC + kc] for b in range(6)]) for a in range(6)])
        for s5 in range(5):
            for r5, v in enumerate(GT25 @ tmp[:, s5]):
                dW[kc * 25 + r5 * 5 + s5] = v
    return dW.reshape(K, C, 5, 5)


def direct(x, dy, pad):
    """dW[k, c, r, s] = sum over n, p, q of dy[n, k, p, q] x[n, c, p - pad + r, q - pad + s] (float64)."""
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1:]
    xp = np.zeros((N, C, H + 2 * pad + 8, W + 2 * pad + 8))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    return np.stack([np.stack([np.einsum("nkpq,ncpq->kc", dy, xp[:, :, r:r + P, s:s + Q]) for s in range(5)], -1)
                     for r in range(5)], -2)


def main() -> int:
    rng = np.random.default_rng(3)
    worst = 0.0
    # (N, C, H, W, K, pad, tile rows a chunk, FW_TQ): the last a wider layer on the probe's FW_TQ = 12 build
    cases = [(2, 3, 9, 7, 5, 2, 2, 8), (1, 33, 6, 5, 66, 1, 2, 8), (3, 2, 5, 9, 2, 0, 1, 8), (1, 2, 6, 18, 3, 2, 2, 12)]
    for N, C, H, W, K, pad, chunk, fw_tq in cases:
        P, Q = H + 2 * pad - 4, W + 2 * pad - 4
        x = rng.standard_normal((N, C, H, W))
        dy = rng.standard_normal((N, K, P, Q))
        got, want = run(x, dy, pad, chunk, fw_tq), direct(x, dy, pad)
        err = float(np.abs(got - want).max() / np.abs(want).max()) if not np.isnan(got).any() else float("inf")
        worst = max(worst, err)
        print(f"N{N} C{C} {H}x{W} K{K} pad {pad} (P, Q = {P}, {Q}), {chunk} tile rows a chunk, FW_TQ {fw_tq}: "
              f"rel err {err:.1e}")
    # float64 throughout: only a wrong index (or an unwritten weight) gives more than rounding
    ok = worst < 1e-12
    print("ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
