"""The state every CPU layer object holds; the layer families subclass it.

``params`` / ``grads``: {"weight": ..., "bias": ...} for layers with parameters (empty otherwise);
``saved``: what forward keeps for backward (None outside a training step); ``need_dx``: False for the
first layers, whose input needs no gradient.
"""
from __future__ import annotations


class Layer:
    def __init__(self, layer, need_dx: bool = True):
        self.layer = layer
        self.need_dx = need_dx
        self.params = {name: None for name in layer.param_shapes()}   # filled by the model's _write_params
        self.grads = {}
        self.saved = None
