"""The harness on the CPU: the quick suite end to end, resume, report (PDF, LaTeX), targets, clear errors.

Runs in CI in well under a minute per test on 2 cores: the quick suite is run once per test run
(module fixture) and every report/table test reads its results.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from harness import cli, results, runner
from harness.results import COLUMNS, ROW_KEY
from harness.suites import SuiteError, load_suite, parse_suite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTED = ("impl", "variant", "device", "workload", "kind", "batch", "phase", "precision", "median_ms", "iqr_ms",
              "repeats", "flops", "tflops", "parity_rel_err", "parity_ok", "status", "min_ms", "samples_per_s",
              "pct_peak", "peak_mem_bytes", "noisy")

TINY_SUITE = """
name = "tiny"
[settings]
warmup = 1
budget_s = 0.005
min_repeats = 2
max_repeats = 5
[[models]]
models = ["thesis-2-3-1"]
batches = [1, 3]
phases = ["inference", "train_step"]
[[dense]]
shapes = [[5, 3, 7]]
phases = ["forward"]
"""


def read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    rc = cli.main(["run", "--suite", "quick", "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_quick_suite_rows_columns_and_parity(quick_run):
    rows = read(quick_run / "results.csv")
    assert len(rows) == len(load_suite("quick").jobs("cpu"))
    assert set(DOCUMENTED) <= set(rows[0])
    assert {r["impl"] for r in rows} == {"custom", "reference"}
    assert {r["kind"] for r in rows} == {"model", "dense", "conv2d", "pool"}
    assert {r["phase"] for r in rows} >= {"inference", "forward_backward", "train_step", "forward", "backward_data",
                                         "backward_weights"}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["parity_rel_err"] != "" and r["parity_ok"] == "True", r   # every row is parity-checked
        assert float(r["median_ms"]) > 0 and int(r["repeats"]) >= 3
        assert float(r["iqr_ms"]) >= 0 and float(r["min_ms"]) <= float(r["median_ms"]) + 1e-12
        assert r["pct_peak"] == ""   # no FP32 peak is assumed for a CPU
        assert r["precision"] == "fp32" and r["device"] == "cpu"
        assert int(r["flops"]) > 0 and float(r["tflops"]) > 0
    keys = [tuple(r[k] for k in ROW_KEY) for r in rows]
    assert len(keys) == len(set(keys))
    env = json.loads((quick_run / "env.json").read_text())
    assert env["cpu_cores"] >= 1 and "numpy" in env and "precision_flags" in env


def test_quick_suite_keeps_samples_and_confidence_intervals(quick_run):
    rows = read(quick_run / "results.csv")
    df = results.read_samples(str(quick_run))
    assert len(df) == sum(int(r["repeats"]) for r in rows)          # every timed sample of every row
    for r in rows:
        mine = df[df["row_id"] == results.row_id(r)]["seconds"]
        med = float(r["median_ms"]) / 1e3
        # samples and median_ms are both stored to 6 significant digits (each off by up to 5e-6 relative)
        assert abs(float(mine.median()) - med) <= 1e-5 * med, r
        assert float(r["ci_low_s"]) <= med * (1 + 1e-5) and med * (1 - 1e-5) <= float(r["ci_high_s"]), r
        assert r["throttled"] == r["sm_clock_mhz"] == r["power_w"] == ""    # CPU rows: no GPU readings
    env = json.loads((quick_run / "env.json").read_text())
    assert len(env["machine_id"]) == 12 and env["cpu"]["logical_cores"] >= 1 and "threads" in env
    assert env["packages"]["numpy"] and "OPENBLAS_NUM_THREADS" in env["threads"]["env"]


def test_report_pdf_pages_images_and_latex(quick_run, tmp_path, monkeypatch):
    from harness.report import render

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    files = render([str(quick_run)], out_dir=str(tmp_path / "a"))
    pdf = open(files["pdf"], "rb").read()
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    pngs = [k for k in files if k.endswith(".png")]
    assert len(pngs) >= 5 and pages >= len(pngs) + 2   # text pages (env, tables) + one per plot
    assert b"/Subtype /Image" in pdf                     # heatmaps are embedded raster images
    for name in ("models.tex", "layers.tex"):
        tex = open(files[name], encoding="utf-8").read()
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\begin{tabular}" in tex
        assert re.search(r"[^\\]_", tex.split("\\toprule", 1)[1]) is None   # underscores escaped
    md = open(files["models.md"], encoding="utf-8").read()
    assert "| thesis-2-3-1 |" in md or "thesis-2-3-1" in md
    again = render([str(quick_run)], out_dir=str(tmp_path / "b"))   # SOURCE_DATE_EPOCH: byte-identical
    assert open(again["pdf"], "rb").read() == pdf


def test_report_marks_parity_failures(quick_run, tmp_path):
    from harness.report import render

    rows = read(quick_run / "results.csv")
    for r in rows:
        if r["impl"] == "custom" and r["workload"] == "mlp-mnist":
            r["parity_ok"], r["status"] = "False", "parity_fail"
    d = tmp_path / "failing"
    d.mkdir()
    with open(d / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    files = render([str(d)])
    assert "\u2020" in open(files["models.md"], encoding="utf-8").read()
    assert "\\textdagger{}" in open(files["models.tex"], encoding="utf-8").read()


def test_report_reads_benchmark_json(tmp_path):
    from harness.report import render

    bench = {"machine_info": {}, "benchmarks": [
        {"group": "dense_M8_N4_K16 forward", "name": f"test_dense[{impl}]", "stats":
            {"median": med, "iqr": 1e-6, "min": med * 0.9, "rounds": 10},
         "extra_info": {"impl": impl, "variant": var, "device": "cpu", "workload": "dense_M8_N4_K16", "kind": "dense",
                        "batch": 8, "phase": "forward", "flops": 1088, "parity_ok": True}}
        for impl, var, med in (("custom", "numpy", 2e-5), ("reference", "torch", 4e-5))]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    files = render([str(path)], out_dir=str(tmp_path / "rep"))
    table = open(files["layers.md"], encoding="utf-8").read()
    assert "M=8" in table or "dense_M8_N4_K16" in table
    assert "2.00" in table   # speedup 4e-5 / 2e-5


def test_resume_after_interruption_skips_finished_rows(tmp_path, monkeypatch):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    total = len(load_suite(str(suite)).jobs("cpu"))
    real = runner.run_job
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt   # Ctrl-C while the 4th row is in flight
        return real(*a, **k)

    monkeypatch.setattr(runner, "run_job", interrupted)
    args = ["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report"]
    assert cli.main(args) == 130
    first = read(out / "results.csv")
    assert len(first) == 3
    # a torn last line (killed mid-write) is dropped on resume
    with open(out / "results.csv", "a") as fh:
        fh.write("custom,numpy,cpu,thesis-2-3-1,mo")
    monkeypatch.setattr(runner, "run_job", real)
    seen = []
    monkeypatch.setattr(runner, "run_job", lambda job, *a, **k: seen.append(job) or real(job, *a, **k))
    assert cli.main(args) == 0
    rows = read(out / "results.csv")
    assert len(rows) == total and len(seen) == total - 3
    assert rows[:3] == first                                  # finished rows kept as they were
    keys = [tuple(r[k] for k in ROW_KEY) for r in rows]
    assert len(set(keys)) == total                            # no duplicates
    assert cli.main(args) == 0 and len(read(out / "results.csv")) == total   # a third run does nothing


def test_results_with_other_columns_are_not_touched(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    rc = cli.main(["run", "--suite", "quick", "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 2
    assert "other columns" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "a,b\n1,2\n"


BAD_SUITES = [
    ("name = \"x\"\n[[models]\n", "not a valid TOML"),
    ("name = \"x\"\n", "measures nothing"),
    ("[[models]]\nmodels = [\"lenet-mnst\"]\nbatches = [1]\n", "lenet-mnist"),
    ("[[models]]\nmodels = [\"mlp-mnist\"]\nbatches = [0]\n", "batches"),
    ("[[models]]\nmodels = [\"mlp-mnist\"]\nbatches = [1]\nphases = [\"train\"]\n", "train_step"),
    ("[[dense]]\nshapes = [[1, 2]]\n", "[M, N, K]"),
    ("[[conv2d]]\nshapes = [[1, 1, 3, 3, 4, 5, 5, 1, 0]]\n", "larger than the padded input"),
    ("[[pool]]\nmode = \"min\"\nshapes = [[1, 1, 4, 4, 2, 2, 2]]\n", "\"max\" or \"avg\""),
    ("[settings]\nbudgt_s = 1\n[[dense]]\nshapes = [[1, 2, 3]]\n", "budget_s"),
    ("[[dense]]\nshape = [[1, 2, 3]]\n", "shapes"),
    ("[[dense]]\nshapes = [[1, 2, 3]]\nvariants = [\"cublas\"]\n", "variant"),
    ("colour = 1\n", "unknown top-level key"),
    ("[[conv2d]]\nshapes = [[1, 1, 9, 9, 4, 3, 3, 1, 1, 0]]\n", "stride_h, stride_w, padding_h, padding_w"),
    ("[[conv2d]]\nshapes = [[1, 1, 9, 9, 4, 3, 3, 1, 1, 1, -1]]\n", "padding_w must be >= 0"),
    ("[[conv2d]]\nshapes = [[1, 1, 9, 4, 4, 3, 7, 1, 1, 1, 1]]\n", "kernel 3x7 is larger than the padded input"),
    ("[[dense]]\nshapes = [[1, 2, 3]]\nbatches = [0]\n", "'batches' must be a non-empty list of integers >= 1"),
]


@pytest.mark.parametrize("text,needle", BAD_SUITES)
def test_bad_suite_files_exit_2_with_clear_message(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=re.escape(needle)):
        load_suite(str(path))
    assert cli.main(["run", "--suite", str(path), "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error:") and needle in err and "Traceback" not in err
    assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.parametrize("args,needle", [
    (["run", "--suite", "quik", "--device", "cpu"], "did you mean 'quick'"),
    (["run", "--suite", "nope/missing.toml", "--device", "cpu"], "does not exist"),
    (["run", "--suite", "quick", "--device", "cpu", "--models", "mlp-mnsit"], "unknown model"),
    (["parity", "--device", "cpu", "--models", "vgg-99"], "unknown model"),
    (["run", "--device", "tpu"], "invalid choice"),
    (["report", "/nonexistent/folder"], "not a results folder"),
])
def test_cli_errors_exit_2_without_traceback(args, needle):
    proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_device_without_gpu_exits_2(capsys):
    from harness import env

    if env.gpu_available()[0]:
        pytest.skip("this machine has a GPU")
    assert cli.main(["run", "--device", "gpu", "--suite", "quick"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_env_prints_json(capsys):
    assert cli.main(["env", "--device", "cpu"]) == 0
    rec = json.loads(capsys.readouterr().out)
    for key in ("python", "numpy", "torch", "cpu_model", "cpu_cores", "gpu_available"):
        assert key in rec


def test_help_everywhere():
    for sub in ([], ["run"], ["report"], ["parity"], ["env"], ["targets"]):
        with pytest.raises(SystemExit) as exc:
            cli.main([*sub, "--help"])
        assert exc.value.code == 0


def test_suites_parse_and_expand():
    for name in ("quick", "cpu", "gpu", "thesis", "targets"):
        s = load_suite(name)
        assert s.jobs("cpu") or s.jobs("gpu")
    gpu = load_suite("gpu").jobs("gpu")
    assert any(j.workload == "dense_M4096_N4096_K4096" for j in gpu)
    assert {j.variant for j in gpu if j.kind == "model" and j.phase == "train_step"} == {
        "cuda", "cuda-graph", "torch-eager", "torch-graph", "jax-jit"}
    assert {j.variant for j in gpu if j.kind == "model" and j.phase == "inference"} == {
        "cuda", "cuda-graph", "torch-eager", "jax-jit"}
    # the thesis rows: every zoo model's train step at batch 1..8192, ours graphed vs PyTorch eager and graph
    import modelspec

    zoo = set(modelspec.zoo_names())
    for variant in ("cuda-graph", "torch-eager", "torch-graph", "jax-jit"):
        got = {(j.workload, j.batch) for j in gpu if j.phase == "train_step" and j.variant == variant}
        assert got == {(m, b) for m in zoo for b in (1, 16, 64, 256, 1024, 4096, 8192)}, variant
    # sized for about 8 minutes on an H100 (see the comment in gpu.toml), with a safety-net time limit
    assert 500 <= len(gpu) <= 600 and load_suite("gpu").settings["time_limit_s"] >= 600
    thesis = load_suite("thesis").jobs("gpu")
    assert thesis[-1].variant == "torch-compile"                   # opt-in variants run last
    # zoo MLP layer shapes are added at the requested batch sizes
    assert any(j.workload == "dense_M1024_N128_K784" for j in gpu)
    s = parse_suite({"dense": [{"shapes": [[2, 3, 4]], "devices": ["gpu"]}], "pool": [{"shapes": [[1, 1, 4, 4, 2, 2, 2]]}]})
    assert {j.kind for j in s.jobs("cpu")} == {"pool"}


def test_conv_shapes_with_a_stride_and_padding_per_axis_and_batches():
    from harness.labels import parse_workload, workload_label
    from harness.workloads import shape_text

    s = parse_suite({"conv2d": [{"shapes": [[5, 1, 21, 37, 4, 5, 9, 2, 1, 2, 0], [5, 2, 9, 9, 3, 3, 3, 1, 1]],
                                 "batches": [3, 7]}]})
    jobs = s.jobs("cpu")
    names = list(dict.fromkeys(j.workload for j in jobs))
    # every shape at each batch (N replaced), batch by batch; square geometry keeps its one-number name
    assert names == ["conv_N3_C1_H21_W37_K4_R5_S9_st2x1_pad2x0", "conv_N3_C2_H9_W9_K3_R3_S3_st1_pad1",
                     "conv_N7_C1_H21_W37_K4_R5_S9_st2x1_pad2x0", "conv_N7_C2_H9_W9_K3_R3_S3_st1_pad1"]
    p = parse_workload(names[0])
    assert p["stride"] == (2, 1) and p["padding"] == (2, 0) and p["N"] == 3
    assert workload_label(names[0]) == "conv 5x9/2x1 1->4, 21x37 pad 2x0, N=3"
    assert workload_label(names[1]) == "conv 3x3 2->3, 9x9, N=3"
    assert shape_text(jobs[0]).endswith("stride=2x1 pad=2x0")
    # the rows measure that geometry: (21 + 4 - 5) // 2 + 1 = 11 rows, (37 - 9) // 1 + 1 = 29 columns of output
    job = jobs[0]
    assert dict(job.params)["stride"] == (2, 1)
    from harness.roofline import layer_for

    assert layer_for({"kind": "conv2d", **job.p()}).out_shape == (4, 11, 29)


def test_networks_suite_covers_the_layer_classes_it_is_for():
    jobs = load_suite("networks").jobs("gpu")
    conv = {j.workload: j.p() for j in jobs if j.kind == "conv2d"}
    assert {j.batch for j in jobs if j.kind == "conv2d"} == {16, 64}
    assert {j.phase for j in jobs} == {"forward", "backward_data", "backward_weights"}
    assert {j.impl for j in jobs} == {"custom", "reference"} and not load_suite("networks").jobs("cpu")
    strided = [p for p in conv.values() if p["stride"] != (1, 1)]
    one_by_one = [p for p in conv.values() if p["R"] == p["S"] == 1]
    non_square = [p for p in conv.values() if p["R"] != p["S"]]
    many_small = [p for p in conv.values() if p["C"] >= 256 and p["H"] <= 14]
    assert len(strided) >= 10 and len(one_by_one) >= 20 and len(non_square) >= 6 and len(many_small) >= 10
    assert any(p["stride"] == (2, 1) for p in conv.values())             # DeepSpeech 2's per-axis stride


def test_targets_on_cpu_writes_gpu_rows_as_not_measured(tmp_path, monkeypatch):
    from harness import targets
    from harness.suites import parse_suite as ps

    small = ps({"settings": {"warmup": 1, "budget_s": 0.005, "min_repeats": 2, "max_repeats": 4},
                "models": [{"models": ["thesis-2-3-1", "digits-mlp"], "batches": [64], "phases": ["train_step"],
                            "variants": ["numpy", "torch-eager"], "devices": ["cpu"]}]}, "targets")
    monkeypatch.setattr("harness.suites.load_suite", lambda name: small)
    assert cli.main(["targets", "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 0
    lines = {r["target"]: r for r in read(tmp_path / "targets.csv")}
    assert list(read(tmp_path / "targets.csv")[0])[:4] == ["target", "measured", "goal", "met"]
    assert set(lines) == {t.name for t in targets.TARGETS}
    for name in ("dense_gemm_4096", "conv_suite_min", "train_step_vs_best_torch"):
        assert lines[name]["measured"] == "" and lines[name]["note"].startswith("not measured: no GPU")
    cpu = lines["cpu_train_step_geomean"]
    assert float(cpu["measured"]) > 0 and cpu["met"] in ("True", "False") and cpu["rows"] == "2"
    assert len(read(tmp_path / "results.csv")) == 4


def test_targets_on_gpu_measure_the_cpu_rows_first(tmp_path, monkeypatch):
    # The CPU rows run before any GPU work in the process (on the H100 host our NumPy steps ran 1.3-2x
    # slower after the GPU rows), and the GPU rows get what is left of the one time limit.
    from harness import env as envmod
    from harness import targets
    from harness.suites import parse_suite as ps

    suite = ps({"settings": {"time_limit_s": 300},
                "models": [{"models": ["thesis-2-3-1"], "batches": [64], "phases": ["train_step"],
                            "variants": ["numpy"], "devices": ["cpu"]}]}, "targets")
    monkeypatch.setattr("harness.suites.load_suite", lambda name: suite)
    calls = []

    def fake_run_suite(s, dev, results, peak_tflops=None, quiet=False, settings_override=None):
        calls.append((dev, settings_override["time_limit_s"]))

    monkeypatch.setattr("harness.runner.run_suite", fake_run_suite)
    monkeypatch.setattr(envmod, "collect", lambda device=None: {})
    monkeypatch.setattr(envmod, "device_name", lambda device: "Test GPU 80GB")
    monkeypatch.setattr(envmod, "peak_fp32_tflops", lambda name: 66.9)
    monkeypatch.setattr(envmod, "write", lambda path, rec: None)
    monkeypatch.setattr("harness.results.read_rows", lambda path: [])
    targets.run_targets(str(tmp_path), "gpu", quiet=True)
    # the targets suite on the CPU, then on the GPU, then the networks suite (GPU only) in what is left
    assert [dev for dev, _ in calls] == ["cpu", "gpu", "gpu"]
    assert calls[0][1] <= 300 and calls[2][1] <= calls[1][1] <= calls[0][1]


def test_targets_evaluate_from_rows():
    from harness.targets import evaluate

    def row(impl, variant, kind, workload, batch, phase, ms, ok=True):
        return {"impl": impl, "variant": variant, "device": "gpu", "kind": kind, "workload": workload,
                "batch": str(batch), "phase": phase, "median_ms": str(ms), "status": "ok" if ok else "parity_fail",
                "parity_ok": str(ok)}

    rows = [row("custom", "cuda", "dense", "dense_M4096_N4096_K4096", 4096, "forward", 2.0),
            row("reference", "torch", "dense", "dense_M4096_N4096_K4096", 4096, "forward", 1.96),
            row("custom", "cuda", "conv2d", "c1", 8, "forward", 1.0),
            row("reference", "torch", "conv2d", "c1", 8, "forward", 0.4),
            row("custom", "cuda", "conv2d", "c2", 8, "forward", 1.0, ok=False),
            row("reference", "torch", "conv2d", "c2", 8, "forward", 1.0),
            row("custom", "cuda-graph", "model", "m", 64, "train_step", 0.1),
            row("reference", "torch-eager", "model", "m", 64, "train_step", 0.7),
            row("reference", "torch-graph", "model", "m", 64, "train_step", 0.05)]
    t = {x["target"]: x for x in evaluate(rows, None)}
    assert t["dense_gemm_4096"]["measured"] == "0.98" and t["dense_gemm_4096"]["met"] == "True"
    assert t["conv_suite_min"]["measured"] == "0.4" and t["conv_suite_min"]["met"] == "False"
    assert "left out" in t["conv_suite_geomean"]["note"]                # the parity failure is named
    assert t["train_step_vs_best_torch"]["measured"] == "0.5" and t["train_step_vs_best_torch"]["met"] == "False"
    assert t["train_step_vs_eager_geomean"]["measured"] == "7" and t["train_step_vs_eager_geomean"]["met"] == "True"
    assert t["cpu_train_step_geomean"]["measured"] == ""


def test_networks_targets_read_the_networks_rows_only():
    from harness.targets import evaluate

    def row(impl, workload, phase, ms):
        return {"impl": impl, "variant": "cuda" if impl == "custom" else "torch", "device": "gpu", "kind": "conv2d",
                "workload": workload, "batch": "16", "phase": phase, "median_ms": str(ms), "status": "ok",
                "parity_ok": "True"}

    # cuDNN / ours: the networks layer n1 at 2.0 / 1.5 / 0.5 by phase, n2 at 1.0 in every phase; the suite
    # layer s1 (not a networks layer) at 0.25
    rows = []
    for phase, ratio in (("forward", 2.0), ("backward_data", 1.5), ("backward_weights", 0.5)):
        rows += [row("custom", "n1", phase, 1.0), row("reference", "n1", phase, ratio),
                 row("custom", "n2", phase, 1.0), row("reference", "n2", phase, 1.0),
                 row("custom", "s1", phase, 4.0), row("reference", "s1", phase, 1.0)]
    t = {x["target"]: x for x in evaluate(rows, None, networks={"n1", "n2"})}
    assert t["networks_conv_min"]["measured"] == "0.5" and t["networks_conv_min"]["rows"] == 6
    assert float(t["networks_conv_geomean"]["measured"]) == pytest.approx(1.5 ** (1 / 6), rel=1e-3)  # 4 digits written
    phase_min = t["networks_conv_phase_min_geomean"]
    assert float(phase_min["measured"]) == pytest.approx(0.5 ** 0.5, rel=1e-3) and phase_min["met"] == "False"
    assert "backward_weights 0.707" in phase_min["note"]
    assert t["conv_suite_min"]["measured"] == "0.25" and t["conv_suite_min"]["rows"] == 3   # s1 only
    # a run cut before the end of the networks rows: the figure is not the target's, and says so
    partial = [r for r in rows if not (r["workload"] == "n2" and r["phase"] == "forward")]
    t = {x["target"]: x for x in evaluate(partial, None, networks={"n1", "n2"})}
    assert t["networks_conv_min"]["met"] == "False"
    assert "1 of 6 networks rows of ours not measured yet, e.g. n2 forward" in t["networks_conv_min"]["note"]
    # a networks row of ours that failed parity is left out and named; the target is then not met
    rows[0] = dict(rows[0], status="parity_fail", parity_ok="False")
    t = {x["target"]: x for x in evaluate(rows, None, networks={"n1", "n2"})}
    assert t["networks_conv_geomean"]["met"] == "False" and "left out" in t["networks_conv_geomean"]["note"]


def test_timer_statistics_and_noise_flag():
    from harness.timer import Measurement, measure

    m = Measurement([1.0, 2.0, 3.0, 4.0, 100.0])
    assert m.median_ms == 3.0 and m.min_ms == 1.0 and m.repeats == 5
    assert m.iqr_ms == pytest.approx(2.0)
    assert not Measurement([1.0, 1.01, 0.99, 1.0]).noisy(0.1) and m.noisy(0.1)
    calls = []
    got = measure(lambda: calls.append(1), budget_s=0.0, min_repeats=4, warmup=2, min_sample_ms=0.0)
    assert got.repeats == 4 and len(calls) == 2 + 1 + 4 * got.inner_loops


def test_results_writer_row_roundtrip(tmp_path):
    path = str(tmp_path / "r.csv")
    with results.ResultsWriter(path) as w:
        r = results.Row(impl="custom", variant="numpy", device="cpu", workload="w", kind="model", batch=1,
                        phase="inference", median_ms=1.5, status="oom", reason="OutOfMemoryError")
        w.write(r)
        assert w.done(r)
    got = read(path)
    assert tuple(got[0]) == COLUMNS and got[0]["status"] == "oom" and got[0]["median_ms"] == "1.5"


def test_parity_command_table(capsys):
    assert cli.main(["parity", "--device", "cpu", "--models", "thesis-2-3-1,digits-cnn"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    kinds = {line.split("|")[1].strip() for line in lines}
    assert kinds == {"model", "dense", "conv2d", "pool"}
    assert {line.split("|")[5].strip() for line in lines} == {"custom", "reference"}
    assert all(line.rstrip().endswith("| yes |") for line in lines), out


def test_time_limit_stops_and_rerun_finishes(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    args = ["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report"]
    assert cli.main(args + ["--time-limit-s", "1e-9"]) == 0
    assert "time limit" in capsys.readouterr().err
    assert len(read(out / "results.csv")) < len(load_suite(str(suite)).jobs("cpu"))
    assert cli.main(args) == 0
    assert len(read(out / "results.csv")) == len(load_suite(str(suite)).jobs("cpu"))


def test_report_two_runs_side_by_side(quick_run, tmp_path):
    import shutil

    from harness.report import render

    other = tmp_path / "second-run"
    shutil.copytree(quick_run, other)
    files = render([str(quick_run), str(other)], out_dir=str(tmp_path / "cmp"))
    assert any(k.startswith("speedup_models_cpu_second-run") for k in files)
    assert "[second-run]" in open(files["models.md"], encoding="utf-8").read()


def test_gpu_clocks_bracket_calls_with_device_syncs(monkeypatch):
    """The CUDA-event clocks (read without a GPU, through fakes): every sample is
    sync, record start, calls, sync, record end, wait for end; so work queued on any stream is counted."""
    import types

    from harness import timer

    log = []

    class Event:
        def __init__(self, *a, **k):
            self.name = f"ev{sum(1 for x in log if x == 'new-event')}"
            log.append("new-event")

        def record(self, *a):
            log.append(f"record {self.name}")

        def synchronize(self):
            log.append(f"wait {self.name}")

        def elapsed_time(self, other):      # torch's API
            return 2.0

    cuda = types.SimpleNamespace(Event=Event, get_elapsed_time=lambda a, b: 2.0,
                                 runtime=types.SimpleNamespace(deviceSynchronize=lambda: log.append("sync")))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    fake_torch_cuda = types.SimpleNamespace(Event=Event, synchronize=lambda: log.append("sync"))
    import torch

    monkeypatch.setattr(torch, "cuda", fake_torch_cuda)
    for clock in ("cupy", "torch"):
        log.clear()
        m = timer.measure(lambda: log.append("call"), clock, warmup=1, budget_s=0.0, min_repeats=2,
                          min_sample_ms=0.0)
        assert m.samples_ms == [2.0, 2.0] and m.inner_loops == 1
        tail = log[-12:]   # the two timed samples
        assert tail == ["sync", "record ev0", "call", "sync", "record ev1", "wait ev1"] * 2, log


def test_out_of_memory_becomes_oom_row_and_sweep_goes_on(tmp_path, monkeypatch):
    """A batch that runs out of device memory is recorded with status oom; the other rows still run."""
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    real_get = runner._Cases.get

    class OutOfMemoryError(RuntimeError):   # the name CuPy and torch give their allocation failures
        pass

    def get(self, job):
        if job.kind == "model" and job.batch == 3:
            raise OutOfMemoryError("out of memory allocating 123456789 bytes")
        return real_get(self, job)

    monkeypatch.setattr(runner._Cases, "get", get)
    args = ["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report"]
    assert cli.main(args) == 0
    rows = read(out / "results.csv")
    assert len(rows) == len(load_suite(str(suite)).jobs("cpu"))
    oom = [r for r in rows if r["status"] == "oom"]
    assert oom and all(r["batch"] == "3" and r["kind"] == "model" for r in oom)
    assert "out of memory" in oom[0]["reason"]
    assert all(r["status"] == "ok" for r in rows if r not in oom)


def test_default_folder_never_resumes_another_machines_run(tmp_path, monkeypatch):
    """Committed results from another host get a fresh -2 folder; this host's (or an unfinished) run resumes."""
    import platform

    monkeypatch.chdir(tmp_path)
    base = cli.default_out("quick", "cpu")
    assert base.startswith(os.path.join("reports", "quick-"))
    os.makedirs(base)
    assert cli.default_out("quick", "cpu") == base                 # no env.json yet: an interrupted run
    with open(os.path.join(base, "env.json"), "w") as fh:
        json.dump({"hostname": platform.node()}, fh)
    assert cli.default_out("quick", "cpu") == base                 # ours: resume
    with open(os.path.join(base, "env.json"), "w") as fh:
        json.dump({"hostname": platform.node() + "-elsewhere"}, fh)
    assert cli.default_out("quick", "cpu") == base + "-2"          # another machine's: a new folder


def test_dense_rows_name_their_algorithm(tmp_path):
    suite = tmp_path / "dense.toml"
    suite.write_text('name = "dense"\n[settings]\nwarmup = 1\nbudget_s = 0.005\nmin_repeats = 2\nmax_repeats = 3\n'
                     '[[dense]]\nshapes = [[3, 5, 7]]\n')
    out = tmp_path / "out"
    assert cli.main(["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report"]) == 0
    rows = read(out / "results.csv")
    assert {r["phase"] for r in rows} == {"forward", "backward_data", "backward_weights"}
    assert {(r["impl"], r["algorithm"]) for r in rows} == {("custom", "matmul"), ("reference", "")}


def test_conv_rows_name_their_algorithm_and_an_older_run_is_resumed_with_the_column(tmp_path, capsys):
    suite = tmp_path / "conv.toml"
    suite.write_text('name = "conv"\n[settings]\nwarmup = 1\nbudget_s = 0.005\nmin_repeats = 2\nmax_repeats = 3\n'
                     '[[conv2d]]\nshapes = [[2, 3, 9, 11, 4, 3, 5, 2, 1, 1, 2]]\n'
                     'phases = ["forward", "backward_data", "backward_weights"]\n')
    out = tmp_path / "out"
    args = ["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report"]
    assert cli.main(args) == 0
    rows = read(out / "results.csv")
    assert {(r["impl"], r["algorithm"]) for r in rows} == {("custom", "im2col"), ("reference", "")}
    # the same run as a harness without the column wrote it, cut after its first two rows (a kill)
    lines = (out / "results.csv").read_bytes().split(b"\r\n")
    (out / "results.csv").write_bytes(b"\r\n".join(line.rsplit(b",", 1)[0] for line in lines[:3]) + b"\r\n")
    assert tuple(read(out / "results.csv")[0]) == COLUMNS[:-1]
    assert cli.main(args) == 0
    assert "added the algorithm column" in capsys.readouterr().err
    again = read(out / "results.csv")
    assert tuple(again[0]) == COLUMNS and len(again) == len(rows)
    assert [{k: v for k, v in r.items() if k != "algorithm"} for r in again[:2]] == \
        [{k: v for k, v in r.items() if k != "algorithm"} for r in rows[:2]]     # kept as they were
    assert [r["algorithm"] for r in again[:2]] == ["", ""]
    assert {r["algorithm"] for r in again[2:] if r["impl"] == "custom"} == {"im2col"}
