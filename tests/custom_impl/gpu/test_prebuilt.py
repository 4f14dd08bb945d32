"""The prebuilt cubins the package ships, and how the runtime picks them (CPU only: CuPy is stood in for).

- Every module the default path can choose has a current prebuilt cubin for sm_90 (H100 / H200), and the
  prebuilt folder holds nothing else; ``python -m custom_impl.gpu.prebuild`` fixes either.
- A module's digest changes with its source, the headers it includes (directly or nested), and its
  defines, so an edited kernel is never served a stale cubin; a header it does not include leaves it alone.
- The runtime loads a prebuilt cubin when one matches the device, compiles from source when none does,
  when loading fails, or when ``CUSTOM_IMPL_PREBUILT=0``.
"""
from __future__ import annotations

import lzma
import os
import sys
import types

import pytest

from custom_impl.gpu import prebuild, runtime


def test_every_default_module_has_a_current_prebuilt_cubin_and_nothing_is_stale():
    missing, stale = prebuild.missing("sm_90"), prebuild.stale("sm_90")
    fix = "run `python -m custom_impl.gpu.prebuild` (needs nvcc) and commit custom_impl/kernels/prebuilt/"
    assert not missing, f"{len(missing)} module(s) without a prebuilt sm_90 cubin, e.g. {missing[0]}: {fix}"
    assert not stale, f"{len(stale)} prebuilt file(s) match no current module, e.g. {stale[0]}: {fix}"


def test_prebuilt_files_are_xz_packed_cubins():
    folder = os.path.join(runtime.PREBUILT_DIR, "sm_90")
    names = sorted(os.listdir(folder))
    assert names, f"{folder} is empty"
    smallest = min(names, key=lambda n: os.path.getsize(os.path.join(folder, n)))
    with open(os.path.join(folder, smallest), "rb") as fh:
        cubin = lzma.decompress(fh.read())
    assert cubin[:4] == b"\x7fELF", f"{smallest} does not unpack to an ELF cubin"


def test_module_digest_follows_source_headers_and_defines(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "fam.cu").write_text('#include "h.cuh"\nextern "C" __global__ void k() {}\n')
    (kernels / "h.cuh").write_text("// header v1\n")
    monkeypatch.setattr(runtime, "KERNEL_DIR", str(kernels))
    runtime.headers_digest.cache_clear()
    try:
        base = runtime.module_digest("fam", runtime.define_key({"A": 1}))
        assert base == runtime.module_digest("fam", runtime.define_key({"A": "1"}))  # defines compare as text
        assert base != runtime.module_digest("fam", runtime.define_key({"A": 2}))
        (kernels / "h.cuh").write_text("// header v2\n")
        runtime.headers_digest.cache_clear()
        after_header = runtime.module_digest("fam", runtime.define_key({"A": 1}))
        assert after_header != base
        (kernels / "other.cuh").write_text("// a header fam.cu does not include\n")
        assert runtime.module_digest("fam", runtime.define_key({"A": 1})) == after_header
        (kernels / "h.cuh").write_text('#include "deep.cuh"\n')
        (kernels / "deep.cuh").write_text("// v1\n")
        via_nested = runtime.module_digest("fam", runtime.define_key({"A": 1}))
        (kernels / "deep.cuh").write_text("// v2\n")
        assert runtime.included_headers("fam") == ["deep.cuh", "h.cuh"]
        assert runtime.module_digest("fam", runtime.define_key({"A": 1})) != via_nested   # nested includes count
        (kernels / "fam.cu").write_text('#include "h.cuh"\nextern "C" __global__ void k2() {}\n')
        assert runtime.module_digest("fam", runtime.define_key({"A": 1})) != via_nested
    finally:
        runtime.headers_digest.cache_clear()


def _fake_cupy(monkeypatch, load_fails=False):
    """A stand-in CuPy whose RawModule records how it was made (from a path or from source)."""
    made = []

    class RawModule:
        def __init__(self, *, code=None, path=None, options=()):
            self.code, self.path = code, path
            made.append("path" if path else "code")

        def compile(self):
            if self.path and load_fails:
                raise RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")   # e.g. a driver older than nvcc

    cp = types.ModuleType("cupy")
    cp.RawModule = RawModule
    cp.cuda = types.SimpleNamespace(Device=lambda i=0: types.SimpleNamespace(id=0, compute_capability="90"))
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setenv("CUSTOM_IMPL_CUBIN_CACHE", str(monkeypatch._tmp / "cubins"))
    return made


@pytest.fixture
def fresh_modules(monkeypatch, tmp_path):
    monkeypatch._tmp = tmp_path
    runtime._module.cache_clear()
    yield
    runtime._module.cache_clear()


def test_runtime_loads_the_prebuilt_cubin_for_a_matching_device(monkeypatch, fresh_modules):
    made = _fake_cupy(monkeypatch)
    mod = runtime._module("activation", 0, ())
    assert made == ["path"] and mod.path.endswith(".cubin") and os.path.getsize(mod.path) > 0


def test_runtime_compiles_from_source_when_loading_fails_or_prebuilt_is_off(monkeypatch, fresh_modules):
    made = _fake_cupy(monkeypatch, load_fails=True)
    assert runtime._module("activation", 0, ()).code is not None
    assert made == ["path", "code"]

    runtime._module.cache_clear()
    made = _fake_cupy(monkeypatch)
    monkeypatch.setenv("CUSTOM_IMPL_PREBUILT", "0")
    assert runtime._module("activation", 0, ()).code is not None
    assert made == ["code"]


def test_runtime_compiles_from_source_on_another_architecture(monkeypatch, fresh_modules):
    made = _fake_cupy(monkeypatch)
    sys.modules["cupy"].cuda = types.SimpleNamespace(
        Device=lambda i=0: types.SimpleNamespace(id=0, compute_capability="80"))
    assert runtime._module("activation", 0, ()).code is not None
    assert made == ["code"]
