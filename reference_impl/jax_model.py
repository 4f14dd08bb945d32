"""The reference networks in JAX/XLA: the same model contract as the PyTorch reference, each phase one
``jax.jit``-compiled function.

Built by ``reference_impl.build(spec, device, seed, framework="jax")``; imported only then (importing this
module imports JAX). Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, F
features, U units.

Layers (pure functions of arrays, NCHW activations, PyTorch's parameter layouts):

- dense: ``y = x W^T + b``, ``lax.dot_general`` contracting F;
- conv2d: ``lax.conv_general_dilated`` with dimension numbers ("NCHW", "OIHW", "NCHW"): cross-correlation
  with zero padding, as ``torch.nn.Conv2d``;
- max / avg pooling: ``lax.reduce_window`` (max from -inf; sum divided by R*S), no padding. XLA routes the
  max-pooling gradient to the first maximum of a window in row-major order, as PyTorch;
- relu (``jax.nn.relu``: gradient 0 at 0, as PyTorch), sigmoid, tanh, flatten (C, H, W order).

Losses, in log-sum-exp form (stable for large logits; autodiff gives ``(softmax(z) - onehot(y)) / N`` and
``(sigmoid(z) - y) / N``):

- softmax cross-entropy: ``mean(logsumexp(z) - z[y])``;
- sigmoid binary cross-entropy: ``mean(logaddexp(0, z) - y z)``.

Strict FP32: every matrix product and convolution (and, through JAX's transpose rules, their gradients)
runs at ``lax.Precision.HIGHEST``; XLA would otherwise use TF32 on Hopper GPUs. ``jax_enable_x64`` is left
as it is: the model casts everything it creates to float32 (labels to int32, JAX's integer width without
x64), so it computes the same with or without it.

The train step is one compiled function ``(params, velocity, x, y, lr, momentum) -> (loss, params,
velocity, grads)`` whose parameter and velocity buffers are donated (XLA writes the new values in place).
lr and momentum are device scalars, so changing them recompiles nothing. SGD is ``torch.optim.SGD``
(dampening 0, no weight decay, no Nesterov): with momentum != 0, ``v = momentum v + g; w -= lr v``; with
momentum == 0, ``w -= lr g`` and v is left alone.

Compilation is ahead of time (``jit(...).lower(...).compile()``) on the first call of a phase at a batch
shape, timed, and kept in a process-wide cache shared by every model of the same spec on the same device;
``compile_seconds`` reports it, so a benchmark can report compile time apart from the timed calls.

GPU memory: XLA's client would by default reserve 75% of the GPU's memory when it starts, leaving little
for CuPy and PyTorch in the same process. Before JAX's backend starts, this module sets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless the environment already sets it): XLA's BFC allocator then
grows on demand and keeps what it grew for reuse, so the three share the card and JAX's own allocations
stay as fast as with preallocation. (``XLA_PYTHON_CLIENT_ALLOCATOR=platform`` would return every buffer
at once, but through a synchronous cudaMalloc/cudaFree per buffer, which would distort JAX's timings.)
This only works if nothing in the process started a JAX backend earlier; ``precision_flags`` reports
the setting in effect.

Convolution algorithms: XLA's autotuner picks cuDNN's algorithms as a JAX user gets them; this module
does not restrict it. On the H100 its choice for LeNet's 5x5 weight gradient is cuDNN's non-fused
Winograd, off by up to 1.7e-2 against float64, and that reference row fails parity as measured. A user who
wants only deterministic algorithms sets ``XLA_FLAGS=--xla_gpu_exclude_nondeterministic_ops=true``
before the import; it fixes that row but slows JAX's train steps 1.07-2.4x (figures in
docs/model-contract.md). ``precision_flags`` records the ``XLA_FLAGS`` in effect.
"""
from __future__ import annotations

import collections
import os
import time
from typing import Any, Callable, Mapping

# NOTE: before `import jax`, and before anything starts a backend: XLA reads these once, at start-up.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

PRECISION = lax.Precision.HIGHEST
PHASES = ("inference", "forward_backward", "train_step")
_CONV_DIMS = ("NCHW", "OIHW", "NCHW")


# ============================================================================ layers
def dense(x, W, b=None):
    """``x (N, F) @ W (U, F)^T (+ b (U,))`` -> (N, U), at HIGHEST precision."""
    y = lax.dot_general(x, W, (((1,), (1,)), ((), ())), precision=PRECISION)   # (N, U)
    return y if b is None else y + b


def conv2d(x, W, b, stride, padding):
    """Cross-correlation of x (N, C, H, W) with W (K, C, R, S) (+ b (K,)) -> (N, K, P, Q), zero padding
    ``padding = (ph, pw)``, ``stride = (sh, sw)``, at HIGHEST precision."""
    ph, pw = padding
    y = lax.conv_general_dilated(x, W, window_strides=tuple(stride), padding=((ph, ph), (pw, pw)),
                                 dimension_numbers=_CONV_DIMS, precision=PRECISION)   # (N, K, P, Q)
    return y if b is None else y + b[None, :, None, None]


def maxpool2d(x, kernel_size, stride):
    """Max over R x S windows of x (N, C, H, W) -> (N, C, P, Q), no padding."""
    r, s = kernel_size
    return lax.reduce_window(x, -np.inf, lax.max, (1, 1, r, s), (1, 1, *stride), "VALID")


def avgpool2d(x, kernel_size, stride):
    """Mean over R x S windows of x (N, C, H, W) -> (N, C, P, Q), no padding (every window holds R*S)."""
    r, s = kernel_size
    total = lax.reduce_window(x, np.float32(0), lax.add, (1, 1, r, s), (1, 1, *stride), "VALID")
    return total / np.float32(r * s)


ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


def _layer_fn(layer) -> Callable:
    """``f(params, h) -> h`` for one layer of the spec."""
    i, t = layer.index, layer.type
    if t == "dense":
        return lambda p, h: dense(h, p[f"{i}.weight"], p.get(f"{i}.bias"))
    if t == "conv2d":
        return lambda p, h: conv2d(h, p[f"{i}.weight"], p.get(f"{i}.bias"), layer.stride, layer.padding)
    if t == "maxpool2d":
        return lambda p, h: maxpool2d(h, layer.kernel_size, layer.stride)
    if t == "avgpool2d":
        return lambda p, h: avgpool2d(h, layer.kernel_size, layer.stride)
    if t == "flatten":
        return lambda p, h: h.reshape(h.shape[0], -1)
    act = ACTIVATIONS[t]
    return lambda p, h: act(h)


def softmax_cross_entropy(z, y):
    """Mean over the batch of ``logsumexp(z_n) - z_n[y_n]``; z (N, K) logits, y (N,) int class indices."""
    picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]      # (N,)
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)


def sigmoid_binary_cross_entropy(z, y):
    """Mean over the batch of ``log(1 + exp(z_n)) - y_n z_n``; z (N, 1) logits, y (N,) 0/1 labels."""
    t = y.astype(z.dtype).reshape(z.shape)                          # (N, 1)
    return jnp.mean(jnp.logaddexp(np.float32(0), z) - t * z)


LOSSES = {"softmax_cross_entropy": softmax_cross_entropy,
          "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy}


# ============================================================================ phases
def phase_functions(spec) -> dict[str, Callable]:
    """The spec's phases as pure functions (not yet jitted):

    - inference(params, x) -> logits (N, output_dim)
    - forward_backward(params, x, y) -> (loss, grads)
    - train_step(params, velocity, x, y, lr, momentum) -> (loss, params, velocity, grads)

    params, velocity and grads are dicts ``{name: array}`` in PyTorch's names and layouts.
    """
    layers = [_layer_fn(layer) for layer in spec.layers]
    loss_of_logits = LOSSES[spec.loss]

    def inference(params, x):
        h = x
        for f in layers:
            h = f(params, h)
        return h

    def loss(params, x, y):
        return loss_of_logits(inference(params, x), y)

    forward_backward = jax.value_and_grad(loss)

    def train_step(params, velocity, x, y, lr, momentum):
        value, grads = forward_backward(params, x, y)
        plain = momentum == 0       # torch.optim.SGD: no velocity is touched without momentum
        new_v = {k: jnp.where(plain, velocity[k], momentum * velocity[k] + g) for k, g in grads.items()}
        new_p = {k: params[k] - lr * jnp.where(plain, g, new_v[k]) for k, g in grads.items()}
        return value, new_p, new_v, grads

    return {"inference": inference, "forward_backward": forward_backward, "train_step": train_step}


_JITTED: dict[str, dict[str, Any]] = {}       # spec digest -> {phase: jitted function}
# (spec digest, phase, device, input shapes and dtypes) -> (jax Compiled, seconds it took)
_EXECUTABLES: collections.OrderedDict[tuple, tuple[Any, float]] = collections.OrderedDict()
_MAX_EXECUTABLES = 512


def _jitted(spec) -> dict[str, Any]:
    key = spec.digest()
    if key not in _JITTED:
        fns = phase_functions(spec)
        _JITTED[key] = {
            "inference": jax.jit(fns["inference"]),
            "forward_backward": jax.jit(fns["forward_backward"]),
            "train_step": jax.jit(fns["train_step"], donate_argnums=(0, 1)),   # params, velocity
        }
    return _JITTED[key]


def _signature(args) -> tuple:
    return tuple((tuple(a.shape), str(a.dtype)) for a in args if hasattr(a, "shape"))


# ============================================================================ the model
def device_of(device: str):
    """The JAX device for the contract's ``device`` ("cpu" or "gpu"); RuntimeError naming the fix."""
    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError as err:
        gpus, why = [], str(err).splitlines()[0]
    else:
        why = "no GPU device listed"
    if not gpus:
        raise RuntimeError(f"device 'gpu': JAX {jax.__version__} sees no GPU ({why}); install JAX's CUDA build "
                           "(`pip install -U \"jax[cuda13]\"` or \"jax[cuda12]\") on a machine with an NVIDIA "
                           "GPU, or use device='cpu'")
    return gpus[0]


class JaxModel:
    """``reference_impl.build(spec, device, framework="jax")``: the spec's network in JAX, FP32.

    The contract of docs/model-contract.md; device arrays are ``jax.Array`` on the model's JAX device.
    Labels from ``device_batch`` are int32 (JAX's integer width without x64).
    """

    impl = "reference"
    framework = "jax"
    precision = "fp32"    # strict FP32 only (lax.Precision.HIGHEST)

    def __init__(self, spec, device: str, seed: int = 0):
        self.spec = spec
        self.device = device
        self.jax_device = device_of(device)
        self._digest = spec.digest()
        self._fns = _jitted(spec)
        self._params = self._put(self._validated(spec.init_params(seed)))
        self._velocity = {k: jnp.zeros_like(v) for k, v in self._params.items()}
        self._grads: dict | None = None
        self._hyper: tuple | None = None          # ((lr, momentum), (lr, momentum) as device scalars)

    # ------------------------------------------------------------------ the contract
    def forward(self, x) -> jax.Array:
        """Logits (N, spec.output_dim) as a jax.Array on the model's device; x NumPy or JAX."""
        xb = self._input(x)
        return self._run("inference", self._params, xb)

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss and ``{name: gradient}`` as float32 NumPy arrays."""
        loss = self.forward_backward(x, y)
        grads = {name: np.array(g, dtype=np.float32) for name, g in self.gradients().items()}
        return float(loss), grads

    def device_batch(self, x, y) -> tuple[jax.Array, jax.Array]:
        """(x, y) as fresh arrays on the model's device, validated: x float32 (N, *input_shape), y int32
        class indices (N,) (0/1 for a binary loss), range-checked on the host. Calls on them copy nothing
        from the host."""
        xb = self._input(x)
        if isinstance(y, jax.Array):
            y = np.asarray(y)
        labels = self.spec.check_labels(y, xb.shape[0])
        return xb, jax.device_put(labels.astype(np.int32), self.jax_device)

    def forward_backward(self, x, y) -> jax.Array:
        """Forward, loss and backward: the mean loss as a 0-d jax.Array (no host sync). The gradients stay
        on the device; read them with ``gradients()``."""
        xb = self._input(x)
        yb = self._labels(y, xb.shape[0])
        loss, self._grads = self._run("forward_backward", self._params, xb, yb)
        return loss

    def gradients(self) -> dict[str, jax.Array]:
        """``{name: gradient}`` of the last ``forward_backward`` / ``train_step``, in
        ``spec.param_shapes()`` order (the next step replaces them). RuntimeError before any backward."""
        if self._grads is None:
            raise RuntimeError(f"model {self.spec.name!r}: no gradients yet; run forward_backward or train_step")
        return {name: self._grads[name] for name in self.spec.param_shapes()}

    def train_step(self, x, y, lr: float, momentum: float = 0.0) -> jax.Array:
        """One torch.optim.SGD step (module docstring); returns the loss before the step, 0-d, no sync."""
        self.spec.check_lr(lr, momentum)
        xb = self._input(x)
        yb = self._labels(y, xb.shape[0])
        return self._step(xb, yb, lr, momentum)

    def compiled(self, phase: str) -> Callable:
        """A callable ``fn(xb, yb, lr, momentum)`` running ``phase`` ("inference": logits, y, lr and
        momentum ignored; "forward_backward": loss, gradients kept for ``gradients()``; "train_step": plus
        the SGD step) on ``device_batch``'s arrays without further checks, so that a timed call is the
        compiled work and its dispatch alone. Compilation happens on the first call at a batch shape
        (``compile_seconds`` says how long it took)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
        if phase == "inference":
            return lambda xb, yb=None, lr=None, momentum=None: self._run("inference", self._params, xb)
        if phase == "forward_backward":
            def forward_backward(xb, yb, lr=None, momentum=None):
                loss, self._grads = self._run("forward_backward", self._params, xb, yb)
                return loss
            return forward_backward
        return lambda xb, yb, lr, momentum: self._step(xb, yb, lr, momentum)

    def get_params(self) -> dict[str, np.ndarray]:
        """A copy of the parameters as float32 NumPy arrays."""
        return {name: np.array(self._params[name], dtype=np.float32) for name in self.spec.param_shapes()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Load every parameter; validates everything first (ValueError naming the key; the model is then
        unchanged). The SGD velocity is kept."""
        self._params = self._put(self._validated(params))

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    # ------------------------------------------------------------------ compilation, for benchmarks
    def compile_seconds(self, phase: str, batch: int) -> float | None:
        """Seconds spent tracing, lowering and compiling ``phase`` at batch size ``batch`` on this device
        (by whichever model of this spec compiled it first in this process), or None if not compiled."""
        entry = self._cached(phase, batch)
        return None if entry is None else entry[1]

    def executable(self, phase: str, batch: int):
        """The compiled XLA executable (``jax.stages.Compiled``) of ``phase`` at ``batch``, or None: for
        inspection (``memory_analysis()``, ``as_text()``, ``cost_analysis()``)."""
        entry = self._cached(phase, batch)
        return None if entry is None else entry[0]

    def memory_bytes(self, phase: str, batch: int) -> int | None:
        """Device bytes the compiled phase needs at once, from XLA's memory analysis: arguments + outputs
        + temporaries - donated (aliased) buffers; None if not compiled or not reported."""
        ex = self.executable(phase, batch)
        try:
            m = ex.memory_analysis() if ex is not None else None
        except Exception:   # NOTE: not every backend reports it
            return None
        if m is None:
            return None
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)

    # ------------------------------------------------------------------ internals
    def _cached(self, phase: str, batch: int):
        for key, entry in _EXECUTABLES.items():
            if key[0] == self._digest and key[1] == phase and key[2] == self.jax_device and key[4] == batch:
                return entry
        return None

    def _run(self, phase: str, *args):
        xb = args[2] if phase == "train_step" else args[1]
        key = (self._digest, phase, self.jax_device, _signature(args[2:] if phase == "train_step" else args[1:]),
               int(xb.shape[0]))
        entry = _EXECUTABLES.get(key)
        if entry is None:
            start = time.perf_counter()
            compiled = self._fns[phase].lower(*args).compile()
            entry = (compiled, time.perf_counter() - start)
            _EXECUTABLES[key] = entry
            while len(_EXECUTABLES) > _MAX_EXECUTABLES:
                _EXECUTABLES.popitem(last=False)
        return entry[0](*args)

    def _step(self, xb, yb, lr, momentum) -> jax.Array:
        lr_m = self._hyper_scalars(lr, momentum)
        loss, self._params, self._velocity, self._grads = self._run(
            "train_step", self._params, self._velocity, xb, yb, *lr_m)
        return loss

    def _hyper_scalars(self, lr, momentum) -> tuple:
        """lr and momentum as float32 device scalars, kept while they stay the same (no copy per step)."""
        key = (float(lr), float(momentum))
        if self._hyper is None or self._hyper[0] != key:
            self._hyper = (key, tuple(jax.device_put(np.float32(v), self.jax_device) for v in key))
        return self._hyper[1]

    def _validated(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.spec.check_params(params)
        clean = {}
        for name in self.spec.param_shapes():
            a = np.array(params[name], dtype=np.float32)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"model {self.spec.name!r}: parameter {name!r} holds NaN or infinite values")
            clean[name] = a
        return clean

    def _put(self, params: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {name: jax.device_put(a, self.jax_device) for name, a in params.items()}

    def _input(self, x) -> jax.Array:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        self.spec.check_input(x)
        if isinstance(x, jax.Array):
            if x.dtype == jnp.float32 and x.devices() == {self.jax_device}:
                return x        # immutable: sharing it is safe
            x = np.asarray(x)
        # NOTE: always a fresh float32 copy: on the CPU, device_put may alias the NumPy buffer it is given,
        # and the caller may change that array later.
        return jax.device_put(np.array(x, dtype=np.float32, order="C"), self.jax_device)

    def _labels(self, y, batch: int) -> jax.Array:
        if isinstance(y, jax.Array) and self.jax_device.platform != "cpu":
            # NOTE: labels already on the GPU get shape and dtype checks only; a range check would read them
            # back to the host (a sync), which train_step must not force. An out-of-range label gives a
            # wrong (not failing) loss, as with the PyTorch reference.
            if y.ndim != 1 or y.shape[0] != batch:
                raise ValueError(f"model {self.spec.name!r}: labels must have shape ({batch},) to match "
                                 f"the batch, got {tuple(y.shape)}")
            if not jnp.issubdtype(y.dtype, jnp.integer):
                raise ValueError(f"model {self.spec.name!r}: labels on the GPU must be an integer array, "
                                 f"got dtype {y.dtype}")
            if y.dtype != jnp.int32 or y.devices() != {self.jax_device}:
                y = jax.device_put(y.astype(jnp.int32), self.jax_device)
            return y
        if isinstance(y, jax.Array):
            y = np.asarray(y)
        labels = self.spec.check_labels(y, batch)
        return jax.device_put(labels.astype(np.int32), self.jax_device)

    def __repr__(self) -> str:
        return (f"<JaxModel {self.spec.name!r} device={self.device!r} ({self.jax_device}) "
                f"params={self.spec.num_params():,}>")


def build(spec, device: str, seed: int = 0) -> JaxModel:
    """The JAX model of a loaded ``modelspec.ModelSpec`` on ``device`` ("cpu" or "gpu")."""
    return JaxModel(spec, device, seed)


def precision_flags() -> dict:
    """The settings that decide what the JAX model computes and how it shares the GPU, read back now."""
    import importlib.metadata as md

    flags = {
        "jax.lax.Precision of every dot_general / conv_general_dilated": str(PRECISION),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", ""),
        "XLA_PYTHON_CLIENT_ALLOCATOR": os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "default"),
        "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", ""),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
    }
    for dist in ("jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt"):
        try:
            flags[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return flags
