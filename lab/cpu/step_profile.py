"""Our NumPy train step on the CPU, layer by layer, next to PyTorch's CPU step, under several thread settings.

    python3 lab/cpu/step_profile.py [--models lenet-mnist,cnn-cifar] [--batches 64,256]
                                    [--settings "16,16;8,16;16,8"] [--steps 10] [--gpu-first]

A setting is "COPY_THREADS,BLAS_THREADS": ``CUSTOM_CPU_THREADS`` (our copy threads) and ``OPENBLAS_NUM_THREADS``;
each runs in a fresh process, since OpenBLAS reads its thread count when NumPy loads, with
``OPENBLAS_THREAD_TIMEOUT=4`` as the harness sets it. Per model and batch it prints the median step time of
ours and of PyTorch's CPU step (torch's own threads), then per-layer forward / backward times of the CPU layer
ops (``lab/common/layers.py``; medians of ``--steps`` rounds with a perf_counter around each call; the model's
step may use faster internal paths, such as im2col columns saved by forward). ``--gpu-first``: each process
first makes CUDA contexts in CuPy and PyTorch and runs a few GPU train steps of both, as a ``harness targets``
process may have before its CPU rows; the kernels are compiled up front, in parallel
(``runtime.precompile``), so no process spends its time compiling.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gpu_first() -> None:
    import numpy as np

    import custom_impl
    import reference_impl

    rng = np.random.default_rng(2)
    from custom_impl.gpu import runtime

    runtime.precompile(progress=print)
    for impl in (custom_impl, reference_impl):
        m = impl.build("lenet-mnist", device="gpu", seed=0)
        x = rng.standard_normal((64, *m.spec.input_shape)).astype(np.float32)
        y = rng.integers(0, m.spec.num_classes, size=64)
        xb, yb = m.device_batch(x, y)
        for _ in range(5):
            m.train_step(xb, yb, 0.01, 0.9)
    print("  (GPU contexts made, 5 GPU steps of each run first)", flush=True)


def _child(models, batches, steps, gpu_first) -> None:
    sys.path.insert(0, ROOT)  # the repository root: custom_impl, reference_impl, lab.common
    import numpy as np

    import custom_impl
    import reference_impl
    from lab.common.layers import layer_calls
    from lab.common.timing import step_times

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
            calls = layer_calls(ours.spec, batch, "cpu")
            for _ in range(steps):
                for label, phase, call in calls:
                    t = time.perf_counter()
                    call()
                    key = f"{label} {'fwd' if phase == 'forward' else 'bwd'}"
                    layers.setdefault(key, []).append(time.perf_counter() - t)
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
