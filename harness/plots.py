"""The report's figures, drawn from saved results only (a plot never runs a kernel).

Every figure is a ``Plot``: a file name, a caption (which states the baseline of every speedup), a size
at thesis width (``FULL`` = 6.3 in, a full text width; 3.3 in is one column) and a ``draw(fig)`` that
draws into a matplotlib Figure or SubFigure. The same drawing goes to ``<name>.png``, ``<name>.pdf``
(vector) and a captioned page of report.pdf. Fonts are 8 pt or more at that size; colours are the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies), and ours and the
reference also differ in line style and marker, so a grey-scale print still tells them apart.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from .labels import (KIND_LABELS, PHASE_ORDER, device_label, phase_label, split_precision, variant_label,
                     workload_label)
from .speedups import baseline_text

FULL = 6.3       # inches: a thesis text width
COLUMN = 3.3     # one column of a two-column layout
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
ORANGE, SKY, GREEN, YELLOW, BLUE, VERMILLION, PURPLE, BLACK = OKABE_ITO
RC = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 9, "legend.title_fontsize": 8,
    "pdf.fonttype": 42,          # TrueType in the PDF: text stays text (searchable, editable)
    "axes.grid": True, "grid.alpha": 0.3, "axes.prop_cycle": None,
    "lines.linewidth": 1.2, "lines.markersize": 4,
}
# (colour, line style, marker) per (impl, variant): ours solid, references dashed
STYLE = {
    ("custom", "cuda-graph"): (VERMILLION, "-", "o"),
    ("custom", "cuda"): (ORANGE, "-", "D"),
    ("custom", "numpy"): (VERMILLION, "-", "o"),
    ("reference", "torch-eager"): (BLUE, "--", "s"),
    ("reference", "torch-graph"): (SKY, "--", "^"),
    ("reference", "torch-compile"): (GREEN, "--", "v"),
    ("reference", "torch"): (BLUE, "--", "s"),
}
_SPARE = ((PURPLE, ":", "P"), (BLACK, ":", "X"), (GREEN, "-.", "*"), (SKY, "-.", "h"))
KIND_COLOUR = {"model": VERMILLION, "dense": BLUE, "conv2d": GREEN, "pool": ORANGE}
SOURCE_DASH = ("-", "--", ":", "-.")


@dataclasses.dataclass
class Plot:
    name: str                      # file stem: <name>.png and <name>.pdf
    caption: str                   # plain text; says what is drawn, the units and every baseline
    size: tuple[float, float]      # inches, at thesis width
    draw: Callable                 # draw(fig): fig is a Figure or a SubFigure


def rc():
    """A matplotlib rc context with the report's fonts and palette."""
    import matplotlib as mpl
    from cycler import cycler

    params = dict(RC)
    params["axes.prop_cycle"] = cycler(color=list(OKABE_ITO))
    return mpl.rc_context(params)


def style(impl: str, variant: str, index: int = 0) -> tuple[str, str, str]:
    return STYLE.get((impl, variant), _SPARE[index % len(_SPARE)])


def _batch_axis(ax, batches, width_in: float = 1.6) -> None:
    """Log2 batch axis with ticks only at the batches measured; labels thinned where ticks crowd.

    ``width_in``: the axis length in inches. Two neighbouring labels need half their widths plus a gap
    (~0.07 in per digit at 8 pt); of two ticks closer than that only the larger batch is labelled (the
    tick stays).
    """
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    batches = sorted({int(b) for b in batches})
    ax.set_xscale("log", base=2)
    span = max(1.0, math.log2(batches[-1] / batches[0])) if batches else 1.0
    per_octave = width_in / (span + 1.0)
    shown, last = [], None
    for b in reversed(batches):
        need = 0.07 * (len(str(b)) + len(str(last or ""))) / 2 + 0.05
        if last is None or math.log2(last / b) * per_octave >= need:
            shown.append(b)
            last = b
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_major_formatter(FixedFormatter([str(b) if b in shown else "" for b in batches]))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(batches) == 1:
        ax.set_xlim(batches[0] / 2, batches[0] * 2)
    else:
        ax.set_xlim(batches[0] / 1.4, batches[-1] * 1.4)
    ax.set_xlabel("batch size")


def _time_axis(ax, label: str) -> None:
    """Log time axis labelled in plain numbers (0.1, 1, 10, 1,000), minor ticks labelled when it spans
    less than a decade (else nothing but the decades)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(y, _):
        return f"{y:,.0f}" if y >= 1 else f"{y:.6g}"

    def some(y, _):      # minor ticks: label 2x and 5x only
        mantissa = y / 10 ** math.floor(math.log10(y) + 1e-9)
        return plain(y, _) if round(mantissa, 6) in (2.0, 5.0) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(FuncFormatter(some) if hi / lo < 10 else NullFormatter())
    ax.set_ylabel(label)


def _legend_below(fig, handles, labels, ncol: int) -> None:
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def _multi(df) -> bool:
    return df["source"].nunique() > 1


def _series_label(impl, variant, device, src, multi: bool) -> str:
    return variant_label(impl, variant, device) + (f" [{src}]" if multi else "")


def _grid(n: int, cols: int):
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


def machines_text(df, device: str) -> str:
    names = [n for n in dict.fromkeys(df[df["device"] == device]["machine_label"]) if n]
    return "; ".join(names) if names else "machine not recorded"


# ============================================================================ time vs batch
def time_vs_batch(df, device: str, phase: str) -> Plot | None:
    d = df[(df["kind"] == "model") & (df["device"] == device) & (df["phase"] == phase) & (df["median_ms"] > 0)]
    models = sorted(d["workload"].unique())
    if not models:
        return None
    rows, cols = _grid(len(models), 3)
    has_ci = d["ci_low_ms"].notna().any()
    multi = _multi(d)
    failed = bool(d["failed"].any())

    def draw(fig):
        axes = fig.subplots(rows, cols, squeeze=False)
        handles: dict = {}
        keys = sorted(d.groupby(["source", "impl", "variant"]).groups)
        sources = sorted(d["source"].unique())
        for ax, model in zip(axes.flat, models):
            g = d[d["workload"] == model]
            for i, (src, impl, var) in enumerate(keys):
                s = g[(g["source"] == src) & (g["impl"] == impl) & (g["variant"] == var)].sort_values("batch")
                if s.empty:
                    continue
                colour, ls, marker = style(impl, var, i)
                if multi:
                    ls = SOURCE_DASH[sources.index(src) % len(SOURCE_DASH)]
                yerr = None
                if has_ci:
                    lo = (s["median_ms"] - s["ci_low_ms"]).clip(lower=0).fillna(0)
                    hi = (s["ci_high_ms"] - s["median_ms"]).clip(lower=0).fillna(0)
                    yerr = np.vstack([lo.to_numpy(), hi.to_numpy()])
                h = ax.errorbar(s["batch"], s["median_ms"], yerr=yerr, color=colour, ls=ls, marker=marker,
                                capsize=2 if has_ci else 0, elinewidth=0.8)
                handles.setdefault(_series_label(impl, var, device, src, multi), h)
                f = s[s["failed"]]
                if not f.empty:
                    hf, = ax.plot(f["batch"], f["median_ms"], "x", color=BLACK, ms=7, mew=1.5, ls="none")
                    handles.setdefault("parity failed", hf)
            _time_axis(ax, "time per call (ms)")
            _batch_axis(ax, g["batch"], FULL / cols - 0.65)
            ax.set_title(model)
        for ax in list(axes.flat)[len(models):]:
            ax.axis("off")
        fig.suptitle(f"{phase_label(phase).capitalize()}: time per call vs batch, {device_label(device)} "
                     f"({machines_text(d, device)})")
        _legend_below(fig, list(handles.values()), list(handles), ncol=3 if not multi else 2)

    n_series = d.groupby(["source", "impl", "variant"]).ngroups
    legend_rows = -(-(n_series + failed) // (3 if not multi else 2))
    caption = (f"{phase_label(phase).capitalize()} on the {device_label(device)} ({machines_text(d, device)}): "
               "median time per call in ms against the batch size, both axes logarithmic; ticks mark the batches "
               "measured. Solid lines: ours; dashed: the reference.")
    if has_ci:
        caption += " Error bars: bootstrap 95% confidence interval of the median."
    if failed:
        caption += " A cross marks a row whose outputs failed the parity check against float64."
    if multi:
        caption += " Line styles tell the result folders (in brackets) apart."
    return Plot(f"time_vs_batch_{device}_{phase}", caption, (FULL, 1.9 * rows + 0.35 + 0.2 * legend_rows), draw)


# ============================================================================ heatmaps
def _fmt_ratio(v: float) -> str:
    return f"{v:.0f}" if v >= 99.5 else f"{v:.2g}"


def _heatmap(ax, mat, row_labels, col_labels, failed, norm, cmap):
    """Cells coloured by the ratio on ``norm``, printed as ratios; NaN cells hatched grey, failed outlined."""
    from matplotlib.patches import Rectangle

    ax.grid(False)
    ax.add_patch(Rectangle((-0.5, -0.5), mat.shape[1], mat.shape[0], facecolor="#D9D9D9", edgecolor="#8C8C8C",
                           hatch="////", lw=0, zorder=0))
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                   zorder=1)
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            v = mat[i, j]
            if np.isfinite(v):
                dark = abs(math.log2(v)) > 0.6 * math.log2(norm.vmax) if v > 0 else False
                ax.text(j, i, _fmt_ratio(v) + ("\u2020" if failed[i, j] else ""), ha="center", va="center",
                        fontsize=8, color="white" if dark else "black", zorder=3)
            if failed[i, j]:
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor=BLACK, lw=1.5,
                                       zorder=2))
    ax.set_xlim(-0.5, mat.shape[1] - 0.5)
    ax.set_ylim(mat.shape[0] - 0.5, -0.5)
    return im


def _ratio_norm(values):
    from matplotlib.colors import LogNorm

    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    span = max(1.0, math.ceil(max(abs(math.log2(v.min())), abs(math.log2(v.max()))))) if v.size else 1.0
    return LogNorm(vmin=2.0 ** -span, vmax=2.0 ** span)


def _ratio_colourbar(fig, im, axes, label: str) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    cb = fig.colorbar(im, ax=axes, shrink=0.9, aspect=30)
    span = int(round(math.log2(im.norm.vmax)))
    step = max(1, span // 4)
    cb.ax.yaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(-span, span + 1, step)]))
    cb.ax.yaxis.set_minor_locator(NullLocator())
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: (f"{x:g}" if x >= 1 else f"1/{1 / x:g}")
                                                  + "\u00d7"))
    cb.set_label(label)


def _heat_legend(fig, any_nan: bool, any_failed: bool) -> None:
    from matplotlib.patches import Patch

    handles = []
    if any_nan:
        handles.append(Patch(facecolor="#D9D9D9", edgecolor="#8C8C8C", hatch="////", label="not measured"))
    if any_failed:
        handles.append(Patch(fill=False, edgecolor=BLACK, lw=1.5, label="\u2020 parity failed"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def _baseline_short(view: str, pairs, device: str, kind: str) -> str:
    if view == "eager":
        return "PyTorch eager" if kind == "model" else variant_label("reference", "torch", device)
    variants = sorted({v for s in pairs["ref_variants"] for v in str(s).split(",") if v})
    if len(variants) == 1:
        return variant_label(*variants[0].split("/", 1), device=device)
    return "best PyTorch variant" if all(v.startswith("reference/torch") for v in variants) else "best reference"


def speedup_models(pairs, device: str, source: str = "", tag: str = "", view: str = "best") -> Plot | None:
    """Heatmap model x batch per phase of reference / ours; ``view`` "best" (headline) or "eager"."""
    p = pairs[(pairs["kind"] == "model") & (pairs["device"] == device)] if not pairs.empty else pairs
    col = "speedup_best" if view == "best" else "speedup_eager"
    if p.empty or not p[col].notna().any():
        return None
    if view == "eager" and np.allclose(p["speedup_eager"].fillna(-1), p["speedup_best"].fillna(-1)):
        return None     # eager is the fastest (or only) reference in every cell: the headline shows it
    phases = [ph for ph in PHASE_ORDER if ph in set(p["phase"])]
    models = sorted(p["workload"].unique())
    base = _baseline_short(view, p, device, "model")
    norm = _ratio_norm(p[col])
    mats = {}
    for ph in phases:
        g = p[p["phase"] == ph]
        batches = sorted(g["batch"].unique())
        mat = np.full((len(models), len(batches)), np.nan)
        fail = np.zeros_like(mat, dtype=bool)
        for _, r in g.iterrows():
            i, j = models.index(r["workload"]), batches.index(r["batch"])
            mat[i, j], fail[i, j] = r[col], r["failed"]
        mats[ph] = (mat, fail, batches)
    any_nan = any(np.isnan(m).any() for m, _, _ in mats.values())
    any_failed = any(f.any() for _, f, _ in mats.values())
    where = machines_text(p, device) + (f" [{source}]" if source else "")

    def draw(fig):
        from matplotlib import colormaps

        cmap = colormaps["RdBu"].copy()
        axes = fig.subplots(len(phases), 1, squeeze=False)[:, 0]
        im = None
        for ax, ph in zip(axes, phases):
            mat, fail, batches = mats[ph]
            im = _heatmap(ax, mat, models, [str(int(b)) for b in batches], fail, norm, cmap)
            ax.set_title(phase_label(ph))
            ax.set_xlabel("batch size")
        _ratio_colourbar(fig, im, list(axes), f"speedup = {base} time / our time (blue: ours faster)")
        fig.suptitle(f"Speedup vs {base}, models on the {device_label(device)} ({where})")
        _heat_legend(fig, any_nan, any_failed)

    if view == "best":
        caption = (f"Speedup of ours over {baseline_text(p, device)} on the {device_label(device)} ({where}): "
                   "that variant's median time / our median time, per model and batch size; each cell prints "
                   "the ratio, and the colour shows the same ratio on a logarithmic scale (blue: ours faster, "
                   "red: the reference faster, white: equal).")
    else:
        caption = (f"Speedup of ours over PyTorch eager on the {device_label(device)} ({where}), a secondary "
                   "view: eager time / our time (blue: ours faster). Eager mode pays a launch per operation; "
                   "the headline figure compares with the fastest PyTorch variant instead.")
    caption += " Ours: " + ", ".join(sorted({variant_label('custom', v, device) for v in p["ours_variant"]})) + "."
    if any_nan:
        caption += " Hatched grey: not measured."
    if any_failed:
        caption += " \u2020 and a black frame: a parity failure in ours or in the reference."
    rows = sum(len(models) for _ in phases)
    height = 0.62 * len(phases) + 0.24 * rows + 0.5 + (0.25 if any_nan or any_failed else 0)
    stem = f"speedup_models_{tag or device}" + ("_vs_eager" if view == "eager" else "")
    return Plot(stem, caption, (FULL, height), draw)


def speedup_layers(pairs, device: str, source: str = "", tag: str = "") -> Plot | None:
    p = pairs[(pairs["kind"] != "model") & (pairs["device"] == device)] if not pairs.empty else pairs
    if p.empty:
        return None
    order = {"dense": 0, "conv2d": 1, "pool": 2}
    shapes = list(dict.fromkeys(p.assign(_o=p["kind"].map(order)).sort_values(["_o", "workload"])["workload"]))
    phases = [ph for ph in PHASE_ORDER if ph in set(p["phase"])]
    mat = np.full((len(shapes), len(phases)), np.nan)
    fail = np.zeros_like(mat, dtype=bool)
    for _, r in p.iterrows():
        i, j = shapes.index(r["workload"]), phases.index(r["phase"])
        mat[i, j], fail[i, j] = r["speedup_best"], r["failed"]
    base = _baseline_short("best", p, device, "layer")
    norm = _ratio_norm(p["speedup_best"])
    kinds = [p[p["workload"] == s]["kind"].iloc[0] for s in shapes]
    where = machines_text(p, device) + (f" [{source}]" if source else "")

    def draw(fig):
        from matplotlib import colormaps

        ax = fig.subplots()
        im = _heatmap(ax, mat, [workload_label(s) for s in shapes], [phase_label(ph) for ph in phases], fail, norm,
                      colormaps["RdBu"].copy())
        for i in range(1, len(kinds)):
            if kinds[i] != kinds[i - 1]:
                ax.axhline(i - 0.5, color=BLACK, lw=1.0)
        ax.xaxis.tick_top()
        _ratio_colourbar(fig, im, ax, f"speedup = {base} time / our time (blue: ours faster)")
        fig.suptitle(f"Speedup vs {base}, layers on the {device_label(device)} ({where})")
        _heat_legend(fig, bool(np.isnan(mat).any()), bool(fail.any()))

    caption = (f"Layer speedup of ours over {baseline_text(p, device, 'layer')} on the {device_label(device)} "
               f"({where}): its median time / our median time per layer shape (rows: kernel, channels in->out, "
               "input size, batch N or rows M) and phase; the colour shows the printed ratio on a logarithmic "
               "scale (blue: ours faster).")
    if np.isnan(mat).any():
        caption += " Hatched grey: not measured."
    if fail.any():
        caption += " \u2020 and a black frame: a parity failure."
    return Plot(f"speedup_layers_{tag or device}", caption, (FULL, 1.1 + 0.2 * len(shapes)), draw)


# ============================================================================ roofline
def roofline(pairs, device: str, roof: dict, source: str = "", tag: str = "") -> Plot | None:
    """Achieved TFLOP/s against arithmetic intensity, ours and the best reference per row, under the roofs."""
    p = pairs[(pairs["device"] == device) & pairs["intensity"].notna()] if not pairs.empty else pairs
    if p.empty:
        return None
    where = machines_text(p, device) + (f" [{source}]" if source else "")
    peak, bw = roof.get("tflops"), roof.get("gbs")

    def draw(fig):
        from matplotlib.lines import Line2D

        ax = fig.subplots()
        kinds = [k for k in ("model", "dense", "conv2d", "pool") if k in set(p["kind"])]
        for k in kinds:
            g = p[p["kind"] == k]
            ax.scatter(g["intensity"], g["ours_tflops"], s=14, marker="o", color=KIND_COLOUR[k], zorder=3,
                       edgecolor="none", alpha=0.85)
            ax.scatter(g["intensity"], g["best_tflops"], s=18, marker="^", facecolor="none",
                       edgecolor=KIND_COLOUR[k], lw=0.9, zorder=3, alpha=0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
        x0, x1 = p["intensity"].min() / 2, p["intensity"].max() * 2
        ys = np.concatenate([p["ours_tflops"].dropna().to_numpy(), p["best_tflops"].dropna().to_numpy()])
        y0, y1 = ys[ys > 0].min() / 3, ys.max() * 3
        xs = np.geomspace(x0, x1, 200)
        roof_handles = []
        if peak:
            y1 = max(y1, peak[0] * 2)
        if bw:
            mem = xs * bw[0] / 1e3                       # GB/s * FLOP/byte = GFLOP/s -> TFLOP/s
            under = mem <= peak[0] if peak else np.ones_like(mem, dtype=bool)
            h, = ax.plot(xs[under], mem[under], color=BLACK, lw=1.2, ls="--", zorder=2)
            roof_handles.append((h, f"memory roof {bw[0] / 1e3:g} TB/s ({bw[1]})"))
        if peak:
            start = peak[0] / (bw[0] / 1e3) if bw else x0
            h, = ax.plot([max(start, x0), x1], [peak[0]] * 2, color=BLACK, lw=1.2, zorder=2)
            roof_handles.append((h, f"FP32 roof {peak[0]:g} TFLOP/s ({peak[1]})"))
        if roof.get("note"):
            ax.text(0.01, 0.99, roof["note"], transform=ax.transAxes, ha="left", va="top", fontsize=8,
                    wrap=True)
            y1 *= 4
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel("arithmetic intensity (FLOP/byte, compulsory traffic)")
        ax.set_ylabel("achieved TFLOP/s (FP32)")
        handles = [Line2D([], [], ls="none", marker="o", color="0.3", label="ours"),
                   Line2D([], [], ls="none", marker="^", markerfacecolor="none", color="0.3",
                          label="best reference")]
        handles += [Line2D([], [], ls="none", marker="o", color=KIND_COLOUR[k], label=KIND_LABELS[k]) for k in kinds]
        for h, label in roof_handles:
            h.set_label(label)
        fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
        if roof_handles:
            ax.legend(handles=[h for h, _ in roof_handles], loc="lower right", framealpha=0.9)
        fig.suptitle(f"Roofline, {device_label(device)} ({where})")

    roofs_text = []
    if peak:
        roofs_text.append(f"FP32 compute roof {peak[0]:g} TFLOP/s ({peak[1]})")
    if bw:
        roofs_text.append(f"memory roof {bw[0]:g} GB/s ({bw[1]})")
    caption = (f"Roofline on the {device_label(device)} ({where}): achieved FP32 TFLOP/s (the spec's FLOP count "
               "over the median time) against arithmetic intensity (that FLOP count over the bytes a pass must "
               "read and write, each tensor once; see docs/model-contract.md). Filled circles: ours; open "
               f"triangles: {baseline_text(p, device)}; colour: kind of workload. "
               + ("; ".join(roofs_text) + ". " if roofs_text else "")
               + (roof["note"][:1].upper() + roof["note"][1:] + ". " if roof.get("note") else "")
               + "Points above the compute roof are possible where the reference runs fewer real FLOPs than "
                 "counted (cuDNN's Winograd and FFT algorithms).")
    return Plot(f"roofline_{tag or device}", caption, (FULL, 4.2), draw)


# ============================================================================ parity
def parity_error(df, device: str) -> Plot | None:
    d = df[(df["device"] == device) & df["parity_rel_err"].notna() & df["status"].isin(["ok", "parity_fail"])]
    if d.empty:
        return None
    model_phases = [ph for ph in ("inference", "forward_backward", "train_step")
                    if ph in set(d[d["kind"] == "model"]["phase"])]
    has_layers = bool((d["kind"] != "model").any())
    panels = model_phases + (["layers"] if has_layers else [])
    rows, cols = _grid(len(panels), 2)
    zeros = int((d["parity_rel_err"] <= 0).sum())
    multi = _multi(d)
    keys = sorted(d.groupby(["source", "impl", "variant"]).groups)
    sources = sorted(d["source"].unique())

    def draw(fig):
        axes = fig.subplots(rows, cols, squeeze=False)
        handles: dict = {}
        for ax, panel in zip(axes.flat, panels):
            g = d[(d["kind"] == "model") & (d["phase"] == panel)] if panel != "layers" else d[d["kind"] != "model"]
            for i, (src, impl, var) in enumerate(keys):
                s = g[(g["source"] == src) & (g["impl"] == impl) & (g["variant"] == var) & (g["parity_rel_err"] > 0)]
                if s.empty:
                    continue
                colour, ls, marker = style(impl, var, i)
                label = _series_label(impl, var, device, src, multi)
                if panel == "layers":
                    h = ax.scatter(s["batch"], s["parity_rel_err"], s=12, marker=marker, color=colour, alpha=0.8)
                else:
                    s = s.groupby("batch", as_index=False)["parity_rel_err"].max()   # worst model per batch
                    if multi:
                        ls = SOURCE_DASH[sources.index(src) % len(SOURCE_DASH)]
                    h, = ax.plot(s["batch"], s["parity_rel_err"], color=colour, ls=ls, marker=marker)
                handles.setdefault(label, h)
            tol = g.groupby("batch")["parity_tol"].max().dropna()
            if not tol.empty:
                ht, = ax.plot(tol.index, tol.to_numpy(), color=BLACK, ls="none", marker="_", ms=12, mew=1.5)
                handles.setdefault("tolerance", ht)
            f = g[g["failed"] & (g["parity_rel_err"] > 0)]
            if not f.empty:
                hf, = ax.plot(f["batch"], f["parity_rel_err"], "x", color=BLACK, ms=7, mew=1.5, ls="none")
                handles.setdefault("parity failed", hf)
            ax.set_yscale("log")
            _batch_axis(ax, g["batch"], 2.4)
            ax.set_ylabel("relative error vs float64")
            ax.set_title(("models, " + phase_label(panel)) if panel != "layers" else "layers (every shape and phase)")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(f"Parity error against float64, {device_label(device)} ({machines_text(d, device)})")
        _legend_below(fig, list(handles.values()), list(handles), ncol=3)

    caption = (f"Parity on the {device_label(device)} ({machines_text(d, device)}): the relative error of each "
               "variant's outputs against the same computation in float64 (parity_rel_err; max-norm for layers and "
               "inference, normwise for gradients and updates, see docs/harness.md), against the batch size. "
               "Model panels draw the worst model at each batch; the layer panel every layer row. Bars: the "
               "tolerance the row had to meet.")
    if zeros:
        caption += f" {zeros} row(s) with an error of exactly 0 are not drawn (logarithmic axis)."
    return Plot(f"parity_{device}", caption, (FULL, 2.2 * rows + 0.6), draw)


# ============================================================================ precision ladder
LADDER = ("fp32", "tf32", "bf16")       # strict FP32, TF32 tensor-core products, BF16 mixed precision
LADDER_KINDS = ("model", "dense", "conv2d")
_LADDER_PHASE = {"train_step": 0, "forward": 0, "backward_weights": 1, "forward_backward": 1, "backward_data": 2,
                 "inference": 3}


def _fastest(g):
    """The fastest timed row of ``g`` per precision (a Series of rows), for one side of the ladder."""
    return {prec: rows.loc[rows["median_ms"].idxmin()] for prec, rows in g.groupby("precision")}


def _ladder_rows(df, device: str):
    """The timed rows of ours and PyTorch on ``device`` (JAX runs FP32 only), with ``base``: the workload
    without its precision tag."""
    d = df[(df["device"] == device) & (df["median_ms"] > 0) & df["status"].isin(["ok", "parity_fail"])
           & df["impl"].isin(["custom", "reference"]) & (df["variant"] != "jax-jit")]
    return d.assign(base=d["workload"].map(lambda w: split_precision(w)[0]))


def ladder_workloads(df, device: str, most: int = 3) -> list[tuple]:
    """The (kind, workload, batch, phase) the precision ladder draws: per kind (model, dense, conv2d), the
    row key measured by ours and PyTorch in the most precisions (at least fp32 and one other), ties to the
    train step / forward phase, then the most FLOPs (the largest batch for models)."""
    d = _ladder_rows(df, device)
    picked = []
    for kind in LADDER_KINDS:
        best, best_score = None, None
        for (base, batch, phase), g in d[d["kind"] == kind].groupby(["base", "batch", "phase"]):
            both = set(g[g["impl"] == "custom"]["precision"]) & set(g[g["impl"] == "reference"]["precision"])
            if "fp32" not in both or len(both) < 2:
                continue
            flops = float(g["flops"].max()) if "flops" in g and g["flops"].notna().any() else 0.0
            score = (len(both), -_LADDER_PHASE.get(phase, 9), flops, batch)
            if best_score is None or score > best_score:
                best, best_score = (kind, base, int(batch), phase), score
        if best is not None:
            picked.append(best)
    return picked[:most]


def precision_ladder(df, device: str) -> Plot | None:
    """Time and parity error per precision for one workload of each kind, ours against PyTorch."""
    picked = ladder_workloads(df, device)
    if not picked:
        return None
    d = _ladder_rows(df, device)
    cols = len(picked)
    sides = (("custom", "ours", VERMILLION, "-", "o"), ("reference", "PyTorch", BLUE, "--", "s"))

    def draw(fig):
        axes = fig.subplots(2, cols, squeeze=False)
        handles: dict = {}
        for j, (kind, base, batch, phase) in enumerate(picked):
            g = d[(d["kind"] == kind) & (d["base"] == base) & (d["batch"] == batch) & (d["phase"] == phase)]
            t_ax, e_ax = axes[0][j], axes[1][j]
            precs = [p for p in LADDER if p in set(g["precision"])]
            xs = {p: i for i, p in enumerate(precs)}
            for impl, name, colour, ls, marker in sides:
                fastest = _fastest(g[g["impl"] == impl])
                ps = [p for p in precs if p in fastest]
                h, = t_ax.plot([xs[p] for p in ps], [fastest[p]["median_ms"] for p in ps], color=colour, ls=ls,
                               marker=marker)
                handles.setdefault(name, h)
                err = [(xs[p], fastest[p]["parity_rel_err"]) for p in ps
                       if fastest[p]["parity_rel_err"] == fastest[p]["parity_rel_err"] and fastest[p]["parity_rel_err"] > 0]
                if err:
                    e_ax.plot([x for x, _ in err], [e for _, e in err], color=colour, ls=ls, marker=marker)
                failed = [(xs[p], fastest[p]["parity_rel_err"]) for p in ps if fastest[p]["failed"]]
                if failed:
                    hf, = e_ax.plot([x for x, _ in failed], [e for _, e in failed], "x", color=BLACK, ms=7, mew=1.5)
                    handles.setdefault("parity failed", hf)
            tol = g.groupby("precision")["parity_tol"].max()
            tol = [(xs[p], tol[p]) for p in precs if p in tol and tol[p] == tol[p] and tol[p] > 0]
            if tol:
                ht, = e_ax.plot([x for x, _ in tol], [v for _, v in tol], color=BLACK, ls="none", marker="_", ms=12,
                                mew=1.5)
                handles.setdefault("tolerance", ht)
            for ax in (t_ax, e_ax):
                ax.set_xticks(range(len(precs)), [p.upper() for p in precs])
                ax.set_xlim(-0.4, len(precs) - 0.6)
            _time_axis(t_ax, "time per call (ms)" if j == 0 else "")
            e_ax.set_yscale("log")
            e_ax.set_ylabel("relative error vs float64" if j == 0 else "")
            label = workload_label(base, with_batch=False) if kind != "model" else base
            t_ax.set_title(f"{label}\n{phase_label(phase)}, batch {batch}", fontsize=8)
        fig.suptitle(f"Precision ladder, {device_label(device)} ({machines_text(d, device)})")
        _legend_below(fig, list(handles.values()), list(handles), ncol=4)

    what = "; ".join(f"{base if kind == 'model' else workload_label(base, with_batch=False)} "
                     f"({phase_label(phase)}, batch {batch})" for kind, base, batch, phase in picked)
    caption = (f"Precision ladder on the {device_label(device)} ({machines_text(d, device)}): for one workload "
               f"of each kind ({what}), the median time per call (top, ms, logarithmic) and the relative error "
               "against float64 (bottom, logarithmic; bars: the tolerance of that precision) at strict FP32, "
               "TF32 and BF16 mixed precision, ours and PyTorch at the same precision. Each point is the faster "
               "variant of that side (for models: eager or CUDA graph). Chosen per kind: the workload measured "
               "in the most precisions, then the train step or forward phase, then the most FLOPs.")
    return Plot(f"precision_ladder_{device}", caption, (FULL, 4.4), draw)


# ============================================================================ CPU vs GPU
def cpu_vs_gpu(df) -> Plot | None:
    d = df[(df["kind"] == "model") & (df["phase"] == "train_step") & (df["median_ms"] > 0)]
    if set(d["device"]) < {"cpu", "gpu"}:
        return None
    models = sorted(set(d[d["device"] == "cpu"]["workload"]) & set(d[d["device"] == "gpu"]["workload"]))
    if not models:
        return None
    rows, cols = _grid(len(models), 3)
    keys = sorted(d.groupby(["source", "device", "impl", "variant"]).groups)
    multi = _multi(d)

    def draw(fig):
        axes = fig.subplots(rows, cols, squeeze=False)
        handles: dict = {}
        for ax, model in zip(axes.flat, models):
            g = d[d["workload"] == model]
            for i, (src, dev, impl, var) in enumerate(keys):
                s = g[(g["source"] == src) & (g["device"] == dev) & (g["impl"] == impl) & (g["variant"] == var)]
                if s.empty:
                    continue
                s = s.sort_values("batch")
                colour, ls, marker = style(impl, var, i)
                ls = "-" if dev == "gpu" else ":"
                label = f"{device_label(dev)} {variant_label(impl, var, dev)}" + (f" [{src}]" if multi else "")
                h, = ax.plot(s["batch"], s["median_ms"], color=colour, ls=ls, marker=marker,
                             markerfacecolor=colour if dev == "gpu" else "white")
                handles.setdefault(label, h)
            _time_axis(ax, "train step time (ms)")
            _batch_axis(ax, g["batch"], FULL / cols - 0.65)
            ax.set_title(model)
        for ax in list(axes.flat)[len(models):]:
            ax.axis("off")
        fig.suptitle("Train step on the CPU and the GPU: time per call vs batch")
        _legend_below(fig, list(handles.values()), list(handles), ncol=2)

    machines = "; ".join(f"{device_label(dev)}: {machines_text(d, dev)}" for dev in ("cpu", "gpu"))
    caption = ("Train step time per call in ms on the CPU (dotted lines, open markers) and the GPU (solid "
               f"lines), against the batch size, both axes logarithmic ({machines}). Each line is one variant "
               "of one machine; two machines with the same CPU name are kept apart.")
    n = len(keys)
    return Plot("cpu_vs_gpu", caption, (FULL, 1.9 * rows + 0.5 + 0.2 * -(-n // 2)), draw)
