"""The warp-specialised wgmma GEMM (lab/gemm/gemm_wgmma_ws.cu) beside the package's gemm_wgmma on the same
prepared operands: bit-identical results first, then the GEMM kernels' times (no prep pass in either).

    python3 lab/gemm/ws_bench.py [--shapes 4096x4096x4096,8192x8192x8192] [--stages 4,6,7] [--reps 10]

For each shape and precision: gemm_tc runs the 128x128 3-stage wgmma config once (which prepares A' and B'
in the runtime's shared workspace and writes the reference output), then each kernel runs on those
prepared operands; the experiment compiles by NVRTC for sm_90a (lab.common.kernels.lab_kernel).
Prints TFLOP/s of each and whether every output element of the experiment equals the package kernel's.
Needs an H100 / H200 (compute capability 9.0).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

THREADS = 384


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x4096x4096,8192x8192x8192")
    ap.add_argument("--stages", default="4,6,7")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()

    import cupy

    from custom_impl.gpu import gemm_tc, runtime
    from lab.common.kernels import lab_kernel

    if not gemm_tc.wgmma_supported():
        sys.exit("ws_bench: needs a device with wgmma (compute capability 9.0)")
    print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    for text in args.shapes.split(","):
        M, N, K = (int(v) for v in text.split("x"))
        flops = 2.0 * M * N * K
        rng = np.random.default_rng(0)
        # small integers: every product and sum exact in both kernels, so any difference is a wrong element
        a = cupy.asarray(rng.integers(-3, 4, size=(M, K)).astype(np.float32))
        b = cupy.asarray(rng.integers(-3, 4, size=(N, K)).astype(np.float32))
        for prec in gemm_tc.PRECISIONS:
            cfg = gemm_tc.CONFIG_BY_NAME[f"{prec}_wgmma_128x128_s3"]
            ref = cupy.empty((M, N), dtype=np.float32)
            gemm_tc.gemm_tc(a, b, ref, precision=prec, trans_b=True, config=cfg, splits=1)
            kern, grid, block, smem, tail, _, prep = gemm_tc._launch_args(a, b, ref, False, True, "none", False,
                                                                          M, N, K, (cfg, 1))
            a_prep, b_prep = prep[2][0], prep[3][0]
            base = lambda: kern(grid, block, (a_prep, b_prep, ref, runtime.NULL) + tail, shared_mem=smem)  # noqa: E731
            base()
            ms = runtime.time_calls([base], reps=args.reps)[0] / args.reps
            line = [f"gemm_wgmma 128x128 s3 {flops / ms / 1e9:7.1f}"]
            for stages in (int(s) for s in args.stages.split(",")):
                defines = dict(WG_BM=128, WG_BN=128, WG_STAGES=stages, WG_PREC=gemm_tc.PREC_CODE[prec])
                try:
                    ws_smem = stages * 256 * 128 + 1024 + 16 * stages   # stages, alignment, mbarriers
                    ws_kern = lab_kernel("gemm/gemm_wgmma_ws.cu", "gemm_wgmma_ws", defines, ws_smem, arch="sm_90a")
                    out = cupy.full((M, N), np.nan, dtype=np.float32)
                    call = lambda: ws_kern(grid, (THREADS,), (a_prep, b_prep, out, runtime.NULL) + tail,  # noqa: E731
                                           shared_mem=ws_smem)
                    call()
                    cupy.cuda.Device().synchronize()
                    same = bool(cupy.array_equal(out, ref))
                    ms_ws = runtime.time_calls([call], reps=args.reps)[0] / args.reps
                    line.append(f"ws s{stages} {flops / ms_ws / 1e9:7.1f} ({'identical' if same else 'DIFFERS'})")
                except Exception as err:  # noqa: BLE001 - report and go on
                    line.append(f"ws s{stages} error {type(err).__name__}: {err}"[:300])
            print(f"{text} {prec}: " + "; ".join(line), flush=True)


if __name__ == "__main__":
    main()
