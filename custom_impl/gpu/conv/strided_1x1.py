"""Backward-data of a strided 1x1 convolution (no padding) as a stride-1 one plus a scatter: the algorithm
"strided_1x1" (``kernels/conv_strided_1x1.cu`` for the scatter).

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, stride (sh, sw); NCHW, W (K, C, 1, 1);
``dims`` a ``ConvDims`` (geometry.py).

A 1x1 conv with stride (sh, sw) and no padding reads x only at h = p*sh, w = q*sw, so

    dxc[n,c,p,q] = sum_k W[k,c] dy[n,k,p,q]                  (a 1x1 stride-1 backward-data: one GEMM)
    dx[n,c,h,w]  = dxc[n, c, h/sh, w/sw] where sh | h and sw | w, else 0

``backward_data`` runs the first line through the implicit GEMM (implicit_gemm.py) over an (N, C, P, Q)
input, into the workspace, with split-K where its plan takes it; one scatter kernel then writes every
element of dx once. Why: the implicit GEMM's own strided backward-data runs one GEMM per stride phase
without split-K and writes dx at stride sw; on an H100 (2026-12-06, the networks suite's ResNet-50
downsample shortcuts) it ran 1.1-2.4x slower than this decomposition (docs/kernels.md). "auto" times both.

Outputs are written (``=``). With ``dx`` and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable).

Example::

    dims = conv_dims((64, 256, 56, 56), (512, 256, 1, 1), stride=2, padding=0)
    if fits(dims):
        backward_data(dy, W, dx, dims, workspace)     # dx (64, 256, 56, 56)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import runtime
from ..runtime import blocks, checked_workspace, i32
from . import implicit_gemm
from .geometry import ConvDims

FAMILY = "conv_strided_1x1"
THREADS = 256
SCATTER = {True: "conv_strided_1x1_scatter_i32", False: "conv_strided_1x1_scatter"}  # by: indices fit int32


def fits(dims) -> bool:
    """Whether this algorithm can run the layer: a 1x1 kernel, no padding, a stride other than (1, 1)."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    return (R, S, ph, pw) == (1, 1, 0, 0) and (sh, sw) != (1, 1)


def stride1_dims(dims) -> ConvDims:
    """The ``ConvDims`` of the stride-1 1x1 conv over the (N, C, P, Q) pixels the strided one reads."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    return ConvDims(N, C, P, Q, K, 1, 1, P, Q, 1, 1, 0, 0)


class Plan(NamedTuple):
    flat: ConvDims       # the stride-1 conv
    n_dxc: int           # its output, first in the workspace
    size: int            # workspace floats: dxc, then the stride-1 GEMM's split-K partials
    grid: tuple          # the scatter's grid: one thread per 4 consecutive w of one row of dx
    small: bool          # the scatter's indices fit int32: its 32-bit entry point (SCATTER)
    groups: object       # its thread count, as that entry point's integer type
    scalars: tuple       # (H, W, P, Q, sh, sw) as int32


def plan(dims, sms: int = 132) -> Plan:
    """The launch plan of ``backward_data`` for this layer, under the launch cost in force (the stride-1
    GEMM's split-K depends on it); memoised: a repeated eager call pays one lookup."""
    return _plan(tuple(dims), sms, runtime.launch_cost())


@functools.lru_cache(maxsize=4096)
def _plan(dims, sms, launch_s) -> Plan:
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    flat = stride1_dims(dims)
    n_dxc = N * C * P * Q
    groups = N * C * H * -(-Wd // 4)
    small = groups < 2**31
    return Plan(flat, n_dxc, n_dxc + implicit_gemm.workspace_size(flat, sms), (blocks(groups, THREADS),),
                small,
                np.uint32(groups) if small else np.int64(groups), i32(H, Wd, P, Q, sh, sw))


def workspace_size(dims, sms: int = 132) -> int:
    """float32 elements of workspace ``backward_data`` needs: dxc (N*C*P*Q) and the stride-1 GEMM's
    split-K partials after it (0 where the layer does not fit)."""
    return plan(dims, sms).size if fits(dims) else 0


def modules() -> list:
    """(family, defines) of this family's one kernel module."""
    return [(FAMILY, {})]


def backward_data(dy, W, dx, dims, workspace=None, sms=132):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, 1, 1), checked by the caller (``fits(dims)``)."""
    if not fits(dims):
        N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
        raise ValueError(f"conv2d backward_data: algo 'strided_1x1' runs 1x1 kernels with a stride and no padding; "
                         f"this layer is {R}x{S}, stride {(sh, sw)}, padding {(ph, pw)}: use algo='auto' or "
                         "'implicit_gemm'")
    p = plan(dims, sms)
    ws = checked_workspace(workspace, p.size, "conv backward_data (strided_1x1)", "conv2d_workspace_size")
    dxc = ws[:p.n_dxc].reshape(p.flat.N, p.flat.C, p.flat.H, p.flat.W)
    implicit_gemm.backward_data(dy, W, dxc, p.flat, ws[p.n_dxc:], sms)
    vec = np.int32(dims[3] % 4 == 0 and dx.data.ptr % 16 == 0)
    runtime.kernel(FAMILY, SCATTER[p.small])(p.grid, (THREADS,), (dxc, dx, p.groups) + p.scalars + (vec,))
    return dx


runtime.register_modules(modules)
