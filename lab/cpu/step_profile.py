"""Our NumPy train step on the CPU, layer by layer, next to PyTorch's CPU step, under several thread settings.

    python3 dev/cpu_step_profile.py [--models lenet-mnist,cnn-cifar] [--batches 64,256]
                                    [--settings "16,16;8,16;16,8"] [--steps 10] [--gpu-first]

A setting is "COPY_THREADS,BLAS_THREADS": ``CUSTOM_CPU_THREADS`` (our copy threads) and ``OPENBLAS_NUM_THREADS``;
each runs in a fresh process, since OpenBLAS reads its thread count when NumPy loads, with
``OPENBLAS_THREAD_TIMEOUT=4`` as the harness sets it. Per model and batch it prints the median step time of
ours and of PyTorch's CPU step (torch's own threads), then our per-layer forward / backward times (medians of
``--steps`` steps run layer by layer with a perf_counter around each call). ``--gpu-first``: each process first
makes CUDA contexts in CuPy and PyTorch and runs a few GPU train steps of both, as a ``harness targets``
process has before its CPU rows (run ``python3 dev/warm_kernels.py`` first on a fresh machine: compiling the
kernels inside each process took longer than the 150 s one probe had).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_times(model, x, y, steps: int, warmup: int = 3) -> list:
    """Seconds of each of ``steps`` train steps (lr 0.01, momentum 0.9) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        model.train_step(x, y, 0.01, 0.9)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_step(x, y, 0.01, 0.9)
        times.append(time.perf_counter() - t)
    return times


def _gpu_first() -> None:
    import numpy as np

    import custom_impl
    import reference_impl

    rng = np.random.default_rng(2)
    for impl in (custom_impl, reference_impl):
        m = impl.build("lenet-mnist", device="gpu", seed=0)
        x = rng.standard_normal((64, *m.spec.input_shape)).astype(np.float32)
        y = rng.integers(0, m.spec.num_classes, size=64)
        for _ in range(5):
            m.train_step(x, y, 0.01, 0.9)
    print("  (GPU contexts made, 5 GPU steps of each run first)", flush=True)


def _child(models, batches, steps, gpu_first) -> None:
    sys.path.insert(0, ROOT)
    import numpy as np

    import custom_impl
    import reference_impl

    if gpu_first:
        _gpu_first()

    for name in models:
        for batch in batches:
            ours, ref = custom_impl.build(name, seed=0), reference_impl.build(name, seed=0)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((batch, *ours.spec.input_shape)).astype(np.float32)
            y = rng.integers(0, ours.spec.num_classes, size=batch)
            times = {"ours": step_times(ours, x, y, steps), "torch": step_times(ref, x, y, steps)}
            layers: dict[str, list] = {}

            def timed(key, fn):
                t = time.perf_counter()
                out = fn()
                layers.setdefault(key, []).append(time.perf_counter() - t)
                return out

            for _ in range(steps):
                h = x
                for i, layer in enumerate(ours.layers):
                    h = timed(f"{i}:{layer.layer.type} fwd", lambda: layer.forward(h, True))
                _, d = timed("loss", lambda: ours._loss(h, y))
                for i in reversed(range(len(ours.layers))):
                    layer = ours.layers[i]
                    d = timed(f"{i}:{layer.layer.type} bwd", lambda: layer.backward(d))
                    if d is None:
                        break
                timed("sgd", lambda: ours._sgd(0.01, 0.9))
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            print(f"  {name} batch {batch}: ours {med['ours']:.2f} ms, torch {med['torch']:.2f} ms, "
                  f"torch/ours {med['torch'] / med['ours']:.2f}", flush=True)
            parts = "  ".join(f"{k} {float(np.median(v)) * 1e3:.2f}" for k, v in layers.items())
            print(f"    layers (ms): {parts}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lenet-mnist,cnn-cifar")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--settings", default="16,16;8,16;16,8;8,8")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gpu-first", action="store_true", help="run GPU train steps first, as harness targets does")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    if args.child:
        _child(models, batches, args.steps, args.gpu_first)
        return 0
    for setting in args.settings.split(";"):
        copy_threads, blas_threads = (s.strip() for s in setting.split(","))
        env = dict(os.environ, CUSTOM_CPU_THREADS=copy_threads, OPENBLAS_NUM_THREADS=blas_threads,
                   OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT", "4"))
        print(f"=== copy threads {copy_threads}, BLAS threads {blas_threads}", flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--models", args.models,
                        "--batches", args.batches, "--steps", str(args.steps)] + ["--gpu-first"] * args.gpu_first, env=env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
