"""Dense (fully connected) layer on the CPU, PyTorch layout: y = x @ W.T + b.

Letters: N batch, F in-features, U units. Parameter gradients are written (=), never accumulated.
"""
from __future__ import annotations

import numpy as np

from .activation import activation_forward
from .layer import Layer


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None, act: str = "none",
                  out: np.ndarray | None = None) -> np.ndarray:
    """y = act(x W^T + b).  x (N, F), W (U, F), b (U,) or None -> y (N, U).

    ``act``: "none", "relu", "sigmoid" or "tanh"; ``out``: optional (N, U) float32 array written and returned.

    >>> dense_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)).shape
    (2, 4)
    """
    y = np.matmul(x, W.T, out=out)   # (N, U)
    if b is not None:
        y += b
    if act != "none":
        activation_forward(y, act, out=y)
    return y


def dense_backward(dy: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True,
                   dx: np.ndarray | None = None, dW: np.ndarray | None = None, db: np.ndarray | None = None,
                   need_db: bool = True):
    """Gradients of y = x W^T + b.  dy (N, U), x (N, F), W (U, F).

    dW = dy^T x (U, F);  db = sum_n dy (U,), or None without ``need_db``;  dx = dy W (N, F), or None
    without ``need_dx``. ``dx``, ``dW``, ``db``: optional arrays written and returned. Returns (dx, dW, db).
    """
    dW = np.matmul(dy.T, x, out=dW)                          # (U, F)
    db = np.sum(dy, axis=0, out=db) if need_db else None     # (U,)
    dx = dense_backward_data(dy, W, dx) if need_dx else None
    return dx, dW, db


def dense_backward_data(dy: np.ndarray, W: np.ndarray, dx: np.ndarray | None = None) -> np.ndarray:
    """dx = dy W alone (what ``dense_backward`` computes with need_dx).  dy (N, U), W (U, F) -> dx (N, F)."""
    return np.matmul(dy, W, out=dx)  # (N, F)


class Dense(Layer):
    """A dense layer: params "weight" (U, F), "bias" (U,); forward saves x for backward; backward writes
    the gradients into ``grads`` (views the model gives it)."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.saved = x if train else None
        return dense_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy: np.ndarray):
        x = self.saved
        dx, _, _ = dense_backward(dy, x, self.params["weight"], self.need_dx, dW=self.grads["weight"],
                                  db=self.grads.get("bias"), need_db="bias" in self.grads)
        self.saved = None
        return dx


def dense_algorithm(phase, x_shape, w_shape) -> str:
    """The algorithm that runs this dense layer's phase: on the CPU always "matmul" (NumPy's matmul, BLAS;
    the shared signature of ``custom_impl.gpu.ops.dense_algorithm``)."""
    if phase not in ("forward", "backward_data", "backward_weights"):
        raise ValueError(f"dense_algorithm: phase={phase!r}; use 'forward', 'backward_data' or 'backward_weights'")
    return "matmul"
