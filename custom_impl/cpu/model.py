"""Our CPU model: the layers of ``custom_impl.cpu`` driven from ``spec.layers``, behind the model contract.

Parameter gradients are written (=) by each layer's backward, never accumulated.
"""
from __future__ import annotations

import numpy as np

from ..base import CustomModel
from .activation import Activation
from .conv import Conv2d
from .dense import Dense
from .layer import Layer
from .loss import LOSSES
from .pool import Pool2d
from .sgd import SGD


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C order, as torch.nn.Flatten; backward reshapes back."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.saved = x.shape if train else None
        return x.reshape(x.shape[0], -1)

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
        for layer in self.spec.layers:
            self.layers.append(LAYERS[layer.type](layer, need_dx=seen_params))
            seen_params = seen_params or layer.has_params
        self._loss_fn = LOSSES[self.spec.loss]
        self._sgd_state = SGD()
        self._write_params(params)

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
            for pname in layer.params:
                layer.params[pname] = np.array(params[f"{layer.layer.index}.{pname}"], dtype=np.float32)

    def _sgd(self, lr, momentum):
        self._sgd_state.step(self._read_params(), self._read_grads(), lr, momentum)

    def to_numpy(self, a):
        return np.asarray(a)
