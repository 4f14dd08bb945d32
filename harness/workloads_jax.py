"""The ``jax-jit`` rows: the reference in JAX/XLA, each phase one ahead-of-time compiled function.

Models go through the model contract (``reference_impl.build(spec, device, framework="jax")`` and its
``compiled(phase)``); layers are the same layer functions the JAX model uses
(``reference_impl.jax_model``: ``dense``, ``conv2d``, ``maxpool2d``, ``avgpool2d``), with the backward
phases as JAX computes them in a training step: the vector-Jacobian product with respect to the input
(``backward_data``: dx) or the parameters (``backward_weights``: dW, db). Each layer phase is one jitted
function, compiled before the timing.

Compile time (tracing, lowering and XLA's compilation, including its autotuning on the GPU) is never
timed; it is written into the row's ``reason`` (``jit compile 1.23 s, not timed``). Peak memory on the
GPU is XLA's memory analysis of the compiled function: arguments + outputs + temporaries - donated
buffers (XLA's allocator keeps a single process-wide peak, which cannot be reset per row).
"""
from __future__ import annotations

import time
from typing import Callable


class JaxUnavailable(Exception):
    """JAX cannot run here (not installed, or no GPU for it); the message names the fix."""


def check_available(device: str, precision: str = "fp32") -> None:
    """Raise JaxUnavailable with the reason (and the install command) unless JAX can run on ``device``
    at ``precision`` (JAX rows are strict FP32 only: ``lax.Precision.HIGHEST``)."""
    if precision != "fp32":
        raise JaxUnavailable(f"jax-jit computes in strict FP32 only (lax.Precision.HIGHEST), not {precision!r}; "
                             "the tf32 / bf16 references are the PyTorch variants")
    import reference_impl

    why = reference_impl.jax_unavailable(device)
    if why is not None:
        raise JaxUnavailable(why)


def build_model(spec, device: str, seed: int, precision: str = "fp32"):
    """The JAX reference model (raises JaxUnavailable without JAX, or at a precision other than fp32)."""
    check_available(device, precision)
    import reference_impl

    return reference_impl.build(spec, device=device, seed=seed, framework="jax")


def compile_note(seconds: float | None) -> str:
    return "" if seconds is None else f"jit compile {seconds:.3g} s, not timed"


def model_note(model, phase: str, batch: int) -> str:
    """The row's note: how long the compiled phase took to compile."""
    return compile_note(model.compile_seconds(phase, batch))


def model_peak(model, phase: str, batch: int, device: str) -> int | None:
    return model.memory_bytes(phase, batch) if device == "gpu" else None


def _memory(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:   # NOTE: not every backend reports it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def layer_fn(job, data: dict) -> tuple[Callable[[], tuple], str, Callable[[], int | None]]:
    """``(fn, note, peak)`` of one layer phase: fn runs the compiled phase on device-resident inputs and
    returns its outputs (the order of the PyTorch rows: (y,), (dx,), (dW, db)); note names the compile
    time; peak the GPU bytes (None on the CPU)."""
    check_available(job.device, job.precision)
    import jax

    from reference_impl import jax_model as jm

    dev = jm.device_of(job.device)
    d = {k: jax.device_put(v, dev) for k, v in data.items()}
    p = job.p()
    ph = job.phase
    if job.kind == "dense":
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        if ph == "forward":
            f, args = (lambda x, W, b: (jm.dense(x, W, b),)), (x, W, b)
        elif ph == "backward_data":
            f, args = (lambda dy, x, W: jax.vjp(lambda x_: jm.dense(x_, W), x)[1](dy)), (dy, x, W)
        else:
            f, args = (lambda dy, x, W, b: jax.vjp(lambda W_, b_: jm.dense(x, W_, b_), W, b)[1](dy)), (dy, x, W, b)
    elif job.kind == "conv2d":
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        st, pad = p["stride"], p["padding"]
        if ph == "forward":
            f, args = (lambda x, W, b: (jm.conv2d(x, W, b, st, pad),)), (x, W, b)
        elif ph == "backward_data":
            f, args = (lambda dy, x, W: jax.vjp(lambda x_: jm.conv2d(x_, W, None, st, pad), x)[1](dy)), (dy, x, W)
        else:
            f = lambda dy, x, W, b: jax.vjp(lambda W_, b_: jm.conv2d(x, W_, b_, st, pad), W, b)[1](dy)  # noqa: E731
            args = (dy, x, W, b)
    else:
        x, dy = d["x"], d["dy"]
        ks, st = (p["R"], p["S"]), (p["stride"],) * 2
        pool = jm.maxpool2d if p["mode"] == "max" else jm.avgpool2d
        if ph == "forward":
            f, args = (lambda x: (pool(x, ks, st),)), (x,)
        else:
            f, args = (lambda dy, x: jax.vjp(lambda x_: pool(x_, ks, st), x)[1](dy)), (dy, x)
    start = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    seconds = time.perf_counter() - start
    peak = _memory(compiled) if job.device == "gpu" else None
    return (lambda: tuple(compiled(*args))), compile_note(seconds), (lambda: peak)
