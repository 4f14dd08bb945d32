"""The geometry of a 2-D convolution: its output shape and its dimensions as one named tuple.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); P = (H + 2ph - R) // sh + 1, Q = (W + 2pw - S) // sw + 1. NCHW, cross-correlation (PyTorch).

Every conv algorithm module takes a ``ConvDims``; nothing here needs CuPy (``planning_sms`` asks the
device when there is one).

Example::

    dims = conv_dims((8, 3, 32, 32), (16, 3, 3, 3), stride=1, padding=1)
    dims.P, dims.Q                       # (32, 32)
    N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw = dims
"""
from __future__ import annotations

import functools
from typing import NamedTuple

from .. import runtime
from ..runtime import pair


class ConvDims(NamedTuple):
    """(N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw) of one convolution (a plain tuple of ints)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    sh: int
    sw: int
    ph: int
    pw: int


def conv2d_output_shape(x_shape, w_shape, stride, padding):
    """(N, K, P, Q) of a convolution; raises ValueError when the kernel does not fit the padded input."""
    N, C, H, W = x_shape
    K, Cw, R, S = w_shape
    sh, sw = pair(stride, "stride", "conv2d")
    ph, pw = pair(padding, "padding", "conv2d")
    if C != Cw:
        raise ValueError(f"conv2d: x has {C} channels but W {tuple(w_shape)} expects {Cw}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv2d: stride {stride} must be >= 1 and padding {padding} >= 0")
    P = (H + 2 * ph - R) // sh + 1
    Q = (W + 2 * pw - S) // sw + 1
    if P < 1 or Q < 1:
        raise ValueError(f"conv2d: a {R}x{S} kernel does not fit the {H}x{W} input padded by {padding}")
    return N, K, P, Q


def conv_dims(x_shape, w_shape, stride, padding) -> ConvDims:
    """The ``ConvDims`` of a convolution of x (N, C, H, W) by W (K, C, R, S); stride and padding an int or
    an (h, w) pair. Memoised (eager calls repeat shapes); raises ValueError like ``conv2d_output_shape``."""
    try:
        return _dims_cached(tuple(x_shape), tuple(w_shape), stride, padding)
    except TypeError:   # an unhashable stride or padding (a list): computed, not cached
        return _dims_of(x_shape, w_shape, stride, padding)


@functools.lru_cache(maxsize=4096)
def _dims_cached(x_shape, w_shape, stride, padding):
    return _dims_of(x_shape, w_shape, stride, padding)


def _dims_of(x_shape, w_shape, stride, padding) -> ConvDims:
    N, C, H, W = (int(v) for v in x_shape)
    K, _, R, S = (int(v) for v in w_shape)
    _, _, P, Q = conv2d_output_shape(x_shape, w_shape, stride, padding)
    sh, sw = pair(stride, "stride", "conv2d")
    ph, pw = pair(padding, "padding", "conv2d")
    return ConvDims(N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw)


def planning_sms() -> int:
    """The current device's SM count, or the H100's 132 where CuPy is absent (plans made on a CPU)."""
    try:
        return runtime.sm_count()
    except ImportError:
        return 132
