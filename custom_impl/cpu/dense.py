"""Dense (fully connected) layer on the CPU, PyTorch layout: y = x @ W.T + b.

Letters: N batch, F in-features, U units. Parameter gradients are written (=), never accumulated.
"""
from __future__ import annotations

import numpy as np


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b.  x (N, F), W (U, F), b (U,) or None -> y (N, U).

    >>> dense_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), None).shape
    (2, 4)
    """
    y = x @ W.T                      # (N, U)
    if b is not None:
        y += b
    return y


def dense_backward(dy: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True):
    """Gradients of y = x W^T + b.  dy (N, U), x (N, F), W (U, F).

    dW = dy^T x (U, F);  db = sum_n dy (U,);  dx = dy W (N, F), or None when ``need_dx`` is False.
    Returns (dx, dW, db).
    """
    dW = dy.T @ x                    # (U, F)
    db = dy.sum(axis=0)              # (U,)
    dx = dy @ W if need_dx else None  # (N, F)
    return dx, dW, db


class Dense:
    """A dense layer holding its parameters, their gradients and what forward saved for backward."""

    def __init__(self, layer, need_dx: bool = True):
        self.layer = layer
        self.need_dx = need_dx
        self.params = {name: None for name in layer.param_shapes()}   # "weight" (U, F), "bias" (U,)
        self.grads = {}
        self.saved = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.saved = x if train else None
        return dense_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy: np.ndarray):
        x = self.saved
        dx, dW, db = dense_backward(dy, x, self.params["weight"], self.need_dx)
        self.grads = {"weight": dW, "bias": db} if "bias" in self.params else {"weight": dW}
        self.saved = None
        return dx
