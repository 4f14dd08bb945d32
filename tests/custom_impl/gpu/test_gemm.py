"""Our GPU GEMM and dense layer (custom_impl/gpu/gemm.py, dense.py) against NumPy float64.

Tolerance: each output is a float32 sum of K products; rounding in a k-term sum is bounded by
K * eps32 * sum_k |a_k b_k| in the worst case and grows like sqrt(K) for random data, so we allow
|out - ref| <= 4 * sqrt(K) * eps32 * (|a| @ |b|) + 4 * eps32 * |ref|  (the second term: the bias add and
the activation's own rounding, expf/tanhf within 2 ulp). Inputs are exactly representable in both
precisions (float32 values upcast), so only the kernel's arithmetic is tested.
Outputs are filled with NaN before each run, so an element the kernel never writes fails.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

EPS32 = float(np.finfo(np.float32).eps)
ACTS = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
}


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _assert_close(out, ref, ref_abs, K, what):
    out = np.asarray(out, dtype=np.float64)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert np.all(np.isfinite(out)), f"{what}: {np.sum(~np.isfinite(out))} non-finite (unwritten?) elements"
    tol = 4.0 * np.sqrt(max(K, 1)) * EPS32 * ref_abs + 4.0 * EPS32 * np.abs(ref) + 1e-30
    err = np.abs(out - ref)
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} elements off; worst err {err.max():.3g}, "
                           f"at tol {tol.flat[np.argmax(err - tol)]:.3g}")


def _run_gemm(M, N, K, trans_a=False, trans_b=False, bias=False, act="none", accumulate=False, seed=0, **kw):
    import cupy

    from custom_impl.gpu.gemm import gemm

    rng = np.random.default_rng(seed)
    a = _rand(rng, *((K, M) if trans_a else (M, K)))
    b = _rand(rng, *((N, K) if trans_b else (K, N)))
    bv = _rand(rng, N) if bias else None
    c0 = _rand(rng, M, N)
    A = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    B = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    pre = A @ B
    ref_abs = np.abs(A) @ np.abs(B)
    if accumulate:
        pre = pre + c0
        ref_abs = ref_abs + np.abs(c0)
    if bias:
        pre = pre + bv
        ref_abs = ref_abs + np.abs(bv)
    ref = ACTS[act](pre)
    # NOTE: relu, sigmoid and tanh have slope <= 1, so the pre-activation tolerance still bounds the error.
    out = cupy.asarray(c0) if accumulate else cupy.full((M, N), np.nan, dtype=np.float32)
    res = gemm(cupy.asarray(a), cupy.asarray(b), out, trans_a=trans_a, trans_b=trans_b,
               bias=None if bv is None else cupy.asarray(bv), act=act, accumulate=accumulate, **kw)
    assert res is out
    _assert_close(cupy.asnumpy(out), ref, ref_abs, K, f"gemm M={M} N={N} K={K} ta={trans_a} tb={trans_b} {kw}")


SHAPES = [(1, 1, 1), (7, 33, 5), (33, 7, 129), (1000, 37, 64), (130, 257, 515), (1, 1000, 784), (64, 300, 1023)]
TRANS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_shapes_transposes(M, N, K, ta, tb):
    _run_gemm(M, N, K, ta, tb)


@pytest.mark.parametrize("act", list(ACTS))
def test_gemm_bias_act(act):
    _run_gemm(77, 45, 99, False, True, bias=True, act=act, seed=3)


@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_accumulate(ta, tb):
    _run_gemm(37, 66, 130, ta, tb, accumulate=True, seed=4)


def _config_names():
    from custom_impl.gpu.tiles import CONFIGS

    return [c.name for c in CONFIGS]


@pytest.mark.parametrize("config", _config_names())
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_every_config(config, ta, tb):
    # odd sizes: partial tiles in M, N and K, unaligned rows (no float4 path) for K % 4 != 0
    _run_gemm(161, 131, 203, ta, tb, bias=True, act="tanh", config=config, splits=1, seed=5)
    _run_gemm(128, 64, 96, ta, tb, config=config, splits=1, seed=6)  # aligned: float4 path


@pytest.mark.parametrize("config", _config_names())
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_interior_and_edge_tiles(config, ta, tb):
    """Aligned operands of two tiles and a bit in M and N, K whole k tiles: the interior blocks run the
    loaders without bounds tests, the edge blocks the checked ones, in one launch; then split-K whose k
    chunks are whole k tiles (interior path per split)."""
    from custom_impl.gpu.tiles import CONFIG_BY_NAME

    cfg = CONFIG_BY_NAME[config]
    M, N, K = 2 * cfg.bm + 4, 2 * cfg.bn + 12, 10 * cfg.bk
    _run_gemm(M, N, K, ta, tb, bias=True, act="relu", config=config, splits=1, seed=12)
    _run_gemm(M, N, 2 * K, ta, tb, accumulate=True, config=config, splits=2, reduce="serial", seed=13)


@pytest.mark.parametrize("ta,tb", TRANS)
def test_interior_path_sums_as_the_checked_path_does(ta, tb):
    """The unchecked interior loaders fetch the same values into the same shared-memory slots as the checked
    ones, so the production build of the 256x128x16 tile gives bitwise what its checked-only build
    (GEMM_INTERIOR=0) gives, on a launch with interior and edge tiles."""
    import cupy

    from custom_impl.gpu import runtime, tiles

    cfg = tiles.CONFIG_BY_NAME["256x128x16_16x8"]
    M, N, K = 2 * cfg.bm + 8, 3 * cfg.bn - 4, 12 * cfg.bk   # interior and edge tiles in M and N
    rng = np.random.default_rng(14)
    a = cupy.asarray(_rand(rng, *((K, M) if ta else (M, K))))
    b = cupy.asarray(_rand(rng, *((N, K) if tb else (K, N))))
    bias = cupy.asarray(_rand(rng, N))
    name = f"gemm_{'t' if ta else 'n'}{'t' if tb else 'n'}"
    outs = []
    for fn in (runtime.kernel("gemm", name, cfg.defines, cfg.smem_bytes),
               runtime.kernel("gemm", name, dict(cfg.defines, GEMM_INTERIOR=0), cfg.smem_bytes)):
        out = cupy.full((M, N), np.nan, dtype=np.float32)
        zero = np.uint64(0)
        fn(((N + cfg.bn - 1) // cfg.bn, (M + cfg.bm - 1) // cfg.bm, 1), (cfg.threads,),
           (a, b, out, bias, zero, zero, np.int32(M), np.int32(N), np.int32(K), np.int32(K), np.int32(0),
            np.int32(1), np.int32(1 | 2 | 4)), shared_mem=cfg.smem_bytes)
        outs.append(cupy.asnumpy(out))
    assert np.all(np.isfinite(outs[0]))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("reduce", ["serial", "launch"])
@pytest.mark.parametrize("splits", [2, 3, 7])
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_split_k(splits, ta, tb, reduce):
    kw = dict(splits=splits, reduce=reduce)
    _run_gemm(33, 70, 1001, ta, tb, bias=True, act="relu", config="32x64x8_4x8", seed=7, **kw)
    _run_gemm(20, 24, 1000, ta, tb, accumulate=True, config="64x64x8_8x8", seed=8, **kw)
    # BK=16 with > 48 KB of dynamic shared memory, K chunks that are multiples of 16 with a ragged tail
    _run_gemm(261, 140, 1001, ta, tb, bias=True, config="256x128x16_16x8", seed=9, **kw)


def test_gemm_split_k_deterministic():
    import cupy

    from custom_impl.gpu.gemm import gemm

    rng = np.random.default_rng(9)
    a, b = cupy.asarray(_rand(rng, 16, 4096)), cupy.asarray(_rand(rng, 4096, 40))
    first = cupy.asnumpy(gemm(a, b, splits=16))
    for _ in range(3):
        assert np.array_equal(cupy.asnumpy(gemm(a, b, splits=16)), first)


@pytest.mark.parametrize("config,splits,bias,act,accumulate,N", [
    ("32x32x8_4x4", 8, True, "relu", False, 128),       # float4 reduce (N % 4 == 0)
    ("32x64x8_4x8", 5, False, "none", True, 70),        # scalar reduce, accumulate
    ("256x128x16_16x8", 3, True, "sigmoid", False, 260),
])
def test_serial_split_k_sums_as_the_reduce_kernel_does(config, splits, bias, act, accumulate, N):
    """The last block of each tile sums the partials inside the GEMM's launch; it must give bitwise what
    the separate ordered reduce kernel (gemm.splitk_reduce) gives from the same partials, and leave every
    tile counter at zero for the next launch."""
    import cupy

    from custom_impl.gpu import gemm, runtime

    rng = np.random.default_rng(11)
    M, K = 67, 1500
    a, b = cupy.asarray(_rand(rng, M, K)), cupy.asarray(_rand(rng, K, N))
    bv = cupy.asarray(_rand(rng, N)) if bias else None
    c0 = _rand(rng, M, N)
    ws = cupy.full((splits * M * N,), np.nan, dtype=np.float32)
    out = cupy.asarray(c0)
    gemm.gemm(a, b, out, bias=bv, act=act, accumulate=accumulate, config=config, splits=splits, workspace=ws)
    assert np.all(np.isfinite(cupy.asnumpy(ws))), "a split's partial was not written"
    again = cupy.asarray(c0)
    gemm.splitk_reduce(ws, again, bv, M, N, splits, int(accumulate), gemm.ACTS[act])
    assert np.array_equal(cupy.asnumpy(out), cupy.asnumpy(again))
    assert int(cupy.count_nonzero(runtime.counters(1))) == 0


# Thin kernels (kernels/gemm_thin.cu): N <= width in the forward layout (trans_b). Shapes: N at 1, at and one
# under each width; M odd and even; K odd (the scalar path: rows not float4-aligned) and a multiple of 4 (the
# float4 path) with a ragged last step.
THIN_CASES = [  # (config, M, N, K, trans_a, trans_b)
    ("thin_n8", 301, 1, 517, False, True), ("thin_n8", 64, 8, 1024, False, True),
    ("thin_n8", 1003, 7, 260, False, True),
    ("thin_n16", 1000, 10, 300, False, True), ("thin_n16", 77, 16, 129, False, True),
    ("thin_n16", 17, 15, 1001, False, True),
]


@pytest.mark.parametrize("config,M,N,K,ta,tb", THIN_CASES)
def test_thin_kernels(config, M, N, K, ta, tb):
    _run_gemm(M, N, K, ta, tb, bias=True, act="sigmoid", config=config, splits=1, seed=21)
    _run_gemm(M, N, K, ta, tb, accumulate=True, config=config, splits=1, seed=22)
    for splits in (3, 8):
        for reduce in ("serial", "launch"):
            _run_gemm(M, N, K, ta, tb, bias=True, act="relu", config=config, splits=splits, reduce=reduce, seed=23)


@pytest.mark.parametrize("config,M,N,K,ta,tb", [THIN_CASES[2], THIN_CASES[3], THIN_CASES[4]])
def test_thin_serial_split_sums_as_the_reduce_kernel_does(config, M, N, K, ta, tb):
    """As for the tiled kernels: the serial reduce gives bitwise what gemm_splitk_reduce gives from the same
    partials, a thin kernel gives the same bits run after run, and the tile counters are left at zero."""
    import cupy

    from custom_impl.gpu import gemm, runtime

    rng = np.random.default_rng(24)
    a = cupy.asarray(_rand(rng, *((K, M) if ta else (M, K))))
    b = cupy.asarray(_rand(rng, *((N, K) if tb else (K, N))))
    bv = cupy.asarray(_rand(rng, N))
    splits = 5
    ws = cupy.full((splits * M * N,), np.nan, dtype=np.float32)
    out = cupy.full((M, N), np.nan, dtype=np.float32)
    gemm.gemm(a, b, out, trans_a=ta, trans_b=tb, bias=bv, act="tanh", config=config, splits=splits, workspace=ws)
    assert np.all(np.isfinite(cupy.asnumpy(ws))), "a split's partial was not written"
    again = cupy.full((M, N), np.nan, dtype=np.float32)
    gemm.splitk_reduce(ws, again, bv, M, N, splits, 0, gemm.ACTS["tanh"])
    assert np.array_equal(cupy.asnumpy(out), cupy.asnumpy(again))
    assert int(cupy.count_nonzero(runtime.counters(1))) == 0
    for _ in range(2):
        more = cupy.full((M, N), np.nan, dtype=np.float32)
        gemm.gemm(a, b, more, trans_a=ta, trans_b=tb, bias=bv, act="tanh", config=config, splits=splits,
                  workspace=ws)
        assert np.array_equal(cupy.asnumpy(more), cupy.asnumpy(out))


def test_thin_config_rejects_a_call_it_cannot_compute():
    import cupy

    from custom_impl.gpu.gemm import gemm

    a, b = cupy.ones((64, 40), np.float32), cupy.ones((17, 40), np.float32)   # N = 17 > 16
    with pytest.raises(ValueError, match="thin_n16.*does not compute"):
        gemm(a, b, trans_b=True, config="thin_n16", splits=1)
    with pytest.raises(ValueError, match="thin_n8.*does not compute"):   # the weight-gradient layout
        gemm(cupy.ones((40, 8), np.float32), cupy.ones((40, 64), np.float32), trans_a=True, config="thin_n8",
             splits=1)
    with pytest.raises(KeyError, match="no config named 'thin_n32'"):
        gemm(a, b, trans_b=True, config="thin_n32", splits=1)


def test_autotuner_times_the_thin_plans_beside_the_tiled_ones(monkeypatch):
    """A forward-layout GEMM with 10 outputs: the tuner times the tiled candidates and the thin ones, and
    whichever it keeps computes the right result (float64 reference)."""
    from custom_impl.gpu import runtime, thin, tiles

    monkeypatch.setattr(runtime, "_tuned", {})
    timed = []
    real = runtime.time_calls
    monkeypatch.setattr(runtime, "time_calls", lambda calls, *a, **kw: timed.append(len(calls)) or real(calls, *a, **kw))
    M, N, K = 4097, 10, 1024
    _run_gemm(M, N, K, False, True, bias=True, seed=25)
    sms = runtime.sm_count()
    assert timed == [len(tiles.tune_candidates(M, N, K, sms)) + len(thin.candidates(M, N, K, False, True, sms))]


def test_autotuned_choice_is_timed_once_and_cached(monkeypatch):
    """The first default call of a shape times tiles.tune_candidates on the GPU (runtime.autotune) and
    caches the fastest; the second call reuses it (no timing); results are right either way (float64
    reference)."""
    from custom_impl.gpu import runtime, tiles

    monkeypatch.setattr(runtime, "_tuned", {})
    timed = []
    real = runtime.time_calls
    monkeypatch.setattr(runtime, "time_calls", lambda calls, *a, **kw: timed.append(len(calls)) or real(calls, *a, **kw))
    _run_gemm(64, 130, 1001, False, True, bias=True, act="relu", seed=12)
    assert len(timed) == 1 and timed[0] == len(tiles.tune_candidates(64, 130, 1001, runtime.sm_count())) > 1
    assert len(runtime.tuned_choices()) == 1
    _run_gemm(64, 130, 1001, False, True, bias=True, act="relu", seed=13)
    assert len(timed) == 1


def test_gemm_graph_capture():
    import cupy

    from custom_impl.gpu.gemm import gemm

    rng = np.random.default_rng(10)
    a, b = cupy.asarray(_rand(rng, 48, 900)), cupy.asarray(_rand(rng, 900, 70))
    out = cupy.empty((48, 70), dtype=np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        gemm(a, b, out)  # warm-up: compiles, grows the split-K buffer
        expected = cupy.asnumpy(out)
        stream.synchronize()
        stream.begin_capture()
        gemm(a, b, out)
        graph = stream.end_capture()
        out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    assert np.array_equal(cupy.asnumpy(out), expected)


def test_gemm_rejects_bad_input():
    import cupy

    from custom_impl.gpu.gemm import gemm

    with pytest.raises(ValueError, match="inner sizes"):
        gemm(cupy.ones((3, 4), np.float32), cupy.ones((5, 6), np.float32))
    with pytest.raises(ValueError, match="float32"):
        gemm(cupy.ones((3, 4), np.float64), cupy.ones((4, 6), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm(cupy.ones((4, 3), np.float32).T, cupy.ones((4, 6), np.float32))


@pytest.mark.parametrize("N,F,U", [(1, 784, 128), (7, 64, 10), (33, 1000, 37), (64, 1024, 1024), (1000, 37, 1)])
@pytest.mark.parametrize("act", ["none", "relu", "sigmoid"])
def test_dense_forward_backward(N, F, U, act):
    import cupy

    from custom_impl.gpu.dense import dense_backward, dense_forward

    rng = np.random.default_rng(N * 7 + U)
    x, W, b, dy = _rand(rng, N, F), _rand(rng, U, F), _rand(rng, U), _rand(rng, N, U)
    x64, W64, dy64 = x.astype(np.float64), W.astype(np.float64), dy.astype(np.float64)
    pre = x64 @ W64.T + b
    y = cupy.full((N, U), np.nan, np.float32)
    dense_forward(cupy.asarray(x), cupy.asarray(W), cupy.asarray(b), act=act, out=y)
    _assert_close(cupy.asnumpy(y), ACTS[act](pre), np.abs(x64) @ np.abs(W64.T) + np.abs(b), F, "dense y")
    dx = cupy.full((N, F), np.nan, np.float32)
    dW = cupy.full((U, F), np.nan, np.float32)
    db = cupy.full((U,), np.nan, np.float32)
    r = dense_backward(cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W), dx=dx, dW=dW, db=db)
    assert r[0] is dx and r[1] is dW and r[2] is db
    _assert_close(cupy.asnumpy(dx), dy64 @ W64, np.abs(dy64) @ np.abs(W64), U, "dense dx")
    _assert_close(cupy.asnumpy(dW), dy64.T @ x64, np.abs(dy64.T) @ np.abs(x64), N, "dense dW")
    _assert_close(cupy.asnumpy(db), dy64.sum(0), np.abs(dy64).sum(0), N, "dense db")
    dx2, _, _ = dense_backward(cupy.asarray(dy), cupy.asarray(x), cupy.asarray(W), need_dx=False)
    assert dx2 is None


@pytest.mark.parametrize("N,U", [(22400, 29), (8192, 1024), (1000, 10), (300, 7), (257, 33), (1, 5)])
def test_dense_bias_grad_split_over_rows(N, U):
    """db = sum_n dy[n, :] with the rows split over blocks (dense.bias_splits; a ragged last chunk for 22400,
    1000, 300 and 257 rows, 33 columns a second, mostly empty column block): equal to float64 within the
    summation bound of N terms; the same bits on every call and whether the last block or the finish kernel
    adds the partials (the same order); nothing read from the NaN-filled workspace that was not written
    first; the arrival counters left zeroed; and the one-block form (splits=1) within the same bound."""
    import cupy

    from custom_impl.gpu import dense, runtime

    rng = np.random.default_rng(N + U)
    dy = _rand(rng, N, U)
    ref, ref_abs = dy.astype(np.float64).sum(0), np.abs(dy.astype(np.float64)).sum(0)
    gdy = cupy.asarray(dy)
    ws = cupy.full((U * N + 1,), np.nan, np.float32)
    db = cupy.full((U,), np.nan, np.float32)
    assert dense.bias_grad(gdy, db, ws) is db
    splits = dense.bias_splits(N, U, runtime.sm_count())[1]
    _assert_close(cupy.asnumpy(db), ref, ref_abs, N, f"db {N}x{U} ({splits} splits)")
    again = cupy.asnumpy(dense.bias_grad(gdy, cupy.full((U,), np.nan, np.float32), ws))
    assert np.array_equal(again, cupy.asnumpy(db))
    two_launches = cupy.asnumpy(dense.bias_grad(gdy, cupy.full((U,), np.nan, np.float32), ws, serial=False))
    assert np.array_equal(two_launches, cupy.asnumpy(db))
    assert int(cupy.count_nonzero(runtime.counters(1))) == 0, "the arrival counters were not left zeroed"
    one = cupy.asnumpy(dense.bias_grad(gdy, cupy.full((U,), np.nan, np.float32), splits=1))
    _assert_close(one, ref, ref_abs, N, f"db {N}x{U} (one block per 32 columns)")


def test_gemm_repeated_calls_reuse_a_plan_and_still_check():
    """A repeated eager call reuses its launch plan (no re-checks, no re-choice) and gives the same bits as
    the first (planning) call, for the one-launch and the split-K path; a call that would fail the checks
    (wrong dtype, non-contiguous, wrong out shape) never reuses a plan and still gets its ValueError."""
    import cupy

    from custom_impl.gpu import gemm as g

    rng = np.random.default_rng(21)
    for M, N, K in ((37, 66, 130), (64, 128, 784)):  # the second splits K eagerly (choose_config)
        a = cupy.asarray(rng.standard_normal((M, K)).astype(np.float32))
        b = cupy.asarray(rng.standard_normal((N, K)).astype(np.float32))
        bias = cupy.asarray(rng.standard_normal(N).astype(np.float32))
        out1, out2 = cupy.empty((M, N), np.float32), cupy.empty((M, N), np.float32)
        before = len(g._launch_plans)
        g.gemm(a, b, out1, trans_b=True, bias=bias, act="relu")
        assert len(g._launch_plans) == before + 1
        g.gemm(a, b, out2, trans_b=True, bias=bias, act="relu")
        assert len(g._launch_plans) == before + 1
        np.testing.assert_array_equal(cupy.asnumpy(out1), cupy.asnumpy(out2))
        ref = np.maximum(cupy.asnumpy(a).astype(np.float64) @ cupy.asnumpy(b).T.astype(np.float64)
                         + cupy.asnumpy(bias), 0)
        np.testing.assert_allclose(cupy.asnumpy(out2), ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))  # float32 sums of K terms
        with pytest.raises(ValueError, match="float32"):
            g.gemm(a.astype(np.float64), b, out1, trans_b=True, bias=bias, act="relu")
        with pytest.raises(ValueError, match="contiguous"):
            g.gemm(cupy.asfortranarray(a), b, out1, trans_b=True, bias=bias, act="relu")
        with pytest.raises(ValueError, match="shape"):
            g.gemm(a, b, cupy.empty((M, N + 1), np.float32), trans_b=True, bias=bias, act="relu")
