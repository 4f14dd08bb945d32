"""Compile-time variants of the tiled GEMM kernel timed against cuBLAS at one shape, on the GPU machine.

    python3 lab/gemm/variants.py [--shape 4096 4096 4096] [--layout nt|nn|tn] [--rounds 7] [--calls 10]

Each variant is the product's tiled GEMM kernel for one operand layout (``--layout``: "nt" the dense forward
X @ W^T, ``gemm.KERNELS[False, True]``, the default; "nn" its backward-data dY @ W; "tn" its backward-weights
dY^T @ X) compiled through ``runtime.kernel`` with a tile config and extra defines (GEMM_INTERIOR: see gemm.cu; a
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
ASYNC_VARIANTS = {  # name: defines of lab/gemm/gemm_async.cu (the layout's two are added per run)
    "async 256x128 s3": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=3),
    "async 256x128 s4": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=4),
    "async 256x128 s3 r232": dict(AS_BM=256, AS_BN=128, AS_TM=16, AS_TN=8, AS_STAGES=3, AS_MAXNREG=232),
    "async 128x256 s3": dict(AS_BM=128, AS_BN=256, AS_TM=8, AS_TN=16, AS_STAGES=3),
    "async 128x128 s4": dict(AS_BM=128, AS_BN=128, AS_TM=8, AS_TN=8, AS_STAGES=4),
    "async 128x128 s4 2b": dict(AS_BM=128, AS_BN=128, AS_TM=8, AS_TN=8, AS_STAGES=4, AS_MAXNREG=128),
}
LAYOUTS = {"nt": (False, True), "nn": (False, False), "tn": (True, False)}   # (trans_a, trans_b)


def _async_defines(name: str, layout: str) -> dict:
    trans_a, trans_b = LAYOUTS[layout]
    return {**ASYNC_VARIANTS[name], "AS_A_KCONTIG": int(not trans_a), "AS_B_KCONTIG": int(trans_b)}


def _async_function(defines: dict):
    from lab.common.kernels import lab_kernel

    pads = 4 * (2 - defines["AS_A_KCONTIG"] - defines["AS_B_KCONTIG"])   # an mn-contiguous tile's row padding
    smem = defines["AS_STAGES"] * 16 * (defines["AS_BM"] + defines["AS_BN"] + pads) * 4
    threads = (defines["AS_BM"] // defines["AS_TM"]) * (defines["AS_BN"] // defines["AS_TN"])
    return smem, threads, lab_kernel("gemm/gemm_async.cu", "gemm_async", defines=defines, smem=smem)


def _function(cfg_name: str, defines: dict, layout: str = "nt"):
    from custom_impl.gpu import gemm, runtime
    from lab.common.configs import tile_config

    cfg = tile_config(cfg_name)
    return cfg, runtime.kernel("gemm", gemm.KERNELS[LAYOUTS[layout]], defines={**cfg.defines, **defines},
                               smem=cfg.smem_bytes)


def _compile_one(name: str, layout: str) -> tuple[str, float, str]:
    t0 = time.perf_counter()
    try:
        if name in ASYNC_VARIANTS:
            _async_function(_async_defines(name, layout))
        else:
            _function(*VARIANTS[name], layout)
        return name, time.perf_counter() - t0, "ok"
    except Exception as err:  # reported per variant: one bad module must not hide the others
        return name, time.perf_counter() - t0, f"{type(err).__name__}: {err}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(4096, 4096, 4096))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="nt")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args(argv)
    names = [n for n in (*VARIANTS, *ASYNC_VARIANTS) if not args.only or n in args.only.split(",")]
    ctx = __import__("multiprocessing").get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(16, len(names)), mp_context=ctx) as pool:
        for name, secs, status in pool.map(_compile_one, names, [args.layout] * len(names)):
            print(f"compile {name:16s} {secs:6.1f} s  {status}", flush=True)

    import cupy
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    M, N, K = args.shape
    rng = np.random.default_rng(0)

    trans_a, trans_b = LAYOUTS[args.layout]

    def operands(m, n, k):
        """(a, b, out, torch's op(a) @ op(b)) as stored for the layout"""
        x = cupy.asarray(rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32))
        w = cupy.asarray(rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32))
        xt, wt = torch.as_tensor(x), torch.as_tensor(w)
        return x, w, cupy.empty((m, n), np.float32), lambda out=None: torch.matmul(
            xt.T if trans_a else xt, wt.T if trans_b else wt, out=out)

    def launcher(name, x, w, y):
        m, n = y.shape
        k = x.shape[0] if trans_a else x.shape[1]
        if name in ASYNC_VARIANTS:
            d = _async_defines(name, args.layout)
            if m % d["AS_BM"] or n % d["AS_BN"] or k % 16:
                return None  # interior tiles only
            smem, threads, fn = _async_function(d)
            a = (x, w, y, np.int32(m), np.int32(n), np.int32(k))
            return lambda: fn((n // d["AS_BN"], m // d["AS_BM"], 1), (threads,), a, shared_mem=smem)
        cfg, fn = _function(*VARIANTS[name], args.layout)
        # flag bits: float4 loads of A, of B (their rows' lengths multiples of 4), float4 stores of out
        flags = int((m if trans_a else k) % 4 == 0) | int((k if trans_b else n) % 4 == 0) << 1 | int(n % 4 == 0) << 2
        grid = ((n + cfg.bn - 1) // cfg.bn, (m + cfg.bm - 1) // cfg.bm, 1)
        zero = np.uint64(0)
        a = (x, w, y, zero, zero, zero, np.int32(m), np.int32(n), np.int32(k), np.int32(k), np.int32(0),
             np.int32(0), np.int32(flags))
        return lambda: fn(grid, (cfg.threads,), a, shared_mem=cfg.smem_bytes)

    # correctness against torch (strict FP32): this shape and an edge shape with partial tiles on M and N
    bad = 0
    for shape in ((M, N, K), (M + 1 - 128 * (M > 256), N - 4 - 64 * (N > 256), K)):
        x, w, y, matmul = operands(*shape)
        ref = matmul()
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

    x, w, y, matmul = operands(M, N, K)
    yt = torch.as_tensor(y)
    fns = {name: launcher(name, x, w, y) for name in names}
    fns = {name: fn for name, fn in fns.items() if fn is not None}
    fns["cublas"] = lambda: matmul(out=yt)
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
    print(f"\n=== {args.layout} {M}x{N}x{K}, {args.rounds} rounds of {args.calls} calls (median; min-max)")
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"{name:16s} {med*1e6:9.1f} us  {flops/med/1e12:5.1f} TFLOP/s  ratio {ref/med:5.3f}  "
              f"({min(ts)*1e6:.1f}-{max(ts)*1e6:.1f})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
