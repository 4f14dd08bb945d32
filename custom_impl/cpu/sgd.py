"""Stochastic gradient descent with momentum, exactly as torch.optim.SGD (no dampening, weight decay or
Nesterov), applied in place:

    momentum != 0:  v = g on the first such step for this parameter, then v = momentum * v + g;  w -= lr * v
    momentum == 0:  w -= lr * g   (any velocity is left untouched, as torch leaves its buffer)

``FlatSGD`` runs this over all parameters at once: the model keeps every parameter, gradient and velocity
in one flat float32 buffer each (the layers hold views into them), and the update splits the buffers
over threads (``_parallel``), each thread walking its range in blocks of at most ``BLOCK`` elements. Each
element gets the same float32 operations in the same order as ``sgd_step`` on its own (v *= m; v += g;
t = lr * v; w -= t), so results are bit-identical for any thread count and to the per-parameter form.
"""
from __future__ import annotations

import numpy as np

from ._parallel import chunk_count, parallel_chunks

# NOTE: elements per block. Small blocks keep the 4 arrays in a core's cache between the block's 4 ufuncs,
# but each ufunc call costs ~2-3 us of Python under the GIL: measured on the 2-core VM for mlp-deep's 2.9M
# parameters, 16K-element blocks took 2.9 ms (1 or 2 threads alike, call-bound), 256K-element blocks 1.4 ms
# on 2 threads (2.4 ms on 1), the old per-parameter passes 2.5 ms.
BLOCK = 262144


def sgd_step(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr: float, momentum: float,
             tmp: np.ndarray | None = None):
    """Update w in place; returns the velocity to keep (None until the first step with momentum != 0).

    ``tmp``: optional scratch of w's shape for lr * step (else a temporary is allocated).
    """
    if momentum != 0:
        if v is None:
            v = g.copy()
        else:
            v *= np.float32(momentum)
            v += g
        step = v
    else:
        step = g
    w -= np.multiply(np.float32(lr), step, out=tmp)
    return v


class FlatSGD:
    """SGD over flat buffers w, g (and a velocity it owns), kept between steps; lr and momentum may change.

    >>> w, g = np.ones(5, np.float32), np.full(5, 2, np.float32)
    >>> opt = FlatSGD()
    >>> opt.step(w, g, 0.5, 0.9); opt.step(w, g, 0.5, 0.9); w.tolist()   # v = 2, w = 0; v = 3.8, w = -1.9
    [-1.899999976158142, -1.899999976158142, -1.899999976158142, -1.899999976158142, -1.899999976158142]
    """

    def __init__(self):
        self.velocity: np.ndarray | None = None

    def step(self, w: np.ndarray, g: np.ndarray, lr: float, momentum: float) -> None:
        """One step on flat float32 w (updated in place) with gradient g (same shape)."""
        first = momentum != 0 and self.velocity is None
        if first:
            self.velocity = np.empty_like(w)
        v = self.velocity
        lr32, m32 = np.float32(lr), np.float32(momentum)

        def span(a, b):    # elements [a, b) of every buffer
            tmp = np.empty(min(BLOCK, b - a), dtype=w.dtype)
            for i in range(a, b, BLOCK):
                j = min(i + BLOCK, b)
                wb, gb, t = w[i:j], g[i:j], tmp[:j - i]
                if momentum != 0:
                    vb = v[i:j]
                    if first:
                        np.copyto(vb, gb)
                    else:
                        vb *= m32
                        vb += gb
                    gb = vb
                np.multiply(lr32, gb, out=t)
                wb -= t

        # w, g, v read and w, v written: ~5 arrays' bytes decide how many threads pay off
        parallel_chunks(w.size, span, -(-w.size // chunk_count(5 * w.nbytes)))
