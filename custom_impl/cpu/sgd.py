"""Stochastic gradient descent with momentum, exactly as torch.optim.SGD (no dampening, weight decay or
Nesterov), applied in place:

    momentum != 0:  v = g on the first such step for this parameter, then v = momentum * v + g;  w -= lr * v
    momentum == 0:  w -= lr * g   (any velocity is left untouched, as torch leaves its buffer)
"""
from __future__ import annotations

import numpy as np


def sgd_step(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr: float, momentum: float):
    """Update w in place; returns the velocity to keep (None until the first step with momentum != 0)."""
    if momentum != 0:
        if v is None:
            v = g.copy()
        else:
            v *= np.float32(momentum)
            v += g
        step = v
    else:
        step = g
    w -= np.float32(lr) * step
    return v


class SGD:
    """Velocities for a dict of parameters, kept between steps; lr and momentum may change per call."""

    def __init__(self):
        self.velocity: dict[str, np.ndarray | None] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float, momentum: float):
        for name, w in params.items():
            self.velocity[name] = sgd_step(w, grads[name], self.velocity.get(name), lr, momentum)
