"""conv2d as implicit GEMMs on the tensor cores (``kernels/conv_implicit_gemm_tc.cu`` on ``gemm_tc_tiles.cuh``):
what a convolution runs at precision "tf32" or "bf16", every phase.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; ``dims`` a ``ConvDims``.
The GEMM shapes are those of the FP32 ``implicit_gemm.py`` (forward M = K over C*R*S; backward-data one
GEMM per stride phase, M = C; backward-weights M = K over N*P*Q), with TF32 / BF16 products of operands
rounded in registers and FP32 accumulation (docs/kernels.md). Tile config and split-K factor per GEMM
come from ``gemm_tc.ranked_plans`` (the model's first plan; splits only where the plan asks for them and,
for backward-data, only with stride 1). Split-K partials are summed in a fixed order by the FP32 families'
reduce kernels, so results are bitwise reproducible. The bias gradient is implicit_gemm.bias_grad's FP32
sum. Outputs are written (=); with the outputs and ``workspace`` (``workspace_size`` elements) given,
nothing is allocated and nothing synchronises the host.

On a device with wgmma (H100, H200) each phase is timed once per layer against ``wgmma.run`` (an explicit
im2col GEMM on Hopper's warpgroup instructions), and against the caller's other candidates (``extra``:
conv/__init__.py offers the FP32 algorithms on rounded operands), and the fastest runs from then on.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import gemm_tc, runtime
from ..gemm import splitk_reduce
from ..runtime import blocks, checked_workspace, i32, ptr, vec_ok
from . import implicit_gemm, wgmma

FAMILY = "conv_implicit_gemm_tc"


def modules() -> list:
    """(family, defines) of every module of this family the default path can load."""
    return [(FAMILY, dict(cfg.defines)) for cfg in gemm_tc.CONFIGS]


def _smem(cfg, a_kmajor: bool, b_kmajor: bool) -> int:
    """Dynamic shared memory of a conv kernel whose A / B tiles are k-major or not (the kernel's layouts)."""
    return cfg.stages * (gemm_tc.tile_floats(cfg.bm, cfg.bk, a_kmajor, cfg.precision)
                         + gemm_tc.tile_floats(cfg.bn, cfg.bk, b_kmajor, cfg.precision)) * 4


def _plan(M: int, N: int, K: int, precision: str, sms: int, max_splits: int = 32):
    """(TcConfig, k_chunk, splits): the model's best plan with at most ``max_splits`` splits."""
    plans = gemm_tc.ranked_plans(M, N, K, precision, sms, runtime.launch_cost())
    cfg, splits = next(p for p in plans if p[1] <= max_splits)
    k_chunk, splits = gemm_tc.split_chunk(K, splits, cfg.bk)
    return cfg, k_chunk, splits


@functools.lru_cache(maxsize=4096)
def plans(dims, precision: str, sms: int = 132, launch_s: float = 0.0) -> dict:
    """{phase: (TcConfig, k_chunk, splits)} of a layer (memoised per launch cost, given as ``launch_s``)."""
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
    out = {"forward": _plan(K, N * P * Q, C * R * S, precision, sms),
           "backward_weights": _plan(K, C * R * S, N * P * Q, precision, sms)}
    cols = N * -(-H // sh) * -(-W // sw)       # the largest phase
    red = K * -(-R // sh) * -(-S // sw)
    if sh * sw > 1:
        cfg, _, _ = _plan(C, cols * sh * sw, red, precision, sms, max_splits=1)
        out["backward_data"] = (cfg, 0, 1)
    else:
        out["backward_data"] = _plan(C, cols, red, precision, sms)
    return out


def _plans(dims, precision, sms):
    return plans(tuple(dims), precision, sms, runtime.launch_cost())


def workspace_size(dims, precision: str, sms: int = 132) -> int:
    """float32 elements of workspace the tensor-core phases and the bias gradient of this layer need."""
    N, C, H, W, K, R, S, P, Q = dims[:9]
    p = _plans(dims, precision, sms)
    need = [p["forward"][2] * K * N * P * Q, p["backward_weights"][2] * K * C * R * S,
            p["backward_data"][2] * N * C * H * W]
    need = [n if s > 1 else 0 for n, s in zip(need, (p[k][2] for k in ("forward", "backward_weights",
                                                                          "backward_data")))]
    if wgmma.available():
        need.append(wgmma.workspace_size(dims, precision, sms))
    return max(need + [implicit_gemm.workspace_size(dims, sms)])


def _pick(phase, dims, precision, calls):
    """Run the phase by one of ``calls`` ({name: call}: "implicit_gemm_tc", "wgmma" on a device with
    wgmma, and the caller's others): the one the autotuner timed fastest for this layer, phase and
    precision (cached; a single call runs untimed)."""
    key = ("conv_tc", phase, dims, precision)
    name = runtime.tuned(key)
    if name not in calls:
        name = runtime.autotune(key, lambda: calls, "implicit_gemm_tc")
    return calls[name]()


def _calls(mma, wg, extra) -> dict:
    calls = {"implicit_gemm_tc": mma}
    if wgmma.available():
        calls["wgmma"] = wg
    calls.update(extra or {})
    return calls


def algorithm(phase, dims, precision) -> str:
    """The autotuner's choice for this layer and phase ("implicit_gemm_tc", "wgmma" or a caller's other
    candidate), "implicit_gemm_tc" before the first call."""
    return runtime.tuned(("conv_tc", phase, dims, precision)) or "implicit_gemm_tc"


def forward(x, W, b, out, dims, precision, workspace=None, sms=132, extra=None):
    """y = conv2d(x, W) + b into ``out`` (N, K, P, Q), checked by the caller. ``extra``: more candidates
    ({name: call}) for the autotuner to time beside the tensor-core ones."""
    return _pick("forward", dims, precision, _calls(
        lambda: _forward_mma(x, W, b, out, dims, precision, workspace, sms),
        lambda: wgmma.run("forward", x, W, out, b, dims, precision, workspace, sms), extra))


def _forward_mma(x, W, b, out, dims, precision, workspace=None, sms=132):
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    cols, CRS = N * P * Q, C * R * S
    cfg, k_chunk, splits = _plans(dims, precision, sms)["forward"]
    kern = runtime.kernel(FAMILY, "conv_tc_fwd", cfg.defines, _smem(cfg, True, False))
    flags = int(vec_ok(W, CRS))
    grid = (blocks(cols, cfg.bn), blocks(K, cfg.bm), splits)
    smem = _smem(cfg, True, False)
    if splits == 1:
        kern(grid, (cfg.threads,), (x, W, ptr(b), out, runtime.NULL) + i32(*dims, k_chunk, flags), shared_mem=smem)
        return out
    ws = checked_workspace(workspace, splits * K * cols, "conv2d_forward", "conv2d_workspace_size")
    kern(grid, (cfg.threads,), (x, W, ptr(b), out, ws) + i32(*dims, k_chunk, flags | 2), shared_mem=smem)
    implicit_gemm.kernel("conv_splitk_reduce_nchw")((min(blocks(out.size, 256), 132 * 16),), (256,),
                                                    (ws, out, ptr(b)) + i32(N, K, P * Q, splits))
    return out


def backward_weights(dy, x, dW, dims, precision, workspace=None, sms=132, extra=None):
    """dW (K, C, R, S) from dy and x, checked by the caller; split-K partials in ``workspace``. ``extra``:
    as in ``forward``."""
    return _pick("backward_weights", dims, precision, _calls(
        lambda: _backward_weights_mma(dy, x, dW, dims, precision, workspace, sms),
        lambda: wgmma.run("backward_weights", dy, x, dW, None, dims, precision, workspace, sms), extra))


def _backward_weights_mma(dy, x, dW, dims, precision, workspace=None, sms=132):
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    CRS = C * R * S
    cfg, k_chunk, splits = _plans(dims, precision, sms)["backward_weights"]
    smem = _smem(cfg, True, True)
    kern = runtime.kernel(FAMILY, "conv_tc_wgrad", cfg.defines, smem)
    grid = (blocks(CRS, cfg.bn), blocks(K, cfg.bm), splits)
    if splits == 1:
        flags = int(CRS % 2 == 0 and dW.data.ptr % 8 == 0)
        kern(grid, (cfg.threads,), (dy, x, dW) + i32(*dims, k_chunk, flags), shared_mem=smem)
        return dW
    ws = checked_workspace(workspace, splits * K * CRS, "conv2d_backward", "conv2d_workspace_size")
    flags = int(CRS % 2 == 0 and ws.data.ptr % 8 == 0)
    kern(grid, (cfg.threads,), (dy, x, ws) + i32(*dims, k_chunk, flags), shared_mem=smem)
    splitk_reduce(ws, dW, None, K, CRS, splits, 0, 0)
    return dW


def backward_data(dy, W, dx, dims, precision, workspace=None, sms=132, extra=None):
    """dx (N, C, H, W) from dy and W, checked by the caller: one GEMM per stride phase; with stride 1 the
    reduction may split (partials in ``workspace``). ``extra``: as in ``forward``."""
    return _pick("backward_data", dims, precision, _calls(
        lambda: _backward_data_mma(dy, W, dx, dims, precision, workspace, sms),
        lambda: wgmma.run("backward_data", dy, W, dx, None, dims, precision, workspace, sms), extra))


def _backward_data_mma(dy, W, dx, dims, precision, workspace=None, sms=132):
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    cfg, k_chunk, splits = _plans(dims, precision, sms)["backward_data"]
    smem = _smem(cfg, False, False)
    kern = runtime.kernel(FAMILY, "conv_tc_dgrad", cfg.defines, smem)
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    if splits == 1:
        kern((blocks(cols, cfg.bn), blocks(C, cfg.bm), sh * sw), (cfg.threads,),
             (dy, W, dx) + i32(*dims) + (runtime.NULL, np.int32(0)), shared_mem=smem)
        return dx
    ws = checked_workspace(workspace, splits * C * cols, "conv backward_data", "conv2d_workspace_size")
    kern((blocks(cols, cfg.bn), blocks(C, cfg.bm), splits), (cfg.threads,),
         (dy, W, dx) + i32(*dims) + (ws, np.int32(k_chunk)), shared_mem=smem)
    implicit_gemm.kernel("conv_splitk_reduce_nchw")((min(blocks(dx.size, 256), 132 * 16),), (256,),
                                                    (ws, dx, runtime.NULL) + i32(N, C, H * Wd, splits))
    return dx
