"""Which operand order OpenBLAS runs fastest for the CPU convolution's two backward GEMMs, per zoo layer.

    python3 lab/cpu/conv_gemm_orientation.py [--batches 64,256] [--reps 15]

For each convolution of lenet-mnist, cnn-cifar and digits-cnn (shapes from the spec) it times, in
interleaved rounds, with the product's operand layouts (cols (C*R*S + 1, L) and dY2 (K, L) C-contiguous):
    weights  "dy@colsT": dY2 @ cols^T -> (K, C*R*S + 1)     "cols@dyT": cols @ dY2^T -> (C*R*S + 1, K)
    data     "WT@dy": W2^T @ dY2 (W2^T a transposed view)   "WTc@dy": the same with W2^T copied first
and prints the median ms and GFLOP/s of each. Both weight orders give the same sums (each output is a dot
product over L; OpenBLAS's blocking may order the additions differently, so they agree to float32 rounding).
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


def conv_shapes(batch: int):
    """(model, index, K, C*R*S, L) for every convolution of the three CNNs."""
    import modelspec
    from custom_impl.cpu.conv import out_size

    for name in ("lenet-mnist", "cnn-cifar", "digits-cnn"):
        for layer in modelspec.load(name).layers:
            if layer.type == "conv2d":
                c, h, w = layer.in_shape
                p, q = out_size(h, w, layer.kernel_size, layer.stride, layer.padding)
                crs = c * layer.kernel_size[0] * layer.kernel_size[1]
                yield name, layer.index, layer.out_channels, crs, batch * p * q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        for name, index, k, crs, n in conv_shapes(batch):
            cols = rng.standard_normal((crs + 1, n), dtype=np.float32)
            dy2 = rng.standard_normal((k, n), dtype=np.float32)
            W2 = rng.standard_normal((k, crs), dtype=np.float32)
            dWb = np.empty((k, crs + 1), np.float32)
            dWbT = np.empty((crs + 1, k), np.float32)
            dcols = np.empty((crs, n), np.float32)
            variants = {
                "dy@colsT": lambda: np.matmul(dy2, cols.T, out=dWb),
                "cols@dyT": lambda: np.matmul(cols, dy2.T, out=dWbT),
                "WT@dy": lambda: np.matmul(W2.T, dy2, out=dcols),
                "WTc@dy": lambda: np.matmul(np.ascontiguousarray(W2.T), dy2, out=dcols),
            }
            times = {v: [] for v in variants}
            for fn in variants.values():
                fn()
            for _ in range(args.reps):
                for v, fn in variants.items():
                    t = time.perf_counter()
                    fn()
                    times[v].append(time.perf_counter() - t)
            flop = 2.0 * k * crs * n
            row = "  ".join(f"{v} {statistics.median(ts) * 1e3:7.3f} ms {flop / statistics.median(ts) / 1e9:5.0f} GF/s"
                            for v, ts in times.items())
            print(f"{name:<12} conv {index} N={batch:<4} K={k:<4} CRS={crs:<4} L={n:<7} {row}", flush=True)


if __name__ == "__main__":
    main()
