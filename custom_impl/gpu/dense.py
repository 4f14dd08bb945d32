"""Dense (fully connected) layer on the GPU: forward and backward on our GEMM (``gemm.py``).

Legend: N batch, F in-features, U units. PyTorch layouts: W (U, F), b (U,).

    forward:   y  = act(x @ W.T + b)          x (N, F) -> y (N, U); bias and act fused in the epilogue
    backward:  dx = dy @ W                    (N, U) @ (U, F) -> (N, F)
               dW = dy.T @ x                  (U, N) @ (N, F) -> (U, F)
               db = sum_n dy[n, :]            (U,), fixed-order reduction (deterministic)

Parameter gradients are written (``=``), never accumulated. ``dy`` is the gradient with respect to the
layer's output before any fused activation: backward of a fused act is the caller's (activation layers).
All arrays are C-contiguous float32 CuPy arrays; with ``out``/``dx``/``dW``/``db`` given nothing is
allocated (see ``gemm.py`` on split-K workspace) and everything runs on CuPy's current stream.

Example::

    y = dense_forward(x, W, b, act="relu")
    dx, dW, db = dense_backward(dy, x, W)
"""
from __future__ import annotations

import numpy as np

from ._compile import blocks, check_array
from .gemm import gemm, kernel


def dense_forward(x, W, b=None, act="none", out=None):
    """y = act(x @ W.T + b): x (N, F), W (U, F), b (U,) or None -> y (N, U)."""
    check_array(x, "x", ndim=2)
    check_array(W, "W", ndim=2)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"dense_forward: x has {x.shape[1]} features but W {W.shape} expects "
                         f"{W.shape[1]}; W is stored (units, features)")
    return gemm(x, W, out, trans_b=True, bias=b, act=act)


def dense_backward(dy, x, W, need_dx=True, dx=None, dW=None, db=None, need_db=True):
    """(dx or None, dW, db or None) for dy (N, U), x (N, F), W (U, F).

    dx = dy @ W (skipped when need_dx is False), dW = dy.T @ x, db = column sums of dy (skipped when
    need_db is False, e.g. a layer without bias).
    """
    check_array(dy, "dy", ndim=2)
    check_array(x, "x", ndim=2)
    check_array(W, "W", ndim=2)
    N, U = dy.shape
    if x.shape[0] != N or W.shape != (U, x.shape[1]):
        raise ValueError(f"dense_backward: dy {dy.shape}, x {x.shape} and W {W.shape} do not fit "
                         f"dy (N, U), x (N, F), W (U, F)")
    if need_dx:
        dx = gemm(dy, W, dx)                       # (N, U) @ (U, F)
    else:
        dx = None
    dW = gemm(dy, x, dW, trans_a=True)             # (U, N) @ (N, F)
    if need_db:
        db = bias_grad(dy, db)
    else:
        db = None
    return dx, dW, db


def bias_grad(dy, out=None):
    """db[u] = sum_n dy[n, u] (kernel ``dense_bias_grad``): dy (N, U) -> (U,)."""
    import cupy

    check_array(dy, "dy", ndim=2)
    N, U = dy.shape
    if out is None:
        out = cupy.empty((U,), dtype=np.float32)
    else:
        check_array(out, "db", shape=(U,))
    if U == 0:
        return out
    kernel("dense", "dense_bias_grad")((blocks(U, 32),), (32, 32), (dy, out, np.int32(N), np.int32(U)))
    return out
