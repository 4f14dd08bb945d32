"""Host cost of our eager GPU calls, piece by piece (us per call, perf_counter over many calls).

    python3 lab/gemm/overhead.py

Small layers are launch-bound when called eagerly from Python: this says which part of a wrapper call
(argument checks, config choice, kernel lookup, the launch itself) the time goes to.
"""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab.common



def per_call_us(fn, n: int = 3000) -> float:
    import cupy

    for _ in range(50):
        fn()
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    cupy.cuda.Device().synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    import cupy
    import numpy as np

    import custom_impl
    from custom_impl.gpu import runtime, tiles
    from custom_impl.gpu.gemm import KERNELS, gemm
    from lab.common.timing import graph_time_ms

    nt = KERNELS[False, True]  # the tiled kernel for X @ W^T (the dense forward layout)

    ops = custom_impl.layer_ops("gpu")
    sms = runtime.sm_count()

    x = cupy.ones((64, 128), np.float32)
    W = cupy.ones((10, 128), np.float32)
    b = cupy.ones((10,), np.float32)
    y = cupy.empty((64, 10), np.float32)
    dy = cupy.ones((64, 10), np.float32)
    dx = cupy.empty((64, 128), np.float32)
    cfg, _ = tiles.choose_config(64, 10, 128, sms)
    kern = runtime.kernel("gemm", nt, defines=cfg.defines, smem=cfg.smem_bytes)
    args = (x, W, y, np.uint64(0), np.uint64(0), np.uint64(0), np.int32(64), np.int32(10), np.int32(128),
            np.int32(128), np.int32(0), np.int32(0), np.int32(0))
    rows = [
        ("raw RawKernel launch", lambda: kern((1, 1, 1), (cfg.threads,), args, shared_mem=cfg.smem_bytes)),
        ("runtime.check_array", lambda: runtime.check_array(x, "x", ndim=2)),
        ("cupy.cuda.Device().id", lambda: cupy.cuda.Device().id),
        ("tiles.choose_config (cached)", lambda: tiles.choose_config(64, 10, 128, sms)),
        ("runtime.kernel lookup", lambda: runtime.kernel("gemm", nt, defines=cfg.defines,
                                                         smem=cfg.smem_bytes)),
        ("gemm(dy, W, dx)  [bwd-data row]", lambda: gemm(dy, W, dx)),
        ("gemm(x, W, y, trans_b)", lambda: gemm(x, W, y, trans_b=True)),
        ("gemm(x, W, y, trans_b, bias)", lambda: gemm(x, W, y, trans_b=True, bias=b)),
        ("dense_forward(x, W, b, out=y) [fwd row]", lambda: ops.dense_forward(x, W, b, out=y)),
    ]
    for name, fn in rows:
        print(f"{name:42s} {per_call_us(fn):8.2f} us")

    # split-K of small GEMMs: eager per-call time (host loop) and GPU time in a graph, per split count,
    # next to what choose_config picks eagerly / in a graph
    print(f"\n{'GEMM (M, N, K, trans)':30s} {'splits':>6s} {'eager us':>9s} {'graph us':>9s}  chosen eager/graph")
    rng = np.random.default_rng(0)
    for M, N, K, tb in [(64, 10, 128, True), (64, 128, 784, True), (64, 1024, 784, True), (64, 1024, 1024, False),
                        (1024, 10, 1024, True), (1024, 128, 784, True), (33, 1000, 513, True), (128, 10, 1024, False),
                        (8192, 10, 128, True), (1024, 1024, 1024, True)]:
        a = cupy.asarray(rng.standard_normal((M, K)).astype(np.float32))
        b = cupy.asarray(rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32))
        out = cupy.empty((M, N), np.float32)
        ce = tiles.choose_config(M, N, K, sms)
        cg = tiles.choose_config(M, N, K, sms, launch_s=runtime.GRAPH_LAUNCH_S)
        for splits in (1, 2, 4, 8, 16):
            if splits > 1 and K // splits < 64:
                break
            cfg = ce[0]
            fn = lambda: gemm(a, b, out, trans_b=tb, config=cfg, splits=splits)  # noqa: E731
            e = per_call_us(fn, 1000)
            g = graph_time_ms(fn) * 1e3
            print(f"{str((M, N, K, tb)):30s} {splits:6d} {e:9.1f} {g:9.1f}  {ce[0].name}/{ce[1]}  {cg[0].name}/{cg[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
