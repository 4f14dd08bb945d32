"""``harness compare A B``: verdicts on synthetic runs with known changes, exit codes, outputs, bad input.

The runs are written with the real writer (``results.ResultsWriter``: results.csv + samples.csv) from
samples drawn from known distributions, so the expected verdict of every row is known: identical runs
and two independent draws of one distribution give ``same``, a 20% slowdown gives ``slower``. The
command itself runs in subprocesses (``python -m harness compare``) for the exit codes 0 / 1 / 2, and
every bad input is checked to leave the files it read unchanged.
"""
from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from harness import compare
from harness.results import PRE_SAMPLES_COLUMNS, ResultsWriter, Row

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (impl, variant, kind, workload, batch, phase, median seconds); layer rows' batch is their N / M
ROWS = [("custom", "numpy", "model", "mlp-mnist", 32, "train_step", 2.1e-3),
        ("reference", "torch-eager", "model", "mlp-mnist", 32, "train_step", 3.3e-3),
        ("custom", "numpy", "model", "mlp-mnist", 7, "inference", 1.7e-4),
        ("reference", "torch-eager", "model", "mlp-mnist", 7, "inference", 2.9e-4),
        ("custom", "numpy", "dense", "dense_M33_N10_K7", 33, "forward", 9.0e-6),
        ("reference", "torch", "dense", "dense_M33_N10_K7", 33, "forward", 1.3e-5),
        ("custom", "numpy", "conv2d", "conv_N3_C5_H9_W9_K7_R3_S3_st1_pad1", 3, "backward_weights", 4.1e-4),
        ("reference", "torch", "conv2d", "conv_N3_C5_H9_W9_K7_R3_S3_st1_pad1", 3, "backward_weights", 3.7e-4)]
NOISE = 0.02      # lognormal sigma of the synthetic samples: 2% noise, well under the 5% threshold
REPEATS = 41


def make_run(folder, seed, scale=None, rows=ROWS, repeats=REPEATS, skip=()):
    """A results folder whose rows have lognormal samples around the medians of ``rows``.

    ``scale(impl, kind) -> factor`` multiplies a row's true time (1.2: 20% slower)."""
    rng = np.random.default_rng(seed)
    with ResultsWriter(os.path.join(folder, "results.csv")) as w:
        for impl, variant, kind, workload, batch, phase, sec in rows:
            if workload in skip:
                continue
            f = scale(impl, kind) if scale else 1.0
            s = sec * f * rng.lognormal(0.0, NOISE, repeats)
            q1, med, q3 = np.percentile(s * 1e3, [25, 50, 75])
            row = Row(impl=impl, variant=variant, device="cpu", workload=workload, kind=kind, batch=batch,
                      phase=phase, median_ms=float(med), iqr_ms=float(q3 - q1), min_ms=float(s.min() * 1e3),
                      repeats=repeats, inner_loops=1, status="ok", parity_ok=True,
                      shape="" if kind == "model" else workload, spec_hash="abc123" if kind == "model" else "")
            w.write(row, [float(v) for v in np.round(s, 12)])
    return folder


def harness(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def verdicts(a, b, threshold=0.05):
    lines, groups = compare.compare_runs(compare.read_run(str(a)), compare.read_run(str(b)), threshold)
    return {(ln.row["impl"], ln.row["kind"], ln.row["phase"]): ln for ln in lines}, groups


def snapshot(folder) -> dict:
    out = {}
    for base, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(base, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


# ============================================================================ the rule
@pytest.mark.parametrize("ratio,low,high,na,nb,want", [
    (1.20, 1.17, 1.23, 0.02, 0.02, "slower"),    # beyond noise, threshold and interval
    (0.80, 0.78, 0.82, 0.02, 0.02, "faster"),
    (1.04, 1.03, 1.05, 0.01, 0.01, "same"),      # under the 5% threshold
    (1.20, 1.10, 1.30, 0.25, 0.02, "same"),      # under A's noise (25%)
    (1.20, 1.10, 1.30, 0.02, 0.25, "same"),      # ... or B's: both runs' noise must be exceeded
    (1.20, 0.95, 1.60, 0.02, 0.02, "same"),      # the interval holds 1
    (1.20, float("nan"), float("nan"), 0.02, 0.02, "slower"),   # no samples: threshold and noise decide
    (1.20, float("nan"), float("nan"), float("nan"), 0.02, "slower"),
])
def test_decide(ratio, low, high, na, nb, want):
    assert compare.decide(ratio, low, high, na, nb, 0.05) == want


# ============================================================================ verdicts on known runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    return {
        "a": make_run(d / "a", seed=1),
        "a_again": make_run(d / "a_again", seed=2),                         # same distributions, new draws
        "ours_slower": make_run(d / "ours_slower", seed=3, scale=lambda impl, kind: 1.2 if impl == "custom" else 1.0),
        "ref_slower": make_run(d / "ref_slower", seed=4,
                               scale=lambda impl, kind: 1.2 if impl == "reference" else 1.0),
        "conv_faster": make_run(d / "conv_faster", seed=5, scale=lambda impl, kind: 0.7 if kind == "conv2d" else 1.0),
        "partial": make_run(d / "partial", seed=6, skip=("dense_M33_N10_K7",),
                            rows=ROWS + [("custom", "numpy", "pool", "maxpool_N2_C3_H8_W8_R2_S2_st2", 2, "forward",
                                          5e-6)]),
        "dir": d,
    }


def test_identical_runs_are_the_same(runs):
    got, groups = verdicts(runs["a"], runs["a"])
    assert {ln.verdict for ln in got.values()} == {"same"}
    assert all(ln.ratio == 1.0 and ln.low <= 1.0 <= ln.high for ln in got.values())
    assert all(g.geomean == pytest.approx(1.0) and g.counts["same"] == g.rows for g in groups)


def test_two_draws_of_one_distribution_are_the_same(runs):
    got, groups = verdicts(runs["a"], runs["a_again"])
    assert {ln.verdict for ln in got.values()} == {"same"}, {k: (ln.verdict, ln.ratio) for k, ln in got.items()}
    # 2% noise, 41 samples each: a ratio of medians within a few % of 1
    assert all(abs(ln.ratio - 1) < 0.03 for ln in got.values())


def test_a_20_percent_slowdown_is_slower(runs):
    got, groups = verdicts(runs["a"], runs["ours_slower"])
    for (impl, kind, phase), ln in got.items():
        assert ln.verdict == ("slower" if impl == "custom" else "same"), (impl, kind, phase, ln)
        if impl == "custom":
            assert ln.low <= 1.2 <= ln.high and ln.low > 1.1       # the interval holds the true ratio
    ours = [g for g in groups if g.impl == "custom"]
    assert {g.kind for g in ours} == {"model", "dense", "conv2d"}
    assert all(g.low <= 1.2 <= g.high and g.counts["slower"] == g.rows for g in ours)


def test_faster_rows_and_rows_in_one_run_only(runs):
    got, _ = verdicts(runs["a"], runs["conv_faster"])
    assert {ln.verdict for k, ln in got.items() if k[1] == "conv2d"} == {"faster"}
    lines, _ = compare.compare_runs(compare.read_run(str(runs["a"])), compare.read_run(str(runs["partial"])), 0.05)
    by = {}
    for ln in lines:
        by.setdefault(ln.verdict, []).append(ln.row["workload"])
    assert sorted(by["only in A"]) == ["dense_M33_N10_K7"] * 2
    assert by["only in B"] == ["maxpool_N2_C3_H8_W8_R2_S2_st2"]
    assert len(lines) == len(ROWS) + 1             # nothing dropped


# ============================================================================ the command: exit codes, outputs
def test_exit_codes_and_outputs(runs, tmp_path):
    out = tmp_path / "cmp"
    same = harness("compare", runs["a"], runs["a_again"], "--fail-on-regression", "--out", out)
    assert same.returncode == 0, same.stderr
    assert "| conv2d | ours | 1 |" in same.stdout
    for name in ("compare.md", "compare.tex", "compare.csv", "compare.png", "compare.pdf"):
        assert (out / name).stat().st_size > 0
    slow = harness("compare", runs["a"], runs["ours_slower"], "--fail-on-regression", "--out", tmp_path / "c1")
    assert slow.returncode == 1, slow.stderr
    assert "row(s) of ours slower" in slow.stderr
    not_asked = harness("compare", runs["a"], runs["ours_slower"], "--out", tmp_path / "c2")
    assert not_asked.returncode == 0, not_asked.stderr
    ref_only = harness("compare", runs["a"], runs["ref_slower"], "--fail-on-regression", "--out", tmp_path / "c3")
    assert ref_only.returncode == 0, ref_only.stderr        # only our rows gate a change
    loose = harness("compare", runs["a"], runs["ours_slower"], "--fail-on-regression", "--threshold", "0.3",
                    "--out", tmp_path / "c4")
    assert loose.returncode == 0, loose.stderr              # 20% is within a 30% threshold
    rows = list(csv.DictReader(open(tmp_path / "c1" / "compare.csv", encoding="utf-8")))
    assert len(rows) == len(ROWS) and {r["verdict"] for r in rows if r["impl"] == "custom"} == {"slower"}
    md = (tmp_path / "c1" / "compare.md").read_text()
    assert "| slower |" in md and "abc123" not in md


def test_many_rows_plot_and_latex_compiles(tmp_path):
    rows = [("custom", "numpy", "dense", f"dense_M{m}_N7_K5", m, "forward", 1e-5 * m) for m in range(1, 46)]
    a = make_run(tmp_path / "a", 1, rows=rows, repeats=9)
    b = make_run(tmp_path / "b", 2, rows=rows, repeats=9, scale=lambda impl, kind: 1.1)
    out = tmp_path / "out"
    assert compare.run_compare(str(a), str(b), out=str(out)) == 0
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (out / "compare.pdf").read_bytes().startswith(b"%PDF")
    tex = (out / "compare.tex").read_text()
    assert "\\begin{longtable}" in tex and "\\toprule" in tex and "\\label{tab:compare-rows}" in tex
    assert "S[table-format" in tex and "M=45" not in tex and "dense\\_M45\\_N7\\_K5" in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed: the LaTeX table is checked as text only")
    (out / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs,longtable,siunitx,array}\n"
                                 "\\begin{document}\n\\input{compare.tex}\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in (out / "doc.log").read_text(errors="replace")   # fits the text width


def _bench_json(path, scale=1.0, data=True, seed=0):
    rng = np.random.default_rng(seed)
    benches = []
    for impl, variant, kind, workload, batch, phase, sec in ROWS:
        s = sec * scale * rng.lognormal(0.0, NOISE, 30)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        st = {"median": med, "iqr": q3 - q1, "min": s.min(), "max": s.max(), "mean": s.mean(), "rounds": 30,
              "iterations": 1}
        if data:
            st["data"] = s.tolist()
        benches.append({"group": f"cpu {workload} {phase}", "name": f"test_bench[{workload}-{variant}]",
                        "fullname": f"benchmarks/test_bench.py::test_bench[{workload}-{variant}-{phase}-{batch}]",
                        "stats": st, "extra_info": {"impl": impl, "variant": variant, "device": "cpu",
                                                    "workload": workload, "kind": kind, "batch": batch,
                                                    "phase": phase, "precision": "fp32", "flops": 1000}})
    path.write_text(json.dumps({"machine_info": {"node": "box", "cpu": {"brand_raw": "Some CPU"}},
                                "commit_info": {"id": "0123456789abcdef", "dirty": False},
                                "datetime": "2026-12-05T10:00:00", "benchmarks": benches}))
    return path


def test_pytest_benchmark_json_inputs(runs, tmp_path):
    a = _bench_json(tmp_path / "a.json", seed=1)
    b = _bench_json(tmp_path / "b.json", scale=1.2, seed=2)
    rows, samples = compare.read_benchmark_json(str(a))
    assert len(rows) == len(ROWS) and len(samples) == 30 * len(ROWS)
    assert set(samples.columns) >= {"impl", "workload", "row_id", "sample", "seconds"}
    assert all(r["ci_low_s"] != "" and float(r["median_ms"]) > 0 for r in rows)
    got, _ = verdicts(a, b)
    assert {ln.verdict for ln in got.values()} == {"slower"}
    # saved without data (--benchmark-save without --benchmark-save-data): no interval, still decided
    c = _bench_json(tmp_path / "c.json", scale=1.2, data=False, seed=3)
    got, _ = verdicts(a, c)
    assert {ln.verdict for ln in got.values()} == {"slower"}
    assert all(math_isnan(ln.low) and "no samples" in ln.note for ln in got.values())
    # a results folder against a pytest-benchmark file: matched without spec_hash
    got, _ = verdicts(runs["a"], _bench_json(tmp_path / "d.json", seed=4))
    assert len(got) == len(ROWS) and {ln.verdict for ln in got.values()} == {"same"}
    assert harness("compare", a, b, "--fail-on-regression", "--out", tmp_path / "o").returncode == 1


def math_isnan(v) -> bool:
    return v != v


def test_older_results_without_samples_are_compared(runs, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    src = list(csv.DictReader(open(runs["a"] / "results.csv", encoding="utf-8")))
    with open(old / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=PRE_SAMPLES_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(src)
    got, _ = verdicts(old, runs["ours_slower"])
    assert all("no samples" in ln.note for ln in got.values())
    assert {ln.verdict for k, ln in got.items() if k[0] == "custom"} == {"slower"}


# ============================================================================ bad input: exit 2, nothing changed
def _copy(runs, d, name="a"):
    return shutil.copytree(runs[name], d / name)


def _bad_cases(runs, d):
    cases = {}
    cases["missing"] = (["compare", d / "nope", runs["a"]], "no such file or folder")
    (d / "empty_dir").mkdir()
    cases["no_results"] = (["compare", d / "empty_dir", runs["a"]], "no results.csv")
    e = _copy(runs, d / "e")
    (e / "results.csv").write_bytes(b"")
    cases["empty_results"] = (["compare", e, runs["a"]], "holds no rows")
    h = _copy(runs, d / "h")
    text = (h / "results.csv").read_bytes().split(b"\r\n")
    (h / "results.csv").write_bytes(b"\r\n".join([text[0]]))
    cases["header_only"] = (["compare", runs["a"], h], "holds no rows")
    m = _copy(runs, d / "m")
    lines = (m / "results.csv").read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(b",ok,", b",okay,")
    (m / "results.csv").write_bytes(b"\r\n".join(lines))
    cases["damaged_results"] = (["compare", runs["a"], m], "column 'status' must be one of")
    s = _copy(runs, d / "s")
    with open(s / "samples.csv", "ab") as fh:
        fh.write(b"zz,0,0.1\n")
    cases["damaged_samples"] = (["compare", s, runs["a"]], "samples.csv, line")
    g = d / "garbage.json"
    g.write_text("{not json")
    cases["json_garbage"] = (["compare", g, runs["a"]], "not valid JSON")
    nb = d / "nobench.json"
    nb.write_text('{"machine_info": {}}')
    cases["json_no_benchmarks"] = (["compare", runs["a"], nb], "no 'benchmarks' list")
    eb = d / "emptybench.json"
    eb.write_text('{"benchmarks": []}')
    cases["json_empty"] = (["compare", runs["a"], eb], "'benchmarks' list is empty")
    other = make_run(d / "other", 9, rows=[("custom", "numpy", "pool", "avgpool_N1_C1_H4_W4_R2_S2_st2", 1, "forward",
                                            1e-6)])
    cases["no_common_rows"] = (["compare", runs["a"], other], "have no row in common")
    cases["bad_threshold"] = (["compare", runs["a"], runs["a_again"], "--threshold", "-0.1"], "--threshold")
    (d / "afile").write_text("keep me\n")
    cases["out_is_file"] = (["compare", runs["a"], runs["a_again"], "--out", d / "afile"], "is a file, not a folder")
    return cases


def test_bad_inputs_exit_2_and_change_nothing(runs, tmp_path):
    cases = _bad_cases(runs, tmp_path)
    before = snapshot(tmp_path), snapshot(runs["dir"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(cases, pool.map(lambda c: harness(*c[0], "--out", tmp_path / "never")
                                        if "--out" not in c[0] else harness(*c[0]), cases.values())))
    for cid, (args, needle) in cases.items():
        proc = done[cid]
        assert proc.returncode == 2, (cid, proc.stderr)
        assert "Traceback" not in proc.stderr, (cid, proc.stderr)
        assert proc.stderr.startswith("harness: error: ") and needle in proc.stderr, (cid, proc.stderr)
    assert (snapshot(tmp_path), snapshot(runs["dir"])) == before     # nothing written, changed or lost
    assert not os.path.exists(tmp_path / "never")
