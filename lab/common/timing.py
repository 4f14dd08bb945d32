"""Timers shared by the lab scripts: eager and CUDA-graph replay time, host time per call, CPU train-step
times, the host-clock median of a CPU call.

The harness has the real timer (``harness.timer.measure``: warm-up, CUDA events, median and IQR); these
are the small variants the lab's probes need beside it.
"""
from __future__ import annotations

import statistics
import time


def host_median_s(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` by the host clock (after one untimed call): for CPU work."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def eager_time_ms(fn, reps: int = 20, rounds: int = 3, warm: int = 3) -> float:
    """ms per call of ``fn``: the least of ``rounds`` rounds of ``reps`` back-to-back eager calls, by PyTorch's
    CUDA events on the default stream (where both CuPy's and PyTorch's launches go unless told otherwise),
    after ``warm`` untimed calls."""
    import torch

    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(rounds):
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / reps)
    return best


def graph_samples_ms(fn, reps: int = 20, samples: int = 7, warm: int = 1) -> list:
    """ms per call of ``fn`` in each of ``samples`` replays of one CUDA graph holding ``reps`` calls, after
    ``warm`` untimed replays.

    ``fn`` runs once outside the capture first, so anything compiled, tuned or allocated lazily happens
    there. What is left of the host is the graph's ~1 us per kernel.
    """
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        fn()
        stream.synchronize()
        stream.begin_capture()
        try:
            for _ in range(reps):
                fn()
        finally:
            graph = stream.end_capture()
        for _ in range(warm):
            graph.launch(stream)
        stream.synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        times = []
        for _ in range(samples):
            start.record(stream)
            graph.launch(stream)
            end.record(stream)
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) / reps)
    return times


def graph_time_ms(fn, reps: int = 20, samples: int = 7) -> float:
    """Median ms per call of ``fn`` captured ``reps`` times in one CUDA graph and replayed ``samples`` times
    (``graph_samples_ms``)."""
    return statistics.median(graph_samples_ms(fn, reps, samples))


def torch_graph_samples_ms(fn, reps: int = 20, samples: int = 7, warm: int = 1) -> list:
    """``graph_samples_ms`` for PyTorch work: ms per call of ``fn`` in each of ``samples`` replays of one
    torch.cuda.CUDAGraph holding ``reps`` calls, after 3 calls on a side stream (cuDNN's benchmark search,
    allocations) outside the capture and ``warm`` untimed replays."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    for _ in range(warm):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return times


def torch_graph_time_ms(fn, reps: int = 20, samples: int = 7) -> float:
    """Median ms per call of PyTorch work ``fn`` (``torch_graph_samples_ms``)."""
    return statistics.median(torch_graph_samples_ms(fn, reps, samples))


def host_us(fn, sync, reps: int = 20, samples: int = 60) -> float:
    """Median host time per call (us) of ``fn`` over ``samples`` samples of ``reps`` back-to-back calls.

    ``sync`` (e.g. ``cupy.cuda.runtime.deviceSynchronize``) runs between samples, outside the timing, so
    queued GPU work never blocks the host inside a sample as long as ``reps`` is small.
    """
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps * 1e6)
        sync()
    return statistics.median(times)


def step_times(model, x, y, steps: int, warmup: int = 3, lr: float = 0.01, momentum: float = 0.9) -> list:
    """Seconds of each of ``steps`` train steps of a CPU model after ``warmup`` untimed ones."""
    for _ in range(warmup):
        model.train_step(x, y, lr, momentum)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_step(x, y, lr, momentum)
        times.append(time.perf_counter() - t)
    return times
