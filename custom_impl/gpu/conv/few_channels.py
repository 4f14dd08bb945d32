"""conv2d for layers with few input channels (C <= 8), in ``kernels/conv_few_channels.cu``: the algorithm
"few_channels" of every phase.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); NCHW, cross-correlation, W (K, C, R, S); ``dims`` a ``ConvDims`` (geometry.py).

    forward:           y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
    backward-data:     dx[n,c,h,w] = sum over (k,r,s) with h+ph-r = p*sh, w+pw-s = q*sw of W[k,c,r,s] dy[n,k,p,q]
    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]

Why separate kernels: the implicit GEMMs (implicit_gemm.py) have M = C (backward-data) or N = C*R*S
(backward-weights). With C = 1 or 3 (the first layer of a CNN) their 32..128-wide tiles are mostly padding
and the gather index math dominates, so these layers ran at 0.16-0.33 of cuDNN. The kernels here are direct.

Backward-weights, two launch shapes of one algorithm (row correlations), chosen by a rule (``weights_plan``):
"bands" wherever it has a launch plan, else "rows".
  "rows" (``conv_few_channels_wgrad_rows``): for a fixed output row (n, p) and (c, r), the sum over q is a
      1-D correlation of the dy row with one x row. A group of threads stages one output row (dy for a
      chunk of k, the C*R x rows zero-padded) in shared memory; each thread owns 4 k x one (c, r) and keeps
      4*S sums in registers over all the rows its group handles (16*S FMAs per 4 LDS.128 + 3*sw+S LDS).
      Each block writes its partial dW (groups added in order) to ``workspace``;
      ``conv_few_channels_reduce_rows`` adds the blocks' partials in a fixed order (deterministic, no atomics).
  "bands" (``conv_few_channels_wgrad_bands``): the same row correlations over bands of PB output rows,
      software-pipelined: while a block computes one work item (image n, band of PB rows of p, all k of its
      k-chunk) from shared memory, cp.async copies the next item's dy band and x rows into the other of two
      buffers. Thread = 4 k x one (c, r) x one band row, its 4*S sums in registers over all the block's
      items; the block adds its band rows in order and writes one partial dW to ``workspace``;
      ``conv_few_channels_reduce_bands`` adds the partials in a fixed order. Why it is preferred: "rows"
      stages one output row per group with scalar loads (a 64-bit index and two divisions per element) and
      no overlap of loads and FMAs, so its rows' load latency is paid serially (H100: 0.47-0.61 of cuDNN on
      the C=1/3 layers). Measured on the H100 (GPU time per call from a CUDA graph, dW alone): N256 C3 32x32
      K32 3x3 33.5 us ("rows" 81.9, cuDNN 61.3); N256 C1 28x28 K32 5x5 24.2 us ("rows" 49.4, cuDNN 54.2);
      ResNet stem N64 557 us ("rows" 862, cuDNN 807). "rows" remains for the few shapes "bands" has no plan
      for (its two staging buffers must fit 96 KB and its threads 512: e.g. C=8, a 7x5 kernel, Q=200).
  ``conv_few_channels_fwd``: one thread computes FU = 8 consecutive q of one output row for FK = 8
      consecutive k; per (c, r) it loads the 7*sw+S x values those outputs need into registers once and
      does 8*S*8 FMAs with W from shared memory (broadcast reads). The implicit GEMM reduces over only
      C*R*S = 9..49 there with M = K rows of a 128-row tile (LeNet conv1 forward, N1024: 194 us).
  ``conv_few_channels_dgrad``: per stride phase (as conv_implicit_gemm_dgrad), one thread computes 4
      consecutive pixels of a phase row for all C channels; per (k, tap row) it loads the St+3 dy values
      those pixels need once and does 4*St*C FMAs with W from shared memory (broadcast reads).

S and sw (and C for backward-data) are compile-time: one module per value set, compiled on first use.
Outputs are written (``=``). With ``dx`` / ``dW`` and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable).

Example::

    dims = conv_dims(x.shape, W.shape, stride, padding)
    if fits(C, K, R, S, x_shape=x.shape, stride=stride, padding=padding):
        backward_weights(dy, x, dW, dims)   # dW (K, C, R, S)
        backward_data(dy, W, dx, dims)      # dx (N, C, H, W)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import runtime
from ..runtime import blocks, check_array, checked_workspace
from ..runtime import i32 as _i32
from .geometry import conv_dims

MAX_C = 8                   # channels held in registers by backward-data (acc[C][4])
MAX_S = 8                   # kernel width: backward-weights keeps 4*S sums per thread
# Backward-data keeps only 4*C sums and ceil(S/sw) + 3 dy values per thread, so it takes wider kernels (speech
# convs over spectrograms: 5x20, 41x11); 32 taps need 114 registers at C = 8 (ptxas, sm_90), no spills.
# W sits in shared memory: up to DATA_SMEM_BYTES (opted in above 48 KB; DeepSpeech 2's 41x11, K = 32 takes
# 57 KB, 3 blocks per H100 SM).
DATA_MAX_S = 32
DATA_SMEM_BYTES = 64 * 1024
SMEM_BYTES = 48 * 1024      # dynamic shared memory without the opt-in
ROWS_THREADS = 384          # conv_few_channels_wgrad_rows' __launch_bounds__(384, 2)
DATA_THREADS = 256
KT = 4                      # k per backward-weights task
U = 4                       # q per backward-weights step (dy rows padded to a multiple of U)
TW = 4                      # phase pixels per backward-data thread
FAMILY = "conv_few_channels"
BANDS_THREADS = 512         # conv_few_channels_wgrad_bands' __launch_bounds__(512)
BANDS_SMEM_BYTES = 96 * 1024  # the bands' two buffers may exceed 48 KB (opt-in); 96 KB fits 2 blocks per H100 SM
REDUCE_BANDS_THREADS = 1024   # conv_few_channels_reduce_bands: 32 warps split the partials
# Occupancy model of the bands grid (H100 per SM: 2048 threads, 64K registers, 228 KB shared memory, 1 KB of it
# reserved per block); registers per thread as ptxas reported for sm_90 (60 at S=1 .. 124 at S=8).
SM_THREADS, SM_REGS, SM_SMEM = 2048, 65536, 228 * 1024
MAX_BLOCKS_PER_SM = 4       # more blocks only add partial sums to reduce


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class RowsPlan(NamedTuple):
    kc: int          # k per chunk (multiple of KT)
    xld: int         # row stride of the staged x rows (odd)
    gstride: int     # shared floats per group (multiple of 4)
    groups: int      # G, groups per block
    threads: int     # G * (kc/KT) * C*R
    smem: int        # dynamic shared memory, bytes
    grid: int        # blocks = partial sums in the workspace


def _rows_plan(dims, sms: int = 132) -> RowsPlan | None:
    """Launch plan of conv_few_channels_wgrad_rows for ``dims``, or None if it cannot run."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S):
        return None
    CR, CRS = C * R, C * R * S
    Qp = _ceil(Q, U) * U
    xld = ((Qp - 1) * sw + S) | 1  # odd: the C*R rows read at one column hit distinct banks

    def group_floats(kc):  # (kc, Qp) dy rows + (C*R, xld) x rows, 16-byte aligned
        return _ceil(kc * Qp + CR * xld, 4) * 4

    def ok(kc):  # threads within the launch bound; staging, and the kc*CRS group sums, in shared memory
        return (kc // KT) * CR <= ROWS_THREADS and 4 * max(group_floats(kc), kc * CRS) <= SMEM_BYTES

    Kp = _ceil(K, KT) * KT
    kc_max = next((kc for kc in range(Kp, 0, -KT) if ok(kc)), None)
    if kc_max is None:
        return None
    chunks = _ceil(Kp, kc_max)
    kc = _ceil(Kp // KT, chunks) * KT  # balanced chunks, each <= kc_max
    T = (kc // KT) * CR
    gstride = group_floats(kc)
    G = max(1, min(ROWS_THREADS // T, SMEM_BYTES // (4 * gstride)))
    smem = 4 * max(G * gstride, kc * CRS)
    grid = max(1, min(2 * sms, _ceil(N * P, G)))  # ~2 blocks per SM, no more groups than rows (n, p)
    return RowsPlan(kc, xld, gstride, G, G * T, smem, grid)


class BandsPlan(NamedTuple):
    kc: int          # k per chunk (multiple of KT); chunks = grid.y
    pb: int          # output rows per band (work item = image n, band)
    qs: int          # row stride of the staged dy rows (multiple of 4, qs/4 odd)
    xld: int         # row stride of the staged x rows (odd)
    stage: int       # floats per buffer (multiple of 4); two buffers
    threads: int     # (kc/KT) * C*R * pb
    smem: int        # dynamic shared memory, bytes: 4*max(2*stage, pb*kc*C*R*S)
    grid: int        # blocks along x = partial sums in the workspace
    kchunks: int     # blocks along y


def _bands_regs(S: int) -> int:
    return min(128, 52 + 8 * S)  # ptxas, sm_90: S=1 60, S=3 76, S=5 88, S=7 106-115, S=8 124


def bands_plan(dims, kc: int, pb: int, grid: int | None = None, sms: int = 132) -> BandsPlan:
    """The bands' launch plan with k-chunk ``kc`` (a multiple of KT) and band height ``pb`` given (the derived
    strides and sizes filled in); ``grid`` None: ~MAX_BLOCKS_PER_SM blocks per SM, fewer where registers,
    threads or shared memory allow fewer, at most one per work item. Limits are not checked here."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    CR, CRS = C * R, C * R * S
    Qp = _ceil(Q, U) * U
    qs = Qp if (Qp // 4) % 2 == 1 else Qp + 4      # qs/4 odd: 8 consecutive rows in distinct bank quads
    xld = ((Qp - 1) * sw + S) | 1                  # odd: distinct rows at one column in distinct banks
    stage = _ceil(kc * pb * qs + C * ((pb - 1) * sh + R) * xld, 4) * 4
    threads = (kc // KT) * CR * pb
    smem = 4 * max(2 * stage, pb * kc * CRS)
    kchunks = _ceil(K, kc)
    if grid is None:
        warps = _ceil(threads, 32)
        per_sm = min(MAX_BLOCKS_PER_SM, SM_THREADS // (32 * warps), SM_REGS // (32 * warps * _bands_regs(S)),
                     SM_SMEM // (smem + 1024))
        grid = max(1, min(N * _ceil(P, pb), _ceil(max(1, per_sm) * sms, kchunks)))
    return BandsPlan(kc, pb, qs, xld, stage, threads, smem, grid, kchunks)


def _bands_plan(dims, sms: int) -> BandsPlan | None:
    """The bands' plan: the fewest k-chunks whose (kc/4)*C*R tasks fit BANDS_THREADS and whose two buffers
    fit BANDS_SMEM_BYTES; then the band height pb that wastes the least (band rows past P, idle lanes of the
    last warp), among those within 5% of the best the one nearest 256 threads; then the grid of
    ``bands_plan``."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    CR = C * R
    Kq = _ceil(K, KT)
    kcs = sorted({_ceil(Kq, chunks) * KT for chunks in range(1, Kq + 1)}, reverse=True)  # balanced chunks
    for kc in kcs:
        if (kc // KT) * CR > BANDS_THREADS:
            continue
        cands = []
        for pb in range(1, min(P, BANDS_THREADS // ((kc // KT) * CR)) + 1):
            plan = bands_plan(dims, kc, pb, 1, sms)
            if plan.smem > BANDS_SMEM_BYTES:
                break  # grows with pb
            eff = P / (_ceil(P, pb) * pb) * plan.threads / (_ceil(plan.threads, 32) * 32)
            cands.append((eff, pb, plan.threads))
        if not cands:
            continue
        best = max(cand[0] for cand in cands)
        near = [cand for cand in cands if cand[0] >= 0.95 * best]
        _, pb, _ = min(near, key=lambda cand: (abs(cand[2] - 256), -cand[1]))
        return bands_plan(dims, kc, pb, None, sms)
    return None


WEIGHTS_LAUNCHES = ("auto", "rows", "bands")


def weights_plan(dims, sms: int = 132, launch: str = "auto"):
    """Launch plan of backward-weights' ``launch`` shape ("rows", "bands"; "auto": "bands" where it has a
    plan, else "rows") for ``dims``: a ``RowsPlan`` or ``BandsPlan``, or None if it cannot run."""
    return _weights_plan(tuple(int(v) for v in dims), int(sms), launch)


# NOTE: cached: the bands' plan search costs ~50 us of Python, which an eager call would pay every time
# (measured on the H100 machine: eager dW calls 93-123 us for 24-34 us of GPU time before this cache).
@functools.lru_cache(maxsize=4096)
def _weights_plan(dims: tuple, sms: int, launch: str):
    if launch not in WEIGHTS_LAUNCHES:
        raise ValueError(f"conv.few_channels.weights_plan: launch={launch!r}; use 'auto', 'rows' or 'bands'")
    N, C, H, Wd, K, R, S = dims[:7]
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S):
        return None
    if launch != "rows":
        plan = _bands_plan(dims, sms)
        if plan is not None or launch == "bands":
            return plan
    return _rows_plan(dims, sms)


def data_fits(C, K, R, S) -> bool:
    """Whether ``backward_data`` can run: C <= MAX_C, S <= DATA_MAX_S, W (K*C*R*S floats) within
    DATA_SMEM_BYTES of shared memory."""
    return 1 <= C <= MAX_C and 1 <= S <= DATA_MAX_S and 4 * K * C * R * S <= DATA_SMEM_BYTES


def fits(C, K, R, S, *, x_shape=None, stride=1, padding=0) -> bool:
    """Whether both kernels can run: C <= 8, S <= 8, W (K*C*R*S floats) within 48 KB of shared memory
    (backward-data); with ``x_shape`` (N, C, H, W) also that backward-weights' rows fit shared memory."""
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S and 4 * K * C * R * S <= SMEM_BYTES):
        return False
    if x_shape is None:
        return True
    try:
        dims = conv_dims(tuple(x_shape), (K, C, R, S), stride, padding)
    except ValueError:
        return False
    return weights_plan(dims) is not None


def workspace_size(x_shape, w_shape, stride, padding, sms: int | None = None, launch: str = "auto") -> int:
    """float32 elements of workspace backward_weights(..., launch) needs (per-block partial dW), 0 if it
    needs none.

    ``sms``: the SM count the launch will use (default: the current device's)."""
    if sms is None:
        sms = runtime.sm_count()
    dims = conv_dims(tuple(x_shape), tuple(w_shape), stride, padding)
    plan = weights_plan(dims, sms, launch)
    if plan is None:
        raise ValueError(_unfit_message("workspace_size", dims))
    K, C, R, S = w_shape
    return 0 if plan.grid == 1 else plan.grid * K * C * R * S


def _unfit_message(what, dims) -> str:
    N, C, H, Wd, K, R, S, P, Q, sh, sw = dims[:11]
    return (f"conv.few_channels.{what}: needs C <= {MAX_C}, S <= {MAX_S}, W (K*C*R*S = {K * C * R * S} floats) within "
            f"{SMEM_BYTES // 1024} KB and one output row's x rows (C*R x ~Q*sw) within {SMEM_BYTES // 1024} KB; "
            f"got C={C}, W ({K}, {C}, {R}, {S}), Q={Q}, sw={sw}. Check fits(...) first and use another "
            f"algorithm for this layer ('implicit_gemm', or 'auto')")


def kernel(name: str, smem: int = 0, **defines):
    """The compiled kernel ``name`` for the compile-time shape ``defines`` (SC_S, SC_SW, SC_C), opted into
    ``smem`` bytes of dynamic shared memory (memoised per device by the runtime)."""
    return runtime.kernel(FAMILY, name, defines, smem)


def _check(dims, arrays, what):
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    shapes = {"dy": (N, K, P, Q), "x": (N, C, H, Wd), "dx": (N, C, H, Wd), "W": (K, C, R, S), "dW": (K, C, R, S)}
    for name, a in arrays.items():
        check_array(a, f"conv.few_channels.{what}: {name}", shape=shapes[name])


@functools.lru_cache(maxsize=4096)
def _scalars(dims: tuple, plan, vec: int = 0) -> tuple:
    """The int32 scalar arguments of the backward-weights kernel that ``plan`` launches (cached per shape)."""
    if isinstance(plan, BandsPlan):
        return _i32(*dims) + _i32(plan.kc, plan.pb, plan.qs, plan.xld, plan.stage, vec)
    return _i32(*dims) + _i32(plan.kc, plan.xld, plan.gstride)


def backward_weights(dy, x, dW, dims, workspace=None, launch="auto", plan=None, sms=None, check=True):
    """dW (K, C, R, S) = sum over n, p, q of dy (N, K, P, Q) times x (N, C, H, W) windows; returns dW.

    ``workspace``: float32, at least ``workspace_size(..., launch=launch)`` elements, or None for the
    runtime's shared workspace. ``launch``: "auto" ("bands" where it can run, else "rows"), "rows" or
    "bands". ``plan``: a ``RowsPlan`` / ``BandsPlan`` instead of ``weights_plan``'s (for tuning runs;
    the workspace must then hold its grid * K*C*R*S partials). ``sms``: the device's SM count (default:
    asked of the device). ``check=False``: the caller has checked dy, x and dW against dims (a tuple of
    ints), as conv.conv2d_backward does."""
    if check:
        dims = tuple(int(v) for v in dims)
        _check(dims, {"dy": dy, "x": x, "dW": dW}, "backward_weights")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if plan is None:
        plan = _weights_plan(dims, sms or runtime.sm_count(), launch)
    if plan is None:
        raise ValueError(_unfit_message("backward_weights", dims))
    n = K * C * R * S
    if plan.grid == 1:
        ws = dW  # one block (per k-chunk): its partial is the result
    else:
        ws = checked_workspace(workspace, plan.grid * n, "conv.few_channels.backward_weights",
                               "conv.few_channels.workspace_size")
    if isinstance(plan, BandsPlan):
        vec = int(Q % 4 == 0 and dy.data.ptr % 16 == 0)  # 16-byte cp.async of dy rows
        kern = kernel("conv_few_channels_wgrad_bands", plan.smem, SC_S=S, SC_SW=sw)
        kern((plan.grid, plan.kchunks), (plan.threads,), (dy, x, ws) + _scalars(dims, plan, vec),
             shared_mem=plan.smem)
        if plan.grid > 1:
            red = kernel("conv_few_channels_reduce_bands", SC_S=S, SC_SW=sw)
            red((blocks(n, 32),), (REDUCE_BANDS_THREADS,), (ws, dW, np.int32(n), np.int32(plan.grid)))
        return dW
    kern = kernel("conv_few_channels_wgrad_rows", SC_S=S, SC_SW=sw)
    kern((plan.grid,), (plan.threads,), (dy, x, ws) + _scalars(dims, plan), shared_mem=plan.smem)
    if plan.grid > 1:
        red = kernel("conv_few_channels_reduce_rows", SC_S=S, SC_SW=sw)
        red((blocks(n, 32),), (256,), (ws, dW, np.int32(n), np.int32(plan.grid)))
    return dW


FWD_THREADS = 256
FK, FU = 8, 8               # k and output columns per forward thread (conv_few_channels.cu's SC_FK, SC_FU)


def forward_fits(dims) -> bool:
    """Whether ``forward`` can run this layer: C <= MAX_C, S <= MAX_S (compile-time window), the k groups
    within grid.y and the output row count within int32."""
    N, C, H, Wd, K, R, S, P, Q = (int(v) for v in dims[:9])
    return (1 <= C <= MAX_C and 1 <= S <= MAX_S and _ceil(K, FK) <= 65535
            and N * P * _ceil(Q, FU) < 2**31 - FWD_THREADS)


def forward(x, W, b, y, dims):
    """y (N, K, P, Q) = conv2d(x (N, C, H, W), W (K, C, R, S)) + b (K,) or None; returns y."""
    dims = tuple(int(v) for v in dims)
    _check(dims, {"x": x, "W": W}, "forward")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    check_array(y, "conv.few_channels.forward: y", shape=(N, K, P, Q))
    if b is not None:
        check_array(b, "conv.few_channels.forward: b", shape=(K,))
    if not forward_fits(dims):
        raise ValueError(f"conv.few_channels.forward: needs C <= {MAX_C} and S <= {MAX_S}; got C={C}, "
                         f"W {(K, C, R, S)}. Use conv2d_forward with algo 'auto' or 'implicit_gemm' for this layer")
    vec = int(Q % 4 == 0 and y.data.ptr % 16 == 0)
    kern = kernel("conv_few_channels_fwd", SC_S=S, SC_SW=sw)
    kern((blocks(N * P * _ceil(Q, FU), FWD_THREADS), _ceil(K, FK)), (FWD_THREADS,),
         (x, W, np.uint64(0) if b is None else b, y) + _i32(*dims) + _i32(vec), shared_mem=4 * FK * C * R * S)
    return y


def backward_data(dy, W, dx, dims):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S); returns dx."""
    dims = tuple(int(v) for v in dims)
    _check(dims, {"dy": dy, "W": W, "dx": dx}, "backward_data")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if not data_fits(C, K, R, S):
        raise ValueError(f"conv.few_channels.backward_data: needs C <= {MAX_C}, S <= {DATA_MAX_S} and W "
                         f"(K*C*R*S floats) within {DATA_SMEM_BYTES // 1024} KB; got W ({K}, {C}, {R}, {S}). Check "
                         "data_fits(...) first and use another algorithm for this layer ('implicit_gemm', or 'auto')")
    cols = N * _ceil(H, sh) * _ceil(_ceil(Wd, sw), TW)  # threads of the largest phase
    smem = 4 * K * C * R * S
    kern = kernel("conv_few_channels_dgrad", smem, SC_C=C, SC_S=S, SC_SW=sw)
    kern((blocks(cols, DATA_THREADS), 1, sh * sw), (DATA_THREADS,), (dy, W, dx) + _i32(*dims), shared_mem=smem)
    return dx
