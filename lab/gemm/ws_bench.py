"""The warp-specialised wgmma GEMMs (lab/gemm/gemm_wgmma_ws.cu) beside the package's gemm_wgmma on the same
prepared operands: bit-identical results first, then the GEMM kernels' times (no prep pass in any).

    python3 lab/gemm/ws_bench.py [--shapes 4096x4096x4096,8192x8192x8192] [--stages 4,6,7] [--reps 10]
                                 [--tma-configs 128x4,128x6,256x3,256x4]

For each shape and precision: gemm_tc runs the 128x128 3-stage wgmma config once (which prepares A' and B'
in the runtime's shared workspace and writes the reference output), then each kernel runs on those
prepared operands: gemm_wgmma_ws (cp.async producer warpgroup) at 128x128 and each --stages, and
gemm_wgmma_tma (the copy engine as producer, tensor maps encoded here through the driver's
cuTensorMapEncodeTiled) at each --tma-configs BNxSTAGES (BM 128). The experiments compile by NVRTC for sm_90a
(lab.common.kernels.lab_kernel). Prints TFLOP/s of each and whether every output element equals the package
kernel's. Needs an H100 / H200 (compute capability 9.0) and its driver's libcuda. An experiment whose
copies never complete traps (gemm_wgmma_ws.cu's WS_SPIN_LIMIT) rather than hanging; the CUDA context is
then lost, so every later line of the run reports errors: run the TMA kernel last, as the default order does.
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
    ap.add_argument("--tma-configs", default="128x4,128x6,256x3,256x4")
    args = ap.parse_args()

    import cupy

    from custom_impl.gpu import gemm_tc, runtime

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
                ws_smem = stages * 256 * 128 + 1024 + 16 * stages   # stages, alignment, mbarriers
                line.append(variant(f"ws s{stages}", "gemm_wgmma_ws", defines, ws_smem, grid,
                                    lambda out: (a_prep, b_prep, out, runtime.NULL) + tail, ref, flops, args.reps))
            eb = 4 if prec == "tf32" else 2
            kp = tail[3]
            for item in args.tma_configs.split(","):
                bn, stages = (int(v) for v in item.split("x"))
                defines = dict(WG_BM=128, WG_BN=bn, WG_STAGES=stages, WG_PREC=gemm_tc.PREC_CODE[prec])
                tma_smem = stages * (128 + bn) * 128 + 1024 + 16 * stages
                try:
                    maps = tensor_maps(a_prep, M, b_prep, N, int(kp), eb, 128, bn)
                except Exception as err:  # noqa: BLE001 - report and go on
                    line.append(f"tma {bn}x s{stages} error {type(err).__name__}: {err}"[:300])
                    continue
                line.append(variant(f"tma {bn}x s{stages}", "gemm_wgmma_tma", defines, tma_smem,
                                    (-(-N // bn), -(-M // 128), 1),
                                    lambda out, maps=maps: (maps, out, runtime.NULL) + tail, ref, flops, args.reps))
            print(f"{text} {prec}: " + "; ".join(line), flush=True)


def variant(label: str, name: str, defines: dict, smem: int, grid: tuple, arguments, ref, flops: float,
            reps: int) -> str:
    """'<label> <TFLOP/s> (identical | DIFFERS)' of the experiment kernel ``name`` built with ``defines``, or
    its error: launched on ``grid`` x 384 threads with ``arguments(out)``, its output compared with ``ref``.
    Also printed at once with the seconds its compile took (NVRTC for sm_90a: a cold build of these kernels
    can take tens of seconds), so a run cut short by a time limit still shows what it measured."""
    import time

    import cupy

    from custom_impl.gpu import runtime
    from lab.common.kernels import lab_kernel

    try:
        t0 = time.perf_counter()
        kern = lab_kernel("gemm/gemm_wgmma_ws.cu", name, defines, smem, arch="sm_90a")
        out = cupy.full(ref.shape, np.nan, dtype=np.float32)
        call = lambda: kern(grid, (THREADS,), arguments(out), shared_mem=smem)  # noqa: E731
        call()
        cupy.cuda.Device().synchronize()
        built = time.perf_counter() - t0
        same = bool(cupy.array_equal(out, ref))
        ms = runtime.time_calls([call], reps=reps)[0] / reps
        result = f"{label} {flops / ms / 1e9:7.1f} ({'identical' if same else 'DIFFERS'})"
        print(f"  {result}, built and first run in {built:.1f} s", flush=True)
        return result
    except Exception as err:  # noqa: BLE001 - report and go on
        result = f"{label} error {type(err).__name__}: {err}"[:300]
        print(f"  {result}", flush=True)
        return result


def tensor_maps(a_ptr, a_rows: int, b_ptr, b_rows: int, kp: int, eb: int, bm: int, bn: int):
    """A device array of the two 128-byte tensor maps gemm_wgmma_tma reads: A' (a_rows, kp) in boxes of bm rows
    x 128 bytes and B' (b_rows, kp) in boxes of bn rows, elements of eb bytes, 128-byte swizzle, zero fill
    past the rows. Encoded by the driver (libcuda's cuTensorMapEncodeTiled); raises RuntimeError on its error."""
    import ctypes

    import cupy

    lib = ctypes.CDLL("libcuda.so.1")
    enc = lib.cuTensorMapEncodeTiled
    enc.restype = ctypes.c_int
    blob = b""
    for ptr, rows, box_rows in ((a_ptr, a_rows, bm), (b_ptr, b_rows, bn)):
        buf = (ctypes.c_uint8 * 192)()
        addr = (ctypes.addressof(buf) + 63) & ~63          # CUtensorMap is 64-byte aligned
        dims = (ctypes.c_uint64 * 2)(kp, rows)             # inner (k elements) first
        strides = (ctypes.c_uint64 * 1)(kp * eb)           # bytes between rows
        box = (ctypes.c_uint32 * 2)(128 // eb, box_rows)   # one 128-byte row of k per operand row
        steps = (ctypes.c_uint32 * 2)(1, 1)
        dtype = 2 if eb == 4 else 1                        # UINT32 / UINT16: bytes moved, nothing converted
        rc = enc(ctypes.c_void_p(addr), ctypes.c_int(dtype), ctypes.c_uint32(2), ctypes.c_void_p(int(ptr)), dims,
                 strides, box, steps, ctypes.c_int(0), ctypes.c_int(3), ctypes.c_int(2), ctypes.c_int(0))
        if rc != 0:                                        # interleave none, swizzle 128B, L2 128B, zero fill
            raise RuntimeError(f"cuTensorMapEncodeTiled returned CUresult {rc}")
        blob += ctypes.string_at(addr, 128)
    return cupy.asarray(np.frombuffer(blob, dtype=np.uint8))   # CuPy allocations: 256-byte aligned


if __name__ == "__main__":
    main()
