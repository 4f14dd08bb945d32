"""Every phase of DeepSpeech 2's many-tap layers by the "fft" algorithm, beside the implicit GEMM and cuDNN.

cuDNN runs these rows' backward-data at up to 230 TFLOP/s of direct-convolution work, 3.4x the FP32 FFMA
peak, so it uses an FFT; the implicit GEMM reaches ~20 (the networks suite, H100, 2026-12-07: 0.089-0.35 of
cuDNN); their forward is level at 22-25, their weight gradient at 0.73-0.78. This probe times "fft"
(custom_impl/gpu/conv/fft.py) and the implicit GEMM by name in all three phases, checks "fft" against PyTorch in float64, and prints a table.

    python3 lab/conv/fft_probe.py             # GPU: the networks suite's DeepSpeech 2 rows with >= 32 taps
    python3 lab/conv/fft_probe.py --quick     # GPU: the batch-16 rows only
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
from lab.common.timing import eager_time_ms  # noqa: E402

# (N, C, H, W, K, R, S, stride, padding): the networks suite's DeepSpeech 2 layers that "fft" fits
SHAPES = [
    (16, 32, 81, 350, 32, 21, 11, (2, 1), (10, 5)), (16, 32, 41, 350, 96, 21, 11, (2, 1), (10, 5)),
    (16, 32, 79, 341, 32, 5, 10, (2, 2), (0, 0)),
    (64, 32, 81, 350, 32, 21, 11, (2, 1), (10, 5)), (64, 32, 41, 350, 96, 21, 11, (2, 1), (10, 5)),
    (64, 32, 79, 341, 32, 5, 10, (2, 2), (0, 0)),
]


def _t(fn) -> float:
    return eager_time_ms(fn, reps=10, warm=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the batch-16 rows only")
    args = ap.parse_args()
    import cupy

    from custom_impl.gpu.conv import conv_dims, fft

    ops = custom_impl.layer_ops("gpu")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print("| shape (N, C, HxW, K, RxS, stride) | phase | transform | implicit_gemm ms | fft ms | cuDNN ms "
          "| cuDNN / fft | rel err |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in SHAPES[:3] if args.quick else SHAPES:
        N, C, H, Wd, K, R, S, stride, padding = shape
        x_shape = (N, C, H, Wd)
        dims = conv_dims(x_shape, (K, C, R, S), stride, padding)
        rng = np.random.default_rng(sum(shape[:7]))
        x = rng.standard_normal(x_shape, dtype=np.float32)
        dy = rng.standard_normal((N, K, dims.P, dims.Q), dtype=np.float32)
        W = rng.standard_normal((K, C, R, S), dtype=np.float32) / np.float32(np.sqrt(K * R * S))
        gx, gdy, gW = cupy.asarray(x), cupy.asarray(dy), cupy.asarray(W)
        tx, tdy, tW = torch.from_numpy(x).cuda(), torch.from_numpy(dy).cuda(), torch.from_numpy(W).cuda()
        W64 = torch.from_numpy(W.astype(np.float64))
        for phase in fft.PHASES:
            p = fft.plan(dims, phase)
            if phase == "backward_data":
                out = cupy.empty(x_shape, dtype=cupy.float32)

                def ours(algo):
                    return ops.conv2d_backward_data(gdy, gW, x_shape, stride, padding, dx=out, algo=algo)

                want = torch.nn.grad.conv2d_input(x_shape, W64, torch.from_numpy(dy.astype(np.float64)), stride,
                                                  padding).numpy()
                ref = _t(lambda: torch.nn.grad.conv2d_input(x_shape, tW, tdy, stride, padding))
            elif phase == "forward":
                out = cupy.empty(dy.shape, dtype=cupy.float32)

                def ours(algo):
                    return ops.conv2d_forward(gx, gW, None, stride, padding, out=out, algo=algo)

                want = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), W64, None, stride,
                                                  padding).numpy()
                ref = _t(lambda: torch.nn.functional.conv2d(tx, tW, None, stride, padding))
            else:
                out = cupy.empty(W.shape, dtype=cupy.float32)

                def ours(algo):
                    ops.conv2d_backward(gdy, gx, gW, stride, padding, need_dx=False, dW=out, need_db=False,
                                        weights_algo=algo)
                    return out

                want = torch.nn.grad.conv2d_weight(torch.from_numpy(x.astype(np.float64)), W.shape,
                                                   torch.from_numpy(dy.astype(np.float64)), stride, padding).numpy()
                ref = _t(lambda: torch.nn.grad.conv2d_weight(tx, W.shape, tdy, stride, padding))
            ms = {algo: _t(lambda: ours(algo)) for algo in ("implicit_gemm", "fft")}
            got = cupy.asnumpy(ours("fft"))
            err = float(np.abs(got - want).max() / np.abs(want).max())
            print(f"| {N}, {C}, {H}x{Wd}, {K}, {R}x{S}, {stride} | {phase} | {p.lh}x{p.lw}, {p.tiles_h}x{p.tiles_w} "
                  f"tiles | {ms['implicit_gemm']:.3f} | {ms['fft']:.3f} | {ref:.3f} | {ref / ms['fft']:.2f} | "
                  f"{err:.2g} |")


if __name__ == "__main__":
    main()
