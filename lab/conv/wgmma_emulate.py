"""A NumPy replay of the wgmma convolution's index math (kernels/gemm_wgmma.cu: conv_wgmma_prep's six
operand modes and the NCHW epilogue of gemm_wgmma), for checking it without a GPU.

Each function mirrors the kernel's integer formulas element for element (vectorised over index arrays),
in float64 and without rounding, so a phase composed from them must equal a float64 convolution to
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


def prep(mode: int, src: np.ndarray, rows: int, red: int, kp: int, dims) -> np.ndarray:
    """conv_wgmma_prep: the (rows, kp) operand of ``mode`` gathered from ``src`` (flat float64)."""
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    src = np.asarray(src, dtype=np.float64).ravel()
    r = np.arange(rows)[:, None]
    k = np.arange(kp)[None, :]
    r, k = np.broadcast_arrays(r, k)
    out = np.zeros((rows, kp))
    inside = k < red
    RS = R * S
    if mode in (0, 5):                          # W[k_out][c][rs]
        ko = r if mode == 0 else k // RS
        c = k // RS if mode == 0 else r
        idx = (ko * C + c) * RS + k % RS
        ok = inside
    elif mode in (1, 2):                        # x at (n p q, c r s)
        a, b = (r, k) if mode == 1 else (k, r)
        n, pq = a // (P * Q), a % (P * Q)
        c, rs = b // RS, b % RS
        h = (pq // Q) * sh - ph + rs // S
        w = (pq % Q) * sw - pw + rs % S
        ok = inside & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        idx = ((n * C + c) * H + h) * W + w
    elif mode == 3:                             # dy[n][k_out][pq]
        n, pq = k // (P * Q), k % (P * Q)
        idx = (n * K + r) * (P * Q) + pq
        ok = inside
    elif mode == 4:                             # dy at (n h w, k_out r s)
        n, hw = r // (H * W), r % (H * W)
        ko, rs = k // RS, k % RS
        ph_ = hw // W + ph - rs // S
        pw_ = hw % W + pw - rs % S
        # NOTE: C's % of a negative is negative, Python's is not: the kernel tests >= 0 first, so do we
        ok = inside & (ph_ >= 0) & (pw_ >= 0)
        ok &= (np.where(ok, ph_, 0) % sh == 0) & (np.where(ok, pw_, 0) % sw == 0)
        ok &= (ph_ // sh < P) & (pw_ // sw < Q)
        idx = ((n * K + ko) * P + ph_ // sh) * Q + pw_ // sw
    else:
        raise ValueError(f"unknown mode {mode}")
    out[ok] = src[idx[ok]]
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


def conv_phase(phase: str, a_src, b_src, dims, out_shape, bias=None, bk: int = 32) -> np.ndarray:
    """One phase as conv/wgmma.py runs it: both preps, the GEMM A' B'^T in float64, the epilogue."""
    from custom_impl.gpu.conv.wgmma import gemm_shape

    M, Ncols, red, a_mode, b_mode, pq = gemm_shape(dims, phase)
    kp = math.ceil(red / bk) * bk
    A = prep(a_mode, a_src, M, red, kp, dims)
    B = prep(b_mode, b_src, Ncols, red, kp, dims)
    return store(A @ B.T, int(np.prod(out_shape)), pq, bias).reshape(out_shape)


def check(geom, seed: int = 0) -> float:
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
    got = {"y": conv_phase("forward", x, Wt, dims, y_ref.shape, b),
           "dx": conv_phase("backward_data", dy, Wt, dims, x.shape),
           "dW": conv_phase("backward_weights", dy, x, dims, Wt.shape, bk=64)}
    ref = {"y": y_ref + b[None, :, None, None], "dx": dx_ref, "dW": dW_ref}
    return max(float(np.max(np.abs(got[n] - ref[n])) / max(1.0, float(np.max(np.abs(ref[n]))))) for n in ref)


if __name__ == "__main__":
    for g in [(2, 3, 11, 13, 7, 3, 3, (1, 1), (1, 1)), (3, 5, 11, 13, 7, 3, 3, (2, 2), (1, 1)),
              (1, 4, 9, 10, 5, 2, 2, (3, 3), (0, 0)), (2, 6, 12, 9, 9, 3, 1, (2, 1), (1, 0))]:
        print(g, f"{check(g):.2e}")
