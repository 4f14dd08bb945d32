"""Conv algorithms by name, every phase, beside cuDNN, each checked against float64: for an algorithm that
"auto" does not yet weigh, or to see what each candidate takes on the layers it targets.

    python3 lab/conv/algo_probe.py fft [--quick]    # DeepSpeech 2's many-tap rows: "fft" and the implicit GEMM
    python3 lab/conv/algo_probe.py five [--quick]   # the 5x5 rows: F(2x2, 5x5) "winograd", "patch", the implicit GEMM
    python3 lab/conv/algo_probe.py five-fft [--quick]  # the 5x5 rows: "patch", "winograd" and "fft" below its tap floor

Sets: ``fft``, the networks suite's DeepSpeech 2 layers with >= 32 taps (cuDNN runs their backward-data at up
to 230 TFLOP/s of direct-convolution work, 3.4x the FP32 FFMA peak: an FFT; the implicit GEMM reaches ~20;
H100, 2026-12-07: 0.089-0.35 of cuDNN), and ``five``, the stride-1 5x5 layers of the targets and networks
suites (LeNet's conv2, GoogLeNet's 5x5 branches). ``five-fft``: the same rows with "fft" run below its
floor of ``fft.MIN_TAPS`` taps (set to 25 in this process only), to see whether the transforms pay for 5x5
kernels too (cuDNN's weight gradient of LeNet's conv2 at batch 256 runs at ~36 TFLOP/s of direct work, past
what the direct kernels reach). ``--quick``: the first half of the set's rows. Each row
prints our eager time per algorithm (ms, "-" where the algorithm cannot run the phase), cuDNN's (PyTorch,
cudnn.benchmark, TF32 off), cuDNN / ours per algorithm, and the worst relative error (max |ours - float64|
/ max |float64|) over the algorithms that ran.
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

PHASES = ("forward", "backward_data", "backward_weights")
# set -> ((N, C, H, W, K, R, S, stride, padding) rows, the algorithms timed by name)
SETS = {
    "fft": ([(16, 32, 81, 350, 32, 21, 11, (2, 1), (10, 5)), (16, 32, 41, 350, 96, 21, 11, (2, 1), (10, 5)),
             (16, 32, 79, 341, 32, 5, 10, (2, 2), (0, 0)),
             (64, 32, 81, 350, 32, 21, 11, (2, 1), (10, 5)), (64, 32, 41, 350, 96, 21, 11, (2, 1), (10, 5)),
             (64, 32, 79, 341, 32, 5, 10, (2, 2), (0, 0))],
            ("implicit_gemm", "fft")),
    "five": ([(256, 32, 14, 14, 64, 5, 5, 1, 2), (16, 16, 14, 14, 48, 5, 5, 1, 2), (16, 48, 7, 7, 128, 5, 5, 1, 2),
              (64, 32, 14, 14, 64, 5, 5, 1, 2), (64, 16, 28, 28, 32, 5, 5, 1, 2), (64, 48, 7, 7, 128, 5, 5, 1, 2)],
             ("implicit_gemm", "patch", "winograd")),
}
SETS["five-fft"] = (SETS["five"][0], ("patch", "winograd", "fft"))


def _t(fn) -> float:
    return eager_time_ms(fn, reps=10, warm=2)


def _phase(phase, ops, shape, arrays):
    """(ours(algo) -> CuPy result, the float64 reference, cuDNN's call) of one phase."""
    N, C, H, Wd, K, R, S, stride, padding = shape
    x, dy, W, gx, gdy, gW, tx, tdy, tW = arrays
    import cupy

    x_shape = (N, C, H, Wd)
    W64 = torch.from_numpy(W.astype(np.float64))
    if phase == "backward_data":
        out = cupy.empty(x_shape, dtype=cupy.float32)
        want = torch.nn.grad.conv2d_input(x_shape, W64, torch.from_numpy(dy.astype(np.float64)), stride,
                                          padding).numpy()
        return (lambda algo: ops.conv2d_backward_data(gdy, gW, x_shape, stride, padding, dx=out, algo=algo), want,
                lambda: torch.nn.grad.conv2d_input(x_shape, tW, tdy, stride, padding))
    if phase == "forward":
        out = cupy.empty(dy.shape, dtype=cupy.float32)
        want = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), W64, None, stride, padding).numpy()
        return (lambda algo: ops.conv2d_forward(gx, gW, None, stride, padding, out=out, algo=algo), want,
                lambda: torch.nn.functional.conv2d(tx, tW, None, stride, padding))
    out = cupy.empty(W.shape, dtype=cupy.float32)

    def ours(algo):
        ops.conv2d_backward(gdy, gx, gW, stride, padding, need_dx=False, dW=out, need_db=False, weights_algo=algo)
        return out

    want = torch.nn.grad.conv2d_weight(torch.from_numpy(x.astype(np.float64)), W.shape,
                                       torch.from_numpy(dy.astype(np.float64)), stride, padding).numpy()
    return ours, want, lambda: torch.nn.grad.conv2d_weight(tx, W.shape, tdy, stride, padding)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set", choices=sorted(SETS))
    ap.add_argument("--quick", action="store_true", help="the first half of the set's rows")
    args = ap.parse_args(argv)
    import cupy

    from custom_impl.gpu.conv import conv_dims

    shapes, algos = SETS[args.set]
    if args.set == "five-fft":
        from custom_impl.gpu.conv import fft

        fft.MIN_TAPS = 25   # this process only: let "fft" run the 5x5 kernels (no plan was made before)
    ops = custom_impl.layer_ops("gpu")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print("| shape (N, C, HxW, K, RxS, stride) | phase | " + " | ".join(f"{a} ms" for a in algos)
          + " | cuDNN ms | " + " | ".join(f"cuDNN / {a}" for a in algos) + " | worst rel err |")
    print("| --- | --- |" + " ---: |" * (2 * len(algos) + 2))
    for shape in shapes[: -(-len(shapes) // 2)] if args.quick else shapes:
        N, C, H, Wd, K, R, S, stride, padding = shape
        dims = conv_dims((N, C, H, Wd), (K, C, R, S), stride, padding)
        rng = np.random.default_rng(sum(shape[:7]))
        x = rng.standard_normal((N, C, H, Wd), dtype=np.float32)
        dy = rng.standard_normal((N, K, dims.P, dims.Q), dtype=np.float32)
        W = rng.standard_normal((K, C, R, S), dtype=np.float32) / np.float32(np.sqrt(K * R * S))
        arrays = (x, dy, W, cupy.asarray(x), cupy.asarray(dy), cupy.asarray(W), torch.from_numpy(x).cuda(),
                  torch.from_numpy(dy).cuda(), torch.from_numpy(W).cuda())
        for phase in PHASES:
            ours, want, cudnn = _phase(phase, ops, shape, arrays)
            ms, err = {}, 0.0
            for algo in algos:
                try:
                    got = cupy.asnumpy(ours(algo))
                except ValueError:   # the algorithm cannot run this phase of this layer
                    continue
                err = max(err, float(np.abs(got - want).max() / np.abs(want).max()))
                ms[algo] = _t(lambda: ours(algo))
            ref = _t(cudnn)
            print(f"| {N}, {C}, {H}x{Wd}, {K}, {R}x{S}, {stride} | {phase} | "
                  + " | ".join(f"{ms[a]:.3f}" if a in ms else "-" for a in algos) + f" | {ref:.3f} | "
                  + " | ".join(f"{ref / ms[a]:.2f}" if a in ms else "-" for a in algos) + f" | {err:.2g} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
