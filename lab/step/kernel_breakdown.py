"""Where a GPU train step's time goes, kernel by kernel: ours beside PyTorch's, from CUPTI kernel records.

    python3 lab/step/kernel_breakdown.py [--models lenet-mnist] [--batches 64] [--steps 20] [--out DIR]

For each model and batch: our GPU model (its CUDA-graph step, as the harness's ``cuda-graph`` rows run it)
and PyTorch's (its eager step with ``cudnn.benchmark``, the same kernels its CUDA graph replays), each
stepped a few times untimed (autotuning, graph capture), then ``--steps`` steps under ``torch.profiler``
(CUPTI records every kernel the process launches, CuPy's included). Printed per side: each kernel name
(cut to 70 characters; cuDNN's names say its algorithm), launches per step, GPU microseconds per step
and the share of the step's kernel time; then the two totals. Kernel time excludes the gaps between
kernels, so a side's total can be below its measured step time. ``DIR/kernel_breakdown.csv`` holds the
rows. Lr 0.01, momentum 0.9; one random batch, seed 0. ``--no-graph``: our step without its CUDA graph.
``--sequence``: also each side's last step launch by launch, in order (which call of a kernel costs what).
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, reference_impl, modelspec

import numpy as np  # noqa: E402

LR, MOMENTUM, WARMUP = 0.01, 0.9, 5


def kernel_times(step, sync, steps: int, sequence: list | None = None) -> dict[str, list[float]]:
    """{kernel name: [GPU microseconds of each launch]} over ``steps`` calls of ``step``; ``sequence``, if
    given, receives (start, name, us) of every launch."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    times: dict[str, list[float]] = collections.defaultdict(list)
    for e in prof.events():
        if e.device_type.name == "CUDA" and e.device_time_total > 0:
            times[e.name].append(float(e.device_time_total))
            if sequence is not None:
                sequence.append((e.time_range.start, e.name, float(e.device_time_total)))
    return times


def sides(name: str, batch: int, graph: bool = True):
    """[(side label, step fn, sync fn)] for our model and PyTorch's, warmed up."""
    import cupy
    import torch

    import custom_impl
    import modelspec
    import reference_impl

    spec = modelspec.load(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, batch)
    ours = custom_impl.build(spec, "gpu", seed=0, use_graph=graph)
    ref = reference_impl.build(spec, "gpu", seed=0)
    out = []
    for label, model, sync in (("ours (cuda-graph)" if graph else "ours (cuda)", ours, cupy.cuda.Device().synchronize),
                               ("PyTorch (cuDNN / cuBLAS)", ref, torch.cuda.synchronize)):
        xd, yd = model.device_batch(x, y)

        def step(model=model, xd=xd, yd=yd):
            model.train_step(xd, yd, LR, MOMENTUM)

        for _ in range(WARMUP):
            step()
        sync()
        out.append((label, step, sync))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet-mnist")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sequence", action="store_true", help="print each side's last step launch by launch")
    ap.add_argument("--no-graph", action="store_true",
                    help="our step launched kernel by kernel (if CUPTI shows no kernels of the graphed step)")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            totals = {}
            for label, step, sync in sides(name, batch, graph=not args.no_graph):
                seq = [] if args.sequence else None
                times = kernel_times(step, sync, args.steps, seq)
                per_step = {k: sum(v) / args.steps for k, v in times.items()}
                total = sum(per_step.values())
                totals[label] = total
                print(f"\n== {name} batch {batch}: {label}, {total:.1f} us of kernels per step")
                print(f"{'kernel':<70} {'per step':>8} {'us':>8} {'%':>6}")
                for k, us in sorted(per_step.items(), key=lambda kv: -kv[1]):
                    calls = len(times[k]) / args.steps
                    print(f"{k[:70]:<70} {calls:8.2f} {us:8.1f} {100 * us / total:6.1f}")
                    rows.append({"model": name, "batch": batch, "side": label, "kernel": k, "launches_per_step": calls,
                                 "us_per_step": round(us, 3), "share": round(us / total, 4)})
                if seq:
                    seq.sort()
                    per = len(seq) // args.steps
                    print(f"-- the last step, {per} launches in order")
                    for _, k, us in seq[-per:]:
                        print(f"   {k[:70]:<70} {us:8.1f}")
            print(f"\n{name} batch {batch}: kernel time per step, " +
                  ", ".join(f"{label} {us:.1f} us" for label, us in totals.items()))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "kernel_breakdown.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["model"])
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
