"""The model contract, implemented once for every backend of our own implementation.

The contract (the same on ``reference_impl``'s models; arrays "device arrays": NumPy on the CPU, CuPy on
the GPU):

=============================================  ============================================================
``forward(x)``                                 logits (N, spec.output_dim), a device array
``loss_and_grads(x, y)``                       ``(loss float, {name: float32 NumPy gradient})``
``device_batch(x, y)``                         ``(xb, yb)``: x float32 (N, *input_shape) and y int64 (N,)
                                               as fresh device arrays, validated (labels range-checked on
                                               the host); timed calls on them copy nothing from the host
``forward_backward(x, y)``                     forward, loss, backward; the mean loss as a 0-d device array
                                               (no sync); the gradients stay on the device
``gradients()``                                ``{name: device array}``: the gradients of the last
                                               ``forward_backward`` / ``train_step`` (overwritten by the next)
``train_step(x, y, lr, momentum=0.0)``         one SGD step; the loss before it, 0-d device array (no sync)
``get_params()`` / ``set_params(params)``      float32 NumPy copies in / out
``to_numpy(a)``                                a device array -> NumPy
``spec``, ``impl`` ("custom"), ``device``,     attributes
``precision`` ("fp32", "tf32", "bf16")
=============================================  ============================================================

``CustomModel`` does everything that does not touch arrays: it loads the spec, validates inputs, labels,
learning rates and parameter dicts (``ValueError`` naming the problem, through ``modelspec``'s
``check_*`` functions), and sequences forward -> loss -> backward -> SGD. A backend (``custom_impl.cpu``,
``custom_impl.gpu``) subclasses it and implements the array work in these hooks:

=============================  =====================================================================
hook                           what it does
=============================  =====================================================================
``_setup(params)``             build the per-layer state from ``self.spec.layers`` and load ``params``
                               (a dict of float32 NumPy arrays, already validated); called once from
                               ``__init__`` with ``spec.init_params(seed)``.
``_asarray(x)``                a NumPy or backend array -> float32 C-contiguous backend array (N, ...).
``_labels(y)``                 validated int64 NumPy labels (N,) -> what ``_loss`` takes (backend array).
``_forward(x, train)``         logits (N, spec.output_dim). With ``train=True`` each layer saves what its
                               backward needs; with ``train=False`` nothing need be saved.
``_loss(logits, y)``           ``(loss, dlogits)``: loss a 0-d backend array (mean over the batch, no host
                               sync), dlogits (N, output_dim) its gradient w.r.t. the logits.
``_backward(dlogits)``         back through every layer; writes (``=``, never ``+=``) each parameter's
                               gradient. The first layer does not compute dx (the input needs none).
``_read_params()``             ``{name: backend array}`` of the parameters, in ``spec.param_shapes()`` order.
``_read_grads()``              ``{name: backend array}`` of the gradients of the last ``_backward``.
``_write_params(params)``      copy a validated dict of float32 NumPy arrays into the parameters.
``_sgd(lr, momentum)``         one ``torch.optim.SGD`` step on every parameter (see ``train_step``).
``to_numpy(a)``                a backend array -> NumPy array.
=============================  =====================================================================

Parameter names are ``"{i}.weight"`` / ``"{i}.bias"`` with i the layer's index in ``spec.layers``; shapes
are PyTorch's (dense (U, F), conv (K, C, R, S)). Parameter gradients are written (=), never accumulated.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import modelspec


class CustomModel:
    """Backend-neutral base of our implementation: the model contract of docs/DESIGN.md.

    Subclasses set ``device`` and implement the hooks listed in the module docstring.

    >>> import custom_impl
    >>> m = custom_impl.build("thesis-2-3-1")
    >>> x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    >>> m.forward(x).shape
    (5, 1)
    """

    impl = "custom"
    device = "?"
    precision = "fp32"   # what the dense and conv products run in (the GPU model may be built with another)

    def __init__(self, spec, seed: int = 0):
        self.spec = modelspec.load(spec)
        self._setup(self.spec.init_params(seed))

    # ------------------------------------------------------------------ the contract
    def forward(self, x):
        """Logits (N, spec.output_dim) as a backend array; x float (N, *input_shape), NumPy or backend."""
        return self._forward(self._checked_input(x), train=False)

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss over the batch and ``{name: gradient}`` (NumPy float32) for every parameter."""
        loss = self.forward_backward(x, y)
        grads = {name: np.array(self.to_numpy(g), dtype=np.float32) for name, g in self._read_grads().items()}
        return float(self.to_numpy(loss)), grads

    def device_batch(self, x, y):
        """``(xb, yb)``: x as a float32 C-contiguous device array (N, *input_shape) and y as int64 device
        labels (N,), both validated (labels range-checked on the host) and freshly allocated (not the
        model's internal buffers), for ``forward``, ``forward_backward`` and ``train_step``: calls on them
        copy nothing from the host (the GPU model copies them device-to-device into its own buffers).

        >>> import custom_impl
        >>> m = custom_impl.build("thesis-2-3-1")
        >>> xb, yb = m.device_batch([[0.5, -1.0]], [1])
        >>> xb.dtype, yb.dtype
        (dtype('float32'), dtype('int64'))
        """
        xb = self._checked_input(x)
        yb = self._checked_labels(y, xb.shape[0])
        return xb.copy(), yb.copy()

    def forward_backward(self, x, y):
        """Forward, loss and backward: the mean loss as a 0-d device array (no host sync).

        The gradients are written into the model's device buffers and stay there (no host copy); read them
        with ``gradients()``. x, y as for ``train_step`` (``device_batch``'s arrays cost no host copy).
        """
        x = self._checked_input(x)
        y = self._checked_labels(y, x.shape[0])
        loss, dlogits = self._loss(self._forward(x, train=True), y)
        self._backward(dlogits)
        return loss

    def gradients(self) -> dict:
        """``{name: device array}`` of every parameter's gradient from the last ``forward_backward`` /
        ``train_step``, in ``spec.param_shapes()`` order: the model's own buffers (the next step overwrites
        them; copy what you keep)."""
        return dict(self._read_grads())

    def train_step(self, x, y, lr: float, momentum: float = 0.0):
        """One SGD step; returns the loss before the step as a 0-d backend array (no host sync).

        SGD exactly as ``torch.optim.SGD`` (no dampening, no weight decay, not Nesterov):
        if momentum != 0: v = g on the first such step, then v = momentum*v + g; w -= lr*v.
        if momentum == 0: w -= lr*g (the velocity is left as it is).
        The velocity is kept between calls; lr and momentum may change from call to call.
        """
        self.spec.check_lr(lr, momentum)
        loss = self.forward_backward(x, y)
        self._sgd(float(lr), float(momentum))
        return loss

    def get_params(self) -> dict[str, np.ndarray]:
        """A copy of the parameters as float32 NumPy arrays, ``{"0.weight": (U, F), "0.bias": (U,), ...}``."""
        return {name: np.array(self.to_numpy(p), dtype=np.float32) for name, p in self._read_params().items()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Load every parameter; validates all keys, shapes and values before changing anything.

        The SGD velocity is kept (as with torch, where loading weights leaves the optimizer state).
        """
        self.spec.check_params(params)
        clean = {}
        for name in self.spec.param_shapes():
            a = params[name]
            a = np.array(a if isinstance(a, np.ndarray) else self.to_numpy(a), dtype=np.float32)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"model {self.spec.name!r}: parameter {name!r} holds NaN or infinite values")
            clean[name] = np.ascontiguousarray(a)
        self._write_params(clean)

    def to_numpy(self, a) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ checks shared by every backend
    def _checked_input(self, x):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        self.spec.check_input(x)
        return self._asarray(x)

    def _checked_labels(self, y, batch: int):
        if not isinstance(y, np.ndarray) and hasattr(y, "shape") and not isinstance(y, (list, tuple)):
            y = self.to_numpy(y)  # a backend array: the range check needs the values on the host
        return self._labels(self.spec.check_labels(y, batch))

    # ------------------------------------------------------------------ hooks (see the module docstring)
    def _setup(self, params: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _asarray(self, x):
        raise NotImplementedError

    def _labels(self, y: np.ndarray):
        raise NotImplementedError

    def _forward(self, x, train: bool):
        raise NotImplementedError

    def _loss(self, logits, y):
        raise NotImplementedError

    def _backward(self, dlogits) -> None:
        raise NotImplementedError

    def _read_params(self) -> dict:
        raise NotImplementedError

    def _read_grads(self) -> dict:
        raise NotImplementedError

    def _write_params(self, params: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _sgd(self, lr: float, momentum: float) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        n = self.spec.num_params()
        return (f"<{type(self).__name__} {self.spec.name!r} device={self.device!r} precision={self.precision!r} "
                f"params={n:,}>")
