"""Rendering the training comparison from saved ``train.csv`` files: curves, time to accuracy, curve gap, goal.

Nothing here trains or runs a kernel. Inputs are results folders holding a ``train.csv`` (written by
``harness train`` or by ``harness run`` for a suite with ``[[train]]`` sections); several folders are shown
side by side (a ``source`` each).

Outputs (in the report folder, every file written atomically):

- ``train_<device>_<dataset>_b<batch>.png`` and ``.pdf``: per model, training loss and test accuracy
  against the epoch and against the cumulative training time, ours and PyTorch's on one axis (ours solid,
  PyTorch dashed), the line the mean over seeds and the shaded band their range (min to max).
- ``train_time_to_accuracy.md/.tex``: per implementation variant, how many seeds reached the target test
  accuracy, the training time and epochs to it (mean and standard deviation over the seeds that reached
  it), the final accuracy, samples/s, and for ours the ratio to PyTorch's fastest variant.
- ``train_curve_gap.md/.tex``: the largest |our loss - PyTorch's loss| over the epochs, per seed (same
  weights, same batches), its worst and mean over seeds, and relative to PyTorch's loss.
- ``train_goal.md``: the training goal (our CUDA-graph training reaches the target >= 1.3x faster than
  PyTorch's fastest variant on mlp-mnist and lenet-mnist at batch 64 on the GPU), where rows exist for it.
- ``report.pdf`` (``render``) or pages appended to the main report (``section``).

Time to target = the cumulative ``train_s`` (train steps only, device-synchronised; no input pipeline and
no evaluation) at the end of the first epoch whose test accuracy reaches the target. A ratio is given only
where every seed of both sides reached the target.
"""
from __future__ import annotations

import datetime
import math
import os
import re

import numpy as np

from . import latex
from .io import DamagedFile, atomic_write, write_text
from .train import TRAIN_COLUMNS, TRAIN_CSV, read_train

GOAL_SPEEDUP = 1.3
GOAL_MODELS = ("mlp-mnist", "lenet-mnist")
GOAL_BATCH = 64
GOAL_OURS = "cuda-graph"
# Okabe & Ito's colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange, sky blue,
# yellow, black): one colour per implementation variant, the same in every figure.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
VARIANT_ORDER = ("cuda-graph", "cuda", "numpy", "torch-eager", "torch-graph", "torch-compile")
GROUP = ["source", "device", "dataset", "model", "batch", "lr", "momentum", "epochs", "precision"]
RUN = GROUP + ["impl", "variant", "seed"]
FONTS = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
         "ytick.labelsize": 8}


class TrainReportError(ValueError):
    """A train.csv that cannot be rendered (damaged, empty); the message names the file and the fix."""


# ================================================================================ loading
def _train_paths(inputs: list[str]) -> list[tuple[str, str]]:
    out = []
    for path in inputs:
        p = os.path.join(path, TRAIN_CSV)
        if os.path.isdir(path) and os.path.lexists(p):
            out.append((os.path.basename(os.path.normpath(path)) or path, p))
    return out


def train_only(inputs: list[str]) -> bool:
    """True when every input is a folder with a train.csv and nothing else to report (no results.csv, no
    pytest-benchmark JSON): the report is then the training report alone."""
    if not inputs:
        return False
    for path in inputs:
        if not os.path.isdir(path) or not os.path.lexists(os.path.join(path, TRAIN_CSV)):
            return False
        if os.path.lexists(os.path.join(path, "results.csv")):
            return False
        if any(f.endswith(".json") and f != "env.json" and not f.startswith(".") for f in os.listdir(path)):
            return False
    return True


def load(inputs: list[str]):
    """Every train.csv among ``inputs`` as one typed DataFrame with a ``source`` column (None if none)."""
    import pandas as pd

    frames = []
    for label, path in _train_paths(inputs):
        try:
            tf = read_train(path)
        except DamagedFile as err:
            raise TrainReportError(str(err)) from None
        if tf.torn_line is not None:
            import sys

            print(f"harness: {path}: line {tf.torn_line} is an incomplete last line (a run still writing, or "
                  "killed); it is left out", file=sys.stderr)
        if not tf.rows:
            continue
        df = pd.DataFrame(tf.rows, columns=list(TRAIN_COLUMNS), dtype=str)
        df["source"] = label
        frames.append(df)
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    for c in ("batch", "seed", "epochs", "epoch"):
        df[c] = df[c].astype(int)
    for c in ("train_loss", "test_acc", "train_s", "cum_train_s", "samples_per_s", "pipeline_s", "eval_s",
              "target_acc"):
        df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce")
    return df


# ================================================================================ figures of merit
def runs(df):
    """One row per run: status (its last row's), epochs done, time / epoch to target, final accuracy and
    loss, the median samples/s of its epochs."""
    import pandas as pd

    out = []
    for key, g in df.groupby(RUN, sort=False):
        g = g.sort_values("epoch")
        d = dict(zip(RUN, key))
        ok = g[(g["status"] == "ok") & g["test_acc"].notna()]
        target = float(g["target_acc"].iloc[0])
        hit = ok[ok["test_acc"] >= target]
        d.update(status=g["status"].iloc[-1], epochs_done=int(ok["epoch"].max()) if len(ok) else 0,
                 target=target, reached=not hit.empty,
                 tta_s=float(hit["cum_train_s"].iloc[0]) if not hit.empty else np.nan,
                 tta_epoch=int(hit["epoch"].iloc[0]) if not hit.empty else np.nan,
                 final_acc=float(ok["test_acc"].iloc[-1]) if len(ok) else np.nan,
                 final_loss=float(ok["train_loss"].iloc[-1]) if len(ok) else np.nan,
                 samples_per_s=float(ok["samples_per_s"].median()) if len(ok) else np.nan,
                 diverged_epoch=int(g[g["status"] == "diverged"]["epoch"].iloc[0])
                 if (g["status"] == "diverged").any() else np.nan)
        out.append(d)
    return pd.DataFrame(out)


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return np.nan, np.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _variant_rank(v: str) -> int:
    return VARIANT_ORDER.index(v) if v in VARIANT_ORDER else len(VARIANT_ORDER)


def time_to_accuracy(df):
    """Per group and implementation variant: seeds, reached, time and epochs to target, final accuracy,
    samples/s; for ours, PyTorch's fastest variant and the ratio (its time / ours)."""
    import pandas as pd

    per = runs(df)
    rows = []
    for key, g in per.groupby(GROUP, sort=False):
        variants = {}
        for (impl, variant), v in g.groupby(["impl", "variant"], sort=False):
            t_mean, t_sd = _mean_sd(v["tta_s"])
            a_mean, a_sd = _mean_sd(v["final_acc"])
            variants[(impl, variant)] = dict(
                zip(GROUP, key), impl=impl, variant=variant, seeds=len(v), reached=int(v["reached"].sum()),
                diverged=int((v["status"] == "diverged").sum()), tta_mean=t_mean, tta_sd=t_sd,
                epochs_mean=_mean_sd(v["tta_epoch"].astype(float))[0], acc_mean=a_mean, acc_sd=a_sd,
                samples_per_s=float(v["samples_per_s"].median()), target=float(v["target"].iloc[0]),
                best_ref="", best_ref_s=np.nan, speedup=np.nan)
        refs = [r for (impl, _), r in variants.items()
                if impl == "reference" and r["reached"] == r["seeds"] and np.isfinite(r["tta_mean"])]
        best = min(refs, key=lambda r: r["tta_mean"]) if refs else None
        for (impl, _), r in variants.items():
            if impl == "custom" and best is not None:
                r["best_ref"], r["best_ref_s"] = best["variant"], best["tta_mean"]
                if r["reached"] == r["seeds"] and r["tta_mean"] > 0:
                    r["speedup"] = best["tta_mean"] / r["tta_mean"]
        rows += sorted(variants.values(), key=lambda r: (r["impl"] != "custom", _variant_rank(r["variant"])))
    return pd.DataFrame(rows)


def curve_gap(df):
    """Per group, ours variant and PyTorch variant: the largest |loss difference| over the epochs both
    finished, per seed; its worst and mean over seeds, relative to PyTorch's loss, the epoch of the worst."""
    import pandas as pd

    ok = df[(df["status"] == "ok") & np.isfinite(df["train_loss"])]
    rows = []
    for key, g in ok.groupby(GROUP, sort=False):
        ours = sorted(g[g["impl"] == "custom"]["variant"].unique(), key=_variant_rank)
        refs = sorted(g[g["impl"] == "reference"]["variant"].unique(), key=_variant_rank)
        for ov in ours:
            for rv in refs:
                per_seed = []
                for seed, s in g.groupby("seed"):
                    a = s[s["variant"] == ov].set_index("epoch")["train_loss"]
                    b = s[s["variant"] == rv].set_index("epoch")["train_loss"]
                    common = a.index.intersection(b.index)
                    if len(common) == 0:
                        continue
                    diff = (a[common] - b[common]).abs()
                    worst = diff.idxmax()
                    per_seed.append((float(diff.max()), float((diff / b[common].abs()).max()), int(worst),
                                     len(common)))
                if not per_seed:
                    continue
                worst = max(per_seed)
                rows.append(dict(zip(GROUP, key), ours=ov, ref=rv, seeds=len(per_seed),
                                 max_abs=worst[0], mean_abs=float(np.mean([p[0] for p in per_seed])),
                                 max_rel=max(p[1] for p in per_seed), worst_epoch=worst[2],
                                 epochs=max(p[3] for p in per_seed)))
    return pd.DataFrame(rows)


def goal(tta):
    """The goal rows: ours cuda-graph vs PyTorch's fastest, GOAL_MODELS at batch GOAL_BATCH on the GPU."""
    if tta is None or tta.empty:
        return []
    g = tta[(tta["device"] == "gpu") & tta["model"].isin(GOAL_MODELS) & (tta["batch"] == GOAL_BATCH)
            & (tta["impl"] == "custom") & (tta["variant"] == GOAL_OURS)]
    out = []
    for _, r in g.iterrows():
        if np.isfinite(r["speedup"]):
            met = r["speedup"] >= GOAL_SPEEDUP
            verdict = "met" if met else f"missed by {(1 - r['speedup'] / GOAL_SPEEDUP):.0%}"
            measured = f"{r['speedup']:.2f}x"
        else:
            verdict = "not measured" + ("" if r["best_ref"] else ": no PyTorch variant reached the target in every seed")
            if r["reached"] < r["seeds"]:
                verdict = f"not met: ours reached the target in {r['reached']} of {r['seeds']} seeds"
            measured = "-"
        out.append([r["source"], r["dataset"], r["model"], f"{r['target']:.0%}", _fmt(r["tta_mean"], ".3g"),
                    f"{_fmt(r['best_ref_s'], '.3g')} ({r['best_ref'] or '-'})", measured, f">= {GOAL_SPEEDUP:g}x",
                    verdict])
    return out


# ================================================================================ tables
def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def _pm(mean, sd, spec=".3g", scale=1.0) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{format(mean * scale, spec)} ± {format(sd * scale, spec)}"


def write_table(name: str, header: list[str], rows: list[list[str]], out_dir: str, caption: str, label: str,
                left: int = 4) -> dict:
    """``name``.md (caption, then a Markdown table) and ``name``.tex (a booktabs table with caption and
    label, for ``\\input``); the first ``left`` columns left-aligned, the rest right-aligned."""
    md = [caption, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    tex = ["% generated by `python -m harness report`; needs \\usepackage{booktabs}",
           "\\begin{table}[htbp]", "\\centering", "\\small", f"\\caption{{{latex.escape(caption)}}}",
           f"\\label{{{label}}}", f"\\begin{{tabular}}{{{'l' * left + 'r' * (len(header) - left)}}}", "\\toprule",
           " & ".join(latex.escape(h) for h in header) + " \\\\", "\\midrule"]
    tex += [" & ".join(latex.escape(c) for c in r) + " \\\\" for r in rows]
    tex += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    paths = {"md": os.path.join(out_dir, f"{name}.md"), "tex": os.path.join(out_dir, f"{name}.tex")}
    write_text(paths["md"], "\n".join(md) + "\n")
    write_text(paths["tex"], "\n".join(tex))
    return {"text": "\n".join(md) + "\n", **paths}


def _where(r, multi: bool) -> list[str]:
    dev = f"{r['device']} ({r['source']})" if multi else r["device"]
    return [dev, r["dataset"], r["model"], str(int(r["batch"]))]


def tables(df, out_dir: str) -> dict:
    """Write the time-to-accuracy, curve-gap and goal tables; returns {name: {"text", "md", "tex"}}."""
    multi = df["source"].nunique() > 1
    res = {}
    tta = time_to_accuracy(df)
    header = ["device", "dataset", "model", "batch", "lr", "implementation", "reached", "time to target (s)",
              "epochs to target", "final test acc. (%)", "samples/s", "vs fastest PyTorch"]
    rows = []
    for _, r in tta.iterrows():
        vs = (f"{r['speedup']:.2f}x ({r['best_ref']})" if np.isfinite(r["speedup"]) else
              ("-" if r["impl"] == "reference" else "n/a"))
        reached = f"{r['reached']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        rows.append(_where(r, multi) + [r["lr"], f"{'ours' if r['impl'] == 'custom' else 'PyTorch'} {r['variant']}",
                    reached, _pm(r["tta_mean"], r["tta_sd"]), _fmt(r["epochs_mean"], ".2g"),
                    _pm(r["acc_mean"], r["acc_sd"], ".3g", 100.0), _fmt(r["samples_per_s"], ".3g"), vs])
    targets = ", ".join(sorted({f"{t:.0%}" for t in tta["target"]})) if not tta.empty else "-"
    caption = (f"Time to the target test accuracy ({targets}): training time (train steps only, device-"
               "synchronised; no input pipeline, no evaluation) up to the end of the first epoch that reaches it, "
               "mean ± standard deviation over the seeds that reached it; reached = seeds that did / seeds run. "
               "Final test accuracy after the last epoch, mean ± sd over seeds; samples/s the median epoch. "
               "vs fastest PyTorch = PyTorch's fastest variant's time / ours (> 1: ours faster), where every seed "
               "of both reached the target.")
    res["train_time_to_accuracy"] = write_table("train_time_to_accuracy", header, rows, out_dir, caption,
                                                "tab:train-time-to-accuracy", left=6)
    gap = curve_gap(df)
    if not gap.empty:
        header = ["device", "dataset", "model", "batch", "ours", "PyTorch", "seeds", "epochs",
                  "max Δ loss", "mean over seeds", "max relative", "at epoch"]
        rows = [_where(r, multi) + [r["ours"], r["ref"], str(r["seeds"]), str(r["epochs"]), _fmt(r["max_abs"], ".2e"),
                                    _fmt(r["mean_abs"], ".2e"), _fmt(r["max_rel"], ".2e"), str(r["worst_epoch"])]
                for _, r in gap.iterrows()]
        caption = ("Gap between our training curve and PyTorch's: max Δ loss is the largest absolute difference "
                   "between our mean training loss and PyTorch's over the epochs, for one seed (same initial weights, same batches in the same order), "
                   "worst and mean over the seeds; relative = that difference / PyTorch's loss. Float32 summation order makes "
                   "the two drift apart slowly; its size is reported here, not hidden.")
        res["train_curve_gap"] = write_table("train_curve_gap", header, rows, out_dir, caption,
                                             "tab:train-curve-gap", left=6)
    goal_rows = goal(tta)
    if goal_rows:
        header = ["source", "dataset", "model", "target", "ours cuda-graph (s)", "fastest PyTorch (s)", "measured",
                  "goal", "verdict"]
        caption = (f"Goal: our CUDA-graph training reaches the target accuracy at batch {GOAL_BATCH} at least "
                   f"{GOAL_SPEEDUP:g}x faster (training time) than PyTorch's fastest variant, on "
                   f"{' and '.join(GOAL_MODELS)} on the GPU.")
        res["train_goal"] = write_table("train_goal", header, goal_rows, out_dir, caption, "tab:train-goal", left=3)
    return res


# ================================================================================ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-")[:40] or "x"


def _colours(df) -> dict:
    keys = sorted({(i, v) for i, v in zip(df["impl"], df["variant"])}, key=lambda k: (k[0] != "custom",
                                                                                     _variant_rank(k[1])))
    return {k: PALETTE[n % len(PALETTE)] for n, k in enumerate(keys)}


def _seed_curves(g, column: str):
    """(epochs, mean, lo, hi, mean cumulative time) of ``column`` over the seeds of one variant."""
    ok = g[(g["status"] == "ok") & np.isfinite(g[column])]
    if ok.empty:
        return None
    by = ok.groupby("epoch")
    return (np.asarray(by.size().index), by[column].mean().to_numpy(), by[column].min().to_numpy(),
            by[column].max().to_numpy(), by["cum_train_s"].mean().to_numpy())


def plot_curves(g, colours: dict):
    """One figure for one (source, device, dataset, batch, lr, ...) group: a row per model, columns loss
    and accuracy against epoch and against training time."""
    plt = _plt()
    models = list(dict.fromkeys(g["model"]))
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(len(models), 4, figsize=(13.5, 3.0 * len(models) + 0.6), squeeze=False)
        for row, model in zip(axes, models):
            m = g[g["model"] == model]
            target = float(m["target_acc"].iloc[0])
            for (impl, variant), v in sorted(m.groupby(["impl", "variant"]),
                                             key=lambda kv: (kv[0][0] != "custom", _variant_rank(kv[0][1]))):
                who = "ours" if impl == "custom" else "PyTorch"
                nseeds = v["seed"].nunique()
                style = dict(color=colours[(impl, variant)], ls="-" if impl == "custom" else "--", lw=1.4,
                             marker="o" if impl == "custom" else "s", ms=3)
                label = f"{who} {variant} ({nseeds} seed{'s' if nseeds != 1 else ''})"
                for col, (metric, scale) in enumerate((("train_loss", 1.0), ("test_acc", 100.0))):
                    c = _seed_curves(v, metric)
                    if c is None:
                        continue
                    ep, mean, lo, hi, t = c
                    for ax, x in ((row[col], ep), (row[col + 2], t)):
                        ax.plot(x, mean * scale, label=label, **style)
                        ax.fill_between(x, lo * scale, hi * scale, color=style["color"], alpha=0.18, lw=0)
            for col in range(4):
                ax = row[col]
                ax.grid(True, which="both", alpha=0.3)
                ax.set_xlabel("epoch" if col < 2 else "training time (s, cumulative, device-synchronised)")
                if col >= 2:
                    ax.set_xscale("log")    # implementations can differ by 10-100x in time
                if col % 2 == 0:
                    ax.set_yscale("log")
                    ax.set_ylabel("training loss (epoch mean)")
                else:
                    ax.axhline(100.0 * target, color="0.3", lw=0.8, ls=":")
                    ax.set_ylabel("test accuracy (%)")
                ax.set_title(f"{model}: {'loss' if col % 2 == 0 else 'accuracy'} vs "
                             f"{'epoch' if col < 2 else 'time'}")
            row[1].legend(loc="lower right")
        first = g.iloc[0]
        fig.suptitle(f"training on {first['dataset']}, {first['device']} ({first['device_name']}), batch "
                     f"{first['batch']}, lr {first['lr']}, momentum {first['momentum']}: mean over seeds, band = "
                     f"min..max; dotted line: target {float(first['target_acc']):.0%}", fontsize=10)
        fig.tight_layout()
    return fig


def _save(fig, base: str) -> list[str]:
    paths = []
    for ext, kw in (("png", {"dpi": 150}), ("pdf", {})):
        path = f"{base}.{ext}"
        with atomic_write(path, binary=True) as fh:
            fig.savefig(fh, format=ext, metadata={"Creator": None} if ext == "pdf" else {"Software": None},
                        bbox_inches="tight", **kw)
        paths.append(path)
    return paths


def figures(df):
    """[(file base name, figure)] for every group of runs, in a stable order."""
    colours = _colours(df)
    multi = df["source"].nunique() > 1
    out, used = [], set()
    keys = [k for k in GROUP if k != "model"]
    for key, g in df.groupby(keys, sort=True):
        d = dict(zip(keys, key))
        name = f"train_{d['device']}_{_slug(d['dataset'])}_b{d['batch']}" + (f"_{_slug(d['source'])}" if multi else "")
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        out.append((name, plot_curves(g, colours)))
    return out


# ================================================================================ putting it together
def _text_pages(title: str, text: str, lines_per_page: int = 70):
    plt = _plt()
    lines = text.splitlines() or [""]
    pages = []
    for start in range(0, len(lines), lines_per_page):
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.text(0.03, 0.97, title + (" (cont.)" if start else ""), fontsize=11, weight="bold", va="top")
        fig.text(0.03, 0.93, "\n".join(lines[start:start + lines_per_page]), family="monospace", fontsize=8,
                 va="top")
        pages.append(fig)
    return pages


def section(inputs: list[str], out_dir: str) -> tuple[dict, list]:
    """Write the training tables and plots of ``inputs`` into ``out_dir``; returns ({name: path}, the PDF
    pages as matplotlib figures: tables first, then the curves). ({}, []) when no input has a train.csv."""
    df = load(inputs)
    if df is None:
        return {}, []
    files: dict = {}
    tabs = tables(df, out_dir)
    for k, v in tabs.items():
        files[f"{k}.md"], files[f"{k}.tex"] = v["md"], v["tex"]
    counts = df.groupby(RUN, sort=False)["status"].last().value_counts().sort_index()
    summary = [f"training runs: {int(counts.sum())} (" + ", ".join(f"{k}={v}" for k, v in counts.items()) + ")",
               f"rows (run x epoch): {len(df)}", ""]
    pages = []
    for key in ("train_goal", "train_time_to_accuracy", "train_curve_gap"):
        if key in tabs:
            text = ("\n".join(summary) if not pages else "") + _wrap(tabs[key]["text"])
            pages += _text_pages(f"Training: {key.removeprefix('train_').replace('_', ' ')}", text)
    for name, fig in figures(df):
        for path in _save(fig, os.path.join(out_dir, name)):
            files[os.path.basename(path)] = path
        pages.append(fig)
    return files, pages


def _wrap(text: str, width: int = 190) -> str:
    import textwrap

    out = []
    for line in text.splitlines():
        out += textwrap.wrap(line, width) if not line.startswith("|") and len(line) > width else [line]
    return "\n".join(out)


def _pdf_date():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return datetime.datetime.now(datetime.timezone.utc)


def render(inputs: list[str], out_dir: str | None = None) -> dict:
    """The training report of ``inputs`` (folders with a train.csv and nothing else to report): tables,
    plots and ``report.pdf`` in ``out_dir`` (default: the single input, or reports/compare-...)."""
    from matplotlib.backends.backend_pdf import PdfPages

    if load(inputs) is None:
        raise TrainReportError(f"{', '.join(os.path.join(i, TRAIN_CSV) for i in inputs)}: no finished training run "
                               "yet; run `harness train` with the same --out first")
    if out_dir is None:
        out_dir = inputs[0] if len(inputs) == 1 else os.path.join(
            "reports", "compare-" + "-vs-".join(os.path.basename(os.path.normpath(i)) for i in inputs))[:200]
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise TrainReportError(f"--out {out_dir}: is a file, not a folder; choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    files, pages = section(inputs, out_dir)
    plt = _plt()
    pdf_path = os.path.join(out_dir, "report.pdf")
    meta = {"Title": "cudnn-parity training report", "Author": "harness", "Creator": "harness report",
            "CreationDate": _pdf_date()}
    with atomic_write(pdf_path, binary=True) as fh, PdfPages(fh, metadata=meta) as pdf:
        for fig in _text_pages("Training report", f"inputs: {', '.join(inputs)}"):
            pdf.savefig(fig)
            plt.close(fig)
        for fig in pages:
            pdf.savefig(fig, bbox_inches="tight")
            plt.close(fig)
    files["pdf"] = pdf_path
    return files
