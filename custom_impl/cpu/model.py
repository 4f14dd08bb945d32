"""Our CPU model: the layers of ``custom_impl.cpu`` driven from ``spec.layers``, behind the model contract.

Parameter gradients are written (=) by each layer's backward, never accumulated.

Memory: every parameter, every gradient and the SGD velocity live in one flat float32 buffer each
(``_flat_w``, ``_flat_g``); each layer's ``params`` / ``grads`` are views into them, its backward writes the
gradients in place, and one SGD pass updates everything (``sgd.FlatSGD``).

Fusion: a ReLU next to a max pooling (either order) runs inside the pooling layer, after the maximum:
max and ReLU commute (both only compare and select), so the forward is the same, and it runs on the
pooled tensor (a quarter of the size for 2x2 windows). Backward is the same too: a window whose maximum
is <= 0 gets no gradient either way; otherwise the gradient goes to the first maximum either way. (Up to
the sign of zero: PyTorch's order can leave -0.0 where ours leaves 0.0.)

Image tensors between layers are (N, C, H, W) arrays in whatever memory order the producing layer found
cheapest (a convolution's output is a view of its GEMM result, channels outermost); every layer accepts
any strides (see ``conv``).
"""
from __future__ import annotations

import numpy as np

from ..base import CustomModel
from ._parallel import parallel_copyto
from .activation import Activation
from .conv import Conv2d
from .dense import Dense
from .layer import Layer
from .loss import LOSSES
from .pool import Pool2d
from .sgd import FlatSGD


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C order, as torch.nn.Flatten (a copy when x is a channels-first view);
    backward reshapes back."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.saved = x.shape if train else None
        if x.flags.c_contiguous:
            return x.reshape(x.shape[0], -1)
        y = np.empty(x.shape, dtype=x.dtype)                    # (N, C, H, W) in C order
        parallel_copyto(y, x, axis=1)    # along C: a convolution's or pooling's output keeps C outermost
        return y.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray):
        shape, self.saved = self.saved, None
        return dy.reshape(shape) if self.need_dx else None


LAYERS = {"dense": Dense, "conv2d": Conv2d, "maxpool2d": Pool2d, "avgpool2d": Pool2d, "flatten": Flatten,
          "relu": Activation, "sigmoid": Activation, "tanh": Activation}


class CPUModel(CustomModel):
    """``custom_impl.build(spec, device="cpu")``: NumPy float32, our own forward and backward.

    >>> import custom_impl
    >>> m = custom_impl.build("digits-cnn")
    >>> x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    >>> m.forward(x).shape
    (3, 10)
    """

    device = "cpu"

    # ------------------------------------------------------------------ hooks
    def _setup(self, params):
        # A layer needs dx only if some layer before it has parameters (the input needs no gradient).
        self.layers = []
        seen_params = False
        specs = self.spec.layers
        i = 0
        while i < len(specs):
            pair = {specs[i].type, specs[i + 1].type} if i + 1 < len(specs) else set()
            if pair == {"relu", "maxpool2d"}:    # fused: the pooling applies the ReLU (module docstring)
                pool_spec = specs[i] if specs[i].type == "maxpool2d" else specs[i + 1]
                self.layers.append(Pool2d(pool_spec, need_dx=seen_params, relu=True))
                i += 2
                continue
            self.layers.append(LAYERS[specs[i].type](specs[i], need_dx=seen_params))
            seen_params = seen_params or specs[i].has_params
            i += 1
        self._loss_fn = LOSSES[self.spec.loss]
        self._sgd_state = FlatSGD()
        self._flat_views()
        self._write_params(params)

    def _flat_views(self):
        """One flat buffer for all parameters and one for all gradients; layers hold views into them."""
        shapes = [(layer, pname, shape)
                  for layer in self.layers for pname, shape in layer.layer.param_shapes().items()]
        total = sum(int(np.prod(shape)) for _, _, shape in shapes)
        self._flat_w = np.zeros(total, dtype=np.float32)
        self._flat_g = np.zeros(total, dtype=np.float32)
        offset = 0
        for layer, pname, shape in shapes:
            size = int(np.prod(shape))
            layer.params[pname] = self._flat_w[offset:offset + size].reshape(shape)
            layer.grads[pname] = self._flat_g[offset:offset + size].reshape(shape)
            offset += size

    def _asarray(self, x):
        return np.ascontiguousarray(x, dtype=np.float32)

    def _labels(self, y):
        return y

    def _forward(self, x, train):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def _loss(self, logits, y):
        return self._loss_fn(logits, y)

    def _backward(self, dlogits):
        d = dlogits
        for layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:    # nothing before this layer needs a gradient
                break

    def _named(self, which: str) -> dict:
        out = {}
        for layer in self.layers:
            for pname, a in getattr(layer, which).items():
                out[f"{layer.layer.index}.{pname}"] = a
        return out

    def _read_params(self):
        return self._named("params")

    def _read_grads(self):
        return self._named("grads")

    def _write_params(self, params):
        for layer in self.layers:
            for pname, view in layer.params.items():
                np.copyto(view, np.asarray(params[f"{layer.layer.index}.{pname}"], dtype=np.float32))

    def _sgd(self, lr, momentum):
        self._sgd_state.step(self._flat_w, self._flat_g, lr, momentum)

    def to_numpy(self, a):
        return np.asarray(a)
