"""conv2d as implicit GEMMs on the tiled-GEMM machinery (``kernels/conv_implicit_gemm.cu`` on
``kernels/gemm_tiles.cuh``): the algorithm "implicit_gemm" of every phase, and the bias gradient.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); ``dims`` a ``ConvDims`` (geometry.py). NCHW, cross-correlation (PyTorch).

    forward:           y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
    backward-data:     dx[n,c,h,w] = sum over (k,r,s) with h+ph-r = p*sh, w+pw-s = q*sw of W[k,c,r,s] dy[n,k,p,q]
    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]
                       db[k]       = sum_{n,p,q} dy[n,k,p,q]

No im2col buffer: the GEMM loaders gather operand tiles straight from x / dy / W with index arithmetic.
  ``forward`` (conv_implicit_gemm_fwd): M = K x cols = N*P*Q over C*R*S. Splits the reduction over blocks
      when the output alone cannot fill the GPU (small batches): partials in the workspace, added in a
      fixed order with the bias by conv_splitk_reduce_nchw.
  ``backward_data`` (conv_implicit_gemm_dgrad): one dense GEMM per stride phase (grid.z over the sh*sw
      phases), M = C x cols = N*(H/sh)*(W/sw) over K*(R/sh)*(S/sw), so no skipped (zero) taps are visited.
      With stride 1 (one phase) it splits the reduction for small batches, as the forward does.
  ``pointwise`` layers (a 1x1 kernel, stride 1, no padding, H*W % 4 == 0) run their forward and
      backward-data as plain GEMMs over x / dy seen as (channels, N*H*W) (conv_pointwise_fwd / _dgrad):
      one offset per 4-column group instead of window origins, float4 loads and stores; the same plans,
      and the same bits as the gather kernels, which run where an array is not 16-byte aligned.
  ``backward_weights`` (conv_implicit_gemm_wgrad): M = K x cols = C*R*S over N*P*Q with split-K (partials
      in the workspace, added in a fixed order by gemm's split-K reduce).
  ``bias_grad``: db over (k, chunk of images) blocks, partials added in a fixed order.
Tile configs and splits come from the performance model (tiles.py) under the launch cost in force, so
eager calls and CUDA-graph captures may plan differently; plans are memoised per launch-cost regime. The
GEMM of each phase is then tuned per shape: the first call times the model's best few plans
(``forward_candidates`` / ``data_candidates`` / ``weights_candidates``) on its own arrays and keeps the
fastest (``runtime.autotune``, cached per device and launch-cost regime; the model's plan inside a CUDA-graph
capture). The model is least sure at small batches: for LeNet's 5x5 layer at batch 64 it planned 2 splits of
the 64x128 tile (69.8 us on the H100) where 8 splits ran in 61.5 us (lab/conv/small_batch_probe.py).

Outputs are written (``=``). With the outputs and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable); ``workspace=None`` takes the runtime's shared buffer.

Example::

    dims = conv_dims(x.shape, W.shape, 1, 1)
    forward(x, W, b, y, dims)                    # y (N, K, P, Q)
    backward_data(dy, W, dx, dims)               # dx (N, C, H, W)
    backward_weights(dy, x, dW, dims)            # dW (K, C, R, S)
"""
from __future__ import annotations

import functools

import numpy as np

from .. import runtime
from ..gemm import splitk_reducer
from ..runtime import blocks, checked_workspace, i32, i32_memo, ptr, vec_ok
from ..tiles import CONFIG_BY_NAME, choose_config, pick_candidates, ranked_plans, split_chunk
from .geometry import planning_sms

FAMILY = "conv_implicit_gemm"
# Tile configs the conv kernels were verified with on the H100 (the 8x16 / 16x8 tiles compile for conv
# and are covered by test_conv2d_forward_every_config).
CONFIGS = tuple(CONFIG_BY_NAME[n] for n in ("128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8", "64x64x8_8x8",
                                            "32x64x8_4x8", "32x32x8_4x4"))


def kernel(name: str, cfg=None):
    """The compiled kernel ``name`` of this family, from the module of tile config ``cfg`` (None: the
    module without tile defines, for the bias and reduce kernels); memoised per device."""
    return _kernel(name, cfg, runtime.device_id())


@functools.lru_cache(maxsize=None)
def _kernel(name, cfg, device_id):
    if cfg is None:
        return runtime.kernel(FAMILY, name)
    return runtime.kernel(FAMILY, name, cfg.defines, cfg.smem_bytes)


def modules() -> list:
    """(family, defines) of every module of this family the default path can load."""
    return [(FAMILY, {})] + [(FAMILY, dict(cfg.defines)) for cfg in CONFIGS]


def _memo_per_regime(fn):
    """``fn`` memoised per (positional) arguments and the runtime's launch cost in force, on which its
    choice of tile and splits depends."""
    memo = functools.lru_cache(maxsize=4096)(lambda launch_s, *args: fn(*args))

    @functools.wraps(fn)
    def wrapper(*args):
        return memo(runtime.launch_cost(), *args)
    return wrapper


@_memo_per_regime
def weights_plan(dims, sms=132):
    """(config, k_chunk, splits) of the backward-weights implicit GEMM: M=K, cols=C*R*S, over N*P*Q."""
    N, C, H, W, K, R, S, P, Q, *_ = dims
    cfg, splits = choose_config(K, C * R * S, N * P * Q, sms, max_splits=256, candidates=CONFIGS)
    k_chunk, splits = split_chunk(N * P * Q, splits, cfg.bk)
    return cfg, k_chunk, splits


@_memo_per_regime
def forward_plan(dims, sms=132):
    """(config, k_chunk, splits) of the forward implicit GEMM: M=K, cols=N*P*Q over C*R*S. Split-K only
    pays where the tiles alone cannot fill the GPU (small batches) and the reduction is long."""
    N, C, H, W, K, R, S, P, Q, *_ = dims
    cfg, splits = choose_config(K, N * P * Q, C * R * S, sms, max_splits=32, candidates=CONFIGS)
    k_chunk, splits = split_chunk(C * R * S, splits, cfg.bk)
    return cfg, k_chunk, splits


def data_plan(dims, sms=132):
    """(config, k_chunk, splits) of backward-data. Split-K (stride 1 only, where there is one phase)
    when the pixels alone cannot fill the GPU (small batches) and the reduction K*R*S is long."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    red = K * -(-R // sh) * -(-S // sw)
    if sh * sw > 1:
        return choose_config(C, cols * sh * sw, red, sms, max_splits=1, candidates=CONFIGS)[0], 0, 1
    cfg, splits = choose_config(C, cols, red, sms, max_splits=32, candidates=CONFIGS)
    k_chunk, splits = split_chunk(red, splits, cfg.bk)
    return cfg, k_chunk, splits


TUNE_COUNT = 4                 # plans the tuner times per shape: the model's best few (+ its best unsplit)
TUNE_MAX_PARTIALS = 1 << 24    # floats of split-K partials (64 MB) a timed plan other than the model's may use


def _gemm_sizes(dims, phase):
    """(M, cols, reduction, max splits) of the implicit GEMM of ``phase`` (backward-data: its largest
    stride phase), as the plans weigh them."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if phase == "forward":
        return K, N * P * Q, C * R * S, 32
    if phase == "backward_weights":
        return K, C * R * S, N * P * Q, 256
    cols = N * -(-H // sh) * -(-Wd // sw)
    red = K * -(-R // sh) * -(-S // sw)
    return (C, cols * sh * sw, red, 1) if sh * sw > 1 else (C, cols, red, 32)  # as data_plan weighs them


@_memo_per_regime
def _candidates(dims, phase, sms):
    """The (TileConfig, splits) plans ``phase``'s tuning times: the model's plan, then the cost model's next
    best within the partials cap, TUNE_COUNT in all, plus its best unsplit plan and its best plan by GPU
    time alone where those are not among them.

    NOTE: eagerly every plan whose GPU estimate is under its launches' host time ties in the ranking and
    the tie goes to the first config (128x128), so the first few can all be big tiles; on a small layer
    (GoogLeNet's 5x5 backward-data, 16 channels: M = 16) the small split tile the model ranks fastest on
    the GPU would then never be timed."""
    M, cols, red, max_splits = _gemm_sizes(dims, phase)
    first = _MODEL_PLANS[phase](dims, sms)
    cap = max(TUNE_MAX_PARTIALS, first[2] * M * cols)

    def plans_of(launch_s):
        plans = []
        for cfg, splits, _ in ranked_plans(M, cols, red, sms, max_splits, launch_s, CONFIGS, "launch"):
            splits = split_chunk(red, splits, cfg.bk)[1]
            if (cfg, splits) not in plans and splits * M * cols <= cap:
                plans.append((cfg, splits))
        return plans

    plans = [first[::2]] + [p for p in plans_of(runtime.launch_cost()) if p != first[::2]]
    fastest_gpu = plans_of(0.0)[0]
    return tuple(pick_candidates(plans, TUNE_COUNT, (lambda p: p[1] == 1, lambda p: p == fastest_gpu)))


def forward_candidates(dims, sms=132) -> tuple:
    """The (TileConfig, splits) plans the forward's tuning times, the model's plan (``forward_plan``) first;
    a plan other than it needs at most TUNE_MAX_PARTIALS floats of partials (``workspace_size`` covers
    them all)."""
    return _candidates(dims, "forward", sms)


def data_candidates(dims, sms=132) -> tuple:
    """The (TileConfig, splits) plans backward-data's tuning times, ``data_plan``'s first (strided: one
    split, configs only)."""
    return _candidates(dims, "backward_data", sms)


def weights_candidates(dims, sms=132) -> tuple:
    """The (TileConfig, splits) plans backward-weights' tuning times, ``weights_plan``'s first."""
    return _candidates(dims, "backward_weights", sms)


_MODEL_PLANS = {"forward": forward_plan, "backward_data": data_plan, "backward_weights": weights_plan}


def _call_plan(phase, dims, sms, config, splits, run):
    """(TileConfig, splits) of one call of ``phase``: the tuned plan (``_tuned_plan``), or with ``config``
    (a TileConfig or its name) and / or ``splits`` given, the model's plan with those put in."""
    if config is None and splits is None:
        return _tuned_plan(phase, dims, sms, run)
    cfg, _, planned = _MODEL_PLANS[phase](dims, sms)
    if config is not None:
        cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
    return cfg, planned if splits is None else splits


def _tuned_plan(phase, dims, sms, run):
    """(TileConfig, splits) for this call of ``phase``: cached, else the fastest candidate timed with
    ``run(plan)`` (one call on the caller's arrays; a single candidate is cached untimed), else (capturing,
    or tuning off) the model's. A plan is worth max(GPU time, its launches' host time
    ``runtime.launch_floor``), as in ``tiles.estimate_seconds``."""
    key = (FAMILY, phase, dims, sms)
    hit = runtime.tuned(key)    # the common case: one lookup, no candidate list or closures built
    if hit is not None:
        return hit
    plans = _candidates(dims, phase, sms)
    cost = runtime.launch_cost()

    def worth(plan, ms):
        gpu = ms * 1e-3 / runtime.TUNE_REPS
        return max(gpu, runtime.launch_floor(2 if plan[1] > 1 else 1, cost)), gpu

    return runtime.autotune(key, lambda: {p: functools.partial(run, p) for p in plans}, plans[0], warmups=1,
                            behind_sleep=True, score=worth)


def bias_splits(N: int, K: int, PQ: int, sms: int = 132) -> tuple[int, int]:
    """(nchunk, splits) of the bias gradient: images per block and blocks per channel, so that K*splits
    fills ~4 blocks per SM while each block still sums >= ~2K elements (8 per thread, 2 float4s). Fewer,
    longer blocks left the read latency-bound: LeNet's conv2 at batch 64 (K=64, 12,544 elements a
    channel) ran as 64 blocks on 132 SMs."""
    want = min(N, max(1, -(-4 * sms // K)), max(1, N * PQ // 2048))
    nchunk = -(-N // want)
    return nchunk, -(-N // nchunk)


def workspace_size(dims, sms: int = 132) -> int:
    """float32 elements of workspace the implicit GEMMs and the bias gradient of this layer need (the
    largest of their split-K partials, over every plan the tuning may choose), under the launch cost in
    force."""
    N, C, H, W, K, R, S, P, Q = dims[:9]
    w_splits = max(s for _, s in weights_candidates(dims, sms))
    f_splits = max(s for _, s in forward_candidates(dims, sms))
    d_splits = max(s for _, s in data_candidates(dims, sms))
    need_w = 0 if w_splits == 1 else w_splits * K * C * R * S
    need_f = 0 if f_splits == 1 else f_splits * K * N * P * Q
    need_d = 0 if d_splits == 1 else d_splits * N * C * H * W
    need_bias = K * bias_splits(N, K, P * Q, sms)[1]
    return max(need_w, need_f, need_d, need_bias)


def pointwise(dims) -> bool:
    """Whether the forward and backward-data run as plain GEMMs (conv_pointwise_fwd / _dgrad): a 1x1
    kernel, stride 1, no padding, H*W % 4 == 0 (every 4-column group one float4 of one image's plane;
    the arrays' 16-byte alignment is checked per call)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    return (R, S, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and (H * Wd) % 4 == 0


# Launch memo. A repeated eager call whose plan is tuned (the common case: shapes repeat call after call)
# reuses the launcher its first call built: the kernels, grids and scalar arguments that follow from the
# plan, the shapes and the operands' alignment; such a call pays one dict lookup before its launches
# (lab/conv/host_mock.py). Keyed on everything the launches depend on; emptied with the tuned choices
# (runtime.clear_tuned). A call that names its config or splits, or runs untuned (a capture, tuning off),
# plans first and then finds that plan's launcher memoised under the same key with the plan added.
_launchers = runtime.tuned_memo()


def _align(a):
    """The alignment part of a launcher's key: where an optional array's address sits within 16 bytes."""
    return None if a is None else a.data.ptr & 15


def _launcher(phase, key, dims, sms, config, splits, again, build):
    """The launches of one call of ``phase`` as a function of its arrays: a tuned call's memoised launcher
    (one dict lookup), else the plan's (``_call_plan``; ``again(plan)`` makes the call with a plan, as the
    tuning times them), built by ``build(cfg, splits)`` once per key and plan and memoised under ``key``
    itself once the plan is tuned."""
    tuned = config is None and splits is None
    if tuned:
        launch = _launchers.get(key)
        if launch is not None:
            return launch
    cfg, splits = _call_plan(phase, dims, sms, config, splits, again)
    full = key + (cfg, splits)
    launch = _launchers.get(full)
    if launch is None:
        launch = _launchers[full] = build(cfg, splits)
    if tuned and runtime.tuned((FAMILY, phase, dims, sms)) is not None:
        _launchers[key] = launch
    return launch


def forward(x, W, b, out, dims, workspace=None, sms=132, config=None, splits=None):
    """y = conv2d(x, W) + b into ``out`` (N, K, P, Q); x, W, b (or None) and out checked by the caller.
    ``config`` (a TileConfig or its name) / ``splits`` override the tuned plan's (for tuning runs and
    tests). A ``pointwise`` layer runs conv_pointwise_fwd (the same plan: M = K, cols = N*H*W over C)."""
    key = ("forward", dims, sms, runtime.device_id(), runtime.launch_cost(), x.data.ptr & 15, W.data.ptr & 15,
           out.data.ptr & 15, _align(workspace))
    _launcher("forward", key, dims, sms, config, splits, lambda p: forward(x, W, b, out, dims, workspace, sms, *p),
              lambda cfg, n: _forward_launcher(dims, cfg, n, x, W, out, workspace))(x, W, b, out, workspace)
    return out


def _forward_launcher(dims, cfg, n_splits, x, W, out, workspace):
    """The launches of one forward plan as a function of (x, W, b, out, workspace), for operands aligned
    as these: the implicit GEMM (or conv_pointwise_fwd) and, split, conv_splitk_reduce_nchw."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    cols, CRS, HW = N * P * Q, C * R * S, H * Wd
    k_chunk, n_splits = split_chunk(CRS, n_splits, cfg.bk)
    flags = int(vec_ok(W, CRS)) | (2 if n_splits > 1 else 0)
    grid, block, smem = (blocks(cols, cfg.bn), blocks(K, cfg.bm), n_splits), (cfg.threads,), cfg.smem_bytes
    need = n_splits * K * cols if n_splits > 1 else 0
    ws = checked_workspace(workspace, need, "conv2d_forward", "conv2d_workspace_size") if need else None
    if pointwise(dims) and vec_ok(x, HW) and vec_ok(out, HW) and (not need or vec_ok(ws, cols)):
        kern, scalars = kernel("conv_pointwise_fwd", cfg), i32_memo((N, C, HW, K, k_chunk, flags))
    else:
        kern, scalars = kernel("conv_implicit_gemm_fwd", cfg), i32_memo(dims + (k_chunk, flags))
    if not need:
        def launch(x, W, b, out, workspace):
            kern(grid, block, (x, W, ptr(b), out, runtime.NULL) + scalars, shared_mem=smem)
        return launch
    red = kernel("conv_splitk_reduce_nchw")
    red_grid, red_scalars = (min(blocks(N * K * P * Q, 256), 132 * 16),), i32_memo((N, K, P * Q, n_splits))

    def launch_split(x, W, b, out, workspace):
        ws = checked_workspace(workspace, need, "conv2d_forward", "conv2d_workspace_size")
        bias = ptr(b)
        kern(grid, block, (x, W, bias, out, ws) + scalars, shared_mem=smem)
        red(red_grid, (256,), (ws, out, bias) + red_scalars)
    return launch_split


_VEC = {False: i32(0), True: i32(1)}   # bias_grad's last argument: read dy rows as float4s


@functools.lru_cache(maxsize=4096)
def _bias_launch(shape: tuple, sms: int) -> tuple:
    """(splits, scalar arguments, finish grid, finish scalars) of ``bias_grad`` for dy of this shape."""
    N, K, P, Q = shape
    nchunk, splits = bias_splits(N, K, P * Q, sms)
    return splits, i32(N, K, P * Q, nchunk), (blocks(K, 128),), i32(K, splits)


def bias_grad(dy, db, workspace=None, serial=True, sms=None):
    """db[k] = sum of dy[:, k] over n, p, q (deterministic); dy (N, K, P, Q) -> db (K,). Partial sums
    per (k, chunk of images) go to ``workspace`` (K*splits floats; default: the shared workspace).
    ``serial``: the last block of each channel sums its partials in the same launch (the runtime's
    arrival counters); else a second kernel does. Both add them in the same order: the same bits.
    ``sms``: the device's SM count (default: asked of the device)."""
    K = dy.shape[1]
    splits, scalars, finish_grid, finish_scalars = _bias_launch(dy.shape, sms or planning_sms())
    scalars += _VEC[vec_ok(dy, dy.shape[2] * dy.shape[3])]
    part_kern = kernel("conv_bias_grad_partial")
    if splits == 1:
        part_kern((K, 1), (256,), (dy, db, runtime.NULL, runtime.NULL) + scalars)
        return db
    part = checked_workspace(workspace, K * splits, "conv bias_grad", "conv2d_workspace_size")
    if serial:
        part_kern((K, splits), (256,), (dy, part, db, runtime.counters(K)) + scalars)
        return db
    part_kern((K, splits), (256,), (dy, part, runtime.NULL, runtime.NULL) + scalars)
    kernel("conv_bias_grad_finish")(finish_grid, (128,), (part, db) + finish_scalars)
    return db


def backward_weights(dy, x, dW, dims, workspace=None, sms=132, config=None, splits=None):
    """dW (K, C, R, S) from dy (N, K, P, Q) and x (N, C, H, W), checked by the caller; split-K partials
    in ``workspace`` (default: the shared workspace). ``config`` (a TileConfig or its name) / ``splits``
    override the tuned plan's."""
    key = ("backward_weights", dims, sms, runtime.device_id(), runtime.launch_cost(), dW.data.ptr & 15,
           _align(workspace))
    _launcher("backward_weights", key, dims, sms, config, splits,
              lambda p: backward_weights(dy, x, dW, dims, workspace, sms, *p),
              lambda cfg, n: _weights_launcher(dims, cfg, n, dW, workspace))(dy, x, dW, workspace)
    return dW


def _weights_launcher(dims, cfg, splits, dW, workspace):
    """The launches of one backward-weights plan as a function of (dy, x, dW, workspace), for dW and the
    workspace aligned as these: the implicit GEMM into dW, or split into the workspace and gemm's split-K
    reduce."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    k_chunk, splits = split_chunk(N * P * Q, splits, cfg.bk)
    CRS = C * R * S
    kern = kernel("conv_implicit_gemm_wgrad", cfg)
    grid, block, smem = (blocks(CRS, cfg.bn), blocks(K, cfg.bm), splits), (cfg.threads,), cfg.smem_bytes
    if splits == 1:
        scalars = i32_memo(dims + (k_chunk, vec_ok(dW, CRS)))

        def launch(dy, x, dW, workspace):
            kern(grid, block, (dy, x, dW) + scalars, shared_mem=smem)
        return launch
    need = splits * K * CRS
    ws = checked_workspace(workspace, need, "conv2d_backward", "conv2d_workspace_size")
    scalars = i32_memo(dims + (k_chunk, vec_ok(ws, CRS)))
    reduce = splitk_reducer(K, CRS, splits)

    def launch_split(dy, x, dW, workspace):
        ws = checked_workspace(workspace, need, "conv2d_backward", "conv2d_workspace_size")
        kern(grid, block, (dy, x, ws) + scalars, shared_mem=smem)
        reduce(ws, dW, None)
    return launch_split


def backward_data(dy, W, dx, dims, workspace=None, sms=132, config=None, splits=None):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S), checked by the caller: one GEMM per
    stride phase; with stride 1 the reduction splits for small batches (partials in ``workspace``,
    default: the shared workspace). ``config`` (a TileConfig or its name) / ``splits`` (stride 1 only)
    override the tuned plan's."""
    key = ("backward_data", dims, sms, runtime.device_id(), runtime.launch_cost(), dy.data.ptr & 15,
           W.data.ptr & 15, dx.data.ptr & 15, _align(workspace))
    _launcher("backward_data", key, dims, sms, config, splits,
              lambda p: backward_data(dy, W, dx, dims, workspace, sms, *p),
              lambda cfg, n: _data_launcher(dims, cfg, n, dy, W, dx, workspace))(dy, W, dx, workspace)
    return dx


def _data_launcher(dims, cfg, splits, dy, W, dx, workspace):
    """The launches of one backward-data plan as a function of (dy, W, dx, workspace), for operands aligned
    as these: the implicit GEMM (grid.z the stride phases, or the splits) or conv_pointwise_dgrad and,
    split, conv_splitk_reduce_nchw."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    k_chunk, splits = split_chunk(K * R * S, splits, cfg.bk) if splits > 1 and sh * sw == 1 else (0, 1)
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    need = splits * C * cols if splits > 1 else 0
    ws = checked_workspace(workspace, need, "conv backward_data", "conv2d_workspace_size") if need else None
    grid = (blocks(cols, cfg.bn), blocks(C, cfg.bm), splits if splits > 1 else sh * sw)
    block, smem = (cfg.threads,), cfg.smem_bytes
    HW = H * Wd
    plain = pointwise(dims) and vec_ok(dy, HW) and vec_ok(dx, HW) and (not need or vec_ok(ws, cols))
    if plain:
        flags = int(vec_ok(W, C)) | (2 if splits > 1 else 0)
        kern, scalars = kernel("conv_pointwise_dgrad", cfg), i32_memo((N, C, HW, K, k_chunk if splits > 1 else K,
                                                                        flags))
    else:
        kern, scalars, tail = kernel("conv_implicit_gemm_dgrad", cfg), i32_memo(tuple(dims)), i32_memo((k_chunk,))
    if need:
        red = kernel("conv_splitk_reduce_nchw")
        red_grid, red_scalars = (min(blocks(N * C * HW, 256), 132 * 16),), i32_memo((N, C, HW, splits))

    def launch(dy, W, dx, workspace):
        ws = checked_workspace(workspace, need, "conv backward_data", "conv2d_workspace_size") if need \
            else runtime.NULL
        if plain:
            kern(grid, block, (dy, W, dx, ws) + scalars, shared_mem=smem)
        else:
            kern(grid, block, (dy, W, dx) + scalars + (ws,) + tail, shared_mem=smem)
        if need:
            red(red_grid, (256,), (ws, dx, np.uint64(0)) + red_scalars)
    return launch
