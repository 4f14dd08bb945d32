"""Compile a lab kernel file (a superseded variant kept in lab/<op>/*.cu) the way the product compiles its own.

    from lab.common.kernels import lab_kernel
    fn = lab_kernel("gemm/gemm_baseline.cu", "gemm_baseline", defines={"BM": 128}, smem=0)
    fn(grid, block, args, shared_mem=...)

NVRTC options as the product's runtime uses them: ``-std=c++17``, ``-I`` the product's kernel folder (for
``gemm_tiles.cuh``), the digest of its headers (CuPy's on-disk cache keys on source and options only, so a
header edit recompiles) and one ``-DNAME=VALUE`` per define. Memoised per file, device and defines; a
launch asking for more than 48 KB of dynamic shared memory is opted in once per function and size.
``arch="sm_90a"`` compiles by NVRTC straight to a cubin for that architecture-specific target (wgmma,
mbarrier pipelines), as the product's runtime builds its ``ARCH_SPECIFIC`` families.
"""
from __future__ import annotations

import functools
import os

LAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC_SMEM_BYTES = 48 * 1024


def lab_path(path: str) -> str:
    """The absolute path of ``path`` (relative to lab/); raises FileNotFoundError naming it if missing."""
    full = os.path.join(LAB_DIR, path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"lab kernel file {path!r} not found under {LAB_DIR}; see lab/README.md for "
                                "the kernel files the lab scripts expect")
    return full


@functools.lru_cache(maxsize=None)
def _module(path: str, device_id: int, defines: tuple, arch: str | None = None):
    import cupy

    from custom_impl.gpu import runtime

    with open(lab_path(path), encoding="utf-8") as fh:
        code = fh.read()
    options = ("-std=c++17", f"-I{runtime.KERNEL_DIR}", f"-DKERNEL_HEADERS_DIGEST={runtime.headers_digest()}")
    options += tuple(f"-D{k}={v}" for k, v in defines)
    if arch is None:
        return cupy.RawModule(code=code, options=options)
    import tempfile

    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(code, os.path.basename(path), [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options + (f"-arch={arch}",))
        except nvrtc.NVRTCError as err:
            raise RuntimeError(f"compiling lab/{path} for {arch} failed:\n{nvrtc.getProgramLog(prog)}") from err
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(cubin)
    return cupy.RawModule(path=fh.name)


@functools.lru_cache(maxsize=None)
def _function(path: str, name: str, device_id: int, defines: tuple, arch: str | None = None):
    return _module(path, device_id, defines, arch).get_function(name)


_opted_in: dict = {}


def lab_kernel(path: str, name: str, defines: dict | None = None, smem: int = 0, arch: str | None = None):
    """The kernel ``name`` of lab/``path`` compiled with ``defines`` for the current device (memoised);
    ``arch``: an architecture-specific target such as "sm_90a" (module docstring)."""
    import cupy

    key = tuple(sorted((k, str(v)) for k, v in (defines or {}).items()))
    fn = _function(path, name, cupy.cuda.Device().id, key, arch)
    if smem > STATIC_SMEM_BYTES and _opted_in.get(id(fn), 0) < smem:
        # NOTE: an attribute of the memoised function, so set once per function and size
        fn.max_dynamic_shared_size_bytes = smem
        _opted_in[id(fn)] = smem
    return fn
