"""Roofline inputs: bytes moved per row (from ``modelspec``) and the roofs of the machine.

Arithmetic intensity = FLOPs / bytes moved, both from the spec's counting models (``Layer.flops`` and
``Layer.bytes_moved``: every tensor a pass reads or writes crosses memory once, float32). Achieved
TFLOP/s = the row's FLOPs / its median time. The attainable performance at intensity I is
``min(peak FLOP/s, I * memory bandwidth)``.

Where each roof comes from (said on the plot):

- FP32 compute peak: ``--peak-tflops`` when given, else the ``peak_fp32_tflops`` the run recorded in
  env.json (for known GPUs the datasheet figure of ``harness/env.py``). CPUs have none unless the run
  was given ``--peak-tflops``.
- Rows of tf32 / bf16 (workloads the report names "<workload> [bf16]") get no point: the compute roof is
  the FP32 peak, and their spec is not looked up.
- Memory bandwidth: ``peak_mem_gbs`` when env.json records one, else the datasheet figure of the GPU
  below (HBM / GDDR). CPUs: none known, so no memory roof is drawn (the plot says so).
"""
from __future__ import annotations

import functools

import modelspec

from .labels import parse_workload

# Datasheet memory bandwidth in GB/s by GPU-name substring; the first match wins.
PEAK_MEM_GBS = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),      # SXM5, HBM3
    ("A100 80GB", 2039.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("A10G", 600.0),
    ("V100", 900.0),
    ("T4", 320.0),
)


def datasheet_mem_gbs(device_name: str) -> float | None:
    for sub, gbs in PEAK_MEM_GBS:
        if sub.lower() in (device_name or "").lower():
            return gbs
    return None


def layer_for(p: dict) -> "modelspec.Layer":
    """The one-layer spec of a parsed layer workload (``labels.parse_workload``, or a job's shape with its
    kind): its output shape and FLOPs, for the roofline and for every layer row's FLOP count."""
    if p["kind"] == "dense":
        return modelspec.Layer(0, "dense", (p["K"],), (p["N"],), units=p["N"], bias=True)
    if p["kind"] == "conv2d":
        (sh, sw), (ph, pw) = p["stride"], p["padding"]
        out = (p["K"], (p["H"] + 2 * ph - p["R"]) // sh + 1, (p["W"] + 2 * pw - p["S"]) // sw + 1)
        return modelspec.Layer(0, "conv2d", (p["C"], p["H"], p["W"]), out, out_channels=p["K"],
                               kernel_size=(p["R"], p["S"]), stride=(sh, sw), padding=(ph, pw), bias=True)
    out = (p["C"], (p["H"] - p["R"]) // p["stride"] + 1, (p["W"] - p["S"]) // p["stride"] + 1)
    return modelspec.Layer(0, f"{p['mode']}pool2d", (p["C"], p["H"], p["W"]), out,
                           kernel_size=(p["R"], p["S"]), stride=(p["stride"],) * 2, padding=(0, 0))


@functools.lru_cache(maxsize=None)
def _zoo_spec(name: str):
    try:
        return modelspec.load(name) if name in modelspec.zoo_names() else None
    except modelspec.SpecError:
        return None


def row_counts(kind: str, workload: str, batch: int, phase: str, spec_hash: str = "") -> tuple[int, int] | None:
    """(FLOPs, bytes moved) of one row from the spec, or None when the spec is not known here.

    Model rows need a zoo model whose digest matches the row's ``spec_hash`` (when the row has one): a
    spec changed since the run gives no point rather than a wrong one.
    """
    if kind == "model":
        spec = _zoo_spec(workload)
        if spec is None or (spec_hash and spec.digest() != spec_hash):
            return None
        ph = "forward" if phase == "inference" else phase
        if ph not in modelspec.PHASES:
            return None
        return spec.flops(int(batch), ph), spec.bytes_moved(int(batch), ph)
    p = parse_workload(workload)
    if p is None or phase not in ("forward", "backward_data", "backward_weights"):
        return None
    layer = layer_for(p)
    n = p["M"] if p["kind"] == "dense" else p["N"]
    flops = getattr(layer.flops(n), phase)
    nbytes = getattr(layer.bytes_moved(n), phase)
    return (flops, nbytes) if nbytes > 0 else None


def add_intensity(df):
    """``df`` with ``bytes_moved`` and ``intensity`` (FLOP/byte) columns; NaN where the spec is unknown or
    its FLOP count disagrees with the row's ``flops`` (the row was counted by another model)."""
    import numpy as np

    cache: dict = {}
    nbytes, inten = [], []
    for kind, wl, b, ph, sh, fl in zip(df["kind"], df["workload"], df["batch"], df["phase"],
                                        df.get("spec_hash", [""] * len(df)), df["flops"]):
        key = (kind, wl, b, ph, sh)
        if key not in cache:
            try:
                cache[key] = row_counts(kind, wl, int(b), ph, "" if sh != sh else str(sh or ""))
            except (TypeError, ValueError):
                cache[key] = None
        got = cache[key]
        if got is None or not (fl == fl) or int(fl) != got[0]:
            nbytes.append(np.nan)
            inten.append(np.nan)
        else:
            nbytes.append(float(got[1]))
            inten.append(got[0] / got[1])
    out = df.copy()
    out["bytes_moved"] = nbytes
    out["intensity"] = inten
    return out


def roofs(env: dict | None, device: str, peak_tflops: float | None = None) -> dict:
    """{"tflops": (value, where from) or None, "gbs": (value, where from) or None, "note": text}."""
    env = env or {}
    out: dict = {"tflops": None, "gbs": None, "note": ""}
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    if peak_tflops:
        out["tflops"] = (float(peak_tflops), "--peak-tflops")
    elif env.get("peak_fp32_tflops") and env.get("run_device", device) == device:
        out["tflops"] = (float(env["peak_fp32_tflops"]), "env.json peak_fp32_tflops")
    elif device == "gpu" and gpu.get("peak_fp32_tflops"):
        out["tflops"] = (float(gpu["peak_fp32_tflops"]), "env.json gpu.peak_fp32_tflops (datasheet)")
    if device == "gpu":
        name = gpu.get("name") or env.get("device_name", "")
        if env.get("peak_mem_gbs"):
            out["gbs"] = (float(env["peak_mem_gbs"]), "env.json peak_mem_gbs")
        elif datasheet_mem_gbs(name):
            out["gbs"] = (datasheet_mem_gbs(name), f"datasheet, {name}")
    missing = [w for w, k in (("FP32 peak", "tflops"), ("memory bandwidth", "gbs")) if out[k] is None]
    if missing:
        what = " and the ".join(missing)
        roof_word = "roofs" if len(missing) > 1 else "roof"
        out["note"] = (f"no {roof_word} drawn for the {what}: not known for this "
                       f"{'GPU' if device == 'gpu' else 'CPU'}"
                       + (" (pass --peak-tflops for a compute roof)" if "FP32 peak" in missing else ""))
    return out
