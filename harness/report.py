"""Rendering: tables, plots, report_latex.tex and report.pdf, from saved results only.

Nothing here runs a kernel: the inputs are ``results.csv`` (+ ``env.json``, + ``targets.csv``) folders and
pytest-benchmark ``--benchmark-json`` files. Several inputs are shown side by side (a CPU run and a GPU
run, two GPUs); each input keeps its own lines and cells, named by its folder, and its machine is named
by more than its marketing name (``labels.machine_key``).

Outputs (in the report folder), documented in docs/harness.md ("The report"):

- tables, each as Markdown and LaTeX (``harness.tables``, ``harness.latex``): ``targets``, ``headline``,
  ``environment``, ``models``, ``layers``, ``not_ok`` (``.md`` / ``.tex``);
- plots, each as PNG and vector PDF (``harness.plots``): ``time_vs_batch_<device>_<phase>``,
  ``speedup_models_<device>`` (vs the best reference variant: the headline),
  ``speedup_models_<device>_vs_eager``, ``speedup_layers_<device>``, ``roofline_<device>``,
  ``parity_<device>``, ``cpu_vs_gpu``;
- ``report_latex.tex``, which ``\\input``s the tables, includes the plots and compiles with pdflatex
  (not named report.tex: compiled in place, that would overwrite report.pdf);
- ``report.pdf`` (``harness.pdfdoc``): summary page, environment, tables, one captioned page per plot.

Every speedup names its baseline (``harness.speedups``): the headline is against the fastest reference
variant measured for each row; against PyTorch eager is the secondary view.

Inputs are read with the strict readers (``results.read_results``, ``env.read``): a damaged file is
refused naming the file, the line and the fix (a torn last row, left by a run still writing or killed, is
left out with a warning); inputs are never modified. Every output is written atomically (temporary file
in the same folder, fsync, rename), so a kill leaves the previous file or the new one.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from . import env as envmod
from . import latex, pdfdoc, plots, roofline, speedups, tables
from .io import DamagedFile, atomic_write, read_bytes, read_csv_records, read_json_object, write_text
from .labels import machine_key, machine_label
from .rendering import ReportError, pdf_date, save_plot, write_tables
from .results import COLUMNS, read_results


NUMERIC = ("batch", "median_ms", "iqr_ms", "min_ms", "repeats", "inner_loops", "samples_per_s", "flops", "tflops",
           "pct_peak", "peak_mem_bytes", "parity_rel_err", "parity_tol", "ci_low_s", "ci_high_s")


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
    res.warn_torn("`harness run` with the same --out drops it and measures that row again")
    return pd.DataFrame(res.rows, columns=list(COLUMNS), dtype=str)


def load(inputs: list[str]):
    """One DataFrame of every input, with a ``source`` column, and {source: env dict}."""
    import pandas as pd

    frames, envs = [], {}
    for path, label in zip(inputs, source_labels(inputs)):
        if os.path.isdir(path):
            csv_path = os.path.join(path, "results.csv")
            jsons = sorted(f for f in os.listdir(path) if f.endswith(".json") and f != "env.json"
                           and not f.startswith("."))
            if not os.path.lexists(csv_path) and not jsons:
                raise ReportError(f"{path}: no results.csv (nor a pytest-benchmark .json) in this folder; "
                                  "pass a folder written by `harness run`")
            if os.path.lexists(csv_path):
                df = _results_frame(csv_path)
                df["source"] = df["env_source"] = label
                frames.append(df)
            for j in jsons:
                try:
                    rows = benchmark_json_rows(os.path.join(path, j))
                except ReportError:
                    continue
                df = pd.DataFrame(rows)
                df["source"] = f"{label}/{j[:-5]}"
                df["env_source"] = label
                frames.append(df)
            env_path = os.path.join(path, "env.json")
            if os.path.lexists(env_path):
                try:
                    envs[label] = envmod.read(env_path)
                except DamagedFile as err:
                    raise ReportError(str(err)) from None
        elif os.path.isfile(path) and path.endswith(".json"):
            df = pd.DataFrame(benchmark_json_rows(path))
            df["source"] = label
            df["env_source"] = ""
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
    for c in ("parity_ok", "noisy", "throttled"):      # True / False / None (empty: not recorded)
        if c not in df.columns:
            df[c] = None
        df[c] = df[c].map(_bool)
    for c in ("impl", "variant", "device", "workload", "kind", "phase", "status", "reason", "device_name",
              "throttle_reasons"):
        if c not in df.columns:
            df[c] = ""
        df[c] = df[c].fillna("").astype(str)
    df["failed"] = df["parity_ok"].map(lambda v: v is False)
    # NOTE: rows of another precision than strict FP32 are separate workloads everywhere ("mlp-mnist [bf16]",
    # labels.split_precision), so ours at bf16 is paired, plotted and tabled only with PyTorch at bf16
    if "precision" not in df.columns:
        df["precision"] = "fp32"
    df["precision"] = df["precision"].fillna("").astype(str).replace("", "fp32")
    other = df["precision"] != "fp32"
    df.loc[other, "workload"] = df.loc[other, "workload"] + " [" + df.loc[other, "precision"] + "]"
    # bootstrap CIs of the median (seconds in results.csv) when the results carry them
    df["ci_low_ms"] = df["ci_low_s"] * 1e3
    df["ci_high_ms"] = df["ci_high_s"] * 1e3
    _add_machines(df, envs)
    return df, envs


def source_labels(inputs: list[str]) -> list[str]:
    """A distinct name per input: the folder's name, with its parent (or a number) when two inputs share it.

    >>> source_labels(["a/cpu-x", "b/cpu-x", "c/gpu"])
    ['a/cpu-x', 'b/cpu-x', 'gpu']
    """
    def base(p, parent=False):
        norm = os.path.normpath(p)
        name = os.path.basename(norm) or p
        name = name[:-5] if name.endswith(".json") and os.path.isfile(p) else name
        up = os.path.basename(os.path.dirname(os.path.abspath(norm)))
        return f"{up}/{name}" if parent and up else name

    names = [base(p) for p in inputs]
    out = [base(p, parent=True) if names.count(n) > 1 else n for p, n in zip(inputs, names)]
    seen: dict = {}
    for i, n in enumerate(out):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            out[i] = f"{n} ({seen[n]})"
    return out


def _add_machines(df, envs: dict) -> None:
    """``machine`` (identity: env.json's machine_id, else name + host + cores) and ``machine_label`` per row."""
    keys, labels = [], []
    cache: dict = {}
    for src, dev, name in zip(df["env_source"], df["device"], df["device_name"]):
        k = (src, dev, name)
        if k not in cache:
            env = envs.get(k[0])
            cache[k] = (machine_key(env, dev, name if not env else ""), machine_label(env, dev, name if not env else ""))
        keys.append(cache[k][0])
        labels.append(cache[k][1])
    df["machine"] = keys
    df["machine_label"] = labels




# ============================================================================ targets.csv
TARGET_COLUMNS = ("target", "measured", "goal", "met", "rows", "note")


def read_targets(path: str) -> list[dict]:
    """The lines of a targets.csv as dicts of strings (``ci_low``/``ci_high`` when it has them).

    Raises ReportError naming the file and the fix when it is damaged or lacks a column.
    """
    try:
        parsed = read_csv_records(path, read_bytes(path, "targets.csv"))
    except DamagedFile as err:
        raise ReportError(str(err)) from None
    fix = "rerun `harness targets` with the same --out (the measured rows are kept), or move the file away"
    if parsed.header is None:
        raise ReportError(f"{path} is empty or holds only a torn line; {fix}")
    _, header = parsed.header
    missing = [c for c in TARGET_COLUMNS if c not in header]
    if missing:
        raise ReportError(f"{path}: the header lacks {', '.join(missing)}; {fix}")
    if parsed.torn_line is not None:
        raise ReportError(f"{path}, line {parsed.torn_line}: an incomplete last line; {fix}")
    lines = []
    for n, fields in parsed.records:
        if len(fields) != len(header):
            raise ReportError(f"{path}, line {n}: {len(fields)} fields, the header has {len(header)}; {fix}")
        d = dict(zip(header, fields))
        for c in ("measured", "goal", "ci_low", "ci_high"):
            if d.get(c, ""):
                try:
                    float(d[c])
                except ValueError:
                    raise ReportError(f"{path}, line {n}: column {c!r} must be a number or empty, got {d[c]!r}; "
                                      f"{fix}") from None
        lines.append(d)
    return lines


def _same_machine(a: dict, b: dict) -> bool:
    """Whether two env records describe one machine, judged on what both of them record."""
    if a.get("machine_id") and b.get("machine_id"):
        return a["machine_id"] == b["machine_id"]
    dev = a.get("run_device", "cpu")
    if dev != b.get("run_device", "cpu"):
        return False
    fields = ["cpu_cores", "hostname"] + (["device_name"] if dev == "gpu" else ["cpu_model"])
    compared = [f for f in fields if a.get(f) and b.get(f)]
    return bool(compared) and all(a[f] == b[f] for f in compared) and bool(
        {"device_name", "cpu_model"} & set(compared))


def find_targets(inputs: list[str], labels: list[str], envs: dict) -> tuple[dict, list[str]]:
    """{source: targets lines} from each input folder's targets.csv, or else from the newest sibling
    ``targets-*`` folder measured on the same machine (judged from both env.json files, newest by their
    timestamp); and notes saying where sibling tables came from."""
    found, notes = {}, []
    for path, label in zip(inputs, labels):
        if not os.path.isdir(path):
            continue
        own = os.path.join(path, "targets.csv")
        if os.path.lexists(own):
            found[label] = read_targets(own)
            continue
        parent = os.path.dirname(os.path.abspath(path))
        try:
            siblings = sorted(d for d in os.listdir(parent) if d.startswith("targets-"))
        except OSError:
            continue
        same = []   # (timestamp, sibling, its env) of the same machine's targets folders
        for sib in siblings:
            folder = os.path.join(parent, sib)
            csv_path, env_path = os.path.join(folder, "targets.csv"), os.path.join(folder, "env.json")
            if os.path.samefile(folder, path) or not os.path.isfile(csv_path) or not os.path.isfile(env_path):
                continue
            try:
                other = envmod.read(env_path)
            except DamagedFile:
                continue
            if label in envs and _same_machine(envs[label], other):
                same.append((str(other.get("timestamp_utc", "")), sib, other))
        for _, sib, other in sorted(same, key=lambda t: (t[0], t[1]), reverse=True):   # the newest first
            try:
                found[f"{sib}"] = read_targets(os.path.join(parent, sib, "targets.csv"))
            except ReportError as err:
                print(f"harness: {err} (left out of the summary)", file=sys.stderr)
                continue
            notes.append(f"The targets come from the sibling folder {sib}, measured on the same machine "
                         f"({other.get('timestamp_utc', 'date unknown')}).")
            break
    return found, notes


# ============================================================================ rendering
def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


def _figures(df, pairs, envs, peak_tflops) -> list:
    figs = []
    devices = [d for d in ("gpu", "cpu") if d in set(df["device"])]
    for dev in devices:
        for ph in ("train_step", "forward_backward", "inference"):
            figs.append(plots.time_vs_batch(df, dev, ph))
        sources = sorted(set(df[df["device"] == dev]["source"]))
        for src in sources:
            tag = dev if len(sources) == 1 else f"{dev}_{_slug(src)}"
            shown = src if len(sources) > 1 else ""
            sp = pairs[pairs["source"] == src] if not pairs.empty else pairs
            figs.append(plots.speedup_models(sp, dev, shown, tag, view="best"))
            figs.append(plots.speedup_models(sp, dev, shown, tag, view="eager"))
            figs.append(plots.speedup_layers(sp, dev, shown, tag))
            env_src = df[df["source"] == src]["env_source"].iloc[0]
            env = envs.get(env_src, {})
            run_dev = env.get("run_device", dev)
            roof = roofline.roofs(env, dev, peak_tflops if run_dev == dev else None)
            figs.append(plots.roofline(sp, dev, roof, shown, tag))
        figs.append(plots.parity_error(df, dev))
        figs.append(plots.precision_ladder(df, dev))
    figs.append(plots.cpu_vs_gpu(df))
    return [f for f in figs if f is not None]


def _clock_limits(df) -> str:
    """``tables.throttle_line`` of every input, each named by its folder when there are several; empty
    when no input recorded clock limits."""
    lines = {src: tables.throttle_line(g) for src, g in df.groupby("source", sort=False)}
    lines = {src: line for src, line in lines.items() if line}
    if len(lines) == 1 and df["source"].nunique() == 1:
        return next(iter(lines.values()))
    return " ".join(f"[{src}] {line}" for src, line in lines.items())


def render(inputs: list[str], out_dir: str | None = None, peak_tflops: float | None = None) -> dict:
    """Write every table, plot, report_latex.tex and report.pdf for ``inputs``; returns {name: path}."""
    from . import train_report                      # training curves (train.csv): harness/train_report.py

    if train_report.train_only(inputs):
        try:
            return train_report.render(inputs, out_dir)
        except train_report.TrainReportError as err:
            raise ReportError(str(err)) from None
    df, envs = load(inputs)    # first: a refused input costs no matplotlib import
    labels = source_labels(inputs)
    targets, target_notes = find_targets(inputs, labels, envs)
    if out_dir is None:
        out_dir = inputs[0] if len(inputs) == 1 and os.path.isdir(inputs[0]) else os.path.join(
            "reports", "compare-" + "-vs-".join(_slug(lb) for lb in labels))[:200]
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ReportError(f"--out {out_dir}: is a file, not a folder; choose another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out {out_dir}: cannot create the folder ({err.strerror}); choose another --out") from None
    return render_frame(df, envs, out_dir, peak_tflops=peak_tflops, targets=targets, notes=target_notes,
                        inputs=inputs)


def render_frame(df, envs: dict, out_dir: str, peak_tflops: float | None = None, targets: dict | None = None,
                 notes: list[str] | None = None, inputs: list[str] | None = None) -> dict:
    """Render from a loaded frame (``load``'s columns): tables, plots, report_latex.tex, report.pdf."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages

    os.makedirs(out_dir, exist_ok=True)
    df = roofline.add_intensity(df)
    pairs = speedups.pair(df)
    head = speedups.headline(pairs)
    multi = df["source"].nunique() > 1
    has_ci = bool(df["ci_low_ms"].notna().any())
    devices_of = {src: [d for d in ("gpu", "cpu") if d in set(g["device"])]
                  for src, g in df.groupby("env_source") if src}
    throttling = {src: tables.throttle_line(g) for src, g in df.groupby("env_source") if src}

    groups = [("targets", "Performance targets", tables.targets_table(targets or {})),
              ("headline", "Headline speedups", tables.headline_table(head, multi)),
              ("environment", "Environment", tables.env_table(envs, devices_of, throttling)),
              ("models", "Models", tables.model_tables(pairs, multi, has_ci)),
              ("layers", "Layers", tables.layer_tables(pairs, multi, has_ci)),
              ("not_ok", "Rows that are not ok", tables.not_ok_table(df, multi))]
    groups = [(f, title, ts) for f, title, ts in groups if ts]
    files = write_tables(out_dir, groups)

    figs = _figures(df, pairs, envs, peak_tflops)
    for plot in figs:
        files.update(save_plot(plot, out_dir))

    from . import train_report                      # training curves (train.csv): harness/train_report.py

    try:
        train = train_report.section(inputs or [], out_dir)
    except train_report.TrainReportError as err:
        raise ReportError(str(err)) from None
    if train is not None:
        files.update(train.files)

    title = "cudnn-parity benchmark report"
    machines = "; ".join(m for m in dict.fromkeys(df["machine_label"]) if m) or "not recorded"
    # NOTE: not report.tex: compiled in place, it would overwrite report.pdf
    tex_path = os.path.join(out_dir, "report_latex.tex")
    tex_files = [(t, s) for s, t, _ in groups] + (train.latex_files if train is not None else [])
    tex_figures = [(p.name, p.caption) for p in figs] + (train.latex_figures if train is not None else [])
    write_text(tex_path, latex.report_tex(title, machines, tex_files, tex_figures))
    files["report_latex.tex"] = tex_path
    pdf_path = os.path.join(out_dir, "report.pdf")
    meta = {"Title": title, "Author": "harness", "Creator": "harness report", "CreationDate": pdf_date()}
    counts = df["status"].value_counts().sort_index()
    summary = (f"Results: {', '.join(inputs or sorted(set(df['source'])))}. Machines: {machines}. "
               f"{len(df)} rows ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
               f"{int(df['failed'].sum())} parity failure(s). Speedup = reference time / our time (> 1: ours "
               "faster); the headline baseline is, for each row, the fastest reference variant measured for it.")
    clock_limits = _clock_limits(df)
    if clock_limits:
        summary += " GPU clock limits: " + clock_limits
    with plots.rc(), atomic_write(pdf_path, binary=True) as fh, PdfPages(fh, metadata=meta) as pdf:
        doc = pdfdoc.Doc(pdf, title)
        doc.new_page()
        doc.heading(title, 15)
        doc.paragraph(summary)
        for note in notes or []:
            doc.paragraph(note)
        number = 0
        for stem, section, ts in groups:
            if stem in ("models", "layers"):
                doc.new_page()
            if stem not in ("targets", "headline"):
                doc.heading(section, 12)
            for t in ts:
                number += 1
                doc.table(t, number)
        for i, plot in enumerate(figs, 1):
            doc.plot_page(plot, i)
        if train is not None:
            doc.heading("Training", 12)
            train_report.add_pages(doc, train, tables_before=number, figures_before=len(figs))
        doc.close_page()
    files["pdf"] = pdf_path
    return files
