"""Workloads: build the inputs of a row, the callable to time, and the parity check before timing.

Two families:
- models (``kind = "model"``): a zoo model built through the contract (``custom_impl.build`` /
  ``reference_impl.build``) and one of three phases: ``inference`` (forward), ``forward_backward``
  (forward, loss, backward; gradients stay on the device) and ``train_step`` (plus SGD with momentum).
- layers (``kind = "dense" | "conv2d" | "pool"``): one layer shape and one phase: ``forward``,
  ``backward_data`` (dx only) or ``backward_weights`` (dW and db only), timed through our layer
  functions (``custom_impl.cpu`` / ``custom_impl.gpu``) and PyTorch's (``torch.nn.functional`` and the
  ``aten`` backward ops that cuDNN/cuBLAS serve on the GPU).

Parity (before a row is timed): every row's outputs, ours and PyTorch's alike, are compared with the
reference computation run in float64 (the oracle: PyTorch's op, or a float64 copy of the reference
network) on the same device, same input and same parameters; both implementations are judged by the same
truth, so an inaccurate cuDNN algorithm cannot make a correct kernel of ours look wrong. The error is normwise:
``max|a - b| / max|b|`` over every output of the phase (for train_step: over the parameter updates).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

import modelspec

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
    if job.device == "gpu" and job.kind == "conv2d" and job.phase == "backward_weights":
        return CUDNN_WGRAD_RTOL
    return LAYER_RTOL


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


def _build(impl: str, spec, device: str, seed: int):
    if impl == "custom":
        import custom_impl

        return custom_impl.build(spec, device=device, seed=seed)
    import reference_impl

    return reference_impl.build(spec, device=device, seed=seed)


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
    import copy

    torch = _torch()
    ref = _build("reference", spec, device, seed)
    net = copy.deepcopy(ref.net).double()
    dev = torch_device(device)
    x64 = torch.from_numpy(x).to(dev, torch.float64)
    y_t = ref._labels(y, x.shape[0])
    y_t = y_t.double() if y_t.is_floating_point() else y_t
    names = list(spec.param_shapes())
    params = dict(net.named_parameters())
    if phase == "inference":
        with torch.no_grad():
            return [net(x64).cpu().numpy()]
    if phase == "forward_backward":
        loss = ref._loss(net(x64), y_t)
        loss.backward()
        return [np.float64(loss.item())] + [params[k].grad.cpu().numpy() for k in names]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ref._loss(net(x64), y_t)
        loss.backward()
        opt.step()
        return loss.item()

    before = {k: p.detach().cpu().numpy().copy() for k, p in params.items()}
    step()
    with torch.no_grad():
        for k, p in params.items():   # back to the initial values, as _model_outputs does
            p.copy_(torch.from_numpy(before[k]))
    loss = step()
    return _Updates([np.float64(loss)] + [params[k].detach().cpu().numpy() - before[k] for k in names],
                    [before[k] for k in names])


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
        base = self.baseline(job.phase)
        conv_gpu = job.device == "gpu" and any(layer.type == "conv2d" for layer in self.spec.layers)
        norm = "max" if job.phase == "inference" else "fro"   # see MODEL_GRAD_RTOL
        return "float64", rel_err(got, base, norm), parity_tolerance(job.phase, base, conv_gpu)

    def _variant_outputs(self, job: Job) -> list:
        m = self._fresh(job)
        if job.variant not in ("torch-graph", "cuda-graph", "torch-compile"):
            self._checked = (job, m, None)
            return _model_outputs(m, job.phase, self.x, self.y, self.lr, self.momentum)
        xb, yb = self._inputs(m, job)
        fn = self._timed_fn(m, job, xb, yb)
        # NOTE: the timed call reuses this model and callable (torch.compile compiles once, graphs are
        # captured once); the parameters have moved by the parity steps, which timing does not care about.
        self._checked = (job, m, (xb, yb, fn))
        if job.phase == "inference":
            fn()   # a graph variant runs its first call eagerly; compare a replayed (or compiled) call
            return [np.array(m.to_numpy(fn()))]
        if job.phase == "forward_backward":   # torch-compile only
            loss = fn()
            return [np.float64(float(loss))] + [m.params[k].grad.detach().cpu().numpy()
                                                for k in self.spec.param_shapes()]
        return _model_outputs(m, job.phase, self.x, self.y, self.lr, self.momentum, step=fn)

    def _fresh(self, job: Job):
        if job.impl == "custom" and job.variant == "cuda":
            import custom_impl

            try:
                from custom_impl.gpu import model as gpu_model

                return gpu_model.build(self.spec, seed=self.seed, use_graph=False)
            except (ImportError, TypeError, AttributeError):
                import os

                os.environ["CUSTOM_GPU_GRAPH"] = "0"
                try:
                    return custom_impl.build(self.spec, device="gpu", seed=self.seed)
                finally:
                    os.environ.pop("CUSTOM_GPU_GRAPH", None)
        return _build(job.impl, self.spec, job.device, self.seed)

    def _inputs(self, m, job: Job):
        """Inputs already on the device, so the timed call does not include the host-to-device copy."""
        if job.impl == "reference":
            torch = _torch()
            dev = torch_device(job.device)
            yb = torch.from_numpy(self.y).to(dev)
            if self.spec.loss == "sigmoid_binary_cross_entropy":
                yb = yb.clone()
            return torch.from_numpy(self.x).to(dev), yb
        if job.device == "gpu":
            import cupy

            # NOTE: device labels: NumPy labels would be uploaded with a synchronous copy on every call
            # (custom_impl.gpu checks device labels for shape and dtype only, without a host sync).
            return cupy.asarray(self.x), cupy.asarray(self.y)
        return self.x, self.y

    def _timed_fn(self, m, job: Job, xb, yb) -> Callable[[], object]:
        phase, lr, mom = job.phase, self.lr, self.momentum
        if job.variant == "torch-compile":
            return self._compiled(m, phase, xb, yb)
        if phase == "inference":
            return lambda: m.forward(xb)
        if phase == "forward_backward":
            return _forward_backward_fn(m, xb, yb)
        if job.variant == "torch-graph":
            return lambda: m.train_step_graphed(xb, yb, lr, mom)
        return lambda: m.train_step(xb, yb, lr, mom)

    def _compiled(self, m, phase, xb, yb):
        torch = _torch()
        try:
            # NOTE: every zoo network is an nn.Sequential, so all rows share Sequential.forward's code object;
            # without a reset, dynamo's per-code recompile limit would silently fall back to eager after a
            # few rows. Each row compiles (and times) its own module.
            torch._dynamo.reset()
            cnet = torch.compile(m.net, dynamic=False)
        except Exception as err:
            raise Unsupported(f"torch.compile: {type(err).__name__}: {err}") from None
        yl = m._labels(yb, xb.shape[0])
        if phase == "inference":
            def fn():
                with torch.no_grad():
                    return cnet(xb)
            return fn

        def fb():
            m.optimizer.zero_grad(set_to_none=True)
            loss = m._loss(cnet(xb), yl)
            loss.backward()
            return loss.detach()
        if phase == "forward_backward":
            return fb

        def step():
            m._set_hyper(self.lr, self.momentum)
            loss = fb()
            m.optimizer.step()
            return loss
        return step

    def prepare(self, job: Job) -> Prepared:
        """The timed call of ``job``; reuses the model (and callable) of the last parity check of it."""
        checked = getattr(self, "_checked", None)
        if checked is not None and checked[0] == job:
            m, ready = checked[1], checked[2]
        else:
            m, ready = self._fresh(job), None
        self._checked = None
        xb, yb, fn = ready if ready is not None else (*self._inputs(m, job), None)
        fn = fn or self._timed_fn(m, job, xb, yb)
        if job.device == "gpu":
            clock = "cupy" if job.impl == "custom" else "torch"
            peak = _cupy_peak() if job.impl == "custom" else _torch_peak_reset()
        else:
            clock, peak = "cpu", (lambda: None)
        return Prepared(fn=fn, clock=clock, outputs=lambda: [], flops=self.flops(job.phase), peak_mem=peak)


def _forward_backward_fn(m, xb, yb) -> Callable[[], object]:
    """Forward, loss and backward with the gradients left on the device.

    Uses the documented hooks of each implementation (custom_impl.base: ``_forward``/``_loss``/
    ``_backward``; reference_impl.model: ``net``/``_loss``); ``loss_and_grads`` would add a device-to-host
    copy of every gradient to the timing.
    """
    if getattr(m, "impl", "") == "reference":
        yl = m._labels(yb, xb.shape[0])

        def fb_ref():
            m.optimizer.zero_grad(set_to_none=True)
            loss = m._loss(m.net(xb), yl)
            loss.backward()
            return loss.detach()
        return fb_ref
    if all(hasattr(m, h) for h in ("_forward", "_loss", "_backward", "_checked_input", "_checked_labels")):
        xc = m._checked_input(xb)
        yc = m._checked_labels(yb, xb.shape[0])

        def fb_custom():
            loss, dlogits = m._loss(m._forward(xc, train=True), yc)
            m._backward(dlogits)
            return loss
        return fb_custom
    return lambda: m.loss_and_grads(xb, yb)


# ============================================================================ layers
def _layer_flops(job: Job) -> int:
    p = job.p()
    if job.kind == "dense":
        layer = modelspec.Layer(0, "dense", (p["K"],), (p["N"],), units=p["N"], bias=True)
    elif job.kind == "conv2d":
        hp, wp = p["H"] + 2 * p["padding"], p["W"] + 2 * p["padding"]
        out = (p["K"], (hp - p["R"]) // p["stride"] + 1, (wp - p["S"]) // p["stride"] + 1)
        layer = modelspec.Layer(0, "conv2d", (p["C"], p["H"], p["W"]), out, out_channels=p["K"],
                                kernel_size=(p["R"], p["S"]), stride=(p["stride"],) * 2,
                                padding=(p["padding"],) * 2, bias=True)
    else:
        out = (p["C"], (p["H"] - p["R"]) // p["stride"] + 1, (p["W"] - p["S"]) // p["stride"] + 1)
        layer = modelspec.Layer(0, f"{p['mode']}pool2d", (p["C"], p["H"], p["W"]), out,
                                kernel_size=(p["R"], p["S"]), stride=(p["stride"],) * 2, padding=(0, 0))
    f = layer.flops(job.batch if job.kind != "dense" else p["M"])
    return int(getattr(f, job.phase))


def shape_text(job: Job) -> str:
    p = job.p()
    if job.kind == "dense":
        return f"M={p['M']} N={p['N']} K={p['K']}"
    if job.kind == "conv2d":
        return (f"N={p['N']} C={p['C']} H={p['H']} W={p['W']} K={p['K']} R={p['R']} S={p['S']} "
                f"stride={p['stride']} pad={p['padding']}")
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
        k, rr, ss, st, pad = p["K"], p["R"], p["S"], p["stride"], p["padding"]
        pp, qq = (h + 2 * pad - rr) // st + 1, (w + 2 * pad - ss) // st + 1
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
        st, pad = [p["stride"]] * 2, [p["padding"]] * 2
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


def _cpu_layer_fn(job: Job, data: dict) -> Callable[[], tuple]:
    """Our NumPy layer functions (custom_impl.cpu)."""
    p = job.p()
    ph = job.phase
    if job.kind == "dense":
        from custom_impl.cpu import dense

        x, W, b, dy = data["x"], data["W"], data["b"], data["dy"]
        if ph == "forward":
            return lambda: (dense.dense_forward(x, W, b),)
        if ph == "backward_data":
            return lambda: (dense.dense_backward_data(dy, W),)

        def bw():
            _, dW, db = dense.dense_backward(dy, x, W, need_dx=False)
            return (dW, db)
        return bw
    if job.kind == "conv2d":
        from custom_impl.cpu import conv

        x, W, b, dy = data["x"], data["W"], data["b"], data["dy"]
        st, pad = (p["stride"],) * 2, (p["padding"],) * 2
        if ph == "forward":
            return lambda: (conv.conv2d_forward(x, W, b, st, pad)[0],)
        if ph == "backward_weights":
            _, cols = conv.conv2d_forward(x, W, b, st, pad)   # (C*R*S, N*P*Q), saved by forward

            def bw():
                _, dW, db = conv.conv2d_backward(dy, cols, x.shape, W, st, pad, need_dx=False)
                return (dW, db)
            return bw
        return lambda: (conv.conv2d_backward_data(dy, W, x.shape, st, pad),)
    from custom_impl.cpu import pool

    x, dy = data["x"], data["dy"]
    ks, st = (p["R"], p["S"]), (p["stride"],) * 2
    if p["mode"] == "max":
        if ph == "forward":
            return lambda: (pool.maxpool2d_forward(x, ks, st),)
        y = pool.maxpool2d_forward(x, ks, st)   # backward finds each window's maximum by comparing x with y
        return lambda: (pool.maxpool2d_backward(dy, x, y, ks, st),)
    if ph == "forward":
        return lambda: (pool.avgpool2d_forward(x, ks, st),)
    return lambda: (pool.avgpool2d_backward(dy, x.shape, ks, st),)


def _gpu_layer_fn(job: Job, data: dict) -> Callable[[], tuple]:
    """Our CUDA kernels (custom_impl.gpu), with every output buffer allocated once, outside the timing."""
    import cupy

    p = job.p()
    ph = job.phase
    d = {k: cupy.asarray(v) for k, v in data.items()}
    if job.kind == "dense":
        try:
            from custom_impl.gpu import dense, gemm
        except ImportError as err:
            raise Unsupported(f"custom_impl.gpu.dense is not available ({err})") from None
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        if ph == "forward":
            y = cupy.empty((p["M"], p["N"]), dtype=cupy.float32)         # (M, N)
            return lambda: (dense.dense_forward(x, W, b, out=y),)
        if ph == "backward_data":
            dx = cupy.empty((p["M"], p["K"]), dtype=cupy.float32)        # (M, K) = dy (M, N) @ W (N, K)
            return lambda: (gemm.gemm(dy, W, out=dx),)
        dW = cupy.empty((p["N"], p["K"]), dtype=cupy.float32)            # (N, K)
        db = cupy.empty((p["N"],), dtype=cupy.float32)

        def bw():
            _, gW, gb = dense.dense_backward(dy, x, W, need_dx=False, dW=dW, db=db)
            return (gW, gb)
        return bw
    if job.kind == "conv2d":
        try:
            from custom_impl.gpu import conv
        except ImportError as err:
            raise Unsupported(f"custom_impl.gpu.conv is not available ({err})") from None
        x, W, b, dy = d["x"], d["W"], d["b"], d["dy"]
        st, pad = (p["stride"],) * 2, (p["padding"],) * 2
        ws_size = conv.conv2d_workspace_size(x.shape, W.shape, st, pad) if hasattr(conv, "conv2d_workspace_size") else 0
        ws = cupy.empty((max(1, int(ws_size)),), dtype=cupy.float32) if ws_size else None
        y = cupy.empty(dy.shape, dtype=cupy.float32)                     # (N, K, P, Q)
        if ph == "forward":
            return lambda: (conv.conv2d_forward(x, W, b, st, pad, out=y, workspace=ws),)
        dx = cupy.empty(x.shape, dtype=cupy.float32)                     # (N, C, H, W)
        dW = cupy.empty(W.shape, dtype=cupy.float32)                     # (K, C, R, S)
        db = cupy.empty((p["K"],), dtype=cupy.float32)
        if ph == "backward_data":
            return lambda: (conv.conv2d_backward_data(dy, W, x.shape, st, pad, dx=dx, workspace=ws),)

        def bw():
            _, gW, gb = conv.conv2d_backward(dy, x, W, st, pad, need_dx=False, dW=dW, db=db, workspace=ws)
            return (gW, gb)
        return bw
    try:
        from custom_impl.gpu import pool
    except ImportError as err:
        raise Unsupported(f"custom_impl.gpu.pool is not available ({err})") from None
    x, dy = d["x"], d["dy"]
    ks, st = (p["R"], p["S"]), (p["stride"],) * 2
    y = cupy.empty(dy.shape, dtype=cupy.float32)                         # (N, C, P, Q)
    dx = cupy.empty(x.shape, dtype=cupy.float32)                         # (N, C, H, W)
    if p["mode"] == "max":
        am = cupy.empty(dy.shape, dtype=cupy.int32)
        if ph == "forward":
            return lambda: (pool.maxpool2d_forward(x, ks, st, out=y, argmax=am)[0],)
        pool.maxpool2d_forward(x, ks, st, out=y, argmax=am)
        return lambda: (pool.maxpool2d_backward(dy, am, x.shape, ks, st, dx=dx),)
    if ph == "forward":
        return lambda: (pool.avgpool2d_forward(x, ks, st, out=y),)
    return lambda: (pool.avgpool2d_backward(dy, x.shape, ks, st, dx=dx),)


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
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

    def _fn(self, job: Job) -> tuple[Callable[[], tuple], str]:
        dev = torch_device(job.device)
        if job.impl == "reference":
            torch = _torch()
            return _torch_layer_fn(job, self.data, dev, torch.float32), ("torch" if job.device == "gpu" else "cpu")
        if job.device == "gpu":
            return _gpu_layer_fn(job, self.data), "cupy"
        return _cpu_layer_fn(job, self.data), "cpu"

    def parity(self, job: Job, fn: Callable[[], tuple]) -> tuple[str, float]:
        """(parity_against, rel_err) of ``fn``'s outputs against PyTorch's op in float64 (the oracle)."""
        got = [_to_numpy(a) for a in fn()]
        if self._ref64 is None:
            torch = _torch()
            f64 = _torch_layer_fn(job, self.data, torch_device(job.device), torch.float64)
            self._ref64 = [_to_numpy(a) for a in f64()]
        return "float64", rel_err(got, self._ref64)

    def prepare(self, job: Job) -> Prepared:
        fn, clock = self._fn(job)
        if job.device == "gpu":
            peak = _cupy_peak() if job.impl == "custom" else _torch_peak_reset()
        else:
            peak = lambda: None  # noqa: E731
        return Prepared(fn=fn, clock=clock, outputs=fn, flops=_layer_flops(job), shape=shape_text(job),
                        peak_mem=peak)
