"""conv2d backward for layers with few input channels (C <= 8), in ``kernels/conv_smallc.cu``.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); NCHW, cross-correlation, W (K, C, R, S); ``dims`` is conv.py's 13-tuple
(N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw).

    backward-data:     dx[n,c,h,w] = sum over (k,r,s) with h+ph-r = p*sh, w+pw-s = q*sw of W[k,c,r,s] dy[n,k,p,q]
    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]

Why separate kernels: conv.py's implicit GEMMs have M = C (backward-data) or N = C*R*S (backward-weights).
With C = 1 or 3 (the first layer of a CNN) their 32..128-wide tiles are mostly padding and the gather
index math dominates, so these layers ran at 0.16-0.33 of cuDNN. The kernels here are direct:

  ``conv_smallc_backward_weights``: for a fixed output row (n, p) and (c, r), the sum over q is a 1-D
      correlation of the dy row with one x row. A group of threads stages one output row (dy for a chunk
      of k, the C*R x rows zero-padded) in shared memory; each thread owns 4 k x one (c, r) and keeps
      4*S sums in registers over all the rows its group handles (16*S FMAs per 4 LDS.128 + 3*sw+S LDS).
      Each block writes its partial dW (groups added in order) to ``workspace``; ``conv_smallc_reduce``
      adds the blocks' partials in a fixed order (deterministic, no atomics).
  ``conv_smallc_backward_weights_v2`` (the default): the same row correlations over bands of PB output
      rows, software-pipelined: while a block computes one work item (image n, band of PB rows of p, all
      k of its k-chunk) from shared memory, cp.async copies the next item's dy band and x rows into the
      other of two buffers. Thread = 4 k x one (c, r) x one band row, its 4*S sums in registers over all
      the block's items; the block adds its band rows in order and writes one partial dW to
      ``workspace``; ``conv_smallc_reduce_v2`` adds the partials in a fixed order. Why: v1 staged one
      output row per group with scalar loads (a 64-bit index and two divisions per element) and no
      overlap of loads and FMAs, so its rows' load latency was paid serially (H100: 0.47-0.61 of cuDNN
      on the C=1/3 layers). Measured on the H100 (dev/conv_smallc_bench.py, GPU time per call from a CUDA
      graph, dW alone): N256 C3 32x32 K32 3x3 33.5 us (v1 81.9, cuDNN 61.3); N256 C1 28x28 K32 5x5
      24.2 us (v1 49.4, cuDNN 54.2); ResNet stem N64 557 us (v1 862, cuDNN 807).
  ``conv_smallc_forward`` (session 3): one thread computes FU = 8 consecutive q of one output row for
      FK = 8 consecutive k; per (c, r) it loads the 7*sw+S x values those outputs need into registers once
      and does 8*S*8 FMAs with W from shared memory (broadcast reads). conv.py's implicit GEMM reduces over
      only C*R*S = 9..49 there with M = K rows of a 128-row tile (LeNet conv1 forward, N1024: 194 us).
  ``conv_smallc_backward_data``: per stride phase (as conv.py's v3/v4), one thread computes 4 consecutive
      pixels of a phase row for all C channels; per (k, tap row) it loads the St+3 dy values those pixels
      need once and does 4*St*C FMAs with W from shared memory (broadcast reads).

``backward_weights(..., version=)`` picks "v1" or "v2"; "auto" (default) is v2 wherever it has a plan
(``weights_plan``), else v1. S and sw (and C for backward-data) are compile-time: one module per value
set, compiled on first use.
Outputs are written (``=``). With ``dx`` / ``dW`` and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable).

Example::

    dims = conv._dims(x.shape, W.shape, stride, padding)
    if fits(C, K, R, S, x_shape=x.shape, stride=stride, padding=padding):
        backward_weights(dy, x, dW, dims)   # dW (K, C, R, S)
        backward_data(dy, W, dx, dims)      # dx (N, C, H, W)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ._compile import blocks, check_array, checked_workspace, kernel_function
from ._compile import i32 as _i32

MAX_C = 8                   # channels held in registers by backward-data (acc[C][4])
MAX_S = 8                   # kernel width: backward-weights keeps 4*S sums per thread
SMEM_BYTES = 48 * 1024      # dynamic shared memory without the opt-in
WEIGHTS_THREADS = 384       # conv_smallc_backward_weights' __launch_bounds__(384, 2)
DATA_THREADS = 256
KT = 4                      # k per backward-weights task
U = 4                       # q per backward-weights step (dy rows padded to a multiple of U)
TW = 4                      # phase pixels per backward-data thread
FAMILY = "conv_smallc"
V2_THREADS = 512            # conv_smallc_backward_weights_v2's __launch_bounds__(512)
V2_SMEM_BYTES = 96 * 1024   # v2's two buffers may exceed 48 KB (opt-in); 96 KB fits 2 blocks per H100 SM
REDUCE_V2_THREADS = 1024    # conv_smallc_reduce_v2: 32 warps split the partials
# Occupancy model of the v2 grid (H100 per SM: 2048 threads, 64K registers, 228 KB shared memory, 1 KB of it
# reserved per block); registers per thread as ptxas reported for sm_90 (60 at S=1 .. 124 at S=8).
SM_THREADS, SM_REGS, SM_SMEM = 2048, 65536, 228 * 1024
MAX_BLOCKS_PER_SM = 4       # more blocks only add partial sums to reduce


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class WeightsPlan(NamedTuple):
    kc: int          # k per chunk (multiple of KT)
    xld: int         # row stride of the staged x rows (odd)
    gstride: int     # shared floats per group (multiple of 4)
    groups: int      # G, groups per block
    threads: int     # G * (kc/KT) * C*R
    smem: int        # dynamic shared memory, bytes
    grid: int        # blocks = partial sums in the workspace


def _plan_v1(dims, sms: int = 132) -> WeightsPlan | None:
    """Launch plan of conv_smallc_backward_weights (v1) for ``dims``, or None if it cannot run."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S):
        return None
    CR, CRS = C * R, C * R * S
    Qp = _ceil(Q, U) * U
    xld = ((Qp - 1) * sw + S) | 1  # odd: the C*R rows read at one column hit distinct banks

    def group_floats(kc):  # (kc, Qp) dy rows + (C*R, xld) x rows, 16-byte aligned
        return _ceil(kc * Qp + CR * xld, 4) * 4

    def ok(kc):  # threads within the launch bound; staging, and the kc*CRS group sums, in shared memory
        return (kc // KT) * CR <= WEIGHTS_THREADS and 4 * max(group_floats(kc), kc * CRS) <= SMEM_BYTES

    Kp = _ceil(K, KT) * KT
    kc_max = next((kc for kc in range(Kp, 0, -KT) if ok(kc)), None)
    if kc_max is None:
        return None
    chunks = _ceil(Kp, kc_max)
    kc = _ceil(Kp // KT, chunks) * KT  # balanced chunks, each <= kc_max
    T = (kc // KT) * CR
    gstride = group_floats(kc)
    G = max(1, min(WEIGHTS_THREADS // T, SMEM_BYTES // (4 * gstride)))
    smem = 4 * max(G * gstride, kc * CRS)
    grid = max(1, min(2 * sms, _ceil(N * P, G)))  # ~2 blocks per SM, no more groups than rows (n, p)
    return WeightsPlan(kc, xld, gstride, G, G * T, smem, grid)


class WeightsPlanV2(NamedTuple):
    kc: int          # k per chunk (multiple of KT); chunks = grid.y
    pb: int          # output rows per band (work item = image n, band)
    qs: int          # row stride of the staged dy rows (multiple of 4, qs/4 odd)
    xld: int         # row stride of the staged x rows (odd)
    stage: int       # floats per buffer (multiple of 4); two buffers
    threads: int     # (kc/KT) * C*R * pb
    smem: int        # dynamic shared memory, bytes: 4*max(2*stage, pb*kc*C*R*S)
    grid: int        # blocks along x = partial sums in the workspace
    kchunks: int     # blocks along y


def _v2_regs(S: int) -> int:
    return min(128, 52 + 8 * S)  # ptxas, sm_90: S=1 60, S=3 76, S=5 88, S=7 106-115, S=8 124


def plan_v2(dims, kc: int, pb: int, grid: int | None = None, sms: int = 132) -> WeightsPlanV2:
    """v2's launch plan with k-chunk ``kc`` (a multiple of KT) and band height ``pb`` given (the derived
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
        per_sm = min(MAX_BLOCKS_PER_SM, SM_THREADS // (32 * warps), SM_REGS // (32 * warps * _v2_regs(S)),
                     SM_SMEM // (smem + 1024))
        grid = max(1, min(N * _ceil(P, pb), _ceil(max(1, per_sm) * sms, kchunks)))
    return WeightsPlanV2(kc, pb, qs, xld, stage, threads, smem, grid, kchunks)


def _plan_v2(dims, sms: int) -> WeightsPlanV2 | None:
    """v2's plan: the fewest k-chunks whose (kc/4)*C*R tasks fit V2_THREADS and whose two buffers fit
    V2_SMEM_BYTES; then the band height pb that wastes the least (band rows past P, idle lanes of the last
    warp), among those within 5% of the best the one nearest 256 threads; then the grid of ``plan_v2``."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    CR = C * R
    Kq = _ceil(K, KT)
    kcs = sorted({_ceil(Kq, chunks) * KT for chunks in range(1, Kq + 1)}, reverse=True)  # balanced chunks
    for kc in kcs:
        if (kc // KT) * CR > V2_THREADS:
            continue
        cands = []
        for pb in range(1, min(P, V2_THREADS // ((kc // KT) * CR)) + 1):
            plan = plan_v2(dims, kc, pb, 1, sms)
            if plan.smem > V2_SMEM_BYTES:
                break  # grows with pb
            eff = P / (_ceil(P, pb) * pb) * plan.threads / (_ceil(plan.threads, 32) * 32)
            cands.append((eff, pb, plan.threads))
        if not cands:
            continue
        best = max(cand[0] for cand in cands)
        near = [cand for cand in cands if cand[0] >= 0.95 * best]
        _, pb, _ = min(near, key=lambda cand: (abs(cand[2] - 256), -cand[1]))
        return plan_v2(dims, kc, pb, None, sms)
    return None


def weights_plan(dims, sms: int = 132, version: str = "auto"):
    """Launch plan of the backward-weights kernel ``version`` ("v1", "v2"; "auto": v2 where it has a plan,
    else v1) for ``dims``: a ``WeightsPlan`` (v1) or ``WeightsPlanV2``, or None if it cannot run."""
    return _weights_plan(tuple(int(v) for v in dims), int(sms), version)


# NOTE: cached: v2's plan search costs ~50 us of Python, which an eager call would pay every time (measured
# on the H100 machine: eager dW calls 93-123 us for 24-34 us of GPU time before this cache).
@functools.lru_cache(maxsize=4096)
def _weights_plan(dims: tuple, sms: int, version: str):
    if version not in ("auto", "v1", "v2"):
        raise ValueError(f"conv_smallc.weights_plan: version={version!r}; use 'auto', 'v1' or 'v2'")
    N, C, H, Wd, K, R, S = dims[:7]
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S):
        return None
    if version != "v1":
        plan = _plan_v2(dims, sms)
        if plan is not None or version == "v2":
            return plan
    return _plan_v1(dims, sms)


def fits(C, K, R, S, *, x_shape=None, stride=1, padding=0) -> bool:
    """Whether both kernels can run: C <= 8, S <= 8, W (K*C*R*S floats) within 48 KB of shared memory
    (backward-data); with ``x_shape`` (N, C, H, W) also that backward-weights' rows fit shared memory."""
    if not (1 <= C <= MAX_C and 1 <= S <= MAX_S and 4 * K * C * R * S <= SMEM_BYTES):
        return False
    if x_shape is None:
        return True
    from .conv import _dims

    try:
        dims = _dims(tuple(x_shape), (K, C, R, S), stride, padding)
    except ValueError:
        return False
    return weights_plan(dims) is not None


def workspace_size(x_shape, w_shape, stride, padding, sms: int | None = None, version: str = "auto") -> int:
    """float32 elements of workspace backward_weights(..., version) needs (per-block partial dW), 0 if it
    needs none.

    ``sms``: the SM count the launch will use (default: the current device's)."""
    from .conv import _dims

    if sms is None:
        from .gemm import _num_sms

        sms = _num_sms()
    dims = _dims(tuple(x_shape), tuple(w_shape), stride, padding)
    plan = weights_plan(dims, sms, version)
    if plan is None:
        raise ValueError(_unfit_message("workspace_size", dims))
    K, C, R, S = w_shape
    return 0 if plan.grid == 1 else plan.grid * K * C * R * S


def _unfit_message(what, dims) -> str:
    N, C, H, Wd, K, R, S, P, Q, sh, sw = dims[:11]
    return (f"conv_smallc.{what}: needs C <= {MAX_C}, S <= {MAX_S}, W (K*C*R*S = {K * C * R * S} floats) within "
            f"{SMEM_BYTES // 1024} KB and one output row's x rows (C*R x ~Q*sw) within {SMEM_BYTES // 1024} KB; "
            f"got C={C}, W ({K}, {C}, {R}, {S}), Q={Q}, sw={sw}. Check fits(...) first and use conv.py's "
            f"conv2d_backward for this layer")


def _get(name: str, smem: int = 0, **defines):
    return kernel_function(FAMILY, name, smem, **defines)


def _check(dims, arrays, what):
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    shapes = {"dy": (N, K, P, Q), "x": (N, C, H, Wd), "dx": (N, C, H, Wd), "W": (K, C, R, S), "dW": (K, C, R, S)}
    for name, a in arrays.items():
        check_array(a, f"conv_smallc.{what}: {name}", shape=shapes[name])


@functools.lru_cache(maxsize=4096)
def _scalars(dims: tuple, plan, vec: int = 0) -> tuple:
    """The int32 scalar arguments of the backward-weights kernel that ``plan`` launches (cached per shape)."""
    if isinstance(plan, WeightsPlanV2):
        return _i32(*dims) + _i32(plan.kc, plan.pb, plan.qs, plan.xld, plan.stage, vec)
    return _i32(*dims) + _i32(plan.kc, plan.xld, plan.gstride)


def backward_weights(dy, x, dW, dims, workspace=None, version="auto", plan=None, sms=None, check=True):
    """dW (K, C, R, S) = sum over n, p, q of dy (N, K, P, Q) times x (N, C, H, W) windows; returns dW.

    ``workspace``: float32, at least ``workspace_size(..., version=version)`` elements, or None for
    gemm.py's shared per-device split buffer. ``version``: "auto" (v2 where it can run, else v1), "v1" or
    "v2". ``plan``: a ``WeightsPlan`` / ``WeightsPlanV2`` instead of ``weights_plan``'s (for tuning runs;
    the workspace must then hold its grid * K*C*R*S partials). ``sms``: the device's SM count (default:
    asked of the device). ``check=False``: the caller has checked dy, x and dW against dims (a tuple of
    ints), as conv.conv2d_backward does."""
    from .gemm import _num_sms

    if check:
        dims = tuple(int(v) for v in dims)
        _check(dims, {"dy": dy, "x": x, "dW": dW}, "backward_weights")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if plan is None:
        plan = _weights_plan(dims, sms or _num_sms(), version)
    if plan is None:
        raise ValueError(_unfit_message("backward_weights", dims))
    n = K * C * R * S
    if plan.grid == 1:
        ws = dW  # one block (per k-chunk): its partial is the result
    else:
        ws = checked_workspace(workspace, plan.grid * n, "conv_smallc.backward_weights",
                               "conv_smallc.workspace_size")
    if isinstance(plan, WeightsPlanV2):
        vec = int(Q % 4 == 0 and dy.data.ptr % 16 == 0)  # 16-byte cp.async of dy rows
        kern = _get("conv_smallc_backward_weights_v2", plan.smem, SC_S=S, SC_SW=sw)
        kern((plan.grid, plan.kchunks), (plan.threads,), (dy, x, ws) + _scalars(dims, plan, vec),
             shared_mem=plan.smem)
        if plan.grid > 1:
            red = _get("conv_smallc_reduce_v2", SC_S=S, SC_SW=sw)
            red((blocks(n, 32),), (REDUCE_V2_THREADS,), (ws, dW, np.int32(n), np.int32(plan.grid)))
        return dW
    kern = _get("conv_smallc_backward_weights", SC_S=S, SC_SW=sw)
    kern((plan.grid,), (plan.threads,), (dy, x, ws) + _scalars(dims, plan), shared_mem=plan.smem)
    if plan.grid > 1:
        red = _get("conv_smallc_reduce", SC_S=S, SC_SW=sw)
        red((blocks(n, 32),), (256,), (ws, dW, np.int32(n), np.int32(plan.grid)))
    return dW


FWD_THREADS = 256
FK, FU = 8, 8               # k and output columns per forward thread (conv_smallc.cu's SC_FK, SC_FU)


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
    check_array(y, "conv_smallc.forward: y", shape=(N, K, P, Q))
    if b is not None:
        check_array(b, "conv_smallc.forward: b", shape=(K,))
    if not forward_fits(dims):
        raise ValueError(f"conv_smallc.forward: needs C <= {MAX_C} and S <= {MAX_S}; got C={C}, W {(K, C, R, S)}. "
                         f"Use conv.conv2d_forward (version 'auto' or 'v2') for this layer")
    vec = int(Q % 4 == 0 and y.data.ptr % 16 == 0)
    kern = _get("conv_smallc_forward", SC_S=S, SC_SW=sw)
    kern((blocks(N * P * _ceil(Q, FU), FWD_THREADS), _ceil(K, FK)), (FWD_THREADS,),
         (x, W, np.uint64(0) if b is None else b, y) + _i32(*dims) + _i32(vec), shared_mem=4 * FK * C * R * S)
    return y


def backward_data(dy, W, dx, dims):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S); returns dx."""
    dims = tuple(int(v) for v in dims)
    _check(dims, {"dy": dy, "W": W, "dx": dx}, "backward_data")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if not fits(C, K, R, S):
        raise ValueError(_unfit_message("backward_data", dims))
    cols = N * _ceil(H, sh) * _ceil(_ceil(Wd, sw), TW)  # threads of the largest phase
    kern = _get("conv_smallc_backward_data", SC_C=C, SC_S=S, SC_SW=sw)
    kern((blocks(cols, DATA_THREADS), 1, sh * sw), (DATA_THREADS,), (dy, W, dx) + _i32(*dims),
         shared_mem=4 * K * C * R * S)
    return dx
