"""Measuring: a timer that knows GPU streams, kept apart from the record and from rendering.

``measure(fn, clock)`` calls ``fn`` untimed ``warmup`` times (compilation, cuDNN autotuning, graph
capture and allocator growth happen there), picks how many calls one sample holds so that a sample lasts
at least ``min_sample_ms`` (launch-bound calls of a few microseconds are then not dominated by the
timer's own cost), and takes samples until ``budget_s`` is spent (at least ``min_repeats``, at most
``max_repeats``). A sample is the mean time per call over its calls. The result is the list of samples;
median, IQR and min are computed from it.

Clocks:
- ``"cpu"``: ``time.perf_counter`` around the calls.
- ``"cupy"`` / ``"torch"``: CUDA events of that library. Every sample is bracketed as
  ``synchronize device; record start; calls; synchronize device; record end; wait for end``. The device
  synchronize before ``end`` makes the sample include work that ``fn`` queued on *any* stream (our CUDA
  graphs replay on their own non-blocking stream, which an event on the default stream would not wait
  for); its host cost (~10 us) is paid once per sample, which holds many calls when calls are short.
- ``"jax"``: JAX dispatches asynchronously and its work runs on XLA's own streams, so a sample is
  ``wait for everything earlier; perf_counter; calls; wait until every output of those calls is ready
  (jax.block_until_ready); perf_counter``, on the CPU and the GPU alike (the outputs of one call are
  ready when its whole compiled computation has run).
- ``cold_l2``: before every sample a buffer larger than the L2 cache is overwritten (untimed), and each
  sample holds one call, so every call starts with a cold L2.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

CLOCKS = ("cpu", "cupy", "torch", "jax")


@dataclasses.dataclass
class Measurement:
    """Samples of one row, in milliseconds per call."""

    samples_ms: list[float]
    inner_loops: int = 1

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        s = sorted(self.samples_ms)
        if len(s) < 2:
            return 0.0
        q = statistics.quantiles(s, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def repeats(self) -> int:
        return len(self.samples_ms)

    def noisy(self, threshold: float) -> bool:
        """True when IQR / median exceeds ``threshold`` (e.g. 0.1 = 10%): the spread is too wide to trust."""
        med = self.median_ms
        return med > 0 and self.iqr_ms / med > threshold


class _Clock:
    """Starts and stops one sample; ``sync`` waits for all queued device work."""

    def sync(self) -> None:
        pass

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1e3

    def flush_l2(self) -> None:
        pass

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        """The call to time (a clock that must see the calls' outputs keeps them)."""
        return fn


class _CupyClock(_Clock):
    def __init__(self, flush_bytes: int):
        import cupy

        self.cp = cupy
        self.ev0 = cupy.cuda.Event()
        self.ev1 = cupy.cuda.Event()
        self._flush = None
        self._flush_bytes = flush_bytes

    def sync(self) -> None:
        self.cp.cuda.runtime.deviceSynchronize()

    def start(self) -> None:
        self.sync()
        self.ev0.record()

    def stop_ms(self) -> float:
        self.sync()                 # everything fn queued, on any stream, has finished
        self.ev1.record()
        self.ev1.synchronize()
        return self.cp.cuda.get_elapsed_time(self.ev0, self.ev1)

    def flush_l2(self) -> None:
        if self._flush is None:
            self._flush = self.cp.empty(self._flush_bytes // 4, dtype=self.cp.float32)
        self._flush.fill(1.0)
        self.sync()


class _TorchClock(_Clock):
    def __init__(self, flush_bytes: int):
        import torch

        self.torch = torch
        self.ev0 = torch.cuda.Event(enable_timing=True)
        self.ev1 = torch.cuda.Event(enable_timing=True)
        self._flush = None
        self._flush_bytes = flush_bytes

    def sync(self) -> None:
        self.torch.cuda.synchronize()   # waits for every stream of the current device

    def start(self) -> None:
        self.sync()
        self.ev0.record()

    def stop_ms(self) -> float:
        self.sync()
        self.ev1.record()
        self.ev1.synchronize()
        return self.ev0.elapsed_time(self.ev1)

    def flush_l2(self) -> None:
        if self._flush is None:
            self._flush = self.torch.empty(self._flush_bytes // 4, dtype=self.torch.float32, device="cuda")
        self._flush.fill_(1.0)
        self.sync()


class _JaxClock(_Clock):
    """Host clock around JAX's asynchronous calls: a sample ends when every output of its calls is ready."""

    def __init__(self, flush_bytes: int):
        import jax

        self.jax = jax
        self.pending: list = []
        self._flush_bytes = flush_bytes
        self._flush = None

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        def call():
            out = fn()
            self.pending.append(out)
            return out
        return call

    def sync(self) -> None:
        if self.pending:
            self.jax.block_until_ready(self.pending)
            self.pending.clear()

    def start(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def stop_ms(self) -> float:
        self.sync()
        return (time.perf_counter() - self._t0) * 1e3

    def flush_l2(self) -> None:
        # NOTE: the L2 is the card's, whichever library writes: CuPy overwrites the buffer (GPU runs have it)
        try:
            import cupy
        except ImportError:
            return
        if self._flush is None:
            self._flush = cupy.empty(self._flush_bytes // 4, dtype=cupy.float32)
        self._flush.fill(1.0)
        cupy.cuda.runtime.deviceSynchronize()


def make_clock(clock: str, flush_bytes: int = 256 << 20) -> _Clock:
    if clock == "cpu":
        return _Clock()
    if clock == "cupy":
        return _CupyClock(flush_bytes)
    if clock == "torch":
        return _TorchClock(flush_bytes)
    if clock == "jax":
        return _JaxClock(flush_bytes)
    raise ValueError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")


def measure(fn: Callable[[], object], clock: str = "cpu", *, warmup: int = 2, budget_s: float = 0.5,
            min_repeats: int = 5, max_repeats: int = 200, min_sample_ms: float = 1.0,
            cold_l2: bool = False, flush_bytes: int = 256 << 20, max_inner: int = 1000,
            on_sample: Callable[[], object] | None = None) -> Measurement:
    """Time ``fn()``; returns per-call sample times (ms).

    ``on_sample`` (reading the GPU's clocks, say) is called after each sample, outside the timed region.

    >>> m = measure(lambda: sum(range(1000)), budget_s=0.01)
    >>> m.repeats >= 5
    True
    """
    c = make_clock(clock, flush_bytes)
    fn = c.wrap(fn)
    for _ in range(max(1, warmup)):
        fn()
    c.sync()
    # calibrate: calls per sample so that a sample lasts >= min_sample_ms
    c.start()
    fn()
    first = max(c.stop_ms(), 1e-6)
    inner = 1 if cold_l2 else int(min(max_inner, max(1, -(-min_sample_ms // first))))
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_repeats and (len(samples) < min_repeats or time.perf_counter() < deadline):
        if cold_l2:
            c.flush_l2()
        c.start()
        for _ in range(inner):
            fn()
        samples.append(c.stop_ms() / inner)
        if on_sample is not None:
            on_sample()
    return Measurement(samples_ms=samples, inner_loops=inner)
