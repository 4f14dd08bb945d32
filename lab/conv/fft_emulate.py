"""The "fft" forward, backward-data and weight gradient (custom_impl/gpu/conv/fft.py, kernels/conv_fft.cu)
emulated in NumPy: the same plans, tile windows, workspace layouts (Wh (ci, co, B), E (T, ci, B), X (T, co, B);
the weight gradient's Ex (T, C, B), D (K, T, B), dWh (K, C, B)) and read-out offsets, with np.fft in place of the kernels' transforms, checked against a direct float64 convolution.
Needs no GPU.

    python3 lab/conv/fft_emulate.py          # every case below, both phases: max error relative to max |out|

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


def direct_forward(x, W, stride, padding):
    """y[n,k,p,q] = sum W[k,c,r,s] x[n,c,p*sh-ph+r,q*sw-pw+s], in float64."""
    N, C, H, Wd = x.shape
    K, _, R, S = W.shape
    sh, sw = stride
    ph, pw = padding
    P, Q = (H + 2 * ph - R) // sh + 1, (Wd + 2 * pw - S) // sw + 1
    xp = np.zeros((N, C, H + 2 * ph + sh, Wd + 2 * pw + sw))
    xp[:, :, ph:ph + H, pw:pw + Wd] = x
    y = np.zeros((N, K, P, Q))
    for r in range(R):
        for s in range(S):
            win = xp[:, :, r:r + (P - 1) * sh + 1:sh, s:s + (Q - 1) * sw + 1:sw]
            y += np.einsum("ncpq,kc->nkpq", win, W[:, :, r, s])
    return y


def _pass(p, src, up, origin, Wh, R, S, out_hw, out_stride, out_shape, images):
    """The kernels' steps on a float64 source: windows of ``src`` upsampled by ``up`` at ``origin`` + tile
    origin, their transforms, the bin products with Wh (ci, co, B), the inverse read at (R-1, S-1), written
    to an array of ``out_shape`` at every ``out_stride``-th point of the tiled ``out_hw``."""
    N, c_in = src.shape[:2]
    c_out = Wh.shape[1]
    u = np.zeros((N, c_in, (src.shape[2] - 1) * up[0] + 1, (src.shape[3] - 1) * up[1] + 1))
    u[:, :, ::up[0], ::up[1]] = src
    out = np.full(out_shape, np.nan)
    Ht, Wt = out_hw
    for n0 in range(0, N, images):
        n = min(images, N - n0)
        E = np.zeros((n * p.tiles, c_in, p.bins), complex)
        for t in range(n * p.tiles):
            img, tile = divmod(t, p.tiles)
            h0, w0 = (tile // p.tiles_w) * p.th, (tile % p.tiles_w) * p.tw
            e = np.zeros((c_in, p.lh, p.lw))
            i0, j0 = h0 + origin[0], w0 + origin[1]
            for i in range(p.lh):
                for j in range(p.lw):
                    y, xx = i0 + i, j0 + j
                    if 0 <= y < u.shape[2] and 0 <= xx < u.shape[3]:
                        e[:, i, j] = u[n0 + img, :, y, xx]
            E[t] = np.fft.rfft2(e).reshape(c_in, p.bins)
        X = np.einsum("tkf,kcf->tcf", E, Wh)
        for t in range(n * p.tiles):
            img, tile = divmod(t, p.tiles)
            h0, w0 = (tile // p.tiles_w) * p.th, (tile % p.tiles_w) * p.tw
            full = np.fft.irfft2(X[t].reshape(c_out, p.lh, p.lw // 2 + 1), s=(p.lh, p.lw))
            for a in range(p.th):
                for b in range(p.tw):
                    h, w = h0 + a, w0 + b
                    if h < Ht and w < Wt and h % out_stride[0] == 0 and w % out_stride[1] == 0:
                        out[n0 + img, :, h // out_stride[0], w // out_stride[1]] = full[:, R - 1 + a, S - 1 + b]
    return out


def _filter(W, p, flip):
    """Wh: W[k, c] (rotated by 180 degrees where ``flip``) at the origin of an LH x LW tile, transformed;
    (K, C, B) for backward-data, (C, K, B) for the forward."""
    K, C, R, S = W.shape
    wpad = np.zeros((K, C, p.lh, p.lw))
    wpad[:, :, :R, :S] = W[:, :, ::-1, ::-1] if flip else W
    Wh = np.fft.rfft2(wpad).reshape(K, C, p.bins)
    return Wh.transpose(1, 0, 2) if flip else Wh


def emulate(dy, W, x_shape, stride, padding, images=None):
    """dx by the "fft" backward-data's steps and layouts (float64)."""
    K, C, R, S = W.shape
    p = plan(conv_dims(x_shape, W.shape, stride, padding), "backward_data")
    origin = (padding[0] - (R - 1), padding[1] - (S - 1))
    return _pass(p, dy, stride, origin, _filter(W, p, False), R, S, x_shape[2:], (1, 1), x_shape, images or p.images)


def emulate_forward(x, W, stride, padding, images=None):
    """y by the "fft" forward's steps and layouts (float64): the stride-1 output z, every stride-th point."""
    K, C, R, S = W.shape
    dims = conv_dims(x.shape, W.shape, stride, padding)
    p = plan(dims, "forward")
    z_hw = ((dims.P - 1) * stride[0] + 1, (dims.Q - 1) * stride[1] + 1)
    return _pass(p, x, (1, 1), (-padding[0], -padding[1]), _filter(W, p, True), R, S, z_hw, stride,
                 (x.shape[0], K, dims.P, dims.Q), images or p.images)


def direct_backward_weights(dy, x, w_shape, stride, padding):
    """dW[k,c,r,s] = sum dy[n,k,p,q] x[n,c,p*sh-ph+r,q*sw-pw+s], in float64."""
    K, C, R, S = w_shape
    sh, sw = stride
    ph, pw = padding
    P, Q = dy.shape[2:]
    xp = np.zeros((x.shape[0], C, x.shape[2] + 2 * ph + sh, x.shape[3] + 2 * pw + sw))
    xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    dW = np.zeros(w_shape)
    for r in range(R):
        for s in range(S):
            win = xp[:, :, r:r + (P - 1) * sh + 1:sh, s:s + (Q - 1) * sw + 1:sw]
            dW[:, :, r, s] = np.einsum("nkpq,ncpq->kc", dy, win)
    return dW


def emulate_weights(dy, x, w_shape, stride, padding):
    """dW by the "fft" weight gradient's steps and layouts (float64): per tile t of the stride-1 grid z, the
    x window's spectrum Ex[t, c] and dy's tile's conjugate spectrum D[k, t]; per bin sum_t D[k, t] Ex[t, c];
    the inverse read at lags (r, s) < (R, S)."""
    K, C, R, S = w_shape
    dims = conv_dims(x.shape, w_shape, stride, padding)
    p = plan(dims, "backward_weights")
    sh, sw = stride
    ph, pw = padding
    N = x.shape[0]
    P, Q = dims.P, dims.Q
    u = np.zeros((N, K, (P - 1) * sh + 1, (Q - 1) * sw + 1))
    u[:, :, ::sh, ::sw] = dy
    Ex = np.zeros((N * p.tiles, C, p.bins), complex)
    D = np.zeros((K, N * p.tiles, p.bins), complex)
    for t in range(N * p.tiles):
        img, tile = divmod(t, p.tiles)
        h0, w0 = (tile // p.tiles_w) * p.th, (tile % p.tiles_w) * p.tw
        ex, ed = np.zeros((C, p.lh, p.lw)), np.zeros((K, p.lh, p.lw))
        for i in range(p.lh):
            for j in range(p.lw):
                y, xx = h0 - ph + i, w0 - pw + j
                if 0 <= y < x.shape[2] and 0 <= xx < x.shape[3]:
                    ex[:, i, j] = x[img, :, y, xx]
                if i < p.th and j < p.tw and h0 + i < u.shape[2] and w0 + j < u.shape[3]:
                    ed[:, i, j] = u[img, :, h0 + i, w0 + j]
        Ex[t] = np.fft.rfft2(ex).reshape(C, p.bins)
        D[:, t] = np.conj(np.fft.rfft2(ed).reshape(K, p.bins))
    dWh = np.einsum("ktf,tcf->kcf", D, Ex)
    full = np.fft.irfft2(dWh.reshape(K, C, p.lh, p.lw // 2 + 1), s=(p.lh, p.lw))
    return full[:, :, :R, :S]


def compared(got, ref, label: str) -> float:
    """max |got - ref| / max |ref|, printed after ``label``; every output must have been written (finite)."""
    assert np.all(np.isfinite(got)), f"{label}: {np.sum(~np.isfinite(got))} outputs unwritten"
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"{label}: max error / max |out| = {err:.1e}")
    return err


def main() -> int:
    rng = np.random.default_rng(5)
    worst = 0.0
    for x_shape, w_shape, stride, padding in CASES:
        dims = conv_dims(x_shape, w_shape, stride, padding)
        W = rng.standard_normal(w_shape)
        dy = rng.standard_normal((x_shape[0], w_shape[0], dims.P, dims.Q))
        x = rng.standard_normal(x_shape)
        refs = {"backward_data": direct_backward_data(dy, W, x_shape, stride, padding),
                "forward": direct_forward(x, W, stride, padding),
                "backward_weights": direct_backward_weights(dy, x, w_shape, stride, padding)}
        for phase, ref in refs.items():
            p = plan(dims, phase)
            for images in ((None,) if phase == "backward_weights" else (None, 1)):
                if phase == "backward_weights":
                    got = emulate_weights(dy, x, w_shape, stride, padding)
                elif phase == "backward_data":
                    got = emulate(dy, W, x_shape, stride, padding, images)
                else:
                    got = emulate_forward(x, W, stride, padding, images)
                worst = max(worst, compared(got, ref, f"{phase} {x_shape} {w_shape} stride {stride} pad {padding}: "
                                                      f"{p.lh}x{p.lw} tiles {p.tiles_h}x{p.tiles_w}, images "
                                                      f"{images or p.images}"))
    print(f"worst {worst:.1e}")
    return 0 if worst < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
