"""Our NumPy CPU train step against PyTorch's CPU train step (eager), same models, data and settings.

    python3 lab/cpu/train_step_bench.py [--models lenet-mnist,cnn-cifar,digits-cnn] [--batches 64,256]
                                        [--steps 21] [--warmup 5] [--rounds 3]

Both models are built with seed 0 and step on the same random batch (SGD, lr 0.01, momentum 0.9).
Per model and batch the two implementations take turns (``--rounds`` rounds of ``--steps`` timed steps
each, after ``--warmup`` untimed ones), so a slow spell of the machine hits both. Printed per row: the
median ms per step over all timed steps, the interquartile range, and the ratio torch / ours (above 1:
ours is faster). ``OPENBLAS_THREAD_TIMEOUT=4`` is set as the harness sets it (read when NumPy loads).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # as the harness sets it

import numpy as np  # noqa: E402


def _step_ms(model, xb, yb, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        model.train_step(xb, yb, 0.01, 0.9)
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_step(xb, yb, 0.01, 0.9)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _quartiles(v: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return q1, statistics.median(v), q3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lenet-mnist,cnn-cifar,digits-cnn")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--steps", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    import custom_impl
    import modelspec
    import reference_impl

    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores, OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']}")
    print(f"{'model':<12} {'batch':>5} {'ours ms':>9} {'(IQR)':>13} {'torch ms':>9} {'(IQR)':>13} "
          f"{'torch/ours':>10}")
    for name in args.models.split(","):
        spec = modelspec.load(name)
        for batch in (int(b) for b in args.batches.split(",")):
            rng = np.random.default_rng(1)
            x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
            y = rng.integers(0, spec.num_classes, size=batch)
            models = {"ours": custom_impl.build(spec, device="cpu", seed=0),
                      "torch": reference_impl.build(spec, "cpu", seed=0)}
            batches = {k: m.device_batch(x, y) for k, m in models.items()}
            times: dict[str, list[float]] = {k: [] for k in models}
            for _ in range(args.rounds):
                for k, m in models.items():
                    times[k] += _step_ms(m, *batches[k], args.steps, args.warmup)
            (oq1, om, oq3), (tq1, tm, tq3) = _quartiles(times["ours"]), _quartiles(times["torch"])
            print(f"{name:<12} {batch:>5} {om:>9.2f} {f'({oq1:.2f}-{oq3:.2f})':>13} {tm:>9.2f} "
                  f"{f'({tq1:.2f}-{tq3:.2f})':>13} {tm / om:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
