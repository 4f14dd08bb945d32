"""Our GPU path uses no vendor GEMM or convolution: with CuPy's matmul family, cupy.linalg and the cuBLAS
entry points made to raise, a full train step of every zoo model still runs (and changes the weights).

What can be patched is the Python-level surface (module attributes): CuPy's own compiled code calling
cuBLAS internally cannot be intercepted this way, but our code reaches CuPy only through Python, so any
use of these functions by us goes through the patched names.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import modelspec
from helpers import random_batch

pytestmark = pytest.mark.gpu

MATMUL_FAMILY = ("matmul", "dot", "vdot", "tensordot", "einsum", "inner", "outer", "kron")
CUBLAS_MODULES = ("cupy.cuda.cublas", "cupy_backends.cuda.libs.cublas", "cupy.cuda.cudnn",
                  "cupy_backends.cuda.libs.cudnn", "cupy.cuda.cutensor")


def _forbid(monkeypatch, module, name):
    what = f"{module.__name__}.{name}"

    def raiser(*args, **kwargs):
        raise AssertionError(f"vendor routine called on our GPU path: {what}")

    monkeypatch.setattr(module, name, raiser)
    return what


@pytest.fixture
def no_vendor(monkeypatch):
    import cupy

    patched = [_forbid(monkeypatch, cupy, n) for n in MATMUL_FAMILY if hasattr(cupy, n)]
    for n in dir(cupy.linalg):
        if not n.startswith("_") and callable(getattr(cupy.linalg, n)):
            patched.append(_forbid(monkeypatch, cupy.linalg, n))
    for modname in CUBLAS_MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # not built into this CuPy
            continue
        for n in dir(mod):
            if n.startswith("_") or not callable(getattr(mod, n)) or isinstance(getattr(mod, n), type):
                continue
            try:
                patched.append(_forbid(monkeypatch, mod, n))
            except (AttributeError, TypeError):  # read-only attribute of a compiled module
                pass
    assert any(p.startswith("cupy.matmul") for p in patched)
    return patched


@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_train_step_uses_no_vendor_routines(no_vendor, name):
    import cupy

    import custom_impl

    spec = modelspec.load(name)
    model = custom_impl.build(spec, device="gpu", seed=0)
    before = model.get_params()
    x, y = random_batch(spec, 5)
    for _ in range(3):  # eager, then capture, then replay: all three paths
        loss = model.train_step(x, y, 0.05, 0.9)
    cupy.cuda.get_current_stream().synchronize()
    assert np.isfinite(float(loss))
    after = model.get_params()
    assert all(not np.array_equal(before[k], after[k]) for k in before), "a train step must change every parameter"
    logits = model.forward(x)
    assert logits.shape == (5, spec.output_dim)
