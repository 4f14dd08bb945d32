"""What ``custom_impl.gpu.gemm.gemm`` launches, checked without a GPU: a stand-in ``cupy`` module (arrays
that are shapes and addresses) and recording kernels (from a stand-in for the runtime's module compiler)
replace the real ones, so the launch arguments (kernel, tile config, grid, block, shared memory, scalar
flags) can be compared on any machine.

The property: a call served from the eager launch-plan cache launches exactly what the same call with
the chosen config, split and reduce spelled out (the uncached path) launches: one launch where split-K
sums its partials in the same launch (workspace and per-tile counters passed), else the GEMM and the
ordered reduce over the same workspace; and a caller's workspace
that is not 16-byte aligned turns the partials' float4 stores and the float4 reduce off (flag bits 2, 5).
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest


class FakeArray:
    """A C-contiguous float32 device array as far as the wrappers look: shape, size, dtype, address."""

    _next = 1 << 20

    def __init__(self, shape, ptr=None, dtype=np.float32):
        self.shape = tuple(int(v) for v in shape)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.dtype = np.dtype(dtype)
        self.flags = types.SimpleNamespace(c_contiguous=True)
        if ptr is None:
            ptr = FakeArray._next
            FakeArray._next += (self.size * 4 + 255) // 256 * 256 + 256
        self.data = types.SimpleNamespace(ptr=ptr)


def _fake_cupy():
    cupy = types.ModuleType("cupy")
    cupy.ndarray = FakeArray
    cupy.empty = lambda shape, dtype=np.float32: FakeArray(shape if isinstance(shape, tuple) else (shape,), dtype=dtype)
    cupy.zeros = cupy.empty
    device = types.SimpleNamespace(id=0, attributes={"MultiProcessorCount": 132})
    legacy_stream = types.SimpleNamespace(ptr=0)   # the legacy default stream: never capturing
    cupy.cuda = types.SimpleNamespace(Device=lambda *a: device, runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                      get_current_stream=lambda: legacy_stream)
    return cupy


def _tile_name(defines):
    """The TileConfig name a module's GEMM_* defines stand for, or None (a module without them)."""
    if "GEMM_BM" not in defines:
        return None
    return "{GEMM_BM}x{GEMM_BN}x{GEMM_BK}_{GEMM_TM}x{GEMM_TN}".format(**dict(defines))


def _fake_modules(monkeypatch, made=None):
    """runtime with the stand-in cupy and a stand-in module compiler whose kernels append each launch to
    the returned list (and each function made to ``made``)."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    from custom_impl.gpu import runtime

    record = []

    class FakeModule:
        def __init__(self, family, defines):
            self.family, self.defines = family, dict(defines)

        def get_function(self, name):
            family, cfg = self.family, _tile_name(self.defines)

            def launch(grid, block, args, shared_mem=0):
                norm = tuple(("array", a.data.ptr) if isinstance(a, FakeArray) else (type(a).__name__, int(a))
                             for a in args)
                record.append((family, name, cfg, tuple(grid), tuple(block), norm, shared_mem))

            fn = types.SimpleNamespace(family=family, name=name, defines=self.defines,
                                       max_dynamic_shared_size_bytes=0, __call__=launch)
            if made is not None:
                made.append(fn)
            return launch if made is None else fn

    monkeypatch.setattr(runtime, "_module", lambda family, device_id, defines: FakeModule(family, defines))
    monkeypatch.setattr(runtime, "_kernels", {})
    monkeypatch.setattr(runtime, "_opted_in", {})
    return record


@pytest.fixture
def launches(monkeypatch):
    """gemm with the stand-in cupy; returns the list every kernel launch is appended to."""
    record = _fake_modules(monkeypatch)
    from custom_impl.gpu import gemm, runtime

    monkeypatch.setattr(gemm, "_launch_plans", {})
    monkeypatch.setattr(runtime, "_workspaces", {})
    monkeypatch.setattr(runtime, "_counter_buffers", {})
    monkeypatch.setattr(runtime, "_tuned", {})
    # the autotuner's timing, faked: the candidate proposed last is the fastest (so the tuned choice is
    # not simply the cost model's first), each 1 ms per TUNE_REPS calls apart
    monkeypatch.setattr(runtime, "time_calls",
                        lambda calls, *args, **kw: [float(len(calls) - i) for i in range(len(calls))])
    runtime._sms_of.cache_clear()
    from custom_impl.gpu import dense
    dense._bias_grad_plan.cache_clear()
    yield record
    runtime._sms_of.cache_clear()
    dense._bias_grad_plan.cache_clear()


CASES = [  # M, N, K, trans_a, trans_b, bias, act, accumulate
    (37, 66, 130, False, True, True, "relu", False),
    (64, 128, 784, False, True, False, "none", False),      # splits eagerly
    (1024, 10, 1024, True, False, False, "none", True),     # splits, accumulate
    (4096, 4096, 4096, False, False, True, "tanh", False),  # the 256x128x16 tile
    (33, 1000, 513, False, True, True, "sigmoid", False),   # K % 4 != 0: scalar loads
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:3])))
def test_cached_plan_launches_what_the_explicit_call_launches(launches, case):
    from custom_impl.gpu import gemm, runtime, tiles

    M, N, K, ta, tb, has_bias, act, acc = case
    a = FakeArray((K, M) if ta else (M, K))
    b = FakeArray((N, K) if tb else (K, N))
    out = FakeArray((M, N))
    bias = FakeArray((N,)) if has_bias else None
    kw = dict(trans_a=ta, trans_b=tb, bias=bias, act=act, accumulate=acc)
    gemm.gemm(a, b, out, **kw)          # plans and caches
    first = list(launches)
    launches.clear()
    gemm.gemm(a, b, out, **kw)          # served from the cache
    cached = list(launches)
    launches.clear()
    cands = tiles.tune_candidates(M, N, K)
    cfg, splits, serial = cands[-1]          # the fake timing's fastest (the model's first if it is alone)
    assert list(runtime.tuned_choices().values()) == ([cands[-1]] if len(cands) > 1 else [])
    ws = runtime.workspace(splits * M * N)
    gemm.gemm(a, b, out, config=cfg, splits=splits, workspace=ws if splits > 1 else None,
              reduce="serial" if serial else "launch", **kw)
    explicit = list(launches)
    tuning, first = first[:len(first) - len(cached)], first[len(first) - len(cached):]
    assert first == cached == explicit
    # the tuner's launches (one warm-up per candidate) wrote a scratch output, never the caller's out
    assert len(tuning) >= len(cands) if len(cands) > 1 else not tuning
    assert all(("array", out.data.ptr) not in r[5] for r in tuning if r[1] in gemm.KERNELS.values())
    # serial split-K sums the partials inside the same launch; otherwise gemm_splitk_reduce follows
    assert len(explicit) == (2 if splits > 1 and not serial else 1)
    args = explicit[0][5]
    flags = args[-1][1]
    assert (flags >> 3 & 1) == (splits > 1) and (flags >> 4 & 1) == serial
    if splits > 1 and serial:   # the workspace and this device's tile counters, one per output tile at least
        counters = runtime.counters(1)
        assert args[4] == ("uint64", ws.data.ptr) and args[5] == ("uint64", counters.data.ptr)
        grid = explicit[0][3]
        assert grid[2] == splits and counters.size >= grid[0] * grid[1] and counters.dtype == np.int32
    elif splits > 1:            # the reduce reads the same workspace the partials went to
        assert args[4] == ("uint64", ws.data.ptr) and args[5] == ("uint64", 0)
        assert explicit[1][1] == "gemm_splitk_reduce" and explicit[1][5][0] == ("uint64", ws.data.ptr)
    else:
        assert args[4] == args[5] == ("uint64", 0)


@pytest.mark.parametrize("reduce", ["serial", "launch"])
def test_explicit_split_launches_as_asked(launches, reduce):
    from custom_impl.gpu import gemm

    a, b, out = FakeArray((64, 784)), FakeArray((128, 784)), FakeArray((64, 128))
    gemm.gemm(a, b, out, trans_b=True, config="32x32x8_4x4", splits=8, reduce=reduce)
    assert [r[1] for r in launches] == (["gemm_nt"] if reduce == "serial" else ["gemm_nt", "gemm_splitk_reduce"])
    with pytest.raises(ValueError, match="reduce"):
        gemm.gemm(a, b, out, trans_b=True, splits=8, reduce="atomic")


def test_unaligned_workspace_turns_off_vector_stores_of_the_partials(launches):
    from custom_impl.gpu import gemm

    a, b, out = FakeArray((64, 784)), FakeArray((128, 784)), FakeArray((64, 128))
    ws = FakeArray((8 * 64 * 128 + 1,))
    shifted = FakeArray((8 * 64 * 128,), ptr=ws.data.ptr + 4)   # a view one float in: not 16-byte aligned
    for buf, vec in ((ws, 1), (shifted, 0)):
        launches.clear()
        gemm.gemm(a, b, out, trans_b=True, config="32x32x8_4x4", splits=8, workspace=buf)
        flags = launches[0][5][-1][1]
        assert flags >> 3 & 1 == 1 and (flags >> 2 & 1) == vec and (flags >> 5 & 1) == vec


def test_kernel_memoises_and_opts_in_once(monkeypatch):
    """runtime.kernel (the one kernel lookup): one function object per (family, name, defines, device)
    whatever the order of the defines, and the > 48 KB shared-memory opt-in set to the largest size asked."""
    made = []
    _fake_modules(monkeypatch, made)
    from custom_impl.gpu import runtime

    a = runtime.kernel("conv_few_channels", "k_forward", {"SC_S": 5, "SC_SW": 1})
    assert runtime.kernel("conv_few_channels", "k_forward", {"SC_SW": 1, "SC_S": 5}) is a and len(made) == 1
    assert (a.family, a.defines, a.max_dynamic_shared_size_bytes) == ("conv_few_channels",
                                                                       {"SC_S": "5", "SC_SW": "1"}, 0)
    big = runtime.kernel("conv_few_channels", "k_weights", {"SC_S": 3, "SC_SW": 1}, smem=96 * 1024)
    assert big.max_dynamic_shared_size_bytes == 96 * 1024
    runtime.kernel("conv_few_channels", "k_weights", {"SC_S": 3, "SC_SW": 1}, smem=60 * 1024)  # smaller: kept
    assert big.max_dynamic_shared_size_bytes == 96 * 1024
    small = runtime.kernel("conv_few_channels", "k_small", smem=40 * 1024)   # under 48 KB: no opt-in
    assert small.max_dynamic_shared_size_bytes == 0
    p = runtime.kernel("conv_patch", "k_data", {"PT_S": 5})
    assert (p.family, p.defines) == ("conv_patch", {"PT_S": "5"}) and len(made) == 4


@pytest.mark.parametrize("N,F,U", [(64, 784, 128), (1024, 1024, 10), (33, 513, 1000)])
def test_dense_calls_served_from_cached_launches_launch_the_same(launches, N, F, U):
    """dense_forward / dense_backward skip their argument checks when every GEMM they make has a cached
    launch (an earlier call with these shapes passed the checks); they must launch exactly what the
    checked path launches, and a W of the wrong shape must still be refused."""
    from custom_impl.gpu import dense, gemm

    x, W, b, y = FakeArray((N, F)), FakeArray((U, F)), FakeArray((U,)), FakeArray((N, U))
    dy, dx, dW, db = FakeArray((N, U)), FakeArray((N, F)), FakeArray((U, F)), FakeArray((U,))
    calls = [lambda: dense.dense_forward(x, W, b, act="relu", out=y),
             lambda: dense.dense_backward(dy, x, W, dx=dx, dW=dW, db=db),
             lambda: dense.dense_backward(dy, x, W, need_dx=False, dW=dW, db=db)]
    for call in calls:
        call()                      # tunes and caches
        gemm._launch_plans.clear()  # (the tuned choices stay)
        launches.clear()
        call()                      # checked path (plans from the tuned choices)
        checked = list(launches)
        launches.clear()
        call()                      # served from cached launches
        assert launches == checked and len(checked) >= 1
    with pytest.raises(ValueError, match="W"):
        dense.dense_backward(dy, x, FakeArray((U, F + 1)), need_dx=False, dW=dW, db=db)
    with pytest.raises(ValueError, match="db"):
        dense.dense_backward(dy, x, W, need_dx=False, dW=dW, db=FakeArray((U + 1,)))


@pytest.mark.parametrize("N,U,splits", [(22400, 29, 88), (8192, 1024, 8), (1024, 10, 4), (64, 10, 1), (300, 7, 2)])
def test_dense_bias_grad_splits_the_rows_over_blocks(launches, N, U, splits):
    """The bias gradient of a large batch spreads its rows over blocks (a 29-wide layer at 22,400 rows was
    a single block): one launch whose last blocks add the partials (arrival counters passed), or with
    serial=False the partial launch without counters and the finish kernel over the same workspace; a
    small batch is one launch that writes db directly. The grid fills <= 2 blocks per SM (132 here)."""
    from custom_impl.gpu import dense, runtime

    dy, db = FakeArray((N, U)), FakeArray((U,))
    col_blocks = -(-U // 32)
    assert dense.bias_splits(N, U, 132)[1] == splits and col_blocks * splits <= 2 * 132
    dense.bias_grad(dy, db)
    ((family, name, _, grid, block, args, _),) = launches
    assert (family, name, grid, block) == ("dense", "dense_bias_grad", (col_blocks, splits), (32, 32))
    nchunk = dense.bias_splits(N, U, 132)[0]
    assert args[-3:] == (("int32", N), ("int32", U), ("int32", nchunk)) and (splits - 1) * nchunk < N <= splits * nchunk
    if splits == 1:
        assert args[1] == ("array", db.data.ptr) and args[2:4] == (("uint64", 0), ("uint64", 0))
        return
    ws = runtime.workspace(U * splits)
    counters = runtime.counters(col_blocks)
    assert args[1:4] == (("array", ws.data.ptr), ("array", db.data.ptr), ("array", counters.data.ptr))
    launches.clear()
    dense.bias_grad(dy, db, serial=False)
    (_, first, _, grid1, _, args1, _), (_, second, _, grid2, block2, args2, _) = launches
    assert (first, grid1, args1[2:4]) == ("dense_bias_grad", (col_blocks, splits), (("uint64", 0), ("uint64", 0)))
    assert (second, grid2, block2) == ("dense_bias_grad_finish", (col_blocks,), (32, 32))
    assert args2 == (("array", ws.data.ptr), ("array", db.data.ptr), ("int32", U), ("int32", splits))


def test_dense_bias_grad_refuses_a_bad_split_or_workspace(launches):
    from custom_impl.gpu import dense

    dy, db = FakeArray((22400, 29)), FakeArray((29,))
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="splits must be a positive integer"):
            dense.bias_grad(dy, db, splits=bad)
    with pytest.raises(ValueError, match="workspace has 10 elements, needs 2552"):
        dense.bias_grad(dy, db, workspace=FakeArray((10,)))
    with pytest.raises(ValueError, match="db"):
        dense.bias_grad(dy, FakeArray((30,)))
    assert launches == []


def test_tuner_weighs_a_second_launch_at_the_launch_cost_in_force(launches, monkeypatch):
    """Eagerly (20 us per launch) a GEMM + reduce pair whose GPU time is 1 us lower than a serial split
    loses to it (both are host-bound; the pair costs two launches); in a graph (1 us) it wins."""
    from custom_impl.gpu import gemm, runtime, tiles

    M, N, K = 64, 128, 784
    cands = tiles.tune_candidates(M, N, K)
    pair = next(i for i, c in enumerate(cands) if c[1] > 1 and not c[2])
    serial = next(i for i, c in enumerate(cands) if c[1] > 1 and c[2])
    gpu_us = [60.0] * len(cands)
    gpu_us[pair], gpu_us[serial] = 9.0, 10.0
    monkeypatch.setattr(runtime, "time_calls",
                        lambda calls, *args, **kw: [t * runtime.TUNE_REPS * 1e-3 for t in gpu_us])
    a, b, out = FakeArray((M, K)), FakeArray((N, K)), FakeArray((M, N))
    gemm.gemm(a, b, out, trans_b=True)
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        gemm.gemm(a, b, out, trans_b=True)
    # the runtime's cache key is (device, launch cost, key): the eager choice first
    eager, graphed = (v for k, v in sorted(runtime.tuned_choices().items(), key=lambda kv: -kv[0][1]))
    assert eager == cands[serial] and graphed == cands[pair]


def test_tuner_is_off_with_autotune_false(launches, monkeypatch):
    from custom_impl.gpu import gemm, runtime, tiles

    monkeypatch.setattr(runtime, "AUTOTUNE", False)
    a, b, out = FakeArray((64, 784)), FakeArray((128, 784)), FakeArray((64, 128))
    gemm.gemm(a, b, out, trans_b=True)
    cfg, splits, serial = tiles.tune_candidates(64, 128, 784)[0]
    assert runtime.tuned_choices() == {} and launches[-1][2] == cfg.name and launches[-1][3][2] == splits
