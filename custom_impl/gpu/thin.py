"""The thin GEMM kernels (``kernels/gemm_thin.cu``): which calls they serve and the plans the GEMM tuner times.

A GEMM whose output has at most 16 columns in the dense forward layout (``a`` stored (M, K), ``b`` stored
(N, K): X @ W^T of a layer with <= 16 outputs, such as a 10-way classifier) can run a thin kernel, which
reads ``a`` once from every SM and keeps the output's columns whole in registers, where the tiled kernels
spend most of a 64..256-wide tile past the matrix. ``gemm``'s tuner times these plans beside the tiled
ones (``candidates``) and keeps whichever is fastest; they are never its untimed default.

>>> [c.name for c in THIN_CONFIGS]
['thin_n8', 'thin_n16']
>>> config_for(8192, 10, trans_a=False, trans_b=True).name
'thin_n16'
>>> config_for(8192, 10, trans_a=False, trans_b=False) is None    # no thin kernel for that layout
True
"""
from __future__ import annotations

import dataclasses
import math

FAMILY = "gemm_thin"
WIDTHS = (8, 16)
THREADS = 128          # gemm_thin.cu's THIN_THREADS: 4 warps
ROWS_PER_BLOCK = 16    # 4 warps x 4 rows of C
K_STEP = 4             # split-K chunks are multiples of 4 (the float4 path needs it)
# NOTE: a split of fewer k than one warp step (32 lanes x 4) leaves lanes idle; below this a thin plan is
# not split further.
MIN_K_PER_SPLIT = 128
# NOTE: blocks per SM the tuner's split count aims at: 4 blocks of 4 warps fit an SM (the kernels' launch
# bounds), and a memory-bound kernel wants every SM's loads in flight.
BLOCKS_PER_SM = 4


@dataclasses.dataclass(frozen=True)
class ThinConfig:
    """One thin kernel: N <= width, ``a`` stored (M, K), ``b`` stored (N, K)."""

    width: int
    bk = K_STEP          # what split-K chunks are multiples of (``tiles.split_chunk``)
    threads = THREADS
    smem_bytes = 0       # static shared memory only

    @property
    def name(self) -> str:
        return f"thin_n{self.width}"

    def fits(self, M: int, N: int, trans_a: bool, trans_b: bool) -> bool:
        """Whether this kernel computes op(a) @ op(b) of these sizes and transposes."""
        return not trans_a and trans_b and N <= self.width

    def blocks(self, M: int) -> int:
        """Blocks of one split: groups of ROWS_PER_BLOCK rows of C."""
        return math.ceil(M / ROWS_PER_BLOCK)

    def grid(self, M: int, splits: int) -> tuple:
        return self.blocks(M), 1, splits


THIN_CONFIGS = tuple(ThinConfig(w) for w in WIDTHS)
THIN_BY_NAME = {c.name: c for c in THIN_CONFIGS}
KERNELS = {c: f"gemm_{c.name}" for c in THIN_CONFIGS}   # config -> its kernel in kernels/gemm_thin.cu


def config_for(M: int, N: int, trans_a: bool, trans_b: bool) -> ThinConfig | None:
    """The narrowest thin kernel for these sizes and transposes, or None where none applies."""
    return next((c for c in THIN_CONFIGS if c.fits(M, N, trans_a, trans_b)), None)


def splits_for(cfg: ThinConfig, M: int, N: int, K: int, sms: int) -> int:
    """The split-K factor that gives about ``BLOCKS_PER_SM`` blocks per SM, keeping >= 128 k per split."""
    want = math.ceil(BLOCKS_PER_SM * sms / cfg.blocks(M))
    return max(1, min(want, K // MIN_K_PER_SPLIT))


def candidates(M: int, N: int, K: int, trans_a: bool, trans_b: bool, sms: int = 132) -> list:
    """The thin plans (ThinConfig, splits, serial) ``gemm``'s tuner times for this call: none where no thin
    kernel applies; else no split, the split that fills the GPU with the partials summed in the same
    launch and by a second one, and half that split (summed in the same launch)."""
    cfg = config_for(M, N, trans_a, trans_b)
    if cfg is None:
        return []
    s = splits_for(cfg, M, N, K, sms)
    plans = [(cfg, 1, False)]
    for splits, serial in ((s, True), (s, False), (s // 2, True)):
        if splits > 1 and (cfg, splits, serial) not in plans:
            plans.append((cfg, splits, serial))
    return plans
