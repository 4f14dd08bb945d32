"""SGD with momentum over every parameter in ONE launch (kernel in ``custom_impl/kernels/sgd.cu``).

Parameters, gradients and velocities each live in one flat float32 buffer (P,); the per-layer arrays
are views into them. As ``torch.optim.SGD`` (no dampening, weight decay or Nesterov):
  momentum != 0: v = momentum*v + g; w -= lr*v        momentum == 0: w -= lr*g (v untouched).
"""
from __future__ import annotations

import numpy as np

from . import runtime
from .runtime import blocks, check_array

THREADS = 256
MAX_BLOCKS = 132 * 16
KERNELS = "sgd_momentum / sgd_plain (grid-stride loops, scalar)"

runtime.register_family("sgd")


def sgd_update(w, g, v, lr: float, momentum: float) -> None:
    """Update the flat buffers w and v in place from the flat gradient g (all (P,) float32)."""
    check_array(w, "w", ndim=1)
    check_array(g, "g", shape=w.shape)
    check_array(v, "v", shape=w.shape)
    n = w.size
    grid = min(blocks(n, THREADS), MAX_BLOCKS)
    if float(momentum) != 0.0:
        runtime.kernel("sgd", "sgd_momentum")((grid,), (THREADS,),
                                        (w, g, v, np.int64(n), np.float32(lr), np.float32(momentum)))
    else:
        runtime.kernel("sgd", "sgd_plain")((grid,), (THREADS,), (w, g, np.int64(n), np.float32(lr)))
