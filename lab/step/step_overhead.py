"""Host cost of our graphed GPU train step next to PyTorch's graphed step, for small (host-bound) models.

    python3 lab/step/step_overhead.py [--models digits-mlp,thesis-2-3-1,mlp-mnist] [--batches 1,16]
                                      [--out DIR] [--harness]

Small models are host-bound when the train step is a replayed CUDA graph (~10-15 kernels, ~1 us each):
what a step costs is the Python around the graph launch. For each model and batch size this builds our
GPU model (graphs on), makes device inputs once with ``device_batch`` (float32 x, int64 labels, as the
harness's "cuda-graph" rows pass them), runs three steps (eager, capture, replay) with lr 0.01 and
momentum 0.9, then times:

- ``device_batch`` (the checked host-to-device copy a row excludes from its timing);
- the whole step, host time per call: ``--reps`` back-to-back calls (20: few enough that queued GPU work
  never blocks the host), median over ``--samples`` samples, the device synchronised between samples;
- the whole step in a loop of 200 calls ("steady"): the rate the harness sees, bounded by the GPU when the
  host is faster than the graph;
- the step as the harness times a row: ``harness.timer.measure`` with CUDA events and the targets suite's
  settings;
- the same three for PyTorch's ``train_step_graphed``.

``--harness`` also runs the harness's ``run`` command (in this process) on a suite of exactly these rows
(cuda-graph and torch-graph train steps, parity-checked against float64) into ``DIR/harness``.
Output: a table on stdout (the short summary last) and ``DIR/step_overhead.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, reference_impl, harness, lab.common

import numpy as np  # noqa: E402

from lab.common.timing import host_us  # noqa: E402

LR, MOMENTUM = 0.01, 0.9
TARGETS_SETTINGS = dict(warmup=3, budget_s=0.1, min_repeats=5, max_repeats=100, min_sample_ms=1.0)


def harness_us(fn, clock: str) -> float:
    """The row's median as the harness measures it (CUDA events around many calls), in us."""
    from harness.timer import measure

    return measure(fn, clock, **TARGETS_SETTINGS).median_ms * 1e3


def profile(name: str, batch: int, reps: int, samples: int) -> dict:
    import cupy
    import torch

    import custom_impl
    import modelspec
    import reference_impl
    from harness.workloads import set_strict_fp32

    set_strict_fp32()
    spec = modelspec.load(name)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
    y_np = rng.integers(0, spec.num_classes, size=batch).astype(np.int64)
    m = custom_impl.build(spec, device="gpu", seed=0, use_graph=True)
    x, y = m.device_batch(x_np, y_np)
    for _ in range(3):  # eager, capture, replay
        m.train_step(x, y, LR, MOMENTUM)

    def sync():
        cupy.cuda.runtime.deviceSynchronize()

    step = lambda: m.train_step(x, y, LR, MOMENTUM)  # noqa: E731
    out = {
        "device_batch (host)": host_us(lambda: m.device_batch(x_np, y_np), sync, reps, samples),
        "ours graph step (host)": host_us(step, sync, reps, samples),
        "ours graph step (steady)": host_us(step, sync, 200, 9),
        "harness: ours graph step": harness_us(step, "cupy"),
    }

    ref = reference_impl.build(spec, device="gpu", seed=0)
    xb, yb = ref.device_batch(x_np, y_np)
    torch_step = lambda: ref.train_step_graphed(xb, yb, LR, MOMENTUM)  # noqa: E731
    for _ in range(3):
        torch_step()
    torch.cuda.synchronize()
    out["torch graph step (host)"] = host_us(torch_step, torch.cuda.synchronize, reps, samples)
    out["torch graph step (steady)"] = host_us(torch_step, torch.cuda.synchronize, 200, 9)
    out["harness: torch graph step"] = harness_us(torch_step, "torch")
    return out


def run_harness(models: list[str], batches: list[int], out_dir: str) -> list[dict]:
    """``python3 -m harness run`` (in this process) on exactly these rows; returns results.csv's rows."""
    import tempfile

    from harness.cli import main as harness_main

    os.makedirs(out_dir, exist_ok=True)
    suite = os.path.join(tempfile.mkdtemp(), "step_overhead_suite.toml")
    with open(suite, "w", encoding="utf-8") as fh:
        fh.write('name = "step-overhead"\ndescription = "small models, graphed train steps"\n[settings]\n')
        for k, v in TARGETS_SETTINGS.items():
            fh.write(f"{k} = {v}\n")
        fh.write(f"[[models]]\nmodels = {models!r}\nbatches = {batches!r}\nphases = [\"train_step\"]\n"
                 "variants = [\"cuda-graph\", \"torch-graph\"]\ndevices = [\"gpu\"]\n".replace("'", '"'))
    rc = harness_main(["run", "--suite", suite, "--device", "gpu", "--out", out_dir, "--no-report", "--quiet"])
    if rc != 0:
        print(f"harness run exited with {rc}")
    with open(os.path.join(out_dir, "results.csv"), encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mlp,thesis-2-3-1,mlp-mnist")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--out", default=None, help="folder for step_overhead.csv (and harness/ with --harness)")
    ap.add_argument("--harness", action="store_true", help="also run the harness on these rows")
    args = ap.parse_args()
    import cupy

    models = [s.strip() for s in args.models.split(",") if s.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    card = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    card = card.decode() if isinstance(card, bytes) else str(card)
    print(f"card: {card}")
    results = {}
    for name in models:
        for b in batches:
            try:
                results[(name, b)] = profile(name, b, args.reps, args.samples)
            except Exception:  # noqa: BLE001 - one failing row must not lose the others' figures
                traceback.print_exc()
                print(f"FAILED {name} N={b}", flush=True)
                continue
            print(f"done {name} N={b}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[(name, b)].items()),
                  flush=True)
    if not results:
        return 1
    parts = list(next(iter(results.values())))
    cols = list(results)
    width = max(len(p) for p in parts)
    lines = [f"us per call on {card} (median; host parts: reps={args.reps}, samples={args.samples})",
             f"{'part':<{width}} " + " ".join(f"{f'{n[:12]}/{b}':>16}" for n, b in cols)]
    for p in parts:
        lines.append(f"{p:<{width}} " + " ".join(f"{results[c][p]:>16.2f}" for c in cols))
    print("\n".join(lines))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "step_overhead.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["card", "model", "batch", "part", "us"])
            for (n, b), res in results.items():
                for p, v in res.items():
                    w.writerow([card, n, b, p, f"{v:.3f}"])
    harness_rows = []
    if args.harness:
        try:
            harness_rows = run_harness(models, batches, os.path.join(args.out or "out", "harness"))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    # the short summary, last
    print(f"\n=== summary ({card}; us per step)")
    print(f"{'model':<14}{'N':>4}{'ours host':>11}{'torch host':>12}{'ours harness':>14}{'torch harness':>15}"
          f"{'ratio':>7}{'run ours':>10}{'run torch':>11}{'r.ratio':>9}")
    for (n, b), res in results.items():
        ours_h, torch_h = res["harness: ours graph step"], res["harness: torch graph step"]
        hr = {row["variant"]: row for row in harness_rows if row["workload"] == n and int(row["batch"]) == b}
        ho = float(hr["cuda-graph"]["median_ms"]) * 1e3 if hr.get("cuda-graph", {}).get("median_ms") else float("nan")
        ht = float(hr["torch-graph"]["median_ms"]) * 1e3 if hr.get("torch-graph", {}).get("median_ms") else float("nan")
        ok = "" if not hr else ("" if all(r.get("parity_ok") == "True" for r in hr.values()) else " PARITY!")
        print(f"{n:<14}{b:>4}{res['ours graph step (host)']:>11.1f}{res['torch graph step (host)']:>12.1f}"
              f"{ours_h:>14.1f}{torch_h:>15.1f}{torch_h / ours_h:>7.2f}"
              f"{ho:>10.1f}{ht:>11.1f}{ht / ho if ho == ho and ho > 0 else float('nan'):>9.2f}{ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
