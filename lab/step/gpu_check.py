"""One visit to the GPU machine: the GPU tests, then a few train-step timings; a short summary last.

Run from the repository root on the GPU machine (nothing to install there):

    python3 lab/step/gpu_check.py --out "$OUT"                     # tests + timings
    python3 lab/step/gpu_check.py --out "$OUT" --no-tests          # timings only
    python3 lab/step/gpu_check.py --out "$OUT" --tests tests/custom_impl/gpu/test_ops.py --no-timings

Writes the full pytest log (pytest_gpu.log), the JUnit XML and the timings (timings.csv) to --out.
Timings (CUDA events on the current stream, after warm-up; median over repeats of the mean step time
over ``--steps`` back-to-back steps; inputs already on the device): ours with CUDA-graph replay, ours
eager, PyTorch eager, PyTorch CUDA graph. These are a quick look only; the harness does the real
benchmarks, and lab/step/profile_step.py splits a step per layer.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, modelspec, reference_impl

DEFAULT_TESTS = ["tests/custom_impl/gpu", "tests/test_no_vendor.py", "tests/test_parity.py"]


def run_tests(paths, out, timeout):
    log = os.path.join(out, "pytest_gpu.log")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider",
           f"--junitxml={os.path.join(out, 'pytest_gpu.xml')}", *paths]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        text += f"\n*** pytest stopped after {timeout} s ***\n"
        rc = -1
    with open(log, "w") as fh:
        fh.write(text)
    lines = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR")) or " passed" in ln
             or " failed" in ln or "stopped after" in ln]
    return rc, time.time() - t0, lines


def _time_loop(step, sync_events, steps, repeats):
    """Median over ``repeats`` of the mean time of ``steps`` back-to-back calls of step(), in us."""
    start, stop, elapsed_ms = sync_events
    times = []
    for _ in range(repeats):
        start()
        for _ in range(steps):
            step()
        stop()
        times.append(elapsed_ms() * 1000.0 / steps)
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def _cupy_events():
    import cupy

    a, b = cupy.cuda.Event(), cupy.cuda.Event()
    return (lambda: a.record(), lambda: (b.record(), b.synchronize()),
            lambda: cupy.cuda.get_elapsed_time(a, b))


def _torch_events():
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    return (lambda: a.record(), lambda: (b.record(), b.synchronize()), lambda: a.elapsed_time(b))


def run_timings(models, batches, out, steps, repeats):
    import cupy
    import numpy as np
    import torch

    import custom_impl
    import modelspec
    import reference_impl

    rows = []
    for name in models:
        spec = modelspec.load(name)
        for n in batches:
            rng = np.random.default_rng(n)
            x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
            y = rng.integers(0, spec.num_classes, n).astype(np.int64)
            variants = {}
            for use_graph in (True, False):
                m = custom_impl.build(spec, device="gpu", seed=0, use_graph=use_graph)
                xc, yc = m.device_batch(x, y)
                variants["ours-graph" if use_graph else "ours-eager"] = (
                    lambda m=m, xc=xc, yc=yc: m.train_step(xc, yc, 0.01, 0.9), _cupy_events)
            ref = reference_impl.build(spec, device="gpu", seed=0)
            xt, yt = ref.device_batch(x, y)
            variants["torch-eager"] = (lambda: ref.train_step(xt, yt, 0.01, 0.9), _torch_events)
            ref2 = reference_impl.build(spec, device="gpu", seed=0)
            variants["torch-graph"] = (lambda: ref2.train_step_graphed(xt, yt, 0.01, 0.9), _torch_events)
            for variant, (step, events) in variants.items():
                try:
                    for _ in range(5):
                        step()  # eager, capture, replays; compilation and autotuning
                    torch.cuda.synchronize()
                    cupy.cuda.Device().synchronize()
                    med, lo, hi = _time_loop(step, events(), steps, repeats)
                    rows.append(dict(model=name, batch=n, variant=variant, median_us=round(med, 2),
                                     min_us=round(lo, 2), max_us=round(hi, 2), status="ok"))
                except Exception as err:  # keep going: one broken variant must not hide the others
                    rows.append(dict(model=name, batch=n, variant=variant, median_us=float("nan"),
                                     min_us=float("nan"), max_us=float("nan"),
                                     status=f"{type(err).__name__}: {str(err)[:120]}"))
    path = os.path.join(out, "timings.csv")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--tests", nargs="*", default=DEFAULT_TESTS)
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-timings", action="store_true")
    ap.add_argument("--pytest-timeout", type=int, default=200)
    ap.add_argument("--models", nargs="*", default=["mlp-mnist", "lenet-mnist"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64, 1024])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    summary = []
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        summary.append(f"device: {props['name'].decode()}  cupy {cupy.__version__}")
    except Exception as err:
        summary.append(f"device: unknown ({err})")
    if not args.no_tests:
        rc, secs, lines = run_tests(args.tests, args.out, args.pytest_timeout)
        summary.append(f"pytest -m gpu ({secs:.0f} s, rc {rc}):")
        summary.extend("  " + ln for ln in lines[-40:])
    if not args.no_timings:
        try:
            rows = run_timings(args.models, args.batches, args.out, args.steps, args.repeats)
            summary.append("train step, median us per step (min..max over repeats):")
            summary.append(f"  {'model':12s} {'N':>5s} " + " ".join(f"{v:>20s}" for v in
                                                               ("ours-graph", "ours-eager", "torch-eager", "torch-graph")))
            keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
            for model, n in keys:
                cells = []
                for v in ("ours-graph", "ours-eager", "torch-eager", "torch-graph"):
                    r = next((r for r in rows if r["model"] == model and r["batch"] == n and r["variant"] == v), None)
                    cells.append(f"{r['median_us']:>9.1f} ({r['min_us']:.0f}..{r['max_us']:.0f})" if r and r["status"] == "ok"
                                 else f"{'ERR':>20s}")
                summary.append(f"  {model:12s} {n:5d} " + " ".join(f"{c:>20s}" for c in cells))
            for r in rows:
                if r["status"] != "ok":
                    summary.append(f"  error {r['model']} N={r['batch']} {r['variant']}: {r['status']}")
        except Exception as err:
            import traceback

            summary.append(f"timings failed: {type(err).__name__}: {err}")
            summary.append(traceback.format_exc()[-1500:])
    text = "\n".join(summary)
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
