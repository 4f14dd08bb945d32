"""The layer step of the GPU model: one layer (or a fused pair) with its forward and backward side by side.

``GPUModel`` (model.py) turns the spec's layers into a list of steps and runs them on per-batch-size
buffers it allocates once. Each layer family's module defines its step class beside its ops
(``dense.DenseStep``, ``conv.ConvStep``, ``pool.PoolStep``, ``activation.ActivationStep``); the
flatten step, which launches nothing, is here.

The interface a step implements (arrays are CuPy, shapes per sample in ``in_shape`` / ``out_shape``):

    alloc(n)                  -> what forward saves for backward beyond its input and output, or None
    workspace_size(n)         -> float32 elements of the workspace shared by all steps (0: none)
    forward(model, x, y, saved, ws)              y = f(x)             (writes y)
    backward(model, dy, x, y, saved, dx, ws)     dx = df/dx^T dy      (writes dx; parameter gradients
                                                                        written (=) into model.grads)

``model.params`` / ``model.grads`` map parameter names (``"{i}.weight"``, ``"{i}.bias"``) to device arrays.
"""
from __future__ import annotations


class Step:
    """One layer (or a dense + activation / relu + maxpool pair) of the network.

    ``in_shape`` / ``out_shape`` are per sample. ``weight`` / ``bias`` name this step's parameters (None
    when it has none). ``act`` is the activation fused into it, if any. ``needs_dx`` is False for every
    step before (and including) the first layer with parameters: nothing upstream needs a gradient there
    (the model sets it).
    """

    kind = "?"
    precision = "fp32"   # what the step's products run in: the model's precision (set by the model)

    def __init__(self, layer, act=None):
        self.layer = layer
        self.act = act
        self.in_shape = tuple(layer.in_shape)
        self.out_shape = tuple(layer.out_shape)
        self.weight = f"{layer.index}.weight" if layer.has_params else None
        self.bias = f"{layer.index}.bias" if layer.has_params and layer.bias else None
        self.needs_dx = True

    def alloc(self, n):
        return None

    def workspace_size(self, n) -> int:
        return 0

    def forward(self, model, x, y, saved, ws):
        raise NotImplementedError

    def backward(self, model, dy, x, y, saved, dx, ws):
        raise NotImplementedError

    def __repr__(self):
        if not self.act:
            name = self.kind
        else:
            name = f"{self.act}+{self.kind}" if self.kind == "pool" else f"{self.kind}+{self.act}"
        return f"<{name} layer {self.layer.index} {self.in_shape}->{self.out_shape}>"


class FlattenStep(Step):
    """(N, C, H, W) -> (N, C*H*W): a view, no kernel; its output and gradient buffers alias its input's."""

    kind = "flatten"

    def forward(self, model, x, y, saved, ws):
        pass

    def backward(self, model, dy, x, y, saved, dx, ws):
        pass
