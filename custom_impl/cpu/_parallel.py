"""Split big NumPy copies and elementwise passes of the CPU layers over a thread pool.

Why threads help here: NumPy releases the GIL inside its copy and ufunc loops (``np.copyto``, ``+=``,
``np.add(..., out=)`` on float32), so several Python threads working on disjoint slices of one array run
on several cores at once. The CPU layers' matmuls already use OpenBLAS's own threads; what stayed on one
core were the layout copies around them (im2col with its padding, col2im's adds), pooling and the SGD
update, which were most of a CNN train step's time.

Results stay bit-identical to a serial run: callers split only along an axis whose slices are disjoint in
the output, and every output element gets the same float operations in the same order, only in another
thread. Nothing here touches a reduction's order or a matmul.

Threads: ``CUSTOM_CPU_THREADS`` if set (a positive integer; 1 runs everything in the caller's thread),
else the cores this process may run on. How many of them one call wakes depends on its size
(``items_per_chunk``): waking a sleeping worker costs the caller ~25 us on a virtual machine (measured
on the 2-core VM: a lock release 25 us, the worker running 75 us later), about what one thread copies
in that time (``MIN_CHUNK_BYTES``). A copy of B bytes split t ways costs ~ B / t + (t - 1) MIN_CHUNK_BYTES
(in copy time), least at t = sqrt(B / MIN_CHUNK_BYTES): 2 MB -> 4 threads, 8 MB -> 8, 32 MB and more -> 16;
under 1.5 MiB one thread (``SERIAL_BELOW``). On the GPU host's 16-core Xeon VM a call split into trivial
chunks took 18 us on 1 thread, 270 us on 2-4, 235 us on 8, 580 us on 16 (after a 2 ms idle gap), and a
64 MB copy 10.6 ms on 1 thread, 3.1 ms on 4, 1.9 ms on 8, 1.6 ms on 16.

Measured earlier (train step, median; that Xeon, NumPy 2.5 + OpenBLAS, 16 BLAS threads, before the
layers kept their buffers and fused ReLU into pooling): lenet-mnist batch 64 55 -> 33 ms, cnn-cifar batch
256 386 -> 152 ms with 8 copy threads (16: 35, 160 ms), but only when OpenBLAS's idle workers stop
spinning soon after a matmul (``OPENBLAS_THREAD_TIMEOUT=4..12``, read when NumPy loads). With OpenBLAS's
default spin (2^28 cycles) they hold the cores our threads need: lenet 56 -> 53 ms (4 threads; 66 ms with
16), cnn-cifar 420 -> 333 ms (8; 368 ms with 16). Measured again with these layers (and a per-GEMM BLAS
thread count since dropped), the default spin still costs 1.5-2x on the CNN steps (lenet-mnist batch
256 87 -> 179 ms, cnn-cifar 109 -> 193 ms).

>>> out = [0] * 6
>>> parallel_chunks(6, lambda a, b: out.__setitem__(slice(a, b), range(a, b)))
>>> out
[0, 1, 2, 3, 4, 5]
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import threading

import numpy as np

ENV_VAR = "CUSTOM_CPU_THREADS"

# NOTE: about what one core copies (strided float32, ~4-5 GB/s) while one sleeping worker wakes (~25 us on
# a VM); see the module docstring for how the number of chunks follows from it.
MIN_CHUNK_BYTES = 128 * 1024
# NOTE: besides each wake-up's cost to the caller, a split call waits ~150 us more (measured on the 2-core
# VM: a region of two trivial chunks after an idle gap took 132 us, one thread 18 us): the worker's start
# and the caller noticing its end. Under 12 units (1.5 MiB, ~300-400 us of copying) that eats the gain.
SERIAL_BELOW = 12

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_in_worker = threading.local()


def threads() -> int:
    """How many threads the CPU layers use: ``CUSTOM_CPU_THREADS`` if set, else the usable cores."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:    # not on Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_VAR}={raw!r}: expected a positive integer (the number of CPU threads, 1 for "
                         f"serial); set it to e.g. {ENV_VAR}=4 or unset it to use every core")
    return n


def _executor(n: int) -> concurrent.futures.ThreadPoolExecutor:
    """The module's pool, created on first use and re-created when the thread count changes."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="custom-cpu",
                                                          initializer=_mark_worker)
            _pool_size = n
        return _pool


def _mark_worker():
    _in_worker.active = True


def chunk_count(nbytes: int) -> int:
    """How many threads a call moving ``nbytes`` should use: floor(sqrt(nbytes / MIN_CHUNK_BYTES)), but 1
    below 12 * MIN_CHUNK_BYTES (1.5 MiB), where one thread alone is about as fast (module docstring).

    >>> chunk_count(100), chunk_count(2**20), chunk_count(2 * 2**20), chunk_count(8 * 2**20)
    (1, 1, 4, 8)
    """
    units = max(0, int(nbytes)) // MIN_CHUNK_BYTES
    return 1 if units < SERIAL_BELOW else math.isqrt(units)


def items_per_chunk(n: int, nbytes: int) -> int:
    """Items per chunk when n equal items move ``nbytes`` in all: n split into ``chunk_count(nbytes)`` chunks."""
    return max(1, -(-n // chunk_count(nbytes)))


def parallel_chunks(n: int, fn, min_items_per_chunk: int = 1) -> None:
    """Run ``fn(start, stop)`` over contiguous chunks covering range(n), on up to ``threads()`` threads.

    Chunks are about equal and hold at least ``min_items_per_chunk`` items; with one chunk (one thread,
    little work, or a call from inside a worker) ``fn(0, n)`` runs in the caller's thread. The caller's
    thread runs the first chunk itself. Every chunk finishes before this returns; then the first
    exception raised by any chunk (in chunk order) is raised again here.
    """
    if n <= 0:
        return
    t = min(threads(), n // max(1, min_items_per_chunk))
    if t <= 1 or getattr(_in_worker, "active", False):   # NOTE: a worker waiting on the pool could deadlock
        fn(0, n)
        return
    bounds = [n * i // t for i in range(t + 1)]
    pool = _executor(threads())
    futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, t)]
    errors = []
    try:
        fn(bounds[0], bounds[1])
    except BaseException as e:    # still wait for the workers: they write into the caller's arrays
        errors.append(e)
    for f in futures:
        e = f.exception()
        if e is not None:
            errors.append(e)
    if errors:
        raise errors[0]


def parallel_copyto(dst: np.ndarray, src: np.ndarray, axis: int = 0) -> None:
    """``np.copyto(dst, src)`` split along ``axis``; ``src`` has ``dst``'s shape (any strides).

    >>> a = np.arange(12.0).reshape(3, 4); b = np.empty((4, 3))
    >>> parallel_copyto(b, a.T, axis=1)
    >>> bool((b == a.T).all())
    True
    """
    lead = (slice(None),) * axis

    def part(start, stop):
        ix = lead + (slice(start, stop),)
        np.copyto(dst[ix], src[ix])

    n = dst.shape[axis]
    parallel_chunks(n, part, items_per_chunk(n, dst.nbytes))
