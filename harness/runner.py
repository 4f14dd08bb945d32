"""Running a suite: for every job, check parity, time it, and write one row (resuming finished rows)."""
from __future__ import annotations

import sys
import time
import traceback

from . import env as envmod
from .parity import judge
from .results import ResultsWriter, Row
from .suites import Job, Suite
from .timer import measure
from .workloads import (LayerCase, ModelCase, Unsupported, free_device_memory, is_oom, layer_tolerance,
                        precision_context, set_strict_fp32, shape_text)


class _Cases:
    """Keeps the most recent model / layer case so the rows that share one reuse data and baselines."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.key = None
        self.case = None

    def get(self, job: Job):
        if job.kind == "model":
            key = ("model", job.p()["spec"], job.batch, job.device)
        else:
            key = (job.kind, job.workload, job.phase, job.device)
        if key != self.key:
            self.case = None
            free_device_memory(collect=job.device == "gpu")
            self.case = (ModelCase(job.p()["spec"], job.batch, job.device, self.settings) if job.kind == "model"
                         else LayerCase(job, self.settings))
            self.key = key
        return self.case


def base_row(job: Job, device_name: str, settings: dict) -> Row:
    return Row(impl=job.impl, variant=job.variant, device=job.device, workload=job.workload, kind=job.kind,
               batch=job.batch, phase=job.phase, precision=job.precision,
               shape="" if job.kind == "model" else shape_text(job), cold_l2=bool(settings.get("cold_l2")),
               device_name=device_name, spec_hash=job.spec_hash)


def run_job(job: Job, cases: _Cases, settings: dict, device_name: str, peak_tflops: float | None) -> Row:
    """Measure one job; never raises except KeyboardInterrupt (failures become the row's status)."""
    row = base_row(job, device_name, settings)
    try:
        with precision_context(job):
            _measure_row(job, row, cases, settings, peak_tflops)
    except KeyboardInterrupt:
        raise
    except Unsupported as err:
        row.status, row.reason = "unsupported", str(err)
    except Exception as err:  # noqa: BLE001 - a failing row must not stop the sweep
        _failed(job, row, cases, err)
    return row


def _measure_row(job: Job, row: Row, cases: _Cases, settings: dict, peak_tflops: float | None) -> None:
    """Parity, then timing, into ``row`` (raises what run_job turns into the row's status)."""
    case = cases.get(job)
    if job.kind == "model":
        row.flops = case.flops(job.phase)
        against, err, tol = case.parity(job)      # first: the timed call reuses the checked model
        prep = case.prepare(job)
    else:
        prep = case.prepare(job)
        against, err = case.parity(job, prep.fn)
        tol = layer_tolerance(job)
    # rows of ours at tf32 / bf16 are also held to 2x PyTorch's error at that precision (parity.judge)
    ok, bar, why = judge(err, tol, job.precision, case.torch_error(job))
    row.flops = prep.flops
    row.parity_against = against
    row.parity_rel_err = err
    row.parity_ok = ok
    row.parity_tol = bar
    m = measure(prep.fn, prep.clock, warmup=int(settings["warmup"]), budget_s=float(settings["budget_s"]),
                min_repeats=int(settings["min_repeats"]), max_repeats=int(settings["max_repeats"]),
                min_sample_ms=float(settings["min_sample_ms"]),
                cold_l2=bool(settings["cold_l2"]) and job.device == "gpu")
    row.median_ms, row.iqr_ms, row.min_ms = m.median_ms, m.iqr_ms, m.min_ms
    row.repeats, row.inner_loops = m.repeats, m.inner_loops
    row.noisy = m.noisy(float(settings["noise_threshold"]))
    row.samples_per_s = job.batch / (m.median_ms / 1e3) if m.median_ms > 0 else None
    if row.flops and m.median_ms > 0:
        row.tflops = row.flops / (m.median_ms / 1e3) / 1e12
        if peak_tflops:
            row.pct_peak = 100.0 * row.tflops / peak_tflops
    row.peak_mem_bytes = prep.peak_mem()
    row.status = "ok" if row.parity_ok is not False else "parity_fail"
    if row.parity_ok is False:
        row.reason = f"parity: {why} against {against}"


def _failed(job: Job, row: Row, cases: _Cases, err: Exception) -> None:
    """The row's status and reason for an exception raised while measuring it."""
    if is_oom(err):
        row.status, row.reason = "oom", f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        cases.key = cases.case = None
        free_device_memory(collect=True)
    elif job.variant == "torch-compile":
        row.status = "unsupported"
        row.reason = f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    else:
        row.status = "error"
        last = traceback.extract_tb(err.__traceback__)[-1]
        row.reason = (f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''} "
                      f"(at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})")


def run_suite(suite: Suite, device: str, results_path: str, *, peak_tflops: float | None = None,
              jobs: list[Job] | None = None, settings_override: dict | None = None, quiet: bool = False) -> dict:
    """Run every job of ``suite`` on ``device`` into ``results_path``; returns counts by status."""
    from tqdm import tqdm

    settings = dict(suite.settings)
    settings.update(settings_override or {})
    jobs = suite.jobs(device) if jobs is None else jobs
    set_strict_fp32()
    dname = envmod.device_name(device)
    if peak_tflops is None and device == "gpu":
        peak_tflops = envmod.peak_fp32_tflops(dname)
    counts: dict[str, int] = {"skipped": 0}
    cases = _Cases(settings)
    with ResultsWriter(results_path) as writer:
        todo = [j for j in jobs if not writer.done(base_row(j, dname, settings))]
        counts["skipped"] = len(jobs) - len(todo)
        tty = sys.stderr.isatty()
        bar = tqdm(total=len(todo), desc=f"{suite.name} on {device}", unit="row", disable=quiet, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5 if tty else 15.0)
        # NOTE: the clock starts here, after anything the caller did first (compiling the kernel modules):
        # the time limit counts measuring time only.
        limit = float(settings.get("time_limit_s") or 0)
        deadline = time.monotonic() + limit if limit > 0 else None
        for i, job in enumerate(todo):
            if deadline is not None and time.monotonic() > deadline:
                counts["left_for_next_run"] = len(todo) - i
                print(f"\nharness: the suite's time limit ({limit:g} s) is reached; {len(todo) - i} rows are left. "
                      "Rerun the same command to measure them (finished rows are kept).", file=sys.stderr)
                break
            bar.set_postfix_str(f"{job.workload} b={job.batch} {job.phase} {job.impl}/{job.variant}"[:70], refresh=tty)
            row = run_job(job, cases, settings, dname, peak_tflops)
            writer.write(row)
            counts[row.status] = counts.get(row.status, 0) + 1
            bar.update(1)
            if i == 0:
                bar.refresh()       # the first row shows at once, not after the bar's refresh interval
        bar.close()
    free_device_memory()
    return counts
