"""2-D convolution on the GPU in our own kernels (``kernels/conv.cu`` on ``kernels/gemm_tiles.cuh``).

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); P = (H + 2ph - R) // sh + 1, Q = (W + 2pw - S) // sw + 1. NCHW, cross-correlation (PyTorch).

    forward:           y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
    backward-data:     dx[n,c,h,w] = sum over (k,r,s) with h+ph-r = p*sh, w+pw-s = q*sw of W[k,c,r,s] dy[n,k,p,q]
    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]
                       db[k]       = sum_{n,p,q} dy[n,k,p,q]

Kernel versions (docs/kernels.md keeps their history):
  v1  ``conv_v1_*``: direct loops, one output element per thread; the correctness baseline.
  v2  ``conv_v2_*``: implicit GEMMs on the tiled-GEMM machinery, no im2col buffer; forward M=K x
      cols=N*P*Q over C*R*S; backward-data M=C x cols=N*H*W over K*R*S; backward-weights M=K x
      cols=C*R*S over N*P*Q with split-K (partials in ``workspace``, added in a fixed order).
  v3  backward-data per stride phase (``conv_v3_backward_data``): grid.z over the sh*sw phases, each a
      dense implicit GEMM M=C x cols=N*(H/sh)*(W/sw) over K*(R/sh)*(S/sw) with no skipped taps; the rest
      as v2. ``conv2d_backward``'s default.
  v4  backward-data for few channels (``conv_v4_backward_data_smallc``, C <= 8): direct, one thread per
      pixel of one stride phase holding all C outputs, W in shared memory. Superseded by v5; kept.
  v5  backward-data for few channels in ``conv_smallc.py`` (4 pixels x C channels per thread, dy values
      shared across taps in registers). ``version="auto"`` (the default of ``conv2d_backward_data`` and
      ``conv2d_backward``) times v3 and v5 once per shape where v5 can run and caches the faster
      (``choose_backward_data``).
  Backward-weights: v2, or for few channels conv_smallc's row-correlation kernel ("smallc"), chosen the
  same way (``choose_backward_weights``). Forward v2 splits the reduction C*R*S over blocks when the
  output alone cannot fill the GPU (small batches; partials in the workspace, added in a fixed order).
  "patch" (both backward passes, ``conv_patch.py``): for multi-tap kernels (3..7 wide, stride 1) a block
  stages an x patch (dW) or a dy patch (dx) in shared memory once and reuses it for all R*S taps as row
  correlations instead of gathering im2col elements per tap; a timed candidate where ``patch_ok``.

Parameter gradients are written (``=``), never accumulated. With ``out``/``dx``/``dW``/``db`` and
``workspace`` (``conv2d_workspace_size`` float32 elements) given, nothing is allocated; everything runs on
CuPy's current stream without host synchronisation (CUDA-graph capturable).

Example::

    y = conv2d_forward(x, W, b, stride=(1, 1), padding=(1, 1))
    dx, dW, db = conv2d_backward(dy, x, W, (1, 1), (1, 1))
"""
from __future__ import annotations

import functools

import numpy as np

from . import conv_patch, conv_smallc, winograd
from ._compile import blocks, check_array, checked_workspace, pair
from ._compile import i32 as _i32
from ._compile import i32_memo
from .gemm import (CONFIG_BY_NAME, _num_sms, _ptr, _vec_ok, choose_config, kernel, split_chunk, split_counters,
                   splitk_reduce)

_NULL = np.uint64(0)  # a null device pointer argument
_GRID_STRIDE_BLOCKS = 132 * 32  # v1 kernels loop over their outputs with a grid-stride loop
# Tile configs the conv kernels were verified with on the H100 (the 8x16 / 16x8 tiles compile for conv
# and are covered by test_conv2d_forward_every_config, which has not run on a GPU yet).
CONV_CONFIGS = tuple(CONFIG_BY_NAME[n] for n in ("128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8", "64x64x8_8x8",
                                                 "32x64x8_4x8", "32x32x8_4x4"))


def conv2d_output_shape(x_shape, w_shape, stride, padding):
    """(N, K, P, Q) of a convolution; raises ValueError when the kernel does not fit the padded input."""
    N, C, H, W = x_shape
    K, Cw, R, S = w_shape
    sh, sw = pair(stride, "stride", "conv2d")
    ph, pw = pair(padding, "padding", "conv2d")
    if C != Cw:
        raise ValueError(f"conv2d: x has {C} channels but W {tuple(w_shape)} expects {Cw}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv2d: stride {stride} must be >= 1 and padding {padding} >= 0")
    P = (H + 2 * ph - R) // sh + 1
    Q = (W + 2 * pw - S) // sw + 1
    if P < 1 or Q < 1:
        raise ValueError(f"conv2d: a {R}x{S} kernel does not fit the {H}x{W} input padded by {padding}")
    return N, K, P, Q


def _dims(x_shape, w_shape, stride, padding):
    """(N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw) of a convolution (memoised: eager calls repeat shapes)."""
    try:
        return _dims_cached(tuple(x_shape), tuple(w_shape), stride, padding)
    except TypeError:   # an unhashable stride or padding (a list): computed, not cached
        return _dims_of(x_shape, w_shape, stride, padding)


@functools.lru_cache(maxsize=4096)
def _dims_cached(x_shape, w_shape, stride, padding):
    return _dims_of(x_shape, w_shape, stride, padding)


def _dims_of(x_shape, w_shape, stride, padding):
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    _, _, P, Q = conv2d_output_shape(x_shape, w_shape, stride, padding)
    sh, sw = pair(stride, "stride", "conv2d")
    ph, pw = pair(padding, "padding", "conv2d")
    return N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw


def _memo_per_regime(fn):
    """``fn`` memoised per (positional) arguments and gemm's launch-cost regime, on which its choice of tile
    and splits depends; a call with unhashable arguments (a list for a stride) is computed, not memoised."""
    memo = functools.lru_cache(maxsize=4096)(lambda launch_s, *args: fn(*args))

    @functools.wraps(fn)
    def wrapper(*args):
        from . import gemm

        try:
            return memo(gemm._LAUNCH_S, *args)
        except TypeError:
            return fn(*args)
    return wrapper


@_memo_per_regime
def _weights_plan(x_shape, w_shape, stride, padding, sms=132):
    """(config, k_chunk, splits) of the backward-weights implicit GEMM: M=K, cols=C*R*S, over N*P*Q."""
    N, C, H, W, K, R, S, P, Q, *_ = _dims(x_shape, w_shape, stride, padding)
    cfg, splits = choose_config(K, C * R * S, N * P * Q, sms, max_splits=256, candidates=CONV_CONFIGS)
    k_chunk, splits = split_chunk(N * P * Q, splits, cfg.bk)
    return cfg, k_chunk, splits


@_memo_per_regime
def _forward_plan(x_shape, w_shape, stride, padding, sms=132):
    """(config, k_chunk, splits) of the forward implicit GEMM: M=K, cols=N*P*Q over C*R*S. Split-K only
    pays where the tiles alone cannot fill the GPU (small batches) and the reduction is long."""
    N, C, H, W, K, R, S, P, Q, *_ = _dims(x_shape, w_shape, stride, padding)
    cfg, splits = choose_config(K, N * P * Q, C * R * S, sms, max_splits=32, candidates=CONV_CONFIGS)
    k_chunk, splits = split_chunk(C * R * S, splits, cfg.bk)
    return cfg, k_chunk, splits


def conv2d_workspace_size(x_shape, w_shape, stride, padding) -> int:
    """float32 elements of workspace the forward+backward of this convolution needs (0 if none).

    The plans depend on the launch cost in force (``gemm.launch_cost``): size the workspace under the
    same setting as the calls that use it."""
    dims = _dims(x_shape, w_shape, stride, padding)
    N, C, H, W, K, R, S, P, Q = dims[:9]
    sms = _sms_or_default()
    _, _, w_splits = _weights_plan(x_shape, w_shape, stride, padding)
    _, _, f_splits = _forward_plan(x_shape, w_shape, stride, padding)
    _, _, d_splits = _data_plan(dims)
    need_w = 0 if w_splits == 1 else w_splits * K * C * R * S
    need_f = 0 if f_splits == 1 else f_splits * K * N * P * Q
    need_d = 0 if d_splits == 1 else d_splits * N * C * H * W
    need_bias = K * _bias_splits(N, K, P * Q, sms)[1]
    need_smallc = 0
    if conv_smallc.weights_plan(dims, sms) is not None:
        need_smallc = conv_smallc.workspace_size(x_shape, w_shape, stride, padding, sms)
    need_wino = max([winograd.workspace_size(x_shape, w_shape, stride, padding, ph, sms)
                     for ph in WINOGRAD_PHASES if winograd_ok(x_shape, w_shape, stride, padding, ph, sms)] + [0])
    # conv_patch wherever it can run (also when called by name, not only where it is a timed candidate)
    need_patch = conv_patch.workspace_size(x_shape, w_shape, stride, padding, sms)
    return max(need_w, need_f, need_smallc, need_bias, need_d, need_wino, need_patch)


WINOGRAD_MIN_CHANNELS = 16      # below this the 16 small GEMMs have too short a reduction to pay
WINOGRAD_MAX_WORKSPACE = 1 << 29  # float32 elements (2 GB): U, V and the GEMM output round-trip HBM
WINOGRAD_PHASES = ("forward", "backward_data", "backward_weights")


def winograd_ok(x_shape, w_shape, stride, padding, phase: str, sms: int | None = None) -> bool:
    """Whether the Winograd kernels (``winograd.py``) are a candidate for this layer and phase ("forward",
    "backward_data" or "backward_weights"): 3x3, stride 1, padding <= 2, >= 16 channels in and out, and a
    workspace within WINOGRAD_MAX_WORKSPACE (``sms``: the SM count the weights plan is made for)."""
    K, C = w_shape[:2]
    if min(C, K) < WINOGRAD_MIN_CHANNELS or not winograd.fits(x_shape, w_shape, stride, padding):
        return False
    return winograd.workspace_size(x_shape, w_shape, stride, padding, phase, sms) <= WINOGRAD_MAX_WORKSPACE


PATCH_MIN_CHANNELS = 8  # below this conv_smallc is the few-channel candidate; a patch kernel's 8-wide tiles idle


def patch_ok(dims, phase: str, sms: int = 132) -> bool:
    """Whether conv_patch's kernel for ``phase`` ("backward_weights" / "backward_data") is a timed candidate
    for this layer: stride 1, a 3..7 tap kernel (R and S: with fewer taps a staged patch is reused too little
    to beat the implicit GEMM), >= PATCH_MIN_CHANNELS input channels, and a launch plan that fits."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if (sh, sw) != (1, 1) or not (3 <= R <= 7 and 3 <= S <= conv_patch.MAX_S) or C < PATCH_MIN_CHANNELS:
        return False
    if phase == "backward_weights":
        return conv_patch.weights_plan(dims, sms) is not None
    return conv_patch.data_plan(dims) is not None


def _sms_or_default() -> int:
    """The current device's SM count, or the H100's 132 where CuPy is absent (plans computed on a CPU)."""
    try:
        return _num_sms()
    except ImportError:
        return 132


def conv2d_forward(x, W, b, stride, padding, out=None, workspace=None, version="auto", config=None,
                   splits=None):
    """y = conv2d(x, W) + b: x (N, C, H, W), W (K, C, R, S), b (K,) or None -> y (N, K, P, Q).

    version: "v1" (direct baseline), "v2" (implicit GEMM), "winograd" (3x3 stride 1, ``winograd.py``),
    "smallc" (few input channels, ``conv_smallc.forward``) or "auto" (the default): v2, or Winograd /
    smallc where they can run and timed faster (cached per shape).
    v2 splits the reduction (C*R*S) over blocks when the output alone cannot fill the GPU (small N):
    partials go to ``workspace`` (``conv2d_workspace_size`` elements; default: the shared per-device
    buffer) and a second kernel adds them in a fixed order. ``config``/``splits`` override v2's choice.
    """
    import cupy

    check_array(x, "x", ndim=4)
    check_array(W, "W", ndim=4)
    dims = _dims(x.shape, W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if b is not None:
        check_array(b, "b", shape=(K,))
    if out is None:
        out = cupy.empty((N, K, P, Q), dtype=np.float32)
    else:
        check_array(out, "out", shape=(N, K, P, Q))
    if version == "v1":
        kern = kernel("conv", "conv_v1_forward")
        kern((min(blocks(out.size, 256), _GRID_STRIDE_BLOCKS),), (256,), (x, W, _ptr(b), out) + _i32(*dims))
        return out
    if version == "auto":
        version = "v2" if config is not None or splits is not None else choose_forward(x, W, b, out, dims, workspace)
    if version == "winograd":
        return winograd.forward(x, W, b, out, (ph, pw), workspace)
    if version == "smallc":
        return conv_smallc.forward(x, W, b, out, dims)
    if version != "v2":
        raise ValueError(f"conv2d_forward: version={version!r}; use 'auto', 'v1', 'v2', 'winograd' or 'smallc'")
    cols, CRS = N * P * Q, C * R * S
    cfg, k_chunk, n_splits = _forward_plan(x.shape, W.shape, stride, padding, _num_sms())
    if config is not None:
        cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
    if config is not None or splits is not None:
        k_chunk, n_splits = split_chunk(CRS, n_splits if splits is None else splits, cfg.bk)
    kern = kernel("conv", "conv_v2_forward", cfg)
    flags = int(_vec_ok(W, CRS))
    grid = (blocks(cols, cfg.bn), blocks(K, cfg.bm), n_splits)
    if n_splits == 1:
        kern(grid, (cfg.threads,), (x, W, _ptr(b), out, np.uint64(0)) + i32_memo(dims + (k_chunk, flags)),
             shared_mem=cfg.smem_bytes)
        return out
    ws = checked_workspace(workspace, n_splits * K * cols, "conv2d_forward", "conv2d_workspace_size")
    kern(grid, (cfg.threads,), (x, W, _ptr(b), out, ws) + i32_memo(dims + (k_chunk, flags | 2)),
         shared_mem=cfg.smem_bytes)
    kernel("conv", "conv_splitk_reduce_nchw")((min(blocks(out.size, 256), 132 * 16),), (256,),
                                                 (ws, out, _ptr(b)) + _i32(N, K, P * Q, n_splits))
    return out


def _bias_splits(N: int, K: int, PQ: int, sms: int = 132) -> tuple[int, int]:
    """(nchunk, splits) of the bias gradient: images per block and blocks per channel, so that K*splits
    fills ~4 blocks per SM while each block still sums >= ~8K elements."""
    want = min(N, max(1, -(-4 * sms // K)), max(1, N * PQ // 8192))
    nchunk = -(-N // want)
    return nchunk, -(-N // nchunk)


@functools.lru_cache(maxsize=4096)
def _bias_launch(shape: tuple, sms: int) -> tuple:
    """(splits, scalar arguments, finish grid, finish scalars) of ``bias_grad`` for dy of this shape."""
    N, K, P, Q = shape
    nchunk, splits = _bias_splits(N, K, P * Q, sms)
    return splits, _i32(N, K, P * Q, nchunk), (blocks(K, 128),), _i32(K, splits)


def bias_grad(dy, db, workspace=None, serial=True, sms=None):
    """db[k] = sum of dy[:, k] over n, p, q (deterministic); dy (N, K, P, Q) -> db (K,). Partial sums
    per (k, chunk of images) go to ``workspace`` (K*splits floats; default: the shared split buffer).
    ``serial``: the last block of each channel sums its partials in the same launch (gemm's per-device
    arrival counters); else a second kernel does. Both add them in the same order: the same bits.
    ``sms``: the device's SM count (default: asked of the device)."""
    K = dy.shape[1]
    splits, scalars, finish_grid, finish_scalars = _bias_launch(dy.shape, sms or _sms_or_default())
    part_kern = kernel("conv", "conv_bias_grad_partial")
    if splits == 1:
        part_kern((K, 1), (256,), (dy, db, _NULL, _NULL) + scalars)
        return db
    part = checked_workspace(workspace, K * splits, "conv bias_grad", "conv2d_workspace_size")
    if serial:
        part_kern((K, splits), (256,), (dy, part, db, split_counters(K)) + scalars)
        return db
    part_kern((K, splits), (256,), (dy, part, _NULL, _NULL) + scalars)
    kernel("conv", "conv_bias_grad_finish")(finish_grid, (128,), (part, db) + finish_scalars)
    return db


def conv2d_backward(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None,
                    need_db=True, version="auto", weights_version="auto"):
    """(dx or None, dW, db or None) for dy (N, K, P, Q), x (N, C, H, W), W (K, C, R, S).

    ``workspace``: at least ``conv2d_workspace_size(...)`` float32 elements, or None to use the shared
    per-device split-K buffer of gemm.py. need_db=False skips db (a layer without bias). ``version``
    picks the backward-data kernel ("v1" the direct baseline for both passes), ``weights_version`` the
    backward-weights one ("auto", "v2", "smallc", "winograd", "patch").
    """
    import cupy

    check_array(dy, "dy", ndim=4)
    check_array(x, "x", ndim=4)
    check_array(W, "W", ndim=4)
    dims = _dims(x.shape, W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    check_array(dy, "dy", shape=(N, K, P, Q))
    if dW is None:
        dW = cupy.empty(W.shape, dtype=np.float32)
    else:
        check_array(dW, "dW", shape=W.shape)
    if need_dx:
        if dx is None:
            dx = cupy.empty(x.shape, dtype=np.float32)
        else:
            check_array(dx, "dx", shape=x.shape)
    else:
        dx = None
    sms = _num_sms()
    if need_db:
        if db is None:
            db = cupy.empty((K,), dtype=np.float32)
        else:
            check_array(db, "db", shape=(K,))
        bias_grad(dy, db, workspace, sms=sms)
    else:
        db = None

    if version == "v1":
        grid = lambda n: (min(blocks(n, 256), _GRID_STRIDE_BLOCKS),)  # noqa: E731
        if need_dx:
            backward_data(dy, W, dx, dims, "v1")
        kernel("conv", "conv_v1_backward_weights")(grid(dW.size), (256,), (dy, x, dW) + _i32(*dims))
        return dx, dW, db

    if need_dx:
        backward_data(dy, W, dx, dims, version, sms, workspace=workspace)
    # NOTE: check=False: dy, x and dW were checked above against dims
    backward_weights(dy, x, dW, dims, workspace, weights_version, sms, check=False)
    return dx, dW, db


def backward_weights(dy, x, dW, dims, workspace=None, version="auto", sms=132, check=True):
    """dW from dy (N, K, P, Q) and x (N, C, H, W) with the v2 implicit GEMM (split-K), for few channels
    conv_smallc's row-correlation kernel ("smallc"), or for 3x3 stride 1 Winograd F(3x3, 2x2)
    ("winograd"); "auto" picks by a cached timing (``choose_backward_weights``). ``check=False``: the
    caller has checked dy, x and dW against dims (conv_smallc then skips its own checks)."""
    if version == "auto":
        version = choose_backward_weights(dy, x, dW, dims, workspace, sms)
    if version == "smallc":
        return conv_smallc.backward_weights(dy, x, dW, dims, workspace, sms=sms, check=check)
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if version == "winograd":
        return winograd.backward_weights(dy, x, dW, (ph, pw), workspace)
    if version == "patch":
        return conv_patch.backward_weights(dy, x, dW, dims, workspace)
    if version != "v2":
        raise ValueError(f"conv backward_weights: version={version!r}; use 'auto', 'v2', 'smallc', 'winograd' or "
                         f"'patch'")
    cfg, k_chunk, splits = _weights_plan((N, C, H, Wd), (K, C, R, S), (sh, sw), (ph, pw), sms)
    CRS = C * R * S
    kern = kernel("conv", "conv_v2_backward_weights", cfg)
    grid = (blocks(CRS, cfg.bn), blocks(K, cfg.bm), splits)
    if splits == 1:
        kern(grid, (cfg.threads,), (dy, x, dW) + i32_memo(dims + (k_chunk, _vec_ok(dW, CRS))),
             shared_mem=cfg.smem_bytes)
        return dW
    workspace = checked_workspace(workspace, splits * K * CRS, "conv2d_backward", "conv2d_workspace_size")
    kern(grid, (cfg.threads,), (dy, x, workspace) + i32_memo(dims + (k_chunk, _vec_ok(workspace, CRS))),
         shared_mem=cfg.smem_bytes)
    splitk_reduce(workspace, dW, None, K, CRS, splits, 0, 0)
    return dW


def conv2d_backward_data(dy, W, x_shape, stride, padding, dx=None, workspace=None, version="auto"):
    """dx alone (what ``conv2d_backward`` computes with need_dx=True): dy (N, K, P, Q), W (K, C, R, S)
    -> dx (x_shape = (N, C, H, W)). ``workspace``: split-K partials of small batches (stride 1), at
    least ``conv2d_workspace_size(...)`` float32 elements, or None for the shared per-device buffer."""
    import cupy

    check_array(dy, "dy", ndim=4)
    check_array(W, "W", ndim=4)
    dims = _dims(tuple(x_shape), W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    check_array(dy, "dy", shape=(N, K, P, Q))
    if dx is None:
        dx = cupy.empty(tuple(x_shape), dtype=np.float32)
    else:
        check_array(dx, "dx", shape=tuple(x_shape))
    return backward_data(dy, W, dx, dims, version, _num_sms(), workspace=workspace)


SMALLC_MAX = 8  # conv.cu's SMALLC_MAX


def smallc_fits(C, K, R, S) -> bool:
    """Whether conv_v4_backward_data_smallc can run: few channels, W in 48 KB of shared memory."""
    return C <= SMALLC_MAX and K * C * R * S <= 12288


_choices: dict = {}


def _device_id() -> int:
    import cupy

    return cupy.cuda.Device().id


def _timed_choice(key, candidates, default: str) -> str:
    """The kernel version for ``key``: the cached one, else the fastest of ``candidates()`` (a callable
    returning {name: call}, asked only on a cache miss, so a repeated call pays one dict lookup), timed
    once and cached per launch-cost regime (``gemm.launch_cost``: the graph's, keyed ``key + ("graph",)``,
    or an eager one). Eagerly (host launch cost ~20 us) a candidate is worth what 5 back-to-back eager
    calls take, its extra launches' host time included; under the graph launch cost, the GPU time of 5
    calls queued behind a sleep kernel (what a replayed graph sees). Each is the least of 2 interleaved
    rounds, after 2 warm-up calls (until session 4: one round of 3 eager calls, for both regimes; small
    layers' eager rows then varied up to 1.7x from one H100 run to the next). A single candidate is
    cached untimed. Inside a CUDA-graph capture an uncached key gets ``default`` (nothing can be timed there)."""
    from . import gemm

    graph = gemm._LAUNCH_S <= gemm.GRAPH_LAUNCH_S
    if graph:
        key = key + ("graph",)
    chosen = _choices.get(key)
    if chosen is not None:
        return chosen
    calls = candidates()
    if len(calls) == 1:
        _choices[key] = next(iter(calls))
        return _choices[key]
    import cupy

    stream = cupy.cuda.get_current_stream()
    if stream.ptr and cupy.cuda.runtime.streamIsCapturing(stream.ptr):
        return default
    for call in calls.values():
        call()
        call()
    names = list(calls)
    times = gemm.time_calls([calls[n] for n in names], reps=5, behind_sleep=graph)
    _choices[key] = names[min(range(len(names)), key=times.__getitem__)]
    return _choices[key]


def choose_forward(x, W, b, out, dims, workspace=None) -> str:
    """"v2", "winograd" (3x3 stride 1, ``winograd_ok``) or "smallc" (few input channels,
    ``conv_smallc.forward_fits``) for this shape, the fastest when first timed (cached per device, shape
    and bias presence)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims

    def candidates():
        names = ["v2"]
        if winograd_ok((N, C, H, Wd), (K, C, R, S), (sh, sw), (ph, pw), "forward"):
            names.append("winograd")
        if conv_smallc.forward_fits(dims):
            names.append("smallc")
        return {v: functools.partial(conv2d_forward, x, W, b, (sh, sw), (ph, pw), out, workspace, v) for v in names}

    return _timed_choice(("forward", _device_id(), dims, b is None), candidates, "v2")


def choose_backward_data(dy, W, dx, dims, sms=132, workspace=None) -> str:
    """"v3", "v5" (conv_smallc, few channels) or "winograd" (3x3 stride 1, >= 16 channels) for this
    shape: the candidates that can run, then whichever ran fastest when first timed (cached per device
    and shape). Inside a CUDA-graph capture an uncached shape gets v3."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims

    def candidates():
        names = ["v3"]
        if conv_smallc.fits(C, K, R, S):
            names.append("v5")
        if winograd_ok((N, C, H, Wd), (K, C, R, S), (sh, sw), (ph, pw), "backward_data"):
            names.append("winograd")
        if patch_ok(dims, "backward_data", sms):
            names.append("patch")
        return {v: functools.partial(backward_data, dy, W, dx, dims, v, sms, workspace=workspace) for v in names}

    return _timed_choice(("data", _device_id(), dims), candidates, "v3")


def weights_candidates(dims, sms=132) -> list:
    """The backward-weights versions that can run this layer: "v2", and "smallc", "winograd", "patch" where
    they fit (what ``choose_backward_weights`` times)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    names = ["v2"] + (["smallc"] if conv_smallc.weights_plan(dims, sms) is not None else [])
    if winograd_ok((N, C, H, Wd), (K, C, R, S), (sh, sw), (ph, pw), "backward_weights", sms):
        names.append("winograd")
    if patch_ok(dims, "backward_weights", sms):
        names.append("patch")
    return names


def choose_backward_weights(dy, x, dW, dims, workspace=None, sms=132) -> str:
    """"v2", "smallc" (few channels) or "winograd" (3x3 stride 1, ``winograd_ok``) for this shape, chosen
    like ``choose_backward_data``; "v2" inside a capture for an uncached shape."""
    def candidates():
        return {v: functools.partial(backward_weights, dy, x, dW, dims, workspace, v, sms)
                for v in weights_candidates(dims, sms)}

    return _timed_choice(("weights", _device_id(), dims), candidates, "v2")


def backward_data(dy, W, dx, dims, version="v3", sms=132, config=None, workspace=None):
    """dx from dy (N, K, P, Q) and W (K, C, R, S) with the v1, v2 (gather), v3 (per stride phase), v4 or
    v5 (few channels) kernel; "auto" picks v3 or v5 (``choose_backward_data``). v3 with stride 1 splits
    the reduction for small batches: partials in ``workspace`` (default: the shared split buffer)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if version == "auto":
        version = choose_backward_data(dy, W, dx, dims, sms, workspace)
    if version == "v1":
        grid = (min(blocks(dx.size, 256), _GRID_STRIDE_BLOCKS),)
        kernel("conv", "conv_v1_backward_data")(grid, (256,), (dy, W, dx) + _i32(*dims))
        return dx
    if version == "v5":
        return conv_smallc.backward_data(dy, W, dx, dims)
    if version == "winograd":
        return winograd.backward_data(dy, W, dx, (ph, pw), workspace)
    if version == "patch":
        return conv_patch.backward_data(dy, W, dx, dims, workspace)
    if version == "v4":
        if not smallc_fits(C, K, R, S):
            raise ValueError(f"conv backward_data v4: needs C <= {SMALLC_MAX} and W within 48 KB; got C={C}, "
                             f"W ({K}, {C}, {R}, {S})")
        cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
        kern = kernel("conv", "conv_v4_backward_data_smallc")
        kern((blocks(cols, 256), 1, sh * sw), (256,), (dy, W, dx) + _i32(*dims), shared_mem=4 * K * C * R * S)
        return dx
    if version == "v2":
        cols = N * H * Wd
        cfg = config or choose_config(C, cols, K * R * S, sms, max_splits=1, candidates=CONV_CONFIGS)[0]
        kern = kernel("conv", "conv_v2_backward_data", cfg)
        kern((blocks(cols, cfg.bn), blocks(C, cfg.bm)), (cfg.threads,), (dy, W, dx) + _i32(*dims),
             shared_mem=cfg.smem_bytes)
        return dx
    if version != "v3":
        raise ValueError(f"conv backward_data: version={version!r}; use 'auto', 'v1', 'v2', 'v3', 'v4', 'v5', "
                         f"'winograd' or 'patch'")
    cfg, k_chunk, splits = _data_plan(dims, sms)
    if config is not None:
        cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
        k_chunk, splits = split_chunk(K * R * S, splits, cfg.bk) if splits > 1 else (0, 1)
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    kern = kernel("conv", "conv_v3_backward_data", cfg)
    if splits == 1:
        kern((blocks(cols, cfg.bn), blocks(C, cfg.bm), sh * sw), (cfg.threads,),
             (dy, W, dx) + _i32(*dims) + (np.uint64(0), np.int32(0)), shared_mem=cfg.smem_bytes)
        return dx
    ws = checked_workspace(workspace, splits * C * cols, "conv backward_data", "conv2d_workspace_size")
    kern((blocks(cols, cfg.bn), blocks(C, cfg.bm), splits), (cfg.threads,),
         (dy, W, dx) + _i32(*dims) + (ws, np.int32(k_chunk)), shared_mem=cfg.smem_bytes)
    kernel("conv", "conv_splitk_reduce_nchw")((min(blocks(dx.size, 256), 132 * 16),), (256,),
                                              (ws, dx, np.uint64(0)) + _i32(N, C, H * Wd, splits))
    return dx


def _data_plan(dims, sms=132):
    """(config, k_chunk, splits) of v3 backward-data. Split-K (stride 1 only, where there is one phase)
    when the pixels alone cannot fill the GPU (small batches) and the reduction K*R*S is long."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    red = K * -(-R // sh) * -(-S // sw)
    if sh * sw > 1:
        return choose_config(C, cols * sh * sw, red, sms, max_splits=1, candidates=CONV_CONFIGS)[0], 0, 1
    cfg, splits = choose_config(C, cols, red, sms, max_splits=32, candidates=CONV_CONFIGS)
    k_chunk, splits = split_chunk(red, splits, cfg.bk)
    return cfg, k_chunk, splits
