"""The rounded-operand oracle: a float64 network whose conv and dense products take their operands rounded
to a tensor-core precision, everything else exact.

``reference_impl.build(spec, device, dtype="float64", operand_rounding="tf32" | "bf16")`` gives it. Every
product of the forward (x and W) and of both backward passes (dy with W for dx, dy with x for dW) reads
operands rounded to the precision's mantissa (TF32: 10 bits, BF16: 7; round to nearest, ties away from
zero, as the GPU's ``cvt.rna``), then sums exactly (float64); biases, their gradients, activations,
pooling and the loss stay float64. What it shows against the exact float64 oracle is the error that
rounding the operands alone causes, for these inputs and parameters: the error a correct tensor-core
implementation is expected to show. It need not be of the order of the unit roundoff: where a max-pool
window or a ReLU sits within the rounding of a tie or of zero, the rounded run routes a gradient
elsewhere, an O(1) change of that element whatever the precision (on the H100, 2026-12-06, digits-cnn
at batch 33 shows 0.0555 in TF32 and 0.0591 in BF16 in its loss and gradients, and our tensor-core
kernels measured 0.0555 in TF32 on the same inputs, while PyTorch's TF32 run, FP32 in cuDNN for layers
that small, showed 4e-4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPERAND_ROUNDINGS = ("tf32", "bf16")
_DROPPED_BITS = {"tf32": 13, "bf16": 16}   # of float32's 23 mantissa bits


def rounded(t: torch.Tensor, precision: str) -> torch.Tensor:
    """``t`` (any float dtype) rounded to ``precision``'s mantissa through float32, in ``t``'s dtype.

    TF32's ulp at 1 is 2^-10: 1 + 2^-11 is a tie (away from zero), 1 + 2^-12 rounds down, and signs keep:

    >>> rounded(torch.tensor([1 + 2 ** -11, 1 + 2 ** -12, -1 - 2 ** -11], dtype=torch.float64), "tf32").tolist()
    [1.0009765625, 1.0, -1.0009765625]
    """
    drop = _DROPPED_BITS[precision]
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    sign = bits & torch.iinfo(torch.int32).min
    mag = bits & torch.iinfo(torch.int32).max
    mag = (mag + (1 << (drop - 1))) & ~((1 << drop) - 1)     # half an ulp up, then truncate: ties away
    return (sign | mag).view(torch.float32).to(t.dtype)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, b, precision):
        xr, Wr = rounded(x, precision), rounded(W, precision)
        ctx.save_for_backward(xr, Wr)
        ctx.precision, ctx.has_bias = precision, b is not None
        return F.linear(xr, Wr, b)

    @staticmethod
    def backward(ctx, dy):
        xr, Wr = ctx.saved_tensors
        dyr = rounded(dy, ctx.precision)
        return dyr @ Wr, dyr.t() @ xr, (dy.sum(0) if ctx.has_bias else None), None


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, b, stride, padding, precision):
        xr, Wr = rounded(x, precision), rounded(W, precision)
        ctx.save_for_backward(xr, Wr)
        ctx.geometry, ctx.precision, ctx.has_bias = (stride, padding), precision, b is not None
        return F.conv2d(xr, Wr, b, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        xr, Wr = ctx.saved_tensors
        stride, padding = ctx.geometry
        dyr = rounded(dy, ctx.precision)
        dx = torch.nn.grad.conv2d_input(xr.shape, Wr, dyr, stride, padding)
        dW = torch.nn.grad.conv2d_weight(xr, Wr.shape, dyr, stride, padding)
        return dx, dW, (dy.sum((0, 2, 3)) if ctx.has_bias else None), None, None, None


class RoundedLinear(nn.Linear):
    """nn.Linear whose products take operands rounded to ``precision`` (module docstring)."""

    precision = "tf32"

    def forward(self, x):
        return _Linear.apply(x, self.weight, self.bias, self.precision)


class RoundedConv2d(nn.Conv2d):
    """nn.Conv2d whose products take operands rounded to ``precision`` (module docstring)."""

    precision = "tf32"

    def forward(self, x):
        return _Conv2d.apply(x, self.weight, self.bias, self.stride, self.padding, self.precision)


def round_operands(net: nn.Module, precision: str) -> None:
    """Make every Linear / Conv2d of ``net`` round its product operands to ``precision``, in place (the
    parameters are kept; only the modules' class changes)."""
    for mod in net.modules():
        cls = {nn.Linear: RoundedLinear, nn.Conv2d: RoundedConv2d}.get(type(mod))
        if cls is not None:
            mod.__class__ = cls
            mod.precision = precision
