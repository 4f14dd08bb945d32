"""Our tensor-core GEMM (custom_impl/gpu/gemm_tc.py) against NumPy float64, TF32 and BF16.

Three kinds of check, each with its own reason for its tolerance:

1. Exact (most tests): small integers in [-3, 3] are exact in TF32 and BF16, so are their products, and
   every partial sum stays below 2^24 (|sum| <= 9 K + bias + C, K <= 4097), so the FP32 accumulation is
   exact in any order: the kernel must return the float64 product *bit for bit*. This checks the index
   math, the layouts, edge predication, split-K and the epilogue without any rounding allowance. A
   sigmoid / tanh epilogue adds its own rounding: expf / tanhf are within 2 ulp and the division one more,
   so those outputs get 4 * eps32 relative.
2. Rounding mode: random normal operands, short reductions (K <= 40): the result must equal the float64
   product of the operands rounded on the host exactly as the kernel is documented to round them (TF32:
   nearest, ties away from zero, cvt.rna; BF16: nearest even, cvt.rn) up to the FP32 accumulation alone:
   an mma adds its products to the accumulator with an error of at most ~2 ulp of the running sum, and
   |running sum| <= sum_k |a_k b_k| (ref_abs), so |err| <= 2 * (K/kstep + 2) * eps32 * ref_abs. A kernel that
   truncated instead of rounding would be off by ~u * sqrt(sum_k (a_k b_k)^2), 30x more than this here.
3. Against the unrounded float64 product (random normal, odd shapes up to K = 1023): each operand's rounding
   is a relative error |d| <= u (u = 2^-11 TF32, 2^-8 BF16), roughly uniform, so the error of a product
   sum is sum_k a_k b_k (d_a + d_b) with standard deviation <= sqrt(2/3) u ref_sq (ref_sq =
   sqrt(sum_k a_k^2 b_k^2)); over up to ~10^6 outputs the largest is < 6 sigma: allow 8 u ref_sq (for
   K <= 16 also the worst case 2 u ref_abs <= 8 u ref_sq), plus the FP32 accumulation term of check 2.

Outputs are filled with NaN before each run, so an element the kernel never writes fails.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tc_rounding import ROUND, round_bf16, round_tf32

pytestmark = pytest.mark.gpu

EPS32 = float(np.finfo(np.float32).eps)
UNIT = {"tf32": 2.0 ** -11, "bf16": 2.0 ** -8}   # unit roundoff of the operands' rounding
KSTEP = {"tf32": 8, "bf16": 16}                  # k per mma instruction
PRECISIONS = ("tf32", "bf16")
TRANS = [(False, False), (False, True), (True, False), (True, True)]
ACTS = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
}


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    """Compile the tensor-core modules in parallel once (else each compiles on first use, one by one)."""
    from custom_impl.gpu import gemm_tc, runtime

    runtime.precompile(families=[gemm_tc.FAMILY, gemm_tc.WG_FAMILY])




def test_host_rounding_matches_the_definitions():
    """The host emulation used as the truth below: ties and ordinary values (CPU-side check of the test)."""
    # 1 + 2^-11 is a TF32 tie (half an ulp of 2^-10): away from zero -> 1 + 2^-10; -(1 + 2^-11) -> -(1 + 2^-10)
    assert round_tf32(np.float32([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 2 ** -12])).tolist() == \
        [1 + 2 ** -10, -(1 + 2 ** -10), 1.0]
    # 1 + 2^-8 is a BF16 tie between 1 and 1 + 2^-7: to even -> 1; 1 + 3*2^-8 -> 1 + 2^-6 (even)
    assert round_bf16(np.float32([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)])).tolist() == \
        [1.0, 1 + 2 ** -6, -1.0]


def _operands(rng, M, N, K, ta, tb, kind, offset=0):
    """a, b as float32 host arrays in their stored layouts; ``kind`` "int" (exact) or "normal"."""
    def draw(*shape):
        if kind == "int":
            return rng.integers(-3, 4, size=shape).astype(np.float32)
        return rng.standard_normal(shape).astype(np.float32)
    a = draw(*((K, M) if ta else (M, K)))
    b = draw(*((N, K) if tb else (K, N)))
    return a, b


def _device(x, offset=0):
    """A C-contiguous CuPy copy of x, starting ``offset`` floats into its allocation (offset 1: not 16-byte
    aligned, so the kernels take their 4-byte copy paths)."""
    import cupy

    flat = cupy.empty(x.size + offset, dtype=np.float32)
    view = flat[offset:].reshape(x.shape)
    view.set(np.ascontiguousarray(x))
    return view


def _run(M, N, K, ta, tb, precision, kind="int", bias=False, act="none", accumulate=False, offset=0, seed=0,
         **kw):
    """(out, float64 reference of the pre-rounding, |a|@|b| reference, sqrt(a^2 @ b^2), op(A), op(B), c0, bv)."""
    import cupy

    from custom_impl.gpu.gemm_tc import gemm_tc

    rng = np.random.default_rng(seed)
    a, b = _operands(rng, M, N, K, ta, tb, kind)
    bv = (rng.integers(-3, 4, size=N) if kind == "int" else rng.standard_normal(N)).astype(np.float32) \
        if bias else None
    c0 = (rng.integers(-3, 4, size=(M, N)) if kind == "int" else rng.standard_normal((M, N))).astype(np.float32)
    out = _device(c0) if accumulate else _device(np.full((M, N), np.nan, dtype=np.float32), offset)
    res = gemm_tc(_device(a, offset), _device(b, offset), out, precision=precision, trans_a=ta, trans_b=tb,
                  bias=None if bv is None else cupy.asarray(bv), act=act, accumulate=accumulate, **kw)
    assert res is out
    A = a.T if ta else a
    B = b.T if tb else b
    return cupy.asnumpy(out).astype(np.float64), A, B, c0, bv


def _exact_reference(A, B, c0, bv, accumulate, act):
    pre = A.astype(np.float64) @ B.astype(np.float64)
    if accumulate:
        pre = pre + c0
    if bv is not None:
        pre = pre + bv
    return ACTS[act](pre)


def _assert_exact(out, ref, act, what):
    assert np.all(np.isfinite(out)), f"{what}: {np.sum(~np.isfinite(out))} non-finite (unwritten?) elements"
    if act in ("none", "relu"):
        bad = out != ref
        assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} elements differ from the exact integer "
                               f"result; first at {np.argwhere(bad)[0]}: {out[bad][0]} vs {ref[bad][0]}")
    else:   # the activation's own rounding (module docstring)
        err = np.abs(out - ref)
        tol = 4 * EPS32 * np.abs(ref) + 1e-30
        assert not (err > tol).any(), f"{what}: worst {err.max():.3g} over 4 eps32 relative"


EXACT_SHAPES = [(1, 1, 1), (7, 33, 5), (33, 7, 129), (129, 1000, 33), (1000, 37, 64), (130, 257, 515),
                (64, 300, 1023), (257, 129, 4097)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", EXACT_SHAPES)
def test_exact_shapes_layouts(M, N, K, ta, tb, precision):
    out, A, B, c0, bv = _run(M, N, K, ta, tb, precision)
    _assert_exact(out, _exact_reference(A, B, c0, bv, False, "none"), "none",
                  f"{precision} M={M} N={N} K={K} ta={ta} tb={tb}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_exact_unaligned_operands(ta, tb, precision):
    """Operands and output one float past a 16-byte boundary: every copy is a 4-byte one."""
    out, A, B, c0, bv = _run(67, 45, 99, ta, tb, precision, offset=1, bias=True, act="relu")
    _assert_exact(out, _exact_reference(A, B, c0, bv, False, "relu"), "relu", f"{precision} unaligned")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_exact_epilogues(act, bias, accumulate, precision):
    out, A, B, c0, bv = _run(97, 131, 77, False, True, precision, bias=bias, act=act, accumulate=accumulate)
    _assert_exact(out, _exact_reference(A, B, c0, bv, accumulate, act), act,
                  f"{precision} act={act} bias={bias} accumulate={accumulate}")


def _config_names(precision):
    from custom_impl.gpu.gemm_tc import configs

    return [c.name for c in configs(precision)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("splits", [1, 3])
def test_exact_every_config_and_split(ta, tb, splits, precision):
    """Every tile config of the precision, unsplit and split-K (the reduce adds bias, C and act)."""
    for name in _config_names(precision):
        out, A, B, c0, bv = _run(150, 270, 1001, ta, tb, precision, bias=True, act="relu", accumulate=True,
                                 config=name, splits=splits)
        _assert_exact(out, _exact_reference(A, B, c0, bv, True, "relu"), "relu",
                      f"{name} splits={splits} ta={ta} tb={tb}")


def _wg_config_names(precision):
    """The gemm_wgmma configs of the precision; the test skips on a device without sm_90a's wgmma (only
    there: on an H100 / H200 a module that fails to load fails the test)."""
    from custom_impl.gpu import runtime
    from custom_impl.gpu.gemm_tc import WG_CONFIGS, WG_FAMILY

    if not runtime.arch_supported(WG_FAMILY):
        pytest.skip("gemm_wgmma needs a device of compute capability 9.0 (H100, H200)")
    return [c.name for c in WG_CONFIGS if c.precision == precision]


def test_wgmma_loads_where_the_device_has_it():
    """On an H100 / H200 every wgmma module loads, so the autotuner offers its plans (wgmma_supported warns
    and falls back to mma.sync otherwise; here that is a failure)."""
    import warnings

    from custom_impl.gpu.gemm_tc import wgmma_supported

    _wg_config_names("tf32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wgmma_supported()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("splits", [1, 3])
def test_wgmma_exact_every_config_and_split(ta, tb, splits, precision):
    """Every wgmma tile config: the prep pass's transposes and zero padding (K = 1001 is not a whole k
    tile), edge rows of M and N, split-K and the epilogue, bit for bit."""
    for name in _wg_config_names(precision):
        out, A, B, c0, bv = _run(150, 270, 1001, ta, tb, precision, bias=True, act="relu", accumulate=True,
                                 config=name, splits=splits)
        _assert_exact(out, _exact_reference(A, B, c0, bv, True, "relu"), "relu",
                      f"{name} splits={splits} ta={ta} tb={tb}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("K", [1000, 1004, 64])
def test_wgmma_exact_float4_prep(K, precision):
    """Both operands row-major along k with K % 4 == 0 and aligned (a dense forward, X W^T): the prep
    rounds them from float4 rows without its transpose; the k padding past K (1000 and 1004 are not whole
    k tiles) and the edge rows still come out exact."""
    for name in _wg_config_names(precision):
        out, A, B, c0, bv = _run(150, 270, K, False, True, precision, bias=True, config=name)
        _assert_exact(out, _exact_reference(A, B, c0, bv, False, "none"), "none", f"{name} K={K}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 33, 5), (257, 129, 4097)])
def test_wgmma_exact_shapes_unaligned(M, N, K, precision):
    """Tiny and odd shapes; operands and output one float past a 16-byte boundary (the prep reads any
    alignment; the output takes scalar stores)."""
    for name in _wg_config_names(precision):
        out, A, B, c0, bv = _run(M, N, K, True, False, precision, offset=1, bias=True, config=name)
        _assert_exact(out, _exact_reference(A, B, c0, bv, False, "none"), "none", f"{name} M={M} N={N} K={K}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("K", [5, 40])
def test_wgmma_rounding_mode(K, ta, tb, precision):
    """The prep pass rounds as the mma.sync kernels do (module docstring, 2): the tensor cores' own TF32
    truncation must find nothing left to drop."""
    name = _wg_config_names(precision)[0]
    out, A, B, c0, bv = _run(200, 300, K, ta, tb, precision, kind="normal", seed=K, config=name)
    rnd = ROUND[precision]
    Ar, Br = rnd(A).astype(np.float64), rnd(B).astype(np.float64)
    tol = 2 * (math.ceil(K / KSTEP[precision]) + 2) * EPS32 * (np.abs(Ar) @ np.abs(Br)) + 1e-30
    err = np.abs(out - Ar @ Br)
    assert not (err > tol).any(), f"{name} K={K}: {np.sum(err > tol)} elements off; worst {err.max():.3g}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_wgmma_exact_4096(precision):
    """The gemm targets' shape on the big wgmma tile."""
    name = _wg_config_names(precision)[0]
    out, A, B, c0, bv = _run(4096, 4096, 4096, False, True, precision, bias=True, config=name)
    _assert_exact(out, _exact_reference(A, B, c0, bv, False, "none"), "none", f"{name} 4096^3")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_exact_4096(precision):
    """The dense forward's layout (x @ W^T) at 4096^3, the size of the gemm targets."""
    out, A, B, c0, bv = _run(4096, 4096, 4096, False, True, precision, bias=True)
    _assert_exact(out, _exact_reference(A, B, c0, bv, False, "none"), "none", f"{precision} 4096^3")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("K", [5, 16, 40])
def test_rounding_mode(K, ta, tb, precision):
    """Random operands, short reductions: the kernel rounds exactly as documented (module docstring, 2)."""
    out, A, B, c0, bv = _run(200, 300, K, ta, tb, precision, kind="normal", seed=K)
    rnd = ROUND[precision]
    Ar, Br = rnd(A).astype(np.float64), rnd(B).astype(np.float64)
    ref = Ar @ Br
    ref_abs = np.abs(Ar) @ np.abs(Br)
    tol = 2 * (math.ceil(K / KSTEP[precision]) + 2) * EPS32 * ref_abs + 1e-30
    err = np.abs(out - ref)
    assert not (err > tol).any(), (f"{precision} K={K}: {np.sum(err > tol)} elements off the host-rounded "
                                   f"product; worst err {err.max():.3g}")
    # and the rounding really happened: the unrounded product differs by far more than the bar above
    raw = A.astype(np.float64) @ B.astype(np.float64)
    assert np.abs(out - raw).max() > 10 * tol.max()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", [(7, 33, 5), (33, 7, 129), (1000, 37, 64), (130, 257, 515), (64, 300, 1023)])
def test_random_against_float64(M, N, K, ta, tb, precision):
    """Random normal operands against the unrounded float64 product (module docstring, 3)."""
    out, A, B, c0, bv = _run(M, N, K, ta, tb, precision, kind="normal", bias=True, act="tanh")
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    pre = A64 @ B64 + bv
    ref = np.tanh(pre)
    ref_abs = np.abs(A64) @ np.abs(B64) + np.abs(bv)
    ref_sq = np.sqrt((A64 * A64) @ (B64 * B64))
    # tanh has slope <= 1, so the pre-activation bound holds after it; + its own rounding (4 eps32)
    tol = (8 * UNIT[precision] * ref_sq + 2 * (math.ceil(K / KSTEP[precision]) + 2) * EPS32 * ref_abs
           + 4 * EPS32 * np.abs(ref) + 1e-30)
    err = np.abs(out - ref)
    assert not (err > tol).any(), f"{precision}: {np.sum(err > tol)} of {err.size} off; worst {err.max():.3g}"


def test_bad_arguments():
    import cupy

    from custom_impl.gpu.gemm_tc import gemm_tc

    a = cupy.ones((4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="precision='fp16'"):
        gemm_tc(a, a, trans_b=True, precision="fp16")
    with pytest.raises(ValueError, match="inner sizes"):
        gemm_tc(a, a, precision="tf32")
    with pytest.raises(ValueError, match="is for bf16"):
        gemm_tc(a, a, trans_b=True, precision="tf32", config=_config_names("bf16")[0])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_dense_ops_use_the_tensor_cores(precision):
    """dense_forward / dense_backward with precision=: exact integers through the three GEMMs."""
    import cupy

    from custom_impl.gpu.dense import dense_backward, dense_forward

    rng = np.random.default_rng(3)
    N, F, U = 33, 70, 21
    x, W, b, dy = (rng.integers(-3, 4, size=s).astype(np.float32) for s in ((N, F), (U, F), (U,), (N, U)))
    y = dense_forward(cupy.asarray(x), cupy.asarray(W), cupy.asarray(b), act="relu", precision=precision)
    _assert_exact(cupy.asnumpy(y).astype(np.float64),
                  np.maximum(x.astype(np.float64) @ W.T.astype(np.float64) + b, 0), "relu", "dense_forward")
    dx, dW, db = dense_backward(cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W), precision=precision)
    d64 = dy.astype(np.float64)
    _assert_exact(cupy.asnumpy(dx).astype(np.float64), d64 @ W, "none", "dx")
    _assert_exact(cupy.asnumpy(dW).astype(np.float64), d64.T @ x, "none", "dW")
    _assert_exact(cupy.asnumpy(db).astype(np.float64), d64.sum(0), "none", "db")
    # with non-integer data the products really are rounded: differs from the FP32 path
    xr = rng.standard_normal((N, F)).astype(np.float32)
    y_tc = cupy.asnumpy(dense_forward(cupy.asarray(xr), cupy.asarray(W), precision=precision))
    y32 = cupy.asnumpy(dense_forward(cupy.asarray(xr), cupy.asarray(W)))
    assert np.abs(y_tc - y32).max() > 0
