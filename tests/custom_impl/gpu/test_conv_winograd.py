"""Winograd F(2x2, 3x3) convolution (custom_impl/gpu/conv/winograd.py) against a NumPy float64 direct convolution.

Tolerance. The GPU computes y = At [sum_c U[:, k, c] * V[:, c, t]] A with U = G g G^T and V = Bt d B rounded
to float32, then a float32 sum over the 16*C products of each output tile, then the output transform. Every
rounding error is at most eps32 times the magnitude of the value it rounds, and every intermediate value is
bounded by the same pipeline run on absolute values:

    S_abs = |At| (sum_c (|G| |g| |G^T|) * (|Bt| |d| |B|)) |A|      (+ |b|),

so |y - ref| <~ (C + 10) * eps32 * S_abs (C terms in each dot product; <= 4 roundings in the filter
transform, 2 in the input transform, 4 in the output transform), and for random data the errors add like
sqrt of their number. We therefore use ``_assert_close`` of tests/conv_reference.py (tol = 4*sqrt(L)*eps32*
ref_abs + 4*eps32*|ref|) with ref_abs = S_abs and L = 16*C + 10 (the 16*C products each output depends on,
plus the transform depth). S_abs is computed here exactly instead of scaling the direct sum of absolute
terms by the coefficient sums (Bt rows 2, G rows 1.5, At rows 3: 4 * 2.25 * 9 = 81): the Winograd products
also pair filter taps with input pixels that the direct sum never multiplies, so no fixed factor bounds it
pointwise. Backward-data is the same pipeline on dy with the flipped filter (C, K swapped), so L = 16*K + 10.

Backward-weights is F(3x3, 2x2) in the same 4x4 domain: dW = G^T [sum_t (A e A^T) * (Bt d B)] G with e the
2x2 dy tiles and A = At^T; its bound S_abs is the same pipeline on absolute values (``wgrad_abs``), and each
dW element depends on the 16*T products of the tiles (T = N*ceil(P/2)*ceil(Q/2)), so L = 16*T + 10.

Outputs and workspaces are NaN-filled before each call (an unwritten or wrongly read element fails), and a
second call must be bit-identical (no atomics).
"""
from __future__ import annotations

import numpy as np
import pytest

import conv_reference
from conv_reference import _assert_close, _pair, _rand, assert_graph_replays_eager, conv_ref

pytestmark = pytest.mark.gpu

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def winograd_ref(x, W, padding, bt=BT, g=G, at=AT):
    """conv_reference.winograd_ref, F(2x2, 3x3) unless other matrices are given."""
    return conv_reference.winograd_ref(x, W, padding, bt, g, at)


def winograd_abs(x, W, padding):
    return winograd_ref(np.abs(x), np.abs(W), padding, np.abs(BT), np.abs(G), np.abs(AT))


def wgrad_ref(dy, x, padding, bt=BT, g=G, at=AT):
    """conv_reference.winograd_wgrad_ref, F(3x3, 2x2) unless other matrices are given."""
    return conv_reference.winograd_wgrad_ref(dy, x, padding, bt, g, at)


def wgrad_abs(dy, x, padding):
    return wgrad_ref(np.abs(dy), np.abs(x), padding, np.abs(BT), np.abs(G), np.abs(AT))


# (N, C, H, W, K, padding): odd P and Q (partial tiles), C and K not multiples of 4, 1x1 / 1xW outputs
CASES = [
    (1, 1, 5, 7, 1, 1),
    (3, 3, 5, 7, 5, 0),
    (1, 17, 13, 17, 33, 2),
    (3, 64, 14, 14, 64, 1),
    (1, 3, 28, 28, 64, 0),
    (3, 17, 13, 17, 5, 1),
    (1, 64, 28, 28, 33, 2),
    (3, 1, 5, 7, 64, (1, 2)),
    (3, 5, 13, 17, 17, (2, 0)),
    (1, 17, 3, 3, 5, 0),
    (3, 3, 1, 7, 5, 1),
    (1, 5, 2, 3, 3, (2, 1)),
]
IDS = ["N{}C{}H{}W{}K{}p{}".format(*c[:5], "".join(map(str, _pair(c[5])))) for c in CASES]


def _data(case, seed_offset=0):
    N, C, H, Wd, K, pad = case
    rng = np.random.default_rng(N + C + H + Wd + K + seed_offset)
    return _rand(rng, N, C, H, Wd), _rand(rng, K, C, 3, 3), _rand(rng, K), rng


# NOTE: F(4x4, 3x3) (tile 4) is held to the same bound as F(2x2, 3x3): its larger transform entries grow
# the float32 rounding 10-25x, which lab/conv/winograd_emulate.py measured at <= 0.2 of this bound.
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward(case, bias, tile):
    import cupy

    from custom_impl.gpu.conv import winograd

    N, C, H, Wd, K, pad = case
    x, W, b, _ = _data(case)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref, _ = conv_ref(x64, W64, (1, 1), _pair(pad))
    y_abs = winograd_abs(x64, W64, pad)
    assert np.allclose(winograd_ref(x64, W64, pad), y_ref, rtol=1e-12, atol=1e-12)  # the reference itself
    if bias:
        y_ref += b[:, None, None]
        y_abs += np.abs(b)[:, None, None]
    assert winograd.fits(x.shape, W.shape, 1, pad)
    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, pad, "forward", tile=tile),), np.nan, np.float32)
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    args = (cupy.asarray(x), cupy.asarray(W), cupy.asarray(b) if bias else None)
    assert winograd.forward(*args, y, pad, workspace=ws, tile=tile) is y
    _assert_close(cupy.asnumpy(y), y_ref, y_abs, 16 * C + 10, f"winograd y {case} bias={bias} tile {tile}")
    again = winograd.forward(*args, None, pad, workspace=ws, tile=tile)
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(y)), "winograd forward is not deterministic"


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_data(case, tile):
    import cupy

    from custom_impl.gpu.conv import winograd

    N, C, H, Wd, K, pad = case
    x, W, _, rng = _data(case, 1)
    W64 = W.astype(np.float64)
    y_ref, back = conv_ref(x.astype(np.float64), W64, (1, 1), _pair(pad))
    dy = _rand(rng, *y_ref.shape)
    dx_ref = back(dy.astype(np.float64))[0]
    ph, pw = _pair(pad)
    W_flip = np.ascontiguousarray(W64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, K, 3, 3)
    dx_abs = winograd_abs(dy.astype(np.float64), W_flip, (2 - ph, 2 - pw))
    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, pad, "backward_data", tile=tile),), np.nan,
                   np.float32)
    dx = cupy.full(x.shape, np.nan, np.float32)
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    assert winograd.backward_data(gdy, gW, dx, pad, workspace=ws, tile=tile) is dx
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, 16 * K + 10, f"winograd dx {case} tile {tile}")
    again = winograd.backward_data(gdy, gW, None, pad, workspace=ws, tile=tile)  # dx allocated, its shape derived
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dx)), "winograd backward_data is not deterministic"


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("config", ["128x128x16_8x8", "128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8",
                                    "64x64x8_8x8", "32x64x8_4x8", "32x32x8_4x4"])
def test_every_gemm_config(config, tile):
    """Each tile config the chooser may pick, on a shape with partial M, N and reduction tiles."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (3, 37, 13, 17, 70, 1)
    x, W, b, rng = _data(case, 2)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref, back = conv_ref(x64, W64, (1, 1), (1, 1))
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, 1, tile=tile),), np.nan, np.float32)
    winograd.forward(cupy.asarray(x), cupy.asarray(W), cupy.asarray(b), y, 1, workspace=ws, config=config, tile=tile)
    _assert_close(cupy.asnumpy(y), y_ref + b[:, None, None], winograd_abs(x64, W64, 1) + np.abs(b)[:, None, None],
                  16 * 37 + 10, f"winograd y config {config} tile {tile}")
    dy = _rand(rng, *y_ref.shape)
    W_flip = np.ascontiguousarray(W64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    dx = cupy.full(x.shape, np.nan, np.float32)
    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, 1, "backward_data", tile=tile),), np.nan,
                   np.float32)
    winograd.backward_data(cupy.asarray(dy), cupy.asarray(W), dx, 1, workspace=ws, config=config, tile=tile)
    _assert_close(cupy.asnumpy(dx), back(dy.astype(np.float64))[0], winograd_abs(dy.astype(np.float64), W_flip, 1),
                  16 * 70 + 10, f"winograd dx config {config} tile {tile}")


def test_default_workspace_and_unaligned_workspace():
    """workspace=None (the shared per-device buffer) and a workspace starting 1 float past a 16-byte
    boundary (the GEMM then takes its scalar loads): both equal to the aligned run."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (2, 12, 9, 9, 20, 1)
    x, W, b, _ = _data(case, 3)
    args = (cupy.asarray(x), cupy.asarray(W), cupy.asarray(b))
    n = winograd.workspace_size(x.shape, W.shape, 1, 1)
    ref = cupy.asnumpy(winograd.forward(*args, None, 1, workspace=cupy.full((n,), np.nan, np.float32)))
    assert np.array_equal(cupy.asnumpy(winograd.forward(*args, None, 1)), ref)
    odd = cupy.full((n + 1,), np.nan, np.float32)[1:]
    assert np.array_equal(cupy.asnumpy(winograd.forward(*args, None, 1, workspace=odd)), ref)


@pytest.mark.parametrize("tile", [2, 4])
def test_repeated_calls_on_the_same_buffers(tile):
    """A call repeated on the same arrays replays the launch list its first call made (addresses, not
    values): new values written into the same buffers give the results of fresh arrays holding them, in
    every phase, and a call on other buffers of the same shapes gets launches of its own."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (3, 17, 13, 17, 33, 1)
    x1, W, b, rng = _data(case, 5)
    x2 = _rand(rng, *x1.shape)
    gW, gb = cupy.asarray(W), cupy.asarray(b)
    y_shape = (case[0], case[4], case[2], case[3])
    dy1, dy2 = _rand(rng, *y_shape), _rand(rng, *y_shape)

    def phases(x, dy, out=None):
        """y, dx, dW of fresh arrays (out None) or written into the buffers ``out`` (gx, gdy, y, dx, dW)."""
        if out is None:
            gx, gdy = cupy.asarray(x), cupy.asarray(dy)
            y, dx, dW = (cupy.full(s, np.nan, np.float32) for s in (y_shape, x.shape, W.shape))
        else:
            gx, gdy, y, dx, dW = out
            gx.set(x)
            gdy.set(dy)
        winograd.forward(gx, gW, gb, y, 1, tile=tile)
        winograd.backward_data(gdy, gW, dx, 1, tile=tile)
        winograd.backward_weights(gdy, gx, dW, 1, tile=tile)
        return [cupy.asnumpy(a) for a in (y, dx, dW)]

    buffers = (cupy.empty(x1.shape, np.float32), cupy.empty(y_shape, np.float32),
               cupy.empty(y_shape, np.float32), cupy.empty(x1.shape, np.float32), cupy.empty(W.shape, np.float32))
    fresh1, fresh2 = phases(x1, dy1), phases(x2, dy2)
    for x, dy, want in ((x1, dy1, fresh1), (x2, dy2, fresh2), (x1, dy1, fresh1)):
        for got, ref, name in zip(phases(x, dy, buffers), want, ("y", "dx", "dW")):
            assert np.array_equal(got, ref), f"{name} on reused buffers, tile {tile}"
    y_ref = conv_ref(x2.astype(np.float64), W.astype(np.float64), (1, 1), (1, 1))[0] + b[:, None, None]
    _assert_close(fresh2[0], y_ref, winograd_abs(x2.astype(np.float64), W.astype(np.float64), 1)
                  + np.abs(b)[:, None, None], 16 * case[1] + 10, f"winograd y, tile {tile}")


def test_cuda_graph_capture():
    """With y and workspace given, forward + backward_data are capturable and replay to the eager result."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (3, 16, 14, 14, 24, 1)
    x, W, b, rng = _data(case, 4)
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)
    gdy = cupy.asarray(_rand(rng, 3, 24, 14, 14))
    ws = cupy.empty((max(winograd.workspace_size(x.shape, W.shape, 1, 1, p) for p in ("forward", "backward_data")),),
                    np.float32)
    y, dx = cupy.empty((3, 24, 14, 14), np.float32), cupy.empty(x.shape, np.float32)

    def run():
        winograd.forward(gx, gW, gb, y, 1, workspace=ws)
        winograd.backward_data(gdy, gW, dx, 1, workspace=ws)

    run()  # compile and plan outside the capture
    assert_graph_replays_eager(run, (y, dx))


def _wgrad_case(case, seed_offset):
    N, C, H, Wd, K, pad = case
    x, W, _, rng = _data(case, seed_offset)
    x64 = x.astype(np.float64)
    y_ref, back = conv_ref(x64, W.astype(np.float64), (1, 1), _pair(pad))
    dy = _rand(rng, *y_ref.shape)
    dy64 = dy.astype(np.float64)
    dW_ref = back(dy64)[1]
    assert np.allclose(wgrad_ref(dy64, x64, pad), dW_ref, rtol=1e-12, atol=1e-12)  # the reference itself
    T = N * -(-y_ref.shape[2] // 2) * -(-y_ref.shape[3] // 2)
    return x, dy, dW_ref, wgrad_abs(dy64, x64, pad), 16 * T + 10


# NOTE: both dy tiles are held to F(3x3, 2x2)'s bound (L = 16 T + 10 for its T 2x2 tiles, ~4 N P Q): F(3x3,
# 4x4)'s larger transform entries grow its rounding 5-10x, which lab/conv/winograd_emulate.py measured in
# float32 at <= 0.05 of this bound on its cases.
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_weights(case, tile):
    import cupy

    from custom_impl.gpu.conv import winograd

    N, C, H, Wd, K, pad = case
    x, dy, dW_ref, dW_abs, L = _wgrad_case(case, 5)
    ws = cupy.full((winograd.workspace_size(x.shape, (K, C, 3, 3), 1, pad, "backward_weights", tile=tile),),
                   np.nan, np.float32)
    dW = cupy.full((K, C, 3, 3), np.nan, np.float32)
    gdy, gx = cupy.asarray(dy), cupy.asarray(x)
    assert winograd.backward_weights(gdy, gx, dW, pad, workspace=ws, tile=tile) is dW
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, L, f"winograd dW {case} tile {tile}")
    again = winograd.backward_weights(gdy, gx, None, pad, workspace=ws, tile=tile)   # dW allocated
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dW)), "winograd backward_weights is not deterministic"


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("splits", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("config", ["128x128x8_8x8", "64x64x8_8x8", "32x32x8_4x4"])
def test_backward_weights_splits_and_configs(config, splits, tile):
    """The t reduction cut into 1..64 ranges (3, 7: uneven, the last range short; 64 on 45 tiles' Tp = 48:
    capped by the chunk length, so some asked-for splits do not exist) under tile configs with partial
    M (K = 70) and N (C = 37) tiles; the result must not depend on the split beyond rounding."""
    import cupy

    from custom_impl.gpu.conv import winograd

    for case in ((3, 37, 13, 17, 70, 1), (1, 37, 9, 10, 70, (0, 2))):
        x, dy, dW_ref, dW_abs, L = _wgrad_case(case, 6)
        dW = cupy.full(dW_ref.shape, np.nan, np.float32)
        winograd.backward_weights(cupy.asarray(dy), cupy.asarray(x), dW, case[5], config=config, splits=splits,
                                  tile=tile)
        _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, L, f"winograd dW {case} {config} splits={splits} tile {tile}")


def test_backward_weights_large_reduction():
    """A longer reduction (T = 16 images x 8 x 8 tiles = 1024) with the planned splits; an unaligned workspace
    (scalar loads) and the shared default workspace give the same bits."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (16, 20, 16, 16, 24, 1)
    x, dy, dW_ref, dW_abs, L = _wgrad_case(case, 7)
    gdy, gx = cupy.asarray(dy), cupy.asarray(x)
    n = winograd.workspace_size(x.shape, (24, 20, 3, 3), 1, 1, "backward_weights")
    ref = winograd.backward_weights(gdy, gx, None, 1, workspace=cupy.full((n,), np.nan, np.float32))
    _assert_close(cupy.asnumpy(ref), dW_ref, dW_abs, L, "winograd dW large reduction")
    odd = cupy.full((n + 1,), np.nan, np.float32)[1:]
    assert np.array_equal(cupy.asnumpy(winograd.backward_weights(gdy, gx, None, 1, workspace=odd)), cupy.asnumpy(ref))
    assert np.array_equal(cupy.asnumpy(winograd.backward_weights(gdy, gx, None, 1)), cupy.asnumpy(ref))


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("images", [1, 2, 3, 4])
def test_backward_weights_in_chunks_of_images(images, tile):
    """The weight gradient over the batch in chunks of ``images`` images (7 images: the last chunk smaller
    but for 1), with the workspace sized for the chunks and NaN-filled: float64-close as the whole batch
    is, the same bits on a repeat, and a smaller workspace than the whole batch needs where V and Y
    dominate it (at 1 image a chunk the seven chunks' partials outweigh them)."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (7, 17, 9, 10, 19, 1)
    N, C, H, Wd, K, pad = case
    x, dy, dW_ref, dW_abs, L = _wgrad_case(case, 8)
    gdy, gx = cupy.asarray(dy), cupy.asarray(x)
    n = winograd.workspace_size(x.shape, (K, C, 3, 3), 1, pad, "backward_weights", images=images, tile=tile)
    if images > 1:
        assert n < winograd.workspace_size(x.shape, (K, C, 3, 3), 1, pad, "backward_weights", tile=tile)
    for config in (None, "64x64x8_8x8"):
        ws = cupy.full((n,), np.nan, np.float32)
        dW = winograd.backward_weights(gdy, gx, None, pad, workspace=ws, config=config, images=images, tile=tile)
        _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, L, f"winograd dW in chunks of {images} ({config}, {tile})")
        again = winograd.backward_weights(gdy, gx, None, pad, workspace=ws, config=config, images=images, tile=tile)
        assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dW)), f"chunks of {images}: not deterministic"
    with pytest.raises(ValueError, match="images=0"):
        winograd.backward_weights(gdy, gx, None, pad, images=0, tile=tile)
    with pytest.raises(ValueError, match="workspace"):   # sized for fewer images' chunks
        winograd.backward_weights(gdy, gx, None, pad, workspace=cupy.empty((n - 4,), np.float32), images=images,
                                  tile=tile)
    with pytest.raises(ValueError, match="tile=3"):
        winograd.backward_weights(gdy, gx, None, pad, tile=3)


def test_backward_weights_rejections():
    import cupy

    from custom_impl.gpu.conv import winograd

    x = cupy.ones((2, 8, 10, 10), np.float32)
    dy = cupy.ones((2, 4, 10, 10), np.float32)
    with pytest.raises(ValueError, match="shape"):
        winograd.backward_weights(cupy.ones((2, 4, 9, 10), np.float32), x, None, 1)
    with pytest.raises(ValueError, match="3x2 kernel; Winograd here needs 3x3 or 5x5"):
        winograd.backward_weights(dy, x, cupy.empty((4, 8, 3, 2), np.float32), 1)
    with pytest.raises(ValueError, match="workspace"):
        winograd.backward_weights(dy, x, None, 1, workspace=cupy.empty((10,), np.float32))
    with pytest.raises(ValueError, match="splits"):
        winograd.backward_weights(dy, x, None, 1, splits=0)
    with pytest.raises(ValueError, match="padding"):
        winograd.backward_weights(cupy.ones((2, 4, 14, 14), np.float32), x, None, 3)
    assert winograd.backward_weights(dy, x, None, 1).shape == (4, 8, 3, 3)


def test_fits():
    from custom_impl.gpu.conv import winograd

    x = (2, 8, 10, 10)
    assert winograd.fits(x, (4, 8, 3, 3), 1, 1)
    assert winograd.fits(x, (4, 8, 3, 3), (1, 1), (0, 2))
    assert not winograd.fits(x, (4, 8, 3, 3), 2, 1)            # stride 2
    assert not winograd.fits(x, (4, 8, 3, 3), (1, 2), 1)
    assert winograd.fits(x, (4, 8, 5, 5), 1, 1)                # 5x5: F(2x2, 5x5) ...
    assert winograd.fits(x, (4, 8, 5, 5), 1, 4)                # ... padding up to 4
    assert not winograd.fits(x, (4, 8, 5, 5), 1, 1, tile=4)    # ... but no 4x4 tile
    assert not winograd.fits(x, (4, 8, 5, 5), 1, 5)
    assert winograd.fits(x, (4, 8, 3, 3), 1, 1, tile=4)
    assert not winograd.fits(x, (4, 8, 7, 7), 1, 3)            # 7x7
    assert not winograd.fits(x, (4, 8, 3, 3), 1, 1, tile=3)
    assert not winograd.fits(x, (4, 8, 3, 1), 1, 1)
    assert not winograd.fits(x, (4, 8, 3, 3), 1, 3)            # padding 3: backward would pad by -1
    assert not winograd.fits(x, (4, 8, 3, 3), 1, (1, 3))
    assert not winograd.fits(x, (4, 7, 3, 3), 1, 1)            # channel mismatch
    assert not winograd.fits((2, 8, 1, 10), (4, 8, 3, 3), 1, 0)  # 3x3 does not fit a 1-row input
    assert not winograd.fits((70000, 8, 1024, 1024), (4, 8, 3, 3), 1, 1)  # tiles beyond int32


def test_rejections():
    import cupy

    from custom_impl.gpu.conv import winograd

    x = cupy.ones((2, 8, 10, 10), np.float32)
    W = cupy.ones((4, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match="stride"):
        winograd.workspace_size(x.shape, W.shape, 2, 1)
    with pytest.raises(ValueError, match="phase"):
        winograd.workspace_size(x.shape, W.shape, 1, 1, "weights")
    with pytest.raises(ValueError, match="3x3 or 5x5"):
        winograd.forward(x, cupy.ones((4, 8, 7, 7), np.float32), None, None, 1)
    with pytest.raises(ValueError, match="tile=4 with a 5x5 kernel"):
        winograd.forward(x, cupy.ones((4, 8, 5, 5), np.float32), None, None, 2, tile=4)
    with pytest.raises(ValueError, match="padding"):
        winograd.forward(x, W, None, None, 3)
    with pytest.raises(ValueError, match="channels"):
        winograd.forward(x, cupy.ones((4, 7, 3, 3), np.float32), None, None, 1)
    with pytest.raises(ValueError, match="shape"):
        winograd.forward(x, W, None, cupy.empty((2, 4, 9, 10), np.float32), 1)
    with pytest.raises(ValueError, match="shape"):
        winograd.forward(x, W, cupy.ones((5,), np.float32), None, 1)
    with pytest.raises(ValueError, match="workspace"):
        winograd.forward(x, W, None, None, 1, workspace=cupy.empty((10,), np.float32))
    dy = cupy.ones((2, 4, 10, 10), np.float32)
    with pytest.raises(ValueError, match="channels"):
        winograd.backward_data(cupy.ones((2, 5, 10, 10), np.float32), W, None, 1)
    with pytest.raises(ValueError, match="shape"):
        winograd.backward_data(dy, W, cupy.empty((2, 8, 11, 10), np.float32), 1)
    with pytest.raises(ValueError, match="workspace"):
        winograd.backward_data(dy, W, None, 1, workspace=cupy.empty((10,), np.float32))
    assert winograd.backward_data(dy, W, None, 0).shape == (2, 8, 12, 12)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("images", [1, 2, 3])
def test_forward_and_backward_data_in_chunks_of_images(images, tile):
    """Forward and backward-data over the batch in chunks of ``images`` images (7 images: the last chunk
    smaller but for 1), with the workspace sized for one chunk and NaN-filled: the same bits as the whole
    batch at once (each image's tiles go through the same kernels; only the GEMM's tile config is chosen
    per chunk size, and it changes no sum's order), and float64-close."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (7, 17, 9, 10, 19, 1)
    N, C, H, Wd, K, pad = case
    x, W, b, rng = _data(case, 3)
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), _pair(pad))
    dy = _rand(rng, *y_ref.shape)
    gdy = cupy.asarray(dy)
    whole_y = winograd.forward(gx, gW, gb, None, pad, config="64x64x8_8x8", tile=tile)
    whole_dx = winograd.backward_data(gdy, gW, None, pad, config="64x64x8_8x8", tile=tile)
    for phase in ("forward", "backward_data"):
        n = winograd.workspace_size(x.shape, W.shape, 1, pad, phase, images=images, tile=tile)
        assert n < winograd.workspace_size(x.shape, W.shape, 1, pad, phase, tile=tile)
        ws = cupy.full((n,), np.nan, np.float32)
        if phase == "forward":
            got = winograd.forward(gx, gW, gb, None, pad, workspace=ws, config="64x64x8_8x8", images=images,
                                   tile=tile)
            assert np.array_equal(cupy.asnumpy(got), cupy.asnumpy(whole_y)), f"y in chunks of {images}"
            err = np.abs(cupy.asnumpy(got) - (y_ref + b[:, None, None])).max()
        else:
            got = winograd.backward_data(gdy, gW, None, pad, workspace=ws, config="64x64x8_8x8", images=images,
                                         tile=tile)
            assert np.array_equal(cupy.asnumpy(got), cupy.asnumpy(whole_dx)), f"dx in chunks of {images}"
            err = np.abs(cupy.asnumpy(got) - back(dy.astype(np.float64))[0]).max()
        assert err < 1e-3, f"{phase} in chunks of {images}: {err:.3g} from float64"  # sums of ~16*C terms ~1
    with pytest.raises(ValueError, match="images=0"):
        winograd.forward(gx, gW, gb, None, pad, images=0, tile=tile)
    with pytest.raises(ValueError, match="tile=3"):
        winograd.forward(gx, gW, gb, None, pad, tile=3)


def test_auto_runs_winograd_in_chunks_under_a_small_cap(monkeypatch):
    """With the workspace cap lowered so that a batch of 9 no longer fits, "auto" still weighs Winograd in
    every phase (in chunks, ``select.winograd_images``), sizes the layer's workspace for the chunks, and
    whichever it picks is float64-close."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import select, winograd

    case = (9, 16, 12, 11, 24, 1)
    N, C, H, Wd, K, pad = case
    x, W, b, rng = _data(case, 4)
    dims = conv.conv_dims(x.shape, W.shape, 1, pad)
    cap = max(winograd.workspace_size(x.shape, W.shape, 1, pad, "forward", images=4),
              winograd.workspace_size(x.shape, W.shape, 1, pad, "backward_weights", images=5))
    monkeypatch.setattr(select, "WINOGRAD_MAX_WORKSPACE", cap)
    select._winograd_images.cache_clear()
    for phase in select.PHASES:
        assert 1 <= select.winograd_images(dims, phase) < N, phase
        assert "winograd" in conv.candidates(dims, phase, runtime.sm_count()), phase
    ws = cupy.full((conv.conv2d_workspace_size(x.shape, W.shape, 1, pad),), np.nan, np.float32)
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)
    y_ref, back = conv_ref(x.astype(np.float64), W.astype(np.float64), (1, 1), _pair(pad))
    dy = _rand(rng, *y_ref.shape)
    dx_ref, dW_ref = back(dy.astype(np.float64))[:2]
    for phase in select.PHASES:
        assert "winograd4" in conv.candidates(dims, phase, runtime.sm_count()), phase
    for algo, weights_algo in (("winograd", "winograd"), ("winograd4", "winograd4"), ("auto", "auto")):
        y = conv.conv2d_forward(gx, gW, gb, 1, pad, workspace=ws, algo=algo)
        dx, dW, _ = conv.conv2d_backward(cupy.asarray(dy), gx, gW, 1, pad, workspace=ws, algo=algo,
                                         weights_algo=weights_algo)
        assert np.abs(cupy.asnumpy(y) - (y_ref + b[:, None, None])).max() < 1e-3, algo
        assert np.abs(cupy.asnumpy(dx) - dx_ref).max() < 1e-3, algo
        # sums of N*P*Q = 1188 standard-normal products (entries ~34): float32 and transform rounding
        # ~1e-4..1e-3; one product missing or doubled moves an entry by ~1
        assert np.abs(cupy.asnumpy(dW) - dW_ref).max() < 1e-2, weights_algo
    assert runtime.tuned(("conv", "forward", dims, False)) in ("implicit_gemm", "winograd")