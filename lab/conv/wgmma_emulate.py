"""A NumPy replay of the wgmma convolution's index math (kernels/gemm_wgmma.cu: conv_wgmma_prep's six
operand modes and the NCHW epilogue of gemm_wgmma), for checking it without a GPU.

Each function mirrors the kernel's integer steps (the prep vectorised over a block's threads, its rows
stepped by the same carries), in float64 and without rounding, so a phase composed from them must equal a float64 convolution to
float64 rounding. ``conv_phase`` takes the phase's GEMM shape and operand modes from the real
``custom_impl.gpu.conv.wgmma.gemm_shape``.

    python3 lab/conv/wgmma_emulate.py     # replays a few geometries against tests/conv_reference.py
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _step3(a, b, c, B: int, C: int):
    """The kernel's wg_step3: the next (a, b, c) of a row-major (., B, C) range, c fastest."""
    c += 1
    if c == C:
        c, b = 0, b + 1
        if b == B:
            b, a = 0, a + 1
    return a, b, c


def prep(mode: int, src: np.ndarray, rows: int, red: int, kp: int, dims, rows_per_block: int = 64) -> np.ndarray:
    """conv_wgmma_prep: the (rows, kp) operand of ``mode`` gathered from ``src`` (flat float64), replayed as
    the kernel runs it: every k at once (the threads of a block), each block of ``rows_per_block`` rows
    from its first row's indices, stepped by the same carries."""
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    src = np.asarray(src, dtype=np.float64).ravel()
    out = np.full((rows, kp), np.nan)
    k = np.arange(kp)
    live = k < red
    kk = np.where(live, k, 0)
    RS, PQ, HW = R * S, P * Q, H * W

    def fetch(idx, ok):
        v = np.zeros(kp)
        v[ok] = src[idx[ok]]
        return v

    for r0 in range(0, rows, rows_per_block):
        r1 = min(rows, r0 + rows_per_block)
        if mode in (0, 3, 5):
            if mode == 0:
                idx, step = r0 * red + kk, red
            elif mode == 3:
                idx, step = (kk // PQ * K + r0) * PQ + kk % PQ, PQ
            else:
                idx, step = (kk // RS * C + r0) * RS + kk % RS, RS
            for r in range(r0, r1):
                out[r] = fetch(idx, live)
                idx = idx + step
        elif mode in (1, 2):
            pixel, tap = (r0, kk) if mode == 1 else (kk, r0)
            n, p, q = pixel // PQ, pixel % PQ // Q, pixel % Q
            c, kr, ks = tap // RS, tap % RS // S, tap % S
            for r in range(r0, r1):
                h, w = p * sh - ph + kr, q * sw - pw + ks
                ok = live & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                out[r] = fetch(((n * C + c) * H + h) * W + w, ok)
                if mode == 1:
                    n, p, q = _step3(n, p, q, P, Q)
                else:
                    c, kr, ks = _step3(c, kr, ks, R, S)
        elif mode == 4:
            ko, kr, ks = kk // RS, kk % RS // S, kk % S
            n, h, w = r0 // HW, r0 % HW // W, r0 % W
            for r in range(r0, r1):
                ph_, pw_ = h + ph - kr, w + pw - ks
                pos = live & (ph_ >= 0) & (pw_ >= 0)
                # C's / truncates toward zero; only non-negative values reach it (pos), as in the kernel
                p, q = np.where(pos, ph_, 0) // sh, np.where(pos, pw_, 0) // sw
                ok = pos & (p * sh == ph_) & (q * sw == pw_) & (p < P) & (q < Q)
                out[r] = fetch(((n * K + ko) * P + p) * Q + q, ok)
                n, h, w = _step3(n, h, w, H, W)
        else:
            raise ValueError(f"unknown mode {mode}")
    return out


def store(C: np.ndarray, total: int, pq: int, bias=None) -> np.ndarray:
    """gemm_wgmma's epilogue: element (m, n) of C (M, N) to ((m / pq) N + n) pq + m % pq (+ bias[n])."""
    M, Ncols = C.shape
    m = np.arange(M)[:, None]
    n = np.arange(Ncols)[None, :]
    out = np.full(total, np.nan)
    vals = C + (0 if bias is None else np.asarray(bias, dtype=np.float64)[None, :])
    out[((m // pq) * Ncols + n) * pq + m % pq] = vals
    return out


def conv_phase(phase: str, a_src, b_src, dims, out_shape, bias=None, bk: int = 32,
               rows_per_block: int = 64) -> np.ndarray:
    """One phase as conv/wgmma.py runs it: both preps, the GEMM A' B'^T in float64, the epilogue."""
    from custom_impl.gpu.conv.wgmma import gemm_shape

    M, Ncols, red, a_mode, b_mode, pq = gemm_shape(dims, phase)
    kp = math.ceil(red / bk) * bk
    A = prep(a_mode, a_src, M, red, kp, dims, rows_per_block)
    B = prep(b_mode, b_src, Ncols, red, kp, dims, rows_per_block)
    return store(A @ B.T, int(np.prod(out_shape)), pq, bias).reshape(out_shape)


def check(geom, seed: int = 0, rows_per_block: int = 64) -> float:
    """Largest relative difference of the three phases from tests/conv_reference.py's convolution."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conv_reference import conv_ref

    from custom_impl.gpu.conv import conv_dims

    N, C, H, W, K, R, S, stride, padding = geom
    rng = np.random.default_rng(seed)
    x, Wt, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((K, C, R, S)), rng.standard_normal(K)
    dims = conv_dims(x.shape, Wt.shape, stride, padding)
    y_ref, backward = conv_ref(x, Wt, stride, padding)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dW_ref, _ = backward(dy)
    rpb = rows_per_block
    got = {"y": conv_phase("forward", x, Wt, dims, y_ref.shape, b, rows_per_block=rpb),
           "dx": conv_phase("backward_data", dy, Wt, dims, x.shape, rows_per_block=rpb),
           "dW": conv_phase("backward_weights", dy, x, dims, Wt.shape, bk=64, rows_per_block=rpb)}
    ref = {"y": y_ref + b[None, :, None, None], "dx": dx_ref, "dW": dW_ref}
    return max(float(np.max(np.abs(got[n] - ref[n])) / max(1.0, float(np.max(np.abs(ref[n]))))) for n in ref)


if __name__ == "__main__":
    for g in [(2, 3, 11, 13, 7, 3, 3, (1, 1), (1, 1)), (3, 5, 11, 13, 7, 3, 3, (2, 2), (1, 1)),
              (1, 4, 9, 10, 5, 2, 2, (3, 3), (0, 0)), (2, 6, 12, 9, 9, 3, 1, (2, 1), (1, 0))]:
        print(g, f"{check(g):.2e}")
