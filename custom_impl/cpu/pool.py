"""Max and average pooling on the CPU: any kernel and stride, overlapping windows included, no padding.

Letters: N batch, C channels, H,W input, P,Q output, R,S window, (sh, sw) stride;
P = (H - R) // sh + 1, Q = (W - S) // sw + 1 (rows/columns past the last window are dropped, as in PyTorch).

Both directions run one vectorised step per window offset (R*S of them, e.g. 4 for 2x2): the view
x[:, :, r::sh, s::sw] cut to (P, Q) holds offset (r, s) of every window at once, so nothing loops over
samples or pixels, and the backward adds (+=) offset by offset, which sums overlapping windows correctly.
Max pooling (the zoo's CNNs) splits the batch over threads (``_parallel``): each sample gets the same
operations in the same order, so the results are bit-identical for any thread count.
"""
from __future__ import annotations

import numpy as np

from ._parallel import items_per_chunk, parallel_chunks
from .layer import Layer


def _offset_view(a: np.ndarray, i: int, j: int, stride, pq) -> np.ndarray:
    """a[n, c, p*sh + i, q*sw + j] for all n, c, p, q: a strided view (N, C, P, Q)."""
    (sh, sw), (p, q) = stride, pq
    return a[:, :, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw]


def _tiles(x_shape, kernel, stride) -> bool:
    """True when the windows cover the input exactly once (stride = kernel, sizes divisible)."""
    return (tuple(stride) == tuple(kernel) and x_shape[2] % kernel[0] == 0 and x_shape[3] % kernel[1] == 0)


def _pq(x_shape, kernel, stride):
    return ((x_shape[2] - kernel[0]) // stride[0] + 1, (x_shape[3] - kernel[1]) // stride[1] + 1)


def maxpool2d_forward(x: np.ndarray, kernel, stride) -> np.ndarray:
    """y[n, c, p, q] = max_{r,s} x[n, c, p*sh + r, q*sw + s].  x (N, C, H, W) -> y (N, C, P, Q).

    Backward needs x and y (it finds the maximum's position again by comparing them).

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> maxpool2d_forward(x, (2, 2), (2, 2))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    r, s = kernel
    pq = _pq(x.shape, kernel, stride)
    y = np.empty((*x.shape[:2], *pq), dtype=x.dtype)            # (N, C, P, Q)

    def samples(n0, n1):
        xn, yn = x[n0:n1], y[n0:n1]
        np.copyto(yn, _offset_view(xn, 0, 0, stride, pq))
        for i in range(r):
            for j in range(s):
                if i or j:
                    np.maximum(yn, _offset_view(xn, i, j, stride, pq), out=yn)

    parallel_chunks(x.shape[0], samples, items_per_chunk(x.shape[0], x.nbytes))
    return y


def maxpool2d_backward(dy: np.ndarray, x: np.ndarray, y: np.ndarray, kernel, stride) -> np.ndarray:
    """dx[n, c, h, w] = sum of dy over the windows whose maximum sits at (h, w).  dy, y (N, C, P, Q), x (N, C, H, W).

    Within a window the gradient goes to the first maximum in raster order (PyTorch's choice on ties):
    offsets are visited in that order and ``taken`` marks windows already served.
    """
    r, s = kernel
    pq = dy.shape[2:]
    tiled = _tiles(x.shape, kernel, stride)
    dx = np.empty(x.shape, dtype=dy.dtype) if tiled else np.zeros(x.shape, dtype=dy.dtype)   # (N, C, H, W)

    def samples(n0, n1):
        xn, yn, dyn, dxn = x[n0:n1], y[n0:n1], dy[n0:n1], dx[n0:n1]
        taken = np.zeros(yn.shape, dtype=bool)                   # (n1 - n0, C, P, Q)
        for i in range(r):
            for j in range(s):
                hit = _offset_view(xn, i, j, stride, pq) == yn   # (n1 - n0, C, P, Q)
                if i or j:
                    hit &= ~taken
                taken |= hit
                if tiled:    # every input element lies in exactly one window: write, no zero fill, no add
                    np.multiply(dyn, hit, out=_offset_view(dxn, i, j, stride, pq))
                else:
                    _offset_view(dxn, i, j, stride, pq)[...] += dyn * hit

    parallel_chunks(x.shape[0], samples, items_per_chunk(x.shape[0], x.nbytes))
    return dx


def avgpool2d_forward(x: np.ndarray, kernel, stride) -> np.ndarray:
    """y[n, c, p, q] = (1 / (R S)) sum_{r,s} x[n, c, p*sh + r, q*sw + s].  x (N, C, H, W) -> (N, C, P, Q)."""
    r, s = kernel
    pq = _pq(x.shape, kernel, stride)
    y = _offset_view(x, 0, 0, stride, pq).copy()                # (N, C, P, Q)
    for i in range(r):
        for j in range(s):
            if i or j:
                y += _offset_view(x, i, j, stride, pq)
    y *= 1.0 / (r * s)
    return y


def avgpool2d_backward(dy: np.ndarray, x_shape, kernel, stride) -> np.ndarray:
    """dx[n, c, h, w] = sum over the windows covering (h, w) of dy / (R S).  dy (N, C, P, Q) -> (N, C, H, W)."""
    r, s = kernel
    pq = dy.shape[2:]
    share = dy * (1.0 / (r * s))                                 # (N, C, P, Q)
    tiled = _tiles(x_shape, kernel, stride)
    dx = np.empty(x_shape, dtype=dy.dtype) if tiled else np.zeros(x_shape, dtype=dy.dtype)   # (N, C, H, W)
    for i in range(r):
        for j in range(s):
            if tiled:
                _offset_view(dx, i, j, stride, pq)[...] = share
            else:
                _offset_view(dx, i, j, stride, pq)[...] += share
    return dx


class Pool2d(Layer):
    """maxpool2d / avgpool2d layer; saves (x, y) for max, (x.shape, None) for average."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        L = self.layer
        if L.type == "maxpool2d":
            y = maxpool2d_forward(x, L.kernel_size, L.stride)
            self.saved = (x, y) if train else None
        else:
            y = avgpool2d_forward(x, L.kernel_size, L.stride)
            self.saved = (x.shape, None) if train else None
        return y

    def backward(self, dy: np.ndarray):
        a, b = self.saved
        self.saved = None
        if not self.need_dx:
            return None
        L = self.layer
        if L.type == "maxpool2d":
            return maxpool2d_backward(dy, a, b, L.kernel_size, L.stride)
        return avgpool2d_backward(dy, a, L.kernel_size, L.stride)
