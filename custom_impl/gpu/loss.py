"""Losses fused with their gradients (kernels in ``custom_impl/kernels/loss.cu``).

Legend: N batch, K classes. Labels are int64 (N,) class indices (0/1 for binary cross-entropy).
Each function writes, with two launches and no host synchronisation:
  per-sample losses ``per_sample`` (N,), the gradient of the MEAN loss ``dz`` (N, K) and the mean loss
  ``loss`` (a 1-element device buffer, returned as a 0-d view).
softmax cross-entropy: loss_i = logsumexp(z_i) - z_i[y_i], dz = (softmax(z) - onehot(y)) / N.
sigmoid binary cross-entropy on logits (K = 1): loss_i = softplus(z) - y z, dz = (sigmoid(z) - y) / N.
The mean is a fixed-order single-block reduction: bitwise reproducible.
"""
from __future__ import annotations

import numpy as np

from . import runtime
from .runtime import blocks, check_array

LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")
WARPS_PER_BLOCK = 8
MEAN_THREADS = 256  # must equal MEAN_THREADS in loss.cu
KERNELS = "softmax_xent (a warp per row) / sigmoid_bce / mean_reduce (one block, fixed-order tree)"

runtime.register_family("loss")


def _buffers(z, labels, per_sample, dz, loss):
    import cupy

    check_array(z, "logits", ndim=2)
    n = z.shape[0]
    if not isinstance(labels, cupy.ndarray) or labels.dtype != np.int64 or labels.shape != (n,) \
            or not labels.flags.c_contiguous:
        raise ValueError(f"labels: expected a C-contiguous int64 cupy array of shape ({n},)")
    per_sample = cupy.empty((n,), np.float32) if per_sample is None else check_array(per_sample, "per_sample", shape=(n,))
    dz = cupy.empty_like(z) if dz is None else check_array(dz, "dz", shape=z.shape)
    loss = cupy.empty((1,), np.float32) if loss is None else check_array(loss, "loss", shape=(1,))
    return n, per_sample, dz, loss


def _mean(per_sample, loss, n):
    runtime.kernel("loss", "mean_reduce")((1,), (MEAN_THREADS,), (per_sample, loss, np.int32(n)))


def softmax_cross_entropy(z, labels, dz=None, loss=None, per_sample=None):
    """Mean softmax cross-entropy of logits z (N, K) and its gradient; returns ``(loss_0d, dz)``.

    loss = (1/N) sum_i [log sum_k e^{z_ik} - z_i,y_i]  (log-sum-exp shifted by the row max: stable);
    dz_ik = (e^{z_ik} / sum_k e^{z_ik} - [k == y_i]) / N.
    """
    n, per_sample, dz, loss = _buffers(z, labels, per_sample, dz, loss)
    k = z.shape[1]
    grid = blocks(n, WARPS_PER_BLOCK)
    runtime.kernel("loss", "softmax_xent")((grid,), (WARPS_PER_BLOCK * 32,),
                                     (z, labels, per_sample, dz, np.int32(n), np.int32(k)))
    _mean(per_sample, loss, n)
    return loss.reshape(()), dz


def sigmoid_binary_cross_entropy(z, labels, dz=None, loss=None, per_sample=None):
    """Mean binary cross-entropy of logits z (N, 1) against 0/1 labels, and its gradient.

    loss = (1/N) sum_i [max(z_i, 0) - y_i z_i + log(1 + e^{-|z_i|})];  dz_i = (sigmoid(z_i) - y_i) / N.
    """
    if z.ndim != 2 or z.shape[1] != 1:
        raise ValueError(f"logits: binary cross-entropy expects shape (N, 1), got {tuple(z.shape)}")
    n, per_sample, dz, loss = _buffers(z, labels, per_sample, dz, loss)
    runtime.kernel("loss", "sigmoid_bce")((blocks(n, 256),), (256,), (z, labels, per_sample, dz, np.int32(n)))
    _mean(per_sample, loss, n)
    return loss.reshape(()), dz


def loss_forward_backward(kind: str, z, labels, dz=None, loss=None, per_sample=None):
    """Dispatch on the spec's loss name (``modelspec.LOSSES``)."""
    if kind == "softmax_cross_entropy":
        return softmax_cross_entropy(z, labels, dz, loss, per_sample)
    if kind == "sigmoid_binary_cross_entropy":
        return sigmoid_binary_cross_entropy(z, labels, dz, loss, per_sample)
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
