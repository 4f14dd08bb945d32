"""Rendering: plots, Markdown and LaTeX tables and one multi-page PDF, from saved results only.

Nothing here runs a kernel: the inputs are ``results.csv`` (+ ``env.json``) folders and pytest-benchmark
``--benchmark-json`` files. Several inputs are shown side by side (a CPU run and a GPU run, two GPUs).

Outputs (in the report folder): ``report.pdf``; ``time_vs_batch_<device>_<phase>.png``,
``speedup_models_<device>.png``, ``speedup_layers_<device>.png``, ``tflops_<device>.png``,
``cpu_vs_gpu.png`` (when both devices are present); ``models.md/.tex``, ``layers.md/.tex``
(booktabs, ready for ``\\input``). Rows whose parity check failed are marked everywhere: a dagger in
tables, a red cross in plots, a hatched cell in heatmaps.

Which variants are compared ("ours / reference" speedups): ours is ``cuda-graph`` for GPU train steps and
inference, else ``cuda`` / ``numpy``; the reference is ``torch-eager`` for models and ``torch`` for layers.
Speedup = reference time / our time (> 1: ours is faster).

Inputs are read with the strict readers (``results.read_results``, ``env.read``): a damaged file is
refused naming the file, the line and the fix (a torn last row, left by a run still writing or killed, is
left out with a warning); inputs are never modified. Every output is written atomically (temporary file
in the same folder, fsync, rename), so a kill leaves the previous file or the new one.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys

import numpy as np

from . import env as envmod
from .io import DamagedFile, atomic_write, read_json_object, write_text
from .results import COLUMNS, read_results

FAIL_MARK = "\u2020"   # dagger: parity failed


class ReportError(ValueError):
    """An input that cannot be read (the message names it and says what is expected)."""


NUMERIC = ("batch", "median_ms", "iqr_ms", "min_ms", "repeats", "inner_loops", "samples_per_s", "flops", "tflops",
           "pct_peak", "peak_mem_bytes", "parity_rel_err")


# ============================================================================ loading
def _bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    return True if s == "true" else False if s == "false" else None


def _number(path: str, where: str, v, what: str):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ReportError(f"{path}: {where}: {what} must be a finite number >= 0, got {v!r}; is it a "
                          "pytest-benchmark --benchmark-json file?")
    return v


def benchmark_json_rows(path: str) -> list[dict]:
    """Rows (results.csv columns) from a pytest-benchmark JSON file; stats are seconds, rows are ms."""
    try:
        data = read_json_object(path, "pytest-benchmark JSON", "pass a pytest-benchmark --benchmark-json file")
    except DamagedFile as err:
        raise ReportError(str(err)) from None
    if not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path}: no 'benchmarks' list; is it a pytest-benchmark --benchmark-json file?")
    rows = []
    for i, b in enumerate(data["benchmarks"]):
        where = f"benchmarks[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("stats", {}), dict) or not isinstance(
                b.get("extra_info", {}), dict):
            raise ReportError(f"{path}: {where} must be an object with 'stats' and 'extra_info' objects; is it a "
                              "pytest-benchmark --benchmark-json file?")
        st, ex = b.get("stats", {}), dict(b.get("extra_info", {}))
        med = _number(path, where, st.get("median"), "stats.median")
        iqr = _number(path, where, st.get("iqr"), "stats.iqr")
        lo = _number(path, where, st.get("min"), "stats.min")
        row = {"impl": ex.get("impl", ""), "variant": ex.get("variant", b.get("name", "")),
               "device": ex.get("device", ""), "workload": ex.get("workload", b.get("group") or b.get("name")),
               "kind": ex.get("kind", ""), "batch": ex.get("batch", ""), "phase": ex.get("phase", ""),
               "precision": ex.get("precision", "fp32"), "shape": ex.get("shape", ""),
               "median_ms": None if med is None else 1e3 * med,
               "iqr_ms": None if iqr is None else 1e3 * iqr,
               "min_ms": None if lo is None else 1e3 * lo,
               "repeats": st.get("rounds"), "flops": _number(path, where, ex.get("flops"), "extra_info.flops"),
               "parity_rel_err": ex.get("parity_rel_err"), "parity_ok": ex.get("parity_ok"),
               "device_name": ex.get("device_name", ""), "status": ex.get("status", "ok"), "reason": ""}
        if row["flops"] and med:
            row["tflops"] = row["flops"] / med / 1e12
        if med and row["batch"]:
            try:
                row["samples_per_s"] = float(row["batch"]) / med
            except (TypeError, ValueError):
                raise ReportError(f"{path}: {where}: extra_info.batch must be a number, got {row['batch']!r}") from None
        rows.append(row)
    return rows


def _results_frame(csv_path: str):
    """results.csv as a DataFrame of strings, through the strict reader."""
    import pandas as pd

    try:
        res = read_results(csv_path)
    except DamagedFile as err:
        raise ReportError(str(err)) from None
    if res.empty:
        raise ReportError(f"{csv_path} is empty (a run killed before its first row?); rerun `harness run` with "
                          "the same --out, or remove the file")
    if res.torn_line is not None:
        print(f"harness: {csv_path}: line {res.torn_line} is an incomplete last row (a run still writing, or "
              "killed); it is left out. `harness run` with the same --out drops it and measures that row again",
              file=sys.stderr)
    return pd.DataFrame(res.rows, columns=list(COLUMNS), dtype=str)


def load(inputs: list[str]):
    """One DataFrame of every input, with a ``source`` column, and {source: env dict}."""
    import pandas as pd

    frames, envs = [], {}
    for path in inputs:
        label = os.path.basename(os.path.normpath(path)) or path
        if os.path.isdir(path):
            csv_path = os.path.join(path, "results.csv")
            jsons = sorted(f for f in os.listdir(path) if f.endswith(".json") and f != "env.json"
                           and not f.startswith("."))
            if not os.path.lexists(csv_path) and not jsons:
                raise ReportError(f"{path}: no results.csv (nor a pytest-benchmark .json) in this folder; "
                                  "pass a folder written by `harness run`")
            if os.path.lexists(csv_path):
                df = _results_frame(csv_path)
                df["source"] = label
                frames.append(df)
            for j in jsons:
                try:
                    rows = benchmark_json_rows(os.path.join(path, j))
                except ReportError:
                    continue
                df = pd.DataFrame(rows)
                df["source"] = f"{label}/{j[:-5]}"
                frames.append(df)
            env_path = os.path.join(path, "env.json")
            if os.path.lexists(env_path):
                try:
                    envs[label] = envmod.read(env_path)
                except DamagedFile as err:
                    raise ReportError(str(err)) from None
        elif os.path.isfile(path) and path.endswith(".json"):
            df = pd.DataFrame(benchmark_json_rows(path))
            df["source"] = label[:-5]
            frames.append(df)
        else:
            raise ReportError(f"{path}: not a results folder nor a pytest-benchmark .json file")
    if not frames:
        raise ReportError("no results to report")
    df = pd.concat(frames, ignore_index=True)
    for c in NUMERIC:
        if c not in df.columns:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce")
    for c in ("parity_ok", "noisy"):
        if c not in df.columns:
            df[c] = None
        df[c] = df[c].map(_bool)
    for c in ("impl", "variant", "device", "workload", "kind", "phase", "status", "reason", "device_name"):
        if c not in df.columns:
            df[c] = ""
        df[c] = df[c].fillna("").astype(str)
    df["failed"] = df["parity_ok"].map(lambda v: v is False)
    # NOTE: rows of another precision than strict FP32 are separate workloads everywhere ("mlp-mnist [bf16]"),
    # so ours at bf16 is paired, plotted and tabled only with PyTorch at bf16
    prec = df["precision"].fillna("").astype(str) if "precision" in df.columns else None
    if prec is not None:
        other = ~prec.isin(["", "fp32"])
        df.loc[other, "workload"] = df.loc[other, "workload"] + " [" + prec[other] + "]"
    return df, envs


# ============================================================================ pairing ours vs reference
def ours_variant(device: str, phase: str, kind: str) -> str:
    if device == "gpu":
        return "cuda-graph" if (kind == "model" and phase in ("train_step", "inference")) else "cuda"
    return "numpy"


def ref_variant(kind: str) -> str:
    return "torch-eager" if kind == "model" else "torch"


def paired(df):
    """One row per (source, device, kind, workload, batch, phase) with ours/ref times and the speedup."""
    import pandas as pd

    ok = df[df["status"].isin(["ok", "parity_fail"])]
    out = []
    keys = ["source", "device", "kind", "workload", "batch", "phase"]
    for key, g in ok.groupby(keys, sort=False):
        d = dict(zip(keys, key))
        ov = ours_variant(d["device"], d["phase"], d["kind"])
        rv = ref_variant(d["kind"])
        o = g[(g["impl"] == "custom") & (g["variant"] == ov)]
        r = g[(g["impl"] == "reference") & (g["variant"] == rv)]
        if o.empty or r.empty:
            continue
        refs = g[(g["impl"] == "reference") & g["median_ms"].notna()]
        best = refs.loc[refs["median_ms"].idxmin()]
        d.update(best_ref_ms=best["median_ms"], best_ref_variant=best["variant"])
        o, r = o.iloc[0], r.iloc[0]
        d.update(ours_variant=ov, ref_variant=rv, ours_ms=o["median_ms"], ref_ms=r["median_ms"],
                 speedup=r["median_ms"] / o["median_ms"] if o["median_ms"] > 0 else np.nan,
                 ours_tflops=o["tflops"], ref_tflops=r["tflops"], ours_rel_err=o["parity_rel_err"],
                 failed=bool(o["failed"] or r["failed"]), noisy=bool(o["noisy"] or r["noisy"]),
                 shape=o.get("shape", ""))
        out.append(d)
    return pd.DataFrame(out)


# ============================================================================ tables
def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _latex_escape(s: str) -> str:
    for a, b in (("\\", "\0"), ("{", r"\{"), ("}", r"\}"), ("\0", r"\textbackslash{}"), ("_", r"\_"),
                 ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("^", r"\^{}"),
                 ("~", r"$^{\sim}$"), (FAIL_MARK, r"$^\dagger$")):
        s = s.replace(a, b)
    return s


def _write_tables(name: str, header: list[str], rows: list[list[str]], out_dir: str, caption: str) -> dict:
    md = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md_text = f"{caption}\n\n" + "\n".join(md) + "\n"
    align = "l" * 3 + "r" * (len(header) - 3)
    tex = ["% generated by `python -m harness report`; needs \\usepackage{booktabs}",
           f"% {caption}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
           " & ".join(_latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    tex += [" & ".join(_latex_escape(c) for c in r) + " \\\\" for r in rows]
    tex += ["\\bottomrule", "\\end{tabular}", ""]
    paths = {"md": os.path.join(out_dir, f"{name}.md"), "tex": os.path.join(out_dir, f"{name}.tex")}
    write_text(paths["md"], md_text)
    write_text(paths["tex"], "\n".join(tex))
    return {"text": md_text, **paths}


def _mark(v: str, failed: bool, noisy: bool = False) -> str:
    return v + (FAIL_MARK if failed else "") + ("~" if noisy else "")


def tables(df, pairs, out_dir: str) -> dict:
    caption_note = (f"Times are medians in ms; speedup = reference / ours (> 1: ours faster); "
                    f"{FAIL_MARK} parity failed; ~ noisy (IQR/median above threshold).")
    res = {}
    multi = df["source"].nunique() > 1
    if not pairs.empty and (pairs["kind"] == "model").any():
        m = pairs[pairs["kind"] == "model"].sort_values(["source", "device", "workload", "phase", "batch"])
        header = ["device (source)" if multi else "device", "model", "phase", "batch", "ours", "ours ms",
                  "PyTorch eager ms", "speedup", "best PyTorch", "vs best"]
        rows = []
        for _, r in m.iterrows():
            rows.append([f"{r['device']} ({r['source']})" if multi else r["device"], r["workload"], r["phase"],
                         str(int(r["batch"])), r["ours_variant"], _mark(_fmt(r["ours_ms"]), r["failed"], r["noisy"]),
                         _fmt(r["ref_ms"]), _fmt(r["speedup"], ".2f"),
                         f"{_fmt(r['best_ref_ms'])} ({r['best_ref_variant']})",
                         _fmt(r["best_ref_ms"] / r["ours_ms"] if r["ours_ms"] > 0 else float("nan"), ".2f")])
        res["models"] = _write_tables("models", header, rows, out_dir, "Models: " + caption_note)
    lay = pairs[pairs["kind"] != "model"] if not pairs.empty else pairs
    if not lay.empty:
        lay = lay.sort_values(["source", "device", "kind", "workload", "phase"])
        header = ["device (source)" if multi else "device", "layer shape", "phase", "ours ms", "ref ms", "speedup",
                  "ours TFLOP/s", "ref TFLOP/s"]
        rows = []
        for _, r in lay.iterrows():
            rows.append([f"{r['device']} ({r['source']})" if multi else r["device"], r["shape"] or r["workload"], r["phase"],
                         _mark(_fmt(r["ours_ms"]), r["failed"], r["noisy"]), _fmt(r["ref_ms"]),
                         _fmt(r["speedup"], ".2f"), _fmt(r["ours_tflops"]), _fmt(r["ref_tflops"])])
        res["layers"] = _write_tables("layers", header, rows, out_dir, "Layer shapes: " + caption_note)
    bad = df[~df["status"].isin(["ok"])]
    if not bad.empty:
        header = ["impl/variant", "workload", "phase", "batch", "status", "reason"]
        rows = [[f"{r['impl']}/{r['variant']}", r["workload"], r["phase"], _fmt(r["batch"], ".0f"), r["status"],
                 r["reason"][:90]] for _, r in bad.iterrows()]
        res["not_ok"] = _write_tables("not_ok", header, rows, out_dir, "Rows that are not ok")
    return res


# ============================================================================ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    with atomic_write(path, binary=True) as fh:
        fig.savefig(fh, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")


def _line_colours(plt, d, columns: list[str]) -> dict:
    """One colour per line key across every panel of a figure, so a colour means the same everywhere."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {k: palette[i % len(palette)] for i, k in enumerate(sorted(d.groupby(columns).groups))}


def plot_time_vs_batch(df, device: str, phase: str):
    plt = _plt()
    d = df[(df["kind"] == "model") & (df["device"] == device) & (df["phase"] == phase) & df["median_ms"].notna()]
    models = sorted(d["workload"].unique())
    if not models:
        return None
    n = len(models)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    multi = df["source"].nunique() > 1
    colour = _line_colours(plt, d, ["source", "impl", "variant"])
    for ax, model in zip(axes.flat, models):
        g = d[d["workload"] == model]
        for (src, impl, var), s in g.groupby(["source", "impl", "variant"]):
            s = s.sort_values("batch")
            label = f"{impl}/{var}" + (f" [{src}]" if multi else "")
            ls = "-" if impl == "custom" else "--"
            ax.plot(s["batch"], s["median_ms"], ls, marker="o", ms=3, label=label, color=colour[(src, impl, var)])
            f = s[s["failed"]]
            if not f.empty:
                ax.plot(f["batch"], f["median_ms"], "x", color="red", ms=8, mew=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_ylabel("ms", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{phase} time vs batch on {device} (log-log; red x: parity failed)", fontsize=10)
    fig.tight_layout()
    return fig


def _heatmap(ax, mat, row_labels, col_labels, failed, title):
    plt = _plt()
    with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.log2(mat)
    lim = max(1.0, float(np.nanmax(np.abs(logm))) if np.isfinite(logm).any() else 1.0)
    im = ax.imshow(logm, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, fontsize=6, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=6)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2g}" + (FAIL_MARK if failed[i, j] else ""), ha="center", va="center",
                        fontsize=5)
            if failed[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="red"))
    ax.set_title(title, fontsize=8)
    return im


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


def plot_speedup_models(pairs, device: str, source: str = ""):
    plt = _plt()
    p = pairs[(pairs["kind"] == "model") & (pairs["device"] == device)] if not pairs.empty else pairs
    if p.empty:
        return None
    phases = [ph for ph in ("inference", "forward_backward", "train_step") if ph in set(p["phase"])]
    fig, axes = plt.subplots(1, len(phases), figsize=(4.2 * len(phases), 3.6), squeeze=False)
    fig.subplots_adjust(wspace=0.45)   # room for the model names of each panel
    im = None
    for ax, ph in zip(axes.flat, phases):
        g = p[p["phase"] == ph]
        models = sorted(g["workload"].unique())
        batches = sorted(g["batch"].unique())
        mat = np.full((len(models), len(batches)), np.nan)
        fail = np.zeros_like(mat, dtype=bool)
        for _, r in g.iterrows():
            i, j = models.index(r["workload"]), batches.index(r["batch"])
            mat[i, j], fail[i, j] = r["speedup"], r["failed"]
        im = _heatmap(ax, mat, models, [str(int(b)) for b in batches], fail, ph)
        ax.set_xlabel("batch", fontsize=7)
    fig.colorbar(im, ax=list(axes.flat), label="log2(reference / ours)", shrink=0.8)
    fig.suptitle(f"speedup ours vs PyTorch on {device}{' [' + source + ']' if source else ''} "
                 "(>0 blue: ours faster)", fontsize=10)
    return fig


def plot_speedup_layers(pairs, device: str, source: str = ""):
    plt = _plt()
    p = pairs[(pairs["kind"] != "model") & (pairs["device"] == device)] if not pairs.empty else pairs
    if p.empty:
        return None
    shapes = list(dict.fromkeys(p.sort_values(["kind", "workload"])["workload"]))
    phases = [ph for ph in ("forward", "backward_data", "backward_weights") if ph in set(p["phase"])]
    mat = np.full((len(shapes), len(phases)), np.nan)
    fail = np.zeros_like(mat, dtype=bool)
    for _, r in p.iterrows():
        i, j = shapes.index(r["workload"]), phases.index(r["phase"])
        mat[i, j], fail[i, j] = r["speedup"], r["failed"]
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.22 * len(shapes)))
    im = _heatmap(ax, mat, shapes, phases, fail,
                  f"layer speedup ours vs PyTorch on {device}{' [' + source + ']' if source else ''}")
    fig.colorbar(im, ax=ax, label="log2(reference / ours)")
    fig.tight_layout()
    return fig


def plot_tflops(df, device: str, peak: float | None):
    plt = _plt()
    d = df[(df["device"] == device) & df["tflops"].notna() & (df["flops"] > 0)]
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (impl, kind), g in d.groupby(["impl", "kind"]):
        ax.scatter(g["flops"], g["tflops"], s=12, marker="o" if impl == "custom" else "^", label=f"{impl} {kind}",
                   alpha=0.75)
    f = d[d["failed"]]
    if not f.empty:
        ax.scatter(f["flops"], f["tflops"], s=40, marker="x", color="red", label="parity failed")
    if peak:
        ax.axhline(peak, color="k", ls=":", lw=1)
        ax.text(d["flops"].min(), peak, f" FP32 peak {peak:g} TFLOP/s", va="bottom", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per call")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(f"achieved TFLOP/s on {device}" + ("" if peak else " (no FP32 peak known for this device)"),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_cpu_vs_gpu(df):
    plt = _plt()
    d = df[(df["kind"] == "model") & (df["phase"] == "train_step") & df["median_ms"].notna()]
    if set(d["device"]) < {"cpu", "gpu"}:
        return None
    models = sorted(set(d[d["device"] == "cpu"]["workload"]) & set(d[d["device"] == "gpu"]["workload"]))
    if not models:
        return None
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    colour = _line_colours(plt, d, ["device", "impl", "variant"])
    for ax, model in zip(axes.flat, models):
        g = d[d["workload"] == model]
        for (dev, impl, var), s in g.groupby(["device", "impl", "variant"]):
            s = s.sort_values("batch")
            ax.plot(s["batch"], s["median_ms"], "-" if dev == "gpu" else ":", marker="o", ms=3,
                    label=f"{dev} {impl}/{var}", color=colour[(dev, impl, var)])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("train step: CPU vs GPU (ms, log-log)", fontsize=10)
    fig.tight_layout()
    return fig


def _text_pages(title: str, text: str, lines_per_page: int = 70):
    plt = _plt()
    lines = text.splitlines() or [""]
    figs = []
    for start in range(0, len(lines), lines_per_page):
        fig = plt.figure(figsize=(8.27, 11.69))
        fig.text(0.04, 0.97, title + (" (cont.)" if start else ""), fontsize=11, weight="bold", va="top")
        fig.text(0.04, 0.94, "\n".join(lines[start:start + lines_per_page]), family="monospace", fontsize=5.5,
                 va="top")
        figs.append(fig)
    return figs


def _pdf_date():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return datetime.datetime.now(datetime.timezone.utc)


def render(inputs: list[str], out_dir: str | None = None, peak_tflops: float | None = None) -> dict:
    """Write every table, plot and report.pdf for ``inputs``; returns {name: path}."""
    df, envs = load(inputs)    # first: a refused input costs no matplotlib import
    from matplotlib.backends.backend_pdf import PdfPages

    plt = _plt()
    if out_dir is None:
        out_dir = inputs[0] if len(inputs) == 1 and os.path.isdir(inputs[0]) else os.path.join(
            "reports", "compare-" + "-vs-".join(os.path.basename(os.path.normpath(i)) for i in inputs))[:200]
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ReportError(f"--out {out_dir}: is a file, not a folder; choose another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out {out_dir}: cannot create the folder ({err.strerror}); choose another --out") from None
    pairs = paired(df)
    files: dict = {}
    tabs = tables(df, pairs, out_dir)
    for k, v in tabs.items():
        files[f"{k}.md"], files[f"{k}.tex"] = v["md"], v["tex"]

    peaks, peaks_by_device = {}, {}
    for src, e in envs.items():
        if e.get("peak_fp32_tflops"):
            peaks[src] = e["peak_fp32_tflops"]
            peaks_by_device[e.get("run_device", "gpu")] = e["peak_fp32_tflops"]
    figs = []
    devices = [d for d in ("gpu", "cpu") if d in set(df["device"])]
    for dev in devices:
        # time vs batch: every source of this device in one plot (two GPUs side by side)
        for ph in ("train_step", "forward_backward", "inference"):
            figs.append((f"time_vs_batch_{dev}_{ph}", plot_time_vs_batch(df, dev, ph)))
        # heatmaps and TFLOP/s: one per source (a heatmap cell holds one run)
        sources = sorted(set(df[df["device"] == dev]["source"]))
        for src in sources:
            tag = dev if len(sources) == 1 else f"{dev}_{_slug(src)}"
            sp = pairs[pairs["source"] == src] if not pairs.empty else pairs
            figs.append((f"speedup_models_{tag}", plot_speedup_models(sp, dev, src if len(sources) > 1 else "")))
            figs.append((f"speedup_layers_{tag}", plot_speedup_layers(sp, dev, src if len(sources) > 1 else "")))
            peak = peak_tflops or peaks.get(src) or (peaks_by_device.get(dev) if len(sources) == 1 else None)
            figs.append((f"tflops_{tag}", plot_tflops(df[df["source"] == src], dev, peak)))
    figs.append(("cpu_vs_gpu", plot_cpu_vs_gpu(df)))
    figs = [(n, f) for n, f in figs if f is not None]
    for name, fig in figs:
        path = os.path.join(out_dir, f"{name}.png")
        _save(fig, path)
        files[f"{name}.png"] = path

    env_text = "\n\n".join(f"[{src}]\n" + json.dumps(e, indent=1, sort_keys=True, default=str) for src, e in envs.items())
    summary = [f"inputs: {', '.join(inputs)}", f"rows: {len(df)}",
               "status: " + ", ".join(f"{k}={v}" for k, v in df["status"].value_counts().sort_index().items()),
               f"parity failures: {int(df['failed'].sum())}", ""]
    pdf_path = os.path.join(out_dir, "report.pdf")
    meta = {"Title": "cudnn-parity benchmark report", "Author": "harness", "Creator": "harness report",
            "CreationDate": _pdf_date()}
    with atomic_write(pdf_path, binary=True) as fh, PdfPages(fh, metadata=meta) as pdf:
        pages = _text_pages("Benchmark report", "\n".join(summary) + "\n" + (env_text or "(no env.json)"))
        for key in ("models", "layers", "not_ok"):
            if key in tabs:
                pages += _text_pages(f"Table: {key}", tabs[key]["text"])
        for fig in pages:
            pdf.savefig(fig)
            plt.close(fig)
        for _, fig in figs:
            pdf.savefig(fig, bbox_inches="tight")
            plt.close(fig)
    files["pdf"] = pdf_path
    return files
