"""Max and average pooling on the GPU (kernels in ``custom_impl/kernels/pool.cu``).

Legend: N batch, C channels, H,W input, P,Q output, R,S window, (sh, sw) stride; no padding (the spec
has none for pools): P = (H - R) // sh + 1, Q = (W - S) // sw + 1. Windows may overlap (stride < window).

Forward and backward take the same arguments in the same order; dx is written (=) once per element,
deterministically (no atomics). Backward algorithms (``algo=``): "tiled" (stride >= window in both
directions: one thread per window writes its tile of dx, which no other window touches) or "gather" (any
stride: one thread per input pixel sums over the windows covering it); "auto" (the default) picks tiled
whenever it applies.
Max pooling saves ``argmax`` (N, C, P, Q) int32, the position r*S + s of the first maximum in each
window (PyTorch's tie rule), for its backward. ``relu=True`` fuses a ReLU in front of max pooling
(the spec's relu -> maxpool2d): y = relu(max x) = max relu(x); its backward routes dy only where y > 0
and needs the pooled output ``y``. Every function takes ``out=``-style arrays and then
allocates nothing (CUDA-graph capturable); launches go to CuPy's current stream. ``index64=True`` forces
the 64-bit-index kernels (used automatically from 2^31 elements; tests force them on small shapes).
``PoolStep`` is the GPU model's pooling layer (with the relu in front fused, see ``relu``).
"""
from __future__ import annotations

import numpy as np

from . import runtime
from .runtime import blocks, check_array
from .step import Step

THREADS = 256
KERNELS = {"maxpool2d": "maxpool2d_forward (a thread per output, optional fused relu; 32-bit index math "
                        "below 2^31 elements); backward tiled (stride >= window) or gather",
           "avgpool2d": "avgpool2d_forward; backward tiled or gather (as max)"}
BACKWARD_ALGOS = ("tiled", "gather")
INDEX32_LIMIT = 2 ** 31  # arrays below this many elements use the `_i32` entry points

runtime.register_family("pool")


def _kernel(name: str, x_size: int, y_size: int, index64: bool):
    """The kernel ``name`` with 32-bit index arithmetic when both arrays allow it (unless index64)."""
    small = max(int(x_size), int(y_size)) < INDEX32_LIMIT
    return runtime.kernel("pool", name if index64 or not small else f"{name}_i32")


def pool_output_shape(x_shape, kernel_size, stride) -> tuple[int, int, int, int]:
    """(N, C, P, Q) of pooling an (N, C, H, W) input with window (R, S) and stride (sh, sw)."""
    n, c, h, w = x_shape
    (r, s), (sh, sw) = kernel_size, stride
    if r > h or s > w:
        raise ValueError(f"pool window {r}x{s} is larger than the input {h}x{w}")
    return (n, c, (h - r) // sh + 1, (w - s) // sw + 1)


def _scalars(x_shape, y_shape, kernel_size, stride):
    n, c, h, w = x_shape
    _, _, p, q = y_shape
    (r, s), (sh, sw) = kernel_size, stride
    return tuple(np.int32(v) for v in (n * c, h, w, p, q, r, s, sh, sw))


def _check_pairs(kernel_size, stride):
    kernel_size = tuple(int(k) for k in kernel_size)
    stride = tuple(int(k) for k in stride)
    if len(kernel_size) != 2 or len(stride) != 2 or min(kernel_size + stride) < 1:
        raise ValueError(f"kernel_size and stride must be pairs of positive ints, got {kernel_size}, {stride}")
    return kernel_size, stride


def _argmax_buffer(shape, argmax):
    import cupy

    if argmax is None:
        return cupy.empty(shape, dtype=np.int32)
    if not isinstance(argmax, cupy.ndarray) or argmax.dtype != np.int32 or tuple(argmax.shape) != tuple(shape) \
            or not argmax.flags.c_contiguous:
        raise ValueError(f"argmax: expected a C-contiguous int32 cupy array of shape {tuple(shape)}")
    return argmax


def backward_algo(kernel_size, stride, algo="auto") -> str:
    """The backward algorithm that runs: ``algo``, or for "auto" "tiled" when the windows do not overlap
    (stride >= window in both directions), else "gather". Raises ValueError for "tiled" on overlapping
    windows or an unknown name."""
    if algo == "auto":
        return "tiled" if stride[0] >= kernel_size[0] and stride[1] >= kernel_size[1] else "gather"
    if algo not in BACKWARD_ALGOS:
        raise ValueError(f"unknown pool backward algo {algo!r}; choose 'auto' or one of {', '.join(BACKWARD_ALGOS)}")
    if algo == "tiled" and (stride[0] < kernel_size[0] or stride[1] < kernel_size[1]):
        raise ValueError(f"the tiled pool backward needs stride >= window, got stride {stride}, window "
                         f"{kernel_size}; use algo='gather' (or 'auto')")
    return algo


def maxpool2d_forward(x, kernel_size, stride, out=None, argmax=None, relu=False, index64=False):
    """y[n,c,p,q] = max over r<R, s<S of x[n,c,p*sh+r,q*sw+s] (relu of it with ``relu``); ``(y, argmax)``.

    x (N, C, H, W) float32 -> y (N, C, P, Q) float32, argmax (N, C, P, Q) int32 (saved for backward).

    >>> y, am = maxpool2d_forward(x, (2, 2), (2, 2))            # doctest: +SKIP
    """
    import cupy

    kernel_size, stride = _check_pairs(kernel_size, stride)
    check_array(x, "x", ndim=4)
    y_shape = pool_output_shape(x.shape, kernel_size, stride)
    y = cupy.empty(y_shape, dtype=np.float32) if out is None else check_array(out, "out", shape=y_shape)
    argmax = _argmax_buffer(y_shape, argmax)
    total = int(np.prod(y_shape))
    scalars = _scalars(x.shape, y_shape, kernel_size, stride) + (np.int32(bool(relu)),)
    _kernel("maxpool2d_forward", x.size, total, index64)((blocks(total, THREADS),), (THREADS,),
                                                         (x, y, argmax, *scalars))
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape, kernel_size, stride, dx=None, y=None, relu=False, index64=False,
                       algo="auto"):
    """dx[n,c,h,w] = sum of dy[n,c,p,q] over the windows (p, q) whose first maximum is (h, w).

    dy (N, C, P, Q), argmax (N, C, P, Q) int32 from the forward -> dx (N, C, H, W) (written, =).
    With ``relu`` (fused in front of the pool), only windows whose pooled output y[n,c,p,q] > 0 pass dy on.
    """
    import cupy

    kernel_size, stride = _check_pairs(kernel_size, stride)
    x_shape = tuple(int(v) for v in x_shape)
    y_shape = pool_output_shape(x_shape, kernel_size, stride)
    check_array(dy, "dy", shape=y_shape)
    _argmax_buffer(y_shape, argmax)
    if relu:
        if y is None:
            raise ValueError("maxpool2d_backward with relu=True needs y, the pooled output of the forward")
        check_array(y, "y", shape=y_shape)
    else:
        y = dy  # NOTE: not read by the kernel without relu; any valid pointer will do
    dx = cupy.empty(x_shape, dtype=np.float32) if dx is None else check_array(dx, "dx", shape=x_shape)
    algo = backward_algo(kernel_size, stride, algo)
    scalars = _scalars(x_shape, y_shape, kernel_size, stride) + (np.int32(bool(relu)),)
    total = int(np.prod(x_shape)) if algo == "gather" else int(np.prod(y_shape))  # threads: pixels / windows
    name = "maxpool2d_backward" if algo == "gather" else "maxpool2d_backward_tiled"
    _kernel(name, int(np.prod(x_shape)), dy.size, index64)((blocks(total, THREADS),), (THREADS,),
                                                           (dy, argmax, y, dx, *scalars))
    return dx


def avgpool2d_forward(x, kernel_size, stride, out=None, index64=False):
    """y[n,c,p,q] = (1 / (R*S)) * sum over r<R, s<S of x[n,c,p*sh+r,q*sw+s]; x (N,C,H,W) -> y (N,C,P,Q)."""
    import cupy

    kernel_size, stride = _check_pairs(kernel_size, stride)
    check_array(x, "x", ndim=4)
    y_shape = pool_output_shape(x.shape, kernel_size, stride)
    y = cupy.empty(y_shape, dtype=np.float32) if out is None else check_array(out, "out", shape=y_shape)
    total = int(np.prod(y_shape))
    _kernel("avgpool2d_forward", x.size, total, index64)((blocks(total, THREADS),), (THREADS,),
                                                         (x, y, *_scalars(x.shape, y_shape, kernel_size, stride)))
    return y


def avgpool2d_backward(dy, x_shape, kernel_size, stride, dx=None, index64=False, algo="auto"):
    """dx[n,c,h,w] = sum of dy[n,c,p,q] / (R*S) over the windows (p, q) covering (h, w); written (=)."""
    import cupy

    kernel_size, stride = _check_pairs(kernel_size, stride)
    x_shape = tuple(int(v) for v in x_shape)
    y_shape = pool_output_shape(x_shape, kernel_size, stride)
    check_array(dy, "dy", shape=y_shape)
    dx = cupy.empty(x_shape, dtype=np.float32) if dx is None else check_array(dx, "dx", shape=x_shape)
    algo = backward_algo(kernel_size, stride, algo)
    total = int(np.prod(x_shape)) if algo == "gather" else int(np.prod(y_shape))
    name = "avgpool2d_backward" if algo == "gather" else "avgpool2d_backward_tiled"
    _kernel(name, int(np.prod(x_shape)), dy.size, index64)((blocks(total, THREADS),), (THREADS,),
                                                           (dy, dx, *_scalars(x_shape, y_shape, kernel_size, stride)))
    return dx


class PoolStep(Step):
    """Max / average pooling (N, C, H, W) -> (N, C, P, Q); max saves ``argmax`` (N, C, P, Q) int32.

    ``relu=True``: the spec's relu followed by maxpool2d as one step, y = relu(max x) (= max relu(x));
    backward routes dy to the window's maximum only where y > 0, which is relu' there. This saves the
    relu's full-size output and both of its passes.
    """

    kind = "pool"

    def __init__(self, layer, relu=False):
        super().__init__(layer, act="relu" if relu else None)
        self.relu = relu

    def alloc(self, n):
        import cupy

        if self.layer.type == "maxpool2d":
            return cupy.empty((n, *self.out_shape), dtype=np.int32)  # argmax (N, C, P, Q)
        return None

    def forward(self, model, x, y, saved, ws):
        k, s = self.layer.kernel_size, self.layer.stride
        if self.layer.type == "maxpool2d":
            maxpool2d_forward(x, k, s, out=y, argmax=saved, relu=self.relu)
        else:
            avgpool2d_forward(x, k, s, out=y)

    def backward(self, model, dy, x, y, saved, dx, ws):
        k, s = self.layer.kernel_size, self.layer.stride
        if self.layer.type == "maxpool2d":
            maxpool2d_backward(dy, saved, x.shape, k, s, dx=dx, y=y, relu=self.relu)
        else:
            avgpool2d_backward(dy, x.shape, k, s, dx=dx)
