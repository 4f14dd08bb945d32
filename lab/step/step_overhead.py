"""Host cost of our graphed train step, part by part, next to the whole step and PyTorch's graphed step.

    python3 dev/step_overhead.py [--models digits-mlp,thesis-2-3-1,mlp-mnist] [--batches 1,16]
                                 [--out DIR] [--harness]

Small models are host-bound when the train step is a replayed CUDA graph (~10-15 kernels, ~1 us each):
what a step costs is the Python around ``graph.launch``. For each model and batch size this builds our
GPU model (graphs on), feeds it the harness's data (``harness.workloads._model_data``: float32 x and
int64 labels, copied to the GPU once, as the harness's "cuda-graph" rows do) with lr 0.01 and momentum
0.9, runs three steps (eager, capture, replay), then times:

- the parts of the fast path (``GPUModel.train_step`` once its key is armed): the argument checks, the
  two input copies, the graph launch, the fresh loss;
- the parts of the checked path (``GPUModel._train_step_checked``, the code every step ran before the fast
  path; it differs from it only in the loss copy, timed on its own as ``old loss copy``): check_lr,
  check_input, the input copy with its plan lookup, the label checks and copy, the plan lookup, the
  launch-cost context, ``_graphed`` (lookup + launch), the old ``_copy(loss).reshape(())``;
- the whole step both ways and PyTorch's ``train_step_graphed``: host time per call (perf_counter) and,
  as the harness times a row, ``harness.timer.measure`` with CUDA events and the targets suite's settings.

Host parts: ``perf_counter`` around ``--reps`` calls (20: few enough that queued GPU work never blocks
the host), median over ``--samples`` such samples, device synchronised between samples, in us per call.
Whole steps in a loop ("steady") are also timed over 200 calls: that is the rate the harness sees, bounded
by the GPU when the host is faster than the graph.

``--harness`` also runs the harness's ``run`` command (in this process) on a suite of exactly these rows
(cuda-graph and torch-graph train steps, parity-checked against float64) into ``DIR/harness``.
Output: a table on stdout (the short summary last) and ``DIR/step_overhead.csv``.

Measured with the fast path (H100 80GB HBM3, one run, us): host parts per call: checks ~1, each
device-to-device copy (x, y, loss) ~6-7.5, graph.launch ~3, a 0-d array on a loss slot ~2.5 beyond its copy;
whole fast step 26-31 on the host, 30-42 in the harness (the graph alone 20-34 of GPU time), against
40-53 for the checked path and 51-86 for PyTorch's graphed step in the same run.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LR, MOMENTUM = 0.01, 0.9
# Run 5 of `python3 -m harness targets` (H100 80GB HBM3, reports/targets-NVIDIA-H100-80GB-HBM3): the whole
# step before the fast path, ours cuda-graph / PyTorch torch-graph, us per step (harness median).
BEFORE_US = {
    ("thesis-2-3-1", 1): (33.3, 88.0), ("thesis-2-3-1", 16): (50.3, 91.9),
    ("digits-mlp", 1): (52.4, 50.4), ("digits-mlp", 16): (53.9, 42.9),
    ("mlp-mnist", 1): (50.0, 75.0), ("mlp-mnist", 16): (50.6, 77.0),
}
TARGETS_SETTINGS = dict(warmup=3, budget_s=0.1, min_repeats=5, max_repeats=100, min_sample_ms=1.0)


def host_us(fn, sync, reps: int = 20, samples: int = 60) -> float:
    """Median host time per call (us) of ``fn`` over ``samples`` samples of ``reps`` back-to-back calls."""
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps * 1e6)
        sync()
    return statistics.median(times)


def harness_us(fn, clock: str) -> float:
    """The row's median as the harness measures it (CUDA events around many calls), in us."""
    from harness.timer import measure

    return measure(fn, clock, **TARGETS_SETTINGS).median_ms * 1e3


def profile(name: str, batch: int, reps: int, samples: int) -> dict:
    import cupy
    import torch

    import modelspec
    import reference_impl
    from custom_impl.gpu import model as gmodel
    from harness.workloads import _model_data, set_strict_fp32

    set_strict_fp32()
    spec = modelspec.load(name)
    x_np, y_np = _model_data(spec, batch, 0)
    x, y = cupy.asarray(x_np), cupy.asarray(y_np)
    m = gmodel.build(spec, seed=0, use_graph=True)
    for _ in range(3):  # eager, capture, replay: the fast path is armed after the second
        m.train_step(x, y, LR, MOMENTUM)
    r = m._replay
    assert r is not None, "the fast path is not armed after three steps"
    plan = m._plans[batch]
    key = ("train_step", batch, LR, MOMENTUM)

    def sync():
        cupy.cuda.runtime.deviceSynchronize()

    def fast_checks():  # the fast path's condition, as train_step spells it
        return (r is not None and type(x) is r.array and type(y) is r.array and x.shape == r.shape
                and y.shape == r.labels_shape and x.dtype is gmodel.F32 and y.dtype is gmodel.I64
                and x._c_contiguous and y._c_contiguous and type(LR) is r.lr_type and LR == r.lr
                and type(MOMENTUM) is r.momentum_type and MOMENTUM == r.momentum and m.use_graph)

    assert fast_checks(), "the harness's inputs do not take the fast path"

    def launch_cost_ctx():
        with m._launch_cost():
            pass

    def graphed():
        m._graphed(key, lambda: None)  # replays: the key has a graph

    def loss_via_empty():  # the alternative to a slot: a pool allocation + the copy
        out = cupy.empty((), dtype=gmodel.F32)
        out.data.copy_from_device_async(r.loss, 4)
        return out

    parts = {
        "fast: checks": fast_checks,
        "fast: copy x": lambda: r.x_dst.copy_from_device_async(x.data, r.x_bytes),
        "fast: copy y": lambda: r.y_dst.copy_from_device_async(y.data, r.y_bytes),
        "fast: graph.launch": lambda: r.graph.launch(),
        "fast: fresh loss (slot)": lambda: m._fresh_loss(r.loss),
        "alt: loss via cupy.empty": loss_via_empty,
        "old: check_lr": lambda: spec.check_lr(LR, MOMENTUM),
        "old: check_input": lambda: spec.check_input(x),
        "old: _asarray (plan + copy x)": lambda: m._asarray(x),
        "old: _checked_labels (copy y)": lambda: m._checked_labels(y, batch),
        "old: _plan": lambda: m._plan(batch),
        "old: launch-cost context": launch_cost_ctx,
        "old: _graphed (lookup + launch)": graphed,
        "old: loss copy _copy().reshape(())": lambda: gmodel._copy(plan.loss).reshape(()),
    }
    out = {name_: host_us(fn, sync, reps, samples) for name_, fn in parts.items()}
    fast_step = lambda: m.train_step(x, y, LR, MOMENTUM)  # noqa: E731
    checked_step = lambda: m._train_step_checked(x, y, LR, MOMENTUM)  # noqa: E731
    out["whole: fast step (host)"] = host_us(fast_step, sync, reps, samples)
    out["whole: checked step (host)"] = host_us(checked_step, sync, reps, samples)
    m.train_step(x, y, LR, MOMENTUM)  # re-arm (the checked step re-armed it too; to be sure)
    out["whole: fast step (steady)"] = host_us(fast_step, sync, 200, 9)
    out["whole: checked step (steady)"] = host_us(checked_step, sync, 200, 9)

    # the graph alone, then whole steps as the harness times them (CUDA events, many calls per sample)
    out["gpu: graph alone (harness clock)"] = harness_us(lambda: r.graph.launch(), "cupy")
    m.train_step(x, y, LR, MOMENTUM)
    out["harness: ours fast"] = harness_us(fast_step, "cupy")
    out["harness: ours checked"] = harness_us(checked_step, "cupy")

    ref = reference_impl.build(spec, device="gpu", seed=0)
    xb, yb = torch.from_numpy(x_np).cuda(), torch.from_numpy(y_np).cuda()
    if spec.loss == "sigmoid_binary_cross_entropy":
        yb = yb.clone()
    torch_step = lambda: ref.train_step_graphed(xb, yb, LR, MOMENTUM)  # noqa: E731
    for _ in range(3):
        torch_step()
    torch.cuda.synchronize()
    out["whole: torch graph step (host)"] = host_us(torch_step, torch.cuda.synchronize, reps, samples)
    out["whole: torch graph step (steady)"] = host_us(torch_step, torch.cuda.synchronize, 200, 9)
    out["harness: torch graph"] = harness_us(torch_step, "torch")

    # the fast path gives what the checked path gives: two fresh models, the same three batches
    twin_fast, twin_checked = gmodel.build(spec, seed=0), gmodel.build(spec, seed=0)
    for s in range(6):
        xs, ys = _model_data(spec, batch, 10 + s % 3)
        xs, ys = cupy.asarray(xs), cupy.asarray(ys)
        a = float(twin_fast.train_step(xs, ys, LR, MOMENTUM))
        b = float(twin_checked._train_step_checked(xs, ys, LR, MOMENTUM))
        assert a == b, f"{name} N={batch} step {s}: fast path loss {a} != checked path loss {b}"
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
    lines = [f"host us per call on {card} (median; reps={args.reps}, samples={args.samples})",
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
    print(f"\n=== summary ({card}; us per step; before = run 5 of harness targets, H100 80GB HBM3)")
    print(f"{'model':<14}{'N':>4}{'before ours':>13}{'before torch':>14}{'ours fast':>11}{'ours checked':>14}"
          f"{'torch graph':>13}{'ratio':>7}{'harness ours':>14}{'harness torch':>15}{'h.ratio':>9}")
    for (n, b), res in results.items():
        before = BEFORE_US.get((n, b), (float("nan"), float("nan")))
        ratio = res["harness: torch graph"] / res["harness: ours fast"]
        hr = {row["variant"]: row for row in harness_rows if row["workload"] == n and int(row["batch"]) == b}
        ho = float(hr["cuda-graph"]["median_ms"]) * 1e3 if hr.get("cuda-graph", {}).get("median_ms") else float("nan")
        ht = float(hr["torch-graph"]["median_ms"]) * 1e3 if hr.get("torch-graph", {}).get("median_ms") else float("nan")
        ok = "" if not hr else ("" if all(r.get("parity_ok") == "True" for r in hr.values()) else " PARITY!")
        print(f"{n:<14}{b:>4}{before[0]:>13.1f}{before[1]:>14.1f}{res['harness: ours fast']:>11.1f}"
              f"{res['harness: ours checked']:>14.1f}{res['harness: torch graph']:>13.1f}{ratio:>7.2f}"
              f"{ho:>14.1f}{ht:>15.1f}{ht / ho if ho == ho and ho > 0 else float('nan'):>9.2f}{ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
