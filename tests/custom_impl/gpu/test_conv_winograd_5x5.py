"""Winograd F(2x2, 5x5) (forward, backward-data) and F(5x5, 2x2) (backward-weights) for 5x5 kernels
(custom_impl/gpu/conv/winograd.py, algorithm "winograd" on a 5x5 layer) against a NumPy float64 direct
convolution.

Tolerance: the bound of test_conv_winograd.py's module docstring with F(2x2, 5x5)'s matrices (Bt 6x6, G 6x5,
At 2x6): S_abs is the same pipeline run on absolute values and absolute matrices (tests/conv_reference.py's
``winograd_ref`` / ``winograd_wgrad_ref`` with these matrices), and each output depends on the 36 products per
channel of its tile, so L = 36 C + 10 for y (36 K + 10 for dx, 36 T + 10 for dW over T 2x2 tiles; + 10 for
the transforms' depth). lab/conv/winograd_emulate.py measured float32 at <= 0.01 of this bound in NumPy.

Outputs and workspaces are NaN-filled before each call (an unwritten or wrongly read element fails), and a
second call must be bit-identical (no atomics).
"""
from __future__ import annotations

import numpy as np
import pytest

from conv_reference import _assert_close, _pair, _rand, assert_graph_replays_eager, reference_case, winograd_ref
from conv_reference import winograd_wgrad_ref as wgrad_ref

pytestmark = pytest.mark.gpu

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[6, 0, 0, 0, 0], [-4, -4, -4, -4, -4], [-4, 4, -4, 4, -4], [1, 2, 4, 8, 16], [1, -2, 4, -8, 16],
              [0, 0, 0, 0, 24]], dtype=np.float64) / 24
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], dtype=np.float64)
ABS = (np.abs(BT), np.abs(G), np.abs(AT))

# (N, C, H, W, K, padding): odd P and Q (partial tiles), C and K not multiples of 4, padding 0..4, a 1-row
# output, LeNet's conv2 at a small batch
CASES = [
    (1, 1, 5, 7, 1, 2),
    (3, 3, 6, 9, 5, 0),
    (1, 17, 13, 17, 33, 4),
    (2, 32, 14, 14, 64, 2),
    (3, 17, 9, 11, 5, (3, 1)),
    (1, 5, 1, 7, 3, (2, 2)),
    (2, 16, 7, 7, 48, 2),
]
IDS = ["N{}C{}H{}W{}K{}p{}".format(*c[:5], "".join(map(str, _pair(c[5])))) for c in CASES]


def _case(case, seed_offset=0):
    """x, W, b, dy and their float64 references: y (biased), dx, dW, and the S_abs bounds of each."""
    N, C, H, Wd, K, pad = case
    ph, pw = _pair(pad)
    seed = N + C + H + Wd + K + seed_offset
    x, W, dy, (y_ref, dx_ref, dW_ref, _), _ = reference_case((N, C, H, Wd, K, 5, 5, (1, 1), (ph, pw)), seed)
    b = _rand(np.random.default_rng(seed + 1), K)
    x64, W64, dy64 = x.astype(np.float64), W.astype(np.float64), dy.astype(np.float64)
    assert np.allclose(winograd_ref(x64, W64, (ph, pw), BT, G, AT), y_ref, rtol=1e-12, atol=1e-12)  # the reference
    assert np.allclose(wgrad_ref(dy64, x64, (ph, pw), BT, G, AT), dW_ref, rtol=1e-12, atol=1e-12)
    W_flip = np.ascontiguousarray(W64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))      # (C, K, 5, 5)
    bounds = (winograd_ref(np.abs(x64), np.abs(W64), (ph, pw), *ABS) + np.abs(b)[:, None, None],
              winograd_ref(np.abs(dy64), np.abs(W_flip), (4 - ph, 4 - pw), *ABS),
              wgrad_ref(np.abs(dy64), np.abs(x64), (ph, pw), *ABS))
    T = N * -(-y_ref.shape[2] // 2) * -(-y_ref.shape[3] // 2)
    return x, W, b, dy, (y_ref + b[:, None, None], dx_ref, dW_ref), bounds, T


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_phase(case):
    import cupy

    from custom_impl.gpu.conv import winograd

    N, C, H, Wd, K, pad = case
    x, W, b, dy, (y_ref, dx_ref, dW_ref), (y_abs, dx_abs, dW_abs), T = _case(case)
    assert winograd.fits(x.shape, W.shape, 1, pad) and not winograd.fits(x.shape, W.shape, 1, pad, tile=4)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))

    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, pad, "forward"),), np.nan, np.float32)
    y = cupy.full(y_ref.shape, np.nan, np.float32)
    assert winograd.forward(gx, gW, gb, y, pad, workspace=ws) is y
    _assert_close(cupy.asnumpy(y), y_ref, y_abs, 36 * C + 10, f"F(2x2, 5x5) y {case}")
    assert np.array_equal(cupy.asnumpy(winograd.forward(gx, gW, gb, None, pad, workspace=ws)), cupy.asnumpy(y))

    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, pad, "backward_data"),), np.nan, np.float32)
    dx = cupy.full(x.shape, np.nan, np.float32)
    assert winograd.backward_data(gdy, gW, dx, pad, workspace=ws) is dx
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, 36 * K + 10, f"F(2x2, 5x5) dx {case}")
    again = winograd.backward_data(gdy, gW, None, pad, workspace=ws)     # dx allocated, its shape derived
    assert np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dx))

    ws = cupy.full((winograd.workspace_size(x.shape, W.shape, 1, pad, "backward_weights"),), np.nan, np.float32)
    dW = cupy.full(W.shape, np.nan, np.float32)
    assert winograd.backward_weights(gdy, gx, dW, pad, workspace=ws) is dW
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, 36 * T + 10, f"F(5x5, 2x2) dW {case}")
    again = winograd.backward_weights(gdy, gx, None, pad, workspace=ws)  # dW allocated: 5x5 from the shapes
    assert again.shape == W.shape and np.array_equal(cupy.asnumpy(again), cupy.asnumpy(dW))


@pytest.mark.parametrize("config", ["128x128x16_8x8", "128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8",
                                    "64x64x8_8x8", "32x64x8_4x8", "32x32x8_4x4"])
def test_every_gemm_config(config):
    """Each tile config the chooser may pick, on a shape with partial M, N and reduction tiles, every phase
    (the weight gradient with 3 uneven splits)."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (3, 37, 13, 17, 70, 2)
    x, W, b, dy, (y_ref, dx_ref, dW_ref), (y_abs, dx_abs, dW_abs), T = _case(case, 1)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    y = winograd.forward(gx, gW, gb, None, 2, config=config)
    _assert_close(cupy.asnumpy(y), y_ref, y_abs, 36 * 37 + 10, f"F(2x2, 5x5) y config {config}")
    dx = winograd.backward_data(gdy, gW, None, 2, config=config)
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, 36 * 70 + 10, f"F(2x2, 5x5) dx config {config}")
    dW = winograd.backward_weights(gdy, gx, None, 2, config=config, splits=3)
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, 36 * T + 10, f"F(5x5, 2x2) dW config {config}")


@pytest.mark.parametrize("images", [1, 2, 3])
def test_in_chunks_of_images(images):
    """Every phase over 7 images in chunks of ``images`` (the last chunk smaller but for 1), NaN-filled
    workspaces sized for the chunks: float64-close as the whole batch is, the same bits on a repeat."""
    import cupy

    from custom_impl.gpu.conv import winograd

    case = (7, 17, 9, 10, 19, 2)
    x, W, b, dy, (y_ref, dx_ref, dW_ref), (y_abs, dx_abs, dW_abs), T = _case(case, 2)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))

    def workspace(phase):
        return cupy.full((winograd.workspace_size(x.shape, W.shape, 1, 2, phase, images=images),), np.nan,
                         np.float32)

    runs = {"forward": lambda ws: winograd.forward(gx, gW, gb, None, 2, workspace=ws, images=images),
            "backward_data": lambda ws: winograd.backward_data(gdy, gW, None, 2, workspace=ws, images=images),
            "backward_weights": lambda ws: winograd.backward_weights(gdy, gx, None, 2, workspace=ws,
                                                                     images=images)}
    checks = {"forward": (y_ref, y_abs, 36 * 17 + 10), "backward_data": (dx_ref, dx_abs, 36 * 19 + 10),
              "backward_weights": (dW_ref, dW_abs, 36 * T + 10)}
    for phase, run in runs.items():
        ws = workspace(phase)
        out = cupy.asnumpy(run(ws))
        _assert_close(out, *checks[phase], f"F(2x2, 5x5) {phase} in chunks of {images}")
        assert np.array_equal(cupy.asnumpy(run(ws)), out), f"{phase} in chunks of {images}: not deterministic"


def test_through_conv2d_by_name_and_cuda_graph():
    """conv2d_forward / conv2d_backward with algo="winograd" on a 5x5 layer run F(2x2, 5x5), and with the
    outputs and workspace given the forward and backward-data replay from a CUDA graph to the eager bits."""
    import cupy

    from custom_impl.gpu import conv
    from custom_impl.gpu.conv import winograd

    case = (4, 32, 14, 14, 64, 2)
    x, W, b, dy, (y_ref, dx_ref, dW_ref), (y_abs, dx_abs, dW_abs), T = _case(case, 3)
    gx, gW, gb, gdy = (cupy.asarray(a) for a in (x, W, b, dy))
    ws = cupy.full((conv.conv2d_workspace_size(x.shape, W.shape, 1, 2),), np.nan, np.float32)
    y = conv.conv2d_forward(gx, gW, gb, 1, 2, workspace=ws, algo="winograd")
    _assert_close(cupy.asnumpy(y), y_ref, y_abs, 36 * 32 + 10, "conv2d_forward winograd 5x5")
    dx, dW, _ = conv.conv2d_backward(gdy, gx, gW, 1, 2, need_db=False, workspace=ws, algo="winograd",
                                     weights_algo="winograd")
    _assert_close(cupy.asnumpy(dx), dx_ref, dx_abs, 36 * 64 + 10, "conv2d_backward winograd 5x5 dx")
    _assert_close(cupy.asnumpy(dW), dW_ref, dW_abs, 36 * T + 10, "conv2d_backward winograd 5x5 dW")
    with pytest.raises(ValueError, match="tile=4 with a 5x5 kernel"):
        conv.conv2d_forward(gx, gW, gb, 1, 2, workspace=ws, algo="winograd4")

    def run():
        winograd.forward(gx, gW, gb, y, 2, workspace=ws)
        winograd.backward_data(gdy, gW, dx, 2, workspace=ws)

    assert_graph_replays_eager(run, (y, dx))


def test_rejections():
    import cupy

    from custom_impl.gpu.conv import winograd

    x = cupy.ones((2, 8, 10, 10), np.float32)
    W = cupy.ones((4, 8, 5, 5), np.float32)
    with pytest.raises(ValueError, match="padding"):
        winograd.forward(x, W, None, None, 5)                   # backward-data would pad by -1
    with pytest.raises(ValueError, match="tile=4 with a 5x5 kernel"):
        winograd.backward_data(cupy.ones((2, 4, 10, 10), np.float32), W, None, 2, tile=4)
    with pytest.raises(ValueError, match="tile=4 with a 5x5 kernel"):
        winograd.backward_weights(cupy.ones((2, 4, 10, 10), np.float32), x, None, 2, tile=4)
    with pytest.raises(ValueError, match="5x3 kernel"):          # dy 10x12 from a 10x10 x at padding 2
        winograd.backward_weights(cupy.ones((2, 4, 10, 12), np.float32), x, None, 2)
    with pytest.raises(ValueError, match="shape"):
        winograd.backward_weights(cupy.ones((2, 4, 10, 10), np.float32), x, cupy.empty((4, 8, 3, 3), np.float32), 2)
    assert winograd.backward_data(cupy.ones((2, 4, 10, 10), np.float32), W, None, 2).shape == (2, 8, 10, 10)
