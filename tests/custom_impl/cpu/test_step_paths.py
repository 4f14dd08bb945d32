"""The CPU convolution's weight gradient (its GEMM run as cols @ dY2^T) against float64 sums."""
from __future__ import annotations

import numpy as np
import pytest

from custom_impl.cpu import conv


def _close(a, b, rtol, atol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bad = np.abs(a - b) > atol + rtol * np.abs(b)
    assert not bad.any(), f"{what}: max |a-b| = {np.abs(a - b).max():.3g}, {bad.sum()} of {bad.size} outside tolerance"


@pytest.mark.parametrize("n,c,hw,k,kernel,stride,padding,bias", [
    (7, 3, (11, 9), 5, (3, 3), (1, 1), (1, 1), True),       # small image: (p, q, n) column order
    (1, 2, (30, 33), 4, (5, 3), (2, 1), (2, 0), True),      # large image: (n, p, q) column order
    (33, 4, (5, 6), 3, (2, 2), (1, 2), (0, 1), False),      # no bias: dW alone, db summed apart
])
def test_conv_weight_gradient_against_float64(n, c, hw, k, kernel, stride, padding, bias):
    """dW and db (the weight GEMM run as cols @ dY2^T, its result transposed) against a float64 einsum.

    Each entry is a float32 sum of L = N*P*Q products in OpenBLAS's order: error ~1e-7 * sqrt(L) * the
    size of the terms; 1e-5 relative + 1e-5 * the sum of |terms| absolute covers it with margin.
    """
    rng = np.random.default_rng(22)
    x = rng.normal(size=(n, c, *hw)).astype(np.float32)
    W = rng.normal(size=(k, c, *kernel)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32) if bias else None
    y, cols = conv.conv2d_forward_cols(x, W, b, stride, padding, buffers={})
    dy = rng.normal(size=y.shape).astype(np.float32)
    _, dW, db = conv.conv2d_backward_cols(dy, cols, x.shape, W, stride, padding, need_dx=False, buffers={})

    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    p, q = y.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))     # (N, C, Hp-R+1, Wp-S+1, R, S)
    win = win[:, :, ::stride[0], ::stride[1]][:, :, :p, :q]                       # (N, C, P, Q, R, S)
    dy64 = dy.astype(np.float64)
    dW_ref = np.einsum("nkpq,ncpqrs->kcrs", dy64, win)
    scale = np.einsum("nkpq,ncpqrs->kcrs", np.abs(dy64), np.abs(win))
    assert dW.shape == W.shape
    _close(dW, dW_ref, 1e-5, float(1e-5 * scale.max()), "dW")
    _close(db, dy64.sum(axis=(0, 2, 3)), 1e-5, float(1e-5 * np.abs(dy64).sum(axis=(0, 2, 3)).max()), "db")
