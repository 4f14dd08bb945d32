"""Compiling our .cu files once per process and device, and the checks every typed launch wrapper uses.

Kernels live in ``custom_impl/kernels/<family>.cu``. ``module(family)`` compiles a family with
``cupy.RawModule`` the first time it is asked for on the current device and returns the cached module
afterwards; nothing else in the project builds kernel source strings.
"""
from __future__ import annotations

import functools
import os

import numpy as np

KERNEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
# NOTE: no fast-math: parity with cuDNN in strict FP32 is the point of the project.
NVRTC_OPTIONS = ("-std=c++17",)


def kernel_path(family: str) -> str:
    return os.path.join(KERNEL_DIR, f"{family}.cu")


@functools.lru_cache(maxsize=None)
def _module(family: str, device_id: int, defines: tuple[tuple[str, str], ...]):
    import cupy

    with open(kernel_path(family), "r", encoding="utf-8") as fh:
        code = fh.read()
    # NOTE: kernels may `#include "x.cuh"` from KERNEL_DIR. CuPy's on-disk cache keys on the source and
    # the options only, so the headers' digest goes in as a define: editing a header recompiles.
    options = NVRTC_OPTIONS + (f"-I{KERNEL_DIR}", f"-DKERNEL_HEADERS_DIGEST={_headers_digest()}")
    options += tuple(f"-D{k}={v}" for k, v in defines)
    return cupy.RawModule(code=code, options=options)


@functools.lru_cache(maxsize=1)
def _headers_digest() -> str:
    import hashlib

    digest = hashlib.sha1()
    for name in sorted(os.listdir(KERNEL_DIR)):
        if name.endswith(".cuh"):
            with open(os.path.join(KERNEL_DIR, name), "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def module(family: str, **defines):
    """The compiled ``cupy.RawModule`` of ``kernels/<family>.cu`` for the current device (memoised)."""
    import cupy

    key = tuple(sorted((k, str(v)) for k, v in defines.items()))
    return _module(family, cupy.cuda.Device().id, key)


def function(family: str, name: str, **defines):
    """One kernel of a family, e.g. ``function("pool", "maxpool2d_forward")`` (memoised via ``module``)."""
    return module(family, **defines).get_function(name)


STATIC_SMEM_BYTES = 48 * 1024  # dynamic shared memory a launch may use without the per-function opt-in


def kernel_function(family: str, name: str, smem: int = 0, **defines):
    """``function(family, name, **defines)`` for the current device, memoised, and opted into ``smem`` bytes
    of dynamic shared memory where that exceeds STATIC_SMEM_BYTES (the largest size asked for so far)."""
    import cupy

    fn = _kernel_function(family, name, cupy.cuda.Device().id, tuple(sorted(defines.items())))
    if smem > STATIC_SMEM_BYTES and _opted_in.get(id(fn), 0) < smem:
        # NOTE: a function attribute: the memoised object keeps it, so once per function and size.
        fn.max_dynamic_shared_size_bytes = smem
        _opted_in[id(fn)] = smem
    return fn


@functools.lru_cache(maxsize=None)
def _kernel_function(family: str, name: str, device_id: int, defines: tuple):
    return function(family, name, **dict(defines))


_opted_in: dict[int, int] = {}


def check_array(a, name: str, shape=None, ndim=None):
    """Raise ValueError unless ``a`` is a C-contiguous float32 CuPy array of the given shape / ndim."""
    import cupy

    if not isinstance(a, cupy.ndarray):
        raise ValueError(f"{name}: expected a cupy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name}: expected float32, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array; pass cupy.ascontiguousarray({name})")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return a


def blocks(n: int, threads: int) -> int:
    """Number of blocks of ``threads`` threads covering ``n`` items (at least 1)."""
    return max(1, (int(n) + threads - 1) // threads)


def pair(v, what: str, owner: str) -> tuple[int, int]:
    """An int or an (h, w) pair (stride, padding) as an (h, w) pair of ints; ``owner`` names the caller in
    the error."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"{owner}: {what} must be an int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def i32(*vals) -> tuple:
    """Kernel scalar arguments as np.int32."""
    return tuple(np.int32(v) for v in vals)


@functools.lru_cache(maxsize=8192)
def i32_memo(vals: tuple) -> tuple:
    """``i32(*vals)`` memoised: the scalar arguments of launches whose shapes repeat call after call (a
    dozen np.int32 conversions cost several microseconds of host time per launch)."""
    return i32(*vals)


def checked_workspace(workspace, n: int, what: str, sizing: str):
    """``workspace`` (a 1-D float32 CuPy array of >= n elements) or, when None, gemm.py's shared grow-only
    per-device buffer. ``sizing`` names the function that gives the size, for the error."""
    if workspace is None:
        from .gemm import split_workspace

        return split_workspace(n)
    check_array(workspace, f"{what}: workspace", ndim=1)
    if workspace.size < n:
        raise ValueError(f"{what}: workspace has {workspace.size} elements, needs {n}: size it with {sizing}")
    return workspace
