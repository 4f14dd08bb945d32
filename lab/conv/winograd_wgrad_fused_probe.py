"""The fused F(5x5, 2x2) weight gradient (lab/conv/winograd_wgrad_fused.cu) on the 5x5 stride-1 layers, beside
cuDNN and the product's "patch" and "winograd" weight gradients: error against float64 and eager time.

    python3 lab/conv/winograd_wgrad_fused_probe.py [--shapes N,C,H,W,K,pad;...] [--waves 1,2]

Why: LeNet's conv2 weight gradient at batch 256 is the conv suite's worst row (0.676 of cuDNN in the targets
run of 2026-12-07, the patch kernel; docs/results.md). The product's F(5x5, 2x2) takes 0.265 ms there, most
of it moving its transform domain through global memory (docs/kernels.md); this kernel keeps it on chip.
Each shape runs with the grid filling ``--waves`` blocks per SM (one block of 384 threads fits an SM), and
the best of those is printed beside the references. Errors: max |ours - float64| / max |float64|.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from lab.conv.winograd_wgrad_fused_emulate import THREADS, Layout  # noqa: E402

# LeNet's conv2 at 256 and 64, GoogLeNet's 5x5 branches (networks suite), a ragged odd shape
SHAPES = "256,32,14,14,64,2;64,32,14,14,64,2;16,16,14,14,48,2;16,48,7,7,128,2;64,16,28,28,32,2;9,20,13,11,70,1"
FILE = "conv/winograd_wgrad_fused.cu"


def fused_launcher(x, dy, dW, pad: int, sms: int, waves: int):
    """(call, chunks) running the three kernels on CuPy arrays x (N, C, H, W), dy (N, K, P, Q) into dW."""
    import cupy

    from lab.common.kernels import lab_kernel

    N, C, H, W = x.shape
    K, P, Q = dy.shape[1:]
    tP, tQ = -(-P // 2), -(-Q // 2)
    fw_tq = max(8, -(-tQ // 4) * 4)
    smem = Layout(fw_tq).size * 4   # the kernel's shared-memory layout, as the CPU transliteration holds it
    defines = {"FW_TQ": fw_tq}
    partial = lab_kernel(FILE, "fw_wgrad_partial", defines, smem=smem)
    reduce_ = lab_kernel(FILE, "fw_reduce", defines)
    output = lab_kernel(FILE, "fw_output", defines)
    zblocks = -(-K // 64) * -(-C // 32)
    rows = N * tP
    want = max(1, waves * sms // (3 * zblocks))
    chunk = -(-rows // min(want, rows))
    chunks = -(-rows // chunk)
    part = cupy.empty((chunks * 36 * K * C,), np.float32)
    mt = cupy.empty((36 * K * C,), np.float32)
    i32 = np.int32
    args = (x, dy, part, i32(N), i32(C), i32(H), i32(W), i32(K), i32(P), i32(Q), i32(pad), i32(pad), i32(chunk))
    kc = K * C

    def call():
        partial((chunks, 3, zblocks), (THREADS,), args, shared_mem=smem)
        reduce_((-(-36 * kc // 256),), (256,), (part, mt, i32(kc), i32(chunks)))
        output((-(-kc // 128),), (128,), (mt, dW, i32(kc)))
    return call, chunks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=SHAPES, help="N,C,H,W,K,pad;... (5x5 kernels, stride 1)")
    ap.add_argument("--waves", default="1,2", help="blocks per SM the grid fills, each tried")
    args = ap.parse_args()

    import cupy
    import torch

    import custom_impl
    from custom_impl.gpu import runtime
    from lab.common.timing import eager_time_ms

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    ops = custom_impl.layer_ops("gpu")
    sms = runtime.sm_count()
    print("| shape (N, C, HxW, K, pad) | fused ms (chunks) | patch ms | winograd ms | cuDNN ms | cuDNN / fused "
          "| cuDNN / patch | err fused | err winograd | err cuDNN |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for text in args.shapes.split(";"):
        N, C, H, W, K, pad = (int(v) for v in text.split(","))
        rng = np.random.default_rng(N + C + K)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        P, Q = H + 2 * pad - 4, W + 2 * pad - 4
        dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
        want = torch.nn.grad.conv2d_weight(torch.from_numpy(x.astype(np.float64)), (K, C, 5, 5),
                                           torch.from_numpy(dy.astype(np.float64)), 1, pad).numpy()
        scale = float(np.abs(want).max())
        gx, gdy = cupy.asarray(x), cupy.asarray(dy)
        W0 = cupy.zeros((K, C, 5, 5), np.float32)

        def err(got) -> float:
            return float(np.abs(cupy.asnumpy(got) - want).max()) / scale

        best = None
        for waves in (int(v) for v in args.waves.split(",")):
            dW = cupy.full((K, C, 5, 5), np.nan, np.float32)
            call, chunks = fused_launcher(gx, gdy, dW, pad, sms, waves)
            call()
            e = err(dW)
            ms = eager_time_ms(call)
            if best is None or ms < best[0]:
                best = (ms, chunks, e)
        ms_fused, chunks, e_fused = best
        times, errs = {}, {}
        for algo in ("patch", "winograd"):
            out = cupy.empty((K, C, 5, 5), np.float32)

            def ours(algo=algo, out=out):
                ops.conv2d_backward(gdy, gx, W0, 1, pad, need_dx=False, dW=out, need_db=False, weights_algo=algo)
            try:
                ours()
            except ValueError:   # the algorithm cannot run this layer
                continue
            errs[algo] = err(out)
            times[algo] = eager_time_ms(ours)
        tx, tdy = torch.from_numpy(x).cuda(), torch.from_numpy(dy).cuda()
        ref = torch.nn.grad.conv2d_weight(tx, (K, C, 5, 5), tdy, 1, pad)
        e_cudnn = float(np.abs(ref.cpu().numpy() - want).max()) / scale
        ms_cudnn = eager_time_ms(lambda: torch.nn.grad.conv2d_weight(tx, (K, C, 5, 5), tdy, 1, pad))

        def fmt(d, k, f="{:.3f}"):
            return f.format(d[k]) if k in d else "-"
        print(f"| {N}, {C}, {H}x{W}, {K}, {pad} | {ms_fused:.3f} ({chunks}) | {fmt(times, 'patch')} | "
              f"{fmt(times, 'winograd')} | {ms_cudnn:.3f} | {ms_cudnn / ms_fused:.2f} | "
              + (f"{ms_cudnn / times['patch']:.2f}" if "patch" in times else "-")
              + f" | {e_fused:.1e} | {fmt(errs, 'winograd', '{:.1e}')} | {e_cudnn:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
