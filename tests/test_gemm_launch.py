"""What ``custom_impl.gpu.gemm.gemm`` launches, checked without a GPU: a stand-in ``cupy`` module (arrays
that are shapes and addresses) and recording kernels replace the real ones, so the launch arguments
(kernel, tile config, grid, block, shared memory, scalar flags) can be compared on any machine.

The property: a call served from the eager launch-plan cache launches exactly what the same call with
the chosen config and split spelled out (the uncached path) launches; and a caller's workspace that is
not 16-byte aligned turns the partials' float4 stores off (flag bit 2).
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
    cupy.empty = lambda shape, dtype=np.float32: FakeArray(shape if isinstance(shape, tuple) else (shape,))
    device = types.SimpleNamespace(id=0, attributes={"MultiProcessorCount": 132})
    cupy.cuda = types.SimpleNamespace(Device=lambda *a: device, runtime=types.SimpleNamespace(getDevice=lambda: 0))
    return cupy


@pytest.fixture
def launches(monkeypatch):
    """gemm with the stand-in cupy; returns the list every kernel launch is appended to."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    from custom_impl.gpu import gemm

    record = []

    def fake_kernel(family, name, cfg, device_id):
        def launch(grid, block, args, shared_mem=0):
            norm = tuple(("array", a.data.ptr) if isinstance(a, FakeArray) else (type(a).__name__, int(a))
                         for a in args)
            record.append((family, name, None if cfg is None else cfg.name, tuple(grid), tuple(block), norm,
                           shared_mem))
        return launch

    monkeypatch.setattr(gemm, "_kernel", fake_kernel)
    monkeypatch.setattr(gemm, "_launch_plans", {})
    monkeypatch.setattr(gemm, "_split_buffers", {})
    gemm._sms_of.cache_clear()
    yield record
    gemm._sms_of.cache_clear()


CASES = [  # M, N, K, trans_a, trans_b, bias, act, accumulate
    (37, 66, 130, False, True, True, "relu", False),
    (64, 128, 784, False, True, False, "none", False),      # splits eagerly
    (1024, 10, 1024, True, False, False, "none", True),     # splits, accumulate
    (4096, 4096, 4096, False, False, True, "tanh", False),  # the 256x128x16 tile
    (33, 1000, 513, False, True, True, "sigmoid", False),   # K % 4 != 0: scalar loads
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:3])))
def test_cached_plan_launches_what_the_explicit_call_launches(launches, case):
    from custom_impl.gpu import gemm

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
    cfg, splits = gemm.choose_config(M, N, K)
    ws = gemm.split_workspace(splits * M * N)
    gemm.gemm(a, b, out, config=cfg, splits=splits, workspace=ws if splits > 1 else None, **kw)
    explicit = list(launches)
    assert first == cached == explicit
    assert len(explicit) == (2 if splits > 1 else 1)


def test_unaligned_workspace_turns_off_vector_stores_of_the_partials(launches):
    from custom_impl.gpu import gemm

    a, b, out = FakeArray((64, 784)), FakeArray((128, 784)), FakeArray((64, 128))
    ws = FakeArray((8 * 64 * 128 + 1,))
    shifted = FakeArray((8 * 64 * 128,), ptr=ws.data.ptr + 4)   # a view one float in: not 16-byte aligned
    for buf, vec in ((ws, 1), (shifted, 0)):
        launches.clear()
        gemm.gemm(a, b, out, trans_b=True, config="32x32x8_4x4", splits=8, workspace=buf)
        flags = launches[0][5][-1][1]
        assert flags >> 3 & 1 == 1 and (flags >> 2 & 1) == vec


def test_kernel_function_memoises_and_opts_in_once(monkeypatch):
    """_compile.kernel_function (conv_smallc's and conv_patch's kernel lookup): one function object per
    (family, name, defines, device), and the > 48 KB shared-memory opt-in set to the largest size asked."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    from custom_impl.gpu import _compile, conv_patch, conv_smallc

    made = []

    def fake_function(family, name, **defines):
        fn = types.SimpleNamespace(family=family, name=name, defines=defines, max_dynamic_shared_size_bytes=0)
        made.append(fn)
        return fn

    monkeypatch.setattr(_compile, "function", fake_function)
    monkeypatch.setattr(_compile, "_opted_in", {})
    _compile._kernel_function.cache_clear()
    a = conv_smallc._get("conv_smallc_forward", SC_S=5, SC_SW=1)
    assert conv_smallc._get("conv_smallc_forward", SC_SW=1, SC_S=5) is a and len(made) == 1
    assert (a.family, a.defines, a.max_dynamic_shared_size_bytes) == ("conv_smallc", {"SC_S": 5, "SC_SW": 1}, 0)
    big = conv_smallc._get("conv_smallc_backward_weights_v2", 96 * 1024, SC_S=3, SC_SW=1)
    assert big.max_dynamic_shared_size_bytes == 96 * 1024
    conv_smallc._get("conv_smallc_backward_weights_v2", 60 * 1024, SC_S=3, SC_SW=1)   # smaller: kept at 96 KB
    assert big.max_dynamic_shared_size_bytes == 96 * 1024
    p = conv_patch._get("conv_patch_backward_data", 5)
    assert (p.family, p.defines) == ("conv_patch", {"PT_S": 5}) and len(made) == 3
    _compile._kernel_function.cache_clear()
