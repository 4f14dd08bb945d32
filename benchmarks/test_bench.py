"""pytest-benchmark suite: ours vs PyTorch over layer shapes and zoo models, parity-checked first.

Parameters are the jobs of a harness suite (``BENCH_SUITE_CPU``, default ``quick``, on the CPU;
``BENCH_SUITE_GPU``, default ``gpu``, on the GPU; GPU parameters carry the ``gpu`` marker and skip
cleanly without a GPU). One benchmark group per (workload, phase, device), so pytest-benchmark's table
compares the variants of one shape side by side.

GPU-correct timing: each timed round is ``fn(); synchronize the device`` (every stream; for JAX rows, wait
until fn's outputs are ready), so the time includes the work ``fn`` queued, not only the launch; the
harness's timer's median (CUDA events; JAX's clock for JAX rows) is recorded next to it in
``extra_info["event_median_ms"]``. ``extra_info`` also has the FLOPs, TFLOP/s,
parity error and the row metadata that ``python -m harness report bench.json`` and ``python -m harness
compare a.json b.json`` read.

Run (not part of CI's test run):
    python -m pytest benchmarks/ --benchmark-json=bench.json          # CPU params; GPU ones skip
    python -m pytest benchmarks/ -m gpu --benchmark-json=bench-gpu.json
    python -m harness report bench.json
"""
from __future__ import annotations

import os
import time

import pytest

from harness.suites import load_suite
from harness.timer import measure
from harness.workloads import LayerCase, ModelCase, layer_tolerance, set_strict_fp32

SETTINGS = {"seed": 0, "lr": 0.01, "momentum": 0.9}
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "0.2"))


def _jobs():
    params = []
    for device, env_name, default in (("cpu", "BENCH_SUITE_CPU", "quick"), ("gpu", "BENCH_SUITE_GPU", "gpu")):
        suite = load_suite(os.environ.get(env_name, default))
        for job in suite.jobs(device):
            if "compile" in job.variant:
                continue
            marks = [pytest.mark.gpu] if device == "gpu" else []
            jid = f"{device}-{job.workload}-b{job.batch}-{job.phase}-{job.impl}-{job.variant}"
            params.append(pytest.param(job, id=jid, marks=marks))
    return params


def _sync(clock: str):
    """Wait for the work a call queued: ``sync(out)`` with the call's output (JAX waits on it)."""
    if clock == "jax":
        import jax

        return jax.block_until_ready
    if clock == "cupy":
        import cupy

        return lambda out: cupy.cuda.runtime.deviceSynchronize()
    if clock == "torch":
        import torch

        return lambda out: torch.cuda.synchronize()
    return lambda out: None


@pytest.mark.parametrize("job", _jobs())
def test_bench(benchmark, job):
    set_strict_fp32()
    if job.kind == "model":
        case = ModelCase(job.p()["spec"], job.batch, job.device, SETTINGS)
        against, err, tol = case.parity(job)
        prep = case.prepare(job)
    else:
        case = LayerCase(job, SETTINGS)
        prep = case.prepare(job)
        (against, err), tol = case.parity(job, prep.fn), layer_tolerance(job)
    assert err <= tol, f"parity failed: rel err {err:.3g} > {tol:g} against {against}"

    fn, sync = prep.fn, _sync(prep.clock)

    def call():
        sync(fn())

    for _ in range(3):   # warm-up: compilation, autotuning, graph capture
        call()
    t0 = time.perf_counter()
    call()
    one = max(time.perf_counter() - t0, 1e-7)
    rounds = int(min(500, max(5, BUDGET_S / one)))
    event = measure(fn, prep.clock, warmup=1, budget_s=BUDGET_S / 2, min_repeats=5)

    benchmark.group = f"{job.device} {job.workload} {job.phase}"
    benchmark.extra_info.update(
        impl=job.impl, variant=job.variant, device=job.device, workload=job.workload, kind=job.kind,
        batch=job.batch, phase=job.phase, precision="fp32", spec_hash=job.spec_hash, shape=prep.shape,
        flops=prep.flops,
        parity_against=against, parity_rel_err=err, parity_ok=bool(err <= tol),
        event_median_ms=event.median_ms, timer=prep.clock)
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None)
    if median:
        benchmark.extra_info["tflops"] = prep.flops / median / 1e12
