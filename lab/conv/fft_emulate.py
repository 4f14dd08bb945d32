"""The "fft" backward-data (custom_impl/gpu/conv/fft.py, kernels/conv_fft.cu) emulated in NumPy: the same
plan, tile windows, workspace layouts (Wh (K, C, B), E (T, K, B), X (T, C, B)) and read-out offsets, with
np.fft in place of the kernels' transforms, checked against a direct float64 backward-data. Needs no GPU.

    python3 lab/conv/fft_emulate.py          # every case below: max error relative to max |dx|

What it checks: the tiling (window origins, zero-upsampling by the stride, padding, ragged last tiles),
the bin order (kh-major half spectrum), and that no circular wrap-around reaches a tile that is read.
"""
from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from custom_impl.gpu.conv.fft import plan  # noqa: E402  (needs no CuPy)
from custom_impl.gpu.conv.geometry import conv_dims  # noqa: E402

CASES = [   # x shape, W shape, stride, padding
    ((2, 8, 41, 70), (12, 8, 21, 11), (2, 1), (10, 5)),     # DeepSpeech 2 conv2, narrower
    ((3, 9, 29, 47), (10, 9, 5, 10), (2, 2), (0, 0)),       # 5x10 stride 2, odd sizes
    ((2, 8, 33, 35), (8, 8, 7, 7), (1, 1), (3, 3)),         # 7x7 stride 1
    ((1, 8, 20, 150), (9, 8, 9, 9), (3, 2), (4, 1)),        # strides 3 and 2, uneven padding
    ((9, 20, 40, 50), (19, 20, 7, 7), (1, 1), (3, 3)),      # bin GEMM: 18 rows, 2 column tiles, 3 k chunks
]


def direct_backward_data(dy, W, x_shape, stride, padding):
    """dx of the forward y[n,k,p,q] = sum W[k,c,r,s] x[n,c,p*sh-ph+r,q*sw-pw+s], in float64."""
    N, C, H, Wd = x_shape
    K, _, R, S = W.shape
    sh, sw = stride
    ph, pw = padding
    P, Q = dy.shape[2:]
    dxp = np.zeros((N, C, H + 2 * ph + sh, Wd + 2 * pw + sw))
    for r in range(R):
        for s in range(S):
            contrib = np.einsum("nkpq,kc->ncpq", dy, W[:, :, r, s])
            dxp[:, :, r:r + (P - 1) * sh + 1:sh, s:s + (Q - 1) * sw + 1:sw] += contrib
    return dxp[:, :, ph:ph + H, pw:pw + Wd]


def emulate(dy, W, x_shape, stride, padding, images=None):
    """dx by the "fft" plan's steps and layouts (float64)."""
    N, C, H, Wd = x_shape
    K, _, R, S = W.shape
    dims = conv_dims(x_shape, W.shape, stride, padding)
    p = plan(dims)
    assert p is not None, dims
    sh, sw = stride
    ph, pw = padding
    P, Q = dy.shape[2:]
    lh, lw, th, tw = p.lh, p.lw, p.th, p.tw
    # 1. filter: W[k, c] at the origin of an LH x LW tile
    wpad = np.zeros((K, C, lh, lw))
    wpad[:, :, :R, :S] = W
    Wh = np.fft.rfft2(wpad).reshape(K, C, p.bins)
    # the upsampled dy, u[i, j] (zeros between the strided samples)
    u = np.zeros((N, K, (P - 1) * sh + 1, (Q - 1) * sw + 1))
    u[:, :, ::sh, ::sw] = dy
    dx = np.full((N, C, H, Wd), np.nan)
    images = images or p.images
    for n0 in range(0, N, images):
        n = min(images, N - n0)
        E = np.zeros((n * p.tiles, K, p.bins), complex)
        for t in range(n * p.tiles):
            img, tile = divmod(t, p.tiles)
            h0, w0 = (tile // p.tiles_w) * th, (tile % p.tiles_w) * tw
            # 2. e[i, j] = u[h0 + ph - (R-1) + i, w0 + pw - (S-1) + j], zero outside u
            e = np.zeros((K, lh, lw))
            i0, j0 = h0 + ph - (R - 1), w0 + pw - (S - 1)
            for i in range(lh):
                for j in range(lw):
                    y, xx = i0 + i, j0 + j
                    if 0 <= y < u.shape[2] and 0 <= xx < u.shape[3]:
                        e[:, i, j] = u[n0 + img, :, y, xx]
            E[t] = np.fft.rfft2(e).reshape(K, p.bins)
        # 3. per bin: X[t, c, f] = sum_k E[t, k, f] Wh[k, c, f]
        X = np.einsum("tkf,kcf->tcf", E, Wh)
        # 4. inverse, read at (R-1+a, S-1+b)
        for t in range(n * p.tiles):
            img, tile = divmod(t, p.tiles)
            h0, w0 = (tile // p.tiles_w) * th, (tile % p.tiles_w) * tw
            full = np.fft.irfft2(X[t].reshape(C, lh, lw // 2 + 1), s=(lh, lw))
            a, b = min(th, H - h0), min(tw, Wd - w0)
            dx[n0 + img, :, h0:h0 + a, w0:w0 + b] = full[:, R - 1:R - 1 + a, S - 1:S - 1 + b]
    return dx


def main() -> int:
    rng = np.random.default_rng(5)
    worst = 0.0
    for x_shape, w_shape, stride, padding in CASES:
        dims = conv_dims(x_shape, w_shape, stride, padding)
        W = rng.standard_normal(w_shape)
        dy = rng.standard_normal((x_shape[0], w_shape[0], dims.P, dims.Q))
        ref = direct_backward_data(dy, W, x_shape, stride, padding)
        for images in (None, 1):
            got = emulate(dy, W, x_shape, stride, padding, images)
            err = np.abs(got - ref).max() / np.abs(ref).max()
            worst = max(worst, err)
            p = plan(dims)
            print(f"{x_shape} {w_shape} stride {stride} pad {padding}: {p.lh}x{p.lw} tiles {p.tiles_h}x{p.tiles_w}, "
                  f"images {images or p.images}: max error / max |dx| = {err:.1e}")
    print(f"worst {worst:.1e}")
    return 0 if worst < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
