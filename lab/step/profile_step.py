"""Where a custom GPU train step spends its time: each step's forward and backward timed on its own.

    python3 dev/profile_step.py --models lenet-mnist,cnn-cifar --batches 1,1024 [--out DIR]

For each model and batch size it builds our GPU model, runs two train steps (eager, then captured, so
every plan, split-K workspace and cached kernel choice is the one the graph uses), then for every step
of the network captures a CUDA graph of ``--reps`` back-to-back calls of that step's forward (and, where
the train step runs it, its backward) and times its replays with CUDA events. The sum of the parts is
printed next to the whole graphed train step and PyTorch's CUDA-graph step, so the gap can be placed.

Per-part times include ~1 us of graph overhead per kernel, as the whole step does. Loss and SGD are one
part each. Output: a table on stdout and ``DIR/profile_step.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


def graph_time_ms(fn, reps: int = 20, samples: int = 7) -> float:
    """Median ms per call of ``fn`` captured ``reps`` times in one CUDA graph and replayed."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        fn()  # outside the capture: anything lazily compiled or chosen happens here
        stream.synchronize()
        stream.begin_capture()
        try:
            for _ in range(reps):
                fn()
        finally:
            graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        times = []
        for _ in range(samples):
            start.record(stream)
            graph.launch(stream)
            end.record(stream)
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) / reps)
    return float(np.median(times))


def profile(name: str, batch: int, reps: int) -> list[dict]:
    import cupy
    import torch

    import modelspec
    import reference_impl
    from custom_impl.gpu import model as gmodel
    from custom_impl.gpu.loss import loss_forward_backward

    spec = modelspec.load(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=batch)
    m = gmodel.build(spec, seed=0)
    xg = cupy.asarray(x)
    for _ in range(3):
        m.train_step(xg, y, lr=0.01, momentum=0.9)
    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(15):  # as the harness times it: the call, input copies included
        start.record()
        m.train_step(xg, y, lr=0.01, momentum=0.9)
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    whole = float(np.median(times))

    ref = reference_impl.build(spec, device="gpu", seed=0)
    tx = torch.as_tensor(x, device="cuda")
    ty = torch.as_tensor(y, device="cuda")
    for _ in range(3):
        ref.train_step_graphed(tx, ty, lr=0.01, momentum=0.9)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(15):
        start.record()
        ref.train_step_graphed(tx, ty, lr=0.01, momentum=0.9)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    torch_graph = float(np.median(times))

    rows = []
    with m._launch_cost():
        plan = m._plan(batch)
        for i, step in enumerate(m.steps):
            label = f"{i}:{step.kind}"
            t = graph_time_ms(lambda: step.forward(m, plan.acts[i], plan.acts[i + 1], plan.saved[i], plan.ws), reps)
            rows.append(dict(model=name, batch=batch, part=label, phase="forward", ms=t))
            if step.weight is None and not step.needs_dx:
                continue
            t = graph_time_ms(lambda: step.backward(m, plan.dacts[i + 1], plan.acts[i], plan.acts[i + 1],
                                                    plan.saved[i], plan.dacts[i], plan.ws), reps)
            rows.append(dict(model=name, batch=batch, part=label, phase="backward", ms=t))
        t = graph_time_ms(lambda: loss_forward_backward(spec.loss, plan.acts[-1], plan.labels, dz=plan.dacts[-1],
                                                        loss=plan.loss, per_sample=plan.per_sample), reps)
        rows.append(dict(model=name, batch=batch, part="loss", phase="fwd+bwd", ms=t))
        t = graph_time_ms(lambda: m._sgd(0.01, 0.9), reps)
        rows.append(dict(model=name, batch=batch, part="sgd", phase="update", ms=t))
    parts = sum(r["ms"] for r in rows)
    rows.append(dict(model=name, batch=batch, part="SUM OF PARTS", phase="", ms=parts))
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
