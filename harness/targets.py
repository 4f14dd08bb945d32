"""``harness targets``: the project's performance targets, measured and checked.

Every target is a ratio of the two implementations measured in the same run (reference time / our
time, so > 1 means ours is faster), both sides at the target's precision (strict FP32, or TF32 / BF16
against cuBLAS / cuDNN at the same precision), over rows that passed parity. The rows
come from the ``targets`` suite (harness/suites/targets.toml) and, on the GPU, the ``networks`` suite
(harness/suites/networks.toml: every conv and dense layer of ResNet-50, VGG-16, GoogLeNet and
DeepSpeech 2), and are written to ``DIR/results.csv`` (resumable like any run); ``DIR/targets.csv`` has
one line per target:

    target, measured, goal, met, rows, note, ci_low, ci_high

``ci_low``/``ci_high``: the bootstrap 95% confidence interval of ``measured`` from the timed samples of
every row behind it (samples.csv; harness/stats.py), each row's samples resampled independently; empty
when a row has fewer than two samples or the folder has no samples.csv.
``met`` is true only when the figure reaches the goal *and* every row of ours behind it was measured and
passed parity (a row of ours with status parity_fail / error / oom / unsupported is left out of the
figure and named in ``note``). A PyTorch row that was timed but failed parity against float64 (cuDNN's
autotuned weight-gradient algorithms, see harness/workloads.py) still counts: the comparison is against
what PyTorch delivers; ``note`` says how many such rows there were. On a machine without a GPU the GPU targets are written with an empty ``measured``, empty
``met`` and ``note = "not measured: no GPU (...)"``.

``train_step_vs_best_framework`` compares ours with the fastest framework of each FP32 row (PyTorch eager,
PyTorch CUDA graph, torch.compile where the suite measured it, JAX jit; a JAX row, like a PyTorch one,
counts when timed); its ``note`` names the framework that was fastest where the ratio is worst, and
``DIR/train_step_vs_best_framework.csv`` names it for every model and batch (column ``fastest``).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from typing import Callable

from . import env as envmod
from .results import row_id

TRAIN_BEST_MAX_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    device: str
    kind: str      # the results.csv kind of the rows behind it: dense, conv2d or model (train_step)
    goal: float
    measure: str
    precision: str = "fp32"   # the results.csv precision of the rows behind it (both sides)


TARGETS = (
    Target("dense_gemm_4096", "gpu", "dense", 0.97, "dense forward X*W^T at M=N=K=4096: cuBLAS time / our time"),
    Target("dense_suite_geomean", "gpu", "dense", 1.10,
           "geomean of cuBLAS / ours over the dense suite, all three phases"),
    Target("conv_suite_geomean", "gpu", "conv2d", 1.10,
           "geomean of cuDNN / ours over the conv2d suite, all three phases"),
    Target("conv_suite_min", "gpu", "conv2d", 0.80, "worst conv2d row of that suite"),
    Target("networks_conv_geomean", "gpu", "conv2d", 0.95,
           "geomean of cuDNN / ours over every conv layer of the networks suite (ResNet-50, VGG-16, GoogLeNet, "
           "DeepSpeech 2; batch 16 and 64), all three phases"),
    Target("networks_conv_min", "gpu", "conv2d", 0.50, "worst conv row of the networks suite"),
    Target("networks_conv_phase_min_geomean", "gpu", "conv2d", 0.90,
           "the worst of the networks suite's three per-phase geomeans (forward, backward-data, backward-weights)"),
    Target("train_step_vs_best_torch", "gpu", "model", 1.0,
           "worst over zoo models x batch 1..8192 of min(PyTorch eager, PyTorch CUDA graph) / ours (CUDA graph)"),
    Target("train_step_vs_best_framework", "gpu", "model", 1.0,
           "worst over zoo models x batch 1..1024 of the best framework's step (min of PyTorch eager, PyTorch "
           "CUDA graph, torch.compile where measured, JAX jit) / ours (CUDA graph)"),
    Target("train_step_vs_eager_geomean", "gpu", "model", 3.0,
           "geomean over zoo models x batch 1..8192 of PyTorch eager / ours (CUDA graph)"),
    Target("cpu_train_step_geomean", "cpu", "model", 1.0,
           "zoo models at batch >= 64 on the CPU: PyTorch CPU / our NumPy"),
    Target("gemm_tf32_4096", "gpu", "dense", 0.75,
           "dense forward X*W^T at M=N=K=4096, TF32: cuBLAS TF32 time / ours (tensor cores)", "tf32"),
    Target("gemm_bf16_4096", "gpu", "dense", 0.60,
           "dense forward X*W^T at M=N=K=4096, BF16: cuBLAS BF16 time / ours (tensor cores)", "bf16"),
    Target("conv_tf32_suite_geomean", "gpu", "conv2d", 0.60,
           "geomean of cuDNN TF32 / ours over the conv2d suite, all three phases", "tf32"),
    Target("conv_bf16_suite_geomean", "gpu", "conv2d", 0.50,
           "geomean of cuDNN BF16 / ours over the conv2d suite, all three phases", "bf16"),
    Target("train_step_bf16_vs_best_torch", "gpu", "model", 1.0,
           "worst over zoo models x batch 1..1024 of min(PyTorch BF16 autocast eager, CUDA graph) / ours "
           "(bf16, CUDA graph)", "bf16"),
)
_GEMM_4096 = ("dense_gemm_4096", "gemm_tf32_4096", "gemm_bf16_4096")
_BEST_TORCH = ("train_step_vs_best_torch", "train_step_bf16_vs_best_torch")
_SUITE_LAYERS = ("dense_suite_geomean", "conv_suite_geomean", "conv_suite_min", "conv_tf32_suite_geomean",
                 "conv_bf16_suite_geomean")
_NETWORKS = ("networks_conv_geomean", "networks_conv_min", "networks_conv_phase_min_geomean")
_LAYER_PHASES = ("forward", "backward_data", "backward_weights")
# The batch up to which a train-step target reads the rows (the suite measures 1..8192; the BF16 rows stop at
# 1024, where the targets suite stops measuring them)
_MAX_BATCH = {"train_step_bf16_vs_best_torch": TRAIN_BEST_MAX_BATCH}


def networks_workloads() -> set[str]:
    """The conv workloads of the networks suite (harness/suites/networks.toml)."""
    from .suites import load_suite

    return {j.workload for j in load_suite("networks").jobs("gpu") if j.kind == "conv2d"}


def targets_suite_workloads() -> set[str]:
    """The layer workloads of the targets suite (harness/suites/targets.toml)."""
    from .suites import load_suite

    return {j.workload for j in load_suite("targets").jobs("gpu") if j.kind != "model"}


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else math.nan


def _f(d: dict, k: str) -> float:
    try:
        return float(d.get(k, ""))
    except ValueError:
        return math.nan


class _Rows:
    def __init__(self, rows: list[dict]):
        # NOTE: a row without a precision (written before the column was filled) is strict FP32
        self.rows = [r if r.get("precision") else dict(r, precision="fp32") for r in rows]

    def pick(self, **match) -> list[dict]:
        return [r for r in self.rows if all(str(r.get(k)) == str(v) for k, v in match.items())]

    def one(self, **match) -> dict | None:
        got = self.pick(**match)
        return got[0] if got else None


def _ok(r: dict | None) -> bool:
    return r is not None and r.get("status") == "ok" and r.get("parity_ok") == "True" and _f(r, "median_ms") > 0


def _timed(r: dict | None) -> bool:
    """A reference row that was timed; it may have failed parity (counted, and named in the note)."""
    return r is not None and r.get("status") in ("ok", "parity_fail") and _f(r, "median_ms") > 0


def _describe(r: dict | None, what: str) -> str:
    if r is None:
        return f"{what}: missing"
    return f"{r['impl']}/{r['variant']} {r['workload']} b={r['batch']} {r['phase']}: {r['status']}"


def _layer_ratios(rows: _Rows, kind: str, precision: str = "fp32", terms: list | None = None,
                  keep: Callable[[dict], bool] = lambda r: True) -> tuple[list[float], list[str], int]:
    """cuBLAS or cuDNN time / ours of every GPU layer row of ``kind`` at ``precision`` that ``keep`` takes;
    (ratios, rows left out, rows considered); ``terms`` gathers ([reference row], our row) for the CI."""
    ratios, bad, n = [], [], 0
    for ours in rows.pick(kind=kind, impl="custom", device="gpu", precision=precision):
        if not keep(ours):
            continue
        ref = rows.one(kind=kind, impl="reference", device="gpu", workload=ours["workload"], phase=ours["phase"],
                       precision=precision)
        n += 1
        if _ok(ours) and _timed(ref):
            ratios.append(_f(ref, "median_ms") / _f(ours, "median_ms"))
            if terms is not None:
                terms.append(([ref], ours))
        else:
            bad.append(_describe(ours if not _ok(ours) else ref, "row"))
    return ratios, bad, n


# The frameworks of train_step_vs_best_framework: (variant, required). torch.compile counts where it was
# measured (timed); the others must be timed in every row.
BEST_FRAMEWORK_VARIANTS = (("torch-eager", True), ("torch-graph", True), ("torch-compile", False),
                           ("jax-jit", True))
BEST_FRAMEWORK_COLUMNS = ("workload", "batch", "ours_ms", "best_ms", "fastest", "ratio", "frameworks")


def best_framework_rows(rows_list: list[dict]) -> tuple[list[dict], list[str], int]:
    """Per (zoo model, batch <= 1024) GPU train step: ours (cuda-graph) against the fastest framework.

    Returns (lines with BEST_FRAMEWORK_COLUMNS, ``fastest`` naming the winning variant, for the rows where
    ours and every required framework were timed; descriptions of the rows left out; rows considered).
    """
    rows = _Rows(rows_list)
    lines, bad, n = [], [], 0
    # NOTE: strict FP32 rows only: JAX (one of the frameworks) computes in FP32 only
    for ours in rows.pick(kind="model", impl="custom", variant="cuda-graph", device="gpu", phase="train_step",
                          precision="fp32"):
        if int(ours["batch"]) > TRAIN_BEST_MAX_BATCH:
            continue
        n += 1
        key = dict(kind="model", impl="reference", device="gpu", phase="train_step", workload=ours["workload"],
                   batch=ours["batch"], precision="fp32")
        timed, missing = {}, []
        for variant, required in BEST_FRAMEWORK_VARIANTS:
            r = rows.one(variant=variant, **key)
            if _timed(r):
                timed[variant] = _f(r, "median_ms")
            elif required:
                missing.append(_describe(r, f"reference/{variant} {ours['workload']} b={ours['batch']}"))
        if not _ok(ours) or missing:
            bad += ([_describe(ours, "row")] if not _ok(ours) else []) + missing
            continue
        fastest = min(timed, key=timed.get)
        lines.append({"workload": ours["workload"], "batch": ours["batch"], "ours_ms": f"{_f(ours, 'median_ms'):.6g}",
                      "best_ms": f"{timed[fastest]:.6g}", "fastest": fastest,
                      "ratio": f"{timed[fastest] / _f(ours, 'median_ms'):.4g}", "frameworks": " ".join(timed)})
    return lines, bad, n


def write_best_framework_csv(path: str, lines: list[dict]) -> None:
    """``train_step_vs_best_framework.csv``: one line per model and batch, naming the fastest framework."""
    from .io import atomic_write

    with atomic_write(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=BEST_FRAMEWORK_COLUMNS)
        w.writeheader()
        w.writerows(lines)


def _best_framework_note(lines: list[dict]) -> str:
    worst = min(lines, key=lambda line: float(line["ratio"]))
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["fastest"]] = counts.get(line["fastest"], 0) + 1
    tally = ", ".join(f"{v} {c}" for v, c in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"worst at {worst['workload']} b={worst['batch']}, where {worst['fastest']} was fastest "
            f"({worst['best_ms']} ms against ours {worst['ours_ms']} ms); fastest framework per row: {tally} "
            "(train_step_vs_best_framework.csv)")


def _ci(terms: list, reduce: str, samples: dict | None) -> tuple[float, float] | None:
    """Bootstrap CI of a target from its terms [([reference rows], our row)], each term being
    min(median of the reference rows) / median of ours; ``reduce``: "one", "geomean" or "min" over terms.
    None when a row behind it has no samples (or fewer than two)."""
    import numpy as np

    from .stats import available as stats_available
    from .stats import statistic_ci

    if not samples or not terms or not stats_available():
        return None
    sets, layout = [], []
    for refs, ours in terms:
        idx = []
        for r in [*refs, ours]:
            a = samples.get(row_id(r))
            if a is None or len(a) < 2 or float(np.min(a)) <= 0:
                return None
            idx.append(len(sets))
            sets.append(a)
        layout.append(idx)

    def fn(m):
        values = np.stack([np.min(m[idx[:-1]], axis=0) / m[idx[-1]] for idx in layout])
        if reduce == "geomean":
            return np.exp(np.mean(np.log(values), axis=0))
        return np.min(values, axis=0)

    _, low, high = statistic_ci(sets, fn)
    return low, high


def evaluate(rows_list: list[dict], gpu_reason: str | None, samples: dict | None = None,
             networks: set[str] | None = None, left_out: dict[str, list[str]] | None = None) -> list[dict]:
    """targets.csv lines from the rows of a targets run; ``samples`` ({row_id: seconds}) gives the CIs.

    ``networks``: the conv workloads of the networks suite (default: ``networks_workloads()``); the
    networks targets read those rows, the conv-suite targets every other conv row and those the targets
    suite lists itself (a layer both suites list counts in both). ``left_out``, when given, is filled with
    {target: descriptions of the rows behind it that were missing, not ok or failed parity} for every
    target evaluated (an empty list: every row behind it counted; ``met`` is then the goal alone)."""
    rows = _Rows(rows_list)
    if networks is None:
        networks = networks_workloads()
    only_networks = networks - targets_suite_workloads()
    out = []
    for t in TARGETS:
        line = {"target": t.name, "measured": "", "goal": f"{t.goal:g}", "met": "", "rows": 0, "note": t.measure,
                "ci_low": "", "ci_high": ""}
        if t.device == "gpu" and gpu_reason:
            line["note"] = f"not measured: no GPU ({gpu_reason})"
            out.append(line)
            continue
        bad: list[str] = []
        value = math.nan
        if t.name in _NETWORKS:
            keep = lambda r: r["workload"] in networks          # noqa: E731
        elif t.name in _SUITE_LAYERS:
            keep = lambda r: r["workload"] not in only_networks  # noqa: E731
        else:
            keep = lambda r: True                                 # noqa: E731
        terms: list = []     # ([reference rows], our row) behind the figure, for its confidence interval
        reduce = "geomean"
        if t.name in _GEMM_4096:
            ours = rows.one(kind="dense", impl="custom", device="gpu", workload="dense_M4096_N4096_K4096",
                            phase="forward", precision=t.precision)
            ref = rows.one(kind="dense", impl="reference", device="gpu", workload="dense_M4096_N4096_K4096",
                           phase="forward", precision=t.precision)
            line["rows"] = 2
            reduce = "one"
            if _ok(ours) and _timed(ref):
                value = _f(ref, "median_ms") / _f(ours, "median_ms")
                terms.append(([ref], ours))
            else:
                bad = [_describe(r, w) for r, w, good in ((ours, "ours", _ok), (ref, "cuBLAS", _timed)) if not good(r)]
        elif t.name == "networks_conv_phase_min_geomean":
            # NOTE: no confidence interval: the bootstrap reduces over terms by one geomean or one min
            by_phase = {}
            for phase in _LAYER_PHASES:
                ratios, phase_bad, n = _layer_ratios(rows, t.kind, t.precision,
                                                     keep=lambda r, phase=phase: keep(r) and r["phase"] == phase)
                bad += phase_bad
                line["rows"] += n
                if ratios:
                    by_phase[phase] = _geomean(ratios)
            if len(by_phase) == 3:
                value = min(by_phase.values())
                line["_phases"] = by_phase
            elif line["rows"]:
                bad.append(f"no measured row in phase(s) {', '.join(p for p in _LAYER_PHASES if p not in by_phase)}")
        elif t.name in _SUITE_LAYERS or t.name in _NETWORKS:
            ratios, bad, line["rows"] = _layer_ratios(rows, t.kind, t.precision, terms, keep)
            reduce = "min" if t.name.endswith("min") else "geomean"
            if ratios:
                value = min(ratios) if t.name.endswith("min") else _geomean(ratios)
        elif t.name == "train_step_vs_best_framework":
            per_row, bad, line["rows"] = best_framework_rows(rows_list)
            if per_row:
                value = min(float(r["ratio"]) for r in per_row)
        elif t.name.startswith("train_step"):
            ratios = []
            for ours in rows.pick(kind="model", impl="custom", variant="cuda-graph", device="gpu", phase="train_step",
                                  precision=t.precision):
                if int(ours["batch"]) > _MAX_BATCH.get(t.name, math.inf):
                    continue
                key = dict(kind="model", impl="reference", device="gpu", phase="train_step",
                           workload=ours["workload"], batch=ours["batch"], precision=t.precision)
                eager, graph = rows.one(variant="torch-eager", **key), rows.one(variant="torch-graph", **key)
                refs = [eager] if t.name == "train_step_vs_eager_geomean" else [eager, graph]
                line["rows"] += 1
                if _ok(ours) and all(_timed(r) for r in refs):
                    ratios.append(min(_f(r, "median_ms") for r in refs) / _f(ours, "median_ms"))
                    terms.append((refs, ours))
                else:
                    bad += [_describe(ours, "row")] if not _ok(ours) else []
                    bad += [_describe(r, "row") for r in refs if not _timed(r)]
            reduce = "min" if t.name in _BEST_TORCH else "geomean"
            if ratios:
                value = min(ratios) if t.name in _BEST_TORCH else _geomean(ratios)
        else:  # cpu_train_step_geomean
            ratios = []
            for ours in rows.pick(kind="model", impl="custom", variant="numpy", device="cpu", phase="train_step",
                                  precision="fp32"):
                if int(ours["batch"]) < 64:
                    continue
                ref = rows.one(kind="model", impl="reference", variant="torch-eager", device="cpu",
                               phase="train_step", workload=ours["workload"], batch=ours["batch"], precision="fp32")
                line["rows"] += 1
                if _ok(ours) and _timed(ref):
                    ratios.append(_f(ref, "median_ms") / _f(ours, "median_ms"))
                    terms.append(([ref], ours))
                else:
                    bad += [_describe(r, "row") for r, good in ((ours, _ok), (ref, _timed)) if not good(r)]
            if ratios:
                value = _geomean(ratios)
        if t.name in _NETWORKS:
            # NOTE: a networks figure over part of the suite (a run cut by its time limit) is not the target's
            have = {(r["workload"], r["phase"])
                    for r in rows.pick(kind=t.kind, impl="custom", device="gpu", precision=t.precision)}
            missing = [(w, ph) for w in sorted(networks) for ph in _LAYER_PHASES if (w, ph) not in have]
            if missing:
                bad.insert(0, f"{len(missing)} of {len(_LAYER_PHASES) * len(networks)} networks rows of ours not "
                              f"measured yet, e.g. {missing[0][0]} {missing[0][1]} (rerun `harness targets` to resume)")
        if left_out is not None:
            left_out[t.name] = list(bad)
        if math.isnan(value):
            line["met"] = "False"
            line["note"] = "not measured: " + ("; ".join(bad[:5]) if bad else "no rows")
        else:
            line["measured"] = f"{value:.4g}"
            ci = _ci(terms, reduce, samples) if terms else None
            if ci is not None and not math.isnan(ci[0]):
                line["ci_low"], line["ci_high"] = f"{ci[0]:.4g}", f"{ci[1]:.4g}"
            line["met"] = str(bool(value >= t.goal and not bad))
            notes = []
            if bad:
                notes.append(f"{len(bad)} row(s) left out (not ok or parity failed): " + "; ".join(bad[:3]))
            elif value < t.goal:
                notes.append(f"short of the goal by {100 * (1 - value / t.goal):.1f}%: {t.measure}")
            else:
                notes.append(t.measure)
            if t.name == "train_step_vs_best_framework":
                notes.append(_best_framework_note(best_framework_rows(rows_list)[0]))
            if "_phases" in line:
                notes.append("per phase: " + ", ".join(f"{k} {v:.3g}" for k, v in line.pop("_phases").items()))
            ref_fail = _reference_parity_failures(rows, t, keep)
            if ref_fail:
                notes.append(f"{ref_fail} reference row(s) behind it failed parity against float64 (timed and counted)")
            line["note"] = "; ".join(notes)
        out.append(line)
    return out


def _reference_parity_failures(rows: _Rows, t: Target, keep: Callable[[dict], bool]) -> int:
    """How many reference rows of the target's kind/device (those ``keep`` takes) were timed but failed parity."""
    picked = rows.pick(kind=t.kind, impl="reference", device=t.device, status="parity_fail", precision=t.precision)
    picked = [r for r in picked if keep(r)]
    if t.kind == "model":
        picked = [r for r in picked if r.get("phase") == "train_step"]
    if t.name in _GEMM_4096:
        picked = [r for r in picked if r.get("workload") == "dense_M4096_N4096_K4096" and r.get("phase") == "forward"]
    return len(picked)


def format_table(lines: list[dict]) -> str:
    head = ["target", "measured", "95% CI", "goal", "met", "rows", "note"]
    body = [[str(line[h]) if h != "95% CI" else
             (f"{line['ci_low']}-{line['ci_high']}" if line.get("ci_low", "") != "" else "") for h in head]
            for line in lines]
    widths = [max(len(h), *(len(b[i]) for b in body)) if i < len(head) - 1 else 0 for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if w else c for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(b) for b in body])


def write_csv(path: str, lines: list[dict]) -> None:
    from .io import atomic_write

    with atomic_write(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["target", "measured", "goal", "met", "rows", "note", "ci_low", "ci_high"])
        w.writeheader()
        w.writerows(lines)


def run_targets(out: str, device: str, *, peak_tflops: float | None = None, quiet: bool = False,
                before_gpu: Callable[[], object] | None = None,
                time_limit_s: float | None = None) -> tuple[bool, str]:
    """Run the targets suite on ``device`` into ``out``, write targets.csv; returns (all met, table).

    ``before_gpu`` (compiling the kernel modules, say) is called between the CPU rows and the GPU rows;
    its time is not counted against the suite's time limit. ``time_limit_s``: that limit instead of the
    targets suite's own (0: none); rows not started within it are left for a rerun to resume.
    """
    from .io import DamagedFile
    from .results import ResultsError, read_rows, samples_by_row
    from .runner import run_suite
    from .suites import load_suite

    os.makedirs(out, exist_ok=True)
    suite = load_suite("targets")
    gpu_reason = None
    devices = ["cpu"]
    if device == "gpu":
        # NOTE: the CPU rows first, before any GPU work in this process. Measured on the H100 host's
        # 16-core Xeon (November 2026): after the GPU rows our NumPy steps ran 1.3-2x slower than in a
        # CPU-only process (lenet-mnist batch 64: 43-73 ms after the GPU rows, 34.6 ms alone), PyTorch's
        # CPU steps about the same; the GPU rows take the CPU rows' few seconds less.
        devices = ["cpu", "gpu"]
    else:
        ok, why = envmod.gpu_available()
        gpu_reason = "this run is --device cpu" if ok else why
    results = os.path.join(out, "results.csv")
    earlier = envmod.earlier_record(out)     # before this call adds rows: a resumed run's earlier calls
    rec = envmod.collect("gpu" if device == "gpu" else "cpu")
    rec["suite"] = {"name": suite.name, "path": suite.path, "settings": suite.settings}
    rec["run_device"] = device
    rec["device_name"] = envmod.device_name(device)
    rec["peak_fp32_tflops"] = peak_tflops or (envmod.peak_fp32_tflops(rec["device_name"]) if device == "gpu" else None)
    # NOTE: one time limit for the whole command (the CPU target's rows first, then the GPU rows), so that it
    # fits a time-limited GPU machine; a rerun resumes whatever was left.
    limit = float((suite.settings.get("time_limit_s") if time_limit_s is None else time_limit_s) or 0)
    start = time.monotonic()
    for dev in devices:
        if dev == "gpu" and before_gpu is not None:
            t0 = time.monotonic()
            before_gpu()
            start += time.monotonic() - t0      # compile time is not measuring time
        # NOTE: on the GPU the networks suite's rows follow the targets suite's (they take longer; a time
        # limit cuts them first, and a rerun resumes them)
        for s in [suite] + ([load_suite("networks")] if dev == "gpu" else []):
            override = {}
            if limit > 0:
                override["time_limit_s"] = max(1e-3, limit - (time.monotonic() - start))
            elif time_limit_s is not None:     # 0 given: no limit, also where the suite sets one
                override["time_limit_s"] = 0
            run_suite(s, dev, results, peak_tflops=peak_tflops, quiet=quiet, settings_override=override)
    try:
        import reference_impl

        rec["precision_flags"] = reference_impl.precision_flags()
        rec["precision_modes"] = {p: reference_impl.precision_flags(p) for p in ("fp32", "tf32", "bf16")}
    except Exception:
        pass
    envmod.write_run(out, rec, earlier)
    rows = read_rows(results)
    try:
        samples = samples_by_row(out)
    except DamagedFile as err:
        raise ResultsError(str(err)) from None
    lines = evaluate(rows, gpu_reason, samples)
    write_csv(os.path.join(out, "targets.csv"), lines)
    if gpu_reason is None:
        write_best_framework_csv(os.path.join(out, "train_step_vs_best_framework.csv"), best_framework_rows(rows)[0])
    measured = [line for line in lines if line["measured"] != ""]
    return all(line["met"] == "True" for line in measured) and len(measured) == len(lines), format_table(lines)
