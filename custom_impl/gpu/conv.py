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
      pixel of one stride phase holding all C outputs, W in shared memory. Passed the GPU tests on the
      H100; ``version="auto"`` (the default of ``conv2d_backward_data`` and ``conv2d_backward``) times v3
      and v4 once per shape where v4 can run and caches the faster (``choose_backward_data``).

Parameter gradients are written (``=``), never accumulated. With ``out``/``dx``/``dW``/``db`` and
``workspace`` (``conv2d_workspace_size`` float32 elements) given, nothing is allocated; everything runs on
CuPy's current stream without host synchronisation (CUDA-graph capturable).

Example::

    y = conv2d_forward(x, W, b, stride=(1, 1), padding=(1, 1))
    dx, dW, db = conv2d_backward(dy, x, W, (1, 1), (1, 1))
"""
from __future__ import annotations

import numpy as np

from ._compile import blocks, check_array
from .gemm import CONFIG_BY_NAME, _num_sms, _ptr, _vec_ok, choose_config, kernel, split_chunk, splitk_reduce

_GRID_STRIDE_BLOCKS = 132 * 32  # v1 kernels loop over their outputs with a grid-stride loop
# Tile configs the conv kernels were verified with on the H100 (the 8x16 / 16x8 tiles compile for conv
# and are covered by test_conv2d_forward_every_config, which has not run on a GPU yet).
CONV_CONFIGS = tuple(CONFIG_BY_NAME[n] for n in ("128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8", "64x64x8_8x8",
                                                 "32x64x8_4x8", "32x32x8_4x4"))


def _pair(v, what):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"conv2d: {what} must be an int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def conv2d_output_shape(x_shape, w_shape, stride, padding):
    """(N, K, P, Q) of a convolution; raises ValueError when the kernel does not fit the padded input."""
    N, C, H, W = x_shape
    K, Cw, R, S = w_shape
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
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
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    _, _, P, Q = conv2d_output_shape(x_shape, w_shape, stride, padding)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    return N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw


def _i32(*vals):
    return tuple(np.int32(v) for v in vals)


def _weights_plan(x_shape, w_shape, stride, padding, sms=132):
    """(config, k_chunk, splits) of the backward-weights implicit GEMM: M=K, cols=C*R*S, over N*P*Q."""
    N, C, H, W, K, R, S, P, Q, *_ = _dims(x_shape, w_shape, stride, padding)
    cfg, splits = choose_config(K, C * R * S, N * P * Q, sms, max_splits=256, candidates=CONV_CONFIGS)
    k_chunk, splits = split_chunk(N * P * Q, splits, cfg.bk)
    return cfg, k_chunk, splits


def conv2d_workspace_size(x_shape, w_shape, stride, padding) -> int:
    """float32 elements of workspace the forward+backward of this convolution needs (0 if none)."""
    cfg, _, splits = _weights_plan(x_shape, w_shape, stride, padding)
    K, C, R, S = w_shape
    return 0 if splits == 1 else splits * K * C * R * S


def conv2d_forward(x, W, b, stride, padding, out=None, workspace=None, version="v2", config=None):
    """y = conv2d(x, W) + b: x (N, C, H, W), W (K, C, R, S), b (K,) or None -> y (N, K, P, Q)."""
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
    cols = N * P * Q
    if config is None:
        cfg, _ = choose_config(K, cols, C * R * S, _num_sms(), max_splits=1, candidates=CONV_CONFIGS)
    else:
        cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
    kern = kernel("conv", "conv_v2_forward", cfg)
    flags = int(_vec_ok(W, C * R * S))
    kern((blocks(cols, cfg.bn), blocks(K, cfg.bm)), (cfg.threads,),
         (x, W, _ptr(b), out) + _i32(*dims) + (np.int32(flags),))
    return out


def conv2d_backward(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None,
                    need_db=True, version="auto"):
    """(dx or None, dW, db or None) for dy (N, K, P, Q), x (N, C, H, W), W (K, C, R, S).

    ``workspace``: at least ``conv2d_workspace_size(...)`` float32 elements, or None to use the shared
    per-device split-K buffer of gemm.py. need_db=False skips db (a layer without bias).
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
    if need_db:
        if db is None:
            db = cupy.empty((K,), dtype=np.float32)
        else:
            check_array(db, "db", shape=(K,))
        kernel("conv", "conv_bias_grad")((K,), (256,), (dy, db) + _i32(N, K, P * Q))
    else:
        db = None

    if version == "v1":
        grid = lambda n: (min(blocks(n, 256), _GRID_STRIDE_BLOCKS),)  # noqa: E731
        if need_dx:
            backward_data(dy, W, dx, dims, "v1")
        kernel("conv", "conv_v1_backward_weights")(grid(dW.size), (256,), (dy, x, dW) + _i32(*dims))
        return dx, dW, db

    sms = _num_sms()
    if need_dx:
        backward_data(dy, W, dx, dims, version, sms)

    cfg, k_chunk, splits = _weights_plan(x.shape, W.shape, stride, padding, sms)
    CRS = C * R * S
    kern = kernel("conv", "conv_v2_backward_weights", cfg)
    grid = (blocks(CRS, cfg.bn), blocks(K, cfg.bm), splits)
    if splits == 1:
        kern(grid, (cfg.threads,), (dy, x, dW) + _i32(*dims) + _i32(k_chunk, _vec_ok(dW, CRS)))
        return dx, dW, db
    if workspace is None:
        from .gemm import split_workspace

        workspace = split_workspace(splits * K * CRS)
    else:
        check_array(workspace, "workspace", ndim=1)
        if workspace.size < splits * K * CRS:
            raise ValueError(f"conv2d_backward: workspace has {workspace.size} elements, needs "
                             f"{splits * K * CRS}: size it with conv2d_workspace_size")
    kern(grid, (cfg.threads,), (dy, x, workspace) + _i32(*dims) + _i32(k_chunk, _vec_ok(workspace, CRS)))
    splitk_reduce(workspace, dW, None, K, CRS, splits, 0, 0)
    return dx, dW, db


def conv2d_backward_data(dy, W, x_shape, stride, padding, dx=None, workspace=None, version="auto"):
    """dx alone (what ``conv2d_backward`` computes with need_dx=True): dy (N, K, P, Q), W (K, C, R, S)
    -> dx (x_shape = (N, C, H, W)). ``workspace`` is accepted for symmetry and not needed."""
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
    return backward_data(dy, W, dx, dims, version, _num_sms())


SMALLC_MAX = 8  # conv.cu's SMALLC_MAX


def smallc_fits(C, K, R, S) -> bool:
    """Whether conv_v4_backward_data_smallc can run: few channels, W in 48 KB of shared memory."""
    return C <= SMALLC_MAX and K * C * R * S <= 12288


_data_choice: dict = {}


def choose_backward_data(dy, W, dx, dims, sms=132) -> str:
    """"v3" or "v4" for this shape: v4 only where it can run (few channels), then whichever of the two
    ran faster when first timed (CUDA events, 3 calls each after one warm-up; cached per device and
    shape). Inside a CUDA-graph capture nothing can be timed: an uncached shape gets v3 there."""
    import cupy

    N, C, H, Wd, K, R, S = dims[:7]
    if not smallc_fits(C, K, R, S):
        return "v3"
    key = (cupy.cuda.Device().id, dims)
    if key not in _data_choice:
        stream = cupy.cuda.get_current_stream()
        if stream.ptr and cupy.cuda.runtime.streamIsCapturing(stream.ptr):
            return "v3"
        times = {}
        for v in ("v3", "v4"):
            backward_data(dy, W, dx, dims, v, sms)
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            for _ in range(3):
                backward_data(dy, W, dx, dims, v, sms)
            end.record(stream)
            end.synchronize()
            times[v] = cupy.cuda.get_elapsed_time(start, end)
        _data_choice[key] = min(times, key=times.get)
    return _data_choice[key]


def backward_data(dy, W, dx, dims, version="v3", sms=132, config=None):
    """dx from dy (N, K, P, Q) and W (K, C, R, S) with the v1, v2 (gather), v3 (per stride phase) or v4
    (few channels) kernel; "auto" picks v3 or v4 (``choose_backward_data``)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if version == "auto":
        version = choose_backward_data(dy, W, dx, dims, sms)
    if version == "v1":
        grid = (min(blocks(dx.size, 256), _GRID_STRIDE_BLOCKS),)
        kernel("conv", "conv_v1_backward_data")(grid, (256,), (dy, W, dx) + _i32(*dims))
        return dx
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
        kern((blocks(cols, cfg.bn), blocks(C, cfg.bm)), (cfg.threads,), (dy, W, dx) + _i32(*dims))
        return dx
    cols = N * -(-H // sh) * -(-Wd // sw)  # the largest phase
    red = K * -(-R // sh) * -(-S // sw)
    cfg = config or choose_config(C, cols * sh * sw, red, sms, max_splits=1, candidates=CONV_CONFIGS)[0]
    kern = kernel("conv", "conv_v3_backward_data", cfg)
    kern((blocks(cols, cfg.bn), blocks(C, cfg.bm), sh * sw), (cfg.threads,), (dy, W, dx) + _i32(*dims))
    return dx
