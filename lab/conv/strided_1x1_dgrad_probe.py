"""Backward-data of a strided 1x1 convolution as a stride-1 one plus a scatter, against "auto" and cuDNN.

A 1x1 conv with stride (sh, sw) and no padding reads x only at h = p*sh, w = q*sw, so its input gradient is
zero elsewhere and, at those pixels, the backward-data of a 1x1 stride-1 conv over an (N, C, P, Q) input:

    dxc = conv2d_backward_data(dy, W, (N, C, P, Q), stride 1, padding 0)     # one GEMM, C x N*P*Q over K
    dx = 0;  dx[:, :, ::sh, ::sw] = dxc

The implicit GEMM runs it as one GEMM per stride phase, without split-K (implicit_gemm.data_plan), and
writes dx at stride sw along w; on the H100 (2026-12-06, the networks suite) such rows ran at 0.35-0.42 of
cuDNN (1x1/2 256->512 at 56x56, N=64: 1.45 ms against 0.51). This probe times the decomposition (the
stride-1 call takes every plan the product has for it, split-K included), checks it against PyTorch in
float64, and prints a table. The decomposition is now the product's "strided_1x1" algorithm
(custom_impl/gpu/conv/strided_1x1.py); the GPU table times it by name beside the implicit GEMM, "auto"
and cuDNN.

    python3 lab/conv/strided_1x1_dgrad_probe.py              # GPU: the networks suite's strided 1x1 rows
    python3 lab/conv/strided_1x1_dgrad_probe.py --cpu-check  # CPU: the decomposition's result only
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab

import numpy as np  # noqa: E402
import torch  # noqa: E402

import custom_impl  # noqa: E402
from lab.common.timing import eager_time_ms as _time  # noqa: E402

# (N, C, H, W, K, stride): ResNet-50's 1x1 stride-2 downsample shortcuts (the networks suite)
SHAPES = [
    (16, 256, 56, 56, 512, 2), (64, 256, 56, 56, 512, 2),
    (16, 512, 28, 28, 1024, 2), (64, 512, 28, 28, 1024, 2),
    (16, 1024, 14, 14, 2048, 2), (64, 1024, 14, 14, 2048, 2),
]


def decomposed(ops, xp, dy, W, x_shape, stride, dx=None):
    """dx of a 1x1 conv with ``stride`` and no padding, through a stride-1 backward-data and a scatter."""
    N, C, H, Wd = x_shape
    sh, sw = stride
    P, Q = dy.shape[2:]
    dxc = ops.conv2d_backward_data(dy, W, (N, C, P, Q), 1, 0)
    if dx is None:
        dx = xp.empty(x_shape, dtype=xp.float32)
    dx.fill(0)
    dx[:, :, : P * sh : sh, : Q * sw : sw] = dxc
    return dx


def _reference64(dy, W, x_shape, stride):
    dy64 = torch.from_numpy(np.asarray(dy, np.float64))
    W64 = torch.from_numpy(np.asarray(W, np.float64))
    return torch.nn.grad.conv2d_input(x_shape, W64, dy64, stride, 0).numpy()


def _data(shape, seed=0):
    N, C, H, Wd, K, s = shape
    P, Q = (H - 1) // s + 1, (Wd - 1) // s + 1
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
    W = (rng.standard_normal((K, C, 1, 1), dtype=np.float32) / np.float32(np.sqrt(K)))
    return dy, W, (N, C, H, Wd), (s, s)


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def cpu_check() -> None:
    ops = custom_impl.layer_ops("cpu")
    for shape in [(3, 5, 9, 11, 7, 2), (2, 4, 8, 8, 6, 3), (1, 3, 7, 10, 4, 2)]:
        dy, W, x_shape, stride = _data(shape)
        got = decomposed(ops, np, dy, W, x_shape, stride)
        want = _reference64(dy, W, x_shape, stride)
        err = _rel(got, want)
        print(f"{shape}: rel err {err:.3g}")
        assert err < 1e-5, shape     # float32 sums of K <= 7 products: ~1e-7


def gpu_probe() -> None:
    """The product's implicit GEMM and its "strided_1x1" algorithm (the decomposition above, with a fused
    zero-and-scatter kernel) by name, "auto" (which times both), and cuDNN."""
    import cupy

    ops = custom_impl.layer_ops("gpu")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print("| shape (N, C, HxW, K, stride) | implicit_gemm ms | strided_1x1 ms | auto ms (algorithm) | cuDNN ms | rel err |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in SHAPES:
        dy, W, x_shape, stride = _data(shape)
        gdy, gW = cupy.asarray(dy), cupy.asarray(W)
        dx = cupy.empty(x_shape, dtype=cupy.float32)
        ms = {algo: _time(lambda: ops.conv2d_backward_data(gdy, gW, x_shape, stride, 0, dx=dx, algo=algo))
              for algo in ("implicit_gemm", "strided_1x1", "auto")}
        chosen = ops.conv2d_algorithm("backward_data", x_shape, W.shape, stride, 0)
        got = cupy.asnumpy(ops.conv2d_backward_data(gdy, gW, x_shape, stride, 0, algo="strided_1x1"))
        err = _rel(got, _reference64(dy, W, x_shape, stride))
        tdy, tW = torch.from_numpy(dy).cuda(), torch.from_numpy(W).cuda()
        ref = _time(lambda: torch.nn.grad.conv2d_input(x_shape, tW, tdy, stride, 0))
        N, C, H, Wd, K, s = shape
        print(f"| {N}, {C}, {H}x{Wd}, {K}, {s} | {ms['implicit_gemm']:.3f} | {ms['strided_1x1']:.3f} | "
              f"{ms['auto']:.3f} ({chosen}) | {ref:.3f} | {err:.2g} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-check", action="store_true", help="check the decomposition on the CPU, time nothing")
    args = ap.parse_args()
    cpu_check() if args.cpu_check else gpu_probe()


if __name__ == "__main__":
    main()
