"""Our GPU model: every layer of a spec in our own CUDA kernels, launched through CuPy.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, F features, U units.

``build(spec, seed)`` returns a ``GPUModel`` (the model contract of docs/DESIGN.md, via
``custom_impl.base.CustomModel``). The network is driven from ``spec.layers``: each layer becomes one
step (``step.Step``; each layer family's module defines its step class beside its ops) with a
``forward`` and a ``backward`` written side by side; a dense layer directly followed by an activation
becomes one step whose activation runs in the GEMM epilogue, and a relu directly followed by max pooling
one pooling step with the relu fused (``fuse_pool``). A network small enough for ``mlp_fused`` (the thesis's
2-3-1 one: dense layers of at most 16 units) trains with that module's two-launch step instead of the
per-layer one (``fuse_mlp``); inference and the loss / gradient hooks keep the steps.

Memory: parameters, gradients and SGD velocities each live in ONE flat float32 buffer (P,) and every
``"{i}.weight"`` / ``"{i}.bias"`` is a view into it, so SGD is one launch. Everything a batch size N
needs (the input and label buffers, every activation, every gradient, what each step saves, the conv
workspace and the loss buffers) is allocated once per N (a ``_Plan``, cached) and reused: the hot path
allocates nothing, never synchronises the host, and launches on CuPy's current stream, so it can be
captured as a CUDA graph.

train_step: the first step for a given (N, lr, momentum) runs eagerly; the next one captures the whole
step (forward, loss, backward, SGD) as a CUDA graph on a non-default stream; from then on each step
copies the inputs into the static buffers and launches that graph on the current stream. Inference
``forward`` is graphed the same way per N. Disable graphs
with ``build(spec, use_graph=False)`` or the environment variable ``CUSTOM_GPU_GRAPH=0``.
Parameter gradients are written (=), never accumulated.

Replay fast path: a graphed train step costs ~10-15 us of GPU time for a small MLP, so its host side is
what a step costs there. Once a step has replayed (or captured) the graph of a key, the model keeps that
key's replay (``_Replay``: input shape, lr and momentum with their types, the graph, the static buffers'
addresses). The next call whose arguments are CuPy arrays of exactly that shape, float32 / int64 and
C-contiguous, with an equal lr and momentum of the same types, has already passed every check the
checked path would make (none of them looks at values: device labels are never range-checked), so it
only issues two device-to-device copies, the graph launch and the loss copy. Anything else (NumPy
inputs, another dtype, shape, lr or momentum, a non-contiguous array) takes the checked path, which
raises the same errors as before and re-arms the fast path for its key. Capturing any graph,
``clear_cache()`` and ``use_graph = False`` disarm it.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..base import CustomModel
from .activation import ACTIVATIONS, ActivationStep, activation_after
from .conv import ConvStep
from .dense import DenseStep
from .loss import loss_forward_backward
from .mlp_fused import FusedMLP, fusable
from .pool import PoolStep
from .runtime import GRAPH_LAUNCH_S, launch_cost_regime
from .sgd import sgd_update
from .step import FlattenStep, Step

ALIGN = 64  # elements (256 bytes): every parameter view starts aligned for vector loads in our kernels
MAX_GRAPHS = 16  # captured graphs kept (train steps per (N, lr, momentum), forwards per N); oldest dropped
LOSS_SLOTS = 4096  # returned train-step losses carved, one float32 each, from a block of this many
F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)


def _graph_default() -> bool:
    return os.environ.get("CUSTOM_GPU_GRAPH", "1").strip().lower() not in ("0", "false", "no", "off")


def build(spec, seed: int = 0, **options) -> "GPUModel":
    """Our GPU model of ``spec`` with parameters ``spec.init_params(seed)``.

    options: ``use_graph`` (bool, default from CUSTOM_GPU_GRAPH, else True): replay train steps as CUDA
    graphs. ``fuse_pool`` (default True): run a relu followed by maxpool2d as one fused pooling step.
    ``fuse_mlp`` (default True): train a small MLP (``mlp_fused.fusable``) with the two-launch fused step.
    ``precision`` ("fp32" default, "tf32", "bf16"): what the dense and conv steps' products run in.

    >>> m = build(modelspec.load("mlp-mnist"), seed=0)                 # doctest: +SKIP
    >>> loss = m.train_step(x, y, lr=0.1, momentum=0.9)                # 0-d cupy array, no host sync
    """
    return GPUModel(spec, seed=seed, **options)


def _make_steps(spec, fuse_pool: bool = True) -> list[Step]:
    steps: list[Step] = []
    layers = spec.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if layer.type == "dense":
            act = activation_after(layers, i)
            if act is not None:
                steps.append(DenseStep(layer, act=act))  # fused pair: the activation is the epilogue
                i += 2
                continue
            steps.append(DenseStep(layer))
        elif layer.type == "conv2d":
            steps.append(ConvStep(layer))
        elif layer.type == "relu" and fuse_pool and nxt is not None and nxt.type == "maxpool2d":
            steps.append(PoolStep(nxt, relu=True))  # fused pair: relu commutes with max
            i += 2
            continue
        elif layer.type in ACTIVATIONS:
            steps.append(ActivationStep(layer))
        elif layer.type in ("maxpool2d", "avgpool2d"):
            steps.append(PoolStep(layer))
        elif layer.type == "flatten":
            steps.append(FlattenStep(layer))
        else:  # modelspec validates types; this guards a new layer type added there but not here
            raise ValueError(f"layer {layer.index} ({layer.type}): not supported by the GPU implementation")
        i += 1
    seen_params = False
    for step in steps:
        step.needs_dx = seen_params
        seen_params = seen_params or step.weight is not None
    return steps


# ---------------------------------------------------------------------------------------------- plan
class _Plan:
    """Every buffer a batch size N needs, allocated once.

    acts[i] is the input of step i (acts[0] the static input x (N, *input_shape), acts[-1] the logits
    (N, output_dim)); dacts[i] the gradient w.r.t. acts[i] (None where nothing needs it); saved[i] what
    step i saves; ws the conv workspace shared by all conv steps (they run one after another on one
    stream); labels (N,) int64; per_sample (N,), loss (1,) the mean loss; part the fused train step's
    block partials (None without one).
    """

    def __init__(self, spec, steps, n, fused=None):
        import cupy

        self.n = n
        f32 = np.float32
        self.acts = [cupy.empty((n, *spec.input_shape), dtype=f32)]  # (N, *input_shape)
        for step in steps:
            if step.kind == "flatten":
                self.acts.append(self.acts[-1].reshape((n, *step.out_shape)))  # (N, C*H*W) view
            else:
                self.acts.append(cupy.empty((n, *step.out_shape), dtype=f32))  # (N, *out_shape)
        self.dacts: list = [None] * (len(steps) + 1)
        self.dacts[-1] = cupy.empty_like(self.acts[-1])  # dlogits (N, output_dim)
        for i in range(len(steps) - 1, -1, -1):
            if not steps[i].needs_dx:
                break
            if steps[i].kind == "flatten":
                self.dacts[i] = self.dacts[i + 1].reshape((n, *steps[i].in_shape))  # view
            else:
                self.dacts[i] = cupy.empty_like(self.acts[i])  # (N, *in_shape)
        self.saved = [step.alloc(n) for step in steps]
        ws = max([step.workspace_size(n) for step in steps] + [0])
        self.ws = cupy.empty((ws,), dtype=f32) if ws > 0 else None  # conv workspace (float32 elements)
        self.labels = cupy.empty((n,), dtype=np.int64)  # (N,)
        self.per_sample = cupy.empty((n,), dtype=f32)   # (N,)
        self.loss = cupy.empty((1,), dtype=f32)         # mean loss
        self.part = None if fused is None else cupy.empty((fused.workspace_size(n),), dtype=f32)


class _Replay:
    """The replay fast path of one graphed train step (see the module docstring).

    ``shape`` is x's full shape (N, *input_shape), ``labels_shape`` (N,); ``lr`` / ``momentum`` are the
    values the checked path accepted, with their types (an equal value of another type, e.g. True for 1,
    goes back through the checks). ``x_dst`` / ``y_dst`` / ``loss`` are the memory pointers of the plan's
    static input, labels and loss; ``array`` is ``cupy.ndarray`` (the module never imports CuPy eagerly).
    """

    __slots__ = ("array", "shape", "labels_shape", "lr", "lr_type", "momentum", "momentum_type", "graph",
                 "x_dst", "x_ptr", "x_bytes", "y_dst", "y_ptr", "y_bytes", "loss")

    def __init__(self, array, plan: _Plan, graph, lr, momentum):
        self.array = array
        self.shape = tuple(plan.acts[0].shape)
        self.labels_shape = (plan.n,)
        self.lr, self.lr_type = lr, type(lr)
        self.momentum, self.momentum_type = momentum, type(momentum)
        self.graph = graph
        self.x_dst, self.x_ptr, self.x_bytes = plan.acts[0].data, plan.acts[0].data.ptr, plan.acts[0].nbytes
        self.y_dst, self.y_ptr, self.y_bytes = plan.labels.data, plan.labels.data.ptr, plan.labels.nbytes
        self.loss = plan.loss.data


# ---------------------------------------------------------------------------------------------- model
class GPUModel(CustomModel):
    """Our implementation on one CUDA device (the current CuPy device at build time)."""

    device = "gpu"

    def __init__(self, spec, seed: int = 0, use_graph: bool | None = None, fuse_pool: bool = True,
                 precision: str = "fp32", fuse_mlp: bool = True):
        from .dense import check_precision

        check_precision(precision, "GPUModel")
        self.precision = precision
        self.use_graph = _graph_default() if use_graph is None else bool(use_graph)
        self.fuse_pool = bool(fuse_pool)
        self.fuse_mlp = bool(fuse_mlp)
        self._plans: dict[int, _Plan] = {}
        self._graphs: dict[tuple, object] = {}
        self._eager_done: set[tuple] = set()
        self._capture_stream = None
        self._replay: _Replay | None = None  # the train step's fast path (see the module docstring)
        self._loss_block = None               # MemoryPointer of LOSS_SLOTS float32 (returned losses)
        self._loss_next = LOSS_SLOTS          # next free slot in it; LOSS_SLOTS: take a new block
        super().__init__(spec, seed)

    # ------------------------------------------------------------------ set-up
    def _setup(self, params):
        import cupy

        self._ndarray = cupy.ndarray
        self.steps = _make_steps(self.spec, self.fuse_pool)
        for step in self.steps:
            step.precision = self.precision   # what its products run in (workspace sizes depend on it)
        shapes = self.spec.param_shapes()
        offsets, total = {}, 0
        for name, shape in shapes.items():
            offsets[name] = total
            total += -(-math.prod(shape) // ALIGN) * ALIGN  # round each up to ALIGN elements
        total = max(total, 1)
        self.flat_w = cupy.zeros((total,), dtype=np.float32)  # (P,) parameters (padding stays 0)
        self.flat_g = cupy.zeros((total,), dtype=np.float32)  # (P,) gradients
        self.flat_v = cupy.zeros((total,), dtype=np.float32)  # (P,) SGD velocities

        def views(flat):
            return {name: flat[offsets[name]:offsets[name] + math.prod(s)].reshape(s) for name, s in shapes.items()}

        self.params, self.grads, self.velocity = views(self.flat_w), views(self.flat_g), views(self.flat_v)
        self._write_params(params)
        # the two-launch train step of a small MLP (mlp_fused.py), or None: the steps' path
        self._fused = (FusedMLP(self.spec, offsets) if self.fuse_mlp and fusable(self.spec, self.precision) is None
                       else None)

    def clear_cache(self) -> None:
        """Free every per-batch-size buffer set and captured graph (they are rebuilt on the next call).

        A sweep over many batch sizes keeps one plan per N otherwise; graphs go first, since they hold
        the plans' addresses.
        """
        self._replay = None
        self._graphs.clear()
        self._eager_done.clear()
        self._plans.clear()

    def _plan(self, n: int) -> _Plan:
        plan = self._plans.get(n)
        if plan is None:
            with self._launch_cost():  # workspace sizes follow the plans the calls will make
                plan = self._plans[n] = _Plan(self.spec, self.steps, n, self._fused)
        return plan

    # ------------------------------------------------------------------ hooks of CustomModel
    def to_numpy(self, a) -> np.ndarray:
        import cupy

        return cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else np.asarray(a)

    def _asarray(self, x):
        """Copy x (NumPy or CuPy, any float dtype) into the static input buffer of its batch size."""
        import cupy

        dst = self._plan(int(x.shape[0])).acts[0]
        if isinstance(x, cupy.ndarray):
            if x.dtype != np.float32 or not x.flags.c_contiguous:
                x = cupy.ascontiguousarray(x, dtype=np.float32)
            if x.data.ptr != dst.data.ptr:
                dst.data.copy_from_device_async(x.data, x.nbytes)  # current stream
        else:
            dst.set(np.ascontiguousarray(x, dtype=np.float32))
        return dst

    def _checked_labels(self, y, batch: int):
        import cupy

        if isinstance(y, cupy.ndarray):
            # NOTE: device labels are checked for shape and integer dtype only: a range check would need
            # their values on the host (a sync per step). An out-of-range label gives a NaN loss instead.
            if y.ndim != 1 or y.shape[0] != batch:
                raise ValueError(f"model {self.spec.name!r}: labels must have shape ({batch},) to match the "
                                 f"batch, got {tuple(y.shape)}")
            if y.dtype.kind not in "iub":
                raise ValueError(f"model {self.spec.name!r}: device labels must be integer class indices, "
                                 f"got dtype {y.dtype}")
            dst = self._plan(batch).labels
            if y.dtype != np.int64 or not y.flags.c_contiguous:
                y = cupy.ascontiguousarray(y, dtype=np.int64)
            dst.data.copy_from_device_async(y.data, y.nbytes)
            return dst
        return super()._checked_labels(y, batch)

    def _labels(self, y: np.ndarray):
        dst = self._plan(int(y.shape[0])).labels
        dst.set(np.ascontiguousarray(y, dtype=np.int64))
        return dst

    def _launch_cost(self):
        """The launch cost GEMM / conv plans assume inside this model: a replayed graph's (~1 us), so
        split-K pays for small batches. Plans, workspace sizes, eager warm-up steps and captures all run
        under it, so they agree; it holds with graphs off too (use_graph=False), so both modes choose the
        same kernels and compute bit-identical results."""
        return launch_cost_regime(GRAPH_LAUNCH_S)

    def _forward(self, x, train: bool):
        with self._launch_cost():
            return self._forward_planned(x, train)

    def _forward_planned(self, x, train: bool):
        plan = self._plan(int(x.shape[0]))
        if x.data.ptr != plan.acts[0].data.ptr:
            plan.acts[0].data.copy_from_device_async(x.data, x.nbytes)
        if train:
            self._run_forward(plan)
            return plan.acts[-1]
        # inference: graphed like train_step (eager the first time for N, captured the second)
        self._graphed(("forward", plan.n), lambda: self._run_forward(plan))
        return _copy(plan.acts[-1])  # NOTE: a fresh array: the plan's buffer is overwritten by the next call

    def _run_forward(self, plan: _Plan) -> None:
        for i, step in enumerate(self.steps):
            step.forward(self, plan.acts[i], plan.acts[i + 1], plan.saved[i], plan.ws)

    def _loss(self, logits, y):
        plan = self._plan(int(logits.shape[0]))
        loss, dz = loss_forward_backward(self.spec.loss, logits, y, dz=plan.dacts[-1], loss=plan.loss,
                                         per_sample=plan.per_sample)
        return loss, dz

    def _backward(self, dlogits) -> None:
        with self._launch_cost():
            self._run_backward(self._plan(int(dlogits.shape[0])))

    def _run_backward(self, plan: _Plan) -> None:
        for i in range(len(self.steps) - 1, -1, -1):
            step = self.steps[i]
            if step.weight is None and not step.needs_dx:
                continue  # before the first parameter layer: nothing needs this gradient
            step.backward(self, plan.dacts[i + 1], plan.acts[i], plan.acts[i + 1], plan.saved[i],
                          plan.dacts[i], plan.ws)

    def _read_params(self) -> dict:
        return dict(self.params)

    def _read_grads(self) -> dict:
        return dict(self.grads)

    def _write_params(self, params) -> None:
        for name, view in self.params.items():
            view.set(np.ascontiguousarray(params[name], dtype=np.float32))

    def _sgd(self, lr: float, momentum: float) -> None:
        sgd_update(self.flat_w, self.flat_g, self.flat_v, lr, momentum)

    # ------------------------------------------------------------------ the whole step, eager or graphed
    def _run_step(self, plan: _Plan, lr: float, momentum: float) -> None:
        """forward, loss, backward, SGD on the plan's static buffers: only kernel launches (capturable). A
        fused MLP step writes the gradients and the loss in two launches instead (the activation buffers
        are then not written)."""
        if self._fused is not None:
            self._fused.launch(plan.acts[0], plan.labels, self.flat_w, self.flat_g, plan.loss, plan.part)
            self._sgd(lr, momentum)
            return
        self._run_forward(plan)
        loss_forward_backward(self.spec.loss, plan.acts[-1], plan.labels, dz=plan.dacts[-1], loss=plan.loss,
                              per_sample=plan.per_sample)
        self._run_backward(plan)
        self._sgd(lr, momentum)

    def train_step(self, x, y, lr: float, momentum: float = 0.0):
        """One SGD step (see ``CustomModel.train_step``); returns the loss before the step, 0-d, no sync.

        With graphs on, the first call for a given (N, lr, momentum) runs eagerly, the second captures the
        step as a CUDA graph and every later one replays it. The returned loss is a fresh 0-d float32
        array: later steps never write it (its 4 bytes are one slot of a block that holds only returned
        losses, each slot handed out once). Repeated calls with CuPy inputs of one shape and the same lr
        and momentum replay through the fast path of the module docstring: the new x and y are still
        copied in on every call, only the checks already passed for that key are not repeated.
        """
        r = self._replay
        if (r is not None and type(x) is r.array and type(y) is r.array and x.shape == r.shape
                and y.shape == r.labels_shape and x.dtype is F32 and y.dtype is I64 and x._c_contiguous
                and y._c_contiguous and type(lr) is r.lr_type and lr == r.lr
                and type(momentum) is r.momentum_type and momentum == r.momentum and self.use_graph):
            src = x.data
            if src.ptr != r.x_ptr:
                r.x_dst.copy_from_device_async(src, r.x_bytes)   # current stream, as the checked path
            src = y.data
            if src.ptr != r.y_ptr:
                r.y_dst.copy_from_device_async(src, r.y_bytes)
            r.graph.launch()                                      # on the current stream
            return self._fresh_loss(r.loss)
        return self._train_step_checked(x, y, lr, momentum)

    def _train_step_checked(self, x, y, lr, momentum):
        """``train_step`` with every check; arms the fast path when the step replayed (or captured) a graph."""
        self._replay = None
        self.spec.check_lr(lr, momentum)
        x = self._checked_input(x)                 # copied into the plan's static input buffer
        n = int(x.shape[0])
        self._checked_labels(y, n)                 # copied into the plan's static label buffer
        lr_f, momentum_f = float(lr), float(momentum)
        key = ("train_step", n, lr_f, momentum_f)
        with self._launch_cost():
            plan = self._plan(n)
            self._graphed(key, lambda: self._run_step(plan, lr_f, momentum_f))
        graph = self._graphs.get(key) if self.use_graph else None
        if graph is not None:
            self._replay = _Replay(self._ndarray, plan, graph, lr, momentum)
        return self._fresh_loss(plan.loss.data)

    def _fresh_loss(self, src):
        """A new 0-d float32 array holding the 4 bytes at MemoryPointer ``src``: one async device-to-device
        copy (current stream) into the next unused slot of the loss block. A returned array keeps its
        block alive; a full block is left to the arrays that still hold it, and a new one is taken."""
        i = self._loss_next
        if i >= LOSS_SLOTS:
            import cupy

            self._loss_block = cupy.empty((LOSS_SLOTS,), dtype=F32).data
            i = 0
        self._loss_next = i + 1
        dst = self._loss_block + 4 * i
        dst.copy_from_device_async(src, 4)
        return self._ndarray((), F32, dst)

    def _graphed(self, key: tuple, launches) -> None:
        """Run ``launches()`` (kernel launches on static buffers only): eagerly the first time for ``key``
        (or always, with graphs off), captured as a CUDA graph the second time, replayed from then on."""
        import cupy

        if not self.use_graph:
            launches()
            return
        graph = self._graphs.get(key)
        if graph is None and key in self._eager_done:
            self._replay = None  # NOTE: the capture may drop the fast path's graph below; re-armed by its next step
            graph = self._graphs[key] = self._capture(launches)
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
        if graph is None:
            launches()
            self._eager_done.add(key)
        else:
            graph.launch(cupy.cuda.get_current_stream())

    def _capture(self, launches):
        import cupy

        if self._capture_stream is None:
            self._capture_stream = cupy.cuda.Stream(non_blocking=True)
        stream = self._capture_stream
        # NOTE: the capture records, it does not run; the static buffers are already filled on the
        # current stream, and the graph launched on that stream runs after those copies.
        with stream:
            stream.begin_capture()
            try:
                launches()
            finally:
                graph = stream.end_capture()
        return graph


def _copy(a):
    """A fresh copy of a contiguous device array, as one async device-to-device copy (current stream)."""
    import cupy

    out = cupy.empty(a.shape, dtype=a.dtype)
    out.data.copy_from_device_async(a.data, a.nbytes)
    return out
