"""2-D convolution (PyTorch's cross-correlation) on the CPU: im2col with stride tricks + one GEMM.

Letters: N batch, C in-channels, K out-channels, H,W input, P,Q output, R,S kernel, (sh, sw) stride,
(ph, pw) padding; P = (H + 2 ph - R) // sh + 1, Q = (W + 2 pw - S) // sw + 1.
Parameter gradients are written (=), never accumulated.

The columns are laid out (C*R*S, P*Q*N): row (c, r, s), column (p, q, n) holds xp[n, c, p*sh + r, q*sw + s]
(xp: the zero-padded input, held internally as (C, Hp, Wp, N) with the batch innermost). Then
    forward           y   = W2 @ cols                      (K, C*R*S) @ (C*R*S, P*Q*N)
    backward-weights  dW2 = dY2 @ cols^T                   (K, P*Q*N) @ (P*Q*N, C*R*S)
    backward-data     dcols = W2^T @ dY2, then col2im      (C*R*S, K) @ (K, P*Q*N)
with W2 = W.reshape(K, C*R*S) and dY2 = dy as (K, P*Q*N).
NOTE: the batch goes innermost because then, at stride 1, the (q, n) axes of a window merge into one
contiguous run of Q*N floats on both sides of the im2col and col2im copies (an (N, C, H, W) order leaves
runs of only Q floats, and NumPy's per-run overhead then dominates those copies).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def out_size(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    """(P, Q) for an (h, w) input."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def pad_input(x: np.ndarray, padding) -> np.ndarray:
    """(N, C, H, W) -> zero-padded, batch-innermost copy (C, H + 2 ph, W + 2 pw, N)."""
    ph, pw = padding
    n, c, h, w = x.shape
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)   # (C, Hp, Wp, N)
    xp[:, ph:ph + h, pw:pw + w, :] = x.transpose(1, 2, 3, 0)
    return xp


def im2col(xp: np.ndarray, kernel, stride, pq, out: np.ndarray | None = None) -> np.ndarray:
    """Padded input (C, Hp, Wp, N) -> columns (C*R*S, P*Q*N), one copy through a strided view.

    ``out``: an optional float32 C-contiguous (C*R*S, P*Q*N) buffer to write into (reused between calls).
    """
    c, _, _, n = xp.shape
    (r, s), (sh, sw), (p, q) = kernel, stride, pq
    s_c, s_h, s_w, s_n = xp.strides
    windows = as_strided(xp, shape=(c, r, s, p, q, n),
                         strides=(s_c, s_h, s_w, s_h * sh, s_w * sw, s_n))   # (C, R, S, P, Q, N), a view
    if out is None:
        out = np.empty((c * r * s, p * q * n), dtype=xp.dtype)              # (C*R*S, P*Q*N)
    np.copyto(out.reshape(c, r, s, p, q, n), windows)
    return out


def col2im(dcols: np.ndarray, x_shape, kernel, stride, padding, pq) -> np.ndarray:
    """Adjoint of pad_input + im2col: columns (C*R*S, P*Q*N) -> input gradient (N, C, H, W), summing overlaps."""
    n, c, h, w = x_shape
    (r, s), (sh, sw), (ph, pw), (p, q) = kernel, stride, padding, pq
    d6 = dcols.reshape(c, r, s, p, q, n)
    dxp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=dcols.dtype)   # (C, Hp, Wp, N)
    # NOTE: one vectorised add per kernel offset (R*S of them, e.g. 25 for 5x5); each adds a whole
    # (C, P, Q, N) slab, so the loop never runs over samples or pixels. Overlapping windows (stride < kernel)
    # sum correctly because the offsets are added one after another.
    for i in range(r):
        for j in range(s):
            dxp[:, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw, :] += d6[:, i, j]
    return np.ascontiguousarray(dxp[:, ph:ph + h, pw:pw + w, :].transpose(3, 0, 1, 2))   # (N, C, H, W)


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride=(1, 1), padding=(0, 0),
                   cols_out: np.ndarray | None = None):
    """y[n, k, p, q] = b[k] + sum_{c,r,s} W[k, c, r, s] * xp[n, c, p*sh + r, q*sw + s].

    x (N, C, H, W), W (K, C, R, S), b (K,) or None -> (y (N, K, P, Q), cols (C*R*S, P*Q*N) for backward).
    ``cols_out``: optional buffer for the columns (see ``im2col``).

    >>> y, _ = conv2d_forward(np.ones((2, 3, 7, 9), np.float32), np.ones((4, 3, 3, 5), np.float32), None,
    ...                       stride=(2, 1), padding=(1, 2))
    >>> y.shape
    (2, 4, 4, 9)
    """
    n, c, h, w = x.shape
    k, _, r, s = W.shape
    p, q = out_size(h, w, (r, s), stride, padding)
    cols = im2col(pad_input(x, padding), (r, s), stride, (p, q), cols_out)   # (C*R*S, P*Q*N)
    y2 = W.reshape(k, c * r * s) @ cols                              # (K, P*Q*N)
    y = np.empty((n, k, p, q), dtype=y2.dtype)                       # (N, K, P, Q)
    y_view = y2.reshape(k, p, q, n).transpose(3, 0, 1, 2)
    if b is not None:    # the bias add rides along with the reordering copy: one pass over y
        np.add(y_view, b[:, None, None], out=y)
    else:
        np.copyto(y, y_view)
    return y, cols


def conv2d_backward(dy: np.ndarray, cols: np.ndarray, x_shape, W: np.ndarray, stride=(1, 1), padding=(0, 0),
                    need_dx: bool = True, dcols_out: np.ndarray | None = None):
    """Gradients of conv2d_forward. dy (N, K, P, Q), cols from forward, W (K, C, R, S).

    dW[k, c, r, s] = sum_{n,p,q} dy[n, k, p, q] xp[n, c, p*sh + r, q*sw + s];  db[k] = sum_{n,p,q} dy[n, k, p, q];
    dx = col2im(W2^T dY2) (N, C, H, W), or None when ``need_dx`` is False. Returns (dx, dW, db).
    ``dcols_out``: optional (C*R*S, P*Q*N) buffer for W2^T dY2, reused between calls.
    """
    n, k, p, q = dy.shape
    dy2 = np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).reshape(k, p * q * n)   # (K, P*Q*N)
    dW = (dy2 @ cols.T).reshape(W.shape)                                          # (K, C, R, S)
    db = dy2.sum(axis=1)                                                          # (K,)
    dx = _backward_data(dy2, W, x_shape, stride, padding, (p, q), dcols_out) if need_dx else None
    return dx, dW, db


def conv2d_backward_data(dy: np.ndarray, W: np.ndarray, x_shape, stride=(1, 1), padding=(0, 0),
                         dcols_out: np.ndarray | None = None) -> np.ndarray:
    """dx alone (no dW, db, no saved columns needed): dx = col2im(W2^T dY2).  dy (N, K, P, Q) -> (N, C, H, W)."""
    n, k, p, q = dy.shape
    dy2 = np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).reshape(k, p * q * n)   # (K, P*Q*N)
    return _backward_data(dy2, W, x_shape, stride, padding, (p, q), dcols_out)


def _backward_data(dy2, W, x_shape, stride, padding, pq, dcols_out):
    k, c, r, s = W.shape
    dcols = np.matmul(W.reshape(k, c * r * s).T, dy2, out=dcols_out)            # (C*R*S, P*Q*N)
    return col2im(dcols, x_shape, (r, s), stride, padding, pq)                   # (N, C, H, W)


class Conv2d:
    """A conv2d layer holding its parameters, their gradients and what forward saved (the columns).

    The two (C*R*S, P*Q*N) buffers (columns, their gradient) are kept between steps while N stays the
    same: they are the largest arrays of a CNN step, and allocating them afresh costs page faults.
    """

    def __init__(self, layer, need_dx: bool = True):
        self.layer = layer
        self.need_dx = need_dx
        self.params = {name: None for name in layer.param_shapes()}   # "weight" (K, C, R, S), "bias" (K,)
        self.grads = {}
        self.saved = None
        self._buffers: dict[str, np.ndarray] = {}

    def _buffer(self, name: str, shape) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape, dtype=np.float32)
        return buf

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        L = self.layer
        n, p, q = x.shape[0], L.out_shape[1], L.out_shape[2]
        crs = L.in_shape[0] * L.kernel_size[0] * L.kernel_size[1]
        cols_out = self._buffer("cols", (crs, n * p * q)) if train else None
        y, cols = conv2d_forward(x, self.params["weight"], self.params.get("bias"), L.stride, L.padding, cols_out)
        self.saved = (cols, x.shape) if train else None
        return y

    def backward(self, dy: np.ndarray):
        cols, x_shape = self.saved
        L = self.layer
        dcols_out = self._buffer("dcols", cols.shape) if self.need_dx else None
        dx, dW, db = conv2d_backward(dy, cols, x_shape, self.params["weight"], L.stride, L.padding, self.need_dx,
                                     dcols_out)
        self.grads = {"weight": dW, "bias": db} if "bias" in self.params else {"weight": dW}
        self.saved = None
        return dx
