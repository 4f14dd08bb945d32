"""The model spec: one description of a network that both implementations are built from.

A spec is a dict (or a TOML / JSON file holding one) with exactly the keys ``name``, ``input_shape``,
``num_classes``, ``loss`` and ``layers``. ``ModelSpec.from_dict`` validates it, normalises every layer
(pairs for kernel sizes, strides and paddings; shapes inferred layer by layer) and raises ``SpecError``
with the layer index, the type, the field and the fix for anything it cannot accept.

Shape legend used below: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel,
F in-features, U units (out-features).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
from typing import Any, Mapping

import numpy as np

LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")
LAYER_TYPES = ("dense", "conv2d", "maxpool2d", "avgpool2d", "flatten", "relu", "sigmoid", "tanh")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
PHASES = ("forward", "forward_backward", "train_step")

TOP_KEYS = ("name", "input_shape", "num_classes", "loss", "layers")

# Specs whose parameters need more bytes than this (float32) are refused at validation, before anything is
# allocated. Override with the environment variable MODELSPEC_MAX_PARAM_BYTES or by setting this attribute.
MAX_PARAM_BYTES = 8 * 2**30
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)


def max_param_bytes() -> int:
    """The limit in force: MODELSPEC_MAX_PARAM_BYTES from the environment, else ``MAX_PARAM_BYTES``."""
    env = os.environ.get("MODELSPEC_MAX_PARAM_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise SpecError(f"MODELSPEC_MAX_PARAM_BYTES={env!r} is not a number of bytes; e.g. "
                            "MODELSPEC_MAX_PARAM_BYTES=17179869184 (16 GiB)") from None
    return int(MAX_PARAM_BYTES)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB ({n:,} bytes)"
# Allowed keys per layer type, with defaults (None = required).
LAYER_KEYS: dict[str, dict[str, Any]] = {
    "dense": {"units": None, "bias": True},
    "conv2d": {"out_channels": None, "kernel_size": None, "stride": 1, "padding": 0, "bias": True},
    "maxpool2d": {"kernel_size": None, "stride": None},
    "avgpool2d": {"kernel_size": None, "stride": None},
    "flatten": {},
    "relu": {},
    "sigmoid": {},
    "tanh": {},
}


class SpecError(ValueError):
    """A model spec that cannot be accepted; the message names the place, the field and the fix."""


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class Flops:
    """Floating-point operations of one layer for a batch; a multiply-add counts as 2."""

    forward: int = 0
    backward_data: int = 0
    backward_weights: int = 0


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Bytes one layer reads and writes for a batch, per pass (same fields as ``Flops``).

    The counting model is compulsory traffic: every tensor a pass reads or writes crosses memory once
    (perfect reuse inside the layer, none between layers). It is what a roofline needs for arithmetic
    intensity = FLOPs / bytes; a real kernel may move more (tiles re-read, im2col buffers) or, fused
    with its neighbours, less.
    """

    forward: int = 0
    backward_data: int = 0
    backward_weights: int = 0


@dataclasses.dataclass(frozen=True)
class Layer:
    """One normalised layer. Spatial fields are (h, w) pairs; shapes are per sample."""

    index: int
    type: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    units: int | None = None
    out_channels: int | None = None
    kernel_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    bias: bool = False

    @property
    def has_params(self) -> bool:
        return self.type in ("dense", "conv2d")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """PyTorch layouts: dense weight (U, F); conv weight (K, C, R, S); bias (U,) / (K,)."""
        if self.type == "dense":
            shapes = {"weight": (self.units, self.in_shape[0])}
            if self.bias:
                shapes["bias"] = (self.units,)
            return shapes
        if self.type == "conv2d":
            shapes = {"weight": (self.out_channels, self.in_shape[0], *self.kernel_size)}
            if self.bias:
                shapes["bias"] = (self.out_channels,)
            return shapes
        return {}

    @property
    def fan_in(self) -> int:
        if self.type == "dense":
            return self.in_shape[0]
        if self.type == "conv2d":
            return self.in_shape[0] * self.kernel_size[0] * self.kernel_size[1]
        return 0

    def flops(self, batch: int) -> Flops:
        """FLOPs of this layer at batch size ``batch`` (formulas in the README, "FLOP counts")."""
        n = int(batch)
        out_elems = n * math.prod(self.out_shape)
        in_elems = n * math.prod(self.in_shape)
        if self.type in ("dense", "conv2d"):
            macs = out_elems * self.fan_in          # one multiply-add per output element per fan-in term
            bias = out_elems if self.bias else 0    # one add per output element
            return Flops(forward=2 * macs + bias, backward_data=2 * macs, backward_weights=2 * macs + bias)
        if self.type in ("maxpool2d", "avgpool2d"):
            window = self.kernel_size[0] * self.kernel_size[1]
            back = out_elems * window if self.type == "avgpool2d" else out_elems
            return Flops(forward=out_elems * window, backward_data=back)
        if self.type in ACTIVATIONS:
            # relu: compare / select; sigmoid, tanh: counted as 1 per element each way (transcendentals
            # are not FLOPs in the usual sense; this keeps the totals dominated by GEMM work).
            return Flops(forward=in_elems, backward_data=in_elems)
        return Flops()  # flatten moves nothing

    def bytes_moved(self, batch: int, itemsize: int = 4) -> Traffic:
        """Bytes read + written by this layer at batch size ``batch`` (``Traffic``'s counting model).

        With X the input, Y the output, Wt the weights and b the bias, in elements times ``itemsize``:
        dense / conv2d forward X + Wt + b + Y, backward_data dY + Wt + dX, backward_weights X + dY + dWt + db;
        pools forward X + Y, backward_data dY + dX (the max pool's saved argmax is an implementation choice and
        is not counted); activations forward X + Y, backward_data Y (or X) + dY + dX; flatten is a view (0).

        >>> Layer(0, "dense", (784,), (128,), units=128, bias=True).bytes_moved(64).forward
        635392
        """
        n = int(batch)
        x = n * math.prod(self.in_shape)
        y = n * math.prod(self.out_shape)
        if self.type in ("dense", "conv2d"):
            w = sum(math.prod(s) for name, s in self.param_shapes().items() if name == "weight")
            b = sum(math.prod(s) for name, s in self.param_shapes().items() if name == "bias")
            return Traffic(forward=itemsize * (x + w + b + y), backward_data=itemsize * (y + w + x),
                           backward_weights=itemsize * (x + y + w + b))
        if self.type in ("maxpool2d", "avgpool2d"):
            return Traffic(forward=itemsize * (x + y), backward_data=itemsize * (y + x))
        if self.type in ACTIVATIONS:
            return Traffic(forward=itemsize * (x + y), backward_data=itemsize * (y + y + x))
        return Traffic()


def _where(i: int, t: str) -> str:
    return f"layer {i} ({t})"


def _int_field(where: str, field: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"{where}: {field!r} must be an integer >= {minimum}, got {value!r}; write e.g. {field} = {max(minimum, 1)}")
    if value < minimum:
        kind = {0: "non-negative (>= 0)", 1: "positive (>= 1)"}.get(minimum, f">= {minimum}")
        raise SpecError(f"{where}: {field!r} must be {kind}, got {value}")
    return int(value)


def _pair_field(where: str, field: str, value, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{where}: {field!r} must be an integer or a pair [h, w], got {list(value)!r}")
        return (_int_field(where, field, value[0], minimum), _int_field(where, field, value[1], minimum))
    v = _int_field(where, field, value, minimum)
    return (v, v)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A validated network: input shape, classes, loss and normalised layers."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    loss: str
    layers: tuple[Layer, ...]
    raw_layers: tuple[dict, ...] = dataclasses.field(repr=False, compare=False, default=())

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        """Validate ``d`` and build the spec; raises SpecError naming the problem and the fix.

        >>> spec = ModelSpec.from_dict({"name": "tiny", "input_shape": [2], "num_classes": 2,
        ...     "loss": "sigmoid_binary_cross_entropy",
        ...     "layers": [{"type": "dense", "units": 3}, {"type": "relu"}, {"type": "dense", "units": 1}]})
        >>> spec.layers[0].out_shape
        (3,)
        """
        if not isinstance(d, Mapping):
            raise SpecError(f"a model spec must be a mapping (dict / TOML table), got {type(d).__name__}")
        for key in d:
            if key not in TOP_KEYS:
                raise SpecError(f"unknown top-level key {key!r}{_suggest(key, TOP_KEYS)}; allowed keys: {', '.join(TOP_KEYS)}")
        for key in TOP_KEYS:
            if key not in d:
                raise SpecError(f"missing top-level key {key!r}; a spec needs {', '.join(TOP_KEYS)}")
        name = d["name"]
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"'name' must be a non-empty string, got {name!r}")
        if not name.isprintable():
            raise SpecError(f"'name' must be printable text on one line (no newline, tab or control characters), "
                            f"got {name!r}; e.g. name = \"my-mlp\"")
        shape = d["input_shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
            raise SpecError(f"'input_shape' must be [features] or [channels, height, width], got {shape!r}")
        for s in shape:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
                raise SpecError(f"'input_shape' must hold positive integers, got {list(shape)!r}")
        input_shape = tuple(int(s) for s in shape)
        num_classes = _int_field("spec", "num_classes", d["num_classes"], minimum=2)
        loss = d["loss"]
        if loss not in LOSSES:
            raise SpecError(f"unknown loss {loss!r}{_suggest(loss, LOSSES)}; choose one of {', '.join(LOSSES)}")
        raw = d["layers"]
        if not isinstance(raw, (list, tuple)) or len(raw) == 0:
            raise SpecError("'layers' must be a non-empty list of tables, e.g. [[layers]] type = \"dense\" units = 10")

        layers = []
        cur = input_shape
        for i, entry in enumerate(raw):
            layer = _build_layer(i, entry, cur)
            layers.append(layer)
            cur = layer.out_shape
        _check_head(layers, num_classes, loss)
        _check_size(name, input_shape, layers)
        return cls(name=name, input_shape=input_shape, num_classes=num_classes, loss=loss,
                   layers=tuple(layers), raw_layers=tuple(dict(e) for e in raw))

    def digest(self) -> str:
        """A short hash of the spec's content (its canonical JSON): two specs with the same name but other
        layers get different digests. 12 hex digits of SHA-256.

        >>> len(ModelSpec.from_dict({"name": "t", "input_shape": [2], "num_classes": 2, "loss": "softmax_cross_entropy",
        ...     "layers": [{"type": "dense", "units": 2}]}).digest())
        12
        """
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def to_dict(self) -> dict:
        """The spec as a plain dict that ``from_dict`` accepts (normalised: pairs written out)."""
        out_layers = []
        for layer in self.layers:
            e: dict[str, Any] = {"type": layer.type}
            if layer.type == "dense":
                e.update(units=layer.units, bias=layer.bias)
            elif layer.type == "conv2d":
                e.update(out_channels=layer.out_channels, kernel_size=list(layer.kernel_size),
                         stride=list(layer.stride), padding=list(layer.padding), bias=layer.bias)
            elif layer.type in ("maxpool2d", "avgpool2d"):
                e.update(kernel_size=list(layer.kernel_size), stride=list(layer.stride))
            out_layers.append(e)
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "loss": self.loss, "layers": out_layers}

    # ---------------------------------------------------------------- shapes and parameters
    @property
    def output_dim(self) -> int:
        """Logits per sample: num_classes for softmax cross-entropy, 1 for sigmoid binary cross-entropy."""
        return self.layers[-1].out_shape[0]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered ``{"{i}.weight": shape, "{i}.bias": shape}`` over the layers that have parameters."""
        shapes = {}
        for layer in self.layers:
            for pname, shape in layer.param_shapes().items():
                shapes[f"{layer.index}.{pname}"] = shape
        return shapes

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """PyTorch's default initialisation, drawn from NumPy so both implementations share it.

        weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5) reduces to this),
        bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = F for dense, C*R*S for conv2d.
        """
        rng = np.random.default_rng(seed)
        params = {}
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.fan_in) if layer.has_params else 0.0
            for pname, shape in layer.param_shapes().items():
                params[f"{layer.index}.{pname}"] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        return params

    # ---------------------------------------------------------------- FLOPs
    def layer_flops(self, batch: int) -> list[Flops]:
        return [layer.flops(batch) for layer in self.layers]

    def flops(self, batch: int, phase: str = "forward") -> int:
        """FLOPs of one pass at batch size ``batch``.

        forward: sum of layer forwards. forward_backward: plus every layer's backward_weights and the
        backward_data of every layer but the first (the input needs no gradient), plus the loss
        (forward and gradient, ~5 per logit). train_step: plus 4 per parameter for SGD with momentum
        (v = m*v + g; w -= lr*v).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
        per = self.layer_flops(batch)
        total = sum(f.forward for f in per)
        if phase == "forward":
            return total
        total += sum(f.backward_weights for f in per)
        total += sum(f.backward_data for f in per[1:])
        total += 5 * batch * self.output_dim
        if phase == "train_step":
            total += 4 * self.num_params()
        return total

    # ---------------------------------------------------------------- bytes moved
    def layer_bytes(self, batch: int, itemsize: int = 4) -> list[Traffic]:
        return [layer.bytes_moved(batch, itemsize) for layer in self.layers]

    def bytes_moved(self, batch: int, phase: str = "forward", itemsize: int = 4) -> int:
        """Bytes read + written by one pass at batch size ``batch``, summed over the layers like ``flops``.

        forward: sum of layer forwards. forward_backward: plus every layer's backward_weights and the
        backward_data of every layer but the first, plus the loss (read the logits and the int64 labels,
        write the logits' gradient). train_step: plus SGD with momentum, 5 accesses per parameter (read
        w, g, v; write w, v). Arithmetic intensity = ``flops(batch, phase) / bytes_moved(batch, phase)``.
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
        per = self.layer_bytes(batch, itemsize)
        total = sum(t.forward for t in per)
        if phase == "forward":
            return total
        total += sum(t.backward_weights for t in per)
        total += sum(t.backward_data for t in per[1:])
        total += 2 * itemsize * batch * self.output_dim + 8 * batch
        if phase == "train_step":
            total += 5 * itemsize * self.num_params()
        return total

    # ---------------------------------------------------------------- input checks (shared by both implementations)
    def check_input(self, x) -> None:
        """Raise ValueError unless ``x`` (anything with .shape and .dtype) is a float batch of inputs."""
        shape = tuple(getattr(x, "shape", ()))
        want = "(N, " + ", ".join(str(s) for s in self.input_shape) + ")"
        if len(shape) != 1 + len(self.input_shape) or shape[1:] != self.input_shape:
            hint = ""
            if len(shape) == len(self.input_shape) and shape == self.input_shape:
                hint = "; for a single sample add a batch axis: x[None]"
            raise ValueError(f"model {self.name!r}: input must have shape {want}, got {shape}{hint}")
        if shape[0] == 0:
            raise ValueError(f"model {self.name!r}: empty batch (N = 0); pass at least one sample")
        kind = getattr(getattr(x, "dtype", None), "kind", None)
        if kind is None:  # torch dtypes have no .kind
            kind = "f" if getattr(x.dtype, "is_floating_point", False) else "i"
        if kind != "f":
            raise ValueError(f"model {self.name!r}: input must be floating point (float32), got dtype {x.dtype}; "
                             "convert it, e.g. x.astype(np.float32)")

    def check_labels(self, y, batch: int) -> np.ndarray:
        """Validate labels for a batch and return them as an int64 NumPy array (N,)."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != batch or batch == 0:
            raise ValueError(f"model {self.name!r}: labels must have shape ({batch},) to match the batch, got {y.shape}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"model {self.name!r}: labels must be integer class indices, got non-integer values")
        elif y.dtype.kind not in "iub":
            raise ValueError(f"model {self.name!r}: labels must be integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.num_classes:
            what = "0/1 labels" if self.loss == "sigmoid_binary_cross_entropy" else "class labels"
            raise ValueError(f"model {self.name!r}: {what} must lie in [0, {self.num_classes - 1}], "
                             f"got values in [{lo}, {hi}]")
        return y

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ValueError naming the key if ``params`` does not match the spec's names and shapes."""
        want = self.param_shapes()
        for key in params:
            if key not in want:
                raise ValueError(f"model {self.name!r}: unknown parameter {key!r}{_suggest(key, want)}; "
                                 f"expected keys: {', '.join(want)}")
        for key, shape in want.items():
            if key not in params:
                raise ValueError(f"model {self.name!r}: missing parameter {key!r} of shape {shape}")
            value = params[key]
            dtype = getattr(value, "dtype", None)
            if dtype is None:
                try:
                    dtype = np.asarray(value).dtype
                except (TypeError, ValueError) as err:
                    raise ValueError(f"model {self.name!r}: parameter {key!r} is not an array of numbers ({err})") from None
            kind = getattr(dtype, "kind", None)
            if kind is None:   # torch dtypes have no .kind
                kind = "c" if getattr(dtype, "is_complex", False) else (
                    "f" if getattr(dtype, "is_floating_point", False) else "i")
            if kind not in "fiu":
                what = {"c": "complex", "O": "object", "b": "boolean", "U": "text", "S": "bytes"}.get(kind, str(dtype))
                raise ValueError(f"model {self.name!r}: parameter {key!r} has {what} dtype {dtype}; parameters are "
                                 "real numbers stored as float32: pass e.g. np.asarray(a, dtype=np.float32)"
                                 + (" (taking the real part with a.real only if the imaginary part is meant to be "
                                    "dropped)" if kind == "c" else ""))
            got = tuple(getattr(value, "shape", np.shape(value)))
            if got != shape:
                raise ValueError(f"model {self.name!r}: parameter {key!r} must have shape {shape}, got {got}")

    @staticmethod
    def check_lr(lr, momentum) -> None:
        """Raise ValueError unless lr and momentum are finite, >= 0 and representable in float32.

        The models compute in float32: a value above ~3.4e38 would become inf (and the weights inf/NaN),
        a positive value below ~1.4e-45 would become 0.
        """
        for nm, v in (("lr", lr), ("momentum", momentum)):
            if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{nm} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"{nm} must be >= 0, got {v}")
            if abs(float(v)) > FLOAT32_MAX:
                raise ValueError(f"{nm} = {v!r} does not fit in float32 (largest {FLOAT32_MAX:.4g}), which the models "
                                 f"compute in; use a value below that (usual learning rates are 1e-4 to 1)")
            if 0 < float(v) < FLOAT32_TINY:
                raise ValueError(f"{nm} = {v!r} rounds to 0 in float32 (smallest {FLOAT32_TINY:.3g}); use 0 or a "
                                 "larger value")


def _check_size(name: str, input_shape: tuple[int, ...], layers: list[Layer]) -> None:
    """Refuse specs whose float32 parameters (or one sample's activations) exceed ``max_param_bytes()``."""
    limit = max_param_bytes()
    need = 4 * sum(math.prod(s) for layer in layers for s in layer.param_shapes().values())
    if need > limit:
        big = max(layers, key=lambda l: sum(math.prod(s) for s in l.param_shapes().values()))
        raise SpecError(f"model {name!r}: its parameters need {_gib(need)} as float32 (layer {big.index} "
                        f"({big.type}) alone {_gib(4 * sum(math.prod(s) for s in big.param_shapes().values()))}), "
                        f"more than the limit of {_gib(limit)}; use fewer units / channels, or raise the limit "
                        "with MODELSPEC_MAX_PARAM_BYTES")
    for layer in layers:
        act = 4 * math.prod(layer.out_shape)
        if act > limit:
            raise SpecError(f"{_where(layer.index, layer.type)}: one sample's output {layer.out_shape} needs "
                            f"{_gib(act)} as float32, more than the limit of {_gib(limit)}; use fewer units / "
                            "channels or a smaller input, or raise the limit with MODELSPEC_MAX_PARAM_BYTES")


def _build_layer(i: int, entry, cur: tuple[int, ...]) -> Layer:
    if not isinstance(entry, Mapping):
        raise SpecError(f"layer {i}: each layer must be a table with a 'type', got {entry!r}")
    if "type" not in entry:
        raise SpecError(f"layer {i}: missing 'type'; one of {', '.join(LAYER_TYPES)}")
    t = entry["type"]
    if t not in LAYER_KEYS:
        raise SpecError(f"layer {i}: unknown type {t!r}{_suggest(t, LAYER_TYPES)}; choose one of {', '.join(LAYER_TYPES)}")
    where = _where(i, t)
    allowed = LAYER_KEYS[t]
    for key in entry:
        if key != "type" and key not in allowed:
            opts = ", ".join(allowed) if allowed else "no other keys"
            raise SpecError(f"{where}: unknown key {key!r}{_suggest(key, allowed)}; allowed: {opts}")
    for key, default in allowed.items():
        if default is None and key not in entry and not (key == "stride" and t.endswith("pool2d")):
            raise SpecError(f"{where}: missing required key {key!r}")
    bias = entry.get("bias", True)
    if "bias" in allowed and not isinstance(bias, bool):
        raise SpecError(f"{where}: 'bias' must be true or false, got {bias!r}")

    if t == "dense":
        units = _int_field(where, "units", entry["units"])
        if len(cur) != 1:
            raise SpecError(f"{where}: expects a flat input (F,) but gets {cur}; add {{type = \"flatten\"}} before it")
        return Layer(i, t, cur, (units,), units=units, bias=bias)
    if t == "flatten":
        return Layer(i, t, cur, (math.prod(cur),))
    if t in ACTIVATIONS:
        return Layer(i, t, cur, cur)

    # conv2d and pools need an image
    if len(cur) != 3:
        raise SpecError(f"{where}: needs an image input (C, H, W) but gets the flat shape {cur}; "
                        "set input_shape = [channels, height, width] or remove the flatten before it")
    c, h, w = cur
    kernel = _pair_field(where, "kernel_size", entry["kernel_size"])
    if t == "conv2d":
        k = _int_field(where, "out_channels", entry["out_channels"])
        stride = _pair_field(where, "stride", entry.get("stride", 1))
        padding = _pair_field(where, "padding", entry.get("padding", 0), minimum=0)
    else:
        stride = _pair_field(where, "stride", entry["stride"]) if entry.get("stride") is not None else kernel
        padding = (0, 0)
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    if kernel[0] > hp or kernel[1] > wp:
        raise SpecError(f"{where}: kernel {kernel[0]}x{kernel[1]} is larger than its padded input {hp}x{wp} "
                        f"(input {h}x{w}, padding {padding}); use a smaller kernel_size or more padding")
    p = (hp - kernel[0]) // stride[0] + 1
    q = (wp - kernel[1]) // stride[1] + 1
    if t == "conv2d":
        return Layer(i, t, cur, (k, p, q), out_channels=k, kernel_size=kernel, stride=stride,
                     padding=padding, bias=bias)
    return Layer(i, t, cur, (c, p, q), kernel_size=kernel, stride=stride, padding=padding)


def _check_head(layers: list[Layer], num_classes: int, loss: str) -> None:
    last = layers[-1]
    if last.type != "dense":
        raise SpecError(f"layer {last.index} ({last.type}): the last layer must be dense and produce logits; "
                        f"the loss {loss!r} applies its own softmax/sigmoid, so remove trailing activations "
                        "and end with a dense layer")
    want = num_classes if loss == "softmax_cross_entropy" else 1
    if loss == "sigmoid_binary_cross_entropy" and num_classes != 2:
        raise SpecError(f"loss 'sigmoid_binary_cross_entropy' is for two classes: set num_classes = 2 (got {num_classes})")
    if last.units != want:
        raise SpecError(f"layer {last.index} (dense): the last dense layer must have {want} units for "
                        f"loss {loss!r} with num_classes = {num_classes}, got units = {last.units}; set units = {want}")
