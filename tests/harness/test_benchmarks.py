"""The pytest-benchmark suite in benchmarks/: collectible on a CPU-only machine, GPU params skip cleanly,
its JSON carries the metadata the report needs, and ``harness report`` reads it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pytest(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_benchmarks_collect_with_gpu_params_marked():
    proc = _pytest("--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::test_bench[" in line]
    assert any("[cpu-" in i for i in ids) and any("[gpu-" in i for i in ids)
    assert any("dense_M4096_N4096_K4096" in i for i in ids)


def test_one_cpu_benchmark_json_and_report(tmp_path):
    out = tmp_path / "bench.json"
    proc = _pytest("-q", "-k", "cpu-dense_M7_N10_K33-b7-forward", f"--benchmark-json={out}",
                   "--benchmark-disable-gc")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert len(data["benchmarks"]) == 2
    for b in data["benchmarks"]:
        ex = b["extra_info"]
        assert ex["flops"] > 0 and ex["parity_ok"] is True and ex["tflops"] > 0 and ex["event_median_ms"] > 0
        assert b["group"] == "cpu dense_M7_N10_K33 forward"
    rep = subprocess.run([sys.executable, "-m", "harness", "report", str(out), "--out", str(tmp_path / "rep")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "dense 33->10, M=7" in (tmp_path / "rep" / "layers.md").read_text()   # the shape in words
    # harness compare reads the same file: against itself every row is the same, exit code 0
    cmp = subprocess.run([sys.executable, "-m", "harness", "compare", str(out), str(out), "--fail-on-regression",
                          "--out", str(tmp_path / "cmp")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cmp.returncode == 0, cmp.stderr
    assert "| dense | ours | 1 | 1.0000 |" in cmp.stdout and "| dense | PyTorch | 1 | 1.0000 |" in cmp.stdout
