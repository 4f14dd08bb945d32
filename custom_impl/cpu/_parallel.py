"""Split big NumPy copies of the CPU layers over a thread pool.

Why threads help here: NumPy releases the GIL inside its copy and ufunc loops (``np.copyto``, ``+=``,
``np.add(..., out=)`` on float32), so several Python threads copying disjoint slices of one array run
on several cores at once. The CPU layers' matmuls already use OpenBLAS's own threads; what stayed on one
core were the layout copies around them (im2col, padding, the y / dy reorders, col2im's adds, pooling),
which were most of a CNN train step's time.

Results stay bit-identical to a serial run: callers split only along an axis whose slices are disjoint in
the output, and every output element gets the same float operations in the same order, only in another
thread. Nothing here touches a reduction's order or a matmul.

Threads: ``CUSTOM_CPU_THREADS`` if set (a positive integer; 1 runs everything in the caller's thread),
else the cores this process may run on. Calls moving less than about 1 MB run in the caller's thread
(``MIN_CHUNK_BYTES``): below that, waking a worker costs more than the copy.

Measured (train step, median; 16-core Xeon of the GPU host, NumPy 2.5 + OpenBLAS 0.3.34, 16 BLAS threads):
lenet-mnist batch 64 55 -> 33 ms, cnn-cifar batch 256 386 -> 152 ms with 8 copy threads (16: 35, 160 ms),
but only when OpenBLAS's idle workers stop spinning soon after a matmul (``OPENBLAS_THREAD_TIMEOUT=4..12``,
read when NumPy loads). With OpenBLAS's default spin (2^28 cycles) they hold the cores our threads need:
lenet 56 -> 53 ms (4 threads; 66 ms with 16), cnn-cifar 420 -> 333 ms (8; 368 ms with 16). On a 2-core
VM (2 copy threads): with the default spin no gain (cnn-cifar 363 -> 394 ms, within a noisy spread);
with ``OPENBLAS_THREAD_TIMEOUT=4`` lenet 68 -> 61 ms, cnn-cifar 372 -> 300 ms.

>>> out = [0] * 6
>>> parallel_chunks(6, lambda a, b: out.__setitem__(slice(a, b), range(a, b)))
>>> out
[0, 1, 2, 3, 4, 5]
"""
from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

ENV_VAR = "CUSTOM_CPU_THREADS"

# NOTE: one chunk must move at least this much for a worker to pay off (a thread wake-up is ~10-50 us;
# a strided float32 copy of 512 KiB takes ~50-100 us on one core), so a call under 1 MB stays serial.
MIN_CHUNK_BYTES = 512 * 1024

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


def items_per_chunk(n: int, nbytes: int) -> int:
    """The fewest of n equal items whose share of ``nbytes`` reaches MIN_CHUNK_BYTES (at least 1)."""
    per_item = max(1, nbytes // max(1, n))
    return max(1, -(-MIN_CHUNK_BYTES // per_item))


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
