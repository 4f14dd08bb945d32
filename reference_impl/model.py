"""The reference model: torch.nn modules built from ``spec.layers``, behind the same contract as ours.

Module i of the ``nn.Sequential`` is layer i of the spec, so torch's own parameter names are the spec's
("0.weight", "0.bias", ...). Losses: F.cross_entropy on (N, K) logits, F.binary_cross_entropy_with_logits on
(N, 1) logits. SGD: torch.optim.SGD, whose lr and momentum are set on every call.

The model runs in float32 (the reference timed against ours) or, built with ``dtype="float64"``, in float64
(the oracle the harness judges both float32 implementations by); every method then takes and returns that
precision. A float32 model on the GPU has a ``precision``: "fp32" (strict), "tf32" (TF32 flags on while its
methods run: ``precision_scope``) or "bf16" (``torch.autocast`` to bfloat16 around its forward and loss).
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PHASES = ("inference", "forward_backward", "train_step")
PRECISIONS = ("fp32", "tf32", "bf16")
AUTOCAST_DTYPE = {"bf16": torch.bfloat16}   # precisions that run as torch.autocast(device_type="cuda", dtype=...)


@contextlib.contextmanager
def precision_scope(precision: str):
    """Set the TF32 flags that define ``precision`` for the ``with`` block, and restore the previous ones.

    "tf32": ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` on, float32
    matmul precision "high"; "fp32" and "bf16": both off, "highest" (bf16 runs its matmuls and convolutions
    in bfloat16 through autocast, which this scope does not enter; what stays float32 stays strict).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])


class Unsupported(Exception):
    """This model cannot run what was asked here (``compiled``: torch.compile failed); the message says why."""


def _module(layer) -> nn.Module:
    t = layer.type
    if t == "dense":
        return nn.Linear(layer.in_shape[0], layer.units, bias=layer.bias)
    if t == "conv2d":
        return nn.Conv2d(layer.in_shape[0], layer.out_channels, kernel_size=layer.kernel_size,
                         stride=layer.stride, padding=layer.padding, bias=layer.bias)
    if t == "maxpool2d":
        return nn.MaxPool2d(layer.kernel_size, layer.stride)
    if t == "avgpool2d":
        return nn.AvgPool2d(layer.kernel_size, layer.stride)
    if t == "flatten":
        return nn.Flatten()
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[t]()


class ReferenceModel:
    """``reference_impl.build(spec, device)``: the spec's network in PyTorch, FP32.

    ``device`` is "cpu" or "gpu" (the contract's names); ``torch_device`` is "cpu" or "cuda"; ``dtype``
    "float32" or "float64"; ``precision`` "fp32", "tf32" or "bf16" (module docstring; checked by ``build``).
    Every public method of a tf32 / bf16 model runs inside ``precision_scope(precision)``; a bf16 model's
    forward and loss also inside ``torch.autocast`` (cache off: a CUDA-graph capture must not keep casts).
    """

    impl = "reference"
    framework = "torch"

    def __init__(self, spec, device: str, torch_device: str, seed: int = 0, dtype: str = "float32",
                 precision: str = "fp32", operand_rounding: str | None = None):
        self.spec = spec
        self.precision = precision
        self.device = device
        self.torch_device = torch.device(torch_device)
        self.dtype = DTYPES[dtype]
        self._np_dtype = np.dtype(dtype)
        with torch.device("meta"):   # no throw-away random init; parameters come from the spec below
            net = nn.Sequential(*[_module(layer) for layer in spec.layers])
        self.net = net.to_empty(device=self.torch_device).to(self.dtype)
        self.operand_rounding = operand_rounding
        if operand_rounding is not None:
            from .rounding import round_operands

            round_operands(self.net, operand_rounding)
        self.params = dict(self.net.named_parameters())
        self._write(self._validated(spec.init_params(seed)))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.0, momentum=0.0)
        self._graph = None          # (key, CUDAGraph, static x, static y, static loss)

    # ------------------------------------------------------------------ the contract
    def forward(self, x) -> torch.Tensor:
        """Logits (N, spec.output_dim) as a torch tensor on the model's device; x NumPy or torch. A bf16 model
        returns them as autocast leaves them (bfloat16); ``to_numpy`` gives float32."""
        with self._scope(), torch.no_grad(), self._autocast():
            return self.net(self._input(x))

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss and ``{name: gradient}`` as NumPy arrays of the model's dtype (float32 by default)."""
        loss = self.forward_backward(x, y)
        grads = {name: g.detach().cpu().numpy().copy() for name, g in self.gradients().items()}
        return float(loss.item()), grads

    def device_batch(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) as tensors on the model's device, validated: x (N, *input_shape) of the model's dtype,
        y int64 class indices (N,) (0/1 for a binary loss), range-checked on the host.

        Pass them to ``forward``, ``forward_backward``, ``train_step`` (and ``compiled``'s callables), so a
        timed call copies nothing from the host. On the CPU, x may share memory with a NumPy x.
        """
        xb = self._input(x)
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        yb = torch.from_numpy(self.spec.check_labels(y, xb.shape[0])).to(self.torch_device)
        return xb, yb

    def forward_backward(self, x, y) -> torch.Tensor:
        """Forward, loss and backward; returns the mean loss as a 0-d tensor (no sync). The gradients stay
        on the device, in the parameters' ``.grad`` (set afresh: ``zero_grad(set_to_none=True)`` first);
        read them with ``gradients()``."""
        x = self._input(x)
        y = self._labels(y, x.shape[0])
        with self._scope():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_loss(self.net, x, y)
            loss.backward()
        return loss.detach()

    def gradients(self) -> dict[str, torch.Tensor]:
        """``{name: gradient}`` as device tensors, of the last ``forward_backward`` / ``train_step``
        (torch's ``.grad``: the next step replaces them). Raises RuntimeError before any backward."""
        grads = {name: p.grad for name, p in self.params.items()}
        if any(g is None for g in grads.values()):
            raise RuntimeError(f"model {self.spec.name!r}: no gradients yet; run forward_backward or train_step")
        return grads

    def compiled(self, phase: str):
        """A callable ``fn(xb, yb, lr, momentum)`` running ``phase`` through ``torch.compile`` of the network.

        phase "inference" (logits, no grad; y, lr, momentum ignored), "forward_backward" (loss, gradients
        left in ``.grad``) or "train_step" (plus the SGD step with lr and momentum). xb, yb are taken as
        ``device_batch`` returns them, without further checks, so that a timed call is the compiled work
        alone. Each call of ``compiled`` compiles afresh (``torch._dynamo.reset()`` first); compilation
        itself happens on the first call of fn. Raises ``Unsupported`` with the reason when torch.compile
        refuses the network.
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
        try:
            # NOTE: every zoo network is an nn.Sequential, so all models share Sequential.forward's code
            # object; without a reset, dynamo's per-code recompile limit would silently fall back to eager
            # after a few models. Each call compiles its own module.
            torch._dynamo.reset()
            cnet = torch.compile(self.net, dynamic=False)
        except Exception as err:
            raise Unsupported(f"torch.compile: {type(err).__name__}: {err}") from None
        if phase == "inference":
            def infer(xb, yb=None, lr=None, momentum=None):
                with self._scope(), torch.no_grad(), self._autocast():
                    return cnet(xb)
            return infer

        targets = self._loss_targets

        def forward_backward(xb, yb, lr=None, momentum=None):
            with self._scope():
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward_loss(cnet, xb, targets(yb))
                loss.backward()
            return loss.detach()
        if phase == "forward_backward":
            return forward_backward

        def step(xb, yb, lr, momentum):
            self._set_hyper(lr, momentum)
            loss = forward_backward(xb, yb)
            with self._scope():
                self.optimizer.step()
            return loss
        return step

    def train_step(self, x, y, lr: float, momentum: float = 0.0) -> torch.Tensor:
        """One torch.optim.SGD step; returns the loss before the step as a 0-d tensor (no .item(), no sync)."""
        self.spec.check_lr(lr, momentum)
        x = self._input(x)
        return self._eager_step(x, self._labels(y, x.shape[0]), lr, momentum)

    def train_step_graphed(self, x, y, lr: float, momentum: float = 0.0) -> torch.Tensor:
        """``train_step`` replayed from a CUDA graph (forward, loss, backward and SGD captured once).

        The graph is captured on the first call and again whenever the batch shape, lr or momentum
        change (they are baked into it); x and y are copied into its static input buffers. Returns the
        graph's static loss tensor: it is overwritten by the next call, so read or clone it before then.
        With momentum != 0 and no velocity yet, the call runs eagerly: torch creates the velocity (v = g)
        on that step, and a captured graph would replay the creation instead of v = momentum*v + g.
        GPU only; on the CPU it raises RuntimeError.
        """
        if self.torch_device.type != "cuda":
            raise RuntimeError("train_step_graphed captures a CUDA graph and needs device='gpu'; "
                               "on the CPU use train_step")
        self.spec.check_lr(lr, momentum)
        x = self._input(x)
        y = self._labels(y, x.shape[0])
        if momentum != 0 and any(self.optimizer.state.get(p, {}).get("momentum_buffer") is None
                                 for p in self.params.values()):
            self._graph = None
            return self._eager_step(x, y, lr, momentum)
        key = (tuple(x.shape), y.dtype, float(lr), float(momentum))
        if self._graph is None or self._graph[0] != key:
            self._graph = None
            with self._scope():   # the captured kernels are chosen under the model's precision
                self._capture(key, x, y, lr, momentum)
        _, graph, static_x, static_y, static_loss = self._graph
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return static_loss

    def get_params(self) -> dict[str, np.ndarray]:
        """A copy of the parameters as NumPy arrays of the model's dtype (float32 by default)."""
        return {name: p.detach().cpu().numpy().copy() for name, p in self.params.items()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Load every parameter in place (captured graphs stay valid); validates everything first.

        The optimizer's velocity is kept.
        """
        self._write(self._validated(params))

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, torch.Tensor):
            if a.dtype == torch.bfloat16:   # a bf16 model's autocast logits; NumPy has no bfloat16
                a = a.float()
            return a.detach().cpu().numpy()
        return np.asarray(a)

    # ------------------------------------------------------------------ internals
    def _validated(self, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.spec.check_params(params)
        clean = {}
        for name in self.spec.param_shapes():
            a = params[name]
            t = a.detach().to("cpu", self.dtype) if isinstance(a, torch.Tensor) else \
                torch.from_numpy(np.array(a, dtype=self._np_dtype))
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"model {self.spec.name!r}: parameter {name!r} holds NaN or infinite values")
            clean[name] = t
        return clean

    def _write(self, params: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(params[name])

    def _input(self, x) -> torch.Tensor:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        self.spec.check_input(x)
        if isinstance(x, torch.Tensor):
            return x.to(self.torch_device, self.dtype).contiguous()
        return torch.from_numpy(np.ascontiguousarray(x, dtype=self._np_dtype)).to(self.torch_device)

    def _labels(self, y, batch: int) -> torch.Tensor:
        if isinstance(y, torch.Tensor) and y.device.type != "cpu":
            # NOTE: labels already on the GPU get shape and dtype checks only; a range check would read
            # them back to the host (a sync), which train_step must not force.
            if y.ndim != 1 or y.shape[0] != batch:
                raise ValueError(f"model {self.spec.name!r}: labels must have shape ({batch},) to match "
                                 f"the batch, got {tuple(y.shape)}")
            if y.is_floating_point() or y.is_complex():
                raise ValueError(f"model {self.spec.name!r}: labels on the GPU must be an integer tensor, "
                                 f"got dtype {y.dtype}")
            y = y.to(self.torch_device, torch.int64)
        else:
            if isinstance(y, torch.Tensor):
                y = y.numpy()
            y = torch.from_numpy(self.spec.check_labels(y, batch)).to(self.torch_device)
        return self._loss_targets(y)

    def _loss_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Validated int64 labels (N,) on the device -> what the loss takes (float (N, 1) for a binary loss)."""
        if self.spec.loss == "sigmoid_binary_cross_entropy":
            return y.to(self.dtype).reshape(y.shape[0], 1)
        return y

    def _scope(self):
        """``precision_scope`` of a tf32 / bf16 model; nothing for fp32 (its strict flags are the process's,
        set by ``build``), so an fp32 call costs what it did without precisions."""
        return contextlib.nullcontext() if self.precision == "fp32" else precision_scope(self.precision)

    def _autocast(self):
        dtype = AUTOCAST_DTYPE.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=dtype, cache_enabled=False)

    def _forward_loss(self, net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of ``net`` on (x, y), autocast for bf16 (the forward and the loss only; autocast keeps the
        loss in float32)."""
        with self._autocast():
            return self._loss(net(x), y)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.spec.loss == "softmax_cross_entropy":
            return F.cross_entropy(logits, y)
        return F.binary_cross_entropy_with_logits(logits, y)

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, momentum: float) -> torch.Tensor:
        self._set_hyper(lr, momentum)
        with self._scope():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_loss(self.net, x, y)
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def _set_hyper(self, lr: float, momentum: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)
            group["momentum"] = float(momentum)

    def _capture(self, key, x, y, lr, momentum) -> None:
        static_x, static_y = x.clone(), y.clone()
        self._set_hyper(lr, momentum)
        # Warm-up on a side stream (lazy cuBLAS/cuDNN init and cudnn.benchmark autotuning happen here, not
        # in the capture). Forward and backward only: the parameters do not change.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self._forward_loss(self.net, static_x, static_y).backward()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):   # recorded, not run: the parameters change only on replay
            static_loss = self._forward_loss(self.net, static_x, static_y)
            static_loss.backward()
            self.optimizer.step()
        self._graph = (key, graph, static_x, static_y, static_loss.detach())
