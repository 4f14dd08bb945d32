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
  ``conv_smallc_backward_data``: per stride phase (as conv.py's v3/v4), one thread computes 4 consecutive
      pixels of a phase row for all C channels; per (k, tap row) it loads the St+3 dy values those pixels
      need once and does 4*St*C FMAs with W from shared memory (broadcast reads).

S and sw (and C for backward-data) are compile-time: one module per value set, compiled on first use.
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

from ._compile import blocks, check_array, checked_workspace, function
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


def weights_plan(dims, sms: int = 132) -> WeightsPlan | None:
    """Launch plan of conv_smallc_backward_weights for ``dims``, or None if it cannot run."""
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


def workspace_size(x_shape, w_shape, stride, padding, sms: int | None = None) -> int:
    """float32 elements of workspace backward_weights needs (per-block partial dW), 0 if it needs none.

    ``sms``: the SM count the launch will use (default: the current device's)."""
    from .conv import _dims

    if sms is None:
        from .gemm import _num_sms

        sms = _num_sms()
    dims = _dims(tuple(x_shape), tuple(w_shape), stride, padding)
    plan = weights_plan(dims, sms)
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


@functools.lru_cache(maxsize=None)
def _kernel(name: str, device_id: int, defines: tuple):
    return function(FAMILY, name, **dict(defines))


def _get(name: str, **defines):
    import cupy

    return _kernel(name, cupy.cuda.Device().id, tuple(sorted(defines.items())))


def _check(dims, arrays, what):
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    shapes = {"dy": (N, K, P, Q), "x": (N, C, H, Wd), "dx": (N, C, H, Wd), "W": (K, C, R, S), "dW": (K, C, R, S)}
    for name, a in arrays.items():
        check_array(a, f"conv_smallc.{what}: {name}", shape=shapes[name])


def backward_weights(dy, x, dW, dims, workspace=None):
    """dW (K, C, R, S) = sum over n, p, q of dy (N, K, P, Q) times x (N, C, H, W) windows; returns dW.

    ``workspace``: float32, at least ``workspace_size(...)`` elements, or None for gemm.py's shared
    per-device split buffer."""
    from .gemm import _num_sms

    dims = tuple(int(v) for v in dims)
    _check(dims, {"dy": dy, "x": x, "dW": dW}, "backward_weights")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    plan = weights_plan(dims, _num_sms())
    if plan is None:
        raise ValueError(_unfit_message("backward_weights", dims))
    n = K * C * R * S
    if plan.grid == 1:
        ws = dW  # one block: its partial is the result
    else:
        ws = checked_workspace(workspace, plan.grid * n, "conv_smallc.backward_weights",
                               "conv_smallc.workspace_size")
    kern = _get("conv_smallc_backward_weights", SC_S=S, SC_SW=sw)
    kern((plan.grid,), (plan.threads,), (dy, x, ws) + _i32(*dims) + _i32(plan.kc, plan.xld, plan.gstride),
         shared_mem=plan.smem)
    if plan.grid > 1:
        red = _get("conv_smallc_reduce", SC_S=S, SC_SW=sw)
        red((blocks(n, 32),), (256,), (ws, dW, np.int32(n), np.int32(plan.grid)))
    return dW


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
