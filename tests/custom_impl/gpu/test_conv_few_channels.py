"""The few-channel conv kernels (custom_impl/gpu/conv/few_channels.py) against a NumPy float64 reference.

Same tolerance as test_conv.py (tests/conv_reference.py's ``_assert_close``): an output that is a float32 sum of L
products may differ from float64 by |out - ref| <= 4 * sqrt(L) * eps32 * ref_abs + 4 * eps32 * |ref|, where
ref_abs is the same sum over absolute values (x, W, dy replaced by |x|, |W|, |dy|): rounding of a sum of L
terms grows like sqrt(L) for random data. dx sums L = K*R*S products, dW L = N*P*Q. Outputs (and the
workspace) are NaN-filled before each call so that an unwritten element fails; a second call must give
bit-identical results (no atomics: the partial sums are added in a fixed order).

The forward kernel (a float32 sum of C*R*S products per output, L = C*R*S + 1 with the bias) is checked
on the same cases with and without bias, with a NaN-filled output, an output 4 bytes off 16-byte alignment
(scalar stores instead of float4: bit-identical), and through conv2d_forward's algo "few_channels".

Backward-weights runs through both launch shapes ("rows", "bands" = the default where it has a plan), and
"bands" also through plans other than its own choice (several k-chunks, 1-row and tall bands, 1..5 blocks)
and with a dy that is not 16-byte aligned (4-byte instead of 16-byte copies: bit-identical results expected,
the arithmetic is the same).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from conv_reference import _assert_close, _rand, conv_ref

pytestmark = pytest.mark.gpu

# (N, C, H, W, K, R, S, stride, padding)
CASES = [
    (1, 1, 13, 17, 1, 1, 1, (1, 1), (0, 0)),
    (3, 2, 9, 11, 5, 2, 3, (1, 1), (1, 0)),
    (7, 3, 13, 17, 5, 3, 3, (1, 1), (1, 1)),
    (3, 5, 31, 29, 32, 5, 5, (2, 2), (2, 2)),
    (1, 8, 31, 29, 30, 7, 7, (2, 2), (3, 3)),
    (3, 3, 31, 29, 64, 7, 7, (2, 2), (3, 3)),
    (3, 1, 31, 29, 5, 7, 7, (2, 1), (3, 2)),
    (7, 3, 9, 11, 32, 2, 3, (2, 1), (0, 1)),
    (3, 2, 13, 17, 64, 3, 3, (3, 3), (1, 2)),
    (1, 5, 13, 17, 1, 2, 3, (3, 3), (0, 0)),     # stride > kernel: some dx phases get no taps (zeros)
    (3, 8, 9, 11, 5, 1, 1, (2, 2), (0, 0)),      # 1x1 with stride: 3 of 4 dx phases are zero
    (7, 1, 13, 17, 32, 5, 5, (1, 1), (2, 2)),
    (3, 3, 31, 29, 64, 3, 3, (2, 1), (3, 1)),    # padding above the kernel's half
    (1, 2, 9, 11, 64, 5, 5, (3, 3), (2, 3)),
    (7, 8, 13, 17, 32, 3, 3, (1, 1), (1, 1)),
    (3, 5, 9, 11, 32, 7, 7, (1, 1), (3, 3)),
    (1, 3, 31, 29, 5, 1, 1, (1, 1), (0, 0)),
    (5, 3, 16, 16, 7, 3, 3, (1, 1), (1, 1)),     # Q % 4 == 0 (16-byte dy copies), K % 4 != 0
    (3, 1, 27, 23, 33, 5, 5, (1, 1), (2, 2)),    # P = 27: the last band of an image is short
    (2, 8, 13, 12, 40, 7, 3, (1, 1), (3, 1)),    # (K/4)*C*R = 560 > 512 threads: the bands split k (grid.y = 2)
    (3, 2, 9, 10, 6, 2, 1, (1, 3), (0, 0)),      # S < sw
]
# The layers that motivated the kernels (H100: 0.16-0.33 of cuDNN with the implicit GEMMs).
LAYERS = [
    (256, 1, 28, 28, 32, 5, 5, (1, 1), (2, 2)),    # LeNet conv1
    (256, 3, 32, 32, 32, 3, 3, (1, 1), (1, 1)),    # CIFAR conv1
    (2, 3, 224, 224, 64, 7, 7, (2, 2), (3, 3)),    # ResNet stem, N reduced from 64
]


# Kernels wider than backward-weights takes (S > 8): backward-data only (few_channels.data_fits)
WIDE = [
    (2, 1, 41, 90, 32, 5, 20, (2, 2), (0, 0)),     # DeepBench's speech conv 1, smaller spectrogram
    (2, 1, 45, 60, 32, 41, 11, (2, 2), (20, 5)),   # DeepSpeech 2 conv1: W is 57 KB (shared memory opt-in)
    (3, 2, 17, 40, 7, 3, 13, (2, 1), (1, 6)),      # stride differs per axis
    (2, 8, 9, 40, 6, 3, 32, (1, 1), (1, 0)),       # S = DATA_MAX_S, C = MAX_C
    (1, 3, 11, 29, 5, 2, 9, (3, 3), (0, 0)),       # stride 3: phases with no taps along h
]


def _case_id(c):
    return "N{}C{}H{}W{}K{}R{}S{}s{}{}p{}{}".format(*c[:7], *c[7], *c[8])


@functools.lru_cache(maxsize=None)  # the float64 references are shared by the tests of one case
def _setup(case):
    from custom_impl.gpu.conv import conv_dims

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]) + 7)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    dims = conv_dims(x.shape, W.shape, stride, padding)
    P, Q = dims[7], dims[8]
    dy = _rand(rng, N, K, P, Q)
    x64, W64, dy64 = x.astype(np.float64), W.astype(np.float64), dy.astype(np.float64)
    _, back = conv_ref(x64, W64, stride, padding)
    _, back_abs = conv_ref(np.abs(x64), np.abs(W64), stride, padding)
    dx_ref, dW_ref, _ = back(dy64)
    dx_abs, dW_abs, _ = back_abs(np.abs(dy64))
    return dims, x, W, dy, (dx_ref, dx_abs), (dW_ref, dW_abs)


@pytest.mark.parametrize("case", CASES + LAYERS, ids=_case_id)
def test_forward(case):
    import cupy

    from custom_impl.gpu.conv import few_channels

    dims, x, W, _, _, _ = _setup(case)
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    stride, padding = case[7], case[8]
    rng = np.random.default_rng(sum(case[:7]) + 11)
    b = _rand(rng, K)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref = conv_ref(x64, W64, stride, padding)[0]
    y_abs = conv_ref(np.abs(x64), np.abs(W64), stride, padding)[0]
    assert few_channels.forward_fits(dims)
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)
    y = cupy.full((N, K, P, Q), np.nan, np.float32)
    assert few_channels.forward(gx, gW, gb, y, dims) is y
    _assert_close(cupy.asnumpy(y), y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None], C * R * S + 1,
                  f"few_channels forward {case}")
    y2 = cupy.full((N, K, P, Q), np.nan, np.float32)
    few_channels.forward(gx, gW, None, y2, dims)
    _assert_close(cupy.asnumpy(y2), y_ref, y_abs, C * R * S, f"few_channels forward no bias {case}")
    # 4 bytes past a 16-byte boundary: scalar stores, the same arithmetic
    odd = cupy.full((y.size + 1,), np.nan, np.float32)[1:].reshape(y.shape)
    few_channels.forward(gx, gW, gb, odd, dims)
    assert np.array_equal(cupy.asnumpy(odd), cupy.asnumpy(y)), "forward depends on the output's alignment"


def test_forward_through_conv_and_rejections():
    """conv2d_forward(algo="few_channels") is the same kernel; "auto" times it against the implicit GEMM
    and caches the pick (either agrees with float64); a layer with too many channels is refused with the
    fix named."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import few_channels

    case = (5, 1, 28, 28, 32, 5, 5, (1, 1), (2, 2))
    dims, x, W, _, _, _ = _setup(case)
    gx, gW = cupy.asarray(x), cupy.asarray(W)
    gb = cupy.asarray(_rand(np.random.default_rng(3), 32))
    direct = few_channels.forward(gx, gW, gb, cupy.empty((5, 32, 28, 28), np.float32), dims)
    named = conv.conv2d_forward(gx, gW, gb, 1, 2, algo="few_channels")
    assert np.array_equal(cupy.asnumpy(direct), cupy.asnumpy(named))
    auto = conv.conv2d_forward(gx, gW, gb, 1, 2)
    assert runtime.tuned(("conv", "forward", dims, False)) in ("implicit_gemm", "few_channels")
    ref = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (2, 2))[0] + cupy.asnumpy(gb)[:, None, None]
    assert np.abs(cupy.asnumpy(auto) - ref).max() / np.abs(ref).max() <= 1e-5  # float32 sums of 26 terms
    wide = (2, 9, 8, 8, 4, 3, 3, 8, 8, 1, 1, 1, 1)                          # C = 9 > MAX_C
    assert not few_channels.forward_fits(wide)
    with pytest.raises(ValueError, match="C <= 8"):
        few_channels.forward(cupy.ones((2, 9, 8, 8), np.float32), cupy.ones((4, 9, 3, 3), np.float32), None,
                            cupy.empty((2, 4, 8, 8), np.float32), wide)
    with pytest.raises(ValueError, match="shape"):
        few_channels.forward(gx, gW, gb, cupy.empty((5, 32, 28, 27), np.float32), dims)


@pytest.mark.parametrize("case", CASES + LAYERS, ids=_case_id)
def test_backward_data(case):
    import cupy

    from custom_impl.gpu.conv.few_channels import backward_data, fits

    dims, x, W, dy, (dx_ref, dx_abs), _ = _setup(case)
    N, C, H, Wd, K, R, S = dims[:7]
    assert fits(C, K, R, S, x_shape=x.shape, stride=case[7], padding=case[8])
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    outs = []
    for _ in range(2):
        dx = cupy.full(x.shape, np.nan, np.float32)
        assert backward_data(gdy, gW, dx, dims) is dx
        outs.append(cupy.asnumpy(dx))
    _assert_close(outs[0], dx_ref, dx_abs, K * R * S, f"dx {case}")
    assert np.array_equal(outs[0], outs[1]), f"dx {case}: two calls differ (not deterministic)"


@pytest.mark.parametrize("case", WIDE, ids=_case_id)
def test_backward_data_wide_kernels(case):
    import cupy

    from custom_impl.gpu.conv.few_channels import backward_data, data_fits, fits

    dims, x, W, dy, (dx_ref, dx_abs), _ = _setup(case)
    N, C, H, Wd, K, R, S = dims[:7]
    assert data_fits(C, K, R, S) and not fits(C, K, R, S)
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    dx = cupy.full(x.shape, np.nan, np.float32)
    assert backward_data(gdy, gW, dx, dims) is dx
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * R * S, f"dx {case}")


@pytest.mark.parametrize("launch", ["rows", "bands"])
@pytest.mark.parametrize("case", CASES + LAYERS, ids=_case_id)
def test_backward_weights(case, launch):
    import cupy

    from custom_impl.gpu.conv.few_channels import BandsPlan, backward_weights, weights_plan, workspace_size

    dims, x, W, dy, _, (dW_ref, dW_abs) = _setup(case)
    N, P, Q = dims[0], dims[7], dims[8]
    assert isinstance(weights_plan(dims, 132, launch), BandsPlan) == (launch == "bands")
    gdy, gx = cupy.asarray(dy), cupy.asarray(x)
    n_ws = workspace_size(x.shape, W.shape, case[7], case[8], launch=launch)
    outs = []
    for workspace in (cupy.full((max(n_ws, 1),), np.nan, np.float32), None):  # given, then the shared buffer
        dW = cupy.full(W.shape, np.nan, np.float32)
        assert backward_weights(gdy, gx, dW, dims, workspace=workspace, launch=launch) is dW
        outs.append(cupy.asnumpy(dW))
    # L = N*P*Q products per dW element (the bound of the module docstring)
    _assert_close(outs[0], dW_ref, dW_abs, N * P * Q, f"dW {launch} {case}")
    assert np.array_equal(outs[0], outs[1]), f"dW {launch} {case}: two calls differ (not deterministic)"


def _bands_plans(dims):
    """Bands plans other than weights_plan's choice, within the kernel's limits."""
    from custom_impl.gpu.conv.few_channels import BANDS_SMEM_BYTES, BANDS_THREADS, KT, bands_plan

    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    plans = []
    for kc, pb, grid in ((4, 1, 3), (4, min(P, 3), 2), (8, 2, 5), (-(-K // KT) * KT, P, 1), (12, min(P, 5), 4)):
        if (kc // KT) * C * R * pb <= BANDS_THREADS:
            plan = bands_plan(dims, kc, pb, grid)
            if plan.smem <= BANDS_SMEM_BYTES:
                plans.append(plan)
    return plans


@pytest.mark.parametrize("case", CASES + LAYERS[:2], ids=_case_id)
def test_backward_weights_bands_plans_and_alignment(case):
    """Every bands plan gives dW within the tolerance, and a misaligned dy (4-byte copies instead of 16-byte
    ones where Q % 4 == 0) gives bit-identical results: only the staging differs, not the sums."""
    import cupy

    from custom_impl.gpu.conv.few_channels import backward_weights, weights_plan

    dims, x, W, dy, _, (dW_ref, dW_abs) = _setup(case)
    N, P, Q = dims[0], dims[7], dims[8]
    gdy, gx = cupy.asarray(dy), cupy.asarray(x)
    buf = cupy.empty((dy.size + 1,), np.float32)
    gdy_odd = buf[1:].reshape(dy.shape)  # contiguous, 4 bytes past a 16-byte boundary
    gdy_odd[...] = gdy
    assert gdy_odd.data.ptr % 16 == 4
    for plan in [weights_plan(dims, 132, "bands")] + _bands_plans(dims):
        outs = []
        for d in (gdy, gdy_odd):
            ws = cupy.full((max(1, plan.grid * dW_ref.size),), np.nan, np.float32)
            dW = cupy.full(W.shape, np.nan, np.float32)
            backward_weights(d, gx, dW, dims, workspace=ws, launch="bands", plan=plan)
            outs.append(cupy.asnumpy(dW))
        # L = N*P*Q products per dW element, as above
        _assert_close(outs[0], dW_ref, dW_abs, N * P * Q, f"dW bands {plan} {case}")
        assert np.array_equal(outs[0], outs[1]), f"dW bands {plan} {case}: aligned and misaligned dy differ"


def test_fits():
    from custom_impl.gpu.conv.few_channels import fits

    for N, C, H, Wd, K, R, S, stride, padding in LAYERS:
        assert fits(C, K, R, S, x_shape=(N, C, H, Wd), stride=stride, padding=padding)
    assert not fits(9, 32, 3, 3)                    # too many channels for the registers
    assert not fits(3, 32, 3, 9)                    # S > 8
    assert not fits(8, 64, 5, 5)                    # W: 12800 floats > 48 KB of shared memory
    assert fits(8, 48, 4, 8)                        # W: exactly 12288 floats
    assert not fits(8, 8, 8, 8, x_shape=(1, 8, 16, 4000), stride=1, padding=0)  # x rows of one output row
    assert not fits(3, 8, 3, 3, x_shape=(1, 3, 2, 2), stride=1, padding=0)    # kernel larger than the input
    from custom_impl.gpu.conv.few_channels import data_fits

    assert data_fits(3, 32, 3, 9) and data_fits(1, 32, 41, 11)     # backward-data alone takes wider kernels
    assert data_fits(8, 8, 8, 32) and not data_fits(8, 8, 8, 33)   # S <= 32
    assert not data_fits(9, 8, 3, 3)                                # C <= 8
    assert data_fits(4, 32, 8, 16) and not data_fits(4, 32, 8, 17)  # W: 16384 floats = 64 KB, one more is too many


def test_rejects_bad_arguments():
    import cupy

    from custom_impl.gpu.conv import conv_dims
    from custom_impl.gpu.conv.few_channels import backward_data, backward_weights

    dims = conv_dims((2, 3, 9, 11), (5, 3, 3, 3), 1, 1)
    dy = cupy.ones((2, 5, 9, 11), np.float32)
    x = cupy.ones((2, 3, 9, 11), np.float32)
    W = cupy.ones((5, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        backward_weights(dy, x, cupy.empty((5, 3, 3, 2), np.float32), dims)
    with pytest.raises(ValueError, match="shape"):
        backward_data(dy, W, cupy.empty((2, 3, 9, 10), np.float32), dims)
    with pytest.raises(ValueError, match="float32"):
        backward_data(dy.astype(np.float64), W, cupy.empty(x.shape, np.float32), dims)
    dims_big = conv_dims((16, 3, 32, 32), (32, 3, 3, 3), 1, 1)  # many output rows: partial sums per block
    with pytest.raises(ValueError, match="workspace"):
        backward_weights(cupy.ones((16, 32, 32, 32), np.float32), cupy.ones((16, 3, 32, 32), np.float32),
                         cupy.empty((32, 3, 3, 3), np.float32), dims_big, workspace=cupy.empty((1,), np.float32))

    dims9 = conv_dims((1, 9, 8, 8), (4, 9, 3, 3), 1, 1)   # C = 9: not a few-channel layer
    with pytest.raises(ValueError, match="C <= 8"):
        backward_data(cupy.ones((1, 4, 8, 8), np.float32), cupy.ones((4, 9, 3, 3), np.float32),
                      cupy.empty((1, 9, 8, 8), np.float32), dims9)
    with pytest.raises(ValueError, match="C <= 8"):
        backward_weights(cupy.ones((1, 4, 8, 8), np.float32), cupy.ones((1, 9, 8, 8), np.float32),
                         cupy.empty((4, 9, 3, 3), np.float32), dims9)
