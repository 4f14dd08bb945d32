"""Rendering the training comparison from saved ``train.csv`` files: curves, time to accuracy, curve gap, goal.

Nothing here trains or runs a kernel. Inputs are results folders holding a ``train.csv`` (written by
``harness train`` or by ``harness run`` for a suite with ``[[train]]`` sections); several folders are shown
side by side (a ``source`` each).

Outputs (in the report folder, every file written atomically), made like the rest of the report's: each
table a ``tables.Table`` written by ``rendering.write_tables`` (Markdown, and LaTeX through ``harness.latex``)
and drawn on table pages of report.pdf (``harness.pdfdoc``), each figure a ``plots.Plot``:

- ``train_<device>_<dataset>_b<batch>.png`` and ``.pdf`` (``..._e<N>`` for N evaluations per epoch): per
  model, training loss and test accuracy against the epoch and against the cumulative training time, ours
  and PyTorch's on one axis (ours solid, PyTorch dashed), the line the mean over seeds and the shaded band
  their range (min to max); one point per evaluation (fractional epochs with ``--evals-per-epoch``).
- ``train_time_to_accuracy.md/.tex``: per implementation variant, how many seeds reached the target test
  accuracy, the training time and epochs to it (mean and standard deviation over the seeds that reached
  it), the final accuracy, samples/s, and for ours the ratio to PyTorch's fastest variant.
- ``train_curve_gap.md/.tex``: the largest |our loss - PyTorch's loss| over the evaluations, per seed (same
  weights, same batches), its worst and mean over seeds, and relative to PyTorch's loss.
- ``train_goal.md/.tex``: the training goal (our CUDA-graph training reaches the target >= 1.3x faster than
  PyTorch's fastest variant on mlp-mnist and lenet-mnist at batch 64 on the GPU), where rows exist for it.
- ``report_latex.tex`` and ``report.pdf`` (``render``), or a section of the main report's (``section``,
  ``add_pages``).

Time to target = the cumulative ``train_s`` (train steps only, device-synchronised; no input pipeline and
no evaluation) at the first evaluation whose test accuracy reaches the target: at the end of an epoch, or
at a fraction of one for runs evaluating N times per epoch (``evals_per_epoch``, part of every group, so
runs of different N are never mixed). A ratio is given only where every seed of both sides reached the
target.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from . import latex
from .io import DamagedFile, atomic_write, write_text
from .pdfdoc import Doc
from .plots import FULL, Plot, rc
from .rendering import pdf_date, save_plot, write_tables
from .tables import Col, Table, fmt_num
from .train import TRAIN_COLUMNS, TRAIN_CSV, read_train

GOAL_SPEEDUP = 1.3
GOAL_MODELS = ("mlp-mnist", "lenet-mnist")
GOAL_BATCH = 64
GOAL_OURS = "cuda-graph"
# Okabe & Ito's colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange, sky blue,
# yellow, black): one colour per implementation variant, the same in every figure.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
VARIANT_ORDER = ("cuda-graph", "cuda", "numpy", "torch-eager", "torch-graph", "torch-compile")
GROUP = ["source", "device", "dataset", "model", "batch", "lr", "momentum", "epochs", "evals_per_epoch", "precision"]
RUN = GROUP + ["impl", "variant", "seed"]


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
    for c in ("batch", "seed", "epochs", "evals_per_epoch"):
        df[c] = df[c].astype(int)
    df["epoch"] = df["epoch"].astype(float)         # fractional with --evals-per-epoch
    for c in ("train_loss", "test_acc", "train_s", "cum_train_s", "samples_per_s", "pipeline_s", "eval_s",
              "target_acc"):
        df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce")
    return df


# ================================================================================ figures of merit
def runs(df):
    """One row per run: status (its last row's), epochs done, time / epoch to target (the first evaluation
    at or above it; a fraction of an epoch with more than one evaluation per epoch), final accuracy and
    loss, the median samples/s of its rows."""
    import pandas as pd

    out = []
    for key, g in df.groupby(RUN, sort=False):
        g = g.sort_values("epoch")
        d = dict(zip(RUN, key))
        ok = g[(g["status"] == "ok") & g["test_acc"].notna()]
        target = float(g["target_acc"].iloc[0])
        hit = ok[ok["test_acc"] >= target]
        d.update(status=g["status"].iloc[-1], epochs_done=float(ok["epoch"].max()) if len(ok) else 0.0,
                 target=target, reached=not hit.empty,
                 tta_s=float(hit["cum_train_s"].iloc[0]) if not hit.empty else np.nan,
                 tta_epoch=float(hit["epoch"].iloc[0]) if not hit.empty else np.nan,
                 final_acc=float(ok["test_acc"].iloc[-1]) if len(ok) else np.nan,
                 final_loss=float(ok["train_loss"].iloc[-1]) if len(ok) else np.nan,
                 samples_per_s=float(ok["samples_per_s"].median()) if len(ok) else np.nan,
                 diverged_epoch=float(g[g["status"] == "diverged"]["epoch"].iloc[0])
                 if (g["status"] == "diverged").any() else np.nan)
        out.append(d)
    return pd.DataFrame(out)


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return np.nan, np.nan
    mean, sd = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
    # NOTE: equal values can leave a rounding residue (1e-16) that would print as a long positional number
    return mean, 0.0 if sd <= 1e-12 * abs(mean) else sd


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
                best_ref="", best_ref_s=np.nan, best_ref_epochs=np.nan, best_ref_samples_per_s=np.nan,
                speedup=np.nan)
        refs = [r for (impl, _), r in variants.items()
                if impl == "reference" and r["reached"] == r["seeds"] and np.isfinite(r["tta_mean"])]
        best = min(refs, key=lambda r: r["tta_mean"]) if refs else None
        for (impl, _), r in variants.items():
            if impl == "custom" and best is not None:
                r["best_ref"], r["best_ref_s"] = best["variant"], best["tta_mean"]
                r["best_ref_epochs"], r["best_ref_samples_per_s"] = best["epochs_mean"], best["samples_per_s"]
                if r["reached"] == r["seeds"] and r["tta_mean"] > 0:
                    r["speedup"] = best["tta_mean"] / r["tta_mean"]
        rows += sorted(variants.values(), key=lambda r: (r["impl"] != "custom", _variant_rank(r["variant"])))
    return pd.DataFrame(rows)


def curve_gap(df):
    """Per group, ours variant and PyTorch variant: the largest |loss difference| over the evaluations both
    finished, per seed; its worst and mean over seeds, relative to PyTorch's loss, the epoch (fractional
    with more than one evaluation per epoch) of the worst."""
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
                    per_seed.append((float(diff.max()), float((diff / b[common].abs()).max()), float(worst),
                                     len(common)))
                if not per_seed:
                    continue
                worst = max(per_seed)
                rows.append(dict(zip(GROUP, key), ours=ov, ref=rv, seeds=len(per_seed),
                                 max_abs=worst[0], mean_abs=float(np.mean([p[0] for p in per_seed])),
                                 max_rel=max(p[1] for p in per_seed), worst_epoch=worst[2],
                                 evaluations=max(p[3] for p in per_seed)))
    return pd.DataFrame(rows)


def goal(tta) -> list[dict]:
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
            measured = ""
        fastest = f"{fmt_num(r['best_ref_s']) or '-'} ({r['best_ref'] or '-'})"
        # what the ratio is made of: epochs to the target (fewer: the curve, or seed spread) and training
        # samples per second (the step's speed); time ratio = epochs ratio x throughput ratio
        epochs = (f"{r['epochs_mean']:.3g} / {r['best_ref_epochs']:.3g}"
                  if np.isfinite(r["epochs_mean"]) and np.isfinite(r["best_ref_epochs"]) else "-")
        ok = np.isfinite(r["best_ref_samples_per_s"]) and r["best_ref_samples_per_s"] > 0
        throughput = f"{r['samples_per_s'] / r['best_ref_samples_per_s']:.2f}x" if ok else "-"
        out.append({"source": r["source"], "dataset": r["dataset"], "model": r["model"],
                    "evals": r["evals_per_epoch"], "target": f"{r['target']:.0%}", "ours_s": r["tta_mean"],
                    "fastest": fastest, "epochs": epochs, "measured": measured, "throughput": throughput,
                    "goal": f">= {GOAL_SPEEDUP:g}x", "verdict": verdict})
    return out


# ================================================================================ tables
def _where(r) -> dict:
    return {"source": r["source"], "device": r["device"], "dataset": r["dataset"], "model": r["model"],
            "batch": r["batch"], "evals": r["evals_per_epoch"]}


def _where_cols(multi: bool, evals: bool = False) -> list[Col]:
    """The columns naming a group; ``evals``: with the evaluations per epoch (shown when some run has more
    than one, so that the tables of runs evaluating once per epoch read as they always have)."""
    return ([Col("source", "results")] if multi else []) + [
        Col("device", "device"), Col("dataset", "dataset"), Col("model", "model"), Col("batch", "batch", "int")] + (
        [Col("evals", "evals/epoch", "int")] if evals else [])


def _intervals(evals_per_epoch) -> tuple[bool, str]:
    """(whether any run evaluates more than once per epoch, a caption sentence naming the intervals)."""
    counts = sorted({int(n) for n in evals_per_epoch})
    if not any(n != 1 for n in counts):
        return False, ""
    return True, (" Test accuracy evaluated " + " or ".join("once" if n == 1 else f"{n} times" for n in counts)
                  + " per epoch (column evals/epoch), after nearly equal numbers of steps.")


def time_to_accuracy_table(tta, multi: bool) -> Table:
    evals, interval = _intervals(tta["evals_per_epoch"] if not tta.empty else [])
    rows = []
    for _, r in tta.iterrows():
        ours = r["impl"] == "custom"
        reached = f"{r['reached']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        rows.append({**_where(r), "lr": r["lr"], "impl": f"{'ours' if ours else 'PyTorch'} {r['variant']}",
                     "reached": reached, "tta": r["tta_mean"], "tta_sd": r["tta_sd"], "epochs": r["epochs_mean"],
                     "acc": 100.0 * r["acc_mean"], "acc_sd": 100.0 * r["acc_sd"], "sps": r["samples_per_s"],
                     "speedup": r["speedup"], "best_ref": r["best_ref"] if ours else ""})
    cols = _where_cols(multi, evals) + [
        Col("lr", "lr"), Col("impl", "implementation"), Col("reached", "reached"),
        Col("tta", "time (s)", "num", "to target"), Col("tta_sd", "sd", "num", "to target"),
        Col("epochs", "epochs", "dec2", "to target"),
        Col("acc", "mean", "num", "final acc. (%)"), Col("acc_sd", "sd", "num", "final acc. (%)"),
        Col("sps", "samples/s", "num"),
        Col("speedup", "ratio", "num", "vs fastest PyTorch"), Col("best_ref", "variant", "text", "vs fastest PyTorch")]
    targets = ", ".join(sorted({f"{t:.0%}" for t in tta["target"]})) if not tta.empty else "-"
    caption = (f"Time to the target test accuracy ({targets}): training time (train steps only, device-"
               "synchronised; no input pipeline, no evaluation) up to the first evaluation that reaches it (at the "
               "end of each epoch, or N times per epoch with --evals-per-epoch), mean and standard deviation over "
               "the seeds that reached it; epochs to it, fractional where evaluated within epochs; reached = seeds "
               "that did / seeds run. Final test accuracy after the last epoch (%), mean and sd over seeds; "
               "samples/s the median over the rows (evaluation intervals). vs fastest PyTorch = PyTorch's fastest "
               "variant's time / ours (> 1: ours faster), given where every seed of both reached the target."
               + interval)
    return Table("train-time-to-accuracy", "train_time_to_accuracy", "Training: time to accuracy", caption, cols,
                 rows)


def curve_gap_table(gap, multi: bool) -> Table:
    evals, interval = _intervals(gap["evals_per_epoch"])
    rows = [{**_where(r), "ours": r["ours"], "ref": r["ref"], "seeds": r["seeds"], "evaluations": r["evaluations"],
             "max_abs": r["max_abs"], "mean_abs": r["mean_abs"], "max_rel": r["max_rel"], "at": r["worst_epoch"]}
            for _, r in gap.iterrows()]
    cols = _where_cols(multi, evals) + [
        Col("ours", "ours"), Col("ref", "PyTorch"), Col("seeds", "seeds", "int"),
        Col("evaluations", "evaluations" if evals else "epochs", "int"),
        Col("max_abs", "max \u0394 loss", "sci"), Col("mean_abs", "mean over seeds", "sci"),
        Col("max_rel", "max relative", "sci"), Col("at", "at epoch", "dec2" if evals else "int")]
    caption = ("Gap between our training curve and PyTorch's: max \u0394 loss is the largest absolute difference "
               "between our mean training loss and PyTorch's over the evaluations (the end of each epoch, or N per "
               "epoch with --evals-per-epoch; the loss is the mean since the previous one), for one seed (same "
               "initial weights, same batches in the same order), worst and mean over the seeds; relative = that "
               "difference / PyTorch's loss. Float32 summation order makes the two drift apart slowly; its size is "
               "reported here, not hidden." + interval)
    return Table("train-curve-gap", "train_curve_gap", "Training: curve gap", caption, cols, rows)


def goal_table(rows: list[dict], multi: bool) -> Table:
    evals, interval = _intervals(r["evals"] for r in rows)
    cols = ([Col("source", "results")] if multi else []) + [Col("dataset", "dataset"), Col("model", "model")] + (
        [Col("evals", "evals/epoch", "int")] if evals else []) + [
        Col("target", "target"), Col("ours_s", "ours cuda-graph (s)", "num"), Col("fastest", "fastest PyTorch (s)"),
        Col("epochs", "epochs ours / PyTorch"), Col("measured", "measured"), Col("throughput", "throughput ratio"),
        Col("goal", "goal"), Col("verdict", "verdict")]
    caption = (f"Goal: our CUDA-graph training reaches the target accuracy at batch {GOAL_BATCH} at least "
               f"{GOAL_SPEEDUP:g}x faster (training time) than PyTorch's fastest variant, on "
               f"{' and '.join(GOAL_MODELS)} on the GPU. measured = that variant's time to the target / ours; "
               "it is the epochs to the target (mean over seeds) times the step's speed: throughput ratio = our "
               "training samples per second / that variant's (median over evaluation intervals)." + interval)
    return Table("train-goal", "train_goal", "Training: goal", caption, cols, rows)


def table_groups(df) -> list[tuple[str, str, list[Table]]]:
    """(file stem, title, [Table]) of each training table, in the report's order: goal, time to accuracy,
    curve gap. Every column is kept (no ``drop_constant``): a row names its run in full."""
    multi = df["source"].nunique() > 1
    tta = time_to_accuracy(df)
    gap = curve_gap(df)
    goal_rows = goal(tta)
    ts = ([goal_table(goal_rows, multi)] if goal_rows else []) + [time_to_accuracy_table(tta, multi)] + (
        [curve_gap_table(gap, multi)] if not gap.empty else [])
    return [(t.file, t.title, [t]) for t in ts]


def tables(df, out_dir: str) -> tuple[list, dict]:
    """Write the training tables (``<stem>.md``, ``<stem>.tex``, as every table of the report); returns
    (``table_groups``, {file name: path})."""
    groups = table_groups(df)
    return groups, write_tables(out_dir, groups)


# ================================================================================ plots
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-")[:40] or "x"


def _colours(df) -> dict:
    keys = sorted({(i, v) for i, v in zip(df["impl"], df["variant"])}, key=lambda k: (k[0] != "custom",
                                                                                     _variant_rank(k[1])))
    return {k: PALETTE[n % len(PALETTE)] for n, k in enumerate(keys)}


def _seed_curves(g, column: str):
    """(epochs, mean, lo, hi, mean cumulative time) of ``column`` over the seeds of one variant, one point
    per evaluation (epochs fractional with more than one evaluation per epoch)."""
    ok = g[(g["status"] == "ok") & np.isfinite(g[column])]
    if ok.empty:
        return None
    by = ok.groupby("epoch")
    return (np.asarray(by.size().index), by[column].mean().to_numpy(), by[column].min().to_numpy(),
            by[column].max().to_numpy(), by["cum_train_s"].mean().to_numpy())


def draw_curves(fig, g, colours: dict) -> None:
    """Into ``fig`` (a Figure or SubFigure), for one (source, device, dataset, batch, lr, ...) group: per
    model two rows, loss and accuracy (columns) against the epoch (first row) and the training time."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    models = list(dict.fromkeys(g["model"]))
    evals = int(g["evals_per_epoch"].iloc[0])
    axes = fig.subplots(2 * len(models), 2, squeeze=False)
    for i, model in enumerate(models):
        panels = axes[2 * i:2 * i + 2]          # [row: epoch | time][column: loss | accuracy]
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
                for row, x in ((0, ep), (1, t)):
                    ax = panels[row][col]
                    ax.plot(x, mean * scale, label=label, **style)
                    ax.fill_between(x, lo * scale, hi * scale, color=style["color"], alpha=0.18, lw=0)
        for row in range(2):
            for col in range(2):
                ax = panels[row][col]
                ax.grid(True, which="both", alpha=0.3)
                ax.set_xlabel("epoch" if row == 0 else "training time (s)")
                if row == 1:
                    ax.set_xscale("log")    # implementations can differ by 10-100x in time
                    ax.xaxis.set_minor_formatter(NullFormatter())     # minor labels collide within a decade
                elif evals == 1:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if col == 0:
                    ax.set_yscale("log")
                    ax.set_ylabel("training loss (epoch mean)" if evals == 1 else
                                  f"training loss (mean of 1/{evals} epoch)")
                else:
                    ax.axhline(100.0 * target, color="0.3", lw=0.8, ls=":")
                    ax.set_ylabel("test accuracy (%)")
                ax.set_title(f"{model}: {'loss' if col == 0 else 'accuracy'} vs {'epoch' if row == 0 else 'time'}")
        panels[0][1].legend(loc="lower right")


def _caption(g, multi: bool) -> str:
    first = g.iloc[0]
    where = f" [{first['source']}]" if multi else ""
    evals = int(first["evals_per_epoch"])
    interval = "" if evals == 1 else (f", evaluated {evals} times per epoch (the loss a mean over 1/{evals} epoch "
                                      "of steps)")
    return (f"Training on {first['dataset']}, {first['device']} ({first['device_name']}){where}, batch "
            f"{first['batch']}, lr {first['lr']}, momentum {first['momentum']}{interval}: per model, the training "
            "loss and the test accuracy against the epoch and against the cumulative training time (train steps "
            "only, device-synchronised); ours solid, PyTorch dashed; the line is the mean over seeds, the band their "
            f"range (min to max); dotted: the target accuracy {float(first['target_acc']):.0%}.")


def figures(df) -> list[Plot]:
    """A ``Plot`` of the training curves for every group of runs, in a stable order."""
    colours = _colours(df)
    multi = df["source"].nunique() > 1
    out, used = [], set()
    keys = [k for k in GROUP if k != "model"]
    for key, g in df.groupby(keys, sort=True):
        d = dict(zip(keys, key))
        name = (f"train_{d['device']}_{_slug(d['dataset'])}_b{d['batch']}"
                + (f"_e{d['evals_per_epoch']}" if d["evals_per_epoch"] != 1 else "")
                + (f"_{_slug(d['source'])}" if multi else ""))
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        size = (FULL, 4.4 * g["model"].nunique() + 0.2)
        out.append(Plot(name, _caption(g, multi), size, lambda fig, g=g: draw_curves(fig, g, colours)))
    return out


# ================================================================================ putting it together
@dataclasses.dataclass
class Section:
    """The training part of a report, written to its folder: what ``add_pages`` draws into report.pdf."""
    summary: str                   # runs and rows, one sentence
    machines: str                  # the device names of the runs
    groups: list                   # [(file stem, title, [Table])]: ``table_groups``
    figures: list                  # [Plot]: ``figures``
    files: dict                    # {file name: path} of every file written

    @property
    def latex_files(self) -> list[tuple[str, str]]:
        """(section title, .tex stem) of each table file, for ``latex.report_tex``."""
        return [(title, stem) for stem, title, _ in self.groups]

    @property
    def latex_figures(self) -> list[tuple[str, str]]:
        """(.pdf stem, caption) of each curve figure, for ``latex.report_tex``."""
        return [(p.name, p.caption) for p in self.figures]


def section(inputs: list[str], out_dir: str) -> Section | None:
    """Write the training tables and plots of ``inputs`` into ``out_dir``; None when no input has a train.csv."""
    df = load(inputs)
    if df is None:
        return None
    groups, files = tables(df, out_dir)
    counts = df.groupby(RUN, sort=False)["status"].last().value_counts().sort_index()
    summary = (f"Training runs: {int(counts.sum())} (" + ", ".join(f"{v} {k}" for k, v in counts.items())
               + f"); {len(df)} rows (run x evaluation) from {', '.join(dict.fromkeys(df['source']))}.")
    figs = figures(df)
    for plot in figs:
        files.update(save_plot(plot, out_dir))
    machines = "; ".join(m for m in dict.fromkeys(df["device_name"]) if m) or "not recorded"
    return Section(summary, machines, groups, figs, files)


def add_pages(doc: Doc, sec: Section, tables_before: int = 0, figures_before: int = 0) -> None:
    """The training part of report.pdf: the summary, each table as table pages, then a captioned page per
    curve figure; tables and figures numbered on from those of the document before them."""
    doc.paragraph(sec.summary)
    number = tables_before
    for _, _, ts in sec.groups:
        for t in ts:
            number += 1
            doc.table(t, number)
    for i, plot in enumerate(sec.figures, figures_before + 1):
        doc.plot_page(plot, i)
    doc.close_page()


def render(inputs: list[str], out_dir: str | None = None) -> dict:
    """The training report of ``inputs`` (folders with a train.csv and nothing else to report): tables,
    plots, ``report_latex.tex`` and ``report.pdf`` in ``out_dir`` (default: the single input, or
    reports/compare-...)."""
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
    sec = section(inputs, out_dir)
    files = dict(sec.files)
    title = "cudnn-parity training report"
    # NOTE: not report.tex: compiled in place, it would overwrite report.pdf
    tex_path = os.path.join(out_dir, "report_latex.tex")
    write_text(tex_path, latex.report_tex(title, sec.machines, sec.latex_files, sec.latex_figures))
    files["report_latex.tex"] = tex_path
    pdf_path = os.path.join(out_dir, "report.pdf")
    meta = {"Title": title, "Author": "harness", "Creator": "harness report", "CreationDate": pdf_date()}
    with rc(), atomic_write(pdf_path, binary=True) as fh, PdfPages(fh, metadata=meta) as pdf:
        doc = Doc(pdf, title)
        doc.new_page()
        doc.heading(title, 15)
        doc.paragraph(f"Results: {', '.join(inputs)}. Machines: {sec.machines}.")
        add_pages(doc, sec)
    files["pdf"] = pdf_path
    return files
