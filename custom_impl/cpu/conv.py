"""2-D convolution (PyTorch's cross-correlation) on the CPU: im2col with stride tricks + one GEMM.

Letters: N batch, C in-channels, K out-channels, H,W input, P,Q output, R,S kernel, (sh, sw) stride,
(ph, pw) padding; P = (H + 2 ph - R) // sh + 1, Q = (W + 2 pw - S) // sw + 1.
Parameter gradients are written (=), never accumulated.

The columns are laid out (C*R*S, N*P*Q): row (c, r, s), column (n, p, q) holds xp[n, c, p*sh + r, q*sw + s]
(xp: the zero-padded input). Then
    forward           y   = W2 @ cols                      (K, C*R*S) @ (C*R*S, N*P*Q)
    backward-weights  dW2 = dY2 @ cols^T                   (K, N*P*Q) @ (N*P*Q, C*R*S)
    backward-data     dcols = W2^T @ dY2, then col2im      (C*R*S, K) @ (K, N*P*Q)
with W2 = W.reshape(K, C*R*S) and dY2 = dy as (K, N*P*Q). In this layout the innermost axis of every
copy (q) walks the image rows, so im2col and col2im read and write memory mostly contiguously.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def out_size(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    """(P, Q) for an (h, w) input."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def pad_input(x: np.ndarray, padding) -> np.ndarray:
    """Zero-pad the two spatial axes: (N, C, H, W) -> (N, C, H + 2 ph, W + 2 pw); no copy when ph = pw = 0."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)   # (N, C, H+2ph, W+2pw)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def im2col(xp: np.ndarray, kernel, stride, pq) -> np.ndarray:
    """Padded input (N, C, Hp, Wp) -> columns (C*R*S, N*P*Q), one copy through a strided view."""
    n, c = xp.shape[:2]
    (r, s), (sh, sw), (p, q) = kernel, stride, pq
    s_n, s_c, s_h, s_w = xp.strides
    windows = as_strided(xp, shape=(c, r, s, n, p, q),
                         strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))   # (C, R, S, N, P, Q), a view
    return np.ascontiguousarray(windows).reshape(c * r * s, n * p * q)      # (C*R*S, N*P*Q)


def col2im(dcols: np.ndarray, x_shape, kernel, stride, padding, pq) -> np.ndarray:
    """Adjoint of im2col: columns (C*R*S, N*P*Q) -> input gradient (N, C, H, W), summing overlaps."""
    n, c, h, w = x_shape
    (r, s), (sh, sw), (ph, pw), (p, q) = kernel, stride, padding, pq
    d6 = dcols.reshape(c, r, s, n, p, q)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)   # (N, C, Hp, Wp)
    # NOTE: one vectorised add per kernel offset (R*S of them, e.g. 25 for 5x5); each adds a whole
    # (N, C, P, Q) slab, so the loop never runs over samples or pixels. Overlapping windows (stride < kernel)
    # sum correctly because the offsets are added one after another.
    for i in range(r):
        for j in range(s):
            dxp[:, :, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw] += d6[:, i, j].transpose(1, 0, 2, 3)
    if ph == 0 and pw == 0:
        return dxp
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride=(1, 1), padding=(0, 0)):
    """y[n, k, p, q] = b[k] + sum_{c,r,s} W[k, c, r, s] * xp[n, c, p*sh + r, q*sw + s].

    x (N, C, H, W), W (K, C, R, S), b (K,) or None -> (y (N, K, P, Q), cols (C*R*S, N*P*Q) for backward).

    >>> y, _ = conv2d_forward(np.ones((2, 3, 7, 9), np.float32), np.ones((4, 3, 3, 5), np.float32), None,
    ...                       stride=(2, 1), padding=(1, 2))
    >>> y.shape
    (2, 4, 4, 9)
    """
    n, c, h, w = x.shape
    k, _, r, s = W.shape
    p, q = out_size(h, w, (r, s), stride, padding)
    cols = im2col(pad_input(x, padding), (r, s), stride, (p, q))   # (C*R*S, N*P*Q)
    y2 = W.reshape(k, c * r * s) @ cols                              # (K, N*P*Q)
    if b is not None:
        y2 += b[:, None]
    y = np.ascontiguousarray(y2.reshape(k, n, p, q).transpose(1, 0, 2, 3))   # (N, K, P, Q)
    return y, cols


def conv2d_backward(dy: np.ndarray, cols: np.ndarray, x_shape, W: np.ndarray, stride=(1, 1), padding=(0, 0),
                    need_dx: bool = True):
    """Gradients of conv2d_forward. dy (N, K, P, Q), cols from forward, W (K, C, R, S).

    dW[k, c, r, s] = sum_{n,p,q} dy[n, k, p, q] xp[n, c, p*sh + r, q*sw + s];  db[k] = sum_{n,p,q} dy[n, k, p, q];
    dx = col2im(W2^T dY2) (N, C, H, W), or None when ``need_dx`` is False. Returns (dx, dW, db).
    """
    n, k, p, q = dy.shape
    _, c, r, s = W.shape
    dy2 = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(k, n * p * q)   # (K, N*P*Q)
    dW = (dy2 @ cols.T).reshape(W.shape)                                          # (K, C, R, S)
    db = dy2.sum(axis=1)                                                          # (K,)
    dx = None
    if need_dx:
        dcols = W.reshape(k, c * r * s).T @ dy2                                   # (C*R*S, N*P*Q)
        dx = col2im(dcols, x_shape, (r, s), stride, padding, (p, q))             # (N, C, H, W)
    return dx, dW, db


class Conv2d:
    """A conv2d layer holding its parameters, their gradients and what forward saved (the columns)."""

    def __init__(self, layer, need_dx: bool = True):
        self.layer = layer
        self.need_dx = need_dx
        self.params = {name: None for name in layer.param_shapes()}   # "weight" (K, C, R, S), "bias" (K,)
        self.grads = {}
        self.saved = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        L = self.layer
        y, cols = conv2d_forward(x, self.params["weight"], self.params.get("bias"), L.stride, L.padding)
        self.saved = (cols, x.shape) if train else None
        return y

    def backward(self, dy: np.ndarray):
        cols, x_shape = self.saved
        L = self.layer
        dx, dW, db = conv2d_backward(dy, cols, x_shape, self.params["weight"], L.stride, L.padding, self.need_dx)
        self.grads = {"weight": dW, "bias": db} if "bias" in self.params else {"weight": dW}
        self.saved = None
        return dx
