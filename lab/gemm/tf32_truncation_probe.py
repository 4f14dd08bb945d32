"""What the tensor cores do with FP32 operands that were not rounded to TF32, and what cuBLAS's TF32 GEMM does.

    python3 lab/gemm/tf32_truncation_probe.py [--m 512] [--n 512] [--k 1024]

Three products of the same random A (M, K) and B (N, K), C = A B^T, each compared with float64 products of
(a) the exact operands, (b) operands rounded to TF32 to nearest (cvt.rna, what gemm_wgmma_prep does) and
(c) operands truncated to TF32 (the low 13 mantissa bits cleared):
  ours          gemm_tc at TF32 on its wgmma config (operands rounded by the prep pass)
  ours raw      the same gemm_wgmma kernel fed the unrounded FP32 operands directly (K a multiple of 32,
                rows contiguous along k: the layout the prep pass writes)
  cuBLAS        torch.mm with allow_tf32 on
Printed: the largest |C - reference| over the largest |A| |B|^T entry, per product and reference. The
reference a product is nearest to tells how its operands were reduced to TF32 (accumulation in FP32 adds
an error of the same size for every reference, well below an operand-rounding difference at this K).
Needs an H100 / H200.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))   # tc_rounding: the tests' host rounding (cvt.rna)

import numpy as np  # noqa: E402
from tc_rounding import round_tf32  # noqa: E402


def truncate_tf32(x: np.ndarray) -> np.ndarray:
    """float32 -> TF32 with the low 13 mantissa bits cleared."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return (u & np.uint32(0xFFFFE000)).view(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--k", type=int, default=1024)
    args = ap.parse_args()
    M, N, K = args.m, args.n, args.k
    if K % 32:
        sys.exit("tf32_truncation_probe: --k must be a multiple of 32 (the raw operands stand in for prepared ones)")

    import cupy
    import torch

    from custom_impl.gpu import gemm_tc, runtime

    rng = np.random.default_rng(3)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((N, K)).astype(np.float32)
    scale = float((np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64).T).max())
    refs = {"exact": a.astype(np.float64) @ b.astype(np.float64).T,
            "rounded": round_tf32(a).astype(np.float64) @ round_tf32(b).astype(np.float64).T,
            "truncated": truncate_tf32(a).astype(np.float64) @ truncate_tf32(b).astype(np.float64).T}

    products = {}
    da, db = cupy.asarray(a), cupy.asarray(b)
    cfg = gemm_tc.CONFIG_BY_NAME["tf32_wgmma_128x128_s3"]
    out = cupy.empty((M, N), dtype=np.float32)
    gemm_tc.gemm_tc(da, db, out, precision="tf32", trans_b=True, config=cfg, splits=1)
    products["ours"] = cupy.asnumpy(out)
    kern, grid, block, smem, tail, _, _ = gemm_tc._launch_args(da, db, out, False, True, "none", False, M, N, K,
                                                                (cfg, 1))
    raw = cupy.full((M, N), np.nan, dtype=np.float32)
    kern(grid, block, (da, db, raw, runtime.NULL) + tail, shared_mem=smem)
    products["ours raw"] = cupy.asnumpy(raw)
    torch.backends.cuda.matmul.allow_tf32 = True
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    products["cuBLAS"] = (ta @ tb.T).cpu().numpy()

    print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}; M={M} N={N} K={K}")
    print(f"{'product':<10}" + "".join(f"{name:>14}" for name in refs) + "   nearest")
    for name, c in products.items():
        errs = {r: float(np.abs(c - ref).max()) / scale for r, ref in refs.items()}
        near = min(("rounded", "truncated"), key=errs.get)
        print(f"{name:<10}" + "".join(f"{e:14.3e}" for e in errs.values()) + f"   {near}")


if __name__ == "__main__":
    main()
