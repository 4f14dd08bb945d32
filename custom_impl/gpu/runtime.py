"""The one GPU runtime: compiling our kernels, shared device buffers, the launch-cost model, the autotuner.

Every GPU module of ``custom_impl`` gets its kernels, workspaces and tuned choices here:

- Compiling. ``kernels/<family>.cu`` is compiled with ``cupy.RawModule`` the first time a family (with a
  set of ``#define``s) is asked for on a device, and memoised; ``kernel(family, name, defines, smem)`` is
  the one way to get a compiled kernel (it also opts the kernel into more than 48 KB of dynamic shared
  memory). A module with a prebuilt cubin for the device in the package (``kernels/prebuilt/<arch>/``,
  named by a digest of its source, the headers it includes, options and defines) is loaded from it instead of compiled.
  ``precompile()`` compiles every other module the default path can choose, in parallel processes, into
  CuPy's on-disk cache; ``kernel_modules()`` lists them.
- Device buffers. ``workspace(n)`` (float32) and ``counters(n)`` (int32 zeros) are grow-only per-device
  buffers shared by every op (split-K partials, transformed operands, arrival counters). Ops on one stream
  are ordered, so sharing them is safe; a buffer handed out is never freed, so CUDA graphs that captured
  it stay valid.
- Launch cost. An op called eagerly from Python costs ~20 us of host time for its first launch
  (``EAGER_LAUNCH_S``: the wrapper and one CuPy launch) and ~10 us for each further one
  (``EAGER_EXTRA_LAUNCH_S``: one more CuPy launch); a launch inside a replayed CUDA graph ~1 us
  (``GRAPH_LAUNCH_S``). Plans that trade a second launch for GPU time (split-K) read ``launch_cost()`` and
  weigh a call of n launches at ``launch_floor(n)``; ``launch_cost_regime(s)`` sets it for a ``with`` block.
- Autotuning. ``autotune(key, candidates, default)`` times the candidates of a key once (per device and
  launch cost) with ``time_calls`` and caches the fastest.
- Typed launches. ``check_array``, ``blocks``, ``pair``, ``i32``, ``i32_memo``, ``NULL``, ``ptr``,
  ``vec_ok``: the checks and casts every launch wrapper makes.

Importing this module needs no CuPy: CuPy is imported inside the functions that use it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import time

import numpy as np

KERNEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
# NOTE: no fast-math: parity with cuDNN in strict FP32 is the point of the project.
NVRTC_OPTIONS = ("-std=c++17",)
PREBUILT_DIR = os.path.join(KERNEL_DIR, "prebuilt")  # cubins shipped in the package, per architecture
STATIC_SMEM_BYTES = 48 * 1024  # dynamic shared memory a launch may use without the per-function opt-in
# Families that use instructions of one architecture only (wgmma: sm_90a) and are built for that
# architecture-specific target ("sm_90" -> "sm_90a"); they run on devices of exactly that compute capability
ARCH_SPECIFIC = frozenset({"gemm_wgmma"})


# ---------------------------------------------------------------------------------------------- compiling
def kernel_path(family: str) -> str:
    """The source file of a kernel family: ``custom_impl/kernels/<family>.cu``."""
    return os.path.join(KERNEL_DIR, f"{family}.cu")


@functools.lru_cache(maxsize=1)
def headers_digest() -> str:
    """A digest of every ``kernels/*.cuh`` header (16 hex digits).

    CuPy's on-disk cache keys on a module's source and options only; the digest goes in as the define
    KERNEL_HEADERS_DIGEST, so editing a header recompiles the modules that include it.
    """
    import hashlib

    digest = hashlib.sha1()
    for name in sorted(os.listdir(KERNEL_DIR)):
        if name.endswith(".cuh"):
            with open(os.path.join(KERNEL_DIR, name), "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def define_key(defines) -> tuple:
    """``defines`` (a dict, or None) as a sorted tuple of (name, str(value)) pairs: one key per module."""
    if not defines:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in defines.items()))


def included_headers(family: str) -> list:
    """The ``kernels/*.cuh`` headers that ``kernels/<family>.cu`` includes with ``#include "..."``, directly
    or through other headers, sorted by name."""
    import re

    pattern = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
    found, todo = set(), [kernel_path(family)]
    while todo:
        with open(todo.pop(), "r", encoding="utf-8") as fh:
            names = pattern.findall(fh.read())
        for name in names:
            path = os.path.join(KERNEL_DIR, name)
            if name not in found and os.path.isfile(path):
                found.add(name)
                todo.append(path)
    return sorted(found)


def module_digest(family: str, defines: tuple) -> str:
    """What a compiled module depends on, as 16 hex digits: the family's source, the headers it includes,
    the compile options and the ``#define``s (``defines`` as from ``define_key``). Names a prebuilt cubin;
    a header that a module does not include does not change its digest."""
    import hashlib

    digest = hashlib.sha1()
    with open(kernel_path(family), "rb") as fh:
        digest.update(fh.read())
    for name in included_headers(family):
        with open(os.path.join(KERNEL_DIR, name), "rb") as fh:
            digest.update(name.encode() + b"\0" + fh.read())
    digest.update(repr((NVRTC_OPTIONS, defines)).encode())
    return digest.hexdigest()[:16]


def prebuilt_path(family: str, defines: tuple, arch: str) -> str:
    """Where the package keeps the prebuilt cubin of a module for ``arch`` ("sm_90"):
    ``kernels/prebuilt/<arch>/<family>-<module_digest>.cubin.xz``. A source edit changes the digest, so a
    stale cubin is never loaded; it is simply not found."""
    return os.path.join(PREBUILT_DIR, arch, f"{family}-{module_digest(family, defines)}.cubin.xz")


def prebuilt_enabled() -> bool:
    """False when the environment sets ``CUSTOM_IMPL_PREBUILT=0`` (always compile from source)."""
    return os.environ.get("CUSTOM_IMPL_PREBUILT", "1").strip().lower() not in ("0", "false", "no", "off")


def _device_arch(device_id: int) -> str:
    import cupy

    return "sm_" + str(cupy.cuda.Device(device_id).compute_capability)


def _unpacked_cubin(packed: str) -> str:
    """The cubin of ``packed`` (.cubin.xz) unpacked once into a per-user cache folder; returns its path.

    Written to a temporary name and renamed, so concurrent processes never load a half-written file.
    """
    import lzma

    target = os.path.join(_cubin_cache(), os.path.basename(packed)[: -len(".xz")])
    if not os.path.exists(target):
        with open(packed, "rb") as fh:
            _write_atomic(target, lzma.decompress(fh.read()))
    return target


def _cubin_cache() -> str:
    """The per-user folder of unpacked and compiled cubins (``CUSTOM_IMPL_CUBIN_CACHE`` to move it)."""
    import tempfile

    cache = os.environ.get("CUSTOM_IMPL_CUBIN_CACHE") or os.path.join(
        tempfile.gettempdir(), f"custom-impl-cubin-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(cache, exist_ok=True)
    return cache


def _write_atomic(target: str, data: bytes) -> None:
    """``data`` to ``target`` through a temporary name and a rename, so concurrent processes never load
    a half-written file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, target)


def _prebuilt_module(family: str, device_id: int, defines: tuple):
    """The module loaded from the package's prebuilt cubin for this device, or None when there is none
    (another architecture, an edited source, ``CUSTOM_IMPL_PREBUILT=0``) or it does not load (a driver
    older than the toolkit that built it): then the caller compiles from source."""
    import cupy

    if not prebuilt_enabled():
        return None
    path = prebuilt_path(family, defines, _device_arch(device_id))
    if not os.path.exists(path):
        return None
    try:
        mod = cupy.RawModule(path=_unpacked_cubin(path))
        mod.compile()  # NOTE: for a path module this loads the cubin, so a load failure shows here
    except Exception:  # any failure to unpack or load: compiling from source is always correct
        return None
    return mod


def _source_options(defines: tuple) -> tuple:
    # NOTE: kernels may `#include "x.cuh"` from KERNEL_DIR; see headers_digest for why it is a define.
    options = NVRTC_OPTIONS + (f"-I{KERNEL_DIR}", f"-DKERNEL_HEADERS_DIGEST={headers_digest()}")
    return options + tuple(f"-D{k}={v}" for k, v in defines)


def _source_module(family: str, device_id: int, defines: tuple):
    import cupy

    with open(kernel_path(family), "r", encoding="utf-8") as fh:
        code = fh.read()
    if family in ARCH_SPECIFIC:
        return _arch_specific_module(family, code, _device_arch(device_id) + "a", defines)
    return cupy.RawModule(code=code, options=_source_options(defines))


def _arch_specific_module(family: str, code: str, arch: str, defines: tuple):
    """The module compiled by NVRTC straight to a cubin for ``arch`` ("sm_90a"), which CuPy's own compile
    (``-arch=sm_90``) would reject for wgmma; kept in the cubin cache folder under its digest."""
    import cupy
    from cupy_backends.cuda.libs import nvrtc

    target = os.path.join(_cubin_cache(), f"{family}-{arch}-{module_digest(family, defines)}.cubin")
    if not os.path.exists(target):
        prog = nvrtc.createProgram(code, f"{family}.cu", [], [])
        try:
            try:
                nvrtc.compileProgram(prog, _source_options(defines) + (f"-arch={arch}",))
            except nvrtc.NVRTCError as e:
                raise RuntimeError(f"compiling {family}.cu for {arch} failed:\n{nvrtc.getProgramLog(prog)}") from e
            cubin = nvrtc.getCUBIN(prog)
        finally:
            nvrtc.destroyProgram(prog)
        _write_atomic(target, cubin)
    return cupy.RawModule(path=target)


@functools.lru_cache(maxsize=None)
def _module(family: str, device_id: int, defines: tuple):
    mod = _prebuilt_module(family, device_id, defines)
    return mod if mod is not None else _source_module(family, device_id, defines)


def arch_supported(family: str) -> bool:
    """Whether the current device can run ``family``: any device for a portable family, compute capability
    9.0 exactly (H100, H200) for the sm_90a families of ARCH_SPECIFIC."""
    if family not in ARCH_SPECIFIC:
        return True
    try:
        import cupy

        return _compute_capability(cupy.cuda.Device().id) == "90"
    except Exception:  # no CuPy or no device: nothing of ours runs here, planning code may still ask
        return False


@functools.lru_cache(maxsize=None)
def _compute_capability(device_id: int) -> str:
    import cupy

    return cupy.cuda.Device(device_id).compute_capability


def nvcc_command(family: str, defines: tuple, arch: str, output: str) -> list:
    """The nvcc command line that builds a module's cubin for ``arch`` with the options NVRTC gets (the
    architecture-specific target, ``sm_90a``, for the families of ARCH_SPECIFIC)."""
    target = f"-gencode=arch=compute_{arch[3:]}a,code={arch}a" if family in ARCH_SPECIFIC else f"-arch={arch}"
    cmd = ["nvcc", "-cubin", target, *NVRTC_OPTIONS, f"-I{KERNEL_DIR}",
           f"-DKERNEL_HEADERS_DIGEST={headers_digest()}"]
    cmd += [f"-D{k}={v}" for k, v in defines]
    return cmd + ["-o", output, kernel_path(family)]


def module(family: str, **defines):
    """The compiled ``cupy.RawModule`` of ``kernels/<family>.cu`` with these ``#define``s, for the current
    device (memoised per family, defines and device).

    >>> module("gemm", GEMM_BM=128, GEMM_BN=128, GEMM_BK=8, GEMM_TM=8, GEMM_TN=8)   # doctest: +SKIP
    """
    import cupy

    return _module(family, cupy.cuda.Device().id, define_key(defines))


_kernels: dict = {}    # (family, name, define key, device) -> compiled kernel
_opted_in: dict = {}   # same key -> the dynamic shared memory the kernel is opted into (bytes)


def kernel(family: str, name: str, defines=None, smem: int = 0):
    """The compiled kernel ``name`` of ``kernels/<family>.cu`` built with ``defines`` (a dict or None), for
    the current device; memoised, so every call returns the same function object.

    ``smem``: the dynamic shared memory (bytes) the caller launches it with; above STATIC_SMEM_BYTES the
    kernel is opted into it (the largest size asked for so far), as CUDA requires.

    >>> kernel("pool", "maxpool2d_forward_i32")((blocks(n, 256),), (256,), args)   # doctest: +SKIP
    """
    key = (family, name, define_key(defines), device_id())
    fn = _kernels.get(key)
    if fn is None:
        fn = _kernels[key] = _module(family, key[3], key[2]).get_function(name)
    if smem > STATIC_SMEM_BYTES and _opted_in.get(key, 0) < smem:
        # NOTE: a function attribute: the memoised object keeps it, so once per function and size.
        fn.max_dynamic_shared_size_bytes = int(smem)
        _opted_in[key] = int(smem)
    return fn


# Modules the default path can choose, by family: each family module registers a function returning
# [(family, defines), ...] when it is imported (see kernel_modules).
_module_lists: list = []


def register_modules(fn) -> None:
    """Register ``fn() -> [(family, defines dict), ...]``: kernel modules a family's default path may
    compile (what ``precompile`` builds ahead). Called once by each family module at import."""
    if fn not in _module_lists:
        _module_lists.append(fn)


def register_family(family: str) -> None:
    """``register_modules`` for a family compiled without defines (one module)."""
    register_modules(functools.partial(_plain_family, family))


def _plain_family(family: str) -> list:
    return [(family, {})]


def kernel_modules() -> list:
    """Every kernel module the default path can choose, at every precision (the FP32 families and the
    tensor-core ones of tf32 / bf16): [(family, defines dict), ...], without repeats.

    Loads ``custom_impl.gpu.ops`` and ``custom_impl.gpu.model`` first, so every family module has registered
    its modules.
    """
    # NOTE: loaded by name when called, not imported: the family modules import this module, and the
    # runtime must not depend on them (they plug their module lists in through register_modules).
    for name in (".ops", ".model"):   # the layer ops, and the model's own families (loss, SGD)
        importlib.import_module(__package__ + name)

    seen, out = set(), []
    for fn in _module_lists:
        for family, defines in fn():
            key = (family, define_key(defines))
            if key not in seen:
                seen.add(key)
                out.append((family, dict(defines)))
    return out


def module_label(family: str, defines: dict) -> str:
    """A short name of a module for progress lines: "gemm 256x128x16_16x8", "conv_smallc SC_S=5 SC_SW=1"."""
    d = {str(k): v for k, v in defines.items()}
    tile = ("GEMM_BM", "GEMM_BN", "GEMM_BK", "GEMM_TM", "GEMM_TN")
    parts = [family]
    if all(k in d for k in tile):
        parts.append("{}x{}x{}_{}x{}".format(*(d.pop(k) for k in tile)))
    parts += [f"{k}={v}" for k, v in sorted(d.items())]
    return " ".join(parts)


def _compile_one(job: tuple) -> tuple:
    """Compile one module (in a worker process); returns (label, seconds, error message or None)."""
    family, defines = job
    label = module_label(family, defines)
    t0 = time.perf_counter()
    try:
        module(family, **defines).compile()  # NOTE: RawModule compiles lazily; this fills CuPy's disk cache
    except Exception as err:  # reported by the parent, which raises naming the module
        return label, time.perf_counter() - t0, f"{type(err).__name__}: {err}"
    return label, time.perf_counter() - t0, None


def precompile(jobs: int | None = None, progress=None, families=None) -> list:
    """Compile every module of ``kernel_modules()`` that has no prebuilt cubin for this device into CuPy's
    on-disk kernel cache, in parallel.

    The package ships cubins for the common architectures (``kernels/prebuilt/``, built by
    ``python -m custom_impl.gpu.prebuild``); modules found there load in milliseconds and are not
    compiled. The rest would otherwise compile on first use, one after another (~10-110 s each for the
    GEMM-tiled families, one module per tile config); later processes load them from CuPy's cache. Each
    module compiles in its own worker process (spawned; ``jobs`` of them, default the CPU count capped
    at 16). ``progress(line)``, if given, is called once before ("35 kernel modules: 35 prebuilt for
    sm_90, compiling 0" or "compiling 23 kernel modules in 16 processes") and once per module done
    ("compiled 7/23 gemm 256x128x16_16x8 in 14.2 s").

    ``families`` (an iterable of family names, or None for all) limits it to those families' modules.

    Returns [(module label, seconds), ...] of the modules compiled, in completion order; raises
    RuntimeError naming the module when one fails to compile.

    >>> precompile(progress=print)                                          # doctest: +SKIP
    """
    import concurrent.futures as cf
    import multiprocessing

    import cupy

    wanted = None if families is None else set(families)
    modules = [m for m in kernel_modules() if (wanted is None or m[0] in wanted) and arch_supported(m[0])]
    arch = _device_arch(cupy.cuda.Device().id)
    have = [m for m in modules if prebuilt_enabled() and os.path.exists(prebuilt_path(m[0], define_key(m[1]), arch))]
    todo = [m for m in modules if m not in have]
    todo.sort(key=lambda job: not job[1])  # tile-config modules (the slow ones) first
    jobs = max(1, min(16, os.cpu_count() or 1) if jobs is None else int(jobs))
    jobs = min(jobs, max(1, len(todo)))
    if progress is not None:
        if have:
            progress(f"{len(modules)} kernel modules: {len(have)} prebuilt for {arch}, compiling {len(todo)}"
                     + (f" in {jobs} processes" if todo else ""))
        else:
            progress(f"compiling {len(todo)} kernel modules in {jobs} processes")
    done, failed = [], []
    if not todo:
        return done
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_compile_one, job) for job in todo]
        for fut in cf.as_completed(futures):
            label, secs, error = fut.result()
            if error is not None:
                failed.append((label, error))
                if progress is not None:
                    progress(f"FAILED {label}: {error}")
                continue
            done.append((label, secs))
            if progress is not None:
                progress(f"compiled {len(done)}/{len(todo)} {label} in {secs:.1f} s")
    if failed:
        label, error = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise RuntimeError(f"kernel module {label} failed to compile{more}: {error}")
    return done


register_family("runtime")


# ---------------------------------------------------------------------------------------------- typed launches
NULL = np.uint64(0)  # a null device pointer argument


def ptr(a) -> np.uint64:
    """The device address of array ``a`` as a kernel pointer argument (NULL for None)."""
    return NULL if a is None else np.uint64(a.data.ptr)


def vec_ok(a, ld: int) -> bool:
    """Whether rows of ``a`` with leading dimension ``ld`` can be read as float4: ld % 4 == 0 and a is
    16-byte aligned."""
    return vec_ok_at(a.data.ptr, ld)


def vec_ok_at(addr: int, ld: int) -> bool:
    """``vec_ok`` for rows starting at device address ``addr`` (a launch that passes addresses)."""
    return ld % 4 == 0 and addr % 16 == 0


FLOAT32 = np.dtype(np.float32)   # compared as a dtype: no conversion of np.float32 on every check


def check_array(a, name: str, shape=None, ndim=None):
    """Raise ValueError unless ``a`` is a C-contiguous float32 CuPy array of the given shape / ndim."""
    import cupy

    if not isinstance(a, cupy.ndarray):
        raise ValueError(f"{name}: expected a cupy.ndarray, got {type(a).__name__}")
    if a.dtype != FLOAT32:
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
    """Kernel scalar arguments as np.int32 (CuPy passes a Python int as 64-bit)."""
    return tuple(np.int32(v) for v in vals)


@functools.lru_cache(maxsize=8192)
def i32_memo(vals: tuple) -> tuple:
    """``i32(*vals)`` memoised: the scalar arguments of launches whose shapes repeat call after call (a
    dozen np.int32 conversions cost several microseconds of host time per launch)."""
    return i32(*vals)


# ---------------------------------------------------------------------------------------------- device
def device_id() -> int:
    """The current CuPy device's id: the key of the per-device kernel and plan memos (what
    ``cupy.cuda.Device().id`` gives, without making a Device object on every eager call)."""
    import cupy

    return cupy.cuda.runtime.getDevice()


def sm_count() -> int:
    """Streaming multiprocessors of the current device (132 on an H100 SXM)."""
    return _sms_of(device_id())


@functools.lru_cache(maxsize=None)
def _sms_of(device_id: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


_workspaces: dict = {}
_counter_buffers: dict = {}


def workspace(n: int):
    """A float32 device buffer of at least ``n`` elements, per device, grow-only (at least 2^20 elements).

    NOTE: a buffer once handed out is never freed (kept in the list), so CUDA graphs that captured it stay
    valid; it is shared by all calls on the device, which is safe because they are ordered on one stream.
    """
    import cupy

    bufs = _workspaces.setdefault(device_id(), [])
    if not bufs or bufs[-1].size < n:
        bufs.append(cupy.empty(max(n, 1 << 20), dtype=np.float32))
    return bufs[-1]


def counters(n: int):
    """An int32 device buffer of at least ``n`` zeros, per device, grow-only: per-tile arrival counters
    (each launch that uses them leaves them zero again). Never freed, like ``workspace``."""
    import cupy

    bufs = _counter_buffers.setdefault(device_id(), [])
    if not bufs or bufs[-1].size < n:
        bufs.append(cupy.zeros(max(n, 4096), dtype=np.int32))
    return bufs[-1]


def checked_workspace(ws, n: int, what: str, sizing: str):
    """``ws`` (a 1-D float32 CuPy array of >= n elements) or, when None, the shared ``workspace(n)``.
    ``what`` names the caller and ``sizing`` the function that gives the size, for the error."""
    if ws is None:
        return workspace(n)
    check_array(ws, f"{what}: workspace", ndim=1)
    if ws.size < n:
        raise ValueError(f"{what}: workspace has {ws.size} elements, needs {n}: size it with {sizing}")
    return ws


# ---------------------------------------------------------------------------------------------- launch cost
EAGER_LAUNCH_S = 20e-6  # an eager call's first launch: our wrapper + one launch (host time; ~17 us measured, H100)
# NOTE: each further launch of the same eager call costs only CuPy's launch itself: shared/GPU.md measured
# 8.1 us for a cupy RawKernel launch from Python on the H100 host; our launches pass 7-20 arguments, so 10.
EAGER_EXTRA_LAUNCH_S = 10e-6
GRAPH_LAUNCH_S = 1e-6   # one more kernel inside a replayed CUDA graph (shared/GPU.md: ~1.0 us)
_launch_s = EAGER_LAUNCH_S


def launch_cost() -> float:
    """The cost of a call's first kernel launch (seconds) that plans weigh in force now (module doc)."""
    return _launch_s


def launch_floor(launches: int, launch_s: float | None = None) -> float:
    """Host time (seconds) of one call of ``launches`` kernels: the first at ``launch_s`` (default: the
    launch cost in force), each further one at min(launch_s, EAGER_EXTRA_LAUNCH_S). Calls made back to
    back take max(GPU time, this). Eagerly a split-K GEMM with its reduce launch thus costs >= 30 us, not
    2 x 20; in a graph (1 us a launch) n launches cost n us.

    >>> round(launch_floor(2, EAGER_LAUNCH_S) * 1e6), round(launch_floor(3, GRAPH_LAUNCH_S) * 1e6)
    (30, 3)
    """
    launch_s = _launch_s if launch_s is None else launch_s
    return launch_s + (max(1, launches) - 1) * min(launch_s, EAGER_EXTRA_LAUNCH_S)


def set_launch_cost(seconds: float) -> None:
    """Set the launch cost plans assume: EAGER_LAUNCH_S (the default) for eager calls from Python,
    GRAPH_LAUNCH_S when the calls are captured into a CUDA graph and replayed."""
    global _launch_s
    _launch_s = float(seconds)


@contextlib.contextmanager
def launch_cost_regime(seconds: float):
    """``with launch_cost_regime(GRAPH_LAUNCH_S):`` plans every GEMM / conv inside as if launches cost
    ``seconds`` (restored after). Use it around the eager warm-up *and* the capture of a CUDA graph, so
    both choose the same configs and workspaces."""
    global _launch_s
    before = _launch_s
    _launch_s = float(seconds)
    try:
        yield
    finally:
        _launch_s = before


def graph_regime() -> bool:
    """True when the launch cost in force is a replayed CUDA graph's (<= GRAPH_LAUNCH_S)."""
    return _launch_s <= GRAPH_LAUNCH_S


# ---------------------------------------------------------------------------------------------- timing
TUNE_REPS = 5          # back-to-back calls per timed batch
TUNE_SLEEP_US = 300    # the sleep kernel a batch queues behind (behind_sleep)


def time_calls(calls, reps: int = TUNE_REPS, behind_sleep: bool = True, rounds: int = 2) -> list:
    """Milliseconds of ``reps`` back-to-back runs of each call, the least of ``rounds`` rounds (the rounds
    interleave the calls, so a slow moment of the host or GPU does not single one out). ``behind_sleep``:
    each batch is queued behind a TUNE_SLEEP_US-long kernel, so the events measure GPU time only (what a
    replayed CUDA graph sees); without it they measure what eager calls cost, host launch time included
    where it exceeds the GPU's (the first launch starts on an idle stream)."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    sleep = kernel("runtime", "gpu_sleep")
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    best = [math.inf] * len(calls)
    for _ in range(rounds):
        for i, call in enumerate(calls):
            stream.synchronize()
            if behind_sleep:
                sleep((1,), (1,), (np.int32(TUNE_SLEEP_US),))
            start.record(stream)
            for _ in range(reps):
                call()
            end.record(stream)
            end.synchronize()
            best[i] = min(best[i], cupy.cuda.get_elapsed_time(start, end))
    return best


# ---------------------------------------------------------------------------------------------- autotuning
AUTOTUNE = True   # False: every autotune returns its default, untimed and uncached
_tuned: dict = {}  # (device, launch cost, key) -> chosen candidate name


def capturing() -> bool:
    """True while CuPy's current stream is capturing a CUDA graph (nothing can be timed then)."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    return bool(stream.ptr) and bool(cupy.cuda.runtime.streamIsCapturing(stream.ptr))


def autotune(key, candidates, default, *, warmups: int = 2, behind_sleep: bool | None = None, score=None):
    """The candidate chosen for ``key``: cached, else the fastest of ``candidates()``, timed now.

    ``candidates()`` returns {name: call} (names any hashable; asked only on a cache miss, so a repeated
    call pays one dict lookup). Choices are cached per device and launch cost in force (``launch_cost``).
    Each call is run ``warmups`` times, then timed with ``time_calls`` over TUNE_REPS back-to-back calls,
    the least of 2 interleaved rounds: behind a sleep kernel (GPU time, what a replayed graph sees) when
    ``behind_sleep`` (default: ``graph_regime()``), else as eager calls cost, host launch time included.
    ``score(name, milliseconds)`` ranks them (default: the time; the lowest wins; ties to the first).
    A single candidate is cached untimed. Inside a CUDA-graph capture an uncached key gets ``default``
    (nothing can be timed there; ``candidates`` is not asked), uncached; with ``AUTOTUNE = False`` every
    uncached key does.

    >>> autotune(("pool", shape), lambda: {"tiled": f, "gather": g}, "gather")   # doctest: +SKIP
    """
    full = (device_id(), _launch_s, key)
    chosen = _tuned.get(full)
    if chosen is not None:
        return chosen
    if not AUTOTUNE or capturing():
        return default
    calls = candidates()
    if len(calls) == 1:
        _tuned[full] = next(iter(calls))
        return _tuned[full]
    for call in calls.values():
        for _ in range(warmups):
            call()
    names = list(calls)
    behind = graph_regime() if behind_sleep is None else behind_sleep
    times = time_calls([calls[n] for n in names], TUNE_REPS, behind_sleep=behind)
    rank = (lambda i: times[i]) if score is None else (lambda i: score(names[i], times[i]))
    _tuned[full] = names[min(range(len(names)), key=rank)]
    return _tuned[full]


def tuned(key):
    """The cached choice of ``autotune`` for ``key`` on the current device and launch cost, or None."""
    return _tuned.get((device_id(), _launch_s, key))


def tuned_choices() -> dict:
    """A copy of the autotuner's cache: {(device, launch cost, key): chosen name}."""
    return dict(_tuned)


def clear_tuned() -> None:
    """Forget every tuned choice (the next call of each key times its candidates again), and every memo
    made from them (``tuned_memo``)."""
    _tuned.clear()
    for memo in _tuned_memos:
        memo.clear()


_tuned_memos: list = []


def tuned_memo() -> dict:
    """A new dict for what a module derives from tuned choices (e.g. the launches of a tuned plan), which
    ``clear_tuned`` empties with them."""
    memo: dict = {}
    _tuned_memos.append(memo)
    return memo
