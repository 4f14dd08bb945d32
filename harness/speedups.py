"""Ours against the reference, with the baseline named: pairing rows and computing speedups.

Speedup = reference time / our time (> 1: ours is faster), always against a named baseline:

- **vs best reference** (the headline): the fastest reference variant measured for that row, the minimum
  over every reference variant present (PyTorch eager, PyTorch CUDA graph, torch.compile, and any other
  reference framework variant a results file holds, such as ``jax-jit``). A variant that was not
  measured for a row is simply not a candidate for that row.
- **vs eager** (secondary): PyTorch eager for models (``torch-eager``), PyTorch for layers (``torch``,
  its only variant: there the two views coincide).

Ours is the variant the product runs by default: ``cuda-graph`` for GPU model train steps and
inference, else ``cuda`` on the GPU, ``numpy`` on the CPU (the first of these present for the row).
Rows that were timed (status ``ok`` or ``parity_fail``) take part; a parity failure on either side marks
the pair, and so does a GPU clock limit (NVML's ``throttled``) active while either side was timed.
When results carry bootstrap confidence intervals of each median (``ci_low_ms``, ``ci_high_ms``), a
speedup's interval is the conservative ratio of those bounds (reference low / ours high .. reference
high / ours low).
"""
from __future__ import annotations

import math

import numpy as np

from .labels import variant_label

EAGER = {"model": "torch-eager"}     # the eager reference per kind; layers: "torch"
_OURS_ORDER = {("gpu", "model", "train_step"): ("cuda-graph", "cuda"),
               ("gpu", "model", "inference"): ("cuda-graph", "cuda")}
TIMED = ("ok", "parity_fail")


def ours_candidates(device: str, kind: str, phase: str) -> tuple[str, ...]:
    """Our variants in order of preference for a row (the default build first)."""
    if (device, kind, phase) in _OURS_ORDER:
        return _OURS_ORDER[(device, kind, phase)]
    return ("cuda",) if device == "gpu" else ("numpy",)


def eager_variant(kind: str) -> str:
    return EAGER.get(kind, "torch")


def _ci(row, column: str) -> float:
    v = row.get(column, np.nan) if hasattr(row, "get") else np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den and den > 0 and np.isfinite(num) else np.nan


def pair(df):
    """One row per (source, device, kind, workload, batch, phase) that has ours and a reference.

    Columns: the key, ``machine``, ``shape``, ``precision`` (fp32, tf32, bf16: the report names the
    workloads of tf32 / bf16 rows "<workload> [bf16]", so both sides of a pair share one), ``ours_variant``, ``ours_ms`` (+ ``ours_lo``/``ours_hi``),
    ``ours_tflops``, ``best_variant``, ``best_impl``, ``best_ms`` (+ lo/hi), ``speedup_best`` (+ lo/hi),
    ``eager_ms``, ``speedup_eager`` (+ lo/hi), ``ref_variants`` (every reference variant measured, by
    name), ``failed`` (a parity failure in ours or in a reference taking part), ``noisy``, ``throttled``
    (True: ours or a reference taking part ran with a clock limit active; False: none did; None: not
    recorded, as on the CPU) and ``throttle_reasons`` (those limits, ``;``-separated).
    """
    import pandas as pd

    timed = df[df["status"].isin(TIMED) & (df["median_ms"] > 0)]
    keys = ["source", "device", "kind", "workload", "batch", "phase"]
    out = []
    for key, g in timed.groupby(keys, sort=False):
        d = dict(zip(keys, key))
        mine = g[g["impl"] == "custom"]
        ours = None
        for v in ours_candidates(d["device"], d["kind"], d["phase"]):
            hit = mine[mine["variant"] == v]
            if not hit.empty:
                ours = hit.iloc[0]
                break
        refs = g[g["impl"] != "custom"]
        if ours is None or refs.empty:
            continue
        best = refs.loc[refs["median_ms"].idxmin()]
        eager = refs[(refs["impl"] == "reference") & (refs["variant"] == eager_variant(d["kind"]))]
        eager = eager.iloc[0] if not eager.empty else None
        o_ms, o_lo, o_hi = ours["median_ms"], _ci(ours, "ci_low_ms"), _ci(ours, "ci_high_ms")
        b_ms, b_lo, b_hi = best["median_ms"], _ci(best, "ci_low_ms"), _ci(best, "ci_high_ms")
        d.update(machine=ours.get("machine", ""), machine_label=ours.get("machine_label", ""), shape=ours.get("shape", ""),
                 precision=str(ours.get("precision", "") or "fp32"), ours_variant=ours["variant"],
                 ours_ms=o_ms, ours_lo=o_lo, ours_hi=o_hi, ours_tflops=ours["tflops"],
                 ours_rel_err=ours["parity_rel_err"],
                 best_variant=best["variant"], best_impl=best["impl"], best_ms=b_ms, best_lo=b_lo, best_hi=b_hi,
                 best_tflops=best["tflops"], intensity=ours.get("intensity", np.nan),
                 speedup_best=_ratio(b_ms, o_ms), speedup_best_lo=_ratio(b_lo, o_hi),
                 speedup_best_hi=_ratio(b_hi, o_lo),
                 ref_variants=",".join(sorted(f"{r['impl']}/{r['variant']}" for _, r in refs.iterrows())),
                 failed=bool(ours["failed"] or best["failed"] or (eager is not None and eager["failed"])),
                 noisy=bool(ours["noisy"] or best["noisy"]))
        d.update(_throttling([ours, best] + ([eager] if eager is not None else [])))
        if eager is not None:
            e_ms = eager["median_ms"]
            d.update(eager_ms=e_ms, speedup_eager=_ratio(e_ms, o_ms),
                     speedup_eager_lo=_ratio(_ci(eager, "ci_low_ms"), o_hi),
                     speedup_eager_hi=_ratio(_ci(eager, "ci_high_ms"), o_lo))
        else:
            d.update(eager_ms=np.nan, speedup_eager=np.nan, speedup_eager_lo=np.nan, speedup_eager_hi=np.nan)
        out.append(d)
    return pd.DataFrame(out)


def throttle_state(v) -> bool | None:
    """A ``throttled`` cell as True, False or None (not recorded: empty, NaN, a CPU row)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == ""):
        return None
    return bool(v)


def _reasons(values) -> str:
    """The distinct clock-limit reasons in ``values`` (``;``-separated cells), sorted, ``;``-joined."""
    return ";".join(sorted({x for s in values if isinstance(s, str) for x in s.split(";") if x}))


def _throttling(rows) -> dict:
    """``throttled`` and ``throttle_reasons`` of a pair from its rows' NVML columns (see ``pair``)."""
    states = [throttle_state(r.get("throttled")) for r in rows]
    hit = [r for r, s in zip(rows, states) if s is True]
    if hit:
        return {"throttled": True, "throttle_reasons": _reasons(r.get("throttle_reasons") for r in hit)}
    known = all(s is False for s in states[:2])       # ours and the best reference both recorded it
    return {"throttled": False if known else None, "throttle_reasons": ""}


def baseline_text(pairs, device: str = "", kind: str = "model") -> str:
    """The headline baseline in words, naming the reference variants it was chosen from.

    >>> import pandas as pd
    >>> baseline_text(pd.DataFrame({"ref_variants": ["reference/torch-eager,reference/torch-graph"]}), "gpu")
    'the fastest PyTorch variant measured for each row (min over PyTorch eager, PyTorch CUDA graph)'
    """
    variants = sorted({v for s in pairs.get("ref_variants", []) for v in str(s).split(",") if v})
    names = [variant_label(*v.split("/", 1), device=device) for v in variants]
    if len(names) <= 1:
        return f"{names[0] if names else 'the reference'} (the only reference variant measured)"
    torch_only = all(v.startswith("reference/torch") for v in variants)
    who = "PyTorch variant" if torch_only else "reference variant"
    return f"the fastest {who} measured for each row (min over {', '.join(names)})"


def geomean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and np.isfinite(x) and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else np.nan


def _throttled_count(g) -> float:
    """Pairs of ``g`` that ran with a clock limit active; NaN when none of them recorded it (CPU rows)."""
    states = [throttle_state(v) for v in g.get("throttled", [])]
    return float(sum(s is True for s in states)) if any(s is not None for s in states) else np.nan


def headline(pairs):
    """Geomean, min and max of the speedup vs best reference per (source, device, kind, precision, phase),
    and the geomean vs eager: the numbers a summary quotes, with the row count behind each, the parity
    failures (``failed``) and the pairs that ran with a GPU clock limit active (``throttled``, NaN where
    not recorded) among them."""
    import pandas as pd

    if pairs.empty:
        return pd.DataFrame()
    if "precision" not in pairs:
        pairs = pairs.assign(precision="fp32")
    out = []
    for (src, dev, kind, prec, phase), g in pairs.groupby(["source", "device", "kind", "precision", "phase"],
                                                          sort=False):
        out.append({"source": src, "machine": g["machine"].iloc[0],
                    "machine_label": g["machine_label"].iloc[0], "device": dev, "kind": kind, "precision": prec,
                    "phase": phase,
                    "rows": len(g), "geomean_best": geomean(g["speedup_best"]),
                    "min_best": float(g["speedup_best"].min()), "max_best": float(g["speedup_best"].max()),
                    "geomean_eager": geomean(g["speedup_eager"]),
                    "failed": int(g["failed"].sum()),
                    "throttled": _throttled_count(g), "throttle_reasons": _reasons(g.get("throttle_reasons", [])),
                    "ref_variants": ",".join(sorted({v for s in g["ref_variants"] for v in s.split(",")}))})
    return pd.DataFrame(out)
