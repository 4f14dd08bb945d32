"""The report's tables as data: columns with kinds, formatted cells, captions that name every baseline.

One ``Table`` feeds three renderings: Markdown (``*.md``), LaTeX (``harness.latex``) and a page of
report.pdf (``harness.pdfdoc``). A column whose cells are the same in every row is dropped and stated
in the caption instead (``drop_constant``), so no table repeats "cpu" or "ours: numpy" 99 times.

Numbers are formatted to 3 significant digits in positional notation (``fmt_num``), so a LaTeX ``S``
column aligns them on the decimal point; quantities spanning many orders of magnitude (loss differences)
in scientific notation (``sci``: 1.00e-06), which an ``S`` column aligns too.
"""
from __future__ import annotations

import dataclasses
import math
import re

from .labels import (KIND_LABELS, device_label, machine_label, phase_label, variant_label, workload_label)
from .speedups import baseline_text, throttle_state

FAIL_MARK = "\u2020"   # dagger: parity failed
THROTTLE_MARK = "\u2021"   # double dagger: a GPU clock limit was active while the row was timed
NOISY_MARK = "~"
LONG_ROWS = 35         # more rows than this: a longtable in LaTeX, several pages in the PDF
NUMERIC = ("num", "int", "sci", "dec2")   # column kinds set right-aligned (LaTeX: siunitx S columns)
PHASE_SHORT = {"forward": "fwd", "backward_data": "bwd data", "backward_weights": "bwd weights"}


@dataclasses.dataclass
class Col:
    key: str
    header: str
    kind: str = "text"        # text | num (3 significant digits) | int | sci (1.00e-06) | dec2 (2 decimals: 1.33)
                              # | para (wrapped text)
    group: str = ""           # a header spanning adjacent columns of the same group
    width_cm: float = 0.0     # para columns: the paragraph width in LaTeX


@dataclasses.dataclass
class Table:
    name: str                 # unique; the LaTeX label is tab:<name>
    file: str                 # the .md/.tex file it is written to (several tables may share one)
    title: str                # short, for the PDF page header
    caption: str
    cols: list[Col]
    rows: list[dict]
    notes: list[str] = dataclasses.field(default_factory=list)   # "header: value" of dropped columns

    def cell(self, row: dict, col: Col) -> str:
        return fmt_cell(row.get(col.key), col.kind)

    @property
    def full_caption(self) -> str:
        if not self.notes:
            return self.caption
        return self.caption.rstrip() + " In every row: " + "; ".join(self.notes) + "."

    @property
    def long(self) -> bool:
        return len(self.rows) > LONG_ROWS


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def fmt_num(v, digits: int = 3) -> str:
    """3 significant digits, positional (no exponent): 0.00801, 12.3, 4123.

    >>> [fmt_num(x) for x in (0.0080093, 12.345, 4123.4, 1.0)]
    ['0.00801', '12.3', '4123', '1.00']
    """
    if _missing(v):
        return ""
    v = float(v)
    if not math.isfinite(v):
        return ""
    if v == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(v)))
    text = f"{v:.{max(decimals, 0)}f}"
    if decimals > 0 and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits:
        text = f"{v:.{decimals - 1}f}"      # 9.996 -> "10.0", not "10.00"
    return text


def fmt_cell(v, kind: str) -> str:
    if _missing(v):
        return ""
    if kind == "num":
        return fmt_num(v)
    if kind == "sci":
        return f"{float(v):.2e}" if math.isfinite(float(v)) else ""
    if kind == "dec2":
        return f"{float(v):.2f}" if math.isfinite(float(v)) else ""
    if kind == "int":
        try:
            return str(int(round(float(v))))
        except (TypeError, ValueError):
            return str(v)
    return str(v)


def drop_constant(t: Table) -> Table:
    """Remove columns whose formatted value is the same in every row (2 rows or more); name them in the caption."""
    if len(t.rows) < 2:
        return t
    keep = []
    for c in t.cols:
        values = {t.cell(r, c) for r in t.rows}
        if len(values) == 1:
            v = values.pop()
            if v:
                head = f"{c.group} {c.header}".strip() if c.group else c.header
                t.notes.append(f"{head} {v}" if c.key == "note" else f"{head}: {v}")
        else:
            keep.append(c)
    t.cols = keep
    return t


# ============================================================================ Markdown
def markdown(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    heads = [esc(f"{c.group} {c.header}".strip() if c.group else c.header) for c in t.cols]
    lines = [f"**Table {t.name}.** {esc(t.full_caption)}", "", "| " + " | ".join(heads) + " |",
             "| " + " | ".join("---:" if c.kind in NUMERIC else "---" for c in t.cols) + " |"]
    for r in t.rows:
        lines.append("| " + " | ".join(esc(t.cell(r, c)) or "-" for c in t.cols) + " |")
    return "\n".join(lines) + "\n"


# ============================================================================ builders
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-")[:40] or "x"


def _marks(r: dict) -> str:
    marks = FAIL_MARK if r.get("failed") else ""
    marks += THROTTLE_MARK if throttle_state(r.get("throttled")) else ""
    return marks + (NOISY_MARK if r.get("noisy") else "")


MARK_TEXT = (f"{FAIL_MARK}: a parity failure in ours or in the reference (timed and counted); "
             f"{NOISY_MARK}: noisy (IQR/median above the suite's threshold).")


def reason_list(values) -> str:
    """NVML clock-limit reasons of throttled rows, each with its row count when they differ.

    ``values``: the ``throttle_reasons`` cells (``;``-separated) of the rows that ran throttled.

    >>> reason_list(["sw_power_cap", "sw_power_cap"]), reason_list(["sw_power_cap;hw_thermal", "hw_thermal", ""])
    ('sw_power_cap', 'hw_thermal 2, sw_power_cap 1, not recorded 1')
    """
    counts: dict = {}
    for v in values:
        for x in (str(v).split(";") if isinstance(v, str) and v else ["not recorded"]):
            if x:
                counts[x] = counts.get(x, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (kv[0] == "not recorded",
                                                                                   -kv[1], kv[0])))


def throttle_text(g, who: str = "ours or the reference it is compared with was") -> str:
    """The caption's sentence on the throttle mark: empty unless a row of ``g`` (pairs, or results rows)
    ran throttled."""
    if "throttled" not in g:
        return ""
    hit = g[g["throttled"].map(lambda v: throttle_state(v) is True)]
    if hit.empty:
        return ""
    return (f" {THROTTLE_MARK}: a GPU clock limit was active while {who} "
            f"timed (NVML reasons: {reason_list(hit.get('throttle_reasons', ['']))}); that time may be longer "
            "than the card's unthrottled one.")


def throttle_line(df) -> str:
    """One sentence on the GPU rows of ``df`` (results rows) that ran with a clock limit active; empty when
    none recorded it (CPU rows, results written before the NVML columns, no nvidia-ml-py).

    >>> import pandas as pd
    >>> throttle_line(pd.DataFrame({"device": ["gpu"] * 3 + ["cpu"], "throttled": [True, False, False, None],
    ...                             "throttle_reasons": ["sw_power_cap", "", "", ""]}))[:70]
    '1 of 3 GPU rows ran with a clock limit active (reasons: sw_power_cap);'
    """
    if "throttled" not in df or df.empty:
        return ""
    gpu = df[df["device"] == "gpu"]
    states = gpu["throttled"].map(throttle_state)
    known = int(states.notna().sum())
    if not known:
        return ""
    unread = len(gpu) - known
    more = f"; {unread} more had no reading" if unread else ""
    hit = gpu[states.map(lambda v: v is True)]
    if hit.empty:
        return f"None of {known} GPU rows ran with a clock limit active{more}."
    return (f"{len(hit)} of {known} GPU rows ran with a clock limit active (reasons: "
            f"{reason_list(hit.get('throttle_reasons', ['']))}){more}; the tables mark each figure that rests on "
            f"such a row with {THROTTLE_MARK}.")


def _where(pairs, device: str) -> str:
    labels = list(dict.fromkeys(pairs[pairs["device"] == device]["machine_label"])) if "machine_label" in pairs else []
    labels = [lb for lb in labels if lb and lb != device_label(device)]
    return f"{device_label(device)}, " + "; ".join(labels) if labels else device_label(device)


def _source_part(source: str, multi: bool) -> str:
    return f" [{source}]" if multi else ""


def model_tables(pairs, multi: bool, has_ci: bool) -> list[Table]:
    """One table per (source, device, phase): model x batch, ours vs the best reference and vs eager."""
    out = []
    if pairs.empty:
        return out
    m = pairs[pairs["kind"] == "model"]
    for (src, dev, ph), g in m.groupby(["source", "device", "phase"], sort=False):
        g = g.sort_values(["workload", "batch"])
        base = baseline_text(g, dev)
        rows = []
        for _, r in g.iterrows():
            rows.append({"model": r["workload"], "batch": r["batch"],
                         "ours": variant_label("custom", r["ours_variant"], dev).replace("ours (", "").rstrip(")"),
                         "ours_ms": r["ours_ms"], "ours_lo": r["ours_lo"], "ours_hi": r["ours_hi"],
                         "best_ms": r["best_ms"], "best": _short_ref(r["best_impl"], r["best_variant"]),
                         "sp": r["speedup_best"], "sp_lo": r["speedup_best_lo"], "sp_hi": r["speedup_best_hi"],
                         "eager": r["speedup_eager"], "note": _marks(r)})
        cols = [Col("model", "model"), Col("batch", "batch", "int"), Col("ours", "ours")]
        cols += [Col("ours_ms", "median", "num", "ours (ms)")]
        if has_ci:
            cols += [Col("ours_lo", "CI low", "num", "ours (ms)"), Col("ours_hi", "CI high", "num", "ours (ms)")]
        cols += [Col("best_ms", "ms", "num", "best ref."), Col("best", "variant", "text", "best ref.")]
        cols += [Col("sp", "vs best", "num", "speedup")]
        if has_ci:
            cols += [Col("sp_lo", "CI low", "num", "speedup"), Col("sp_hi", "CI high", "num", "speedup")]
        same = all(fmt_num(a) == fmt_num(b) for a, b in zip(g["speedup_best"], g["speedup_eager"]))
        eager_note = ""
        if g["speedup_eager"].notna().any() and not same:
            cols.append(Col("eager", "vs eager", "num", "speedup"))
        elif g["speedup_eager"].notna().any():
            eager_note = " PyTorch eager is the fastest (or only) PyTorch variant in every row, so vs eager = vs best."
        cols.append(Col("note", "note"))
        caption = (f"Models, {phase_label(ph)}, {_where(g, dev)}{_source_part(src, multi)}: median time per call "
                   f"of ours and of the best reference, {base}; speedup = best reference time / our time "
                   "(> 1: ours faster); vs eager = PyTorch eager time / our time." + eager_note)
        if has_ci:
            caption += (" CI: bootstrap 95% confidence interval of the median; a speedup's interval combines the "
                        "two medians' intervals (conservative).")
        caption += " " + MARK_TEXT + throttle_text(g)
        name = f"models-{_slug(src) + '-' if multi else ''}{dev}-{ph.replace('_', '-')}"
        out.append(drop_constant(Table(name, "models", f"Models: {phase_label(ph)}, {device_label(dev)}"
                                       + _source_part(src, multi), caption, cols, rows)))
    return out


def _short_ref(impl: str, variant: str) -> str:
    if impl == "reference" and variant.startswith("torch-"):
        return variant[len("torch-"):]
    return variant if impl == "reference" else f"{impl} {variant}"


def layer_tables(pairs, multi: bool, has_ci: bool) -> list[Table]:
    """One table per (source, device, kind): layer shape x phase."""
    out = []
    if pairs.empty:
        return out
    lay = pairs[pairs["kind"] != "model"]
    for (src, dev, kind), g in lay.groupby(["source", "device", "kind"], sort=False):
        order = {p: i for i, p in enumerate(PHASE_SHORT)}
        g = g.assign(_o=g["phase"].map(order)).sort_values(["workload", "_o"])
        giga = g[["ours_tflops", "best_tflops"]].max().max() < 1
        scale, unit = (1e3, "GFLOP/s") if giga else (1.0, "TFLOP/s")
        rows = []
        for _, r in g.iterrows():
            rows.append({"layer": workload_label(r["workload"]), "phase": PHASE_SHORT.get(r["phase"], r["phase"]),
                         "ours_ms": r["ours_ms"], "ours_lo": r["ours_lo"], "ours_hi": r["ours_hi"],
                         "ref_ms": r["best_ms"], "ref": _short_ref(r["best_impl"], r["best_variant"]),
                         "sp": r["speedup_best"], "sp_lo": r["speedup_best_lo"], "sp_hi": r["speedup_best_hi"],
                         "ours_fl": r["ours_tflops"] * scale, "ref_fl": r["best_tflops"] * scale,
                         "note": _marks(r)})
        cols = [Col("layer", "layer"), Col("phase", "phase"), Col("ours_ms", "ours", "num", "time (ms)")]
        if has_ci:
            cols += [Col("ours_lo", "CI low", "num", "time (ms)"), Col("ours_hi", "CI high", "num", "time (ms)")]
        cols += [Col("ref_ms", "ref.", "num", "time (ms)"), Col("ref", "ref.")]
        cols += [Col("sp", "ref./ours", "num", "speedup")]
        if has_ci:
            cols += [Col("sp_lo", "CI low", "num", "speedup"), Col("sp_hi", "CI high", "num", "speedup")]
        cols += [Col("ours_fl", "ours", "num", unit), Col("ref_fl", "ref.", "num", unit), Col("note", "note")]
        caption = (f"{KIND_LABELS.get(kind, kind).capitalize()}, {_where(g, dev)}{_source_part(src, multi)}: median "
                   f"time per call of ours and of the reference, {baseline_text(g, dev, kind)}; "
                   f"speedup = reference time / our time (> 1: ours faster); {unit} = the spec's FLOP count over "
                   "the median time. Layer: kernel (/stride), channels in->out, input size, batch (N, or rows M). "
                   "Phases: fwd forward, bwd data the input gradient, bwd weights the weight and bias gradients.")
        if has_ci:
            caption += " CI: bootstrap 95% confidence interval."
        caption += " " + MARK_TEXT + throttle_text(g)
        name = f"layers-{_slug(src) + '-' if multi else ''}{dev}-{kind}"
        out.append(drop_constant(Table(name, "layers", f"{KIND_LABELS.get(kind, kind).capitalize()}, "
                                       f"{device_label(dev)}" + _source_part(src, multi), caption, cols, rows)))
    return out


def not_ok_table(df, multi: bool) -> list[Table]:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return []
    rows = [{"source": r["source"], "variant": variant_label(r["impl"], r["variant"], r["device"]),
             "device": device_label(r["device"]), "workload": workload_label(r["workload"], with_batch=False),
             "phase": phase_label(r["phase"]), "batch": r["batch"], "status": r["status"],
             "reason": (r["reason"] or ("outputs differ from float64 beyond the tolerance"
                                        if r["status"] == "parity_fail" else ""))[:160],
             "note": THROTTLE_MARK if throttle_state(r.get("throttled")) else ""}
            for _, r in bad.iterrows()]
    cols = ([Col("source", "results")] if multi else []) + [
        Col("variant", "variant"), Col("device", "device"), Col("workload", "workload"), Col("phase", "phase"),
        Col("batch", "batch", "int"), Col("status", "status"), Col("reason", "reason", "para")]
    caption = ("Rows that are not ok: parity_fail rows were timed and appear in the other tables with "
               f"{FAIL_MARK}; other statuses (oom, unsupported, error, not_measured) have no time.")
    marked = throttle_text(bad, "the row was")
    if marked:
        cols.append(Col("note", "note"))
        caption += marked
    return [drop_constant(Table("not-ok", "not_ok", "Rows that are not ok", caption, cols, rows))]


def headline_table(head, multi: bool) -> list[Table]:
    """Geomean speedups vs the best reference (the headline) and vs eager, per device, kind and phase."""
    if head.empty:
        return []
    rows = []
    for _, h in head.iterrows():
        rows.append({"source": h["source"], "machine": h["machine_label"], "device": device_label(h["device"]),
                     "what": KIND_LABELS.get(h["kind"], h["kind"]), "precision": h.get("precision", "fp32"),
                     "phase": phase_label(h["phase"]),
                     "rows": h["rows"], "gm": h["geomean_best"], "min": h["min_best"], "max": h["max_best"],
                     "gm_eager": h["geomean_eager"] if h["kind"] == "model" else float("nan"),
                     "failed": h["failed"], "throttled": h.get("throttled", float("nan"))})
    cols = ([Col("source", "results")] if multi else []) + [
        Col("machine", "machine"), Col("what", "workloads"), Col("precision", "precision"), Col("phase", "phase"),
        Col("rows", "rows", "int"), Col("gm", "geomean", "num", "vs best reference"), Col("min", "min", "num", "vs best reference"),
        Col("max", "max", "num", "vs best reference"), Col("gm_eager", "geomean", "num", "vs eager"),
        Col("failed", FAIL_MARK, "int")]
    counts = [r["throttled"] for r in rows if not _missing(r["throttled"])]
    if any(counts):
        cols.append(Col("throttled", THROTTLE_MARK, "int"))
    refs = sorted({v for s in head["ref_variants"] for v in s.split(",") if v})
    names = ", ".join(variant_label(*v.split("/", 1)) for v in refs)
    caption = ("Headline speedups of ours (> 1: ours faster). Baseline: for each row the fastest reference "
               f"variant measured for it (here from: {names}); its time / our time, then the geometric mean, "
               "minimum and maximum over the rows of each group (both sides at the group's precision: fp32 "
               "strict FP32, tf32 TF32, bf16 BF16 autocast on PyTorch's side). vs eager: the geometric mean against PyTorch "
               f"eager instead (models only), a secondary view. {FAIL_MARK}: rows with a parity failure "
               "(counted).")
    if any(counts):
        hit = head[head["throttled"].fillna(0) > 0]
        reasons = sorted({x for cell in hit["throttle_reasons"] for x in str(cell).split(";") if x})
        caption += (f" {THROTTLE_MARK}: rows that ran with a GPU clock limit active on either side (counted; NVML "
                    f"reasons: {', '.join(reasons) or 'not recorded'})"
                    + ("; empty where not recorded (CPU rows)" if len(counts) < len(rows) else "") + ".")
    elif counts:
        caption += " No GPU row behind these figures ran with a clock limit active (NVML)."
    return [drop_constant(Table("headline", "headline", "Headline speedups", caption, cols, rows))]


def targets_table(targets: dict) -> list[Table]:
    """``targets``: {source: [targets.csv lines as dicts]}."""
    out = []
    for src, lines in targets.items():
        has_ci = any(line.get("ci_low", "") != "" for line in lines)
        rows = []
        for line in lines:
            met = {"True": "yes", "False": "no"}.get(line.get("met", ""), "not measured")
            rows.append({"target": line.get("target", ""), "measured": _float(line.get("measured")),
                         "ci_low": _float(line.get("ci_low")), "ci_high": _float(line.get("ci_high")),
                         "goal": _float(line.get("goal")), "met": met, "rows": line.get("rows", ""),
                         "note": line.get("note", "")})
        cols = [Col("target", "target"), Col("measured", "measured", "num")]
        if has_ci:
            cols += [Col("ci_low", "CI low", "num"), Col("ci_high", "CI high", "num")]
        cols += [Col("goal", "goal", "num"), Col("met", "met"), Col("rows", "rows", "int"),
                 Col("note", "what is measured", "para", width_cm=6.0)]
        caption = (f"Performance targets ({src}/targets.csv): each a ratio reference time / our time measured in "
                   "one run (> 1: ours faster). met: the goal is reached and every row of ours behind it passed "
                   "parity.")
        if has_ci:
            caption += " CI: bootstrap 95% confidence interval of the figure."
        out.append(drop_constant(Table(f"targets-{_slug(src)}" if len(targets) > 1 else "targets", "targets",
                                       "Performance targets", caption, cols, rows)))
    return out


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _gib(n) -> str:
    try:
        return f"{int(n) / 2**30:.0f} GiB"
    except (TypeError, ValueError):
        return ""


def _precision(flags: dict) -> str:
    if not isinstance(flags, dict) or not flags:
        return ""
    tf32 = [k for k in ("torch.backends.cuda.matmul.allow_tf32", "torch.backends.cudnn.allow_tf32") if flags.get(k)]
    text = "strict FP32 (TF32 off)" if not tf32 else "TF32 on: " + ", ".join(tf32)
    if "torch.float32_matmul_precision" in flags:
        text += f", matmul precision {flags['torch.float32_matmul_precision']}"
    if "torch.backends.cudnn.benchmark" in flags:
        text += f", cudnn.benchmark {flags['torch.backends.cudnn.benchmark']}"
    if flags.get("autocast") not in (None, "", "off"):
        text += f", autocast {flags['autocast']}"
    return text


def env_rows(env: dict, devices: list[str]) -> list[tuple[str, str]]:
    """(parameter, value) pairs of the environment record worth reading, in a fixed order."""
    e = env or {}
    gpu = e.get("gpu") if isinstance(e.get("gpu"), dict) else {}
    smi = e.get("nvidia_smi") if isinstance(e.get("nvidia_smi"), dict) else {}
    suite = e.get("suite") if isinstance(e.get("suite"), dict) else {}
    settings = suite.get("settings") if isinstance(suite.get("settings"), dict) else {}
    git = e.get("git") if isinstance(e.get("git"), dict) else {}
    rows = [("date (UTC)", str(e.get("timestamp_utc", "")).replace("T", " ").replace("+00:00", ""))]
    for dev in devices:
        rows.append((f"machine ({device_label(dev)})", machine_label(e, dev)))
    if e.get("machine_id"):
        rows.append(("machine id", str(e["machine_id"])))
    rows.append(("CPU", f"{e.get('cpu_model', '')}" + (f", {e['cpu_cores']} cores" if e.get("cpu_cores") else "")))
    if e.get("cpu_governor"):
        rows.append(("CPU governor", str(e["cpu_governor"])))
    if gpu:
        rows.append(("GPU", f"{gpu.get('name', '')}, {gpu.get('sms', '?')} SMs, {_gib(gpu.get('memory_bytes'))}, "
                            f"compute capability {gpu.get('compute_capability', '?')}"))
    if smi:
        rows.append(("GPU clocks / power", f"SM {smi.get('clocks.sm', '?')} (max {smi.get('clocks.max.sm', '?')}), "
                                           f"memory {smi.get('clocks.mem', '?')}, limit {smi.get('power.limit', '?')}"))
        rows.append(("driver", str(smi.get("driver_version", ""))))
    if e.get("cuda_runtime"):
        rows.append(("CUDA runtime / cuDNN", f"{e.get('cuda_runtime')} / {e.get('cudnn', '')}"))
    libs = [f"{k} {e[k]}" for k in ("python", "numpy", "torch", "cupy", "pandas") if e.get(k)]
    rows.append(("software", ", ".join(libs)))
    if e.get("numpy_blas"):
        rows.append(("NumPy BLAS", str(e["numpy_blas"])))
    threads = e.get("threads") if isinstance(e.get("threads"), dict) else {}
    tt = [f"torch {e['torch_threads']}"] if e.get("torch_threads") else []
    tt += [f"{k}={v}" for k, v in sorted(threads.items()) if v not in (None, "")]
    if tt:
        rows.append(("threads", ", ".join(tt)))
    prec = _precision(e.get("precision_flags"))
    if prec:
        rows.append(("precision", prec))
    modes = e.get("precision_modes") if isinstance(e.get("precision_modes"), dict) else {}
    for p, flags in modes.items():     # what the PyTorch side ran under at tf32 / bf16 (fp32: the line above)
        if p != "fp32" and _precision(flags):
            rows.append((f"precision ({p} rows)", _precision(flags)))
    flags = e.get("precision_flags") if isinstance(e.get("precision_flags"), dict) else {}
    if flags.get("jax: jax"):     # JAX's settings, recorded once a JAX model ran
        rows.append(("JAX", f"jax {flags['jax: jax']}, jaxlib {flags.get('jax: jaxlib', '?')}, precision "
                            f"{flags.get('jax: jax.lax.Precision of every dot_general / conv_general_dilated', '?')}"
                            f", XLA_FLAGS {flags.get('jax: XLA_FLAGS') or '(none)'}"))
    commit = git.get("commit") or e.get("git_commit")
    if commit:
        dirty = git.get("dirty", e.get("git_dirty"))
        rows.append(("git commit", str(commit)[:12] + (" (uncommitted changes)" if dirty else "")))
    calls = [c for c in (e.get("earlier_calls") or []) if isinstance(c, dict)]
    if calls:      # a run resumed over several calls
        rows.append(("earlier calls of this run", "; ".join(
            f"{str(c.get('timestamp_utc', '')).replace('T', ' ').replace('+00:00', '')} at {c.get('commit') or '?'}"
            for c in calls)))
    changed = e.get("precision_flags_changed") if isinstance(e.get("precision_flags_changed"), dict) else {}
    if changed:
        rows.append(("settings changed between calls", "; ".join(
            f"{k}: {v[0]} -> {v[1]}" for k, v in sorted(changed.items()) if isinstance(v, list) and len(v) == 2)))
    if suite:
        keys = ("budget_s", "min_repeats", "max_repeats", "warmup", "noise_threshold", "cold_l2")
        rows.append(("suite", f"{suite.get('name', '')}: " + ", ".join(f"{k} {settings[k]}" for k in keys
                                                                         if k in settings)))
    if e.get("peak_fp32_tflops"):
        rows.append(("FP32 peak used", f"{e['peak_fp32_tflops']} TFLOP/s"))
    return [(k, v) for k, v in rows if v not in ("", None)]


def env_table(envs: dict, devices_of: dict, throttling: dict | None = None) -> list[Table]:
    """``envs``: {source: env dict}; ``devices_of``: {source: [devices in its rows]}; ``throttling``:
    {source: ``throttle_line`` of its rows} (a row "GPU clock limits" after the clocks where not empty)."""
    if not envs:
        return []
    per = {}
    for src, e in envs.items():
        rows = env_rows(e, devices_of.get(src, []))
        line = (throttling or {}).get(src, "")
        if line:
            keys = [k for k, _ in rows]
            at = next((keys.index(k) + 1 for k in ("GPU clocks / power", "GPU") if k in keys), len(rows))
            rows.insert(at, ("GPU clock limits", line))
        per[src] = dict(rows)
    params = list(dict.fromkeys(k for rows in per.values() for k in rows))
    srcs = list(envs)
    rows = [{"param": p, **{f"s{i}": per[s].get(p, "") for i, s in enumerate(srcs)}} for p in params]
    cols = [Col("param", "parameter")] + [Col(f"s{i}", s if len(srcs) > 1 else "value", "para")
                                          for i, s in enumerate(srcs)]
    caption = "The environment each result folder was measured in (from its env.json)."
    t = Table("environment", "environment", "Environment", caption, cols, rows)
    return [t]    # never drop columns here: the values are the point
