"""Where the host time of an eager small conv weight-gradient call goes, on the GPU machine (real CuPy).

    python3 lab/conv/host_pieces.py

For the small layers of lab/conv/choice_probe.py (backward_weights + bias grad, the rows behind conv_suite_min),
per eager ``conv.conv2d_backward(need_dx=False)`` call, host time only (perf_counter over many calls, no
sync inside the loop):

- ``whole call``: the call as the harness makes it;
- ``launches skipped``: the same call with every kernel launch made a no-op (our Python and CuPy's array
  checks, the plans, the workspace, but no launch);
- ``launches alone``: the recorded launches of one call replayed directly (``Function.__call__`` with the
  same grid, block and arguments), and the same with the array arguments passed as raw pointers;
- ``bare launch``: one launch of a one-thread kernel with 1 and with 16 scalar arguments.

Kernel lookups are wrapped by replacing ``custom_impl.gpu.runtime.kernel`` before the first conv call (every
family looks its kernels up through it; launches cached by an earlier call would escape the wrapper).
"""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab

import numpy as np  # noqa: E402


class _Recorder:
    """Stands for a ``cupy.RawModule`` function: records each launch and runs it unless ``skip``."""

    log: list | None = None
    skip = False

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)

    def __call__(self, grid, block, args, **kw):
        if _Recorder.log is not None:
            _Recorder.log.append((self.fn, grid, block, args, kw))
        if not _Recorder.skip:
            self.fn(grid, block, args, **kw)

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def __setattr__(self, name, value):
        setattr(self.fn, name, value)


def _patch_lookups():
    from custom_impl.gpu import runtime

    real = runtime.kernel

    def wrapped(family, name, defines=None, smem=0):
        return _Recorder(real(family, name, defines, smem))

    runtime.kernel = wrapped


def per_call_us(fn, n: int = 2000) -> float:
    import cupy

    for _ in range(20):
        fn()
    cupy.cuda.Device().synchronize()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n // 5):
            fn()
        best = min(best, (time.perf_counter() - t) / (n // 5))
        cupy.cuda.Device().synchronize()
    return best * 1e6


BARE = r"""
extern "C" __global__ void bare1(float* p, int a) { if (a < 0) p[0] = 1.0f; }
extern "C" __global__ void bare16(float* p, int a0, int a1, int a2, int a3, int a4, int a5, int a6, int a7,
                                  int a8, int a9, int a10, int a11, int a12, int a13, int a14, int a15)
{ if (a0 + a15 < 0) p[0] = 1.0f; }
"""


def main() -> int:
    import cupy

    from custom_impl.gpu import conv
    from lab.conv.choice_probe import SHAPES, setup_layer

    _patch_lookups()
    mod = cupy.RawModule(code=BARE)
    b1, b16 = mod.get_function("bare1"), mod.get_function("bare16")
    buf = cupy.empty((4,), np.float32)
    one, sixteen = (buf, np.int32(1)), (buf,) + tuple(np.int32(i) for i in range(16))
    ptr_args = (np.uint64(buf.data.ptr),) + sixteen[1:]
    print(f"bare launch, 1 pointer + 1 int         {per_call_us(lambda: b1((1,), (1,), one)):7.2f} us")
    print(f"bare launch, 1 pointer + 16 ints       {per_call_us(lambda: b16((1,), (1,), sixteen)):7.2f} us")
    print(f"bare launch, raw pointer + 16 ints     {per_call_us(lambda: b16((1,), (1,), ptr_args)):7.2f} us")
    print(f"cupy.empty((800,), float32)            {per_call_us(lambda: cupy.empty((800,), np.float32)):7.2f} us")
    print(f"cupy.cuda.get_current_stream()         {per_call_us(cupy.cuda.get_current_stream):7.2f} us")
    print(f"cupy.cuda.Device().id                  {per_call_us(lambda: cupy.cuda.Device().id):7.2f} us")
    for shape in SHAPES:
        x, w, dy, dW, db, ws, dims, st, pad = setup_layer(shape)

        def call():
            conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db, workspace=ws)

        for _ in range(5):
            call()
        cupy.cuda.Device().synchronize()
        _Recorder.log = []
        call()
        launches, _Recorder.log = _Recorder.log, None
        whole = per_call_us(call)
        _Recorder.skip = True
        skipped = per_call_us(call)
        _Recorder.skip = False

        def replay(launches=launches):
            for fn, grid, block, args, kw in launches:
                fn(grid, block, args, **kw)

        raw = [(fn, g, b, tuple(np.uint64(a.data.ptr) if isinstance(a, cupy.ndarray) else a for a in args), kw)
               for fn, g, b, args, kw in launches]
        alone = per_call_us(replay)
        alone_raw = per_call_us(lambda: replay(raw))
        print(f"\n=== N,C,H,W,K,R,S,stride,pad = {shape}, eager backward_weights + bias grad")
        for fn, grid, block, args, kw in launches:
            print(f"  launch grid {grid} block {block} {len(args)} args {kw}")
        print(f"  whole call          {whole:7.1f} us")
        print(f"  launches skipped    {skipped:7.1f} us   (our Python + CuPy around the launches)")
        print(f"  launches alone      {alone:7.1f} us   ({len(launches)} launches; raw pointers: {alone_raw:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
