"""Compile-time variants of the tiled GEMM kernel timed against cuBLAS at one shape, on the GPU machine.

    python3 lab/gemm/variants.py [--shape 4096 4096 4096] [--rounds 7] [--calls 10]

Each variant is the product's tiled GEMM kernel for the dense forward layout (X @ W^T: ``gemm.KERNELS[False, True]``)
compiled through ``runtime.kernel`` with a tile config and extra defines (GEMM_INTERIOR: see gemm.cu; a
serpentine FFMA order, k loops unrolled by 8 and a grouped block order were timed this way too, all slower:
docs/kernels.md).
The "async" variants are the experiment lab/gemm/gemm_async.cu (cp.async multi-stage pipeline, tiles kept
[mn][k] with a swizzle; interior shapes only, so they are checked at the main shape alone), with its defines.
All modules are compiled first in parallel processes (CuPy's on-disk cache), then timed in interleaved
rounds (each round times every variant and torch once: clock drift hits all alike); each variant's result
is checked against torch's at this shape and at an edge shape with partial tiles.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab.common

import numpy as np  # noqa: E402

VARIANTS = {  # name: (tile config, extra defines); "default" = the build gemm.py launches
    "256x128x16 checked": ("256x128x16_16x8", dict(GEMM_INTERIOR=0)),
    "256x128x16 default": ("256x128x16_16x8", {}),
    "256x128x8 default": ("256x128x8_16x8", {}),
    "128x256x16 default": ("128x256x16_8x16", {}),
    "128x128x16 default": ("128x128x16_8x8", {}),
    "128x128x16 interior": ("128x128x16_8x8", dict(GEMM_INTERIOR=1)),
}
ASYNC_VARIANTS = {  # name: defines of lab/gemm/gemm_async.cu
    "async 256x128 s3": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=3),
    "async 256x128 s4": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=4),
    "async 256x128 s3 r232": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=3, AS_MAXNREG=232),
    "async 128x256 s3": dict(AS_BM=128, AS_BN=256, AS_TM=8, AS_TN=16, AS_STAGES=3),
    "async 128x128 s4": dict(AS_BM=128, AS_BN=128, AS_TM=8, AS_TN=8, AS_STAGES=4),
    "async 128x128 s4 2b": dict(AS_BM=128, AS_BN=128, AS_TM=8, AS_TN=8, AS_STAGES=4, AS_MAXNREG=128),
}


def _async_function(defines: dict):
    from lab.common.kernels import lab_kernel

    smem = defines["AS_STAGES"] * 16 * (defines["AS_BM"] + defines["AS_BN"]) * 4
    threads = (defines["AS_BM"] // defines["AS_TM"]) * (defines["AS_BN"] // defines["AS_TN"])
    return smem, threads, lab_kernel("gemm/gemm_async.cu", "gemm_async_nt", defines=defines, smem=smem)


def _function(cfg_name: str, defines: dict):
    from custom_impl.gpu import gemm, runtime
    from lab.common.configs import tile_config

    cfg = tile_config(cfg_name)
    return cfg, runtime.kernel("gemm", gemm.KERNELS[False, True], defines={**cfg.defines, **defines}, smem=cfg.smem_bytes)


def _compile_one(name: str) -> tuple[str, float, str]:
    t0 = time.perf_counter()
    try:
        if name in ASYNC_VARIANTS:
            _async_function(ASYNC_VARIANTS[name])
        else:
            _function(*VARIANTS[name])
        return name, time.perf_counter() - t0, "ok"
    except Exception as err:  # reported per variant: one bad module must not hide the others
        return name, time.perf_counter() - t0, f"{type(err).__name__}: {err}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(4096, 4096, 4096))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args(argv)
    names = [n for n in (*VARIANTS, *ASYNC_VARIANTS) if not args.only or n in args.only.split(",")]
    ctx = __import__("multiprocessing").get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(16, len(names)), mp_context=ctx) as pool:
        for name, secs, status in pool.map(_compile_one, names):
            print(f"compile {name:16s} {secs:6.1f} s  {status}", flush=True)

    import cupy
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    M, N, K = args.shape
    rng = np.random.default_rng(0)

    def operands(m, n, k):
        x = cupy.asarray(rng.standard_normal((m, k), dtype=np.float32))
        w = cupy.asarray(rng.standard_normal((n, k), dtype=np.float32))
        return x, w, cupy.empty((m, n), np.float32)

    def launcher(name, x, w, y):
        m, k = x.shape
        n = w.shape[0]
        if name in ASYNC_VARIANTS:
            d = ASYNC_VARIANTS[name]
            if m % d["AS_BM"] or n % d["AS_BN"] or k % 16:
                return None  # interior tiles only
            smem, threads, fn = _async_function(d)
            a = (x, w, y, np.int32(m), np.int32(n), np.int32(k))
            return lambda: fn((n // d["AS_BN"], m // d["AS_BM"], 1), (threads,), a, shared_mem=smem)
        cfg, fn = _function(*VARIANTS[name])
        grid = ((n + cfg.bn - 1) // cfg.bn, (m + cfg.bm - 1) // cfg.bm, 1)
        zero = np.uint64(0)
        a = (x, w, y, zero, zero, zero, np.int32(m), np.int32(n), np.int32(k), np.int32(k), np.int32(0),
             np.int32(0), np.int32(1 | 2 | (4 if n % 4 == 0 else 0)))
        return lambda: fn(grid, (cfg.threads,), a, shared_mem=cfg.smem_bytes)

    # correctness against torch (strict FP32): this shape and an edge shape with partial tiles on M and N
    bad = 0
    for shape in ((M, N, K), (M + 1 - 128 * (M > 256), N - 4 - 64 * (N > 256), K)):
        x, w, y = operands(*shape)
        ref = torch.as_tensor(x) @ torch.as_tensor(w).T
        scale = float(ref.abs().max())
        for name in names:
            y.fill(np.nan)
            run = launcher(name, x, w, y)
            if run is None:
                continue
            run()
            err = float((torch.as_tensor(y) - ref).abs().max())
            # fp32 sums of K products in another order: ~sqrt(K) ulps of the largest partial sums
            ok = err <= 1e-5 * scale
            bad += not ok
            print(f"check {name:16s} {shape} max|diff| {err:.3e} (scale {scale:.1f}) {'ok' if ok else 'FAIL'}")

    x, w, y = operands(M, N, K)
    xt, wt, yt = torch.as_tensor(x), torch.as_tensor(w), torch.as_tensor(y)
    fns = {name: launcher(name, x, w, y) for name in names}
    fns["cublas"] = lambda: torch.matmul(xt, wt.T, out=yt)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for r in range(args.rounds):
        for name, fn in fns.items():
            fn()
            start.record()
            for _ in range(args.calls):
                fn()
            stop.record()
            stop.synchronize()
            times[name].append(cupy.cuda.get_elapsed_time(start, stop) / args.calls * 1e-3)
    flops = 2.0 * M * N * K
    ref = float(np.median(times["cublas"]))
    print(f"\n=== {M}x{N}x{K}, {args.rounds} rounds of {args.calls} calls (median; min-max)")
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"{name:16s} {med*1e6:9.1f} us  {flops/med/1e12:5.1f} TFLOP/s  ratio {ref/med:5.3f}  "
              f"({min(ts)*1e6:.1f}-{max(ts)*1e6:.1f})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
