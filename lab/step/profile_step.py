"""Where a custom GPU train step spends its time: each layer's forward and backward timed on its own.

    python3 lab/step/profile_step.py --models lenet-mnist,cnn-cifar --batches 1,1024 [--out DIR]

For each model and batch size: the whole train step of our GPU model (its own CUDA graph, after three
steps: eager, capture, replay) and its forward_backward alone, timed with CUDA events as the harness times
a row; PyTorch's CUDA-graph step (``train_step_graphed``) beside it; then every layer's forward and backward
through the public layer ops (``lab/common/layers.py``), each captured ``--reps`` times in one CUDA graph
and the replays timed. The sum of the layer parts is printed next to the whole step, so the gap (loss,
SGD update, and what the model fuses or caches beyond the layer ops) can be placed.

Per-part times include ~1 us of graph overhead per kernel, as the whole step does. Output: a table on
stdout and ``DIR/profile_step.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, modelspec, reference_impl, lab.common

import numpy as np  # noqa: E402

from lab.common.layers import layer_calls  # noqa: E402
from lab.common.timing import graph_time_ms  # noqa: E402

LR, MOMENTUM = 0.01, 0.9


def event_ms(fn, events, elapsed, sync, calls: int = 15) -> float:
    """Median ms of ``calls`` single calls of ``fn``, each between two events made by ``events()``."""
    for _ in range(3):
        fn()
    sync()
    start, end = events(), events()
    times = []
    for _ in range(calls):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
    return statistics.median(times)


def profile(name: str, batch: int, reps: int) -> list[dict]:
    import cupy
    import torch

    import custom_impl
    import modelspec
    import reference_impl

    spec = modelspec.load(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=batch)

    m = custom_impl.build(spec, device="gpu", seed=0)
    xb, yb = m.device_batch(x, y)
    ours = (cupy.cuda.Event, cupy.cuda.get_elapsed_time, cupy.cuda.Device().synchronize)
    whole = event_ms(lambda: m.train_step(xb, yb, LR, MOMENTUM), *ours)
    fwd_bwd = event_ms(lambda: m.forward_backward(xb, yb), *ours)

    ref = reference_impl.build(spec, device="gpu", seed=0)
    tx, ty = ref.device_batch(x, y)
    torch_graph = event_ms(lambda: ref.train_step_graphed(tx, ty, LR, MOMENTUM),
                           lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b),
                           torch.cuda.synchronize)

    rows = []
    for label, phase, call in layer_calls(spec, batch, "gpu"):
        rows.append(dict(model=name, batch=batch, part=label, phase=phase, ms=graph_time_ms(call, reps)))
    parts = sum(r["ms"] for r in rows)
    rows.append(dict(model=name, batch=batch, part="SUM OF LAYER PARTS", phase="", ms=parts))
    rows.append(dict(model=name, batch=batch, part="forward_backward", phase="", ms=fwd_bwd))
    rows.append(dict(model=name, batch=batch, part="whole step (graph)", phase="", ms=whole))
    rows.append(dict(model=name, batch=batch, part="torch step (graph)", phase="", ms=torch_graph))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet-mnist,cnn-cifar")
    ap.add_argument("--batches", default="1,1024")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/profile_step"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            got = profile(name, batch, args.reps)
            rows += got
            print(f"\n{name} batch {batch}")
            for r in got:
                print(f"  {r['part']:22s} {r['phase']:9s} {r['ms'] * 1e3:10.1f} us")
    with open(os.path.join(args.out, "profile_step.csv"), "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
