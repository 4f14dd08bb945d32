"""Our tensor-core convolution (custom_impl/gpu/conv/implicit_gemm_tc.py) at tf32 and bf16, every phase.

Exact checks, as in test_gemm_tc.py: small integers in [-3, 3] are exact in TF32 and BF16, and every sum
stays below 2^24 (at most 9 x the reduction length, <= 2e5 terms here), so forward, backward-data and
backward-weights must equal the float64 convolution bit for bit: the gathers (padding, strides, stride
phases without taps), the edge predication, split-K and the NCHW epilogues, without any rounding allowance.
Then one random-data check per phase against float64 with test_gemm_tc.py's bound: 8 u
sqrt(sum of squared terms) for the operands' rounding plus the FP32 accumulation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conv_reference import conv_ref
from tc_rounding import ROUND

pytestmark = pytest.mark.gpu

EPS32 = float(np.finfo(np.float32).eps)
UNIT = {"tf32": 2.0 ** -11, "bf16": 2.0 ** -8}
PRECISIONS = ("tf32", "bf16")
# (N, C, H, W, K, R, S, stride, padding)
GEOMETRIES = [
    (2, 3, 11, 13, 7, 3, 3, (1, 1), (1, 1)),
    (3, 5, 11, 13, 7, 3, 3, (2, 2), (1, 1)),
    (2, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2)),
    (1, 4, 9, 10, 5, 2, 2, (3, 3), (0, 0)),       # stride > kernel: phases without taps (dx there is 0)
    (2, 6, 12, 9, 9, 3, 1, (2, 1), (1, 0)),       # rectangular kernel and stride
    (1, 128, 8, 8, 128, 3, 3, (1, 1), (1, 1)),    # N = 1: few output tiles, long reductions (split-K)
    (33, 17, 29, 31, 45, 3, 3, (1, 1), (1, 1)),   # odd sizes, many tiles
    (8, 32, 14, 14, 64, 1, 1, (1, 1), (0, 0)),    # 1x1
    (16, 64, 32, 32, 256, 3, 3, (1, 1), (1, 1)),  # the 128x256 tile for backward-weights, in both precisions
]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    from custom_impl.gpu import runtime

    runtime.precompile(families=["conv_implicit_gemm_tc", "conv_implicit_gemm", "gemm", "gemm_wgmma"])


def _case(geom, precision, kind="int", seed=0, graph_regime=False):
    import contextlib

    import cupy

    from custom_impl.gpu import conv, runtime

    N, C, H, W, K, R, S, stride, padding = geom
    rng = np.random.default_rng(seed)

    def draw(*shape):
        if kind == "int":
            return rng.integers(-3, 4, size=shape).astype(np.float32)
        return rng.standard_normal(shape).astype(np.float32)
    x, Wt, b = draw(N, C, H, W), draw(K, C, R, S), draw(K)
    P = (H + 2 * padding[0] - R) // stride[0] + 1
    Q = (W + 2 * padding[1] - S) // stride[1] + 1
    dy = draw(N, K, P, Q)
    regime = runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S) if graph_regime else contextlib.nullcontext()
    with regime:
        ws_n = conv.conv2d_workspace_size(x.shape, Wt.shape, stride, padding, precision)
        ws = cupy.full((max(ws_n, 1),), np.nan, dtype=np.float32)
        dx = cupy.full(x.shape, np.nan, dtype=np.float32)
        dW = cupy.full(Wt.shape, np.nan, dtype=np.float32)
        db = cupy.full((K,), np.nan, dtype=np.float32)
        y = conv.conv2d_forward(cupy.asarray(x), cupy.asarray(Wt), cupy.asarray(b), stride, padding,
                                out=cupy.full((N, K, P, Q), np.nan, dtype=np.float32), workspace=ws,
                                precision=precision)
        conv.conv2d_backward(cupy.asarray(dy), cupy.asarray(x), cupy.asarray(Wt), stride, padding, dx=dx, dW=dW,
                             db=db, workspace=ws, precision=precision)
    got = {name: cupy.asnumpy(a).astype(np.float64) for name, a in (("y", y), ("dx", dx), ("dW", dW), ("db", db))}
    return got, (x, Wt, b, dy, stride, padding)


def _reference(x, Wt, b, dy, stride, padding, square=False):
    f = (lambda a: a.astype(np.float64) ** 2) if square else (lambda a: a.astype(np.float64))
    y, backward = conv_ref(f(x), f(Wt), stride, padding)
    dx, dW, db = backward(f(dy))
    return {"y": y + (0 if square else b.astype(np.float64)[None, :, None, None]), "dx": dx, "dW": dW, "db": db}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("graph_regime", [False, True])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "x".join(str(v) for v in g[:7]) + f"_s{g[7][0]}{g[7][1]}")
def test_conv_tc_exact(geom, graph_regime, precision):
    got, inputs = _case(geom, precision, graph_regime=graph_regime)
    ref = _reference(*inputs)
    for name in ("y", "dx", "dW", "db"):
        out = got[name]
        assert np.all(np.isfinite(out)), f"{precision} {geom} {name}: unwritten (NaN) elements"
        bad = out != ref[name]
        assert not bad.any(), (f"{precision} {geom} {name}: {bad.sum()} of {bad.size} differ from the exact "
                               f"result; first at {np.argwhere(bad)[0]}: {out[bad][0]} vs {ref[name][bad][0]}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "x".join(str(v) for v in g[:7]) + f"_s{g[7][0]}{g[7][1]}")
def test_conv_wgmma_exact(geom, precision, monkeypatch):
    """Every phase through the wgmma im2col GEMM (conv/wgmma.py, chosen by force): its gathers (padding,
    strides, stride phases without taps), the NCHW epilogue and split-K of backward-weights, bit for bit."""
    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import implicit_gemm_tc, wgmma

    if not runtime.arch_supported(wgmma.FAMILY):
        pytest.skip("wgmma needs a device of compute capability 9.0 (H100, H200)")
    monkeypatch.setattr(implicit_gemm_tc, "_pick", lambda phase, dims, precision, calls: calls["wgmma"]())
    got, inputs = _case(geom, precision)
    ref = _reference(*inputs)
    for name in ("y", "dx", "dW", "db"):
        assert np.array_equal(got[name], ref[name]), (
            f"wgmma {precision} {geom} {name}: {np.sum(got[name] != ref[name])} of {ref[name].size} differ")


def _force(monkeypatch, tc_name, fp32_algo=None):
    """Every tf32 / bf16 conv call runs candidate ``tc_name``; with it "rounded", the FP32 algorithm
    ``fp32_algo`` (where it can run the layer and phase, else the implicit GEMM)."""
    from custom_impl.gpu.conv import implicit_gemm_tc, select

    monkeypatch.setattr(implicit_gemm_tc, "_pick", lambda phase, dims, precision, calls: calls[tc_name]())
    if fp32_algo is not None:
        monkeypatch.setattr(select, "choose", lambda phase, dims, run, sms=132, key=(): (
            fp32_algo if fp32_algo in select.candidates(dims, phase, sms) else "implicit_gemm"))


@pytest.mark.parametrize("fp32_algo", ["implicit_gemm", "few_channels", "winograd", "patch", "strided_1x1"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_conv_rounded_exact(fp32_algo, precision, monkeypatch):
    """The "rounded" candidate (operands rounded into the workspace, then an FP32 algorithm) on every
    geometry, each FP32 algorithm where it runs the layer: exact on small integers, which rounding leaves
    as they are (Winograd's transforms scale them by 1/2 and 1/4 at most, still exact at these sizes)."""
    from custom_impl.gpu.conv import conv_dims, select

    _force(monkeypatch, "rounded", fp32_algo)
    ran = 0
    for geom in GEOMETRIES + [(4, 8, 9, 9, 16, 1, 1, (2, 2), (0, 0))]:   # + a strided 1x1 (strided_1x1)
        N, C, H, W, K, R, S, stride, padding = geom
        dims = conv_dims((N, C, H, W), (K, C, R, S), stride, padding)
        ran += sum(fp32_algo in select.candidates(dims, phase) for phase in select.PHASES)
        got, inputs = _case(geom, precision)
        ref = _reference(*inputs)
        for name in ("y", "dx", "dW", "db"):
            assert np.array_equal(got[name], ref[name]), (
                f"rounded {fp32_algo} {precision} {geom} {name}: {np.sum(got[name] != ref[name])} of "
                f"{ref[name].size} differ")
    assert ran, f"no geometry here runs {fp32_algo}: the test checked only the implicit GEMM in its place"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("geom", [GEOMETRIES[0], GEOMETRIES[6]], ids=["small", "odd"])
def test_conv_rounded_rounds_operands(geom, precision, monkeypatch):
    """On random data the "rounded" candidate equals, bit for bit, the same FP32 algorithm run at fp32 on
    operands rounded on the host (TF32: nearest, ties away, 13 bits dropped; BF16: nearest even): the
    rounding kernel rounds as the tensor cores' operands are rounded, and every product sees it."""
    import cupy

    from custom_impl.gpu import conv

    _force(monkeypatch, "rounded", "implicit_gemm")
    got, (x, Wt, b, dy, stride, padding) = _case(geom, precision, kind="normal", seed=3)
    r = {name: cupy.asarray(ROUND[precision](a)) for name, a in (("x", x), ("W", Wt), ("dy", dy))}
    y = conv.conv2d_forward(r["x"], r["W"], cupy.asarray(b), stride, padding, algo="implicit_gemm")
    dx, dW, db = conv.conv2d_backward(r["dy"], r["x"], r["W"], stride, padding, algo="implicit_gemm",
                                      weights_algo="implicit_gemm")
    for name, want in (("y", y), ("dx", dx), ("dW", dW)):
        want = cupy.asnumpy(want).astype(np.float64)
        assert np.array_equal(got[name], want), f"{precision} {geom} {name}: {np.sum(got[name] != want)} differ"
    # the rounding changed the operands (so the comparison above could fail)
    assert not np.array_equal(cupy.asnumpy(r["x"]), x)


def test_split_k_and_every_config_are_covered():
    """Some geometry above plans split-K for each phase, and every tile config runs somewhere, under the
    graph launch cost (so test_conv_tc_exact covers those paths; the plans are the model's, on 132 SMs)."""
    from custom_impl.gpu import gemm_tc, runtime
    from custom_impl.gpu.conv import conv_dims, implicit_gemm_tc

    for precision in PRECISIONS:
        split, used = set(), set()
        with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
            for N, C, H, W, K, R, S, stride, padding in GEOMETRIES:
                dims = conv_dims((N, C, H, W), (K, C, R, S), stride, padding)
                for phase, (cfg, _, splits) in implicit_gemm_tc.plans(tuple(dims), precision, 132,
                                                                      runtime.launch_cost()).items():
                    used.add(cfg.name)
                    if splits > 1:
                        split.add(phase)
        assert split == {"forward", "backward_data", "backward_weights"}, (precision, split)
        assert len(used) >= 2, used   # the small tile and a large one; test_conv_tc_every_config does all


@pytest.mark.parametrize("precision", PRECISIONS)
def test_conv_tc_every_config(precision, monkeypatch):
    """Every tile config of the precision in every phase (the plan forced, unsplit and split in 3)."""
    from custom_impl.gpu import gemm_tc
    from custom_impl.gpu.conv import implicit_gemm_tc

    for cfg in gemm_tc.configs(precision):
        for splits in (1, 3):
            def forced(M, N, K, prec, sms, max_splits=32, cfg=cfg, splits=splits):
                k_chunk, n = gemm_tc.split_chunk(K, min(splits, max_splits), cfg.bk)
                return cfg, k_chunk, n
            monkeypatch.setattr(implicit_gemm_tc, "_plan", forced)
            implicit_gemm_tc.plans.cache_clear()
            try:
                for geom in (GEOMETRIES[1], GEOMETRIES[6]):
                    got, inputs = _case(geom, precision)
                    ref = _reference(*inputs)
                    for name in ("y", "dx", "dW", "db"):
                        assert np.array_equal(got[name], ref[name]), f"{cfg.name} splits={splits} {geom} {name}"
            finally:
                implicit_gemm_tc.plans.cache_clear()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("geom", [GEOMETRIES[1], GEOMETRIES[6]], ids=["stride2", "odd"])
def test_conv_tc_random_against_float64(geom, precision):
    got, inputs = _case(geom, precision, kind="normal", seed=5)
    ref = _reference(*inputs)
    sq = _reference(*inputs, square=True)             # sum of squared terms, per output
    x, Wt, b, dy, stride, padding = inputs
    absd = _reference(np.abs(x), np.abs(Wt), np.abs(b), np.abs(dy), stride, padding)
    red = {"y": Wt[0].size, "dx": Wt.shape[0] * Wt.shape[2] * Wt.shape[3], "dW": dy[:, 0].size}
    for name in ("y", "dx", "dW"):
        ksteps = math.ceil(red[name] / 8) + 2
        tol = 8 * UNIT[precision] * np.sqrt(sq[name]) + 2 * ksteps * EPS32 * absd[name] + 4 * EPS32 * np.abs(ref[name])
        err = np.abs(got[name] - ref[name])
        assert not (err > tol + 1e-30).any(), f"{precision} {name}: {np.sum(err > tol)} off, worst {err.max():.3g}"
    # db is an FP32 sum in every precision
    assert np.abs(got["db"] - ref["db"]).max() <= 4 * math.sqrt(dy[:, 0].size) * EPS32 * absd["db"].max()


def test_conv_tc_rejects_fp32_only_algorithms():
    import cupy

    from custom_impl.gpu import conv

    x = cupy.ones((1, 16, 8, 8), dtype=np.float32)
    W = cupy.ones((16, 16, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="runs in FP32 only"):
        conv.conv2d_forward(x, W, None, 1, 1, algo="winograd", precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        conv.conv2d_forward(x, W, None, 1, 1, precision="fp16")
