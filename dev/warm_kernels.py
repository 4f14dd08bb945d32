"""Compile our kernel modules in parallel into CuPy's on-disk kernel cache, before a test or benchmark run.

    python3 dev/warm_kernels.py [--jobs 16]

A fresh GPU machine compiles every tile configuration's module with NVRTC on first use, one after another
(~10-20 s each for gemm.cu; the gemm and conv families have one module per tile configuration). Here each module
is compiled in its own process, so a 16-core host fills the cache in about the time of the slowest one;
later processes (pytest, the harness) load the compiled modules from ~/.cupy/kernel_cache.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _compile(job: tuple[str, str, str | None]) -> tuple[str, float, str]:
    family, name, cfg_name = job
    t0 = time.perf_counter()
    try:
        from custom_impl.gpu import gemm

        cfg = gemm.CONFIG_BY_NAME[cfg_name] if cfg_name else None
        gemm.kernel(family, name, cfg)
        return f"{family}:{name}:{cfg_name}", time.perf_counter() - t0, "ok"
    except Exception as err:  # reported, not raised: one bad module must not hide the others' results
        return f"{family}:{name}:{cfg_name}", time.perf_counter() - t0, f"{type(err).__name__}: {err}"


def jobs() -> list[tuple[str, str, str | None]]:
    from custom_impl.gpu import conv, gemm

    out = [("gemm", "gemm_v2_nn", c.name) for c in gemm.CONFIGS + gemm.EXTRA_CONFIGS]
    out += [("gemm", "gemm_v1", None)]
    out += [("conv", "conv_v2_forward", c.name) for c in conv.CONV_CONFIGS]
    out += [("conv", "conv_v1_forward", None)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    bad = 0
    ctx = __import__("multiprocessing").get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        for what, secs, status in pool.map(_compile, jobs()):
            bad += status != "ok"
            print(f"{what:48s} {secs:6.1f} s  {status}", flush=True)
    print(f"warmed in {time.perf_counter() - t0:.0f} s, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
