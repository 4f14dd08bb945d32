"""What bounds our NumPy conv layers against PyTorch's CPU convolutions: the GEMMs, or the copies around them.

    python3 lab/cpu/conv_gemm_bound.py [--models lenet-mnist,cnn-cifar,digits-cnn] [--batch 64] [--rounds 5]

For every conv layer of the models, at one batch size, three timings (median over ``--rounds`` rounds, the
three taking turns so a slow spell of the machine hits all of them):
- ours: the layer's forward and backward as the model's train step runs them (``conv2d_forward_cols`` then
  ``conv2d_backward_cols`` with kept buffers; no input gradient for a first layer);
- our GEMMs alone: the same three matrix products (forward, weight gradient, data gradient) with the same
  shapes and memory orders, through NumPy's BLAS; ours minus these is the im2col / col2im copy work;
- PyTorch: ``torch.nn.functional.conv2d`` forward and its autograd backward (oneDNN on x86).
Then the machine's BLAS ceiling: a 2048^3 float32 GEMM through NumPy and through PyTorch. Rates are
direct-convolution FLOPs (2 K C R S N P Q per phase) per second.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")       # as the harness sets it, read when NumPy loads

import numpy as np  # noqa: E402

from lab.common.timing import host_median_s as timed  # noqa: E402


def conv_cases(models, batch):
    """[(model, layer index, x shape, W shape, stride, padding)] of every conv layer of the models."""
    import modelspec

    out = []
    for name in models:
        spec = modelspec.load(name)
        for layer in spec.layers:
            if layer.type == "conv2d":
                out.append((name, layer.index, (batch, *layer.in_shape), spec.param_shapes()[f"{layer.index}.weight"],
                            tuple(layer.stride), tuple(layer.padding)))
    return out


def measure(case, rounds: int, reps: int = 3) -> dict:
    import torch

    from custom_impl.cpu import conv

    name, index, x_shape, w_shape, stride, padding = case
    rng = np.random.default_rng(index)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    W = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    p, q = conv.out_size(x_shape[2], x_shape[3], w_shape[2:], stride, padding)
    dy = rng.standard_normal((x_shape[0], w_shape[0], p, q), dtype=np.float32)
    need_dx = index > 0
    buffers: dict = {}

    def ours():
        _, cols = conv.conv2d_forward_cols(x, W, b, stride, padding, buffers)
        conv.conv2d_backward_cols(dy, cols, x_shape, W, stride, padding, need_dx, buffers)

    k, crs, L = w_shape[0], int(np.prod(w_shape[1:])), x_shape[0] * p * q
    cols = rng.standard_normal((crs + 1, L), dtype=np.float32)
    W2b = rng.standard_normal((k, crs + 1), dtype=np.float32)
    dy2 = rng.standard_normal((k, L), dtype=np.float32)
    y2, dwt, dcols = (np.empty(s, np.float32) for s in ((k, L), (crs + 1, k), (crs, L)))

    def gemms():      # the products ours runs, in its memory orders (custom_impl/cpu/conv.py)
        np.matmul(W2b, cols, out=y2)
        np.matmul(cols, dy2.T, out=dwt)
        if need_dx:
            np.matmul(W2b[:, :crs].T, dy2, out=dcols)

    tx = torch.from_numpy(x).requires_grad_(need_dx)
    tW, tb = torch.from_numpy(W).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
    tdy = torch.from_numpy(dy)
    inputs = (tx, tW, tb) if need_dx else (tW, tb)

    def pytorch():
        y = torch.nn.functional.conv2d(tx, tW, tb, stride, padding)
        torch.autograd.grad(y, inputs, tdy)

    got = {"ours": [], "gemms": [], "torch": []}
    for _ in range(rounds):
        for key, fn in (("ours", ours), ("gemms", gemms), ("torch", pytorch)):
            got[key].append(timed(fn, reps))
    flops = 2 * k * crs * L * (3 if need_dx else 2)
    res = {key: statistics.median(v) for key, v in got.items()}
    res["gflops"] = flops / 1e9
    return res


def blas_ceiling(n: int = 2048) -> tuple[float, float]:
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    c = np.empty_like(a)
    t_np = timed(lambda: np.matmul(a, a, out=c), 5)
    ta = torch.from_numpy(a)
    t_torch = timed(lambda: torch.matmul(ta, ta), 5)
    return 2 * n ** 3 / t_np / 1e9, 2 * n ** 3 / t_torch / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet-mnist,cnn-cifar,digits-cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import platform

    import torch

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); batch {args.batch}")
    print(f"{'layer':<18} {'GFLOP':>6} {'ours ms':>8} {'GEMMs ms':>9} {'copies ms':>9} {'GEMM GF/s':>9} "
          f"{'torch ms':>8} {'torch GF/s':>10} {'torch/ours':>10}")
    for case in conv_cases(args.models.split(","), args.batch):
        r = measure(case, args.rounds)
        print(f"{case[0] + ':' + str(case[1]):<18} {r['gflops']:6.3f} {r['ours'] * 1e3:8.2f} {r['gemms'] * 1e3:9.2f} "
              f"{(r['ours'] - r['gemms']) * 1e3:9.2f} {r['gflops'] / r['gemms']:9.0f} {r['torch'] * 1e3:8.2f} "
              f"{r['gflops'] / r['torch']:10.0f} {r['torch'] / r['ours']:10.2f}")
    np_rate, torch_rate = blas_ceiling()
    print(f"# 2048^3 float32 GEMM: NumPy's BLAS {np_rate:.0f} GFLOP/s, PyTorch's {torch_rate:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
