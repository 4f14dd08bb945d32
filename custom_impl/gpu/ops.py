"""The GPU layer ops, one signature per op shared with ``custom_impl.cpu.ops`` (``custom_impl.layer_ops``).

Arrays are C-contiguous float32 CuPy arrays (argmax int32); ``out`` / ``dx`` / ``dW`` / ``db`` are
optional output buffers, written and returned (given, nothing is allocated: CUDA-graph capturable);
``workspace`` is an optional float32 buffer of ``conv2d_workspace_size`` elements (default: the
runtime's shared one). Every launch goes to CuPy's current stream. Parameter gradients are written (=).

    dense_forward(x, W, b=None, act="none", out=None) -> y                 x (N,F) W (U,F) y (N,U)
    dense_backward(dy, x, W, need_dx=True, dx=None, dW=None, db=None, need_db=True) -> (dx|None, dW, db|None)
    dense_backward_data(dy, W, dx=None) -> dx
    dense_algorithm(phase, x_shape, w_shape, precision="fp32") -> str | None
    conv2d_forward(x, W, b, stride, padding, out=None, workspace=None) -> y
    conv2d_backward(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None,
                    need_db=True) -> (dx|None, dW, db|None)
    conv2d_backward_data(dy, W, x_shape, stride, padding, dx=None, workspace=None) -> dx
    conv2d_workspace_size(x_shape, w_shape, stride, padding) -> int
    conv2d_algorithm(phase, x_shape, w_shape, stride, padding, precision="fp32") -> str | None
    maxpool2d_forward(x, kernel_size, stride, out=None, argmax=None) -> (y, argmax)   argmax (N,C,P,Q)
    maxpool2d_backward(dy, argmax, x_shape, kernel_size, stride, dx=None) -> dx
    avgpool2d_forward(x, kernel_size, stride, out=None) -> y
    avgpool2d_backward(dy, x_shape, kernel_size, stride, dx=None) -> dx
    activation_forward(x, kind, out=None) -> y
    activation_backward(dy, y, kind, dx=None) -> dx

argmax: what the GPU kernels store is the position r*S + s of each window's first maximum WITHIN ITS
WINDOW (r < R, s < S; PyTorch's tie rule), not an index into the input plane. The GPU
functions take a few keyword arguments more, after the shared ones (``relu=``, ``index64=``, ``algo=``:
see their modules).
"""
from __future__ import annotations

from .activation import activation_backward, activation_forward
from .conv import (conv2d_algorithm, conv2d_backward, conv2d_backward_data, conv2d_forward,
                   conv2d_workspace_size)
from .dense import dense_algorithm, dense_backward, dense_backward_data, dense_forward
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

__all__ = [
    "dense_forward", "dense_backward", "dense_backward_data", "dense_algorithm",
    "conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_workspace_size", "conv2d_algorithm",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "activation_forward", "activation_backward",
]
