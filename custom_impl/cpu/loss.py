"""Losses on the CPU, on logits, mean over the batch; each returns the loss and its gradient together.

Letters: N batch, K classes (logits per sample).
"""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy(z: np.ndarray, y: np.ndarray):
    """L = -(1/N) sum_n log softmax(z_n)[y_n];  dL/dz = (softmax(z) - onehot(y)) / N.

    z (N, K) float32 logits, y (N,) int labels -> (loss 0-d array of z.dtype, dz (N, K)).
    Stable for any logit size: log-sum-exp is taken after subtracting each row's maximum.

    >>> loss, dz = softmax_cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3]))
    >>> round(float(loss), 4)  # log 4
    1.3863
    """
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)                   # (N, K), every entry <= 0
    e = np.exp(shifted)                                          # (N, K)
    sums = e.sum(axis=1, keepdims=True)                          # (N, 1)
    rows = np.arange(n)
    logp_true = shifted[rows, y] - np.log(sums[:, 0])           # (N,)
    loss = np.asarray(-logp_true.mean(), dtype=z.dtype)
    dz = e / sums                                                # (N, K) softmax
    dz[rows, y] -= 1
    dz *= np.float32(1.0 / n)
    return loss, dz


def sigmoid_binary_cross_entropy(z: np.ndarray, y: np.ndarray):
    """L = (1/N) sum_n [softplus(z_n) - y_n z_n];  dL/dz = (sigmoid(z) - y) / N.

    z (N, 1) float32 logits, y (N,) 0/1 labels -> (loss 0-d array of z.dtype, dz (N, 1)).
    Stable form: softplus(z) = max(z, 0) + log1p(exp(-|z|)), and the sigmoid through e = exp(-|z|).
    """
    n = z.shape[0]
    t = y.astype(z.dtype).reshape(n, 1)                          # (N, 1) targets
    e = np.exp(-np.abs(z))                                       # (N, 1), in (0, 1]
    loss = np.asarray((np.maximum(z, 0) - z * t + np.log1p(e)).mean(), dtype=z.dtype)
    sig = np.where(z >= 0, 1 / (1 + e), e / (1 + e))             # (N, 1)
    dz = ((sig - t) * (1.0 / n)).astype(z.dtype, copy=False)
    return loss, dz


LOSSES = {"softmax_cross_entropy": softmax_cross_entropy,
          "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy}
