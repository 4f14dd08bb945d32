"""Parity rules per precision, and ``harness parity``: every variant of every zoo model and layer kind against
the float64 oracle (no timing).

Every row is compared with the float64 oracle (harness/workloads.py). Per precision:

- **fp32**: the strict-FP32 tolerances of workloads.py (LAYER_RTOL, MODEL_RTOL, ...), unchanged.
- **tf32 / bf16**: ``precision_tolerance`` adds the operands' rounding to the FP32 tolerance. TF32 keeps 10
  mantissa bits (unit roundoff u = 2^-11), BF16 7 (u = 2^-8). A product sum with both operands rounded
  is off by sum_k a_k b_k (d_a + d_b), |d| <= u, roughly uniform and independent: its standard deviation
  is sqrt(2/3) u sqrt(sum_k (a_k b_k)^2). For random data the absolute error therefore grows like
  sqrt(K) (K the reduction length) *and so does the output* (sqrt(K) rms terms), so relative to the
  output's scale (the normwise measures of workloads.py) it stays ~u whatever K; what does grow with
  sqrt(K) relative to the output is the FP32 accumulation, which the FP32 tolerance already covers. The
  largest error of many outputs against the largest output: allow 8 u per layer (a margin of ~10 over
  sqrt(2/3) u for a few thousand outputs; PyTorch's BF16 outputs are stored in bfloat16, another u/2).
  A model chains L layers with parameters, whose errors add up roughly independently (sqrt(L)) and feed
  the next layer, and whose ReLUs flip where a pre-activation sits within the error of zero: allow
  16 u sqrt(L). These bars are wide on purpose (bf16: 0.03 per layer); the sharp test is the next one.
- **ours vs PyTorch at the same precision** (``judge``): a row of ours at tf32 / bf16 passes only when its
  error is also at most 2x PyTorch's error at that precision on the same inputs (PyTorch's eager model or
  op, run once untimed), or 2x one unit roundoff u of the precision where PyTorch's error is smaller:
  cuBLAS / cuDNN may run an op in FP32 despite the flags (algorithms without a TF32 variant, small
  problems), and holding ours to 2x an FP32 error would hold a TF32 kernel to FP32. One u is what a
  correctly rounded product sum of random data shows (sqrt(2/3) u, see above); 2x that is the bar then.
"""
from __future__ import annotations

import math

import modelspec

from .suites import LAYER_PHASES, MODEL_PHASES, POOL_PHASES, Job, shape_name, variants_for

UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8}   # of a product's operands
LAYER_ROUNDING_FACTOR = 8    # x u per layer row (module docstring)
MODEL_ROUNDING_FACTOR = 16   # x u sqrt(L) per model row
TORCH_FACTOR = 2             # ours <= 2x PyTorch's error at the same precision (or 2 u)


def precision_tolerance(precision: str, fp32_tol: float, layers: int = 1, model: bool = False) -> float:
    """The parity bar of a row at ``precision``: its FP32 tolerance ``fp32_tol`` plus, for tf32 / bf16, the
    operands' rounding: LAYER_ROUNDING_FACTOR u for a layer row, MODEL_ROUNDING_FACTOR u sqrt(layers) for
    a model row with ``layers`` layers with parameters (module docstring).

    >>> precision_tolerance("fp32", 1e-4)
    0.0001
    >>> round(precision_tolerance("tf32", 1e-4), 6)      # 1e-4 + 8 * 2^-11
    0.004006
    """
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(UNIT_ROUNDOFF)}")
    if precision == "fp32":
        return fp32_tol
    u = UNIT_ROUNDOFF[precision]
    if model:
        return fp32_tol + MODEL_ROUNDING_FACTOR * u * math.sqrt(max(1, layers))
    return fp32_tol + LAYER_ROUNDING_FACTOR * u


def torch_bar(precision: str, torch_err: float) -> float:
    """The most a row of ours at ``precision`` may be off when PyTorch's error there is ``torch_err``:
    TORCH_FACTOR x max(torch_err, u) (module docstring)."""
    return TORCH_FACTOR * max(float(torch_err), UNIT_ROUNDOFF[precision])


def judge(err: float, tol: float, precision: str = "fp32", torch_err: float | None = None) -> tuple[bool, float, str]:
    """(ok, the bar applied, why it failed or "") for a row with error ``err`` against tolerance ``tol``;
    ``torch_err`` (rows of ours at tf32 / bf16): PyTorch's error on the same inputs at that precision.

    >>> judge(3e-3, 5e-2, "bf16", torch_err=1e-3)[0]   # within 2x max(PyTorch's error, 2^-8)
    True
    >>> judge(2e-2, 5e-2, "bf16", torch_err=1e-3)[0]   # under the bar, but 20x PyTorch's error
    False
    """
    bar = tol
    if torch_err is not None and precision != "fp32":
        if not math.isfinite(torch_err):
            return False, bar, f"PyTorch's {precision} error could not be measured ({torch_err})"
        bar = min(tol, torch_bar(precision, torch_err))
    if err is None or not err <= bar:
        if bar < tol:
            return False, bar, (f"rel err {err:.3g} > {bar:.3g} = {TORCH_FACTOR}x max(PyTorch's {precision} error "
                                f"{torch_err:.3g}, u = {UNIT_ROUNDOFF[precision]:.3g})")
        return False, bar, f"rel err {err:.3g} > {tol:g}"
    return True, bar, ""

PARITY_BATCH = 7   # odd on purpose: no tile or vector width divides it
LAYER_SHAPES = (
    ("dense", {"M": 7, "N": 10, "K": 33}),
    ("dense", {"M": 33, "N": 65, "K": 130}),
    ("conv2d", {"N": 3, "C": 5, "H": 11, "W": 13, "K": 7, "R": 3, "S": 3, "stride": 2, "padding": 1}),
    ("conv2d", {"N": 2, "C": 1, "H": 28, "W": 28, "K": 6, "R": 5, "S": 5, "stride": 1, "padding": 2}),
    ("pool", {"N": 3, "C": 4, "H": 9, "W": 11, "R": 3, "S": 3, "stride": 2, "mode": "max"}),
    ("pool", {"N": 3, "C": 4, "H": 8, "W": 8, "R": 2, "S": 2, "stride": 2, "mode": "avg"}),
)


def parity_jobs(device: str, models: list[str] | None = None) -> list[Job]:
    jobs = []
    for name in models or modelspec.zoo_names():
        for phase in MODEL_PHASES:
            for impl, v in variants_for("model", device, phase, None):
                jobs.append(Job("model", name, PARITY_BATCH, phase, impl, v, device, (("spec", name),)))
    for kind, d in LAYER_SHAPES:
        phases = POOL_PHASES if kind == "pool" else LAYER_PHASES
        name = shape_name(kind, d, d.get("mode"))
        for phase in phases:
            for impl, v in variants_for(kind, device, phase, None):
                jobs.append(Job(kind, name, d.get("M", d.get("N")), phase, impl, v, device, tuple(sorted(d.items()))))
    return jobs


def parity_table(device: str, models: list[str] | None = None) -> tuple[bool, str]:
    """(all ok, a Markdown table of every parity row)."""
    from .workloads import LayerCase, ModelCase, Unsupported, layer_tolerance, set_strict_fp32

    for m in models or []:
        modelspec.load(m)   # SpecError for unknown names (the CLI turns it into exit code 2)
    set_strict_fp32()
    settings = {"seed": 0, "lr": 0.01, "momentum": 0.9}
    lines = ["| kind | workload | batch | phase | impl | variant | against | rel_err | tol | ok |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    all_ok = True
    mcase = None
    for job in parity_jobs(device, models):
        tol = layer_tolerance(job) if job.kind != "model" else 0.0
        try:
            if job.kind == "model":
                if mcase is None or mcase.spec.name != job.workload:
                    mcase = ModelCase(job.p()["spec"], job.batch, device, settings)
                against, err, tol = mcase.parity(job)
            else:
                case = LayerCase(job, settings)
                against, err = case.parity(job, case.prepare(job).fn)
            ok = err is not None and err <= tol
            cell = f"{err:.2e}"
        except Unsupported as e:
            against, cell, ok = "-", f"unsupported: {e}", True
        except Exception as e:  # noqa: BLE001 - report, go on
            against, cell, ok = "-", f"error: {type(e).__name__}: {e}"[:120], False
        all_ok &= ok
        lines.append(f"| {job.kind} | {job.workload} | {job.batch} | {job.phase} | {job.impl} | {job.variant} | {against} | "
                     f"{cell} | {tol:.2g} | {'yes' if ok else 'NO'} |")
    return all_ok, "\n".join(lines)
