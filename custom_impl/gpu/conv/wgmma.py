"""conv2d on Hopper's wgmma (``kernels/gemm_wgmma.cu``): each phase as one ``gemm_wgmma`` GEMM over operands
that ``conv_wgmma_prep`` gathers, rounds (TF32 / BF16, as ``gemm_tc`` rounds) and lays out along the
reduction in the workspace: an explicit im2col, where ``implicit_gemm_tc.py`` gathers inside its kernels.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; ``dims`` a ``ConvDims``.

    forward           (N P Q x K)   over C R S: im2col(x) times W, written into y (N, K, P, Q) with the bias
    backward_data     (N H W x C)   over K R S: dy gathered at h + ph - r = p sh (0 where no whole p) times
                                    W, written into dx (N, C, H, W); any stride
    backward_weights  (K x C R S)   over N P Q: dy times im2col(x), into dW; may split the reduction

The cost is the gathered operands' memory (R S times the input for the im2col side) and one more pass over
it; the gain is the tensor cores' wgmma rate. ``implicit_gemm_tc`` picks between the two per layer and
phase by timing them (``runtime.autotune``). Devices of compute capability 9.0 only (``available``).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import gemm_tc, runtime
from ..gemm import splitk_reduce
from ..runtime import checked_workspace, i32, ptr

FAMILY = gemm_tc.WG_FAMILY
PHASES = ("forward", "backward_data", "backward_weights")
# conv_wgmma_prep's operand modes (kernels/gemm_wgmma.cu)
WT, COLS, COLST, DY, DCOLS, WC = range(6)


PREP_THREADS = 256   # conv_wgmma_prep: one k per thread


def prep_rows_per_block(rows: int) -> int:
    """Rows of an operand one conv_wgmma_prep block walks: 64, or more where the grid's y would pass 65535."""
    return max(64, -(-rows // 65535))


def available() -> bool:
    """Whether this device runs the wgmma kernels (compute capability 9.0)."""
    return gemm_tc.wgmma_supported()


def gemm_shape(dims, phase: str) -> tuple:
    """(M, N, reduction, A mode, A rows, B mode, B rows, pq) of a phase's GEMM."""
    N, C, H, W, K, R, S, P, Q = dims[:9]
    if phase == "forward":
        return N * P * Q, K, C * R * S, COLS, WT, P * Q
    if phase == "backward_data":
        return N * H * W, C, K * R * S, DCOLS, WC, H * W
    if phase == "backward_weights":
        return K, C * R * S, N * P * Q, DY, COLST, 1
    raise ValueError(f"conv wgmma: phase={phase!r}; use one of {PHASES}")


@functools.lru_cache(maxsize=4096)
def plan(dims, phase: str, precision: str, sms: int = 132, launch_s: float = 0.0) -> tuple:
    """(WgConfig, splits) of a phase: the model's best ``gemm_tc.wg_ranked_plans`` plan (split only for
    backward-weights, whose output is row-major)."""
    M, Ncols, red, _, _, pq = gemm_shape(dims, phase)
    plans = gemm_tc.wg_ranked_plans(M, Ncols, red, precision, sms, launch_s)
    return next(p for p in plans if p[1] == 1 or pq == 1)


def _sized_plan(dims, phase: str, precision: str, sms: int) -> tuple:
    """(WgConfig, Kp, k_chunk, splits, workspace elements) of a phase under the launch cost in force."""
    M, Ncols, red = gemm_shape(dims, phase)[:3]
    cfg, splits = plan(tuple(dims), phase, precision, sms, runtime.launch_cost())
    kp, k_chunk, splits = gemm_tc.wg_split(red, splits, cfg.bk)
    return cfg, kp, k_chunk, splits, gemm_tc.wg_workspace_size(M, Ncols, red, (cfg, splits))


def workspace_size(dims, precision: str, sms: int = 132) -> int:
    """float32 elements of workspace the three phases need (the largest)."""
    return max(_sized_plan(dims, phase, precision, sms)[4] for phase in PHASES)


def run(phase: str, a_src, b_src, out, bias, dims, precision: str, workspace=None, sms: int = 132):
    """One phase into ``out`` (checked by the caller): forward (x, W, bias) -> y, backward_data (dy, W) -> dx,
    backward_weights (dy, x) -> dW. ``a_src`` / ``b_src`` are the tensors the A / B operands gather from."""
    M, Ncols, red, a_mode, b_mode, pq = gemm_shape(dims, phase)
    cfg, kp, k_chunk, splits, need = _sized_plan(dims, phase, precision, sms)
    ws = checked_workspace(workspace, need, f"conv2d {phase}", "conv2d_workspace_size")
    a_dst, b_dst, partials = gemm_tc.wg_buffers(ws, M, Ncols, kp, precision)
    prep = runtime.kernel(FAMILY, "conv_wgmma_prep", cfg.defines)
    for src, dst, mode, rows in ((a_src, a_dst, a_mode, M), (b_src, b_dst, b_mode, Ncols)):
        per_block = prep_rows_per_block(rows)
        prep((runtime.blocks(kp, PREP_THREADS), runtime.blocks(rows, per_block)), (PREP_THREADS,),
             (src, np.uint64(dst)) + i32(mode, rows, red, kp, per_block, *dims))
    kern, grid, block, smem, args, red_launch = gemm_tc.wg_gemm_launch(
        cfg, splits, M, Ncols, kp, k_chunk, out, False, "none", pq, partials)
    kern(grid, block, (np.uint64(a_dst), np.uint64(b_dst), out, ptr(bias)) + args, shared_mem=smem)
    if red_launch is not None:
        splitk_reduce(red_launch[0], out, bias, M, Ncols, splits, 0, 0)
    return out
