"""Winograd backward-weights on the GPU: tile configs x split counts of the t reduction, against the
implicit-GEMM weight gradient and cuDNN (TF32 off), on the conv suite's 3x3 stride-1 layers. Prints one table
per layer (median of CUDA-event timings) and the plan ``conv.winograd.weights_plan`` picks, so the chooser can
be checked against the sweep:

    python3 lab/conv/winograd_wgrad_sweep.py [--reps 20]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root

LAYERS = [  # (N, C, H, W, K, pad): the harness conv suite's 3x3 stride-1 rows with >= 16 channels
    (64, 256, 28, 28, 256, 1), (128, 256, 14, 14, 256, 1), (128, 128, 16, 16, 128, 1),
    (128, 64, 32, 32, 64, 1), (256, 64, 56, 56, 64, 1), (33, 17, 29, 31, 45, 1),
]
SPLITS = (1, 2, 4, 8, 16, 32)


def median_ms(fn, reps):
    import cupy

    fn()
    times = []
    for _ in range(reps):
        a, b = cupy.cuda.Event(), cupy.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cupy.cuda.get_elapsed_time(a, b))
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    import cupy
    import torch

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import winograd

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    sms = runtime.sm_count()
    for N, C, H, Wd, K, pad in LAYERS:
        x = cupy.asarray(rng.standard_normal((N, C, H, Wd), dtype=np.float32))
        dy = cupy.asarray(rng.standard_normal((N, K, H, Wd), dtype=np.float32))
        W = cupy.empty((K, C, 3, 3), np.float32)  # its shape is all conv2d_backward reads with need_dx=False
        dW = cupy.empty((K, C, 3, 3), np.float32)
        flop = 2.0 * N * K * C * 9 * H * Wd
        tx, tdy = torch.as_tensor(x, device="cuda"), torch.as_tensor(dy, device="cuda")
        t_cudnn = median_ms(lambda: torch.nn.grad.conv2d_weight(tx, (K, C, 3, 3), tdy, padding=pad), args.reps)
        ws = cupy.empty((max(conv.conv2d_workspace_size(x.shape, (K, C, 3, 3), 1, pad),
                             winograd.workspace_size(x.shape, (K, C, 3, 3), 1, pad, "backward_weights") * 8),),
                        np.float32)
        def implicit_gemm():
            return conv.conv2d_backward(dy, x, W, 1, pad, need_dx=False, dW=dW, need_db=False, workspace=ws,
                                        weights_algo="implicit_gemm")[1]

        t_ig = median_ms(implicit_gemm, args.reps)
        ref = winograd.backward_weights(dy, x, None, pad, workspace=ws).get()
        ig = implicit_gemm().get()
        rel = float(np.abs(ref - ig).max() / np.abs(ig).max())
        Tp = -(-N * -(-H // 2) * -(-Wd // 2) // 4) * 4
        plan = winograd.weights_plan(K, C, Tp, sms)
        t_plan = median_ms(lambda: winograd.backward_weights(dy, x, dW, pad, workspace=ws), args.reps)
        print(f"\nN{N} C{C} {H}x{Wd} K{K} pad {pad}: cuDNN {t_cudnn:.3f} ms, implicit GEMM {t_ig:.3f} ms, "
              f"winograd plan {plan[0].name} splits {plan[2]} {t_plan:.3f} ms (cuDNN/ours {t_cudnn / t_plan:.2f}, "
              f"{flop / t_plan / 1e9:.1f} direct TFLOP/s), max|wino - implicit GEMM|/max|implicit GEMM| {rel:.1e}")
        print("config          " + " ".join(f"{'s=' + str(s):>8}" for s in SPLITS))
        for cfg in winograd.CANDIDATES:
            row = []
            for s in SPLITS:
                try:
                    t = median_ms(lambda: winograd.backward_weights(dy, x, dW, pad, workspace=ws, config=cfg,
                                                                    splits=s), args.reps)
                    row.append(f"{t:8.3f}")
                except ValueError:
                    row.append(f"{'-':>8}")
            print(f"{cfg.name:15s} " + " ".join(row))
        del x, dy, ws, tx, tdy
        cupy.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
