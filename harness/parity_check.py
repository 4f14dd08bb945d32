"""``harness parity``: every variant of every zoo model and layer kind against the float64 oracle, no timing.

The bars are those of the timed rows (harness/workloads.py for strict FP32, harness/parity.py per
precision); the shapes here are small and odd so that no tile or vector width divides them.
"""
from __future__ import annotations

import modelspec

from .suites import LAYER_PHASES, MODEL_PHASES, POOL_PHASES, Job, shape_name, variants_for
from .workloads import LayerCase, ModelCase, Unsupported, layer_tolerance, set_strict_fp32

PARITY_BATCH = 7   # odd on purpose: no tile or vector width divides it
LAYER_SHAPES = (
    ("dense", {"M": 7, "N": 10, "K": 33}),
    ("dense", {"M": 33, "N": 65, "K": 130}),
    ("conv2d", {"N": 3, "C": 5, "H": 11, "W": 13, "K": 7, "R": 3, "S": 3, "stride": (2, 2), "padding": (1, 1)}),
    ("conv2d", {"N": 2, "C": 1, "H": 28, "W": 28, "K": 6, "R": 5, "S": 5, "stride": (1, 1), "padding": (2, 2)}),
    # a spectrogram-style layer: one channel, a wide non-square kernel, stride and padding differing per axis
    ("conv2d", {"N": 3, "C": 1, "H": 21, "W": 37, "K": 5, "R": 5, "S": 9, "stride": (2, 1), "padding": (2, 0)}),
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
