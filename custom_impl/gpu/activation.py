"""relu / sigmoid / tanh on the GPU, forward and backward (kernels in ``custom_impl/kernels/activation.cu``).

Elementwise on float32 arrays of any shape. Forward: y = act(x). Backward takes the saved forward
OUTPUT y (that is all it needs): relu' = [y > 0], sigmoid' = y(1 - y), tanh' = 1 - y^2, dx = dy * act'.
``out`` / ``dx`` may be given (then nothing is allocated; ``dx`` may be ``dy`` itself, in place).
``ActivationStep`` is the GPU model's activation layer.
"""
from __future__ import annotations

import numpy as np

from . import runtime
from .runtime import blocks, check_array
from .step import Step

ACTIVATIONS = ("relu", "sigmoid", "tanh")
THREADS = 256
MAX_BLOCKS = 132 * 32  # grid-stride loops: enough blocks to fill an H100 many times over
KERNELS = "relu/sigmoid/tanh _forward and _backward: grid-stride loops, scalar loads"

runtime.register_family("activation")


def activation_after(layers, i: int) -> str | None:
    """The type of ``layers[i + 1]`` if it is an activation (what a dense layer at ``i`` takes into its step:
    the GPU model's dense + activation steps, the fused MLP step), else None."""
    nxt = layers[i + 1] if i + 1 < len(layers) else None
    return nxt.type if nxt is not None and nxt.type in ACTIVATIONS else None


def _check_act(act: str) -> str:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    return act


def _launch(name, n, args):
    grid = min(blocks(n, THREADS), MAX_BLOCKS)
    runtime.kernel("activation", name)((grid,), (THREADS,), (*args, np.int64(n)))


def activation_forward(x, kind: str, out=None):
    """y = kind(x) elementwise; relu(x) = max(x, 0), sigmoid(x) = 1/(1 + e^-x), tanh. Same shape as x."""
    import cupy

    _check_act(kind)
    check_array(x, "x")
    y = cupy.empty_like(x) if out is None else check_array(out, "out", shape=x.shape)
    _launch(f"{kind}_forward", x.size, (x, y))
    return y


def activation_backward(dy, y, kind: str, dx=None):
    """dx = dy * kind'(x), computed from the forward output y (see the module docstring). Same shape."""
    import cupy

    _check_act(kind)
    check_array(y, "y")
    check_array(dy, "dy", shape=y.shape)
    dx = cupy.empty_like(dy) if dx is None else check_array(dx, "dx", shape=y.shape)
    _launch(f"{kind}_backward", y.size, (dy, y, dx))
    return dx


class ActivationStep(Step):
    """y = act(x) elementwise; backward dx = dy * act'(y) from the saved output y."""

    kind = "activation"

    def __init__(self, layer):
        super().__init__(layer, act=None)
        self.fn = layer.type

    def forward(self, model, x, y, saved, ws):
        activation_forward(x, self.fn, out=y)

    def backward(self, model, dy, x, y, saved, dx, ws):
        activation_backward(dy, y, self.fn, dx=dx)
