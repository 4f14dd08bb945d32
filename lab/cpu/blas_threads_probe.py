"""How many BLAS threads each matrix product of our CPU train step wants: every GEMM shape of the zoo's
dense and conv layers, timed through NumPy at several OpenBLAS thread counts, beside PyTorch's matmul.

    python3 lab/cpu/blas_threads_probe.py [--models lenet-mnist,cnn-cifar,mlp-deep,mlp-mnist] [--batches 64,256]
                                          [--threads 1,2,4,8,16] [--reps 7]

Why: on the H100 host's 16-core Xeon our NumPy step trails PyTorch's CPU step most on the GEMM-heavy models
(mlp-deep 0.59-0.64, lenet-mnist 0.26-0.31; `docs/results.md`), while on 2-core machines it leads. OpenBLAS
runs every product on all its threads; a product with a short side (a batch of 64, 32 conv channels) may
run faster on fewer. Per shape this prints the median time at each thread count (set through threadpoolctl,
which calls OpenBLAS's own setter), the best count, the time at all threads, and torch.matmul's time on the
same operands (its own threads: MKL or oneDNN on x86). The last lines sum each model's products per step:
at all threads, at the best count per shape (what choosing the count per shape could save), and torch's.
The operands are laid out as the layers lay them out: conv forward W2 (K, CRS+1) @ cols (CRS+1, L), weight
gradient dY2 (K, L) @ cols^T, data gradient W2^T @ dY2; dense x @ W^T, dy^T @ x, dy @ W.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")       # as the harness sets it, read when NumPy loads

import numpy as np  # noqa: E402

from lab.common.timing import host_median_s as timed  # noqa: E402


def products(name: str, batch: int) -> list[tuple[str, tuple, tuple, bool, bool]]:
    """[(label, a shape as stored, b shape as stored, transpose a, transpose b)] of one train step's GEMMs."""
    import modelspec

    from custom_impl.cpu.conv import out_size

    spec = modelspec.load(name)
    shapes = spec.param_shapes()
    out = []
    first = True
    for layer in spec.layers:
        if layer.type == "dense":
            U, F = shapes[f"{layer.index}.weight"]
            out += [(f"{layer.index} dense fwd", (batch, F), (U, F), False, True),
                    (f"{layer.index} dense dW", (batch, U), (batch, F), True, False)]
            if not first:
                out.append((f"{layer.index} dense dx", (batch, U), (U, F), False, False))
            first = False
        elif layer.type == "conv2d":
            K, C, R, S = shapes[f"{layer.index}.weight"]
            P, Q = out_size(*layer.in_shape[1:], (R, S), tuple(layer.stride), tuple(layer.padding))
            L, crs = batch * P * Q, C * R * S + 1
            out += [(f"{layer.index} conv fwd", (K, crs), (crs, L), False, False),
                    (f"{layer.index} conv dW", (K, L), (crs, L), False, True)]
            if not first:
                out.append((f"{layer.index} conv dcols", (K, crs - 1), (K, L), True, False))
            first = False
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lenet-mnist,cnn-cifar,mlp-deep,mlp-mnist")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--threads", default="", help="comma-separated OpenBLAS thread counts (default: 1, 2, 4, ... "
                                                   "up to the usable cores, and the cores)")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    import torch
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(internal_api="openblas")
    if not blas.lib_controllers:
        sys.exit("blas_threads_probe: NumPy's BLAS here is not OpenBLAS; nothing to set")
    cores = len(os.sched_getaffinity(0))
    counts = ([int(v) for v in args.threads.split(",")] if args.threads
              else sorted({min(cores, 1 << i) for i in range(cores.bit_length() + 1)}))
    print(f"OpenBLAS {blas.lib_controllers[0].version}, {cores} usable cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); thread counts {counts}")
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"\n== {name}, batch {batch}")
            print(f"{'product':18s} {'a':>14s} {'b':>14s} " + " ".join(f"{f'{t} thr':>9s}" for t in counts)
                  + f" {'best':>5s} {'torch':>9s}   (ms)")
            total_all = total_best = total_torch = 0.0
            for label, a_shape, b_shape, ta, tb in products(name, batch):
                a = rng.standard_normal(a_shape, dtype=np.float32)
                b = rng.standard_normal(b_shape, dtype=np.float32)
                aa, bb = (a.T if ta else a), (b.T if tb else b)
                c = np.empty((aa.shape[0], bb.shape[1]), np.float32)
                times = {}
                for t in counts:
                    blas.limit(limits=t)
                    times[t] = timed(lambda: np.matmul(aa, bb, out=c), args.reps)
                blas.limit(limits=cores)
                ta_t, tb_t = torch.from_numpy(a), torch.from_numpy(b)
                at, bt = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
                ct = torch.empty((aa.shape[0], bb.shape[1]))
                t_torch = timed(lambda: torch.matmul(at, bt, out=ct), args.reps)
                best = min(times, key=times.get)
                total_all += times[max(counts)]
                total_best += times[best]
                total_torch += t_torch
                print(f"{label:18s} {str(a_shape):>14s} {str(b_shape):>14s} "
                      + " ".join(f"{times[t] * 1e3:9.3f}" for t in counts) + f" {best:5d} {t_torch * 1e3:9.3f}")
            print(f"per step: all {max(counts)} threads {total_all * 1e3:.2f} ms, best count per product "
                  f"{total_best * 1e3:.2f} ms, torch {total_torch * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
