"""Our GPU conv2d (the custom_impl/gpu/conv package) against a NumPy float64 reference: forward, dx, dW, db,
through each algorithm by name and through "auto".

Tolerance: every output is a float32 sum of L products (forward L = C*R*S, dx L = K*R*S, dW L = N*P*Q,
db L = N*P*Q); rounding grows like sqrt(L) for random data and is bounded by L * eps32 * sum |terms|,
so we allow |out - ref| <= 4 * sqrt(L) * eps32 * ref_abs + 4 * eps32 * |ref|, where ref_abs is the same
convolution of |x|, |W|, |dy| (the sum of absolute terms). Outputs are NaN-filled before each run.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

from conv_reference import EPS32, _assert_close, _rand, conv_ref, reference_case  # noqa: F401


# (N, C, H, W, K, R, S, stride, padding)
CASES = [
    (1, 1, 13, 17, 3, 3, 3, (1, 1), (1, 1)),
    (2, 3, 13, 17, 5, 3, 5, (2, 1), (1, 2)),
    (3, 5, 13, 17, 7, 1, 1, (1, 1), (0, 0)),
    (2, 4, 9, 11, 6, 5, 5, (2, 2), (2, 2)),
    (1, 3, 16, 16, 4, 7, 7, (2, 2), (0, 0)),
    (7, 33, 13, 17, 9, 3, 3, (2, 2), (1, 1)),
    (2, 7, 13, 17, 130, 3, 3, (1, 1), (0, 0)),
    (33, 16, 8, 8, 32, 3, 3, (1, 1), (1, 1)),
    (4, 64, 14, 14, 96, 3, 3, (1, 1), (1, 1)),
    (1, 3, 32, 32, 32, 3, 3, (1, 1), (1, 1)),
    (2, 3, 15, 14, 8, 2, 2, (3, 3), (0, 0)),      # stride > kernel: some dx phases get no taps (zeros)
    (2, 5, 11, 12, 6, 3, 2, (3, 2), (2, 1)),     # mixed strides, padding larger than stride - 1
]


@pytest.mark.parametrize("algo", ["implicit_gemm", "auto"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}K{}R{}S{}s{}{}p{}{}".format(*c[:7], *c[7], *c[8]))
def test_conv2d(case, algo):
    import cupy

    from custom_impl.gpu.conv import conv2d_backward, conv2d_forward, conv2d_workspace_size

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]))
    x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S), _rand(rng, K)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref, back = conv_ref(x64, W64, stride, padding)
    y_abs, back_abs = conv_ref(np.abs(x64), np.abs(W64), stride, padding)
    y_ref += b[:, None, None]
    y_abs += np.abs(b)[:, None, None]
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    assert conv2d_forward(gx, gW, gb, stride, padding, out=y, algo=algo) is y
    _assert_close(cupy.asnumpy(y), y_ref, y_abs, C * R * S, f"y {case}")

    y_nob = conv2d_forward(gx, gW, None, stride, padding, algo=algo)
    _assert_close(cupy.asnumpy(y_nob), y_ref - b[:, None, None], y_abs, C * R * S, f"y without bias {case}")

    dy = _rand(rng, *y_ref.shape)
    dx_ref, dW_ref, db_ref = back(dy.astype(np.float64))
    dx_abs, dW_abs, db_abs = back_abs(np.abs(dy.astype(np.float64)))
    dx = cupy.full(x.shape, np.nan, np.float32)
    dW = cupy.full(W.shape, np.nan, np.float32)
    db = cupy.full((K,), np.nan, np.float32)
    ws_size = conv2d_workspace_size(x.shape, W.shape, stride, padding)
    ws = cupy.full((max(ws_size, 1),), np.nan, np.float32)
    res = conv2d_backward(cupy.asarray(dy), gx, gW, stride, padding, dx=dx, dW=dW, db=db, workspace=ws,
                          algo=algo, weights_algo=algo)
    assert res[0] is dx and res[1] is dW and res[2] is db
    P, Q = y_ref.shape[2:]
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * R * S, f"dx {case}")
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, N * P * Q, f"dW {case}")
    _assert_close(cupy.asnumpy(db), db_ref, db_abs, N * P * Q, f"db {case}")


@pytest.mark.parametrize("config", ["128x128x8_8x8", "64x128x8_8x8", "32x64x8_4x8", "32x32x8_4x4", "256x128x8_16x8",
                                    "128x256x8_8x16", "128x128x16_8x8", "256x128x16_16x8"])
def test_conv2d_forward_every_config(config):
    import cupy

    from custom_impl.gpu.conv import conv_dims, implicit_gemm

    rng = np.random.default_rng(11)
    x, W, b = _rand(rng, 3, 6, 13, 17), _rand(rng, 70, 6, 3, 5), _rand(rng, 70)
    y_ref, _ = conv_ref(x.astype(np.float64), W.astype(np.float64), (2, 1), (1, 2))
    y_abs, _ = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), (2, 1), (1, 2))
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    dims = conv_dims(x.shape, W.shape, (2, 1), (1, 2))
    implicit_gemm.forward(cupy.asarray(x), cupy.asarray(W), cupy.asarray(b), y, dims, config=config)
    _assert_close(cupy.asnumpy(y), y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None], 6 * 15,
                  f"y {config}")


@pytest.mark.parametrize("splits", [2, 5, 32])
@pytest.mark.parametrize("case", [(1, 6, 13, 17, 70, 3, 5, (2, 1), (1, 2)), (2, 32, 9, 11, 20, 5, 5, (1, 1), (2, 2))],
                         ids=["N1C6K70", "N2C32K20"])
def test_conv2d_forward_split_k(case, splits):
    """Forward with the reduction C*R*S split over blocks (what small batches get in a CUDA graph): partial
    sums in the workspace, added in a fixed order with the bias by a second kernel; deterministic."""
    import cupy

    from custom_impl.gpu.conv import conv_dims, implicit_gemm

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(13 + splits)
    x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S), _rand(rng, K)
    y_ref, _ = conv_ref(x.astype(np.float64), W.astype(np.float64), stride, padding)
    y_abs, _ = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), stride, padding)
    ws = cupy.full((splits * K * y_ref[0, 0].size * N + 3,), np.nan, np.float32)
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    dims = conv_dims(x.shape, W.shape, stride, padding)
    args = (cupy.asarray(x), cupy.asarray(W), cupy.asarray(b))

    def forward(out, workspace):
        return implicit_gemm.forward(*args, out, dims, workspace, config="32x32x8_4x4", splits=splits)

    forward(y, ws)
    _assert_close(cupy.asnumpy(y), y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None], C * R * S,
                  f"y split {splits}")
    again = forward(cupy.empty_like(y), ws)
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(y)), "split-K forward is not deterministic"
    with pytest.raises(ValueError, match="workspace"):
        forward(cupy.empty_like(y), ws[:5])


POINTWISE_CASES = [(3, 37, 4, 5, 19), (2, 8, 7, 4, 70), (1, 130, 2, 2, 6), (5, 6, 3, 4, 131)]  # (N, C, H, W, K)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("config", ["128x128x8_8x8", "64x64x8_8x8", "32x64x8_4x8", "32x32x8_4x4"])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_conv2d_pointwise(offset, config, splits):
    """1x1, stride 1, no padding, H*W % 4 == 0: forward and backward-data run as plain GEMMs over float4
    groups (conv_pointwise_fwd / _dgrad), under tile configs with partial M and column tiles (C or K of
    6..131, H*W*N not a multiple of the tile) and split-K; NaN-filled outputs; float64-close with the
    module's tolerance (L = C or K products). ``offset`` 1 puts x / dy and y / dx 4 bytes past a 16-byte
    boundary: the gather kernels run instead and give the same bits (each output the same sum in the
    same order)."""
    import cupy

    from custom_impl.gpu.conv import conv_dims, implicit_gemm

    for N, C, H, Wd, K in POINTWISE_CASES:
        rng = np.random.default_rng(N * C + K)
        x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, 1, 1), _rand(rng, K)
        y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (0, 0))
        y_abs, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), (1, 1), (0, 0))
        dy = _rand(rng, *y_ref.shape)
        dx_ref, dx_abs = back(dy.astype(np.float64))[0], back_abs(np.abs(dy.astype(np.float64)))[0]
        dims = conv_dims(x.shape, W.shape, 1, 0)
        assert implicit_gemm.pointwise(dims)
        ws = cupy.full((splits * max(C, K) * N * H * Wd + 4,), np.nan, np.float32)
        gW, gb = cupy.asarray(W), cupy.asarray(b)

        def at(a, o, copy=True):
            """a on the GPU, starting ``o`` floats past an allocation's (16-byte aligned) start; NaN if not copy."""
            out = cupy.full(a.size + o, np.nan, np.float32)[o:].reshape(a.shape)
            if copy:
                out[...] = cupy.asarray(a)
            return out

        got = {}
        for o in dict.fromkeys((offset, 0)):   # this offset, then aligned (the pointwise kernels) for the bits
            y, dx = at(y_ref, o, copy=False), at(x, o, copy=False)
            implicit_gemm.forward(at(x, o), gW, gb, y, dims, ws, config=config, splits=splits)
            implicit_gemm.backward_data(at(dy, o), gW, dx, dims, ws, config=config, splits=splits)
            got[o] = (cupy.asnumpy(y), cupy.asnumpy(dx))
        name = f"N{N} C{C} {H}x{Wd} K{K} {config} splits={splits} offset={offset}"
        _assert_close(got[offset][0], y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None], C, f"y {name}")
        _assert_close(got[offset][1], dx_ref, dx_abs, K, f"dx {name}")
        assert np.array_equal(got[offset][0], got[0][0]) and np.array_equal(got[offset][1], got[0][1]), name


def test_conv2d_backward_weights_deterministic():
    import cupy

    from custom_impl.gpu.conv import conv2d_backward

    rng = np.random.default_rng(12)
    x, W, dy = _rand(rng, 16, 8, 20, 20), _rand(rng, 16, 8, 3, 3), _rand(rng, 16, 16, 20, 20)
    args = (cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W), 1, 1)
    first = [cupy.asnumpy(a) for a in conv2d_backward(*args)]
    for _ in range(2):
        again = [cupy.asnumpy(a) for a in conv2d_backward(*args)]
        assert all(np.array_equal(u, v) for u, v in zip(first, again))


def test_conv2d_rejects_bad_shapes():
    import cupy

    from custom_impl.gpu.conv import conv2d_forward

    with pytest.raises(ValueError, match="channels"):
        conv2d_forward(cupy.ones((1, 3, 8, 8), np.float32), cupy.ones((4, 2, 3, 3), np.float32), None, 1, 0)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_forward(cupy.ones((1, 3, 2, 2), np.float32), cupy.ones((4, 3, 5, 5), np.float32), None, 1, 0)
    with pytest.raises(ValueError, match="algo='v2'; use one of 'auto', 'implicit_gemm'"):
        conv2d_forward(cupy.ones((1, 3, 8, 8), np.float32), cupy.ones((4, 3, 3, 3), np.float32), None, 1, 0,
                       algo="v2")


SMALLC = [c for c in CASES if c[1] <= 8] + [(3, 8, 13, 17, 5, 3, 5, (2, 1), (1, 2))]


@pytest.mark.parametrize("algo", ["implicit_gemm", "few_channels", "auto"])
@pytest.mark.parametrize("case", SMALLC, ids=lambda c: "N{}C{}H{}W{}K{}R{}S{}s{}{}p{}{}".format(*c[:7], *c[7], *c[8]))
def test_conv2d_backward_data_algos(case, algo):
    """conv2d_backward_data through each backward-data algorithm that can run few channels, by name and by
    "auto" (timed once and cached)."""
    import cupy

    from custom_impl.gpu.conv import conv2d_backward_data

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]) + 1)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), stride, padding)
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), stride, padding)
    dy = _rand(rng, *y_ref.shape)
    dx = cupy.full(x.shape, np.nan, np.float32)
    assert conv2d_backward_data(cupy.asarray(dy), cupy.asarray(W), x.shape, stride, padding, dx=dx, algo=algo) is dx
    _assert_close(cupy.asnumpy(dx), back(dy.astype(np.float64))[0], back_abs(np.abs(dy.astype(np.float64)))[0],
                  K * R * S, f"dx {algo} {case}")


@pytest.mark.parametrize("weights_algo", ["implicit_gemm", "few_channels", "auto"])
@pytest.mark.parametrize("case", SMALLC, ids=lambda c: "N{}C{}H{}W{}K{}R{}S{}s{}{}p{}{}".format(*c[:7], *c[7], *c[8]))
def test_conv2d_backward_weights_algos(case, weights_algo):
    """conv2d_backward's dW through each backward-weights algorithm (few channels: both can run), with the
    workspace sized by conv2d_workspace_size and NaN-filled so a kernel that reads unwritten partials fails."""
    import cupy

    from custom_impl.gpu.conv import conv2d_backward, conv2d_workspace_size

    N, C, H, Wd, K, R, S, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]) + 2)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), stride, padding)
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), stride, padding)
    dy = _rand(rng, *y_ref.shape)
    ws = cupy.full((max(1, conv2d_workspace_size(x.shape, W.shape, stride, padding)),), np.nan, np.float32)
    dW = cupy.full(W.shape, np.nan, np.float32)
    conv2d_backward(cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W), stride, padding, need_dx=False, dW=dW,
                    need_db=False, workspace=ws, weights_algo=weights_algo)
    P, Q = y_ref.shape[2:]
    _assert_close(cupy.asnumpy(dW), back(dy.astype(np.float64))[1], back_abs(np.abs(dy.astype(np.float64)))[1],
                  N * P * Q, f"dW {weights_algo} {case}")


@pytest.mark.parametrize("shape", [(64, 3, 31, 33), (5, 2, 1, 1), (600, 7, 7, 7), (1, 4, 101, 103), (64, 64, 14, 14),
                                   (71, 5, 8, 8), (9, 3, 2, 2)])
def test_conv_bias_grad_split_over_images(shape):
    """db = sum of dy over n, p, q, with the images split over blocks (a ragged last chunk for the first
    shape and the sixth; P*Q a multiple of 4, read as float4s, for the last three) and the partials added in
    a fixed order: equal to float64 within the summation bound, the same bits on every call and whether the
    last block or a second kernel adds the partials, nothing read from the NaN-filled workspace that was not
    written first; and right from a dy view that is not 16-byte aligned."""
    import cupy

    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv.implicit_gemm import bias_grad, bias_splits

    rng = np.random.default_rng(sum(shape))
    dy = _rand(rng, *shape)
    N, K, P, Q = shape
    ref = dy.astype(np.float64).sum(axis=(0, 2, 3))
    ref_abs = np.abs(dy.astype(np.float64)).sum(axis=(0, 2, 3))
    ws = cupy.full((K * N + 1,), np.nan, np.float32)
    db = cupy.full((K,), np.nan, np.float32)
    gdy = cupy.asarray(dy)
    assert bias_grad(gdy, db, ws) is db
    _assert_close(cupy.asnumpy(db), ref, ref_abs, N * P * Q, f"db {shape} ({bias_splits(N, K, P * Q)})")
    again = cupy.asnumpy(bias_grad(gdy, cupy.empty((K,), np.float32), ws))
    assert np.array_equal(again, cupy.asnumpy(db))
    # the partials summed by a second kernel instead of the last block of each channel: the same order
    two_launches = cupy.asnumpy(bias_grad(gdy, cupy.empty((K,), np.float32), ws, serial=False))
    assert np.array_equal(two_launches, cupy.asnumpy(db))
    assert int(cupy.count_nonzero(runtime.counters(1))) == 0, "the arrival counters were not left zeroed"
    # dy 4 bytes off a 16-byte boundary (a view into a larger buffer): read float by float, still right
    shifted = cupy.empty((dy.size + 1,), np.float32)[1:].reshape(shape)
    shifted[...] = gdy
    db_shifted = cupy.asnumpy(bias_grad(shifted, cupy.empty((K,), np.float32), ws))
    _assert_close(db_shifted, ref, ref_abs, N * P * Q, f"db {shape} from a view 4 bytes off alignment")


@pytest.mark.parametrize("case", [(1, 32, 14, 14, 64, 5, 5, 2), (2, 9, 11, 13, 70, 3, 3, 1), (16, 16, 14, 14, 48, 5, 5, 2)],
                         ids=["N1C32K64", "N2C9K70", "N16C16K48"])
def test_conv2d_backward_data_split_k(case):
    """Stride-1 backward-data of a small batch splits its reduction K*R*S over blocks when launches are
    cheap (inside a CUDA graph): partials in a NaN-filled workspace, added in order; float64-close and
    deterministic, for every plan the tuning times in either launch regime (each split named; GoogLeNet's
    16-channel 5x5 layer among them) and for the one it keeps."""
    import cupy

    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import conv2d_backward_data, conv2d_workspace_size, conv_dims, implicit_gemm

    N, C, H, Wd, K, R, S, pad = case
    rng = np.random.default_rng(sum(case))
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (pad, pad))
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), (1, 1), (pad, pad))
    dy = _rand(rng, *y_ref.shape)
    dx_ref, dx_abs = back(dy.astype(np.float64))[0], back_abs(np.abs(dy.astype(np.float64)))[0]
    dims = conv_dims(x.shape, W.shape, 1, pad)
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    eager = implicit_gemm.data_candidates(dims)
    eager_ws = conv2d_workspace_size(x.shape, W.shape, 1, pad)
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        assert implicit_gemm.data_plan(dims)[2] > 1, "this case should split"
        ws = cupy.full((max(eager_ws, conv2d_workspace_size(x.shape, W.shape, 1, pad)),), np.nan, np.float32)
        plans = implicit_gemm.data_candidates(dims)
        assert any(s > 1 for _, s in plans)
        for cfg, splits in dict.fromkeys(plans + eager):
            dx = cupy.full(x.shape, np.nan, np.float32)
            implicit_gemm.backward_data(gdy, gW, dx, dims, ws, config=cfg, splits=splits)
            _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * R * S, f"dx {cfg.name} split {splits} {case}")
        dx = cupy.full(x.shape, np.nan, np.float32)
        conv2d_backward_data(gdy, gW, x.shape, 1, pad, dx=dx, workspace=ws, algo="implicit_gemm")
        assert runtime.tuned((implicit_gemm.FAMILY, "backward_data", dims, runtime.sm_count())) in plans
        again = conv2d_backward_data(gdy, gW, x.shape, 1, pad, workspace=ws, algo="implicit_gemm")
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * R * S, f"dx tuned {case}")
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dx))


@pytest.mark.parametrize("case", [(16, 16, 14, 14, 48, 5, 5, 2), (8, 64, 14, 14, 32, 1, 1, 0)], ids=["5x5", "1x1"])
def test_conv2d_repeated_calls_reuse_their_launches(case):
    """A repeated eager call of a tuned implicit-GEMM plan reuses the launches its first call built
    (implicit_gemm's launch memo): float64-close and the same bits on every call of every phase, with the
    layer's workspace and with the shared one; an operand at another alignment (an unaligned dx, where the
    1x1 layer's float4 kernel cannot run) gets launches of its own; runtime.clear_tuned empties the memo."""
    import cupy

    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import conv_dims, conv2d_workspace_size, implicit_gemm

    N, C, H, Wd, K, R, S, pad = case
    x, W, dy, (y_ref, dx_ref, dW_ref, _), (y_abs, dx_abs, dW_abs) = reference_case(
        (N, C, H, Wd, K, R, S, (1, 1), (pad, pad)), sum(case))
    b = _rand(np.random.default_rng(K), K)
    y_ref, y_abs = y_ref + b[:, None, None], y_abs + np.abs(b)[:, None, None]
    dims = conv_dims(x.shape, W.shape, 1, pad)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    runtime.clear_tuned()
    layer_ws = cupy.full((conv2d_workspace_size(x.shape, W.shape, 1, pad),), np.nan, np.float32)
    dx_store = cupy.full((x.size + 1,), np.nan, np.float32)
    for ws in (layer_ws, None):
        for dx_at in (0, 1):
            outs = []
            for _ in range(3):
                y = cupy.full(y_ref.shape, np.nan, np.float32)
                dW = cupy.full(W.shape, np.nan, np.float32)
                dx_store.fill(np.nan)
                dx = dx_store[dx_at:dx_at + x.size].reshape(x.shape)
                implicit_gemm.forward(gx, gW, gb, y, dims, ws)
                implicit_gemm.backward_data(gdy, gW, dx, dims, ws)
                implicit_gemm.backward_weights(gdy, gx, dW, dims, ws)
                outs.append([cupy.asnumpy(a) for a in (y, dx, dW)])
            what = f"{case} workspace {'layer' if ws is not None else 'shared'} dx at +{dx_at}"
            _assert_close(outs[0][0], y_ref, y_abs, C * R * S, f"y {what}")
            _assert_close(outs[0][1], dx_ref, dx_abs, K * R * S, f"dx {what}")
            _assert_close(outs[0][2], dW_ref, dW_abs, N * H * Wd, f"dW {what}")
            for later in outs[1:]:
                for a, c in zip(outs[0], later):
                    assert np.array_equal(a, c), what
    assert implicit_gemm._launchers, "the tuned calls kept their launches"
    runtime.clear_tuned()
    assert not implicit_gemm._launchers


def test_conv2d_tuned_forward_and_weights_plans():
    """Every forward and backward-weights plan the implicit GEMM's tuning times (splits named), on LeNet's
    5x5 layer at batch 3 in the graph launch regime, is float64-close; then the tuned call keeps one of
    them and gives the same bits twice."""
    import cupy

    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import conv2d_workspace_size, conv_dims, implicit_gemm

    N, C, H, Wd, K, R, S, pad = 3, 32, 14, 14, 64, 5, 5, 2
    rng = np.random.default_rng(21)
    x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S), _rand(rng, K)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref, back = conv_ref(x64, W64, (1, 1), (pad, pad))
    y_abs, back_abs = conv_ref(np.abs(x64), np.abs(W64), (1, 1), (pad, pad))
    y_ref += b[:, None, None]
    y_abs += np.abs(b)[:, None, None]
    dy = _rand(rng, *y_ref.shape)
    dW_ref, dW_abs = back(dy.astype(np.float64))[1], back_abs(np.abs(dy.astype(np.float64)))[1]
    dims = conv_dims(x.shape, W.shape, 1, pad)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        ws = cupy.full((conv2d_workspace_size(x.shape, W.shape, 1, pad),), np.nan, np.float32)
        fwd, wgt = implicit_gemm.forward_candidates(dims), implicit_gemm.weights_candidates(dims)
        assert any(s > 1 for _, s in fwd) and any(s > 1 for _, s in wgt)
        for cfg, splits in fwd:
            y = cupy.full(y_ref.shape, np.nan, np.float32)
            implicit_gemm.forward(gx, gW, gb, y, dims, ws, config=cfg, splits=splits)
            _assert_close(cupy.asnumpy(y), y_ref, y_abs, C * R * S, f"y {cfg.name} split {splits}")
        for cfg, splits in wgt:
            dW = cupy.full(W.shape, np.nan, np.float32)
            implicit_gemm.backward_weights(gdy, gx, dW, dims, ws, config=cfg, splits=splits)
            _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, N * H * Wd, f"dW {cfg.name} split {splits}")
        outs = []
        for _ in range(2):
            y = cupy.full(y_ref.shape, np.nan, np.float32)
            dW = cupy.full(W.shape, np.nan, np.float32)
            implicit_gemm.forward(gx, gW, gb, y, dims, ws)
            implicit_gemm.backward_weights(gdy, gx, dW, dims, ws)
            outs.append((cupy.asnumpy(y), cupy.asnumpy(dW)))
        sms = runtime.sm_count()
        assert runtime.tuned((implicit_gemm.FAMILY, "forward", dims, sms)) in fwd
        assert runtime.tuned((implicit_gemm.FAMILY, "backward_weights", dims, sms)) in wgt
    _assert_close(outs[0][0], y_ref, y_abs, C * R * S, "y tuned")
    _assert_close(outs[0][1], dW_ref, dW_abs, N * H * Wd, "dW tuned")
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))


@pytest.mark.parametrize("r", [3, 5])
def test_auto_choice_with_winograd_candidates(r):
    """algo="auto" on a 3x3 or 5x5 stride-1 layer with >= 16 channels times the implicit GEMMs against
    Winograd (and patch) once, caches the choice, and whichever it picks agrees with float64 within the harness's layer
    tolerance (max |a - b| / max |b| <= 1e-4: Winograd's transforms add rounding beyond a direct sum's
    bound, see test_conv_winograd.py, but far below this)."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import select

    N, C, H, Wd, K = 8, 32, 14, 15, 48
    rng = np.random.default_rng(31)
    pad = r // 2
    x, W, b = _rand(rng, N, C, H, Wd), _rand(rng, K, C, r, r), _rand(rng, K)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (pad, pad))
    y_ref = y_ref + b[:, None, None]
    dy = _rand(rng, *y_ref.shape)
    dx_ref = back(dy.astype(np.float64))[0]
    dims = conv.conv_dims(x.shape, W.shape, 1, pad)
    for phase in select.PHASES:
        assert "winograd" in select.candidates(dims, phase)
    ws = cupy.full((conv.conv2d_workspace_size(x.shape, W.shape, 1, pad),), np.nan, np.float32)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    y = conv.conv2d_forward(gx, gW, gb, 1, pad, workspace=ws)
    dx = conv.conv2d_backward_data(gdy, gW, x.shape, 1, pad, workspace=ws)
    assert runtime.tuned(("conv", "forward", dims, False)) in select.candidates(dims, "forward")
    assert runtime.tuned(("conv", "backward_data", dims)) in select.candidates(dims, "backward_data")
    dW_ref = back(dy.astype(np.float64))[1]
    _, dW, _ = conv.conv2d_backward(gdy, gx, gW, 1, pad, need_dx=False, need_db=False, workspace=ws)
    assert runtime.tuned(("conv", "backward_weights", dims)) in select.candidates(dims, "backward_weights")
    for got, ref, what in ((y, y_ref, "y"), (dx, dx_ref, "dx"), (dW, dW_ref, "dW")):
        err = np.abs(cupy.asnumpy(got) - ref).max() / np.abs(ref).max()
        assert err <= 1e-4, f"{what}: auto ({runtime.tuned_choices()}) off by {err:.3g}"


# "patch", stride 1 only: (N, C, H, W, K, R, S, padding)
PATCH_CASES = [
    (1, 32, 14, 14, 64, 5, 5, (2, 2)),    # LeNet conv2 at batch 1
    (5, 33, 12, 12, 64, 5, 5, (0, 0)),    # unpadded; C = 33: a second channel group with one channel
    (3, 9, 13, 11, 70, 5, 5, (2, 2)),     # K = 70: two k groups (dW), a ragged one; two channel tiles (dx)
    (2, 17, 9, 17, 9, 3, 3, (1, 1)),      # 3x3, odd sizes, four channel tiles of which one is 1 wide
    (7, 8, 6, 5, 3, 7, 7, (3, 3)),        # 7x7 on a 6x5 input: most taps in the padding
    (2, 12, 10, 7, 5, 3, 5, (0, 2)),      # R != S, unpadded rows
    (2, 10, 11, 9, 6, 4, 6, (3, 1)),      # even kernel sizes, row padding > R - 1
    (1, 3, 5, 21, 4, 1, 4, (0, 1)),       # few channels, R = 1, a wide row: runs when asked (no candidate)
    (33, 16, 8, 8, 32, 3, 3, (1, 1)),     # N = 33: several items per split (dW)
]
PATCH_IDS = ["N{}C{}H{}W{}K{}R{}S{}p{}{}".format(*c[:7], *c[7]) for c in PATCH_CASES]


@pytest.mark.parametrize("phase", ["weights", "data"])
@pytest.mark.parametrize("case", PATCH_CASES, ids=PATCH_IDS)
def test_conv2d_backward_patch(case, phase):
    """The patch kernels' dW / dx through the public entry points, with the workspace sized by
    conv2d_workspace_size and NaN-filled (a kernel that reads unwritten partials or a stale stage fails),
    against float64 with the module's tolerance: dW sums L = N*P*Q products (in item order per block,
    then the splits in order), dx L = K*R*S; both plain float32 sums, so the same sqrt(L) bound. A second
    call must give the same bits (no atomics, fixed partition). dW also from every candidate plan of the
    tuning (``patch.weights_candidates``: the modules of ``patch.WEIGHTS_MODULES``)."""
    import cupy

    from custom_impl.gpu.conv import conv2d_backward, conv2d_backward_data, conv2d_workspace_size

    N, C, H, Wd, K, R, S, padding = case
    rng = np.random.default_rng(sum(case[:7]) + 5)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, R, S)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), padding)
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), (1, 1), padding)
    dy = _rand(rng, *y_ref.shape)
    dx_ref, dW_ref, _ = back(dy.astype(np.float64))
    dx_abs, dW_abs, _ = back_abs(np.abs(dy.astype(np.float64)))
    ws = cupy.full((max(1, conv2d_workspace_size(x.shape, W.shape, 1, padding)),), np.nan, np.float32)
    gdy, gx, gW = cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W)
    P, Q = y_ref.shape[2:]
    if phase == "weights":
        outs = []
        for _ in range(2):
            dW = cupy.full(W.shape, np.nan, np.float32)
            conv2d_backward(gdy, gx, gW, 1, padding, need_dx=False, dW=dW, need_db=False, workspace=ws,
                            weights_algo="patch")
            outs.append(cupy.asnumpy(dW))
        _assert_close(outs[0], dW_ref, dW_abs, N * P * Q, f"dW patch {case}")
        # every plan the tuning may pick (each k per block module), not only the one it picked here
        from custom_impl.gpu import runtime
        from custom_impl.gpu.conv import conv_dims, patch

        dims = conv_dims(x.shape, W.shape, 1, padding)
        for plan in patch.weights_candidates(dims, runtime.sm_count()):
            dW = cupy.full(W.shape, np.nan, np.float32)
            assert patch.backward_weights(gdy, gx, dW, dims, ws, plan) is dW
            _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, N * P * Q, f"dW patch {case} {plan.kb} k per block, {plan.t} tasks per thread")
    else:
        outs = []
        for _ in range(2):
            dx = cupy.full(x.shape, np.nan, np.float32)
            assert conv2d_backward_data(gdy, gW, x.shape, 1, padding, dx=dx, workspace=ws, algo="patch") is dx
            outs.append(cupy.asnumpy(dx))
        _assert_close(outs[0], dx_ref, dx_abs, K * R * S, f"dx patch {case}")
    assert np.array_equal(outs[0], outs[1]), f"{phase} patch is not deterministic"


def test_conv2d_backward_patch_auto_and_errors():
    """LeNet's 5x5 layer has "patch" among its timed candidates for both passes and "auto" is float64-close
    whichever it picks; shapes the patch kernels cannot run raise a ValueError naming the problem and the
    way out, and a too-small workspace is refused."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import patch, select

    N, C, H, Wd, K = 6, 32, 14, 14, 64
    rng = np.random.default_rng(41)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, 5, 5)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), (2, 2))
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), (1, 1), (2, 2))
    dy = _rand(rng, *y_ref.shape)
    dims = conv.conv_dims(x.shape, W.shape, 1, 2)
    assert select.patch_ok(dims, "backward_weights") and select.patch_ok(dims, "backward_data")
    gdy, gx, gW = cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W)
    ws = cupy.full((conv.conv2d_workspace_size(x.shape, W.shape, 1, 2),), np.nan, np.float32)
    dx, dW, _ = conv.conv2d_backward(gdy, gx, gW, 1, 2, workspace=ws, need_db=False)
    data_algo = runtime.tuned(("conv", "backward_data", dims))
    weights_algo = runtime.tuned(("conv", "backward_weights", dims))
    assert data_algo in ("implicit_gemm", "patch") and weights_algo in ("implicit_gemm", "patch")
    dx_ref, dW_ref, _ = back(dy.astype(np.float64))
    dx_abs, dW_abs, _ = back_abs(np.abs(dy.astype(np.float64)))
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K * 25, f"dx auto ({data_algo})")
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, N * 14 * 14, f"dW auto ({weights_algo})")

    strided = conv.conv_dims((2, 8, 9, 9), (4, 8, 3, 3), 2, 1)
    assert not select.patch_ok(strided, "backward_weights") and patch.weights_plan(strided) is None
    gx2, gW2 = cupy.ones((2, 8, 9, 9), np.float32), cupy.ones((4, 8, 3, 3), np.float32)
    gdy2 = cupy.ones((2, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"stride \(2, 2\) is not \(1, 1\).*'implicit_gemm'"):
        conv.conv2d_backward(gdy2, gx2, gW2, 2, 1, need_dx=False, need_db=False, weights_algo="patch")
    with pytest.raises(ValueError, match=r"stride \(2, 2\) is not \(1, 1\).*'implicit_gemm'"):
        conv.conv2d_backward_data(gdy2, gW2, gx2.shape, 2, 1, algo="patch")
    wide = cupy.ones((1, 8, 9, 9), np.float32), cupy.ones((4, 8, 3, 9), np.float32)
    with pytest.raises(ValueError, match="kernel width S=9"):
        conv.conv2d_backward_data(cupy.ones((1, 4, 9, 3), np.float32), wide[1], wide[0].shape, 1, 1, algo="patch")
    with pytest.raises(ValueError, match="conv2d_workspace_size"):
        conv.conv2d_backward_data(gdy, gW, x.shape, 1, 2, workspace=ws[:7], algo="patch")


# "strided_1x1", 1x1 kernels with a stride and no padding: (N, C, H, W, K, stride)
STRIDED_1X1_CASES = [
    (3, 5, 9, 11, 7, (2, 2)),        # odd H and W: the last row and column are sampled
    (2, 16, 14, 16, 24, (2, 2)),     # W % 4 == 0: the float4 stores
    (1, 64, 7, 12, 96, (2, 2)),      # batch 1, K = 96: the stride-1 GEMM splits its reduction
    (2, 6, 10, 13, 5, (3, 2)),       # different strides per axis, W % 4 != 0
    (4, 9, 8, 9, 11, (1, 3)),        # stride 1 along h only
    (2, 4, 12, 12, 8, (4, 4)),       # a stride larger than the kernel by 3: three zero rows in four
]
STRIDED_1X1_IDS = ["N{}C{}H{}W{}K{}s{}x{}".format(*c[:5], *c[5]) for c in STRIDED_1X1_CASES]


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("case", STRIDED_1X1_CASES, ids=STRIDED_1X1_IDS)
def test_conv2d_backward_data_strided_1x1(case, offset):
    """dx of a strided 1x1 conv as a stride-1 backward-data plus a scatter, through the public entry point
    with a NaN-filled workspace and dx (every element, the zeros included, must be written), against float64
    with the module's tolerance (L = K products per element); ``offset`` 1 puts dx 4 bytes past a 16-byte
    boundary (the scalar stores). A second call gives the same bits; "auto" weighs it against the implicit
    GEMM and is float64-close whichever it picks."""
    import cupy

    from custom_impl.gpu import conv, runtime

    N, C, H, Wd, K, stride = case
    rng = np.random.default_rng(sum(case[:5]) + 17)
    x, W = _rand(rng, N, C, H, Wd), _rand(rng, K, C, 1, 1)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), stride, (0, 0))
    _, back_abs = conv_ref(np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64)), stride, (0, 0))
    dy = _rand(rng, *y_ref.shape)
    dx_ref = back(dy.astype(np.float64))[0]
    dx_abs = back_abs(np.abs(dy.astype(np.float64)))[0]
    dims = conv.conv_dims(x.shape, W.shape, stride, 0)
    assert "strided_1x1" in conv.candidates(dims, "backward_data")
    ws = cupy.full((conv.conv2d_workspace_size(x.shape, W.shape, stride, 0),), np.nan, np.float32)
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    outs = []
    for _ in range(2):
        buf = cupy.full(x.size + offset, np.nan, np.float32)
        dx = buf[offset:].reshape(x.shape)
        assert conv.conv2d_backward_data(gdy, gW, x.shape, stride, 0, dx=dx, workspace=ws, algo="strided_1x1") is dx
        outs.append(cupy.asnumpy(dx))
    _assert_close(outs[0], dx_ref, dx_abs, K, f"dx strided_1x1 {case}")
    assert np.array_equal(outs[0], outs[1]), "strided_1x1 is not deterministic"
    dx = conv.conv2d_backward_data(gdy, gW, x.shape, stride, 0, workspace=ws)
    algo = runtime.tuned(("conv", "backward_data", dims))
    assert algo in ("implicit_gemm", "strided_1x1")
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, K, f"dx auto ({algo}) {case}")


def test_conv2d_backward_data_strided_1x1_errors():
    """Layers the scatter cannot run (padding, a 3x3 kernel, stride 1) raise a ValueError naming the layer
    and the way out, and a workspace too small for dxc is refused; none of them is a candidate."""
    import cupy

    from custom_impl.gpu import conv

    for x_shape, w_shape, stride, padding in [((2, 4, 9, 9), (3, 4, 1, 1), 2, 1),
                                              ((2, 4, 9, 9), (3, 4, 3, 3), 2, 0),
                                              ((2, 4, 9, 9), (3, 4, 1, 1), 1, 0)]:
        dims = conv.conv_dims(x_shape, w_shape, stride, padding)
        assert "strided_1x1" not in conv.candidates(dims, "backward_data")
        dy = cupy.ones(conv.conv2d_output_shape(x_shape, w_shape, stride, padding), np.float32)
        with pytest.raises(ValueError, match=r"strided_1x1.*no padding.*algo='auto'"):
            conv.conv2d_backward_data(dy, cupy.ones(w_shape, np.float32), x_shape, stride, padding,
                                      algo="strided_1x1")
    dy, W = cupy.ones((2, 3, 5, 5), np.float32), cupy.ones((3, 4, 1, 1), np.float32)
    with pytest.raises(ValueError, match="conv2d_workspace_size"):
        conv.conv2d_backward_data(dy, W, (2, 4, 9, 9), 2, 0, workspace=cupy.ones(7, np.float32), algo="strided_1x1")
