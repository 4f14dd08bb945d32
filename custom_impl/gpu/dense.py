"""Dense (fully connected) layer on the GPU: forward and backward on our GEMM (``gemm.py``).

Legend: N batch, F in-features, U units. PyTorch layouts: W (U, F), b (U,).

    forward:   y  = act(x @ W.T + b)          x (N, F) -> y (N, U); bias and act fused in the epilogue
    backward:  dx = dy @ W                    (N, U) @ (U, F) -> (N, F)
               dW = dy.T @ x                  (U, N) @ (N, F) -> (U, F)
               db = sum_n dy[n, :]            (U,), fixed-order reduction (deterministic)

Parameter gradients are written (``=``), never accumulated. ``precision``: "fp32" (the default: strict FP32
on the FP32 GEMM of ``gemm.py``), or "tf32" / "bf16": the three GEMMs on the tensor cores with TF32 or
BF16 products and FP32 accumulation (``gemm_tc.py``); the bias gradient is an FP32 sum in every precision.
``dy`` is the gradient with respect to the layer's output before any fused activation: backward of a
fused act is the caller's (activation layers). All arrays are C-contiguous float32 CuPy arrays; with
``out``/``dx``/``dW``/``db`` given nothing is allocated (see ``gemm.py`` on split-K workspace; the bias
gradient's partial sums use the same shared workspace) and everything runs on CuPy's current stream.
``DenseStep`` is the GPU model's dense layer (with a following activation fused into the epilogue).

Example::

    y = dense_forward(x, W, b, act="relu")
    dx, dW, db = dense_backward(dy, x, W)
"""
from __future__ import annotations

import functools

import numpy as np

from . import runtime
from .activation import activation_backward
from . import gemm_tc
from .gemm import cached_launch, gemm, launch_cached, run_launch, tuned_plan
from .runtime import blocks, check_array
from .step import Step

runtime.register_family("dense")


PRECISIONS = ("fp32",) + gemm_tc.PRECISIONS


def check_precision(precision: str, what: str) -> None:
    """Raise ValueError unless ``precision`` is one of PRECISIONS; ``what`` names the caller."""
    if precision not in PRECISIONS:
        raise ValueError(f"{what}: unknown precision {precision!r}; use one of "
                         f"{', '.join(repr(p) for p in PRECISIONS)}")


def _matmul(a, b, out, precision, **options):
    """``gemm`` (fp32) or ``gemm_tc.gemm_tc`` (tf32, bf16) of the same operands and options."""
    if precision == "fp32":
        return gemm(a, b, out, **options)
    return gemm_tc.gemm_tc(a, b, out, precision=precision, **options)


def dense_forward(x, W, b=None, act="none", out=None, precision="fp32"):
    """y = act(x @ W.T + b): x (N, F), W (U, F), b (U,) or None -> y (N, U)."""
    if out is not None and precision == "fp32" and launch_cached(x, W, out, b, False, True, act):
        return out   # a call with these shapes and options passed the checks below before
    check_precision(precision, "dense_forward")
    check_array(x, "x", ndim=2)
    check_array(W, "W", ndim=2)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"dense_forward: x has {x.shape[1]} features but W {W.shape} expects "
                         f"{W.shape[1]}; W is stored (units, features)")
    return _matmul(x, W, out, precision, trans_b=True, bias=b, act=act)


# The GEMM of each phase of a dense layer with batch N, F features and U units, as gemm's (M, N, K, trans_a,
# trans_b): forward x @ W^T, backward-data dy @ W, backward-weights dy^T @ x (its bias gradient aside).
def _phase_gemm(phase: str, N: int, F: int, U: int) -> tuple:
    if phase == "forward":
        return N, U, F, False, True
    if phase == "backward_data":
        return N, F, U, False, False
    if phase == "backward_weights":
        return U, F, N, True, False
    raise ValueError(f"dense_algorithm: phase={phase!r}; use 'forward', 'backward_data' or 'backward_weights'")


def dense_algorithm(phase, x_shape, w_shape, precision="fp32") -> str | None:
    """The GEMM plan that runs this dense layer's ``phase`` ("forward", "backward_data",
    "backward_weights": its dW GEMM): at fp32 the autotuner's cached choice (``gemm.plan_name``: a tile
    config or a thin kernel, with its split-K) for this device and launch-cost regime, or None before the
    layer's first call there; at tf32 / bf16 "tensor cores" (``gemm_tc``). x_shape (N, F), w_shape (U, F)."""
    (N, F), (U, F2) = tuple(x_shape), tuple(w_shape)
    if F != F2:
        raise ValueError(f"dense_algorithm: x has {F} features but W {tuple(w_shape)} expects {F2}; W is stored "
                         "(units, features)")
    check_precision(precision, "dense_algorithm")
    gemm_args = _phase_gemm(phase, N, F, U)
    if precision != "fp32":
        return "tensor cores"
    return tuned_plan(*gemm_args)


def dense_backward(dy, x, W, need_dx=True, dx=None, dW=None, db=None, need_db=True, precision="fp32"):
    """(dx or None, dW, db or None) for dy (N, U), x (N, F), W (U, F).

    dx = dy @ W (skipped when need_dx is False), dW = dy.T @ x, db = column sums of dy (skipped when
    need_db is False, e.g. a layer without bias).
    """
    if dW is not None and (db is not None or not need_db) and (dx is not None or not need_dx):
        fast = _cached_backward(dy, x, W, need_dx, dx, dW, db if need_db else None, precision)
        if fast is not None:
            return fast
    check_precision(precision, "dense_backward")
    check_array(dy, "dy", ndim=2)
    check_array(x, "x", ndim=2)
    check_array(W, "W", ndim=2)
    N, U = dy.shape
    if x.shape[0] != N or W.shape != (U, x.shape[1]):
        raise ValueError(f"dense_backward: dy {dy.shape}, x {x.shape} and W {W.shape} do not fit "
                         f"dy (N, U), x (N, F), W (U, F)")
    if need_dx:
        dx = _matmul(dy, W, dx, precision)                      # (N, U) @ (U, F)
    else:
        dx = None
    dW = _matmul(dy, x, dW, precision, trans_a=True)            # (U, N) @ (N, F)
    if need_db:
        db = bias_grad(dy, db)
    else:
        db = None
    return dx, dW, db


def _cached_backward(dy, x, W, need_dx, dx, dW, db, precision="fp32"):
    """dense_backward from cached launches only, when every GEMM of it was planned by an earlier call with
    these shapes (so their checks passed: dy, x, W, dx, dW are C-contiguous float32 of fitting shapes);
    None, with nothing launched, otherwise."""
    if precision == "fp32":
        cached, run = cached_launch, run_launch
    elif precision in gemm_tc.PRECISIONS:
        cached = functools.partial(_cached_tc, precision=precision)
        run = gemm_tc.run_launch
    else:
        return None   # the checked path names the unknown precision
    launches = [cached(dy, x, dW, None, True, False)]
    operands = [(dy, x, dW)]
    if need_dx:   # dx first, as the checked path launches
        launches.insert(0, cached(dy, W, dx))
        operands.insert(0, (dy, W, dx))
    if any(la is None for la in launches) or (db is not None and db.shape != (dy.shape[1],)) \
            or type(W) is not type(dW) or W.shape != dW.shape:
        return None
    if db is not None:
        check_array(db, "db")
    for launch, (a, b, out) in zip(launches, operands):
        run(launch, a, b, out, None)
    if db is not None:
        _bias_grad_launch(dy, db)
    return (dx if need_dx else None), dW, db


def _cached_tc(a, b, out, bias=None, trans_a=False, trans_b=False, precision="tf32"):
    return gemm_tc.cached_launch(a, b, out, bias, trans_a, trans_b, precision=precision)


def bias_grad(dy, out=None, workspace=None, serial=True, splits=None):
    """db[u] = sum_n dy[n, u] (kernel ``dense_bias_grad``): dy (N, U) -> (U,), deterministic.

    The rows are split over ``splits`` blocks per 32 columns (default: ``bias_splits``), whose partial
    sums go to ``workspace`` (U*splits floats; default: the shared workspace) and are added in a fixed
    order. ``serial``: the last block of each column block adds them in the same launch (the runtime's
    arrival counters); else a second kernel does, in the same order: the same bits."""
    import cupy

    check_array(dy, "dy", ndim=2)
    N, U = dy.shape
    if out is None:
        out = cupy.empty((U,), dtype=np.float32)
    else:
        check_array(out, "db", shape=(U,))
    if splits is not None and (int(splits) != splits or splits < 1):
        raise ValueError(f"dense bias_grad: splits must be a positive integer, got {splits!r}")
    if U == 0:
        return out
    _bias_grad_launch(dy, out, workspace, serial, splits)
    return out


def bias_splits(N: int, U: int, sms: int = 132) -> tuple[int, int]:
    """(nchunk, splits) of the bias gradient: rows per block and blocks per 32 columns, so that the grid
    fills ~2 blocks of 1024 threads per SM while each row-thread still sums >= 8 rows (256 a block)."""
    col_blocks = max(1, -(-U // 32))
    return _row_chunks(N, min(-(-N // 256), 2 * sms // col_blocks))


def _row_chunks(N: int, want: int) -> tuple[int, int]:
    """(rows per block, blocks) for about ``want`` blocks over N rows, no block empty (one for N = 0)."""
    nchunk = max(1, -(-N // max(1, min(want, N))))
    return nchunk, max(1, -(-N // nchunk))


def _bias_grad_launch(dy, out, workspace=None, serial=True, splits=None) -> None:
    import cupy

    kern, finish, grid, scalars, finish_scalars = _bias_grad_plan(dy.shape, cupy.cuda.runtime.getDevice(), splits)
    if grid[1] == 1:
        kern(grid, (32, 32), (dy, out, runtime.NULL, runtime.NULL) + scalars)
        return
    part = runtime.checked_workspace(workspace, dy.shape[1] * grid[1], "dense bias_grad",
                                     "U * dense.bias_splits(N, U)[1]")
    if serial:
        kern(grid, (32, 32), (dy, part, out, runtime.counters(grid[0])) + scalars)
        return
    kern(grid, (32, 32), (dy, part, runtime.NULL, runtime.NULL) + scalars)
    finish((grid[0],), (32, 32), (part, out) + finish_scalars)


@functools.lru_cache(maxsize=1024)
def _bias_grad_plan(shape, device_id, splits=None):
    """(kernel, finish kernel, grid (column blocks, row splits), the kernel's scalar arguments, the finish
    kernel's) for dy of ``shape``."""
    N, U = shape
    nchunk, splits = bias_splits(N, U, runtime.sm_count()) if splits is None else _row_chunks(N, splits)
    return (runtime.kernel("dense", "dense_bias_grad"), runtime.kernel("dense", "dense_bias_grad_finish"),
            (blocks(U, 32), splits), (np.int32(N), np.int32(U), np.int32(nchunk)), (np.int32(U), np.int32(splits)))


def dense_backward_data(dy, W, dx=None, precision="fp32"):
    """dx = dy @ W: dy (N, U), W (U, F) -> dx (N, F) (the input gradient alone)."""
    if dx is not None and precision == "fp32" and launch_cached(dy, W, dx):
        return dx   # a call with these shapes passed the checks below before
    check_precision(precision, "dense_backward_data")
    check_array(dy, "dy", ndim=2)
    check_array(W, "W", ndim=2)
    if dy.shape[1] != W.shape[0]:
        raise ValueError(f"dense_backward_data: dy {dy.shape} and W {W.shape} do not fit dy (N, U), W (U, F)")
    return _matmul(dy, W, dx, precision)


class DenseStep(Step):
    """y = act(x W^T + b) with the activation fused in the GEMM epilogue; x (N, F), W (U, F), y (N, U).

    backward: dz = dy * act'(y) (from the saved output, in place into dy), then dx = dz W,
    dW = dz^T x, db = sum_n dz (written).
    """

    kind = "dense"

    def forward(self, model, x, y, saved, ws):
        b = model.params[self.bias] if self.bias else None
        dense_forward(x, model.params[self.weight], b, act=self.act or "none", out=y, precision=model.precision)

    def backward(self, model, dy, x, y, saved, dx, ws):
        if self.act:
            activation_backward(dy, y, self.act, dx=dy)  # NOTE: in place: dy is not read again
        dense_backward(dy, x, model.params[self.weight], need_dx=self.needs_dx, dx=dx,
                       dW=model.grads[self.weight], db=model.grads[self.bias] if self.bias else None,
                       need_db=self.bias is not None, precision=model.precision)
