"""Host time of our conv wrappers without a GPU: conv2d_backward(need_dx=False) (the harness's backward_weights
row) with CuPy replaced by a stub whose kernel launches do nothing, so what is timed is our Python per eager
call on top of the launches themselves (each real CuPy launch costs ~8-25 us more on the GPU machine).

    python3 lab/conv/host_mock.py                                       # the small layers of the conv suite
    python3 lab/conv/host_mock.py --profile [N,C,H,W,K,R,S,stride,pad]  # cProfile's top functions for one
    python3 lab/conv/host_mock.py --tuned     # GoogLeNet's small layers and the conv suite's odd 33x17 layer,
                                              # every phase through "auto" with the choices cached as an
                                              # "auto" call leaves them ("implicit_gemm" with the cost model's
                                              # plan, or "winograd4"): repeated calls reuse their launches

Run it on a machine without CuPy (the stub is installed as ``cupy`` before our modules import it). The stub
covers what custom_impl/gpu reads of CuPy (arrays' shape, dtype, contiguity and address; ``RawModule``,
whose kernels do nothing; the device, stream and capture queries); a new CuPy call there needs a line here.
"""
from __future__ import annotations

import cProfile
import itertools
import os
import pstats
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl

SHAPES = {(256, 1, 28, 28, 32, 5, 5, 1, 2): "few_channels", (33, 17, 29, 31, 45, 3, 3, 1, 1): "implicit_gemm",
          (256, 3, 32, 32, 32, 3, 3, 1, 1): "few_channels"}   # the algorithms an H100 chose (lab/conv/choice_probe.py)
_addresses = itertools.count(1 << 20, 1 << 20)


class _Array:
    """What our wrappers read of a cupy.ndarray: shape, dtype, contiguity, size, device address."""

    def __init__(self, shape, dtype=np.float32):
        self.shape = tuple(int(v) for v in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        self.dtype = np.dtype(dtype)
        self.flags = types.SimpleNamespace(c_contiguous=True)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.data = types.SimpleNamespace(ptr=next(_addresses) * 256)

    def __getitem__(self, ix):
        """A slice along the first axis (what the wrappers cut workspaces and batch chunks with): its shape and
        the address of its first element."""
        ix = ix if isinstance(ix, tuple) else (ix,)
        start, stop, _ = ix[0].indices(self.shape[0])
        row = self.size // max(1, self.shape[0])
        part = object.__new__(_Array)    # no fresh address: a view into this array's memory
        part.shape, part.dtype, part.ndim = (max(0, stop - start),) + self.shape[1:], self.dtype, self.ndim
        part.flags, part.size = self.flags, part.shape[0] * row
        part.data = types.SimpleNamespace(ptr=self.data.ptr + start * row * self.dtype.itemsize)
        return part


class _Kernel:
    """A compiled kernel whose launch does nothing but count."""
    launches = 0
    max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem=0):
        _Kernel.launches += 1


def _install_stub() -> None:
    stub = types.ModuleType("cupy")
    stub.ndarray = _Array
    stub.empty = stub.zeros = lambda shape, dtype=np.float32: _Array(shape, dtype)
    stub.full = lambda shape, value, dtype=np.float32: _Array(shape, dtype)
    stub.empty_like = lambda a, dtype=None: _Array(a.shape, dtype or a.dtype)
    stub.ascontiguousarray = lambda a: a
    stub.RawModule = lambda code=None, options=(), **kw: types.SimpleNamespace(get_function=lambda name: _Kernel())
    device = types.SimpleNamespace(id=0, attributes={"MultiProcessorCount": 132}, compute_capability="90",
                                   synchronize=lambda: None)
    stub.cuda = types.SimpleNamespace(Device=lambda i=0: device,
                                      get_current_stream=lambda: types.SimpleNamespace(ptr=0),
                                      runtime=types.SimpleNamespace(streamIsCapturing=lambda p: 0, getDevice=lambda: 0))
    sys.modules["cupy"] = stub


def _row(shape, algo):
    """The harness's backward_weights call for this layer with weights algorithm ``algo`` (the choice an
    "auto" call would have timed and cached), outputs and workspace allocated once."""
    from custom_impl.gpu import conv

    N, C, H, W, K, R, S, st, pad = shape
    x, w = _Array((N, C, H, W)), _Array((K, C, R, S))
    dims = conv.conv_dims(x.shape, w.shape, (st, st), (pad, pad))
    dy, dW, db = _Array((N, K, dims.P, dims.Q)), _Array(w.shape), _Array((K,))
    size = conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad))
    ws = _Array((size,)) if size else None
    return lambda: conv.conv2d_backward(dy, x, w, (st, st), (pad, pad), need_dx=False, dW=dW, db=db, workspace=ws,
                                        weights_algo=algo)


# ((N, C, H, W, K, R, S, stride, pad), the algorithm "auto" is left with): GoogLeNet's 5x5 reduction branch at
# batch 16 and two of its 1x1 layers (the implicit GEMM), the conv suite's odd 33x17 layer (Winograd F(4x4, 3x3))
TUNED_SHAPES = [((16, 16, 14, 14, 48, 5, 5, 1, 2), "implicit_gemm"),
                ((64, 480, 14, 14, 16, 1, 1, 1, 0), "implicit_gemm"),
                ((16, 832, 7, 7, 256, 1, 1, 1, 0), "implicit_gemm"),
                ((33, 17, 29, 31, 45, 3, 3, 1, 1), "winograd4")]


def cache_choices(dims, algo=None) -> None:
    """Cache what an "auto" call's timing would leave for this layer: the implicit GEMM's plan of each phase
    (the cost model's first) and, with ``algo``, that algorithm as each phase's choice (the forward's with a
    bias). One candidate is cached untimed, so tuning is switched on for the caching only."""
    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import implicit_gemm

    runtime.AUTOTUNE = True
    for phase, plan in (("forward", implicit_gemm.forward_plan), ("backward_data", implicit_gemm.data_plan),
                        ("backward_weights", implicit_gemm.weights_plan)):
        first = plan(dims)[::2]
        runtime.autotune((implicit_gemm.FAMILY, phase, dims, 132), lambda first=first: {first: None}, first)
        if algo is not None:
            key = ("conv", phase, dims) + ((False,) if phase == "forward" else ())
            runtime.autotune(key, lambda: {algo: None}, algo)
    runtime.AUTOTUNE = False


def _tuned_rows(shape, algo="implicit_gemm"):
    """{phase: call} of the harness's three rows for this layer through "auto", after caching what an "auto"
    call's timing would leave (``cache_choices``): ``algo`` for each phase, the cost model's plan for the
    implicit GEMM."""
    from custom_impl.gpu import conv

    N, C, H, W, K, R, S, st, pad = shape
    x, w, b = _Array((N, C, H, W)), _Array((K, C, R, S)), _Array((K,))
    dims = conv.conv_dims(x.shape, w.shape, (st, st), (pad, pad))
    dy, y, dx, dW, db = (_Array((N, K, dims.P, dims.Q)), _Array((N, K, dims.P, dims.Q)), _Array(x.shape),
                         _Array(w.shape), _Array((K,)))
    size = conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad))
    ws = _Array((size,)) if size else None
    cache_choices(dims, algo)
    st, pad = (st, st), (pad, pad)
    return {"forward": lambda: conv.conv2d_forward(x, w, b, st, pad, out=y, workspace=ws),
            "backward_data": lambda: conv.conv2d_backward_data(dy, w, x.shape, st, pad, dx=dx, workspace=ws),
            "backward_weights": lambda: conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db,
                                                             workspace=ws)}


def _host_us(call, n: int = 4000) -> float:
    """Least microseconds per call over 7 batches of ``n`` calls (the development VM is noisy), after 200."""
    for _ in range(200):
        call()
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main(argv) -> int:
    _install_stub()
    from custom_impl.gpu import runtime

    if argv[:1] == ["--tuned"]:
        for shape, algo in TUNED_SHAPES:
            for phase, call in _tuned_rows(shape, algo).items():
                _Kernel.launches = 0
                us = _host_us(call, 2000)
                print(f"{shape} {algo} {phase}: {us:.1f} us of host time per call, "
                      f"{_Kernel.launches / (7 * 2000 + 200):.0f} launches (stubbed)")
        return 0
    runtime.AUTOTUNE = False  # nothing to time on the stub: tuned plans are the cost model's (one lookup)
    if argv[:1] == ["--profile"]:
        shape = tuple(int(v) for v in argv[1].split(",")) if len(argv) > 1 else next(iter(SHAPES))
        call = _row(shape, SHAPES.get(shape, "implicit_gemm"))
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5000):
            call()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return 0
    for shape, algo in SHAPES.items():
        call = _row(shape, algo)
        _Kernel.launches = 0
        us = _host_us(call, 4000)
        print(f"{shape} {algo}: {us:.1f} us of host time per call, "
              f"{_Kernel.launches / (7 * 4000 + 200):.0f} launches (stubbed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
