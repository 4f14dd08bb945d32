"""2-D convolution (PyTorch's cross-correlation) on the CPU: im2col with stride tricks + one GEMM.

Letters: N batch, C in-channels, K out-channels, H,W input, P,Q output, R,S kernel, (sh, sw) stride,
(ph, pw) padding; P = (H + 2 ph - R) // sh + 1, Q = (W + 2 pw - S) // sw + 1; L = N*P*Q.
Parameter gradients are written (=), never accumulated.

The columns are a (C*R*S [+ 1], L) matrix: row (c, r, s), column l holds xp[n, c, p*sh + r, q*sw + s] for
the output position l = (n, p, q) or l = (p, q, n) (see "Column order" below); xp is the zero-padded
input. With a bias, one more row of ones, and the bias rides in the GEMMs:
    forward           y2   = [W2 | b] @ cols                (K, C*R*S + 1) @ (C*R*S + 1, L)
    backward-weights  [dW2 | db] = dY2 @ cols^T             (K, L) @ (L, C*R*S + 1)
    backward-data     dcols = W2^T @ dY2, then col2im       (C*R*S, K) @ (K, L)
with W2 = W.reshape(K, C*R*S) and dY2 = dy as (K, L) in the same column order. The bias thus costs no pass
over y, and db no pass over dy (it is the GEMM's sum over L against the row of ones, a float32 sum of L
terms like dW's own entries).

Column order. NumPy's copies cost a fixed overhead per contiguous run, so the order is chosen per layer
(``batch_inner``, from P*Q only, so forward and backward agree):
- small images (P*Q < 512): (p, q, n), the padded input held as (C, Hp, Wp, N). At stride 1 the (q, n) axes
  of a window merge into one run of Q*N floats in im2col and col2im (the (n, p, q) order would give runs
  of Q, e.g. 14 floats, and col2im alone would cost 3x more).
- large images: (n, p, q), the padded input held as (C, N, Hp, Wp); runs of Q floats are long enough there.

Layouts between layers. The output y is the GEMM result itself, seen as (N, K, P, Q): a view of the
(K, P, Q, N) or (K, N, P, Q) array, no reordering copy. Every layer takes (N, C, H, W) arrays of any
strides (pooling allocates its outputs and gradients in its input's memory order), so a gradient dy
reaching a convolution is usually already in its column order and dY2 is a free reshape; otherwise one
reordering copy is made. Likewise dx is returned as a view of the padded gradient dxp (no crop copy).

Threads. The copies around the matmuls (padding + im2col in one pass per chunk, the dy reorder when one
is needed, col2im's zero fill and adds) are split over a thread pool (``_parallel``; NumPy releases the
GIL in them) along an axis whose slices are disjoint in the output: channels C or K, or the batch / an
output row. Each output element gets the same float operations in the same order as in one thread, so
results are bit-identical for any thread count (``CUSTOM_CPU_THREADS``); the matmuls are left to
OpenBLAS's own threads (all of them: on the 16-core Xeon every conv and dense GEMM shape we timed ran
fastest on 16 threads, also with ``OPENBLAS_THREAD_TIMEOUT=4`` and idle gaps between calls).

Buffers. ``buffers`` (a dict a layer keeps between calls) holds the padded input, the columns, the GEMM
outputs and the gradient buffers, reused while the shapes stay the same: they are the largest arrays of a
CNN step, and fresh ones cost page faults on every step. The padded input's zero border is written once.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._parallel import chunk_count, items_per_chunk, parallel_chunks, parallel_copyto, threads
from .layer import Layer


def out_size(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    """(P, Q) for an (h, w) input."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def batch_inner(p: int, q: int) -> bool:
    """The column order for a P x Q output: True -> (p, q, n), False -> (n, p, q) (module docstring)."""
    return p * q < 512


def _buf(buffers: dict | None, name: str, shape, dtype, zero: bool = False) -> np.ndarray:
    """``buffers[name]`` if it has this shape and dtype, else a new array (kept in ``buffers`` if given).

    ``zero``: a new array starts zeroed (a kept one keeps what it holds).
    """
    shape = tuple(int(d) for d in shape)
    buf = None if buffers is None else buffers.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
        if buffers is not None:
            buffers[name] = buf
    return buf


def _xp_order(x: np.ndarray, inner: bool) -> np.ndarray:
    """x (N, C, H, W) as a view in the padded input's axis order: (C, H, W, N) if ``inner`` else (C, N, H, W)."""
    return x.transpose(1, 2, 3, 0) if inner else x.transpose(1, 0, 2, 3)


def _window_view(xp: np.ndarray, kernel, stride, pq, inner: bool) -> np.ndarray:
    """The im2col view of xp: (C, R, S, P, Q, N) if ``inner`` else (C, R, S, N, P, Q); no copy.

    xp is indexed (C, Hp, Wp, N) if ``inner`` else (C, N, Hp, Wp), with any strides.
    """
    (r, s), (sh, sw), (p, q) = kernel, stride, pq
    if inner:
        s_c, s_h, s_w, s_n = xp.strides
        c, n = xp.shape[0], xp.shape[3]
        return as_strided(xp, shape=(c, r, s, p, q, n), strides=(s_c, s_h, s_w, s_h * sh, s_w * sw, s_n))
    s_c, s_n, s_h, s_w = xp.strides
    c, n = xp.shape[0], xp.shape[1]
    return as_strided(xp, shape=(c, r, s, n, p, q), strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))


def im2col(x: np.ndarray, cols: np.ndarray, kernel, stride, padding, inner: bool,
           buffers: dict | None = None) -> np.ndarray:
    """x (N, C, H, W), any strides -> the first C*R*S rows of ``cols`` (C*R*S [+ 1], N*P*Q), written in place.

    Pads x into a zero-bordered buffer (``buffers["xp"]``, border written once) unless x needs no padding
    and is already in a usable memory order, then copies the windows into the columns. Split over threads
    along C when there are enough channels, else along N (large images) or P (small ones); with C or N
    each thread pads and copies its own slice in one go.
    """
    n, c, h, w = x.shape
    (r, s), (ph, pw) = kernel, padding
    p, q = out_size(h, w, kernel, stride, padding)
    xt = _xp_order(x, inner)                                               # (C, H, W, N) or (C, N, H, W)
    copy = bool(ph or pw) or xt.strides[-1] != xt.itemsize
    if copy:
        if inner:
            xp = _buf(buffers, "xp", (c, h + 2 * ph, w + 2 * pw, n), x.dtype, zero=True)   # (C, Hp, Wp, N)
            interior = xp[:, ph:ph + h, pw:pw + w, :]
        else:
            xp = _buf(buffers, "xp", (c, n, h + 2 * ph, w + 2 * pw), x.dtype, zero=True)   # (C, N, Hp, Wp)
            interior = xp[:, :, ph:ph + h, pw:pw + w]
    else:
        xp = interior = xt
    windows = _window_view(xp, kernel, stride, (p, q), inner)             # (C, R, S, <column order>)
    cols6 = cols[:c * r * s].reshape(windows.shape)
    chunks = min(chunk_count(cols6.nbytes), threads())
    # NOTE: the split axis of the windows (and of xp, when it is the same axis there): C = 0 when there are
    # channels enough for the threads, else N (windows axis 3, xp axis 1) for the (n, p, q) order, or P
    # (windows axis 3) for the (p, q, n) order, whose chunks overlap rows of xp, so it pads first.
    if c >= chunks:
        axis, xp_axis = 0, 0
    elif not inner:
        axis, xp_axis = 3, 1
    else:
        axis, xp_axis = 3, None
        if copy:
            parallel_copyto(interior, xt, axis=1)

    def part(a, b):
        if copy and xp_axis is not None:
            ix = (slice(None),) * xp_axis + (slice(a, b),)
            np.copyto(interior[ix], xt[ix])
        ix = (slice(None),) * axis + (slice(a, b),)
        np.copyto(cols6[ix], windows[ix])

    parallel_chunks(windows.shape[axis], part, items_per_chunk(windows.shape[axis], cols6.nbytes))
    return cols


def col2im(dcols: np.ndarray, x_shape, kernel, stride, padding, pq, inner: bool,
           buffers: dict | None = None) -> np.ndarray:
    """Adjoint of padding + im2col: columns (C*R*S, N*P*Q) -> input gradient (N, C, H, W), summing overlaps.

    The result is a view of the padded gradient dxp ((C, Hp, Wp, N) or (C, N, Hp, Wp), ``buffers["dxp"]``).
    """
    n, c, h, w = x_shape
    (r, s), (sh, sw), (ph, pw), (p, q) = kernel, stride, padding, pq
    hp, wp = h + 2 * ph, w + 2 * pw
    if inner:
        d6 = dcols.reshape(c, r, s, p, q, n)
        dxp = _buf(buffers, "dxp", (c, hp, wp, n), dcols.dtype)                      # (C, Hp, Wp, N)
        dx = dxp[:, ph:ph + h, pw:pw + w, :].transpose(3, 0, 1, 2)                    # (N, C, H, W) view
    else:
        d6 = dcols.reshape(c, r, s, n, p, q)
        dxp = _buf(buffers, "dxp", (c, n, hp, wp), dcols.dtype)                      # (C, N, Hp, Wp)
        dx = dxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)                    # (N, C, H, W) view

    # NOTE: one vectorised add per kernel offset (R*S of them, e.g. 25 for 5x5); each adds a whole
    # (C, P, Q, N) or (C, N, P, Q) slab, so the loop never runs over samples or pixels. Overlapping windows
    # (stride < kernel) sum correctly because the offsets are added one after another. A thread takes a
    # range of channels, zeroes them and runs every offset in this same order: bit-identical sums.
    def channels(c0, c1):
        dxc = dxp[c0:c1]
        dxc.fill(0)
        for i in range(r):
            for j in range(s):
                hi, wj = slice(i, i + sh * (p - 1) + 1, sh), slice(j, j + sw * (q - 1) + 1, sw)
                window = dxc[:, hi, wj, :] if inner else dxc[:, :, hi, wj]
                window += d6[c0:c1, i, j]

    parallel_chunks(c, channels, items_per_chunk(c, dcols.nbytes))
    return dx


def _dy_matrix(dy: np.ndarray, inner: bool, buffers: dict | None = None) -> np.ndarray:
    """dy (N, K, P, Q), any strides -> dY2 (K, N*P*Q) in the layer's column order: a free reshape when dy's
    memory is already in that order, else a reordering copy (``buffers["dy2"]``)."""
    src = dy.transpose(1, 2, 3, 0) if inner else dy.transpose(1, 0, 2, 3)    # (K, P, Q, N) or (K, N, P, Q)
    if src.flags.c_contiguous:
        return src.reshape(dy.shape[1], -1)
    dy2 = _buf(buffers, "dy2", src.shape, dy.dtype)
    parallel_copyto(dy2, src, axis=0)
    return dy2.reshape(dy.shape[1], -1)


def _y_view(y2: np.ndarray, npq, inner: bool) -> np.ndarray:
    """The GEMM result (K, L) seen as y (N, K, P, Q)."""
    n, p, q = npq
    k = y2.shape[0]
    return y2.reshape(k, p, q, n).transpose(3, 0, 1, 2) if inner else y2.reshape(k, n, p, q).transpose(1, 0, 2, 3)


def conv2d_forward_cols(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride=(1, 1), padding=(0, 0),
                        buffers: dict | None = None):
    """y[n, k, p, q] = b[k] + sum_{c,r,s} W[k, c, r, s] * xp[n, c, p*sh + r, q*sw + s], and the columns.

    x (N, C, H, W) of any strides, W (K, C, R, S), b (K,) or None -> (y (N, K, P, Q), cols for backward).
    y is a view of the (K, L) GEMM result (module docstring); ``buffers``: arrays kept between calls.
    The layer's fast path: ``conv2d_backward_cols`` takes the columns instead of redoing the im2col.

    >>> y, _ = conv2d_forward_cols(np.ones((2, 3, 7, 9), np.float32), np.ones((4, 3, 3, 5), np.float32), None,
    ...                            stride=(2, 1), padding=(1, 2))
    >>> y.shape
    (2, 4, 4, 9)
    """
    n, c, h, w = x.shape
    k, _, r, s = W.shape
    crs = c * r * s
    p, q = out_size(h, w, (r, s), stride, padding)
    inner = batch_inner(p, q)
    cols = _buf(buffers, "cols", (crs + (b is not None), n * p * q), x.dtype)     # (C*R*S [+ 1], L)
    im2col(x, cols, (r, s), stride, padding, inner, buffers)
    W2 = W.reshape(k, crs)
    if b is not None:
        cols[crs] = 1
        W2b = _buf(buffers, "W2b", (k, crs + 1), W.dtype)                         # [W2 | b]
        W2b[:, :crs] = W2
        W2b[:, crs] = b
        W2 = W2b
    y2 = np.matmul(W2, cols, out=_buf(buffers, "y2", (k, n * p * q), np.result_type(W2, cols)))  # (K, L)
    return _y_view(y2, (n, p, q), inner), cols


def conv2d_backward_cols(dy: np.ndarray, cols: np.ndarray, x_shape, W: np.ndarray, stride=(1, 1),
                         padding=(0, 0), need_dx: bool = True, buffers: dict | None = None):
    """Gradients of conv2d_forward_cols. dy (N, K, P, Q) of any strides, cols from it, W (K, C, R, S).

    dW[k, c, r, s] = sum_{n,p,q} dy[n, k, p, q] xp[n, c, p*sh + r, q*sw + s];  db[k] = sum_{n,p,q} dy[n, k, p, q];
    dx = col2im(W2^T dY2) (N, C, H, W), or None when ``need_dx`` is False. Returns (dx, dW, db); dW and db
    may be views of a kept buffer, dx a view of the padded gradient.
    """
    k, c, r, s = W.shape
    crs = c * r * s
    inner = batch_inner(*dy.shape[2:])
    dy2 = _dy_matrix(dy, inner, buffers)                                               # (K, L)
    dtype = np.result_type(dy2, cols)
    # NOTE: the weight GEMM runs as cols @ dY2^T, giving the transpose of [dW2 | db]: OpenBLAS runs this
    # order faster for every zoo convolution (measured 2026-12-06 on the 2-core AMD EPYC with
    # lab/cpu/conv_gemm_orientation.py: e.g. lenet-mnist conv 3 at batch 256 31.7 ms vs 38.4 ms for
    # dY2 @ cols^T, cnn-cifar conv 3 16.8 vs 20.5 ms; whole train step, the two orders alternated on one
    # model: lenet-mnist batch 256 155.1 vs 166.5 ms, cnn-cifar 256 165.4 vs 174.5 ms, digits-cnn 64 1.16 vs
    # 1.20 ms). dW is then a transposed view, copied by the caller.
    if cols.shape[0] == crs + 1:    # the row of ones: db comes out of the same GEMM
        dWbT = np.matmul(cols, dy2.T, out=_buf(buffers, "dWbT", (crs + 1, k), dtype))   # [dW2 | db]^T
        dW, db = dWbT[:crs].T.reshape(W.shape), dWbT[crs]
    else:
        dW, db = np.matmul(cols, dy2.T).T.reshape(W.shape), dy2.sum(axis=1)
    dx = _backward_data(dy2, W, x_shape, stride, padding, dy.shape[2:], buffers) if need_dx else None
    return dx, dW, db


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _written(dst: np.ndarray | None, src: np.ndarray) -> np.ndarray:
    """``src`` copied into the caller's buffer ``dst``, or ``src`` itself when there is none."""
    if dst is None:
        return src
    np.copyto(dst, src)
    return dst


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride, padding,
                   out: np.ndarray | None = None, workspace=None) -> np.ndarray:
    """y[n, k, p, q] = b[k] + sum_{c,r,s} W[k, c, r, s] * xp[n, c, p*sh + r, q*sw + s] (the layer op).

    x (N, C, H, W), W (K, C, R, S), b (K,) or None, stride and padding ints or pairs -> y (N, K, P, Q).
    ``out``: optional (N, K, P, Q) array written and returned (else y is a channels-first view of the
    GEMM result). ``workspace`` is accepted for the GPU's signature and unused.

    >>> conv2d_forward(np.ones((2, 3, 7, 9), np.float32), np.ones((4, 3, 3, 5), np.float32), None,
    ...                stride=(2, 1), padding=(1, 2)).shape
    (2, 4, 4, 9)
    """
    y, _ = conv2d_forward_cols(x, W, b, _pair(stride), _pair(padding))
    return _written(out, y)


def conv2d_backward(dy: np.ndarray, x: np.ndarray, W: np.ndarray, stride, padding, need_dx: bool = True,
                    dx: np.ndarray | None = None, dW: np.ndarray | None = None, db: np.ndarray | None = None,
                    workspace=None, need_db: bool = True):
    """Gradients of ``conv2d_forward`` from its input x (the layer op; the columns are rebuilt from x).

    dy (N, K, P, Q), x (N, C, H, W), W (K, C, R, S) -> (dx (N, C, H, W) or None without ``need_dx``,
    dW (K, C, R, S), db (K,) or None without ``need_db``). ``dx``, ``dW``, ``db``: optional arrays
    written and returned; ``workspace`` unused on the CPU.
    """
    stride, padding = _pair(stride), _pair(padding)
    k, c, r, s = W.shape
    p, q = dy.shape[2:]
    crs = c * r * s
    cols = np.empty((crs + bool(need_db), x.shape[0] * p * q), dtype=x.dtype)   # (C*R*S [+ 1], L)
    im2col(x, cols, (r, s), stride, padding, batch_inner(p, q))
    if need_db:
        cols[crs] = 1
    gx, gW, gb = conv2d_backward_cols(dy, cols, x.shape, W, stride, padding, need_dx)
    return (_written(dx, gx) if need_dx else None, _written(dW, gW), _written(db, gb) if need_db else None)


def conv2d_backward_data(dy: np.ndarray, W: np.ndarray, x_shape, stride, padding, dx: np.ndarray | None = None,
                         workspace=None) -> np.ndarray:
    """dx alone (no dW, db, no columns of x needed): dx = col2im(W2^T dY2).  dy (N, K, P, Q) -> (N, C, H, W).

    ``dx``: optional array written and returned (else a view of the padded gradient); ``workspace`` unused.
    """
    stride, padding = _pair(stride), _pair(padding)
    dy2 = _dy_matrix(dy, batch_inner(*dy.shape[2:]))                                   # (K, N*P*Q)
    return _written(dx, _backward_data(dy2, W, tuple(x_shape), stride, padding, dy.shape[2:], None))


def conv2d_algorithm(phase, x_shape, w_shape, stride, padding) -> str:
    """The algorithm that runs this layer and phase: on the CPU always "im2col" (one GEMM over the
    columns; the shared signature of ``custom_impl.gpu.ops.conv2d_algorithm``)."""
    return "im2col"


def conv2d_workspace_size(x_shape, w_shape, stride, padding) -> int:
    """Floats of workspace the GPU op would use; the CPU needs none: 0."""
    return 0


def _backward_data(dy2, W, x_shape, stride, padding, pq, buffers):
    k, c, r, s = W.shape
    W2t = W.reshape(k, c * r * s).T
    dcols = _buf(buffers, "dcols", (c * r * s, dy2.shape[1]), np.result_type(W2t, dy2))   # (C*R*S, L)
    np.matmul(W2t, dy2, out=dcols)
    return col2im(dcols, x_shape, (r, s), stride, padding, tuple(pq), batch_inner(*pq), buffers)   # (N, C, H, W)


class Conv2d(Layer):
    """A conv2d layer holding its parameters, their gradients (views the model gives it), the arrays it
    keeps between steps (``_buffers``: padded input, columns, GEMM outputs, gradient buffers) and what
    forward saved (the columns)."""

    def __init__(self, layer, need_dx: bool = True):
        super().__init__(layer, need_dx)   # params "weight" (K, C, R, S), "bias" (K,)
        self._buffers: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        L = self.layer
        y, cols = conv2d_forward_cols(x, self.params["weight"], self.params.get("bias"), L.stride, L.padding,
                                      self._buffers)
        self.saved = (cols, x.shape) if train else None
        return y

    def backward(self, dy: np.ndarray):
        cols, x_shape = self.saved
        L = self.layer
        dx, dW, db = conv2d_backward_cols(dy, cols, x_shape, self.params["weight"], L.stride, L.padding,
                                          self.need_dx, self._buffers)
        np.copyto(self.grads["weight"], dW)
        if "bias" in self.grads:
            np.copyto(self.grads["bias"], db)
        self.saved = None
        return dx
