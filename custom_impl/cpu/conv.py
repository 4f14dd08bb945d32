"""2-D convolution (PyTorch's cross-correlation) on the CPU: im2col with stride tricks + one GEMM.

Letters: N batch, C in-channels, K out-channels, H,W input, P,Q output, R,S kernel, (sh, sw) stride,
(ph, pw) padding; P = (H + 2 ph - R) // sh + 1, Q = (W + 2 pw - S) // sw + 1.
Parameter gradients are written (=), never accumulated.

The columns are a (C*R*S, L) matrix: row (c, r, s), column l holds xp[n, c, p*sh + r, q*sw + s] for the
output position l = (n, p, q) or l = (p, q, n) (see "Column order" below); xp is the zero-padded input. Then
    forward           y   = W2 @ cols                      (K, C*R*S) @ (C*R*S, L)
    backward-weights  dW2 = dY2 @ cols^T                   (K, L) @ (L, C*R*S)
    backward-data     dcols = W2^T @ dY2, then col2im      (C*R*S, K) @ (K, L)
with L = N*P*Q, W2 = W.reshape(K, C*R*S) and dY2 = dy as (K, L) in the same column order.

Column order. NumPy's copies cost a fixed overhead per contiguous run, so the order is chosen per layer
(``batch_inner``, from P*Q only, so forward and backward agree):
- small images (P*Q < 512): (p, q, n), the padded input held as (C, Hp, Wp, N). At stride 1 the (q, n) axes
  of a window merge into one run of Q*N floats in im2col and col2im (the (n, p, q) order would give runs
  of Q, e.g. 14 floats, and col2im alone would cost 3x more); the price is a strided reordering of y and dy.
- large images: (n, p, q), the input kept as (N, C, Hp, Wp). Runs of Q floats are long enough there, and y
  and dy reorder in runs of P*Q (nearly a plain copy) instead of a batch-innermost gather.

Threads. The copies around the matmuls (padding, im2col, the y and dy reorders, col2im's adds and its
crop) are split over a thread pool (``_parallel``; NumPy releases the GIL in them) along an axis whose
slices are disjoint in the output: channels C or K, or the batch. Each output element gets the same
float operations in the same order as in one thread, so results are bit-identical for any thread count
(``CUSTOM_CPU_THREADS``); the matmuls are left to OpenBLAS's own threads.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._parallel import items_per_chunk, parallel_chunks, parallel_copyto
from .layer import Layer


def out_size(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    """(P, Q) for an (h, w) input."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def batch_inner(p: int, q: int) -> bool:
    """The column order for a P x Q output: True -> (p, q, n), False -> (n, p, q) (module docstring)."""
    return p * q < 512


def pad_input(x: np.ndarray, padding, inner: bool) -> np.ndarray:
    """(N, C, H, W) -> zero-padded (C, Hp, Wp, N) if ``inner`` else (N, C, Hp, Wp); Hp = H + 2 ph, Wp = W + 2 pw."""
    ph, pw = padding
    n, c, h, w = x.shape
    if inner:
        xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)   # (C, Hp, Wp, N)
        parallel_copyto(xp[:, ph:ph + h, pw:pw + w, :], x.transpose(1, 2, 3, 0), axis=0)
        return xp
    if ph == 0 and pw == 0:
        return x
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)       # (N, C, Hp, Wp)
    parallel_copyto(xp[:, :, ph:ph + h, pw:pw + w], x, axis=0)
    return xp


def _window_view(xp: np.ndarray, kernel, stride, npq, inner: bool) -> np.ndarray:
    """The im2col view of xp: (C, R, S, P, Q, N) if ``inner`` else (C, R, S, N, P, Q); no copy."""
    n, p, q = npq
    (r, s), (sh, sw) = kernel, stride
    if inner:
        s_c, s_h, s_w, s_n = xp.strides
        c = xp.shape[0]
        return as_strided(xp, shape=(c, r, s, p, q, n), strides=(s_c, s_h, s_w, s_h * sh, s_w * sw, s_n))
    s_n, s_c, s_h, s_w = xp.strides
    c = xp.shape[1]
    return as_strided(xp, shape=(c, r, s, n, p, q), strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))


def im2col(xp: np.ndarray, kernel, stride, npq, inner: bool, out: np.ndarray | None = None) -> np.ndarray:
    """Padded input (from ``pad_input``) -> columns (C*R*S, N*P*Q), one copy through a strided view.

    npq = (N, P, Q) whatever the column order ``inner`` is.
    ``out``: an optional float32 C-contiguous (C*R*S, N*P*Q) buffer to write into (reused between calls).
    """
    windows = _window_view(xp, kernel, stride, npq, inner)             # (C, R, S, <column order>)
    if out is None:
        out = np.empty((windows.shape[0] * kernel[0] * kernel[1], int(np.prod(npq))), dtype=xp.dtype)
    # split along C, or along the first column axis (P or N) when that is longer (C = 1 for a first layer)
    axis = 0 if windows.shape[0] >= windows.shape[3] else 3
    parallel_copyto(out.reshape(windows.shape), windows, axis)          # (C*R*S, N*P*Q)
    return out


def col2im(dcols: np.ndarray, x_shape, kernel, stride, padding, pq, inner: bool) -> np.ndarray:
    """Adjoint of pad_input + im2col: columns (C*R*S, N*P*Q) -> input gradient (N, C, H, W), summing overlaps."""
    n, c, h, w = x_shape
    (r, s), (sh, sw), (ph, pw), (p, q) = kernel, stride, padding, pq
    hp, wp = h + 2 * ph, w + 2 * pw
    if inner:
        d6 = dcols.reshape(c, r, s, p, q, n)
        dxp = np.zeros((c, hp, wp, n), dtype=dcols.dtype)                 # (C, Hp, Wp, N)
        dxc = dxp                                                         # channels first: (C, Hp, Wp, N)
        crop = dxp[:, ph:ph + h, pw:pw + w, :].transpose(3, 0, 1, 2)      # (N, C, H, W) view
    else:
        d6 = dcols.reshape(c, r, s, n, p, q)
        dxp = np.zeros((n, c, hp, wp), dtype=dcols.dtype)                 # (N, C, Hp, Wp)
        dxc = dxp.transpose(1, 0, 2, 3)                                   # channels first: (C, N, Hp, Wp)
        crop = dxp[:, :, ph:ph + h, pw:pw + w] if ph or pw else None      # (N, C, H, W) view
    dx = dxp if crop is None else np.empty((n, c, h, w), dtype=dcols.dtype)   # (N, C, H, W)

    # NOTE: one vectorised add per kernel offset (R*S of them, e.g. 25 for 5x5); each adds a whole
    # (C, P, Q, N) or (C, N, P, Q) slab, so the loop never runs over samples or pixels. Overlapping windows
    # (stride < kernel) sum correctly because the offsets are added one after another. A thread takes a
    # range of channels through every offset in this same order, then crops them: bit-identical sums.
    def channels(c0, c1):
        for i in range(r):
            for j in range(s):
                hi, wj = slice(i, i + sh * (p - 1) + 1, sh), slice(j, j + sw * (q - 1) + 1, sw)
                window = dxc[c0:c1, hi, wj, :] if inner else dxc[c0:c1, :, hi, wj]
                window += d6[c0:c1, i, j]
        if crop is not None:
            np.copyto(dx[:, c0:c1], crop[:, c0:c1])

    parallel_chunks(c, channels, items_per_chunk(c, dxp.nbytes))
    return dx


def _dy_matrix(dy: np.ndarray, inner: bool) -> np.ndarray:
    """dy (N, K, P, Q) -> dY2 (K, N*P*Q) in the layer's column order (a reordering copy)."""
    src = dy.transpose(1, 2, 3, 0) if inner else dy.transpose(1, 0, 2, 3)    # (K, P, Q, N) or (K, N, P, Q) view
    dy2 = np.empty(src.shape, dtype=dy.dtype)
    parallel_copyto(dy2, src, axis=0)
    return dy2.reshape(dy.shape[1], -1)


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride=(1, 1), padding=(0, 0),
                   cols_out: np.ndarray | None = None):
    """y[n, k, p, q] = b[k] + sum_{c,r,s} W[k, c, r, s] * xp[n, c, p*sh + r, q*sw + s].

    x (N, C, H, W), W (K, C, R, S), b (K,) or None -> (y (N, K, P, Q), cols (C*R*S, N*P*Q) for backward).
    ``cols_out``: optional buffer for the columns (see ``im2col``).

    >>> y, _ = conv2d_forward(np.ones((2, 3, 7, 9), np.float32), np.ones((4, 3, 3, 5), np.float32), None,
    ...                       stride=(2, 1), padding=(1, 2))
    >>> y.shape
    (2, 4, 4, 9)
    """
    n, c, h, w = x.shape
    k, _, r, s = W.shape
    p, q = out_size(h, w, (r, s), stride, padding)
    inner = batch_inner(p, q)
    cols = im2col(pad_input(x, padding, inner), (r, s), stride, (n, p, q), inner, cols_out)   # (C*R*S, N*P*Q)
    y2 = W.reshape(k, c * r * s) @ cols                              # (K, N*P*Q)
    y = np.empty((n, k, p, q), dtype=y2.dtype)                       # (N, K, P, Q)
    if inner:
        y_view = y2.reshape(k, p, q, n).transpose(3, 0, 1, 2)
    else:
        y_view = y2.reshape(k, n, p, q).transpose(1, 0, 2, 3)
    if b is not None:    # the bias add rides along with the reordering copy: one pass over y
        def add_bias(k0, k1):
            np.add(y_view[:, k0:k1], b[k0:k1, None, None], out=y[:, k0:k1])
        parallel_chunks(k, add_bias, items_per_chunk(k, y.nbytes))
    else:
        parallel_copyto(y, y_view, axis=1)
    return y, cols


def conv2d_backward(dy: np.ndarray, cols: np.ndarray, x_shape, W: np.ndarray, stride=(1, 1), padding=(0, 0),
                    need_dx: bool = True, dcols_out: np.ndarray | None = None):
    """Gradients of conv2d_forward. dy (N, K, P, Q), cols from forward, W (K, C, R, S).

    dW[k, c, r, s] = sum_{n,p,q} dy[n, k, p, q] xp[n, c, p*sh + r, q*sw + s];  db[k] = sum_{n,p,q} dy[n, k, p, q];
    dx = col2im(W2^T dY2) (N, C, H, W), or None when ``need_dx`` is False. Returns (dx, dW, db).
    ``dcols_out``: optional (C*R*S, N*P*Q) buffer for W2^T dY2, reused between calls.
    """
    dy2 = _dy_matrix(dy, batch_inner(*dy.shape[2:]))                              # (K, N*P*Q)
    dW = (dy2 @ cols.T).reshape(W.shape)                                          # (K, C, R, S)
    db = dy2.sum(axis=1)                                                          # (K,)
    dx = _backward_data(dy2, W, x_shape, stride, padding, dy.shape[2:], dcols_out) if need_dx else None
    return dx, dW, db


def conv2d_backward_data(dy: np.ndarray, W: np.ndarray, x_shape, stride=(1, 1), padding=(0, 0),
                         dcols_out: np.ndarray | None = None) -> np.ndarray:
    """dx alone (no dW, db, no saved columns needed): dx = col2im(W2^T dY2).  dy (N, K, P, Q) -> (N, C, H, W)."""
    dy2 = _dy_matrix(dy, batch_inner(*dy.shape[2:]))                              # (K, N*P*Q)
    return _backward_data(dy2, W, x_shape, stride, padding, dy.shape[2:], dcols_out)


def _backward_data(dy2, W, x_shape, stride, padding, pq, dcols_out):
    k, c, r, s = W.shape
    dcols = np.matmul(W.reshape(k, c * r * s).T, dy2, out=dcols_out)            # (C*R*S, N*P*Q)
    return col2im(dcols, x_shape, (r, s), stride, padding, tuple(pq), batch_inner(*pq))   # (N, C, H, W)


class Conv2d(Layer):
    """A conv2d layer holding its parameters, their gradients and what forward saved (the columns).

    The two (C*R*S, N*P*Q) buffers (columns, their gradient) are kept between steps while N stays the
    same: they are the largest arrays of a CNN step, and allocating them afresh costs page faults.
    """

    def __init__(self, layer, need_dx: bool = True):
        super().__init__(layer, need_dx)   # params "weight" (K, C, R, S), "bias" (K,)
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
