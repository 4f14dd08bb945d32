"""The harness's ``jax-jit`` rows (the reference in JAX/XLA): suites, parity, compile time reported apart,
the JAX clock, rows without JAX, and the ``train_step_vs_best_framework`` target.

The CPU run uses a tiny suite (a few seconds of XLA compilation on 2 cores); the GPU test runs the same
rows on the GPU.
"""
from __future__ import annotations

import csv
import re
import sys

import pytest

from harness import cli, runner
from harness.suites import load_suite, parse_suite

# NOTE: through reference_impl.jax_model, which sets how JAX shares the GPU before any JAX backend starts
pytest.importorskip("reference_impl.jax_model",
                    reason="JAX is not installed: pip install -e \".[jax]\" (the test extra installs it)")

TINY = {
    "name": "tiny-jax",
    "settings": {"warmup": 1, "budget_s": 0.005, "min_repeats": 2, "max_repeats": 4},
    "models": [{"models": ["thesis-2-3-1", "digits-cnn"], "batches": [7], "variants": ["numpy", "cuda", "jax-jit"]}],
    "dense": [{"shapes": [[7, 10, 33]], "variants": ["jax-jit"]}],
    "conv2d": [{"shapes": [[3, 5, 11, 13, 7, 3, 3, 2, 1]], "variants": ["jax-jit"]}],
    "pool": [{"mode": "max", "shapes": [[3, 4, 9, 11, 3, 3, 2]], "variants": ["jax-jit"]},
             {"mode": "avg", "shapes": [[3, 4, 8, 8, 2, 2, 2]], "variants": ["jax-jit"]}],
}


def read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path, device):
    suite = parse_suite(TINY, "tiny-jax.toml")
    path = tmp_path / "results.csv"
    counts = runner.run_suite(suite, device, str(path), quiet=True)
    return suite.jobs(device), read(path), counts


def test_jax_rows_are_parity_checked_and_report_compile_time(tmp_path):
    jobs, rows, _ = _run(tmp_path, "cpu")
    jax_rows = [r for r in rows if r["variant"] == "jax-jit"]
    # 3 model phases x 2 models, dense 3 phases, conv2d 3, two pools 2 each
    assert len(rows) == len(jobs) and len(jax_rows) == 6 + 3 + 3 + 4
    for r in jax_rows:
        assert r["impl"] == "reference" and r["status"] == "ok", r
        assert r["parity_against"] == "float64" and float(r["parity_rel_err"]) <= float(r["parity_tol"]), r
        assert float(r["median_ms"]) > 0 and r["peak_mem_bytes"] == ""         # no peak memory on the CPU
        m = re.fullmatch(r"jit compile ([0-9.e+-]+) s, not timed", r["reason"])
        assert m and float(m.group(1)) > 0, r["reason"]
    assert all(r["reason"] == "" for r in rows if r["variant"] != "jax-jit")


def test_without_jax_the_rows_are_unsupported_with_the_install_command(tmp_path, monkeypatch):
    import reference_impl

    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "reference_impl.jax_model", raising=False)
    monkeypatch.delattr(reference_impl, "jax_model", raising=False)
    suite = parse_suite({"settings": TINY["settings"],
                         "models": [{"models": ["thesis-2-3-1"], "batches": [3], "phases": ["train_step"],
                                     "variants": ["numpy", "jax-jit"]}],
                         "dense": [{"shapes": [[3, 4, 5]], "phases": ["forward"], "variants": ["jax-jit"]}]}, "x")
    counts = runner.run_suite(suite, "cpu", str(tmp_path / "results.csv"), quiet=True)
    rows = {r["variant"] + r["kind"]: r for r in read(tmp_path / "results.csv")}
    assert counts.get("unsupported") == 2 and counts.get("ok") == 1
    for key in ("jax-jitmodel", "jax-jitdense"):
        assert rows[key]["status"] == "unsupported", rows[key]
        assert "JAX is not installed" in rows[key]["reason"] and 'pip install -e ".[jax]"' in rows[key]["reason"]
    assert rows["numpymodel"]["status"] == "ok"


def test_jax_jit_is_opt_in_and_in_the_default_suites():
    # a section that names no variants gets no jax-jit rows (JAX compiles every row)
    plain = parse_suite({"models": [{"models": ["thesis-2-3-1"], "batches": [1]}]}, "p")
    assert "jax-jit" not in {j.variant for j in plain.jobs("cpu")}
    gpu = load_suite("gpu").jobs("gpu")
    import modelspec

    zoo = set(modelspec.zoo_names())
    got = {(j.workload, j.batch) for j in gpu if j.variant == "jax-jit" and j.phase == "train_step"}
    assert got == {(m, b) for m in zoo for b in (1, 16, 64, 256, 1024, 4096, 8192)}
    assert {j.kind for j in gpu if j.variant == "jax-jit"} == {"model", "conv2d", "pool"}
    cpu = [j for j in load_suite("cpu").jobs("cpu") if j.variant == "jax-jit"]
    assert {j.phase for j in cpu} == {"train_step"} and len(cpu) == 2 * len(zoo)
    targets = [j for j in load_suite("targets").jobs("gpu") if j.variant == "jax-jit"]
    assert {(j.workload, j.batch) for j in targets} >= {(m, b) for m in zoo for b in (1, 64, 1024)}
    # jax-jit rows stay beside their model's other rows (shared data and float64 baseline); torch.compile last
    thesis = load_suite("thesis").jobs("gpu")
    assert thesis[-1].variant == "torch-compile"
    assert any(j.variant == "jax-jit" for j in thesis[:100])


def test_jax_clock_waits_for_every_output_of_a_sample(monkeypatch):
    import jax

    from harness.timer import measure

    blocked = []
    real = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda xs: (blocked.append(list(xs)), real(xs))[1])
    counter = iter(range(10**6))
    m = measure(lambda: jax.numpy.float32(next(counter)), "jax", warmup=2, budget_s=0.0, min_repeats=3,
                min_sample_ms=0.0)
    calls = [float(v) for batch in blocked for v in batch]
    # every call's output was waited for exactly once, in order: warm-up, calibration, then each sample
    assert calls == [float(i) for i in range(2 + 1 + 3 * m.inner_loops)]
    assert m.repeats == 3


def test_targets_best_framework_names_the_fastest(tmp_path):
    from harness.targets import best_framework_rows, evaluate, write_best_framework_csv

    def row(variant, workload, batch, ms, impl="reference", status="ok"):
        return {"impl": impl, "variant": variant, "device": "gpu", "kind": "model", "workload": workload,
                "batch": str(batch), "phase": "train_step", "median_ms": str(ms), "status": status,
                "parity_ok": str(status == "ok")}

    rows = [row("cuda-graph", "a", 64, 0.10, impl="custom"), row("torch-eager", "a", 64, 0.70),
            row("torch-graph", "a", 64, 0.20), row("jax-jit", "a", 64, 0.08),
            row("cuda-graph", "b", 1, 0.05, impl="custom"), row("torch-eager", "b", 1, 0.60),
            row("torch-graph", "b", 1, 0.06), row("jax-jit", "b", 1, 0.09),
            row("torch-compile", "b", 1, 0.055),
            row("cuda-graph", "b", 4096, 1.0, impl="custom"), row("torch-eager", "b", 4096, 0.1)]  # batch > 1024
    lines, bad, n = best_framework_rows(rows)
    assert n == 2 and not bad
    by = {(r["workload"], r["batch"]): r for r in lines}
    assert by[("a", "64")]["fastest"] == "jax-jit" and by[("a", "64")]["ratio"] == "0.8"
    assert by[("b", "1")]["fastest"] == "torch-compile" and by[("b", "1")]["ratio"] == "1.1"
    t = {x["target"]: x for x in evaluate(rows, None)}["train_step_vs_best_framework"]
    assert t["measured"] == "0.8" and t["met"] == "False" and t["rows"] == 2
    assert "worst at a b=64, where jax-jit was fastest" in t["note"]
    write_best_framework_csv(str(tmp_path / "b.csv"), lines)
    assert [r["fastest"] for r in read(tmp_path / "b.csv")] == ["jax-jit", "torch-compile"]
    # a missing JAX row leaves its model out and the target unmet, naming the row
    t = {x["target"]: x for x in evaluate([r for r in rows if r["variant"] != "jax-jit" or r["workload"] != "b"],
                                          None)}["train_step_vs_best_framework"]
    assert t["measured"] == "0.8" and t["met"] == "False" and "reference/jax-jit b b=1: missing" in t["note"]


def test_cli_run_records_jax_in_env(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[settings]\nwarmup = 1\nbudget_s = 0.005\nmin_repeats = 2\nmax_repeats = 3\n'
                     '[[models]]\nmodels = ["thesis-2-3-1"]\nbatches = [2]\nphases = ["inference"]\n'
                     'variants = ["jax-jit"]\n')
    out = tmp_path / "out"
    assert cli.main(["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet",
                     "--no-report"]) == 0
    import json

    rec = json.loads((out / "env.json").read_text())
    assert rec["jax_versions"]["jax"] and rec["jax_versions"]["jaxlib"]
    assert rec["precision_flags"]["jax: jax.lax.Precision of every dot_general / conv_general_dilated"] == "HIGHEST"
    assert read(out / "results.csv")[0]["status"] == "ok"


@pytest.mark.gpu
def test_jax_rows_on_the_gpu(tmp_path):
    jobs, rows, _ = _run(tmp_path, "gpu")
    jax_rows = [r for r in rows if r["variant"] == "jax-jit"]
    assert len(jax_rows) == 16
    for r in jax_rows:
        assert r["status"] == "ok" and r["parity_ok"] == "True", r
        assert int(r["peak_mem_bytes"]) > 0 and "jit compile" in r["reason"], r


def test_report_tables_name_the_fastest_framework(tmp_path):
    from harness.report import render
    from harness.results import Row, write_all

    def row(impl, variant, kind, workload, phase, ms, shape=""):
        return Row(impl=impl, variant=variant, device="cpu", workload=workload, kind=kind, batch=8, phase=phase,
                   shape=shape, median_ms=ms, iqr_ms=0.0, repeats=5, parity_ok=True, parity_rel_err=1e-7,
                   device_name="test cpu")

    rows = [row("custom", "numpy", "model", "mlp-mnist", "train_step", 0.4),
            row("reference", "torch-eager", "model", "mlp-mnist", "train_step", 0.9),
            row("reference", "jax-jit", "model", "mlp-mnist", "train_step", 0.2),
            row("custom", "numpy", "dense", "dense_M8_N4_K16", "forward", 0.02, "M=8 N=4 K=16"),
            row("reference", "torch", "dense", "dense_M8_N4_K16", "forward", 0.01, "M=8 N=4 K=16"),
            row("reference", "jax-jit", "dense", "dense_M8_N4_K16", "forward", 0.03, "M=8 N=4 K=16")]
    write_all(str(tmp_path / "results.csv"), rows)
    files = render([str(tmp_path)], out_dir=str(tmp_path / "rep"))
    models = open(files["models.md"], encoding="utf-8").read()
    layers = open(files["layers.md"], encoding="utf-8").read()
    # the fastest reference variant of each row is named, and the speedup is against it
    assert "best ref. variant" in models and "| 0.200 | jax-jit | 0.500 |" in models, models
    assert "| 0.0100 | torch | 0.500 |" in layers, layers
