"""conv2d backward passes for multi-tap kernels (R x S, stride 1) in ``kernels/conv_patch.cu``: the
algorithm "patch" of backward-data and backward-weights.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; padding (ph, pw); stride 1;
NCHW, cross-correlation, W (K, C, R, S); ``dims`` a ``ConvDims`` (geometry.py).

    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p-ph+r, q-pw+s]
    backward-data:     dx[n,c,h,w] = sum_{k,r,s} W[k,c,r,s] dy[n, k, h+ph-r, w+pw-s]

Why separate kernels: the implicit GEMMs (implicit_gemm.py) gather one im2col element per tap with index
arithmetic (20-30% on top of the GEMM), and for LeNet's 5x5 layer (C=32, K=64) M = K or C fills half of
their 128-row tiles. Here a block stages an input patch (an x strip for dW, a dy strip for dx) in shared memory once and
every thread reuses it for all R*S taps as row correlations: 4 output columns x S taps share a window of
S+3 values, loaded as float4s.

  ``backward_weights``: block (split z, group of cb channels, group of 64 k); thread =
      8 k x one (c, r) x all S taps (or, a tuning candidate, two (c, r) rows sharing each staged dy load, on
      half the threads); the blocks of a split sum their range of (image, row strip) items and
      write a partial dW into ``workspace``; gemm's ordered split-K reduce adds them (deterministic).
  ``backward_data``: W is first copied to (K, R, S, C) in ``workspace``; block (image, strip of
      rows, group of 8*CT channels, split); thread = 8 channels x 4 columns of one row; chunks of kc k
      staged. A small batch leaves too few (image, strip, group) blocks to fill the GPU (LeNet's 5x5 layer
      at batch 64: 64 blocks on 132 SMs), so the k range splits over blocks: partial dx slabs after the
      W copy in ``workspace``, added in order by gemm's split-K reduce (deterministic).

S is compile-time (one module per kernel width, compiled on first use). Outputs are written (``=``). With
``dW`` / ``dx`` and ``workspace`` given nothing is allocated and nothing synchronises the host (CUDA-graph
capturable).

Example::

    dims = conv_dims(x.shape, W.shape, 1, 2)
    if weights_plan(dims) is not None:
        backward_weights(dy, x, dW, dims, workspace)   # dW (K, C, R, S)
    if data_plan(dims) is not None:
        backward_data(dy, W, dx, dims, workspace)      # dx (N, C, H, W)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import gemm, runtime
from ..runtime import blocks, check_array, checked_workspace, i32_memo
from ..runtime import i32 as _i32
from .geometry import conv_dims

FAMILY = "conv_patch"
MAX_S = 7                 # kernel width: 8*S (dW) sums per thread; S = 8 spills under the register cap
U = 4                     # output columns per inner step (conv_patch.cu's PT_U)
KB = 64                   # dW: k per block (PT_KB), the default module
KB_CHOICES = (64, 32)     # dW: the PT_KB modules (32: fewer registers, 3 blocks per SM, twice the blocks)
T_CHOICES = (1, 2)        # dW: (c, r) tasks per thread (PT_T; 2: each dy float4 serves two rows)
T2_MAX_S = {64: 5, 32: 7}  # dW: widest kernel PT_T = 2 compiles for without spilling, per PT_KB (sm_90)
# dW: the (PT_KB, PT_T) modules the tuning times. (64, 2) is left out: on LeNet's conv2 (H100,
# lab/conv/patch_wgrad_sweep.py) it lost to the default plan at batch 64 and 256 (90 and 261 us against 81 and
# 241), and with half its splits by more; (32, 2) won at batch 64 (78 us).
WEIGHTS_MODULES = ((KB, 1), (32, 1), (32, 2))
WT_TASKS = 40             # dW: (c, r) tasks per block at most: 8 * 40 = 320 threads (PT_WT_THREADS)
WT_THREADS = 320
DX_THREADS = 256          # PT_DX_THREADS
SMEM_BYTES = 48 * 1024    # dynamic shared memory without the opt-in: two stages
SMEM_MAX = 96 * 1024      # dW with rows or channels given: two stages, still 2 blocks per SM (opt-in)
STAGE_FLOATS = SMEM_BYTES // 8
ROW_FLOATS = 32           # dW: output positions (rows x padded Q) staged per item, about
TALL_ROW_FLOATS = 112     # dW: the same for the tuning's tall-item candidates (fewer, longer items)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _row4(n: int) -> int:
    """n rounded up to a multiple of 4 and then to 4 (mod 8): float4 rows on which the 8 rows a warp reads
    at one column fall in distinct bank quads."""
    n = _ceil(n, 4) * 4
    return n if n % 8 == 4 else n + 4


def window(S: int) -> int:
    """Floats a thread loads per step: the U+S-1 window rounded up to whole float4s (PT_XV)."""
    return _ceil(U + S - 1, 4) * 4


class WeightsPlan(NamedTuple):
    kb: int          # k per block (PT_KB: 64 or 32)
    cb: int          # channels per block
    pb: int          # output rows per item
    ldq: int         # staged dy row (floats)
    ldx: int         # staged x row (floats)
    chunk: int       # items (image, row strip) per block
    threads: int
    smem: int        # bytes, two stages
    grid: tuple      # (splits, channel groups, k groups)
    t: int = 1       # (c, r) tasks per thread (PT_T)


class DataPlan(NamedTuple):
    ct_shift: int    # CT = 2**ct_shift tiles of 8 channels per block
    wch: int         # column chunks of 4 per row
    hb: int          # rows per block
    kc: int          # k per stage
    ldd: int         # staged dy row (floats)
    threads: int
    smem: int        # bytes, two stages
    kz: int          # k per split (a multiple of kc)
    grid: tuple      # (N * row strips, channel groups, splits)


def _unsupported(dims) -> str | None:
    """Why the kernels cannot run ``dims`` at all (None if they can, shared memory permitting)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if (sh, sw) != (1, 1):
        return f"stride {(sh, sw)} is not (1, 1)"
    if not 1 <= S <= MAX_S:
        return f"kernel width S={S} is not within 1..{MAX_S}"
    return None


def blocks_per_sm(kb: int, t: int = 1) -> int:
    """Blocks per SM the backward-weights kernel's register budget is set for (its __launch_bounds__,
    PT_WT_MINB)."""
    return (2 if kb == 64 else 3) + (t - 1)


def weights_plan(dims, sms: int = 132, kb: int = KB, pb: int | None = None, cb: int | None = None,
                 splits: int | None = None, t: int = 1) -> WeightsPlan | None:
    """Launch plan of conv_patch_backward_weights for ``dims`` on ``sms`` SMs, or None if it cannot run.

    ``kb``: k per block (a module of KB_CHOICES); ``t``: (c, r) tasks per thread (T_CHOICES; 2 only up to
    the width T2_MAX_S[kb]). ``pb`` (output rows per item) / ``cb`` (channels per
    block) / ``splits`` (of the (image, strip) items) override the defaults: rows of about ROW_FLOATS
    outputs, as many channels as WT_TASKS (c, r) tasks hold, both shrunk until two stages fit
    SMEM_BYTES; splits for one wave of ``blocks_per_sm(kb, t)`` blocks per SM. Given rows or channels may
    use up to SMEM_MAX (the kernel is then opted into it)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = (int(v) for v in dims)
    if _unsupported(dims) is not None or R > WT_TASKS or kb not in KB_CHOICES or t not in T_CHOICES:
        return None
    if t > 1 and S > T2_MAX_S[kb]:
        return None
    Qp = _ceil(Q, U) * U
    ldq = _row4(Qp)
    ldx = _row4(Qp + window(S) - U)

    def stage(cb, pb):
        return pb * kb * ldq + cb * (pb + R - 1) * ldx

    if pb is None and cb is None:
        pb = max(1, min(P, ROW_FLOATS // Qp))
        pb = _ceil(P, _ceil(P, pb))  # balanced strips
        cb = max(1, min(C, WT_TASKS // R))
        while stage(cb, pb) > STAGE_FLOATS and (pb > 1 or cb > 1):
            if pb > 1:
                pb -= 1
            else:
                cb -= 1
        limit = STAGE_FLOATS
    else:
        pb = max(1, min(P, pb if pb is not None else max(1, ROW_FLOATS // Qp)))
        cb = max(1, min(C, cb if cb is not None else WT_TASKS // R, WT_TASKS // R))
        limit = SMEM_MAX // 8
    if stage(cb, pb) > limit:
        return None
    threads = 8 * _ceil(_ceil(cb * R, t), 4) * 4
    items = N * _ceil(P, pb)
    per_split = _ceil(C, cb) * _ceil(K, kb)
    if splits is None:
        splits = _ceil(blocks_per_sm(kb, t) * sms, per_split)   # one wave of blocks
    splits = max(1, min(items, splits))
    chunk = _ceil(items, splits)
    splits = _ceil(items, chunk)
    grid = (splits, _ceil(C, cb), _ceil(K, kb))
    return WeightsPlan(kb, cb, pb, ldq, ldx, chunk, threads, 8 * stage(cb, pb), grid, t)


def weights_candidates(dims, sms: int = 132) -> list:
    """The backward-weights plans the tuning times: the default plan of each module of WEIGHTS_MODULES (k per
    block, tasks per thread), the default (KB, one task) first, each also with taller items (about
    TALL_ROW_FLOATS output positions, in balanced strips: fewer staging rounds and barriers per block;
    LeNet's conv2 on the H100: 68 us at batch 64 with 7-row items, two tasks and 32 k per block, where the
    2-row default took 81; 223 us at batch 256 with 7-row items where it took 241); [] if the kernel
    cannot run ``dims``."""
    P, Q = int(dims[7]), int(dims[8])
    tall = max(1, min(P, TALL_ROW_FLOATS // (_ceil(Q, U) * U)))
    tall = _ceil(P, _ceil(P, tall))   # balanced strips
    plans = []
    for kb, t in WEIGHTS_MODULES:
        plan = weights_plan(dims, sms, kb=kb, t=t)
        if plan is not None and plan not in plans:
            plans.append(plan)
        if plan is not None and tall > plan.pb:
            longer = weights_plan(dims, sms, kb=kb, pb=tall, t=t)
            if longer is not None and longer not in plans:
                plans.append(longer)
    return plans


def _tuned_weights_plan(dims, sms, arrays) -> WeightsPlan | None:
    """The backward-weights plan for this call (``runtime.autotune``): cached, else the fastest of
    ``weights_candidates`` timed on the caller's ``arrays`` (dy, x, dW, workspace), else (capturing, or
    tuning off) the default."""
    key = (FAMILY, "backward_weights", dims, sms)
    plans = weights_candidates(dims, sms)
    if len(plans) <= 1:
        return plans[0] if plans else None
    return runtime.autotune(key, lambda: {p: functools.partial(backward_weights, *arrays[:3], dims, arrays[3], p)
                                          for p in plans}, plans[0], warmups=1, behind_sleep=True)


def data_plan(dims, sms: int = 132) -> DataPlan | None:
    """Launch plan of conv_patch_backward_data for ``dims`` on ``sms`` SMs, or None if it cannot run. The
    k range splits when the (image, strip, channel group) blocks fill at most half a wave of 2 blocks per
    SM, into as many splits as the wave holds; each split keeps >= 2 chunks of kc k, so that its double
    buffer still overlaps."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = (int(v) for v in dims)
    if _unsupported(dims) is not None:
        return None
    ct_shift = 2 if C > 16 else 1 if C > 8 else 0
    wch = _ceil(Wd, U)
    while ct_shift > 0 and (wch << ct_shift) > DX_THREADS:
        ct_shift -= 1
    per_row = wch << ct_shift
    if per_row > DX_THREADS:
        return None
    hb = max(1, min(H, DX_THREADS // per_row))
    hb = _ceil(H, _ceil(H, hb))  # balanced strips
    ldd = _row4((wch - 1) * U + window(S))
    cb = 8 << ct_shift
    per_k = (hb + R - 1) * ldd + R * S * cb
    kc = min(K, STAGE_FLOATS // per_k)
    if kc < 1:
        return None
    kc = _ceil(K, _ceil(K, kc))  # balanced chunks
    blocks_xy = N * _ceil(H, hb) * _ceil(C, cb)
    chunks = _ceil(K, kc)
    splits = max(1, min(chunks // 2, 2 * sms // blocks_xy))  # within one wave: a second costs more
    per_split = _ceil(chunks, splits)
    splits = _ceil(chunks, per_split)
    grid = (N * _ceil(H, hb), _ceil(C, cb), splits)
    return DataPlan(ct_shift, wch, hb, kc, ldd, per_row * hb, 8 * kc * per_k, per_split * kc, grid)


def _data_layout(dims, plan: DataPlan) -> tuple[int, int]:
    """(offset, floats) of backward_data's workspace: the W copy at 0, then (split k range only) the partial
    dx slabs from ``offset`` (16-byte aligned); floats = the total it needs."""
    N, C, H, Wd, K, R, S = dims[:7]
    n = K * C * R * S
    if plan.grid[2] == 1:
        return n, n
    off = _ceil(n, 4) * 4
    return off, off + plan.grid[2] * N * C * H * Wd


def workspace_size(x_shape, w_shape, stride, padding, sms: int | None = None) -> int:
    """float32 elements of workspace the two kernels need (the larger): backward_weights' partial dW
    (splits x K*C*R*S of the most split candidate plan, 0 when none splits) and backward_data's W^T copy
    (K*C*R*S) followed, when its k range splits, by the partial dx slabs (splits x N*C*H*W); 0 for a layer
    neither runs."""
    if sms is None:
        sms = runtime.sm_count()
    dims = conv_dims(tuple(x_shape), tuple(w_shape), stride, padding)
    K, C, R, S = w_shape
    w_splits = max((p.grid[0] for p in weights_candidates(dims, sms)), default=1)
    need_w = 0 if w_splits == 1 else w_splits * K * C * R * S
    dplan = data_plan(dims, sms)
    need_d = 0 if dplan is None else _data_layout(dims, dplan)[1]
    return max(need_w, need_d)


def _unfit_message(what: str, dims) -> str:
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    why = _unsupported(dims) or (f"the rows of a {H}x{Wd} input with a {R}x{S} kernel are too wide for one "
                                 f"block ({WT_THREADS if what == 'backward_weights' else DX_THREADS} threads, "
                                 f"one stage in {SMEM_BYTES // 2048} KB of shared memory)")
    return (f"conv.patch.{what}: {why} (x {(N, C, H, Wd)}, W {(K, C, R, S)}, stride {(sh, sw)}, padding "
            f"{(ph, pw)}); these kernels take stride 1, kernels up to {MAX_S} wide and rows that fit shared "
            f"memory: use another algorithm for this layer ('implicit_gemm', or 'auto')")


def defines(S: int, kb: int = KB, t: int = 1) -> dict:
    """The module defines of kernel width ``S``, backward-weights k per block ``kb`` and tasks per thread
    ``t`` (the defaults' modules leave PT_KB / PT_T out)."""
    out = {"PT_S": int(S)}
    if kb != KB:
        out["PT_KB"] = int(kb)
    if t != 1:
        out["PT_T"] = int(t)
    return out


def kernel(name: str, S: int, kb: int = KB, smem: int = 0, t: int = 1):
    """The compiled kernel ``name`` for kernel width ``S`` (one module per width, ``kb`` and ``t``, compiled
    on first use), opted into ``smem`` bytes of dynamic shared memory; memoised per device."""
    return _kernel(name, S, kb, smem, t, runtime.device_id())


@functools.lru_cache(maxsize=None)
def _kernel(name, S, kb, smem, t, device_id):
    return runtime.kernel(FAMILY, name, defines(S, kb, t), smem)


def _check(dims, arrays, what):
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    shapes = {"dy": (N, K, P, Q), "x": (N, C, H, Wd), "dx": (N, C, H, Wd), "W": (K, C, R, S), "dW": (K, C, R, S)}
    for name, a in arrays.items():
        check_array(a, f"conv.patch.{what}: {name}", shape=shapes[name])


def backward_weights(dy, x, dW, dims, workspace=None, plan: WeightsPlan | None = None, check: bool = True):
    """dW (K, C, R, S) = sum over n, p, q of dy (N, K, P, Q) times x (N, C, H, W) windows; returns dW.

    ``workspace``: float32, at least ``workspace_size(...)`` elements (the partial dW of each split), or
    None for the runtime's shared workspace. ``plan``: a ``weights_plan`` of these dims (default: the tuned
    choice among ``weights_candidates``). ``check=False``: the caller has checked the arrays' shapes (the
    conv entry points). Raises ValueError for a layer it cannot run."""
    dims = tuple(dims)
    if plan is None:
        if _unsupported(dims) is not None:
            raise ValueError(_unfit_message("backward_weights", dims))
        sms = runtime.sm_count()
        plan = runtime.tuned((FAMILY, "backward_weights", dims, sms))   # the common case: one lookup
        if plan is None:
            if weights_plan(dims, sms) is None:
                raise ValueError(_unfit_message("backward_weights", dims))
            _check(dims, {"dy": dy, "x": x, "dW": dW}, "backward_weights")   # before any timed launch
            plan = _tuned_weights_plan(dims, sms, (dy, x, dW, workspace))
    if check:
        _check(dims, {"dy": dy, "x": x, "dW": dW}, "backward_weights")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    splits = plan.grid[0]
    n = K * C * R * S
    out = dW if splits == 1 else checked_workspace(workspace, splits * n, "conv.patch.backward_weights",
                                                   "conv2d_workspace_size")
    kernel("conv_patch_backward_weights", S, plan.kb, plan.smem, plan.t)(
        plan.grid, (plan.threads,),
        (dy, x, out) + i32_memo(dims + (plan.cb, plan.pb, plan.ldq, plan.ldx, plan.chunk)), shared_mem=plan.smem)
    if splits > 1:
        gemm.splitk_reduce(out, dW, None, K, C * R * S, splits, 0, 0)
    return dW


class _DataLaunch(NamedTuple):
    plan: DataPlan
    off: int             # the partial dx slabs' offset in the workspace (split k range only)
    need: int            # workspace floats
    transpose_grid: tuple
    transpose_args: tuple
    args: tuple          # conv_patch_backward_data's scalar arguments


@functools.lru_cache(maxsize=4096)
def _data_launch(dims: tuple, sms: int) -> _DataLaunch | None:
    """``data_plan`` and everything else ``backward_data`` launches with that depends on the shape only,
    made once per (dims, SMs); None where the layer cannot run."""
    plan = data_plan(dims, sms)
    if plan is None:
        return None
    N, C, H, Wd, K, R, S = dims[:7]
    n = K * C * R * S
    off, need = _data_layout(dims, plan)
    return _DataLaunch(plan, off, need, (min(blocks(n, 256), 132 * 8),), _i32(K, C, R * S),
                       _i32(*dims) + _i32(plan.ct_shift, plan.wch, plan.hb, plan.kc, plan.ldd, plan.kz))


def backward_data(dy, W, dx, dims, workspace=None, check: bool = True):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S); returns dx.

    ``workspace``: float32, at least ``workspace_size(...)`` elements (W copied to (K, R, S, C), then the
    partial dx of each split), or None for the runtime's shared workspace. ``check=False``: the caller has
    checked the arrays' shapes (the conv entry points). Raises ValueError for a layer it cannot run."""
    dims = tuple(dims)
    launch = _data_launch(dims, runtime.sm_count())
    if launch is None:
        raise ValueError(_unfit_message("backward_data", dims))
    if check:
        _check(dims, {"dy": dy, "W": W, "dx": dx}, "backward_data")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    plan = launch.plan
    splits = plan.grid[2]
    ws = checked_workspace(workspace, launch.need, "conv.patch.backward_data", "conv2d_workspace_size")
    # NOTE: addresses, not CuPy slices: a slice costs microseconds of host time per eager call
    wt = np.uint64(ws.data.ptr)
    out = dx if splits == 1 else np.uint64(ws.data.ptr + 4 * launch.off)
    kernel("conv_patch_transpose_w", S)(launch.transpose_grid, (256,), (W, wt) + launch.transpose_args)
    kernel("conv_patch_backward_data", S)(plan.grid, (plan.threads,), (dy, wt, out) + launch.args,
                                          shared_mem=plan.smem)
    if splits > 1:
        gemm.splitk_reduce(out, dx, None, N * C, H * Wd, splits, 0, 0)
    return dx
