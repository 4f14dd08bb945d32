"""Activations on the CPU: relu, sigmoid (numerically stable), tanh. Elementwise, any shape.

Each backward uses the forward's output y (saved), not its input: relu' = [y > 0], sigmoid' = y (1 - y),
tanh' = 1 - y^2.
"""
from __future__ import annotations

import numpy as np

from .layer import Layer


ACTIVATIONS = ("relu", "sigmoid", "tanh")


def relu_forward(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = max(x, 0). ``out`` may be x itself."""
    return np.maximum(x, 0, out=out)


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy where y > 0, else 0 (PyTorch's choice at x = 0: gradient 0). ``out`` may be dy itself."""
    return np.multiply(dy, y > 0, out=out)


def sigmoid_forward(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = 1 / (1 + exp(-x)), computed through e = exp(-|x|) so that no exp overflows:
    x >= 0: 1 / (1 + e);  x < 0: e / (1 + e). ``out`` may be x itself.
    """
    e = np.exp(-np.abs(x))
    d = 1 + e
    y = np.where(x >= 0, 1 / d, e / d).astype(x.dtype, copy=False)
    if out is None:
        return y
    np.copyto(out, y)
    return out


def sigmoid_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * y * (1 - y). ``out`` may be dy itself."""
    return np.multiply(dy, y * (1 - y), out=out)


def tanh_forward(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = tanh(x). ``out`` may be x itself."""
    return np.tanh(x, out=out)


def tanh_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * (1 - y^2). ``out`` may be dy itself."""
    return np.multiply(dy, 1 - y * y, out=out)


FUNCS = {"relu": (relu_forward, relu_backward),
         "sigmoid": (sigmoid_forward, sigmoid_backward),
         "tanh": (tanh_forward, tanh_backward)}


def _funcs(kind: str):
    try:
        return FUNCS[kind]
    except KeyError:
        raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def activation_forward(x: np.ndarray, kind: str, out: np.ndarray | None = None) -> np.ndarray:
    """y = act(x) for ``kind`` "relu", "sigmoid" or "tanh"; any shape. ``out`` (x's shape) may be x itself.

    >>> activation_forward(np.array([-1.0, 2.0], np.float32), "relu")
    array([0., 2.], dtype=float32)
    """
    return _funcs(kind)[0](x, out=out)


def activation_backward(dy: np.ndarray, y: np.ndarray, kind: str, dx: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * act'(x), from the forward's output y (see the module docstring). ``dx`` may be dy itself."""
    return _funcs(kind)[1](dy, y, out=dx)


class Activation(Layer):
    """An activation layer; saves its output y for backward."""

    def __init__(self, layer, need_dx: bool = True):
        super().__init__(layer, need_dx)
        self._fwd, self._bwd = _funcs(layer.type)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        y = self._fwd(x)
        self.saved = y if train else None
        return y

    def backward(self, dy: np.ndarray):
        # NOTE: in place: dy is the fresh output of the next layer's backward and nothing else holds it
        # (the model's dlogits is never passed to an activation: the last layer is dense).
        dx = self._bwd(dy, self.saved, out=dy) if self.need_dx else None
        self.saved = None
        return dx
