"""The layer ops of the CPU backend, with the same signatures as ``custom_impl.gpu.ops``.

``custom_impl.layer_ops("cpu")`` returns this module. Arrays are NumPy (float32 in, float32 out; argmax
int32); ``out`` / ``dx`` / ``dW`` / ``db`` are optional output buffers, written and returned; ``workspace``
is accepted for the GPU's signature and unused here (``conv2d_workspace_size`` is 0). Parameter gradients
are written (=), never accumulated.

Letters: N batch, C in-channels, K out-channels (U units for dense, F features), H,W input, P,Q output,
R,S kernel or pooling window.

    dense_forward(x, W, b=None, act="none", out=None) -> y                     x (N, F), W (U, F) -> y (N, U)
    dense_backward(dy, x, W, need_dx=True, dx=None, dW=None, db=None, need_db=True) -> (dx|None, dW, db|None)
    dense_backward_data(dy, W, dx=None) -> dx
    dense_algorithm(phase, x_shape, w_shape) -> str                            "matmul" on the CPU
    conv2d_forward(x, W, b, stride, padding, out=None, workspace=None) -> y
    conv2d_backward(dy, x, W, stride, padding, need_dx=True, dx=None, dW=None, db=None, workspace=None,
                    need_db=True) -> (dx|None, dW, db|None)
    conv2d_backward_data(dy, W, x_shape, stride, padding, dx=None, workspace=None) -> dx
    conv2d_workspace_size(x_shape, w_shape, stride, padding) -> int             0 on the CPU
    conv2d_algorithm(phase, x_shape, w_shape, stride, padding) -> str         "im2col" on the CPU
    maxpool2d_forward(x, kernel_size, stride, out=None, argmax=None) -> (y, argmax)
    maxpool2d_backward(dy, argmax, x_shape, kernel_size, stride, dx=None) -> dx
    avgpool2d_forward(x, kernel_size, stride, out=None) -> y
    avgpool2d_backward(dy, x_shape, kernel_size, stride, dx=None) -> dx
    activation_forward(x, kind, out=None) -> y
    activation_backward(dy, y, kind, dx=None) -> dx

argmax holds the position r*S + s, within its window, of each window's first maximum in raster order
(the same meaning on the GPU).
The CPU model itself runs faster internal paths of the same modules (the convolution keeps the columns
of its forward for the backward: ``conv.conv2d_forward_cols``; max pooling finds the maximum again by
comparing x with y: ``pool.maxpool2d_values`` / ``pool.maxpool2d_backward_by_compare``).

>>> import numpy as np
>>> from custom_impl.cpu import ops
>>> y, argmax = ops.maxpool2d_forward(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2, 2)
>>> y[0, 0].tolist(), argmax[0, 0].tolist()
([[5.0, 7.0], [13.0, 15.0]], [[3, 3], [3, 3]])
"""
from __future__ import annotations

from .activation import activation_backward, activation_forward
from .conv import (conv2d_algorithm, conv2d_backward, conv2d_backward_data, conv2d_forward,
                   conv2d_workspace_size)
from .dense import dense_algorithm, dense_backward, dense_backward_data, dense_forward
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

__all__ = ["dense_forward", "dense_backward", "dense_backward_data", "dense_algorithm",
           "conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_workspace_size", "conv2d_algorithm",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "activation_forward", "activation_backward"]
