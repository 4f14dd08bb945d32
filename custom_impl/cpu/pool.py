"""Max and average pooling on the CPU: any kernel and stride, overlapping windows included, no padding.

Letters: N batch, C channels, H,W input, P,Q output, R,S window, (sh, sw) stride;
P = (H - R) // sh + 1, Q = (W - S) // sw + 1 (rows/columns past the last window are dropped, as in PyTorch).

Both directions run one vectorised step per window offset (R*S of them, e.g. 4 for 2x2): the view
x[:, :, r::sh, s::sw] cut to (P, Q) holds offset (r, s) of every window at once, so nothing loops over
samples or pixels, and the backward adds (+=) offset by offset, which sums overlapping windows correctly.

Inputs are (N, C, H, W) arrays of any strides (the convolutions hand over channels-first views); outputs
and gradients are allocated in the input's memory order. Max pooling (the zoo's CNNs) splits the work over
threads (``_parallel``) along N or C, whichever is outermost in memory; each element gets the same
operations in the same order, so the results are bit-identical for any thread count.

Two max-pooling pairs:
- ``maxpool2d_forward`` / ``maxpool2d_backward``, the layer ops (``custom_impl.cpu.ops``): forward also
  returns the argmax (int32 window position r*S + s of each window's first maximum, as the GPU op),
  backward routes dy by it.
- ``maxpool2d_values`` / ``maxpool2d_backward_by_compare``, what the CPU model runs: forward computes the
  maxima only, backward finds each maximum's position again by comparing x with y (no index pass in the
  forward). ``relu=True`` fuses a ReLU after the maximum: y = max(maxpool(x), 0), which equals
  maxpool(relu(x)); backward masks dy with y > 0 before routing it (see ``model``'s docstring).
"""
from __future__ import annotations

import numpy as np

from ._parallel import items_per_chunk, parallel_chunks
from .layer import Layer


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _offset_view(a: np.ndarray, i: int, j: int, stride, pq) -> np.ndarray:
    """a[n, c, p*sh + i, q*sw + j] for all n, c, p, q: a strided view (N, C, P, Q)."""
    (sh, sw), (p, q) = stride, pq
    return a[:, :, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw]


def _tiles(x_shape, kernel, stride) -> bool:
    """True when the windows cover the input exactly once (stride = kernel, sizes divisible)."""
    return (tuple(stride) == tuple(kernel) and x_shape[2] % kernel[0] == 0 and x_shape[3] % kernel[1] == 0)


def _pq(x_shape, kernel, stride):
    return ((x_shape[2] - kernel[0]) // stride[0] + 1, (x_shape[3] - kernel[1]) // stride[1] + 1)


def _split_axis(x: np.ndarray) -> int:
    """0 (N) or 1 (C), whichever is outermost in x's memory: chunks along it are the largest blocks."""
    return 0 if abs(x.strides[0]) >= abs(x.strides[1]) else 1


def _memory_order(x: np.ndarray) -> tuple[int, ...]:
    """x's axes from outermost to innermost in memory (ties keep the axis order)."""
    return tuple(sorted(range(x.ndim), key=lambda a: -abs(x.strides[a])))


def _like(x: np.ndarray, shape, order: tuple[int, ...] | None = None, dtype=None) -> np.ndarray:
    """An empty array of ``shape`` (N, C, *, *) whose axes lie in memory in the same order as x's
    (``order``, if given), of x's dtype unless ``dtype`` is given."""
    order = _memory_order(x) if order is None else order
    buf = np.empty([shape[a] for a in order], dtype=x.dtype if dtype is None else dtype)
    return buf.transpose(np.argsort(order))


def _chunked(axis: int, fn, *arrays):
    """fn over the same chunk (along ``axis``, 0 or 1) of every array, threaded by the first one's size."""
    n = arrays[0].shape[axis]

    def part(a, b):
        ix = (slice(None),) * axis + (slice(a, b),)
        fn(*(arr[ix] for arr in arrays))

    parallel_chunks(n, part, items_per_chunk(n, arrays[0].nbytes))


def maxpool2d_values(x: np.ndarray, kernel, stride, out: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
    """y[n, c, p, q] = max_{r,s} x[n, c, p*sh + r, q*sw + s], without the argmax (the layer's fast path).

    x (N, C, H, W) -> y (N, C, P, Q). ``maxpool2d_backward_by_compare`` then finds each maximum's position
    again by comparing x with y. ``out``: optional (N, C, P, Q) array to write y into; ``relu``: y = max(y, 0)
    as well.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> maxpool2d_values(x, (2, 2), (2, 2))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    r, s = kernel
    pq = _pq(x.shape, kernel, stride)
    y = _like(x, (*x.shape[:2], *pq)) if out is None else out           # (N, C, P, Q)

    def part(xn, yn):
        np.copyto(yn, _offset_view(xn, 0, 0, stride, pq))
        for i in range(r):
            for j in range(s):
                if i or j:
                    np.maximum(yn, _offset_view(xn, i, j, stride, pq), out=yn)
        if relu:
            np.maximum(yn, 0, out=yn)

    _chunked(_split_axis(x), part, x, y)
    return y


def maxpool2d_backward_by_compare(dy: np.ndarray, x: np.ndarray, y: np.ndarray, kernel, stride,
                                  out: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
    """dx[n, c, h, w] = sum of dy over the windows whose maximum sits at (h, w).  dy, y (N, C, P, Q), x (N, C, H, W).

    The backward of ``maxpool2d_values``: the maximum's position is found by comparing x with y.
    Within a window the gradient goes to the first maximum in raster order (PyTorch's choice on ties):
    offsets are visited in that order and ``taken`` marks windows already served. ``relu``: y came from
    ``maxpool2d_values(..., relu=True)``; dy is first masked with y > 0. ``out``: optional array for dx.
    Every temporary is laid out in y's memory order, and dy is copied into it first when its own order
    differs (e.g. after a flatten), so the per-offset passes never mix layouts.
    """
    r, s = kernel
    pq = dy.shape[2:]
    tiled = _tiles(x.shape, kernel, stride)
    dx = _like(x, x.shape) if out is None else out                       # (N, C, H, W)
    order = _memory_order(y)
    reorder = _memory_order(dy) != order

    def part(xn, yn, dyn, dxn):
        if relu or reorder:    # dy (masked) in y's memory order
            d = _like(yn, yn.shape, order)
            if relu:
                np.multiply(dyn, yn > 0, out=d)
            else:
                np.copyto(d, dyn)
            dyn = d
        if not tiled:    # overlapping or partial windows: sums over windows, from zero
            dxn[...] = 0
        taken = _like(yn, yn.shape, order, dtype=bool)                   # (chunk of N or C, C or N, P, Q)
        taken.fill(False)
        hit = _like(yn, yn.shape, order, dtype=bool)
        for i in range(r):
            for j in range(s):
                np.equal(_offset_view(xn, i, j, stride, pq), yn, out=hit)
                if i or j:
                    np.greater(hit, taken, out=hit)                      # hit and not taken
                taken |= hit
                if tiled:    # every input element lies in exactly one window: write, no zero fill, no add
                    np.multiply(dyn, hit, out=_offset_view(dxn, i, j, stride, pq))
                else:
                    _offset_view(dxn, i, j, stride, pq)[...] += dyn * hit

    _chunked(_split_axis(x), part, x, y, dy, dx)
    return dx


def maxpool2d_forward(x: np.ndarray, kernel_size, stride, out: np.ndarray | None = None,
                      argmax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The layer op: y[n, c, p, q] = max_{r,s} x[n, c, p*sh + r, q*sw + s] and where it sits.

    x (N, C, H, W) -> (y (N, C, P, Q), argmax (N, C, P, Q) int32), argmax the position r*S + s, within its
    window, of the window's first maximum in raster order (the same meaning as the GPU op; a NaN wins and
    stays, as in the GPU kernel and PyTorch). ``out`` / ``argmax``: optional arrays written and returned.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> maxpool2d_forward(x, 2, 2)[1][0, 0]
    array([[3, 3],
           [3, 3]], dtype=int32)
    """
    kernel, stride = _pair(kernel_size), _pair(stride)
    r, s = kernel
    pq = _pq(x.shape, kernel, stride)
    y = _like(x, (*x.shape[:2], *pq)) if out is None else out           # (N, C, P, Q)
    am = _like(y, y.shape, dtype=np.int32) if argmax is None else argmax  # (N, C, P, Q)
    nan = bool(np.isnan(x).any())

    def part(xn, yn, amn):
        np.copyto(yn, _offset_view(xn, 0, 0, stride, pq))
        for i in range(r):
            for j in range(s):
                if i or j:
                    np.maximum(yn, _offset_view(xn, i, j, stride, pq), out=yn)   # NaN propagates
        # NOTE: offsets in reverse raster order, each overwriting where it holds the maximum: the first
        # maximum (or the first NaN) is written last and stays.
        hit = np.empty(yn.shape, dtype=bool)
        for i in reversed(range(r)):
            for j in reversed(range(s)):
                v = _offset_view(xn, i, j, stride, pq)
                np.equal(v, yn, out=hit)
                if nan:
                    hit |= np.isnan(v)
                np.copyto(amn, i * s + j, where=hit)

    _chunked(_split_axis(x), part, x, y, am)
    return y, am


def maxpool2d_backward(dy: np.ndarray, argmax: np.ndarray, x_shape, kernel_size, stride,
                       dx: np.ndarray | None = None) -> np.ndarray:
    """The layer op: dx[n, c, p*sh + r, q*sw + s] += dy[n, c, p, q] where argmax[n, c, p, q] = r*S + s.

    dy, argmax (N, C, P, Q) (argmax from ``maxpool2d_forward``) -> dx (N, C, H, W), written (=);
    ``dx``: optional array written and returned.
    """
    kernel, stride = _pair(kernel_size), _pair(stride)
    x_shape = tuple(int(v) for v in x_shape)
    r, s = kernel
    pq = tuple(dy.shape[2:])
    tiled = _tiles(x_shape, kernel, stride)
    dx = _like(dy, x_shape) if dx is None else dx                       # (N, C, H, W)

    def part(dyn, amn, dxn):
        hit = np.empty(amn.shape, dtype=bool)
        if not tiled:    # overlapping or partial windows: sums over windows, from zero
            dxn[...] = 0
        for i in range(r):
            for j in range(s):
                np.equal(amn, i * s + j, out=hit)
                if tiled:    # every input element lies in exactly one window: write, no zero fill, no add
                    np.multiply(dyn, hit, out=_offset_view(dxn, i, j, stride, pq))
                else:
                    _offset_view(dxn, i, j, stride, pq)[...] += dyn * hit

    _chunked(_split_axis(dy), part, dy, argmax, dx)
    return dx


def avgpool2d_forward(x: np.ndarray, kernel_size, stride, out: np.ndarray | None = None) -> np.ndarray:
    """y[n, c, p, q] = (1 / (R S)) sum_{r,s} x[n, c, p*sh + r, q*sw + s].  x (N, C, H, W) -> (N, C, P, Q).

    ``out``: optional (N, C, P, Q) array written and returned.
    """
    kernel, stride = _pair(kernel_size), _pair(stride)
    r, s = kernel
    pq = _pq(x.shape, kernel, stride)
    y = _like(x, (*x.shape[:2], *pq)) if out is None else out           # (N, C, P, Q)
    np.copyto(y, _offset_view(x, 0, 0, stride, pq))
    for i in range(r):
        for j in range(s):
            if i or j:
                y += _offset_view(x, i, j, stride, pq)
    y *= 1.0 / (r * s)
    return y


def avgpool2d_backward(dy: np.ndarray, x_shape, kernel_size, stride, dx: np.ndarray | None = None) -> np.ndarray:
    """dx[n, c, h, w] = sum over the windows covering (h, w) of dy / (R S).  dy (N, C, P, Q) -> (N, C, H, W).

    ``dx``: optional (N, C, H, W) array written and returned.
    """
    kernel, stride = _pair(kernel_size), _pair(stride)
    x_shape = tuple(int(v) for v in x_shape)
    r, s = kernel
    pq = dy.shape[2:]
    share = dy * (1.0 / (r * s))                                 # (N, C, P, Q)
    tiled = _tiles(x_shape, kernel, stride)
    dx = _like(dy, x_shape) if dx is None else dx                # (N, C, H, W), in dy's memory order
    if not tiled:
        dx[...] = 0
    for i in range(r):
        for j in range(s):
            if tiled:
                _offset_view(dx, i, j, stride, pq)[...] = share
            else:
                _offset_view(dx, i, j, stride, pq)[...] += share
    return dx


class Pool2d(Layer):
    """maxpool2d / avgpool2d layer; saves (x, y) for max, (x.shape, None) for average.

    ``relu``: a max pooling with a fused ReLU (the model builds it for relu + maxpool2d pairs). Max pooling
    keeps its output and gradient arrays between steps while the shapes stay the same (fresh large
    arrays cost page faults on every step).
    """

    def __init__(self, layer, need_dx: bool = True, relu: bool = False):
        super().__init__(layer, need_dx)
        self.relu = relu
        self._buffers: dict[str, tuple] = {}

    def _buffer(self, name: str, like: np.ndarray, shape) -> np.ndarray:
        """A kept array of ``shape`` in ``like``'s memory order, dtype; made again when any of them changes."""
        key = (tuple(shape), _memory_order(like), like.dtype)
        held = self._buffers.get(name)
        if held is None or held[0] != key:
            held = self._buffers[name] = (key, _like(like, shape, key[1]))
        return held[1]

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        L = self.layer
        if L.type == "maxpool2d":
            out = self._buffer("y", x, (*x.shape[:2], *_pq(x.shape, L.kernel_size, L.stride))) if train else None
            y = maxpool2d_values(x, L.kernel_size, L.stride, out=out, relu=self.relu)
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
            return maxpool2d_backward_by_compare(dy, a, b, L.kernel_size, L.stride,
                                                 out=self._buffer("dx", a, a.shape), relu=self.relu)
        return avgpool2d_backward(dy, a, L.kernel_size, L.stride)
