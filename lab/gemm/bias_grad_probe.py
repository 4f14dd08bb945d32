"""The dense layer's bias gradient db = dy.sum(0) four ways, GPU time per call (CUDA events over back-to-back
calls) and error against float64: the product's ``dense.bias_grad`` (kernel ``dense_bias_grad``) with the
rows split over blocks as ``dense.bias_splits`` plans and, as before that split, with one block per 32
columns (``splits=1``: a narrow layer's whole reduction on one SM), the FP32 GEMM dy^T @ ones (``gemm.gemm``
with trans_a, tuned: split-K spreads the rows over many blocks), and torch.

    python3 lab/gemm/bias_grad_probe.py [--shapes 22400x29,8192x10,...]

Why: the dense suite's worst row, the weight gradient of DeepSpeech 2's 29-wide layer at 22,400 frames
(dW + db), took 188 us against cuBLAS + torch's 125, while its dW GEMM alone takes 105 us of GPU time
(``lab/gemm/thin_probe.py``): the rest is db and the host.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

SHAPES = "22400x29,5600x29,8192x10,8192x128,8192x1024,1024x10,64x10,64x1024"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated NxU (rows x columns of dy)")
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args(argv)

    import cupy
    import torch

    from custom_impl.gpu import dense, gemm, runtime

    rng = np.random.default_rng(0)
    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()

    def gpu_us(fn):
        fn()
        ev0.record()
        for _ in range(args.calls):
            fn()
        ev1.record()
        ev1.synchronize()
        return cupy.cuda.get_elapsed_time(ev0, ev1) * 1e3 / args.calls

    print(f"{'dy':>12s} {'splits':>6s} {'bias_grad us':>13s} {'1 split us':>11s} {'gemm us':>9s} {'torch us':>9s}"
          "   max rel err (bias_grad, 1 split, gemm)")
    for text in args.shapes.split(","):
        N, U = (int(v) for v in text.split("x"))
        dy = cupy.asarray(rng.standard_normal((N, U), dtype=np.float32))
        ref = cupy.asnumpy(dy).astype(np.float64).sum(0)
        scale = float(np.abs(cupy.asnumpy(dy).astype(np.float64)).sum(0).max())
        db = cupy.empty((U,), np.float32)
        db2 = cupy.empty((U, 1), np.float32)
        ones = cupy.ones((N, 1), np.float32)
        dyt = torch.as_tensor(dy)
        t_bias = gpu_us(lambda: dense.bias_grad(dy, db))
        err_bias = float(np.abs(cupy.asnumpy(db) - ref).max()) / scale
        t_one = gpu_us(lambda: dense.bias_grad(dy, db, splits=1))
        err_one = float(np.abs(cupy.asnumpy(db) - ref).max()) / scale
        t_gemm = gpu_us(lambda: gemm.gemm(dy, ones, db2, trans_a=True))
        err_gemm = float(np.abs(cupy.asnumpy(db2)[:, 0] - ref).max()) / scale
        t_torch = gpu_us(lambda: dyt.sum(0))
        splits = dense.bias_splits(N, U, runtime.sm_count())[1]
        print(f"{text:>12s} {splits:6d} {t_bias:13.1f} {t_one:11.1f} {t_gemm:9.1f} {t_torch:9.1f}"
              f"   {err_bias:.1e}, {err_one:.1e}, {err_gemm:.1e}")


if __name__ == "__main__":
    main()
