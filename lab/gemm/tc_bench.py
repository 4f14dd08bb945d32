"""Tensor-core GEMM: every tile config of gemm_tc (mma.sync, and wgmma where the device has it) at a few
shapes against cuBLAS at the same precision. A wgmma entry also gives its GEMM kernel alone ("gemm"),
without the operand prep pass.

GPU time of back-to-back calls behind the runtime's sleep kernel (runtime.time_calls), cuBLAS through
torch.mm on the same card in the same run (TF32: allow_tf32 on; BF16: bfloat16 tensors).

    python3 lab/gemm/tc_bench.py [--shapes 4096x4096x4096,...]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x4096x4096,8192x8192x8192,1024x1024x1024,64x128x784")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()

    import cupy
    import torch

    import reference_impl
    from custom_impl.gpu import gemm_tc, runtime

    runtime.precompile(families=[gemm_tc.FAMILY, gemm_tc.WG_FAMILY])
    wgmma = gemm_tc.wgmma_supported()
    print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    for text in args.shapes.split(","):
        M, N, K = (int(v) for v in text.split("x"))
        flops = 2.0 * M * N * K
        rng = np.random.default_rng(0)
        a = cupy.asarray(rng.standard_normal((M, K), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((N, K), dtype=np.float32))
        out = cupy.empty((M, N), dtype=np.float32)
        for prec in gemm_tc.PRECISIONS:
            line = []
            cfgs = list(gemm_tc.configs(prec))
            cfgs += [c for c in gemm_tc.WG_CONFIGS if c.precision == prec] if wgmma else []
            for cfg in cfgs:
                for splits in (1, 4):
                    try:
                        fn = lambda: gemm_tc.gemm_tc(a, b, out, precision=prec, trans_b=True, config=cfg,  # noqa: E731
                                                     splits=splits)
                        fn()
                        ms = runtime.time_calls([fn], reps=args.reps)[0] / args.reps
                        entry = f"{cfg.name}/s{splits} {flops / ms / 1e9:7.1f}"
                        launch = gemm_tc._launch_args(a, b, out, False, True, "none", False, M, N, K, (cfg, splits))
                        if launch[6] is not None and splits == 1:   # the wgmma kernel alone, on prepared operands
                            kern, grid, block, smem, tail, _, prep = launch
                            args_k = (prep[2][0], prep[3][0], out, runtime.NULL) + tail
                            gemm_only = lambda: kern(grid, block, args_k, shared_mem=smem)  # noqa: E731
                            ms_g = runtime.time_calls([gemm_only], reps=args.reps)[0] / args.reps
                            entry += f" (gemm {flops / ms_g / 1e9:.1f})"
                        line.append(entry)
                    except Exception as err:  # noqa: BLE001 - report and go on
                        line.append(f"{cfg.name}/s{splits} error {type(err).__name__}: {err}"[:200])
            tuned = lambda: gemm_tc.gemm_tc(a, b, out, precision=prec, trans_b=True)  # noqa: E731
            tuned()
            ms_t = runtime.time_calls([tuned], reps=args.reps)[0] / args.reps
            ta = torch.as_tensor(a, device="cuda")
            tb = torch.as_tensor(b, device="cuda")
            if prec == "bf16":
                ta, tb = ta.bfloat16(), tb.bfloat16()
            with reference_impl.precision_scope(prec):
                torch.mm(ta, tb.t())
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.reps):
                    torch.mm(ta, tb.t())
                end.record()
                end.synchronize()
                ms_ref = start.elapsed_time(end) / args.reps
            print(f"{text} {prec}: tuned {flops / ms_t / 1e9:7.1f} TFLOP/s ({ms_t * 1e3:.1f} us), cuBLAS "
                  f"{flops / ms_ref / 1e9:7.1f} ({ms_ref * 1e3:.1f} us), ratio {ms_ref / ms_t:.3f}\n    " + "\n    ".join(line), flush=True)


if __name__ == "__main__":
    main()
