"""2-D convolution on the GPU in our own kernels: the public conv ops and the conv layer step.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); P = (H + 2ph - R) // sh + 1, Q = (W + 2pw - S) // sw + 1. NCHW, cross-correlation (PyTorch).

    forward:           y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
    backward-data:     dx[n,c,h,w] = sum over (k,r,s) with h+ph-r = p*sh, w+pw-s = q*sw of W[k,c,r,s] dy[n,k,p,q]
    backward-weights:  dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]
                       db[k]       = sum_{n,p,q} dy[n,k,p,q]

Algorithms, one module per family (``algo=`` / ``weights_algo=``; "auto", the default, picks per shape
in select.py, the one place that decides which algorithms can run a layer and chooses among them by
timing; docs/kernels.md tells what each measured):
  "implicit_gemm" (implicit_gemm.py)  every phase, every shape: implicit GEMMs on the tiled-GEMM machinery,
                                       backward-data one GEMM per stride phase, split-K for small batches.
  "winograd"      (winograd.py)       3x3 or 5x5, stride 1, >= 16 channels: F(2x2, 3x3) / F(3x3, 2x2),
                                      F(2x2, 5x5) / F(5x5, 2x2).
  "winograd4"     (winograd.py)       the same layers as F(4x4, 3x3) / F(3x3, 4x4).
  "few_channels"  (few_channels.py)   C <= 8 (a CNN's first layer): direct register-blocked kernels.
  "patch"         (patch.py)          backward passes of 3..7-tap stride-1 kernels, >= 8 channels: an input
                                       patch staged in shared memory once and reused for every tap.
  "fft"           (fft.py)            every phase of kernels of >= 32 taps (DeepSpeech 2's 21x11), any
                                       stride: tiled FFT convolutions, one small complex GEMM per bin.
  "strided_1x1"   (strided_1x1.py)    backward-data of a 1x1 kernel with a stride and no padding: the
                                       stride-1 implicit GEMM into the workspace, then one scatter into dx.
At ``precision="tf32"`` or ``"bf16"`` the autotuner times, per layer and phase, the tensor-core GEMMs of
``implicit_gemm_tc.py`` (the implicit GEMM, and wgmma's im2col GEMM on H100 / H200) against "rounded": the
operands rounded to the precision into the workspace (``gemm_tc.round_operand``), then the FP32 "auto"
choice on them. Both compute the products of the rounded operands exactly and accumulate in FP32, so they
differ only in summation order; "rounded" wins where a layer suits an FP32 algorithm better (one or three
input channels, or 3x3 layers where Winograd's fewer multiplies outweigh the tensor cores' rate). ``algo`` must then be "auto" or "implicit_gemm" (both take the timed choice),
and the bias gradient stays an FP32 sum. ``conv2d_algorithm`` names what ran ("rounded:few_channels").
FORWARD_ALGOS / DATA_ALGOS / WEIGHTS_ALGOS name them per phase; ``candidates(dims, phase)`` says which can
run a layer (what "auto" times). ``conv_dims`` gives a layer's ``ConvDims``.

Parameter gradients are written (``=``), never accumulated. With ``out``/``dx``/``dW``/``db`` and
``workspace`` (``conv2d_workspace_size`` float32 elements) given, nothing is allocated; everything runs on
CuPy's current stream without host synchronisation (CUDA-graph capturable; an uncached "auto" choice is
timed outside a capture only: inside one it takes "implicit_gemm").

Example::

    y = conv2d_forward(x, W, b, stride=(1, 1), padding=(1, 1))
    dx, dW, db = conv2d_backward(dy, x, W, (1, 1), (1, 1))
    y = conv2d_forward(x, W, b, 1, 1, algo="winograd")       # one algorithm by name
"""
from __future__ import annotations

import functools

import numpy as np

from .. import runtime
from ..runtime import check_array
from ..step import Step
from .. import gemm_tc
from . import fft, few_channels, implicit_gemm, implicit_gemm_tc, patch, select, strided_1x1, winograd
from .geometry import ConvDims, conv2d_output_shape, conv_dims, planning_sms
from .select import DATA_ALGOS, FORWARD_ALGOS, WEIGHTS_ALGOS, WINOGRAD_TILES, candidates

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_workspace_size", "conv2d_algorithm",
           "conv2d_output_shape", "conv_dims", "ConvDims", "FORWARD_ALGOS", "DATA_ALGOS", "WEIGHTS_ALGOS",
           "candidates", "ConvStep"]


def conv2d_workspace_size(x_shape, w_shape, stride, padding, precision="fp32") -> int:
    """float32 elements of workspace the forward+backward of this convolution needs (0 if none), whichever
    algorithm runs them (at ``precision``: "fp32", or the tensor-core "tf32" / "bf16").

    The plans depend on the launch cost in force (``runtime.launch_cost_regime``): size the workspace
    under the same setting as the calls that use it."""
    dims = conv_dims(x_shape, w_shape, stride, padding)
    if precision == "fp32":
        return select.workspace_size(dims, planning_sms())
    _check_precision(precision, "auto", "conv2d_workspace_size")
    sms = planning_sms()
    return max(implicit_gemm_tc.workspace_size(dims, precision, sms), rounded_workspace_size(dims, sms))


def conv2d_algorithm(phase, x_shape, w_shape, stride, padding, precision="fp32", bias=True) -> str | None:
    """The algorithm "auto" runs for this layer in ``phase`` ("forward", "backward_data",
    "backward_weights"): at fp32 the autotuner's cached choice for this device and launch-cost regime, or
    None before the layer's first "auto" call there; at tf32 / bf16 "implicit_gemm_tc" (also before the
    first call), "wgmma", or "rounded:<the FP32 algorithm>". ``bias``: whether the forward has one (its
    FP32 choice is cached per bias presence)."""
    if phase not in select.PHASES:
        raise ValueError(f"conv2d_algorithm: phase={phase!r}; use one of {select.PHASES}")
    dims = conv_dims(tuple(x_shape), tuple(w_shape), stride, padding)
    fp32 = runtime.tuned(("conv", phase, dims) + ((not bias,) if phase == "forward" else ()))
    if precision == "fp32":
        return fp32
    name = implicit_gemm_tc.algorithm(phase, dims, precision)
    return f"{ROUNDED}:{fp32}" if name == ROUNDED else name


ROUNDED = "rounded"
# NOTE: the rounded copies of x, dy and W are three more tensors of the layer's size in the workspace; past
# 2^28 float32 elements (1 GB) the tensor-core GEMMs alone run the layer, as Winograd's cap bounds its own.
ROUNDED_MAX_COPIES = 1 << 28
_ALIGN = 64   # float32 elements: each part of the workspace starts 256-byte aligned (float4 loads need 16)


@functools.lru_cache(maxsize=4096)
def _rounded_offsets(dims) -> dict | None:
    """Where the rounded copies go in the workspace: {"x", "dy", "W", "rest"} offsets in float32 elements
    ("rest": the FP32 algorithm's own workspace after them), or None past ROUNDED_MAX_COPIES (memoised:
    asked on every eager tf32 / bf16 call; callers do not modify the dict)."""
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    offsets, at = {}, 0
    for name, size in (("x", N * C * H * Wd), ("dy", N * K * P * Q), ("W", K * C * R * S)):
        offsets[name] = at
        at += -(-size // _ALIGN) * _ALIGN
    offsets["rest"] = at
    return offsets if at <= ROUNDED_MAX_COPIES else None


def rounded_workspace_size(dims, sms: int = 132) -> int:
    """float32 elements the "rounded" candidate of any phase needs (the copies, then the FP32 algorithms'
    workspace), or 0 where the layer is past ROUNDED_MAX_COPIES (no such candidate)."""
    offsets = _rounded_offsets(dims)
    return 0 if offsets is None else offsets["rest"] + select.workspace_size(dims, sms)


def _rounded(phase, precision, dims, operands: dict, run, workspace, sms, key=()) -> dict:
    """{"rounded": call} for ``implicit_gemm_tc``'s candidates, or {} past the copies' cap. The call rounds
    ``operands`` ({"x" | "dy" | "W": array}) into their workspace parts, then runs the FP32 "auto" choice
    of ``phase``: ``run(name, rounded operands, workspace rest)`` runs FP32 algorithm ``name``. ``key``: as
    ``select.choose``'s (the forward's bias presence)."""
    offsets = _rounded_offsets(dims)
    if offsets is None:
        return {}

    def call():
        ws = runtime.checked_workspace(workspace, rounded_workspace_size(dims, sms), f"conv2d {phase}",
                                       "conv2d_workspace_size")
        ops = {}
        for name, a in operands.items():
            ops[name] = ws[offsets[name]:offsets[name] + a.size].reshape(a.shape)
            gemm_tc.round_operand(a, ops[name], precision)
        rest = ws[offsets["rest"]:]

        def fp32(algo):
            return run(algo, ops, rest)

        return fp32(select.choose(phase, dims, fp32, sms, key=key))

    return {ROUNDED: call}


def _check_precision(precision, algo, what) -> bool:
    """True for a tensor-core precision (after checking ``algo`` fits it), False for "fp32"."""
    if precision == "fp32":
        return False
    if precision not in gemm_tc.PRECISIONS:
        raise ValueError(f"{what}: unknown precision {precision!r}; use 'fp32', 'tf32' or 'bf16'")
    if algo not in ("auto", "implicit_gemm"):
        raise ValueError(f"{what}: algo={algo!r} runs in FP32 only; at precision={precision!r} use 'auto' or "
                         "'implicit_gemm' (the tensor-core implicit GEMM)")
    return True


def _forward(algo, x, W, b, out, dims, workspace, sms):
    if algo == "implicit_gemm":
        return implicit_gemm.forward(x, W, b, out, dims, workspace, sms)
    if algo in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algo]
        return winograd.forward(x, W, b, out, (dims.ph, dims.pw), workspace, tile=tile, check=False,
                                images=select.winograd_images(dims, "forward", tile=tile))
    if algo == "fft":
        return fft.forward(x, W, b, out, dims, workspace)
    return few_channels.forward(x, W, b, out, dims)


def conv2d_forward(x, W, b, stride, padding, out=None, workspace=None, algo="auto", precision="fp32"):
    """y = conv2d(x, W) + b: x (N, C, H, W), W (K, C, R, S), b (K,) or None -> y (N, K, P, Q).

    ``algo``: one of FORWARD_ALGOS, or "auto" (the default): the fastest of ``candidates(dims, "forward")``
    when first timed (cached per device, launch-cost regime, shape and bias presence). ``workspace``:
    split-K partials (small batches) and Winograd's transforms, ``conv2d_workspace_size`` elements, or None
    for the runtime's shared buffer.
    """
    import cupy

    check_array(x, "x", ndim=4)
    check_array(W, "W", ndim=4)
    dims = conv_dims(x.shape, W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if b is not None:
        check_array(b, "b", shape=(K,))
    if out is None:
        out = cupy.empty((N, K, P, Q), dtype=np.float32)
    else:
        check_array(out, "out", shape=(N, K, P, Q))
    select.check_algo(algo, "forward", "conv2d_forward")
    sms = runtime.sm_count()
    if _check_precision(precision, algo, "conv2d_forward"):
        extra = _rounded("forward", precision, dims, {"x": x, "W": W},
                         lambda name, ops, ws: _forward(name, ops["x"], ops["W"], b, out, dims, ws, sms),
                         workspace, sms, key=(b is None,))
        return implicit_gemm_tc.forward(x, W, b, out, dims, precision, workspace, sms, extra)
    if algo == "auto":
        def run(name):
            return _forward(name, x, W, b, out, dims, workspace, sms)

        algo = select.choose("forward", dims, run, sms, key=(b is None,))
    return _forward(algo, x, W, b, out, dims, workspace, sms)


def _backward_data(algo, dy, W, dx, dims, workspace, sms):
    if algo == "implicit_gemm":
        return implicit_gemm.backward_data(dy, W, dx, dims, workspace, sms)
    if algo == "few_channels":
        return few_channels.backward_data(dy, W, dx, dims)
    if algo in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algo]
        return winograd.backward_data(dy, W, dx, (dims.ph, dims.pw), workspace, tile=tile, check=False,
                                      images=select.winograd_images(dims, "backward_data", tile=tile))
    if algo == "strided_1x1":
        return strided_1x1.backward_data(dy, W, dx, dims, workspace, sms)
    if algo == "fft":
        return fft.backward_data(dy, W, dx, dims, workspace)
    return patch.backward_data(dy, W, dx, dims, workspace, check=False)   # the entry points checked the arrays


def _backward_weights(algo, dy, x, dW, dims, workspace, sms, check=True):
    if algo == "implicit_gemm":
        return implicit_gemm.backward_weights(dy, x, dW, dims, workspace, sms)
    if algo == "few_channels":
        return few_channels.backward_weights(dy, x, dW, dims, workspace, sms=sms, check=check)
    if algo == "fft":
        return fft.backward_weights(dy, x, dW, dims, workspace)
    if algo in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algo]
        return winograd.backward_weights(dy, x, dW, (dims.ph, dims.pw), workspace, tile=tile, check=check,
                                         images=select.winograd_images(dims, "backward_weights", sms, tile))
    return patch.backward_weights(dy, x, dW, dims, workspace, check=check)


def _data(algo, dy, W, dx, dims, workspace, sms, precision="fp32"):
    """dx by ``algo`` ("auto": chosen by select.choose), or at tf32 / bf16 by the timed choice of the
    tensor-core GEMMs and "rounded" (module docstring)."""
    if precision != "fp32":
        extra = _rounded("backward_data", precision, dims, {"dy": dy, "W": W},
                         lambda name, ops, ws: _backward_data(name, ops["dy"], ops["W"], dx, dims, ws, sms),
                         workspace, sms)
        return implicit_gemm_tc.backward_data(dy, W, dx, dims, precision, workspace, sms, extra)
    if algo == "auto":
        def run(name):
            return _backward_data(name, dy, W, dx, dims, workspace, sms)

        algo = select.choose("backward_data", dims, run, sms)
    return _backward_data(algo, dy, W, dx, dims, workspace, sms)


def conv2d_backward(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None,
                    need_db=True, algo="auto", weights_algo="auto", precision="fp32"):
    """(dx or None, dW, db or None) for dy (N, K, P, Q), x (N, C, H, W), W (K, C, R, S).

    ``workspace``: at least ``conv2d_workspace_size(...)`` float32 elements, or None for the runtime's
    shared buffer. need_db=False skips db (a layer without bias). ``algo`` picks the backward-data
    algorithm (DATA_ALGOS or "auto"), ``weights_algo`` the backward-weights one (WEIGHTS_ALGOS or "auto");
    "auto" times ``candidates`` once per shape and caches the fastest.
    """
    import cupy

    check_array(x, "x", ndim=4)
    check_array(W, "W", ndim=4)
    dims = conv_dims(x.shape, W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    check_array(dy, "dy", shape=(N, K, P, Q))
    select.check_algo(algo, "backward_data", "conv2d_backward")
    select.check_algo(weights_algo, "backward_weights", "conv2d_backward")
    tc = _check_precision(precision, algo, "conv2d_backward") | _check_precision(precision, weights_algo,
                                                                                 "conv2d_backward")
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
    sms = runtime.sm_count()
    if need_db:
        if db is None:
            db = cupy.empty((K,), dtype=np.float32)
        else:
            check_array(db, "db", shape=(K,))
        implicit_gemm.bias_grad(dy, db, workspace, sms=sms)
    else:
        db = None
    if need_dx:
        _data(algo, dy, W, dx, dims, workspace, sms, precision)
    if tc:
        extra = _rounded("backward_weights", precision, dims, {"dy": dy, "x": x},
                         lambda name, ops, ws: _backward_weights(name, ops["dy"], ops["x"], dW, dims, ws, sms,
                                                                 check=False),
                         workspace, sms)
        implicit_gemm_tc.backward_weights(dy, x, dW, dims, precision, workspace, sms, extra)
        return dx, dW, db
    if weights_algo == "auto":
        def run(name):
            return _backward_weights(name, dy, x, dW, dims, workspace, sms)

        weights_algo = select.choose("backward_weights", dims, run, sms)
    # NOTE: check=False: dy, x and dW were checked above against dims
    _backward_weights(weights_algo, dy, x, dW, dims, workspace, sms, check=False)
    return dx, dW, db


def conv2d_backward_data(dy, W, x_shape, stride, padding, dx=None, workspace=None, algo="auto", precision="fp32"):
    """dx alone (what ``conv2d_backward`` computes with need_dx=True): dy (N, K, P, Q), W (K, C, R, S)
    -> dx (x_shape = (N, C, H, W)). ``algo``: one of DATA_ALGOS or "auto". ``workspace``: at least
    ``conv2d_workspace_size(...)`` float32 elements, or None for the runtime's shared buffer."""
    import cupy

    check_array(W, "W", ndim=4)
    dims = conv_dims(tuple(x_shape), W.shape, stride, padding)
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    check_array(dy, "dy", shape=(N, K, P, Q))
    select.check_algo(algo, "backward_data", "conv2d_backward_data")
    _check_precision(precision, algo, "conv2d_backward_data")
    if dx is None:
        dx = cupy.empty(tuple(x_shape), dtype=np.float32)
    else:
        check_array(dx, "dx", shape=tuple(x_shape))
    return _data(algo, dy, W, dx, dims, workspace, runtime.sm_count(), precision)


class ConvStep(Step):
    """y = conv2d(x, W) + b; x (N, C, H, W), W (K, C, R, S), y (N, K, P, Q); each phase's algorithm
    chosen by "auto" (select.py), or in a tf32 / bf16 model (``precision``, set by the model) by the timed
    choice of the tensor-core GEMMs and the FP32 algorithms on rounded operands. Saves nothing beyond its input; backward writes dW, db (and dx)."""

    kind = "conv2d"
    precision = "fp32"

    def _geometry(self):
        return tuple(self.layer.stride), tuple(self.layer.padding)

    def workspace_size(self, n) -> int:
        w_shape = (self.layer.out_channels, self.in_shape[0], *self.layer.kernel_size)
        return int(conv2d_workspace_size((n, *self.in_shape), w_shape, *self._geometry(), self.precision))

    def forward(self, model, x, y, saved, ws):
        stride, padding = self._geometry()
        b = model.params[self.bias] if self.bias else None
        conv2d_forward(x, model.params[self.weight], b, stride, padding, out=y, workspace=ws,
                       precision=model.precision)

    def backward(self, model, dy, x, y, saved, dx, ws):
        stride, padding = self._geometry()
        conv2d_backward(dy, x, model.params[self.weight], stride, padding, need_dx=self.needs_dx, dx=dx,
                        dW=model.grads[self.weight], db=model.grads[self.bias] if self.bias else None,
                        workspace=ws, need_db=self.bias is not None, precision=model.precision)


runtime.register_modules(implicit_gemm.modules)
runtime.register_modules(implicit_gemm_tc.modules)
runtime.register_modules(winograd.modules)
runtime.register_modules(select.zoo_kernel_modules)
