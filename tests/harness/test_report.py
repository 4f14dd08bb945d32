"""``harness report`` on small result folders: every plot as PNG + PDF, LaTeX tables with captions,
labels and S columns, no constant columns, longtables when long, A4 pages throughout, baselines named,
readable labels, the roofline's points, two machines of one name kept apart, rows that ran with a GPU
clock limit marked and counted, bad input refused.

The result folders are written by ``results.write_all`` (the harness's own CSV writer) with random,
seeded times: the numbers are not measurements, the tests check what the report does with them.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import modelspec
from harness import cli, pdfdoc, results
from harness.labels import machine_key, parse_workload, variant_label, workload_label
from harness.report import load, render, render_frame, source_labels
from harness.tables import LONG_ROWS, THROTTLE_MARK

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A4_PT = (595.44, 841.68)      # matplotlib's A4 (8.27 x 11.69 in)
GPU_ENV = {"run_device": "gpu", "device_name": "NVIDIA H100 80GB HBM3", "cpu_model": "Intel(R) Xeon(R) Processor",
           "cpu_cores": 16, "hostname": "gpuhost", "peak_fp32_tflops": 66.9, "timestamp_utc": "2026-12-01T10:00:00+00:00",
           "gpu": {"name": "NVIDIA H100 80GB HBM3", "sms": 132, "memory_bytes": 85017493504,
                   "compute_capability": "9.0", "peak_fp32_tflops": 66.9},
           "python": "3.12.3", "numpy": "2.5.2", "torch": "2.11.0", "torch_threads": 16,
           "precision_flags": {"torch.backends.cuda.matmul.allow_tf32": False, "torch.backends.cudnn.allow_tf32": False}}
LAYERS = ("dense_M33_N10_K64", "conv_N7_C3_H9_W9_K5_R3_S3_st1_pad1", "maxpool_N7_C3_H9_W9_R3_S3_st3")
REASONS = ("sw_power_cap", "hw_thermal", "sw_power_cap;sw_thermal")    # NVML clock-limit reasons (harness/nvml.py)


def _row(rng, impl, variant, device, workload, kind, batch, phase, flops, spec_hash="", scale=1.0, **kw):
    med = float(scale * rng.uniform(0.05, 2.0) * (1 + batch / 64))      # ms, random but positive
    r = results.Row(impl=impl, variant=variant, device=device, workload=workload, kind=kind, batch=batch,
                    phase=phase, median_ms=med, iqr_ms=0.03 * med, min_ms=0.9 * med, repeats=11, inner_loops=3,
                    samples_per_s=batch / med * 1e3, flops=flops, tflops=flops / (med * 1e-3) / 1e12,
                    noisy=False, parity_against="float64", parity_rel_err=float(rng.uniform(1e-7, 1e-5)),
                    parity_tol=1e-3, parity_ok=True, device_name=GPU_ENV["device_name"] if device == "gpu"
                    else "Intel(R) Xeon(R) Processor", status="ok", spec_hash=spec_hash)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def write_folder(path, device="gpu", models=("thesis-2-3-1", "mlp-mnist"), batches=(1, 7, 33),
                 phases=("inference", "train_step"), extra_reference=None, env=None, fail=None, seed=0,
                 throttle=None):
    """A results folder as ``harness run`` leaves it (results.csv + env.json), random seeded times.

    ``throttle``: on the GPU, the chance that a row ran with a clock limit active (NVML's ``throttled``,
    with random ``throttle_reasons``); None leaves both columns empty, as a run without NVML does.
    """
    from harness import roofline

    rng = np.random.default_rng(seed)
    rows = []
    for name in models:
        spec = modelspec.load(name)
        for b in batches:
            for ph in phases:
                flops = spec.flops(b, "forward" if ph == "inference" else ph)
                if device == "gpu":
                    variants = [("custom", "cuda-graph"), ("custom", "cuda"), ("reference", "torch-eager")]
                    variants += [("reference", "torch-graph")] if ph == "train_step" else []
                else:
                    variants = [("custom", "numpy"), ("reference", "torch-eager")]
                if extra_reference:
                    variants.append(("reference", extra_reference))
                for impl, var in variants:
                    r = _row(rng, impl, var, device, name, "model", b, ph, flops, spec.digest())
                    if fail and (name, b, ph, impl) == fail:
                        r.parity_ok, r.status = False, "parity_fail"
                    rows.append(r)
    for wl in LAYERS:
        p = parse_workload(wl)
        layer = roofline.layer_for(p)
        n = p["M"] if p["kind"] == "dense" else p["N"]
        kind = p["kind"]
        for ph in ("forward", "backward_data", "backward_weights"):
            if kind == "pool" and ph == "backward_weights":
                continue
            for impl, var in (("custom", "cuda" if device == "gpu" else "numpy"), ("reference", "torch")):
                rows.append(_row(rng, impl, var, device, wl, kind, n, ph, getattr(layer.flops(n), ph),
                                 shape=wl))
    if throttle is not None and device == "gpu":
        trng = np.random.default_rng([seed, 7])        # its own stream: the times stay those without it
        for r in rows:
            r.throttled = bool(trng.random() < throttle)
            r.throttle_reasons = str(trng.choice(REASONS)) if r.throttled else ""
    os.makedirs(path, exist_ok=True)
    results.write_all(os.path.join(path, "results.csv"), rows)
    e = dict(env if env is not None else GPU_ENV)
    e["run_device"] = device
    with open(os.path.join(path, "env.json"), "w") as fh:
        json.dump(e, fh)
    return path


def tex_tables(text: str) -> list[dict]:
    """Each table of a .tex file: environment, caption, label, header and body rows (cells split on &)."""
    out = []
    for m in re.finditer(r"\\begin\{(table|longtable)\}(.*?)\\end\{\1\}", text, re.S):
        env, body = m.group(1), m.group(2)
        if env == "longtable":
            rows_text = body.split("\\endlastfoot", 1)[1]
        else:
            rows_text = body.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
        rows = [[c.strip() for c in line.rstrip(" \\").split(" & ")] for line in rows_text.strip().splitlines()
                if line.strip().endswith("\\\\")]
        out.append({"env": env, "body": body, "rows": rows,
                    "caption": re.search(r"\\caption\{(.*?)\}\s*(\\label|\n)", body, re.S),
                    "label": re.search(r"\\label\{tab:[^}]+\}", body)})
    return out


def md_tables(text: str) -> dict:
    """Each table of a .md file by name: its caption, header cells and body rows (cells as strings)."""
    out = {}
    for m in re.finditer(r"\*\*Table (\S+)\.\*\* (.*?)\n\n((?:\|.*\|\n)+)", text):
        lines = [[c.strip() for c in line.strip()[1:-1].split(" | ")] for line in m.group(3).splitlines()]
        out[m.group(1)] = {"caption": m.group(2), "header": lines[0], "rows": lines[2:]}
    return out


def media_boxes(pdf: bytes) -> list[tuple[float, ...]]:
    return [tuple(float(x) for x in m.split()) for m in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", pdf)]


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory):
    """A GPU folder (with a sibling targets folder of the same machine; a few rows ran throttled, so the
    LaTeX compiled carries the throttle mark) and its rendered report."""
    base = tmp_path_factory.mktemp("gpu")
    folder = write_folder(str(base / "gpu-h100"), batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                          models=("thesis-2-3-1", "mlp-mnist", "digits-cnn"), extra_reference="jax-jit",
                          fail=("mlp-mnist", 8, "train_step", "custom"), throttle=0.05)
    tdir = base / "targets-h100"
    tdir.mkdir()
    (tdir / "targets.csv").write_text("target,measured,goal,met,rows,note,ci_low,ci_high\n"
                                      "dense_gemm_4096,0.9335,0.9,True,2,dense forward,0.92,0.95\n"
                                      "train_step_vs_best_torch,0.9999,1,False,35,worst over models,0.98,1.02\n")
    (tdir / "env.json").write_text(json.dumps(dict(GPU_ENV)))
    files = render([folder], out_dir=str(base / "out"))
    return {"folder": folder, "out": str(base / "out"), "files": files}


# ============================================================================ files
def test_every_plot_as_png_and_vector_pdf(gpu_report):
    out, files = gpu_report["out"], gpu_report["files"]
    expected = {"time_vs_batch_gpu_train_step", "time_vs_batch_gpu_inference", "speedup_models_gpu",
                "speedup_models_gpu_vs_eager", "speedup_layers_gpu", "roofline_gpu", "parity_gpu"}
    plots = {k[:-4] for k in files if k.endswith(".png")}
    assert plots == expected
    for name in plots:
        png = open(os.path.join(out, name + ".png"), "rb").read()
        pdf = open(os.path.join(out, name + ".pdf"), "rb").read()
        assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF"), name
        if not name.startswith("speedup"):            # line and scatter plots: vectors, no raster image
            assert b"/Subtype /Image" not in pdf, name
    assert not [k for k in files if k.startswith("tflops")]      # the FLOPs-per-call scatter is gone


def test_report_pdf_is_a4_throughout_with_a_page_per_plot(gpu_report):
    pdf = open(gpu_report["files"]["pdf"], "rb").read()
    boxes = media_boxes(pdf)
    n_plots = len([k for k in gpu_report["files"] if k.endswith(".png")])
    assert len(boxes) >= n_plots + 2                  # summary + environment/tables + one page per plot
    assert {tuple(round(v) for v in b) for b in boxes} == {(0, 0, round(A4_PT[0]), round(A4_PT[1]))}
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", gpu_report["files"]["pdf"], "-"],
                              capture_output=True, text=True).stdout
        assert "Performance targets" in text and "dense_gemm_4096" in text   # the targets are page 1
        assert '"cpu_cores"' not in text                                     # no JSON dump


# ============================================================================ LaTeX
def test_tex_tables_booktabs_caption_label_s_columns_no_constant_columns(gpu_report):
    files = gpu_report["files"]
    seen_long = False
    for key in ("targets.tex", "headline.tex", "environment.tex", "models.tex", "layers.tex", "not_ok.tex"):
        text = open(files[key], encoding="utf-8").read()
        tabs = tex_tables(text)
        assert tabs, key
        for t in tabs:
            assert t["caption"] and t["label"], (key, t["body"][:200])
            assert "\\toprule" in t["body"] and "\\midrule" in t["body"] and "\\bottomrule" in t["body"]
            assert re.search(r"[^\\]_", t["body"].split("\\toprule", 1)[1]) is None, key   # underscores escaped
            rows = t["rows"]
            assert rows
            if len(rows) > LONG_ROWS:
                assert t["env"] == "longtable", key
                seen_long = True
            else:
                assert t["env"] == "table", key
            if key != "environment.tex" and len(rows) > 1:
                for j in range(len(rows[0])):
                    assert len({r[j] for r in rows}) > 1, (key, j, rows[0])     # no constant column
        if key in ("models.tex", "layers.tex", "headline.tex"):
            assert "S[table-format=" in text, key                             # numbers in siunitx S columns
    assert seen_long       # models x 13 batches: more than LONG_ROWS rows


def test_constant_columns_are_named_in_the_caption(gpu_report):
    models = open(gpu_report["files"]["models.tex"], encoding="utf-8").read()
    # every train-step row has ours = CUDA graph: the column is gone and the caption says so
    assert "In every row: ours: CUDA graph" in models
    assert "& cpu &" not in models and "& gpu &" not in models


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="no TeX installation (pdflatex not on PATH); the LaTeX output is checked only by structure")
def test_report_latex_compiles_with_pdflatex_without_overfull_tables(gpu_report, tmp_path):
    work = tmp_path / "tex"
    shutil.copytree(gpu_report["out"], work)
    before = (work / "report.pdf").read_bytes()
    for _ in range(2):     # twice: longtable settles its column widths on the second pass
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report_latex.tex"],
                              cwd=work, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:]
    log = (work / "report_latex.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert (work / "report_latex.pdf").read_bytes().startswith(b"%PDF")
    assert (work / "report.pdf").read_bytes() == before       # the harness's report.pdf is not overwritten


# ============================================================================ baselines
def test_headline_speedup_is_against_the_fastest_reference_variant(gpu_report):
    df, _ = load([gpu_report["folder"]])
    row = df[(df["workload"] == "thesis-2-3-1") & (df["batch"] == 32) & (df["phase"] == "train_step")]
    ours = row[row["variant"] == "cuda-graph"]["median_ms"].iloc[0]
    refs = row[row["impl"] == "reference"].set_index("variant")["median_ms"]
    best = refs.min()                                    # over eager, CUDA graph and jax-jit
    from harness.speedups import pair

    p = pair(df)
    got = p[(p["workload"] == "thesis-2-3-1") & (p["batch"] == 32) & (p["phase"] == "train_step")].iloc[0]
    assert got["speedup_best"] == pytest.approx(best / ours, rel=1e-12)
    assert got["best_variant"] == refs.idxmin()
    assert got["speedup_eager"] == pytest.approx(refs["torch-eager"] / ours, rel=1e-12)
    assert got["speedup_eager"] >= got["speedup_best"]   # the best reference is never slower than eager
    tex = open(os.path.join(gpu_report["out"], "report_latex.tex"), encoding="utf-8").read()
    captions = re.findall(r"\\caption\{(Speedup.*?)\}\n\\label", tex, re.S)
    assert captions and all("fastest reference variant" in c or "PyTorch eager" in c for c in captions)
    assert any("JAX jit" in c for c in captions)         # the JAX reference variant is named in words
    head = open(gpu_report["files"]["headline.md"], encoding="utf-8").read()
    assert "fastest reference variant" in head and "vs eager" in head


# ============================================================================ labels
def test_labels_are_readable():
    assert workload_label("conv_N16_C128_H16_W16_K128_R3_S3_st1_pad1") == "conv 3x3 128->128, 16x16, N=16"
    assert workload_label("conv_N8_C3_H224_W224_K64_R7_S7_st2_pad3") == "conv 7x7/2 3->64, 224x224, N=8"
    assert workload_label("conv_N64_C256_H56_W56_K64_R1_S1_st1_pad0") == "conv 1x1 256->64, 56x56, N=64"
    assert workload_label("dense_M64_N128_K784") == "dense 784->128, M=64"
    assert workload_label("maxpool_N8_C64_H112_W112_R3_S3_st2") == "maxpool 3x3/2, 64ch 112x112, N=8"
    assert workload_label("mlp-mnist") == "mlp-mnist"
    assert variant_label("custom", "numpy") == "ours (NumPy)"
    assert variant_label("reference", "torch-graph") == "PyTorch CUDA graph"
    assert variant_label("reference", "jax-jit") == "JAX jit"
    assert variant_label("reference", "tf-xla") == "tf-xla"   # an unknown variant keeps its name


def test_tables_and_plots_show_labels_not_ids(gpu_report):
    layers = open(gpu_report["files"]["layers.md"], encoding="utf-8").read()
    assert "conv 3x3 3->5, 9x9, N=7" in layers and "conv_N7" not in layers
    tex = open(os.path.join(gpu_report["out"], "report_latex.tex"), encoding="utf-8").read()
    assert "custom/" not in tex and "reference/" not in tex


# ============================================================================ plots
def _draw(plot):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness import plots

    with plots.rc():
        fig = Figure(figsize=plot.size, layout="constrained")
        FigureCanvasAgg(fig)
        plot.draw(fig)
        fig.canvas.draw()
    return fig


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_roofline_has_a_point_per_row_and_both_gpu_roofs(gpu_report):
    from harness import plots, roofline, speedups

    df, envs = load([gpu_report["folder"]])
    df = roofline.add_intensity(df)
    assert df["intensity"].notna().all()                 # every zoo model and layer row gets a point
    dense = df[df["workload"] == "dense_M33_N10_K64"].iloc[0]
    m, n, k = 33, 10, 64
    fwd_bytes = 4 * (m * k + n * k + n + m * n)            # x, W, b read; y written; float32
    assert dense["phase"] == "forward" and dense["bytes_moved"] == fwd_bytes
    assert dense["intensity"] == pytest.approx((2 * m * n * k + m * n) / fwd_bytes)
    roof = roofline.roofs(envs["gpu-h100"], "gpu")
    assert roof["tflops"][0] == 66.9 and roof["gbs"][0] == 3350.0 and "datasheet" in roof["gbs"][1]
    pairs = speedups.pair(df)
    fig = _draw(plots.roofline(pairs, "gpu", roof))
    ax = fig.axes[0]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == 2 * len(pairs)                      # ours and the best reference per pair
    assert {ln.get_label() for ln in ax.get_lines()} >= {"memory roof 3.35 TB/s (datasheet, NVIDIA H100 80GB HBM3)",
                                                       "FP32 roof 66.9 TFLOP/s (env.json peak_fp32_tflops)"}
    cpu_roof = roofline.roofs({"run_device": "cpu", "cpu_model": "x"}, "cpu")
    assert cpu_roof["tflops"] is None and cpu_roof["gbs"] is None and "not known" in cpu_roof["note"]


def test_time_vs_batch_ticks_at_measured_batches_units_and_failure_legend(gpu_report):
    from harness import plots

    df, _ = load([gpu_report["folder"]])
    fig = _draw(plots.time_vs_batch(df, "gpu", "train_step"))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "time per call (ms)" and ax.get_xlabel() == "batch size"
    measured = sorted(df[df["kind"] == "model"]["batch"].unique())
    assert list(ax.get_xticks()) == measured and not list(ax.xaxis.get_minorticklocs())
    assert "parity failed" in _legend_texts(fig)        # mlp-mnist b=8 train step failed in the fixture
    fig = _draw(plots.time_vs_batch(df, "gpu", "inference"))
    assert "parity failed" not in _legend_texts(fig)    # nothing failed there: no such legend entry
    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")):
        if text.get_text():
            assert text.get_fontsize() >= 8, text.get_text()


def test_heatmap_cells_colour_bar_and_unmeasured_cells(gpu_report):
    from matplotlib.patches import Rectangle

    from harness import plots, speedups

    df, _ = load([gpu_report["folder"]])
    df = df[~((df["workload"] == "mlp-mnist") & (df["batch"] == 32))]        # one cell left unmeasured
    pairs = speedups.pair(df)
    fig = _draw(plots.speedup_models(pairs, "gpu"))
    ax = fig.axes[0]
    cbar = fig.axes[-1]
    assert "speedup" in cbar.get_ylabel() and "blue: ours faster" in cbar.get_ylabel()
    image = ax.get_images()[0]
    assert ax.get_title() == "inference"
    g = pairs[(pairs["phase"] == "inference")]
    first = g[(g["workload"] == "digits-cnn") & (g["batch"] == 1)]["speedup_best"].iloc[0]
    assert image.get_array()[0, 0] == first                          # the colour is of the ratio itself ...
    cell_texts = [t.get_text() for t in ax.texts]
    assert cell_texts[0] == plots._fmt_ratio(first)                  # ... which the cell prints
    assert image.get_array().mask[1, 5]                              # mlp-mnist at batch 32: no colour
    assert image.norm.vmin == pytest.approx(1 / image.norm.vmax)     # 1.0 sits in the middle (white)
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert hatched and hatched[0].get_facecolor()[:3] != (1.0, 1.0, 1.0)     # grey hatch, not white
    assert "not measured" in _legend_texts(fig)


def test_two_machines_with_one_cpu_name_stay_apart(tmp_path):
    from harness import plots

    env_a = dict(GPU_ENV, hostname="alpha", cpu_cores=16)
    env_b = dict(GPU_ENV, hostname="beta", cpu_cores=4)
    a = write_folder(str(tmp_path / "x" / "cpu-intel"), device="cpu", env=env_a, seed=1)
    b = write_folder(str(tmp_path / "y" / "cpu-intel"), device="cpu", env=env_b, seed=2, phases=("train_step",))
    assert source_labels([a, b]) == ["x/cpu-intel", "y/cpu-intel"]
    assert machine_key(env_a, "cpu") != machine_key(env_b, "cpu")
    assert machine_key({"machine_id": "m1", "cpu_model": "X"}, "cpu") != machine_key({"machine_id": "m2",
                                                                                      "cpu_model": "X"}, "cpu")
    df, _ = load([a, b])
    assert df.groupby("source")["machine"].nunique().eq(1).all() and df["machine"].nunique() == 2
    fig = _draw(plots.time_vs_batch(df, "cpu", "train_step"))
    labels = _legend_texts(fig)
    assert "ours (NumPy) [x/cpu-intel]" in labels and "ours (NumPy) [y/cpu-intel]" in labels
    ax = fig.axes[0]
    for line in ax.get_lines():                           # each line: one machine, batches rising
        xs = list(line.get_xdata())
        assert xs == sorted(xs) and len(xs) == len(set(xs))


def test_confidence_intervals_become_error_bars_and_columns(tmp_path):
    from harness import plots

    folder = write_folder(str(tmp_path / "gpu"), models=("thesis-2-3-1",), batches=(1, 7))
    df, envs = load([folder])
    assert df["ci_low_ms"].isna().all()
    plain = _draw(plots.time_vs_batch(df, "gpu", "train_step"))
    df["ci_low_ms"], df["ci_high_ms"] = 0.9 * df["median_ms"], 1.2 * df["median_ms"]
    with_ci = _draw(plots.time_vs_batch(df, "gpu", "train_step"))

    def bars(fig):
        return sum(len(c.get_segments()) for c in fig.axes[0].collections if hasattr(c, "get_segments"))

    assert bars(plain) == 0 and bars(with_ci) == len(df[(df["phase"] == "train_step") & (df["kind"] == "model")])
    files = render_frame(df, envs, str(tmp_path / "out"))
    models = open(files["models.tex"], encoding="utf-8").read()
    assert "CI low" in models and "CI high" in models and "bootstrap 95\\%" in models
    files = render_frame(load([folder])[0], envs, str(tmp_path / "plain"))
    assert "CI low" not in open(files["models.tex"], encoding="utf-8").read()


def test_targets_from_a_sibling_folder_only_for_the_same_machine(tmp_path):
    folder = write_folder(str(tmp_path / "gpu-h100"), models=("thesis-2-3-1",), batches=(1, 7))
    other = tmp_path / "targets-other"
    other.mkdir()
    (other / "targets.csv").write_text("target,measured,goal,met,rows,note\nx,1.5,1,True,3,n\n")
    (other / "env.json").write_text(json.dumps(dict(GPU_ENV, hostname="elsewhere", cpu_cores=8)))
    files = render([folder], out_dir=str(tmp_path / "out"))
    assert "targets.tex" not in files                     # another machine's targets are not borrowed
    assert "headline.tex" in files


def test_targets_from_the_newest_sibling_of_the_same_machine(tmp_path):
    folder = write_folder(str(tmp_path / "gpu-h100"), models=("thesis-2-3-1",), batches=(1, 7))
    # "targets-A-old" sorts before "targets-b-new": the timestamps, not the names, decide
    for name, stamp, value in (("targets-A-old", "2026-11-01T10:00:00+00:00", "0.5"),
                               ("targets-b-new", "2026-12-07T10:00:00+00:00", "0.75")):
        sib = tmp_path / name
        sib.mkdir()
        (sib / "targets.csv").write_text(f"target,measured,goal,met,rows,note\ngemm_tf32_4096,{value},0.75,False,2,n\n")
        (sib / "env.json").write_text(json.dumps(dict(GPU_ENV, timestamp_utc=stamp)))
    files = render([folder], out_dir=str(tmp_path / "out"))
    text = open(files["targets.md"], encoding="utf-8").read()
    assert "0.750" in text and "0.500" not in text and "targets-b-new" in text


# ============================================================================ GPU clock limits
def _pdf_paragraphs(monkeypatch) -> list[str]:
    """Every paragraph report.pdf is given from now on (the summary page's text among them)."""
    seen = []
    original = pdfdoc.Doc.paragraph

    def paragraph(self, text, *args, **kw):
        seen.append(text)
        return original(self, text, *args, **kw)

    monkeypatch.setattr(pdfdoc.Doc, "paragraph", paragraph)
    return seen


def _throttled(row) -> bool:
    return row is not None and row["throttled"] is True


def test_throttled_rows_are_marked_counted_and_summarised(tmp_path, monkeypatch):
    gpu = write_folder(str(tmp_path / "gpu"), models=("thesis-2-3-1", "mlp-mnist"), batches=(1, 7, 33),
                       fail=("mlp-mnist", 7, "train_step", "custom"), throttle=0.3, seed=3)
    cpu = write_folder(str(tmp_path / "cpu"), device="cpu", models=("thesis-2-3-1",), batches=(1, 7), seed=4)
    csv_path = os.path.join(gpu, "results.csv")
    rows = results.read_results(csv_path).rows
    for r in rows:                                     # the parity failure ran throttled too: not_ok marks it
        if r["status"] == "parity_fail":
            r["throttled"], r["throttle_reasons"] = "True", "hw_thermal"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=results.COLUMNS)
        w.writeheader()
        w.writerows(rows)
    paragraphs = _pdf_paragraphs(monkeypatch)
    files = render([gpu, cpu], out_dir=str(tmp_path / "out"))
    df, _ = load([gpu, cpu])
    timed = df[df["status"].isin(("ok", "parity_fail"))]
    hit = df[(df["device"] == "gpu") & (df["throttled"] == True)]      # noqa: E712 (object column)
    assert 0 < len(hit) < (df["device"] == "gpu").sum()                 # some rows, not all

    # per-row tables: a pair is marked when ours, the best reference or eager ran throttled
    def side(g, impl, variant):
        s = g[(g["impl"] == impl) & (g["variant"] == variant)]
        return s.iloc[0] if len(s) else None

    expected = {}
    for (wl, batch, ph), g in timed[timed["device"] == "gpu"].groupby(["workload", "batch", "phase"]):
        refs = g[g["impl"] == "reference"]
        ours = side(g, "custom", "cuda-graph" if ph in ("train_step", "inference") else "cuda")
        best = refs.loc[refs["median_ms"].idxmin()]
        eager = side(g, "reference", "torch-eager" if g["kind"].iloc[0] == "model" else "torch")
        expected[(wl, int(batch), ph)] = any(_throttled(r) for r in (ours, best, eager))
    assert any(expected.values()) and not all(expected.values())
    layers = md_tables(open(files["layers.md"], encoding="utf-8").read())
    models = md_tables(open(files["models.md"], encoding="utf-8").read())
    marked = 0
    for name, t in {**layers, **models}.items():
        if "-cpu-" in name:
            assert THROTTLE_MARK not in t["caption"] and not any(THROTTLE_MARK in c for r in t["rows"] for c in r)
            continue
        note = t["header"].index("note") if "note" in t["header"] else None
        mine = [THROTTLE_MARK in r[note] for r in t["rows"]] if note is not None else [False] * len(t["rows"])
        marked += sum(mine)
        assert any(mine) == ("\u2021: a GPU clock limit was active" in t["caption"]), name   # explained when used
    assert marked == sum(expected.values())
    dense = layers["layers-gpu-gpu-dense"]
    for r in dense["rows"]:
        short = r[dense["header"].index("phase")]
        phase = {"fwd": "forward", "bwd data": "backward_data", "bwd weights": "backward_weights"}[short]
        want = expected[("dense_M33_N10_K64", 33, phase)]
        assert (THROTTLE_MARK in r[dense["header"].index("note")]) == want, r

    # the caption names the reasons of the rows behind the marks, and no other
    for name, t in layers.items():
        if THROTTLE_MARK in t["caption"]:
            words = re.search(r"NVML reasons: ([^)]*)\)", t["caption"]).group(1).replace(",", " ").split()
            kind = name.rsplit("-", 1)[1]
            seen = {x for v in hit[hit["kind"] == kind]["throttle_reasons"] for x in v.split(";")}
            assert {w for w in words if not w.isdigit()} <= seen, name

    # not_ok: the failing row carries the mark and its caption explains it
    not_ok = md_tables(open(files["not_ok.md"], encoding="utf-8").read())["not-ok"]
    assert THROTTLE_MARK in not_ok["caption"] and "hw_thermal" in not_ok["caption"]
    if "note" in not_ok["header"]:
        assert [r[not_ok["header"].index("note")] == THROTTLE_MARK for r in not_ok["rows"]] == [
            "parity_fail" in r or "status: parity_fail" in not_ok["caption"] for r in not_ok["rows"]]
    else:                                              # the same in every row: named in the caption
        assert "In every row:" in not_ok["caption"] and f"note {THROTTLE_MARK}" in not_ok["caption"]

    # headline: a count of throttled pairs per line, empty for the CPU lines (not recorded)
    head = md_tables(open(files["headline.md"], encoding="utf-8").read())["headline"]
    assert THROTTLE_MARK in head["header"] and "empty where not recorded" in head["caption"]
    col, src_col = head["header"].index(THROTTLE_MARK), head["header"].index("results")
    counted = 0
    for r in head["rows"]:
        if r[src_col] == "cpu":
            assert r[col] == "-"
        else:
            counted += int(r[col])
    assert counted == sum(expected.values())

    # the summary page and the environment table: N of M GPU rows, with the reasons
    n, m = len(hit), int((df["device"] == "gpu").sum())
    line = f"{n} of {m} GPU rows ran with a clock limit active (reasons: "
    assert any(line in p for p in paragraphs[:2]), paragraphs[:2]
    env = open(files["environment.md"], encoding="utf-8").read()
    assert line in env and env.count("GPU clock limits") == 1
    for reason in {x for v in hit["throttle_reasons"] for x in v.split(";")}:
        assert reason in env
    tex = {k: open(files[k], encoding="utf-8").read() for k in ("layers.tex", "headline.tex", "environment.tex")}
    assert all("\\textdaggerdbl{}" in v and THROTTLE_MARK not in v for v in tex.values())


def test_rows_without_throttling_get_no_mark(tmp_path, monkeypatch):
    calm = write_folder(str(tmp_path / "calm"), models=("thesis-2-3-1",), batches=(1, 7), throttle=0.0, seed=5)
    plain = write_folder(str(tmp_path / "plain"), models=("thesis-2-3-1",), batches=(1, 7), seed=6)
    for folder, recorded in ((calm, True), (plain, False)):
        paragraphs = _pdf_paragraphs(monkeypatch)
        files = render([folder], out_dir=str(tmp_path / f"out-{recorded}"))
        for k in files:
            if k.endswith((".md", ".tex")):
                text = open(files[k], encoding="utf-8").read()
                assert THROTTLE_MARK not in text and "textdaggerdbl" not in text, k
                assert "was active while" not in text, k
        head = md_tables(open(files["headline.md"], encoding="utf-8").read())["headline"]
        env = open(files["environment.md"], encoding="utf-8").read()
        gpu_rows = len(results.read_results(os.path.join(folder, "results.csv")).rows)
        if recorded:       # NVML read every row and none was limited: said once, no column of zeros
            assert "No GPU row behind these figures ran with a clock limit active" in head["caption"]
            assert f"None of {gpu_rows} GPU rows ran with a clock limit active." in env
            assert any(f"GPU clock limits: None of {gpu_rows} GPU rows" in p for p in paragraphs[:2])
        else:              # no readings (no nvidia-ml-py): nothing is claimed either way
            assert "clock limit" not in head["caption"] and "GPU clock limits" not in env
            assert not any("clock limit" in p for p in paragraphs)


def test_results_without_the_nvml_columns_still_render(tmp_path):
    folder = write_folder(str(tmp_path / "old"), models=("mlp-mnist",), batches=(1, 33), throttle=0.5, seed=8)
    csv_path = os.path.join(folder, "results.csv")
    rows = results.read_results(csv_path).rows
    assert any(r["throttled"] == "True" for r in rows)   # present in the rows, gone with the old header
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=results.PRE_SAMPLES_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert results.read_results(csv_path).layout == "no-samples"
    files = render([folder], out_dir=str(tmp_path / "out"))
    assert files["pdf"] and os.path.getsize(files["pdf"]) > 0
    for k in ("models.md", "layers.md", "headline.md", "environment.md", "models.tex"):
        text = open(files[k], encoding="utf-8").read()
        assert THROTTLE_MARK not in text and "clock limit" not in text, k


# ============================================================================ bad input
@pytest.mark.parametrize("damage, message", [
    (lambda d: os.remove(os.path.join(d, "results.csv")), "no results.csv"),
    (lambda d: open(os.path.join(d, "results.csv"), "w").close(), "is empty"),
    (lambda d: open(os.path.join(d, "results.csv"), "a").write("custom,numpy,gpu,x,model,1,inference,fp32,,"
                                                                "fast" + "," * 20 + "\n"), "results.csv, line"),
    (lambda d: open(os.path.join(d, "env.json"), "w").write("{oops"), "env.json, line 1: not valid JSON"),
    (lambda d: open(os.path.join(d, "targets.csv"), "w").write("target,goal\nx,1\n"), "targets.csv: the header lacks"),
    (lambda d: open(os.path.join(d, "targets.csv"), "w").write(
        "target,measured,goal,met,rows,note\nx,fast,1,True,3,n\n"), "column 'measured' must be a number"),
])
def test_bad_input_is_a_clear_error_with_exit_code_2(tmp_path, capsys, damage, message):
    folder = write_folder(str(tmp_path / "run"), models=("thesis-2-3-1",), batches=(1,))
    damage(folder)
    before = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
    assert cli.main(["report", folder, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and message in err and "Traceback" not in err
    assert {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)} == before   # untouched


def test_missing_input_folder_is_refused(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a results folder" in capsys.readouterr().err


# ============================================================================ committed results
def test_committed_cpu_report_renders(tmp_path, capsys):
    src = os.path.join(ROOT, "reports", "cpu-amd-epyc")
    if not os.path.isfile(os.path.join(src, "results.csv")):
        pytest.skip("reports/cpu-amd-epyc is not in this checkout")
    before = open(os.path.join(src, "results.csv"), "rb").read()
    assert cli.main(["report", src, "--out", str(tmp_path / "x")]) == 0
    out = tmp_path / "x"
    for name in ("report.pdf", "report_latex.tex", "models.tex", "layers.tex", "headline.tex", "environment.tex",
                 "speedup_models_cpu.png", "speedup_models_cpu.pdf", "roofline_cpu.pdf", "parity_cpu.png"):
        assert (out / name).is_file(), name
    models = (out / "models.tex").read_text(encoding="utf-8")
    assert "& numpy &" not in models and "& cpu &" not in models     # constant columns gone
    assert open(os.path.join(src, "results.csv"), "rb").read() == before


def test_bytes_moved_hand_computed():
    spec = modelspec.load("mlp-mnist")           # dense 784->128, relu, dense 128->10
    n = 7
    d1 = 4 * (n * 784 + 128 * 784 + 128 + n * 128)
    relu = 4 * (n * 128 + n * 128)
    d2 = 4 * (n * 128 + 10 * 128 + 10 + n * 10)
    assert spec.bytes_moved(n, "forward") == d1 + relu + d2
    t = spec.layer_bytes(n)
    assert t[0].backward_weights == 4 * (n * 784 + n * 128 + 128 * 784 + 128)
    assert t[1].backward_data == 4 * 3 * n * 128
    fb = d1 + relu + d2 + sum(x.backward_weights for x in t) + sum(x.backward_data for x in t[1:]) \
        + 2 * 4 * n * 10 + 8 * n
    assert spec.bytes_moved(n, "forward_backward") == fb
    assert spec.bytes_moved(n, "train_step") == fb + 5 * 4 * spec.num_params()
    conv = modelspec.Layer(0, "conv2d", (3, 9, 9), (5, 9, 9), out_channels=5, kernel_size=(3, 3), stride=(1, 1),
                           padding=(1, 1), bias=True)
    assert conv.bytes_moved(2).forward == 4 * (2 * 3 * 81 + 5 * 3 * 9 + 5 + 2 * 5 * 81)
    with pytest.raises(ValueError, match="unknown phase"):
        spec.bytes_moved(1, "backward")
    assert math.isclose(spec.flops(n) / spec.bytes_moved(n), spec.flops(n) / (d1 + relu + d2))
