"""The "fft" forward, backward-data and weight gradient (custom_impl/gpu/conv/fft.py, kernels/conv_fft.cu)
against a NumPy float64 reference, through the public conv entry points: every transform size the cases plan, strides with zero
rows and columns in the upsampled dy, ragged last tiles, partial row / column / k / bin tiles of the bin
GEMMs, chunks of images.

Tolerance: the transforms spread rounding over a whole tile, so an element's error is bounded relative to
the largest magnitudes of the tile rather than its own terms: |dx - ref| <= 16 * log2(LH * LW) * eps32 *
max(ref_abs), ref_abs the same convolution of |dy| (|x|) and |W| (the sum of absolute terms), with one eps per
radix-2 stage of the forward and inverse transforms and a factor for the bin sums. For the first case that
is ~0.02 against entries of ~50; the error seen in float64 emulation is ~1e-14 of max |dx|
(lab/conv/fft_emulate.py), and one product missing or doubled moves an entry by ~1.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

from conv_reference import EPS32, _assert_close, _rand, reference_case  # noqa: F401

# (N, C, H, W, K, R, S, stride, padding)
CASES = [
    (2, 8, 41, 70, 12, 21, 11, (2, 1), (10, 5)),     # DeepSpeech 2's conv2, narrower and fewer channels
    (3, 9, 29, 47, 10, 5, 10, (2, 2), (0, 0)),       # 5x10 stride 2: zero rows and columns in u
    (2, 8, 33, 35, 8, 7, 7, (1, 1), (3, 3)),         # 7x7 stride 1, two tiles down
    (1, 8, 20, 150, 9, 9, 9, (3, 2), (4, 1)),        # strides 3 and 2, three tiles across
    (5, 20, 70, 90, 19, 7, 7, (1, 1), (3, 3)),       # > 16 rows, 2 column tiles, 3 k chunks, all partial
]
IDS = ["N{}C{}H{}W{}K{}R{}S{}s{}x{}p{}x{}".format(*c[:7], *c[7], *c[8]) for c in CASES]


def _reference(case):
    x, W, dy, refs, absolute = reference_case(case, sum(case[:7]) + 3)
    return x.shape, W, dy, refs[1], absolute[1]


def _forward_reference(case):
    x, W, _, refs, absolute = reference_case(case, sum(case[:7]) + 4)
    b = _rand(np.random.default_rng(sum(case[:7]) + 6), case[4])
    return x, W, b, refs[0] + b[:, None, None], absolute[0] + np.abs(b)[:, None, None]


def _check(out, ref, ref_abs, plan, what):
    assert np.all(np.isfinite(out)), f"{what}: {np.sum(~np.isfinite(out))} non-finite (unwritten?) elements"
    tol = 16 * np.log2(plan.lh * plan.lw) * EPS32 * ref_abs.max()
    err = np.abs(out.astype(np.float64) - ref).max()
    assert err <= tol, f"{what}: worst error {err:.3g} above {tol:.3g}"


def _twice(phase, case, shape, call, ref, ref_abs):
    """``call(out, workspace)`` twice, each into a NaN-filled ``out`` of ``shape`` with a NaN-filled workspace
    (every element must be written), checked within the module's tolerance of float64 and for the same bits
    (no atomics); returns the plan."""
    import cupy

    from custom_impl.gpu import conv
    from custom_impl.gpu.conv import fft

    N, C, H, Wd, K, R, S, stride, padding = case
    dims = conv.conv_dims((N, C, H, Wd), (K, C, R, S), stride, padding)
    p = fft.plan(dims, phase)
    assert p is not None and fft.fits(dims, phase)
    ws = cupy.full((conv.conv2d_workspace_size((N, C, H, Wd), (K, C, R, S), stride, padding),), np.nan, np.float32)
    outs = []
    for _ in range(2):
        out = cupy.full(shape, np.nan, np.float32)
        call(out, ws)
        outs.append(cupy.asnumpy(out))
    _check(outs[0], ref, ref_abs, p, f"fft {phase} {p.lh}x{p.lw} {case}")
    assert np.array_equal(outs[0], outs[1]), f"fft {phase} is not deterministic"
    return p


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fft_backward_data(case):
    """dx by "fft" into a NaN-filled dx with a NaN-filled workspace (every element must be written), twice
    (the same bits: no atomics), within the module's tolerance of float64."""
    import cupy

    from custom_impl.gpu import conv

    x_shape, W, dy, dx_ref, dx_abs = _reference(case)
    stride, padding = case[7], case[8]
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)

    def call(dx, ws):
        assert conv.conv2d_backward_data(gdy, gW, x_shape, stride, padding, dx=dx, workspace=ws, algo="fft") is dx

    _twice("backward_data", case, x_shape, call, dx_ref, dx_abs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fft_forward(case):
    """y = conv2d(x, W) + b by "fft" into a NaN-filled y with a NaN-filled workspace, twice (the same bits),
    within the module's tolerance of float64; without a bias the same minus b."""
    import cupy

    from custom_impl.gpu import conv

    x, W, b, y_ref, y_abs = _forward_reference(case)
    stride, padding = case[7], case[8]
    gx, gW, gb = cupy.asarray(x), cupy.asarray(W), cupy.asarray(b)

    def call(y, ws):
        assert conv.conv2d_forward(gx, gW, gb, stride, padding, out=y, workspace=ws, algo="fft") is y

    p = _twice("forward", case, y_ref.shape, call, y_ref, y_abs)
    y = cupy.asnumpy(conv.conv2d_forward(gx, gW, None, stride, padding, algo="fft"))
    _check(y, y_ref - b[:, None, None], y_abs, p, f"fft forward without bias {case}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fft_backward_weights(case):
    """dW by "fft" (weights_algo) into a NaN-filled dW with a NaN-filled workspace, twice (the same bits),
    within the module's tolerance of float64 (ref_abs: the weight gradient of |dy| and |x|); db is the
    implicit GEMM family's, checked with it."""
    import cupy

    from custom_impl.gpu import conv

    N, C, H, Wd, K, R, S, stride, padding = case
    x, W, dy, (_, _, dW_ref, db_ref), (_, _, dW_abs) = reference_case(case, sum(case[:7]) + 5)
    gx, gW, gdy = cupy.asarray(x), cupy.asarray(W), cupy.asarray(dy)
    db = cupy.full((K,), np.nan, np.float32)

    def call(dW, ws):
        conv.conv2d_backward(gdy, gx, gW, stride, padding, need_dx=False, dW=dW, db=db, workspace=ws,
                             weights_algo="fft")

    _twice("backward_weights", case, W.shape, call, dW_ref, dW_abs)
    _assert_close(cupy.asnumpy(db), db_ref, np.abs(dy.astype(np.float64)).sum(axis=(0, 2, 3)), dy[0, 0].size * N,
                  "db")


def test_fft_backward_data_in_chunks_and_auto(monkeypatch):
    """A workspace cap that fits two images per chunk runs the batch of 5 as 2 + 2 + 1 with the same bits
    as the whole batch at once (each tile's sums do not depend on the chunk); "auto" picks among its
    candidates and is float64-close whichever it picks."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import fft

    case = CASES[4]
    x_shape, W, dy, dx_ref, dx_abs = _reference(case)
    stride, padding = case[7], case[8]
    dims = conv.conv_dims(x_shape, W.shape, stride, padding)
    whole = fft.plan(dims)
    gdy, gW = cupy.asarray(dy), cupy.asarray(W)
    dx_whole = cupy.asnumpy(conv.conv2d_backward_data(gdy, gW, x_shape, stride, padding, algo="fft"))
    one = fft.plan(dims, max_elements=whole.n_wh + 1)
    assert one is None    # not even one image fits: not a candidate
    per_image = (whole.n_e + whole.n_x) // whole.images
    monkeypatch.setattr(fft, "MAX_WORKSPACE", whole.n_wh + 2 * per_image)
    chunked = fft.plan(dims)
    assert chunked.images == 2 and chunked.size < whole.size
    dx = cupy.full(x_shape, np.nan, np.float32)
    ws = cupy.full((conv.conv2d_workspace_size(x_shape, W.shape, stride, padding),), np.nan, np.float32)
    conv.conv2d_backward_data(gdy, gW, x_shape, stride, padding, dx=dx, workspace=ws, algo="fft")
    assert np.array_equal(cupy.asnumpy(dx), dx_whole), "chunks of images changed the result"
    monkeypatch.undo()
    dx = conv.conv2d_backward_data(gdy, gW, x_shape, stride, padding)
    algo = runtime.tuned(("conv", "backward_data", dims))
    assert algo in conv.candidates(dims, "backward_data")
    _check(cupy.asnumpy(dx), dx_ref, dx_abs, whole, f"auto ({algo})")


def test_fft_rejects_layers_it_does_not_run():
    """Few taps or few channels: "fft" fits no phase, and asking for it by name raises a ValueError naming
    the layer and the way out."""
    import cupy

    from custom_impl.gpu import conv
    from custom_impl.gpu.conv import fft

    for x_shape, w_shape in [((2, 8, 9, 9), (8, 8, 3, 3)), ((2, 4, 30, 30), (8, 4, 7, 7))]:
        dims = conv.conv_dims(x_shape, w_shape, 1, 1)
        assert not any(fft.fits(dims, phase) for phase in fft.PHASES)
        dy = cupy.ones(conv.conv2d_output_shape(x_shape, w_shape, 1, 1), np.float32)
        with pytest.raises(ValueError, match=r"backward_data: algo 'fft'.*algo='auto'"):
            conv.conv2d_backward_data(dy, cupy.ones(w_shape, np.float32), x_shape, 1, 1, algo="fft")
        with pytest.raises(ValueError, match=r"forward: algo 'fft'.*algo='auto'"):
            conv.conv2d_forward(cupy.ones(x_shape, np.float32), cupy.ones(w_shape, np.float32), None, 1, 1,
                                algo="fft")
        with pytest.raises(ValueError, match=r"backward_weights: algo 'fft'.*algo='auto'"):
            conv.conv2d_backward(dy, cupy.ones(x_shape, np.float32), cupy.ones(w_shape, np.float32), 1, 1,
                                 need_dx=False, weights_algo="fft")
