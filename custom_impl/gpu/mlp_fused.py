"""The whole train step of a small multilayer perceptron in two launches (``kernels/mlp_fused.cu``).

For a network as small as the thesis's 2-3-1 one, every launch of the per-layer path is latency: a step is
two GEMMs forward, the loss, three backward launches per layer and their reductions, about 80 us of
launch-bound kernels at batch 8192 for 13 parameters. Here one kernel runs forward, loss and backward of
every sample in registers and sums each block's gradient terms, a second sums the blocks into the model's
flat gradient buffer and the mean loss, and the model's usual SGD launch follows. Deterministic: a fixed
partition of the batch and fixed summation orders, no atomics.

Which networks: ``fusable(spec, precision)`` (None) or why not: FP32; a 1-D input; only dense layers, each
optionally followed by one relu / sigmoid / tanh; at most MAX_LAYERS layers, every width (inputs and units)
at most MAX_WIDTH and at most MAX_PARAMS parameters in all (a thread holds one term of each parameter in
registers); softmax cross-entropy or sigmoid binary cross-entropy. The kernels are compiled per network
shape (``defines``); GPUModel uses them for every train step of such a spec (``build(..., fuse_mlp=False)``
keeps the per-layer path, which inference and the loss / gradient hooks always use).

Example::

    fused = FusedMLP(spec, offsets)          # offsets: the parameters' element offsets in the flat buffers
    part = cupy.empty((fused.workspace_size(n),), cupy.float32)
    fused.launch(x, labels, flat_w, flat_g, loss, part)   # flat_g and loss written; then sgd_update
"""
from __future__ import annotations

import math

import numpy as np

from . import runtime
from .activation import activation_after

FAMILY = "mlp_fused"
MAX_LAYERS = 4
MAX_WIDTH = 16
MAX_PARAMS = 96       # a thread's gradient terms in registers: 94 compile to 234 registers, no spill
THREADS = 256          # MF_THREADS
MAX_BLOCKS = 264       # two per SM of a 132-SM card: enough to spread a large batch, few partials to add
ACTS = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}
LOSSES = {"softmax_cross_entropy": 0, "sigmoid_binary_cross_entropy": 1}


def chain(spec) -> list | None:
    """[(dense layer, activation or None), ...] if ``spec`` is dense layers each followed by at most one
    activation, else None."""
    out, layers, i = [], spec.layers, 0
    while i < len(layers):
        layer = layers[i]
        if layer.type != "dense":
            return None
        act = activation_after(layers, i)
        out.append((layer, act))
        i += 2 if act else 1
    return out or None


def fusable(spec, precision: str = "fp32") -> str | None:
    """None if the fused step can train ``spec`` at ``precision``, else why not (one phrase)."""
    if precision != "fp32":
        return f"precision {precision!r} (the fused step is FP32)"
    if len(spec.input_shape) != 1:
        return f"input shape {tuple(spec.input_shape)} is not 1-D"
    layers = chain(spec)
    if layers is None:
        return "not a chain of dense layers with optional activations"
    if len(layers) > MAX_LAYERS:
        return f"{len(layers)} dense layers (at most {MAX_LAYERS})"
    widths = [int(spec.input_shape[0])] + [int(layer.units) for layer, _ in layers]
    if max(widths) > MAX_WIDTH:
        return f"a width of {max(widths)} (at most {MAX_WIDTH})"
    if spec.loss not in LOSSES:
        return f"loss {spec.loss!r}"
    if spec.loss == "sigmoid_binary_cross_entropy" and widths[-1] != 1:
        return "sigmoid binary cross-entropy on more than one output"
    if param_count(spec) > MAX_PARAMS:
        return f"{param_count(spec)} parameters (at most {MAX_PARAMS})"
    return None


def param_count(spec) -> int:
    return _param_count(chain(spec) or [])


def _param_count(layers) -> int:
    return sum(int(layer.units) * int(layer.in_shape[0]) + (int(layer.units) if layer.bias else 0)
               for layer, _ in layers)


def defines(spec) -> dict:
    """The module defines of ``spec``'s network (it must be ``fusable``)."""
    layers = chain(spec)
    out = {"MF_L": len(layers), "MF_F0": int(spec.input_shape[0]), "MF_LOSS": LOSSES[spec.loss]}
    for i, (layer, act) in enumerate(layers, start=1):
        out[f"MF_F{i}"] = int(layer.units)
        out[f"MF_A{i}"] = ACTS[act]
        out[f"MF_B{i}"] = int(bool(layer.bias))
    return out


def flat_indices(spec, offsets: dict) -> np.ndarray:
    """Each parameter value's index in the flat buffers, in the kernels' packed order (W_1, b_1, W_2, ...,
    each row-major): what mf_flat_index computes from the per-layer offsets."""
    idx = []
    for layer, _ in chain(spec):
        n_w = int(layer.units) * int(layer.in_shape[0])
        idx += range(offsets[f"{layer.index}.weight"], offsets[f"{layer.index}.weight"] + n_w)
        if layer.bias:
            idx += range(offsets[f"{layer.index}.bias"], offsets[f"{layer.index}.bias"] + int(layer.units))
    return np.asarray(idx, dtype=np.int64)


def grid(n: int) -> tuple[int, int]:
    """(blocks, samples per block) of mlp_fused_partial for batch ``n``."""
    nblocks = max(1, min(MAX_BLOCKS, math.ceil(n / THREADS)))
    chunk = math.ceil(n / nblocks)
    return math.ceil(n / chunk), chunk


class FusedMLP:
    """The fused train step of one fusable spec whose parameters sit at ``offsets`` (name -> element offset)
    in the model's flat parameter and gradient buffers."""

    def __init__(self, spec, offsets: dict):
        import cupy

        why = fusable(spec)
        if why is not None:
            raise ValueError(f"mlp_fused: model {spec.name!r} cannot take the fused step: {why}")
        self.spec = spec
        layers = chain(spec)
        self.params = _param_count(layers)
        self.defines = defines(spec)
        off = []
        for layer, _ in layers:
            off += [offsets[f"{layer.index}.weight"], offsets[f"{layer.index}.bias"] if layer.bias else -1]
        self.off = cupy.asarray(np.asarray(off, dtype=np.int32))   # (2 L,) per-layer offsets
        self._kernels = None   # (partial, finish), looked up at the first launch (on the model's device)

    def workspace_size(self, n: int) -> int:
        """float32 elements of the partial sums for batch ``n`` (blocks x (parameters + the loss))."""
        return grid(n)[0] * (self.params + 1)

    def launch(self, x, labels, flat_w, flat_g, loss, part) -> None:
        """Gradients of the mean loss over the batch x (N, F0) / labels (N,) int64 into ``flat_g``, the mean
        loss into ``loss`` (1,), from the parameters in ``flat_w``; ``part`` holds the block partials
        (``workspace_size(N)`` floats). Only launches (capturable)."""
        n = int(x.shape[0])
        nblocks, chunk = grid(n)
        if self._kernels is None:
            self._kernels = (runtime.kernel(FAMILY, "mlp_fused_partial", self.defines),
                             runtime.kernel(FAMILY, "mlp_fused_finish", self.defines))
        partial, finish = self._kernels
        partial((nblocks,), (THREADS,), (x, labels, flat_w, self.off, part, np.int32(n), np.int32(chunk)))
        finish((1,), (THREADS,), (part, np.int32(nblocks), self.off, flat_g, loss, np.int32(n)))


def zoo_modules() -> list:
    """The fused step's module of every fusable spec in the model zoo (what ``precompile`` builds)."""
    import modelspec

    out = []
    for name in modelspec.zoo_names():
        spec = modelspec.load(name)
        if fusable(spec) is None:
            out.append((FAMILY, defines(spec)))
    return out


runtime.register_modules(zoo_modules)
