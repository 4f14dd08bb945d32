"""Running a suite: for every job, check parity, time it, and write one row (resuming finished rows)."""
from __future__ import annotations

import sys
import time
import traceback

from . import env as envmod
from .parity import judge
from .results import ResultsWriter, Row
from .stats import available as stats_available
from .stats import median_ci
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


def run_job(job: Job, cases: _Cases, settings: dict, device_name: str, peak_tflops: float | None,
            monitor=None, with_ci: bool = True) -> tuple[Row, list[float]]:
    """Measure one job: (its row, its timed samples in seconds per call).

    Never raises except KeyboardInterrupt (failures become the row's status, with no samples).
    ``monitor``: an ``nvml.GpuMonitor`` read around the timed samples of GPU rows (None: not read).
    ``with_ci``: compute the bootstrap interval of the median (needs SciPy).
    """
    row = base_row(job, device_name, settings)
    samples_s: list[float] = []
    monitor = monitor if job.device == "gpu" and monitor is not None and monitor.available else None
    try:
        with precision_context(job):
            samples_s = _measure_row(job, row, cases, settings, peak_tflops, monitor, with_ci)
    except KeyboardInterrupt:
        raise
    except Unsupported as err:
        row.status, row.reason = "unsupported", str(err)
    except Exception as err:  # noqa: BLE001 - a failing row must not stop the sweep
        _failed(job, row, cases, err)
    if row.status not in ("ok", "parity_fail"):
        samples_s = []
    return row, samples_s


def _measure_row(job: Job, row: Row, cases: _Cases, settings: dict, peak_tflops: float | None,
                 monitor, with_ci: bool) -> list[float]:
    """Parity, then timing, into ``row``; returns the timed samples in seconds per call (raises what
    run_job turns into the row's status)."""
    case = cases.get(job)
    if job.kind == "model":
        row.flops = case.flops(job.phase)
        against, err, tol = case.parity(job)      # first: the timed call reuses the checked model
        prep = case.prepare(job)
    else:
        prep = case.prepare(job)
        against, err = case.parity(job, prep.fn)
        tol = layer_tolerance(job)
    # rows of ours at tf32 / bf16 are also held to 2x PyTorch's error at that precision, or 2x the
    # rounded-operand oracle's where that is larger (parity.judge)
    ok, bar, why = judge(err, tol, job.precision, case.torch_error(job), case.rounding_error(job))
    row.flops = prep.flops
    row.parity_against = against
    row.parity_rel_err = err
    row.parity_ok = ok
    row.parity_tol = bar
    if monitor is not None:
        monitor.start_row()
    m = measure(prep.fn, prep.clock, warmup=int(settings["warmup"]), budget_s=float(settings["budget_s"]),
                min_repeats=int(settings["min_repeats"]), max_repeats=int(settings["max_repeats"]),
                min_sample_ms=float(settings["min_sample_ms"]),
                cold_l2=bool(settings["cold_l2"]) and job.device == "gpu",
                on_sample=monitor.sample if monitor is not None else None)
    if monitor is not None:
        for column, value in monitor.finish_row().items():
            setattr(row, column, value)
    samples_s = [v / 1e3 for v in m.samples_ms]
    if with_ci and min(samples_s) > 0:     # a clock tick coarser than the call can read 0
        row.ci_low_s, row.ci_high_s = median_ci(samples_s, seed=0)
    row.median_ms, row.iqr_ms, row.min_ms = m.median_ms, m.iqr_ms, m.min_ms
    row.repeats, row.inner_loops = m.repeats, m.inner_loops
    row.noisy = m.noisy(float(settings["noise_threshold"]))
    row.samples_per_s = job.batch / (m.median_ms / 1e3) if m.median_ms > 0 else None
    if row.flops and m.median_ms > 0:
        row.tflops = row.flops / (m.median_ms / 1e3) / 1e12
        if peak_tflops:
            row.pct_peak = 100.0 * row.tflops / peak_tflops
    row.peak_mem_bytes = prep.peak_mem()
    row.algorithm = prep.algorithm()
    row.status = "ok" if row.parity_ok is not False else "parity_fail"
    if row.parity_ok is False:
        row.reason = f"parity: {why} against {against}"
    if prep.finite() is False:
        # NOTE: checked once, after timing (the timed steps kept training the model): a copy of the
        # parameters per row, nothing inside the timed loop.
        row.status = "diverged"
        row.reason = (f"the parameters became NaN/inf during the timed steps at "
                      f"lr={settings.get('lr', 0.01):g}, momentum={settings.get('momentum', 0.9):g}; "
                      "lower the suite's lr (the timings of a diverged step are not comparable)")
    row.reason = "; ".join(part for part in (row.reason, prep.note()) if part)
    return samples_s


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
    with_ci = stats_available()
    if not with_ci:
        print("harness: SciPy is not installed, so the rows get no confidence interval (their samples are kept "
              "in samples.csv); install it: python3 -m pip install 'scipy>=1.10'", file=sys.stderr)
    monitor = None
    if device == "gpu":
        from .nvml import GpuMonitor

        monitor = GpuMonitor()
        if not monitor.available:
            print(f"harness: GPU clocks, power and throttling are not recorded per row: {monitor.reason}",
                  file=sys.stderr)
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
            row, samples_s = run_job(job, cases, settings, dname, peak_tflops, monitor, with_ci)
            writer.write(row, samples_s)
            counts[row.status] = counts.get(row.status, 0) + 1
            bar.update(1)
            if i == 0:
                bar.refresh()       # the first row shows at once, not after the bar's refresh interval
        bar.close()
    if monitor is not None:
        monitor.close()
    free_device_memory()
    return counts
