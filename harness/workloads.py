"""Workloads: build the inputs of a row, the callable to time, and the parity check before timing.

Two families:
- models (``kind = "model"``): a zoo model built through the contract (``custom_impl.build`` /
  ``reference_impl.build``) and one of three phases: ``inference`` (forward), ``forward_backward``
  (forward, loss, backward; gradients stay on the device) and ``train_step`` (plus SGD with momentum).
- layers (``kind = "dense" | "conv2d" | "pool"``): one layer shape and one phase: ``forward``,
  ``backward_data`` (dx only) or ``backward_weights`` (dW and db only), timed through our layer ops
  (``custom_impl.layer_ops(device)``: one signature per op on both devices) and PyTorch's
  (``torch.nn.functional`` and the ``aten`` backward ops that cuDNN/cuBLAS serve on the GPU).

The ``jax-jit`` rows (the reference in JAX/XLA, models and layers) are built in ``harness/workloads_jax.py``.

Only the public contract of ``custom_impl`` and ``reference_impl`` is used: ``build``, ``layer_ops``, and the
models' ``device_batch``, ``forward``, ``forward_backward``, ``gradients``, ``train_step`` (reference:
``train_step_graphed``, ``compiled``).

Parity (before a row is timed): every row's outputs, ours and PyTorch's alike, are compared with the
reference computation run in float64 (the oracle: PyTorch's op, or a float64 copy of the reference
network, ``reference_impl.build(..., dtype="float64")``) on the same device, same input and same parameters; both implementations are judged by the same
truth, so an inaccurate cuDNN algorithm cannot make a correct kernel of ours look wrong. The error is normwise:
``max|a - b| / max|b|`` over every output of the phase (for train_step: over the parameter updates).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable

import numpy as np

import modelspec

from .labels import pair_text
from .parity import precision_tolerance
from .roofline import layer_for
from .suites import Job

# Tolerances (normwise relative error of a float32 result against the float64 oracle):
# - layers: a float32 reduction over K terms is off by ~sqrt(K) * 6e-8 (K <= ~25000 in our suites:
#   ~1e-5); 1e-4 leaves a margin and still catches any indexing bug (errors of order 1).
# - models: errors compound through up to ~10 layers, and a ReLU/max-pool tie broken differently moves
#   a whole gradient entry; 1e-3 keeps true mismatches (order 1) far above the bar.
# - cuDNN weight gradients on the GPU: with cudnn.benchmark on, cuDNN may pick an FFT/Winograd-style
#   weight-gradient algorithm that is much less accurate: measured on the H100 against float64, 1.1e-3
#   and 1.4e-3 of the scale (lenet-mnist, N=33; tests/test_gpu_model.py). Conv weight gradients on the
#   GPU, and the gradients / train steps of GPU models with a conv2d, therefore get 3e-3 (2x that).
# - model gradients and train-step updates are compared normwise (||a - b|| / ||b|| per output, the
#   METHOD.md metric) rather than by the largest entry: in a float32 ReLU network at a large batch a
#   handful of pre-activations sit within rounding of zero, float32 and float64 put them on different
#   sides of the kink, and each such sample moves whole gradient rows. Measured: mlp-deep at N=8192,
#   our CPU and GPU code and PyTorch alike, 2e-2 of the largest entry but 1.4e-3 normwise (both float32
#   implementations agree with each other to 1e-6). MODEL_GRAD_RTOL = 3e-3 is 2x that; a real bug is
#   of order 1.
LAYER_RTOL = 1e-4
MODEL_RTOL = 1e-3
MODEL_GRAD_RTOL = 3e-3
CUDNN_WGRAD_RTOL = 3e-3


def layer_tolerance(job: Job) -> float:
    """The parity tolerance of a layer row: the FP32 one, plus the operands' rounding at tf32 / bf16
    (``parity.precision_tolerance``)."""
    if job.device == "gpu" and job.kind == "conv2d" and job.phase == "backward_weights":
        base = CUDNN_WGRAD_RTOL
    else:
        base = LAYER_RTOL
    return precision_tolerance(job.precision, base)


def precision_context(job: Job):
    """The PyTorch flags a layer row runs under: ``reference_impl.precision_scope("tf32")`` for tf32 layer
    rows (models scope themselves), nothing otherwise (bf16 layer rows run on bfloat16 tensors)."""
    if job.kind == "model" or job.precision != "tf32":
        return contextlib.nullcontext()
    import reference_impl

    return reference_impl.precision_scope("tf32")


class Unsupported(Exception):
    """This variant cannot run this row (the message says why); the row gets status 'unsupported'."""


@dataclasses.dataclass
class Prepared:
    """A row ready to time: ``fn`` is the timed call, ``clock`` the timer to use."""

    fn: Callable[[], object]
    clock: str                        # cpu | cupy | torch
    outputs: Callable[[], list]       # runs the phase once (untimed) and returns its outputs as NumPy arrays
    flops: int
    shape: str = ""
    peak_mem: Callable[[], int | None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    # after timing: False when the state the timed calls changed (a train step's parameters) holds NaN/inf
    finite: Callable[[], bool | None] = lambda: None
    note: Callable[[], str] = lambda: ""   # written to the row's reason (jax-jit: the compile time, not timed)
    algorithm: Callable[[], str] = lambda: ""   # after timing: the algorithm that ran (conv rows of ours)


def rel_err(got: list, want: list, norm: str = "max") -> float:
    """max over outputs of max|a - b| / max|b| (norm "max") or ||a - b||_2 / ||b||_2 (norm "fro"); 0/0 -> 0."""
    worst = 0.0
    if len(got) != len(want):
        return math.inf
    for a, b in zip(got, want):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return math.inf
        if not np.all(np.isfinite(a)):
            return math.inf
        measure = np.max if norm == "max" else (lambda v: np.sqrt(np.sum(v * v)))
        scale = float(measure(np.abs(b))) if b.size else 0.0
        diff = float(measure(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
    return worst


# ============================================================================ device helpers
def _torch():
    import torch

    return torch


def torch_device(device: str) -> str:
    return "cuda" if device == "gpu" else "cpu"


def set_strict_fp32() -> None:
    """TF32 off on the PyTorch side (matmul and cuDNN), as reference_impl does; cudnn.benchmark on."""
    torch = _torch()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = True


def free_device_memory(collect: bool = False) -> None:
    """Give cached device memory back (CuPy pool, PyTorch caching allocator); ``collect``: gc first, so
    models of finished rows (and the CUDA graphs they hold) are gone before the pools are emptied."""
    if collect:
        import gc

        gc.collect()
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:
        pass
    try:
        torch = _torch()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def is_oom(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    name = type(err).__name__
    return name in ("OutOfMemoryError", "CUDAOutOfMemoryError") or "out of memory" in str(err).lower()


def _cupy_peak() -> Callable[[], int | None]:
    import cupy

    pool = cupy.get_default_memory_pool()
    return lambda: int(pool.total_bytes())   # bytes the pool holds: its high-water mark since the last free


def _torch_peak_reset() -> Callable[[], int | None]:
    torch = _torch()
    torch.cuda.reset_peak_memory_stats()
    return lambda: int(torch.cuda.max_memory_allocated())


# ============================================================================ models
def _model_data(spec, batch: int, seed: int):
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=batch).astype(np.int64)
    return x, y


def _build(impl: str, spec, device: str, seed: int, **options):
    if impl == "custom":
        import custom_impl

        return custom_impl.build(spec, device=device, seed=seed, **options)
    import reference_impl

    return reference_impl.build(spec, device=device, seed=seed, **options)


def _model_outputs(model, phase: str, x, y, lr: float, momentum: float, step=None) -> list:
    """Untimed run of a phase on a fresh model; returns what parity compares (NumPy arrays).

    train_step: two steps, and the second one's loss and parameter updates are compared (a CUDA-graph
    variant runs its first step eagerly and replays from the second; momentum is live from the second).
    Between the steps the parameters are set back to their initial values (in place: captured graphs stay
    valid), so every side starts step 2 from identical parameters and velocity ~ g1. Without this, the
    float32 rounding of step 1 flips ReLU units that sit near zero and the tiny step-2 updates differ by
    percents (measured: mlp-deep at batch 1024) although both sides compute the same thing.
    """
    if phase == "inference":
        return [model.to_numpy(model.forward(x))]
    if phase == "forward_backward":
        loss, grads = model.loss_and_grads(x, y)
        return [np.float64(loss)] + [grads[k] for k in model.spec.param_shapes()]
    step = step or (lambda: model.train_step(x, y, lr, momentum))
    before = model.get_params()
    step()
    model.set_params(before)
    loss = float(model.to_numpy(step()))
    after = model.get_params()
    names = list(model.spec.param_shapes())
    return _Updates([np.float64(loss)] + [after[k] - before[k] for k in names], [before[k] for k in names])


class _Updates(list):
    """train_step parity outputs [loss, update per parameter] and the weight/update ratio of their tolerance.

    An update read back as ``after - before`` of float32 weights carries the weights' rounding, up to
    one ulp of |w| (2^-24 |w| relative to the weight), so its relative error can reach
    2^-24 max|w| / max|update| even when both sides compute the same thing; ``weight_ratio`` is the
    largest such ratio over the parameters, and the tolerance of a train_step row adds 4 ulps of it.
    """

    def __init__(self, outputs, weights):
        super().__init__(outputs)
        ratios = [float(np.max(np.abs(w))) / float(np.max(np.abs(d)))
                  for w, d in zip(weights, outputs[1:]) if d.size and np.max(np.abs(d)) > 0]
        self.weight_ratio = max(ratios, default=0.0)


def parity_tolerance(phase: str, baseline, conv_on_gpu: bool = False) -> float:
    """The tolerance of a model row: MODEL_RTOL (CUDNN_WGRAD_RTOL for gradients of GPU models with a
    conv2d), plus for train_step the weight-rounding term (see _Updates)."""
    base = MODEL_RTOL if phase == "inference" else MODEL_GRAD_RTOL
    if conv_on_gpu and phase != "inference":
        base = max(base, CUDNN_WGRAD_RTOL)
    if phase == "train_step":
        return base + 4 * 2.0 ** -24 * getattr(baseline, "weight_ratio", 0.0)
    return base


def _float64_outputs(spec, phase: str, x, y, lr: float, momentum: float, device: str, seed: int) -> list:
    """The same outputs as ``_model_outputs`` from a float64 copy of the reference network (the oracle)."""
    oracle = _build("reference", spec, device, seed, dtype="float64")
    xb, yb = oracle.device_batch(x, y)
    return _model_outputs(oracle, phase, xb, yb, lr, momentum)


class ModelCase:
    """All rows of one (model, batch, device): data built once, the parity baseline cached per phase."""

    def __init__(self, spec_ref: str, batch: int, device: str, settings: dict):
        self.spec = modelspec.load(spec_ref)
        self.batch = batch
        self.device = device
        self.seed = int(settings.get("seed", 0))
        self.lr = float(settings.get("lr", 0.01))
        self.momentum = float(settings.get("momentum", 0.9))
        self.x, self.y = _model_data(self.spec, batch, self.seed)
        self._baseline: dict[tuple, list] = {}
        self._reference_err: dict[tuple, float] = {}   # (which, phase, precision) -> error (_reference_error)

    def flops(self, phase: str) -> int:
        return self.spec.flops(self.batch, "forward" if phase == "inference" else phase)

    def baseline(self, phase: str) -> list:
        """Outputs of the parity oracle: the reference network in float64, same inputs and parameters."""
        if phase not in self._baseline:
            self._baseline[phase] = _float64_outputs(self.spec, phase, self.x, self.y, self.lr, self.momentum,
                                                     self.device, self.seed)
        return self._baseline[phase]

    def parity(self, job: Job) -> tuple[str, float, float]:
        """(parity_against, rel_err, tolerance) of this row's outputs against the float64 oracle."""
        got = self._variant_outputs(job)
        return "float64", self._error(job.phase, got), self.tolerance(job)

    def tolerance(self, job: Job) -> float:
        """The row's bar: ``parity_tolerance``, plus the operands' rounding at tf32 / bf16."""
        base = self.baseline(job.phase)
        conv_gpu = job.device == "gpu" and any(layer.type == "conv2d" for layer in self.spec.layers)
        layers = sum(1 for layer in self.spec.layers if layer.has_params)
        return precision_tolerance(job.precision, parity_tolerance(job.phase, base, conv_gpu), layers, model=True)

    def _error(self, phase: str, got: list) -> float:
        norm = "max" if phase == "inference" else "fro"   # see MODEL_GRAD_RTOL
        return rel_err(got, self.baseline(phase), norm)

    def rounding_error(self, job: Job) -> float | None:
        """The rounded-operand oracle's error at the row's precision, same inputs (``reference_impl.build(...,
        dtype="float64", operand_rounding=...)``, run once untimed, cached): what exact sums of operands
        rounded to tf32 / bf16 show, the other floor of ``parity.judge``; None for fp32 rows and PyTorch's."""
        return self._reference_error(job, "rounded", dtype="float64", operand_rounding=job.precision)

    def torch_error(self, job: Job) -> float | None:
        """PyTorch's error against the oracle at the row's precision, same inputs (its eager model, run once
        untimed, cached): what a row of ours at tf32 / bf16 is judged against (``parity.judge``); None for
        fp32 rows and PyTorch's own."""
        return self._reference_error(job, "torch", precision=job.precision)

    def _reference_error(self, job: Job, which: str, **options) -> float | None:
        """The error against the float64 oracle of the reference built with ``options``, for a row of ours at
        tf32 / bf16 (cached per ``which``, phase and precision); None for other rows."""
        if job.impl != "custom" or job.precision == "fp32":
            return None
        key = (which, job.phase, job.precision)
        if key not in self._reference_err:
            m = _build("reference", self.spec, job.device, self.seed, **options)
            got = _model_outputs(m, job.phase, self.x, self.y, self.lr, self.momentum)
            self._reference_err[key] = self._error(job.phase, got)
        return self._reference_err[key]

    def _variant_outputs(self, job: Job) -> list:
        m = self._fresh(job)
        if job.variant not in ("torch-graph", "cuda-graph", "torch-compile", "jax-jit"):
            self._checked = (job, m, None)
            return _model_outputs(m, job.phase, self.x, self.y, self.lr, self.momentum)
        xb, yb = m.device_batch(self.x, self.y)   # on the device: timed calls copy nothing from the host
        fn = self._timed_fn(m, job, xb, yb)
        # NOTE: the timed call reuses this model and callable (torch.compile compiles once, graphs are
        # captured once); the parameters have moved by the parity steps, which timing does not care about.
        self._checked = (job, m, (xb, yb, fn))
        if job.phase == "inference":
            fn()   # a graph variant runs its first call eagerly; compare a replayed (or compiled) call
            return [np.array(m.to_numpy(fn()))]
        if job.phase == "forward_backward":   # torch-compile and jax-jit
            loss = fn()
            grads = m.gradients()
            return [np.float64(float(loss))] + [m.to_numpy(grads[k]) for k in self.spec.param_shapes()]
        return _model_outputs(m, job.phase, self.x, self.y, self.lr, self.momentum, step=fn)

    def _fresh(self, job: Job):
        if job.impl == "custom" and job.variant == "cuda":   # our GPU model with CUDA graphs off
            return _build("custom", self.spec, job.device, self.seed, use_graph=False, precision=job.precision)
        if job.variant == "jax-jit":
            from . import workloads_jax

            try:
                return workloads_jax.build_model(self.spec, job.device, self.seed, job.precision)
            except workloads_jax.JaxUnavailable as err:
                raise Unsupported(str(err)) from None
        return _build(job.impl, self.spec, job.device, self.seed, precision=job.precision)

    def _timed_fn(self, m, job: Job, xb, yb) -> Callable[[], object]:
        phase, lr, mom = job.phase, self.lr, self.momentum
        if job.variant == "jax-jit":   # every phase one compiled XLA function, no per-call checks
            fn = m.compiled(phase)
            return lambda: fn(xb, yb, lr, mom)
        if job.variant == "torch-compile":
            import reference_impl

            try:
                fn = m.compiled(phase)
            except reference_impl.Unsupported as err:
                raise Unsupported(str(err)) from None
            return lambda: fn(xb, yb, lr, mom)
        if phase == "inference":
            return lambda: m.forward(xb)
        if phase == "forward_backward":
            return lambda: m.forward_backward(xb, yb)
        if job.variant == "torch-graph":
            return lambda: m.train_step_graphed(xb, yb, lr, mom)
        return lambda: m.train_step(xb, yb, lr, mom)

    def prepare(self, job: Job) -> Prepared:
        """The timed call of ``job``; reuses the model (and callable) of the last parity check of it."""
        checked = getattr(self, "_checked", None)
        if checked is not None and checked[0] == job:
            m, ready = checked[1], checked[2]
        else:
            m, ready = self._fresh(job), None
        self._checked = None
        xb, yb, fn = ready if ready is not None else (*m.device_batch(self.x, self.y), None)
        fn = fn or self._timed_fn(m, job, xb, yb)
        if job.variant == "jax-jit":
            from . import workloads_jax

            phase, batch = job.phase, self.batch
            return Prepared(fn=fn, clock="jax", outputs=lambda: [], flops=self.flops(phase),
                            peak_mem=lambda: workloads_jax.model_peak(m, phase, batch, job.device),
                            note=lambda: workloads_jax.model_note(m, phase, batch))
        if job.device == "gpu":
            clock = "cupy" if job.impl == "custom" else "torch"
            peak = _cupy_peak() if job.impl == "custom" else _torch_peak_reset()
        else:
            clock, peak = "cpu", (lambda: None)
        finite = ((lambda: all(bool(np.isfinite(v).all()) for v in m.get_params().values()))
                  if job.phase == "train_step" else (lambda: None))
        return Prepared(fn=fn, clock=clock, outputs=lambda: [], flops=self.flops(job.phase), peak_mem=peak,
                        finite=finite)


# ============================================================================ layers
def _layer_flops(job: Job) -> int:
    p = job.p()
    layer = layer_for({"kind": job.kind, **p})
    f = layer.flops(job.batch if job.kind != "dense" else p["M"])
    return int(getattr(f, job.phase))


def shape_text(job: Job) -> str:
    p = job.p()
    if job.kind == "dense":
        return f"M={p['M']} N={p['N']} K={p['K']}"
    if job.kind == "conv2d":
        return (f"N={p['N']} C={p['C']} H={p['H']} W={p['W']} K={p['K']} R={p['R']} S={p['S']} "
                f"stride={pair_text(p['stride'])} pad={pair_text(p['padding'])}")
    return f"{p['mode']} N={p['N']} C={p['C']} H={p['H']} W={p['W']} R={p['R']} S={p['S']} stride={p['stride']}"


_HOST_DATA: dict[tuple, dict] = {}


def _layer_host_data(job: Job, seed: int) -> dict:
    """Random float32 NumPy inputs of a layer shape (never zeros; odd shapes are the suite's business).

    The last shape's data is kept, so the three phases of one shape share it (large conv inputs take a
    while to draw).
    """
    key = (job.kind, job.workload, seed)
    if key not in _HOST_DATA:
        _HOST_DATA.clear()
        _HOST_DATA[key] = _draw_layer_data(job, seed)
    return _HOST_DATA[key]


def _draw_layer_data(job: Job, seed: int) -> dict:
    p = job.p()
    rng = np.random.default_rng(seed + 7)

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    if job.kind == "dense":
        m, n, k = p["M"], p["N"], p["K"]
        return {"x": r(m, k), "W": r(n, k) / np.float32(math.sqrt(k)), "b": r(n), "dy": r(m, n)}
    n, c, h, w = p["N"], p["C"], p["H"], p["W"]
    if job.kind == "conv2d":
        k, rr, ss, (sh, sw), (ph, pw) = p["K"], p["R"], p["S"], p["stride"], p["padding"]
        pp, qq = (h + 2 * ph - rr) // sh + 1, (w + 2 * pw - ss) // sw + 1
        return {"x": r(n, c, h, w), "W": r(k, c, rr, ss) / np.float32(math.sqrt(c * rr * ss)), "b": r(k),
                "dy": r(n, k, pp, qq)}
    pp, qq = (h - p["R"]) // p["stride"] + 1, (w - p["S"]) // p["stride"] + 1
    return {"x": r(n, c, h, w), "dy": r(n, c, pp, qq)}


def _torch_layer_fn(job: Job, data: dict, dev: str, dtype) -> Callable[[], tuple]:
    """The PyTorch call of one layer phase (cuBLAS / cuDNN on the GPU)."""
    torch = _torch()
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v).to(dev, dtype) for k, v in data.items()}
    p = job.p()
    ph = job.phase
    if job.kind == "dense":
        x, W, b, dy = t["x"], t["W"], t["b"], t["dy"]
        if ph == "forward":
            return lambda: (F.linear(x, W, b),)
        if ph == "backward_data":
            return lambda: (torch.mm(dy, W),)
        return lambda: (torch.mm(dy.t(), x), dy.sum(0))
    if job.kind == "conv2d":
        x, W, b, dy = t["x"], t["W"], t["b"], t["dy"]
        st, pad = list(p["stride"]), list(p["padding"])
        if ph == "forward":
            return lambda: (F.conv2d(x, W, b, st, pad),)
        cb = torch.ops.aten.convolution_backward
        if ph == "backward_data":
            return lambda: (cb(dy, x, W, None, st, pad, [1, 1], False, [0, 0], 1, [True, False, False])[0],)

        def bw():
            out = cb(dy, x, W, [p["K"]], st, pad, [1, 1], False, [0, 0], 1, [False, True, True])
            return (out[1], out[2])
        return bw
    x, dy = t["x"], t["dy"]
    ks, st = [p["R"], p["S"]], [p["stride"]] * 2
    if p["mode"] == "max":
        if ph == "forward":
            return lambda: (F.max_pool2d(x, ks, st),)
        _, idx = F.max_pool2d(x, ks, st, return_indices=True)
        mb = torch.ops.aten.max_pool2d_with_indices_backward
        return lambda: (mb(dy, x, ks, st, [0, 0], [1, 1], False, idx),)
    if ph == "forward":
        return lambda: (F.avg_pool2d(x, ks, st),)
    ab = torch.ops.aten.avg_pool2d_backward
    return lambda: (ab(dy, x, ks, st, [0, 0], False, True, None),)


def _custom_layer_fn(job: Job, data: dict) -> Callable[[], tuple]:
    """Our layer ops (``custom_impl.layer_ops(job.device)``), with every output buffer allocated once,
    outside the timing: NumPy on the CPU, CuPy on the GPU. tf32 / bf16: the dense and conv ops on the
    tensor cores (``precision=``)."""
    import custom_impl

    prec = {} if job.precision == "fp32" else {"precision": job.precision}

    try:
        ops = custom_impl.layer_ops(job.device)
    except ImportError as err:
        raise Unsupported(f"custom_impl's {job.device} layer ops are not available ({err})") from None
    if job.device == "gpu":
        import cupy as xp

        d = {k: xp.asarray(v) for k, v in data.items()}
    else:
        xp, d = np, data
    p = job.p()
    ph = job.phase
    if job.kind == "dense":
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        if ph == "forward":
            y = xp.empty((p["M"], p["N"]), dtype=xp.float32)             # (M, N)
            return lambda: (ops.dense_forward(x, W, b, out=y, **prec),)
        if ph == "backward_data":
            dx = xp.empty((p["M"], p["K"]), dtype=xp.float32)            # (M, K) = dy (M, N) @ W (N, K)
            return lambda: (ops.dense_backward_data(dy, W, dx=dx, **prec),)
        dW = xp.empty((p["N"], p["K"]), dtype=xp.float32)                # (N, K)
        db = xp.empty((p["N"],), dtype=xp.float32)

        def dense_weights():
            _, gW, gb = ops.dense_backward(dy, x, W, need_dx=False, dW=dW, db=db, **prec)
            return (gW, gb)
        return dense_weights
    if job.kind == "conv2d":
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        st, pad = p["stride"], p["padding"]
        ws_size = ops.conv2d_workspace_size(x.shape, W.shape, st, pad, **prec)
        ws = xp.empty((int(ws_size),), dtype=xp.float32) if ws_size else None
        if ph == "forward":
            y = xp.empty(dy.shape, dtype=xp.float32)                     # (N, K, P, Q)
            return lambda: (ops.conv2d_forward(x, W, b, st, pad, out=y, workspace=ws, **prec),)
        if ph == "backward_data":
            dx = xp.empty(x.shape, dtype=xp.float32)                     # (N, C, H, W)
            return lambda: (ops.conv2d_backward_data(dy, W, x.shape, st, pad, dx=dx, workspace=ws, **prec),)
        dW = xp.empty(W.shape, dtype=xp.float32)                         # (K, C, R, S)
        db = xp.empty((p["K"],), dtype=xp.float32)

        def conv_weights():
            _, gW, gb = ops.conv2d_backward(dy, x, W, st, pad, need_dx=False, dW=dW, db=db, workspace=ws, **prec)
            return (gW, gb)
        return conv_weights
    x, dy = d["x"], d["dy"]
    ks, st = (p["R"], p["S"]), (p["stride"],) * 2
    y = xp.empty(dy.shape, dtype=xp.float32)                             # (N, C, P, Q)
    dx = xp.empty(x.shape, dtype=xp.float32)                             # (N, C, H, W)
    if p["mode"] == "max":
        am = xp.empty(dy.shape, dtype=xp.int32)                          # (N, C, P, Q) window position r*S + s
        if ph == "forward":
            return lambda: (ops.maxpool2d_forward(x, ks, st, out=y, argmax=am)[0],)
        ops.maxpool2d_forward(x, ks, st, out=y, argmax=am)
        return lambda: (ops.maxpool2d_backward(dy, am, x.shape, ks, st, dx=dx),)
    if ph == "forward":
        return lambda: (ops.avgpool2d_forward(x, ks, st, out=y),)
    return lambda: (ops.avgpool2d_backward(dy, x.shape, ks, st, dx=dx),)


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().float().cpu().numpy() if str(a.dtype) == "torch.bfloat16" else a.detach().cpu().numpy()
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


class LayerCase:
    """One layer shape and phase on one device: the data, and the parity baseline shared by its variants."""

    def __init__(self, job: Job, settings: dict):
        self.job = job
        self.seed = int(settings.get("seed", 0))
        self.data = _layer_host_data(job, self.seed)
        self._ref64 = None
        self._torch_err: dict[str, float] = {}

    def _torch_fn(self, job: Job) -> Callable[[], tuple]:
        """PyTorch's op at the row's precision: float32 tensors (fp32; tf32 under ``precision_context``), or
        bfloat16 tensors for bf16: what autocast runs the op on (for the backward ops, which autocast does
        not cover, the dtypes its forward leaves them: bf16 inputs and gradients)."""
        torch = _torch()
        dtype = torch.bfloat16 if job.precision == "bf16" else torch.float32
        return _torch_layer_fn(job, self.data, torch_device(job.device), dtype)

    def _fn(self, job: Job) -> tuple[Callable[[], tuple], str]:
        if job.impl == "reference":
            return self._torch_fn(job), ("torch" if job.device == "gpu" else "cpu")
        return _custom_layer_fn(job, self.data), ("cupy" if job.device == "gpu" else "cpu")

    @staticmethod
    def _algorithm(job: Job) -> Callable[[], str]:
        """What a conv or dense row of ours ran, asked after timing (``conv2d_algorithm`` /
        ``dense_algorithm`` of the device's ops: on the GPU the autotuner's choice, for dense the GEMM plan
        of the phase's matrix product); "" for other rows."""
        if job.impl != "custom" or job.kind not in ("conv2d", "dense"):
            return lambda: ""
        import custom_impl

        p = job.p()
        prec = {} if job.precision == "fp32" else {"precision": job.precision}
        ops = custom_impl.layer_ops(job.device)
        if job.kind == "dense":   # x (M, K), W (N, K): batch M, N units, K features
            x_shape, w_shape = (p["M"], p["K"]), (p["N"], p["K"])
            return lambda: ops.dense_algorithm(job.phase, x_shape, w_shape, **prec) or ""
        x_shape, w_shape = (p["N"], p["C"], p["H"], p["W"]), (p["K"], p["C"], p["R"], p["S"])
        return lambda: ops.conv2d_algorithm(job.phase, x_shape, w_shape, p["stride"], p["padding"], **prec) or ""

    def rounding_error(self, job: Job) -> None:
        """A layer row has no rounded-operand floor: one product sum's rounding is ~u (``parity.judge``)."""
        return None

    def torch_error(self, job: Job) -> float | None:
        """PyTorch's error against the oracle at the row's precision on the same inputs (run once, untimed,
        cached), for rows of ours at tf32 / bf16 (``parity.judge``); None otherwise."""
        if job.impl != "custom" or job.precision == "fp32":
            return None
        if job.precision not in self._torch_err:
            with precision_context(job):
                got = [_to_numpy(a) for a in self._torch_fn(job)()]
            self._torch_err[job.precision] = rel_err(got, self._reference64(job))
        return self._torch_err[job.precision]

    def _reference64(self, job: Job) -> list:
        if self._ref64 is None:
            torch = _torch()
            f64 = _torch_layer_fn(job, self.data, torch_device(job.device), torch.float64)
            self._ref64 = [_to_numpy(a) for a in f64()]
        return self._ref64

    def parity(self, job: Job, fn: Callable[[], tuple]) -> tuple[str, float]:
        """(parity_against, rel_err) of ``fn``'s outputs against PyTorch's op in float64 (the oracle)."""
        got = [_to_numpy(a) for a in fn()]
        return "float64", rel_err(got, self._reference64(job))

    def prepare(self, job: Job) -> Prepared:
        if job.variant == "jax-jit":
            from . import workloads_jax

            try:
                fn, note, peak = workloads_jax.layer_fn(job, self.data)
            except workloads_jax.JaxUnavailable as err:
                raise Unsupported(str(err)) from None
            return Prepared(fn=fn, clock="jax", outputs=fn, flops=_layer_flops(job), shape=shape_text(job),
                            peak_mem=peak, note=lambda: note)
        fn, clock = self._fn(job)
        if job.device == "gpu":
            peak = _cupy_peak() if job.impl == "custom" else _torch_peak_reset()
        else:
            peak = lambda: None  # noqa: E731
        return Prepared(fn=fn, clock=clock, outputs=fn, flops=_layer_flops(job), shape=shape_text(job),
                        peak_mem=peak, algorithm=self._algorithm(job))
