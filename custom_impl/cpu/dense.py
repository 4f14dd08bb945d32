"""Dense (fully connected) layer on the CPU, PyTorch layout: y = x @ W.T + b.

Letters: N batch, F in-features, U units. Parameter gradients are written (=), never accumulated.
"""
from __future__ import annotations

import numpy as np

from .layer import Layer


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b.  x (N, F), W (U, F), b (U,) or None -> y (N, U).

    >>> dense_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), None).shape
    (2, 4)
    """
    y = x @ W.T                      # (N, U)
    if b is not None:
        y += b
    return y


def dense_backward(dy: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True,
                   dW: np.ndarray | None = None, db: np.ndarray | None = None):
    """Gradients of y = x W^T + b.  dy (N, U), x (N, F), W (U, F).

    dW = dy^T x (U, F);  db = sum_n dy (U,);  dx = dy W (N, F), or None when ``need_dx`` is False.
    ``dW``, ``db``: optional arrays to write the gradients into. Returns (dx, dW, db).
    """
    dW = np.matmul(dy.T, x, out=dW)  # (U, F)
    db = np.sum(dy, axis=0, out=db)  # (U,)
    dx = dense_backward_data(dy, W) if need_dx else None
    return dx, dW, db


def dense_backward_data(dy: np.ndarray, W: np.ndarray) -> np.ndarray:
    """dx = dy W alone (what ``dense_backward`` computes with need_dx).  dy (N, U), W (U, F) -> dx (N, F)."""
    return dy @ W                    # (N, F)


class Dense(Layer):
    """A dense layer: params "weight" (U, F), "bias" (U,); forward saves x for backward; backward writes
    the gradients into ``grads`` (views the model gives it)."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.saved = x if train else None
        return dense_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy: np.ndarray):
        x = self.saved
        dx, _, _ = dense_backward(dy, x, self.params["weight"], self.need_dx, self.grads["weight"],
                                  self.grads.get("bias"))
        self.saved = None
        return dx
