"""The conv kernel variants the product no longer ships (lab/conv/*.cu), checked on a GPU against the float64
NumPy reference with the product tests' tolerance (tests/conv_reference.py): what the product tests checked
of them before they left it.

  conv_direct.cu                      conv_direct_fwd / _dgrad / _wgrad: every case of test_conv.py's CASES
  conv_gather_dgrad.cu                conv_gather_dgrad (one implicit GEMM over all pixels): the few-channel
                                      cases (test_conv.py's SMALLC) and CASES
  conv_few_channels_dgrad_pixel.cu    conv_few_channels_dgrad_pixel (one pixel per thread): SMALLC

Tolerance (tests/conv_reference.py): |out - ref| <= 4 sqrt(L) eps32 ref_abs + 4 eps32 |ref|, L the products
each output sums (forward C*R*S, dx K*R*S, dW N*P*Q), ref_abs the same convolution of absolute values.
Needs CuPy and a CUDA device:

    python3 lab/conv/removed_variants_check.py
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conv_reference import _assert_close, _rand, conv_ref  # noqa: E402
from custom_impl.gpu import runtime, tiles  # noqa: E402
from custom_impl.gpu.conv import conv_dims, implicit_gemm  # noqa: E402
from lab.common.kernels import lab_kernel  # noqa: E402

GRID_STRIDE_BLOCKS = 132 * 32   # the direct kernels loop over their outputs with a grid-stride loop
PIXEL_MAX_C = 8                 # conv_few_channels_dgrad_pixel holds C <= 8 outputs per thread


def _test_cases():
    spec = importlib.util.spec_from_file_location("test_conv", os.path.join(ROOT, "tests", "custom_impl", "gpu",
                                                                            "test_conv.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CASES, mod.SMALLC


def _direct(gx, gW, gb, gdy, dims):
    import cupy

    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    args = runtime.i32(*dims)
    y = cupy.full((N, K, P, Q), np.nan, np.float32)
    dx = cupy.full((N, C, H, Wd), np.nan, np.float32)
    dW = cupy.full((K, C, R, S), np.nan, np.float32)

    def grid(n):
        return (min(runtime.blocks(n, 256), GRID_STRIDE_BLOCKS),)

    lab_kernel("conv/conv_direct.cu", "conv_direct_fwd")(grid(y.size), (256,), (gx, gW, gb, y) + args)
    lab_kernel("conv/conv_direct.cu", "conv_direct_dgrad")(grid(dx.size), (256,), (gdy, gW, dx) + args)
    lab_kernel("conv/conv_direct.cu", "conv_direct_wgrad")(grid(dW.size), (256,), (gdy, gx, dW) + args)
    return y, dx, dW


def _gather_dgrad(gdy, gW, dims):
    import cupy

    N, C, H, Wd, K, R, S = dims[:7]
    cols = N * H * Wd
    cfg = tiles.choose_config(C, cols, K * R * S, runtime.sm_count(), max_splits=1,
                              candidates=implicit_gemm.CONFIGS)[0]
    dx = cupy.full((N, C, H, Wd), np.nan, np.float32)
    kern = lab_kernel("conv/conv_gather_dgrad.cu", "conv_gather_dgrad", cfg.defines, cfg.smem_bytes)
    kern((runtime.blocks(cols, cfg.bn), runtime.blocks(C, cfg.bm)), (cfg.threads,), (gdy, gW, dx) + runtime.i32(*dims),
         shared_mem=cfg.smem_bytes)
    return dx


def _pixel_dgrad(gdy, gW, dims):
    import cupy

    N, C, H, Wd, K, R, S, P, Q, sh, sw = dims[:11]
    dx = cupy.full((N, C, H, Wd), np.nan, np.float32)
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    kern = lab_kernel("conv/conv_few_channels_dgrad_pixel.cu", "conv_few_channels_dgrad_pixel", None, 4 * K * C * R * S)
    kern((runtime.blocks(cols, 256), 1, sh * sw), (256,), (gdy, gW, dx) + runtime.i32(*dims),
         shared_mem=4 * K * C * R * S)
    return dx


def check(case, variants):
    import cupy

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]) + 3)
    x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S), _rand(rng, K)
    dims = conv_dims(x.shape, W.shape, stride, padding)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref, back = conv_ref(x64, W64, stride, padding)
    y_abs, back_abs = conv_ref(np.abs(x64), np.abs(W64), stride, padding)
    dy = _rand(rng, *y_ref.shape)
    dx_ref, dW_ref, _ = back(dy.astype(np.float64))
    dx_abs, dW_abs, _ = back_abs(np.abs(dy.astype(np.float64)))
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    P, Q = y_ref.shape[2:]
    if "direct" in variants:
        y, dx, dW = _direct(gx, gW, gb, gdy, dims)
        _assert_close(cupy.asnumpy(y), y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None], C * R * S,
                      f"direct y {case}")
        _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * R * S, f"direct dx {case}")
        _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, N * P * Q, f"direct dW {case}")
    if "gather" in variants:
        _assert_close(cupy.asnumpy(_gather_dgrad(gdy, gW, dims)), dx_ref, dx_abs, K * R * S, f"gather dx {case}")
    if "pixel" in variants and C <= PIXEL_MAX_C and K * C * R * S <= 12288:
        _assert_close(cupy.asnumpy(_pixel_dgrad(gdy, gW, dims)), dx_ref, dx_abs, K * R * S, f"pixel dx {case}")


def main():
    cases, smallc = _test_cases()
    for case in cases:
        check(case, ("direct", "gather"))
        print(f"ok direct, gather {case}", flush=True)
    for case in smallc:
        check(case, ("gather", "pixel"))
        print(f"ok gather, pixel {case}", flush=True)
    print("all removed conv variants agree with float64")


if __name__ == "__main__":
    main()
