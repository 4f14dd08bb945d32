"""The GEMM tile configurations and the performance model that chooses among them.

A tile config (``TileConfig``) fixes what one block of the tiled GEMM kernels computes (kernels/gemm.cu,
kernels/gemm_tiles.cuh; the conv and Winograd families reuse the same tiles); every config is compiled as
its own module, with the config's ``#define``s. ``estimate_seconds`` predicts the time of one GEMM for a
config and split-K factor; ``choose_config`` / ``ranked_plans`` rank them; ``tune_candidates`` are the
plans the GEMM autotuner times. The launch cost it weighs is ``runtime.launch_cost()``.

Legend: a GEMM is out[M, N] = op(a)[M, K] @ op(b)[K, N]; split-K cuts the reduction K into ``splits``
chunks of ``k_chunk`` (a multiple of the tile's BK) whose partial sums are added afterwards.
"""
from __future__ import annotations

import dataclasses
import functools
import math

from .runtime import GRAPH_LAUNCH_S, launch_cost, launch_floor

TILE_PAD = 4  # gemm_tiles.cuh's TILE_PAD: floats of padding per shared-memory row


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """One block computes BM x BN outputs, stepping the reduction BK at a time; a thread owns TM x TN."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    rate: float  # expected fraction of the 128x128 tile's per-SM FMA rate (smaller tiles reuse less)

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def blocks_per_sm(self) -> int:
        # registers bound it: 256 threads x 128 regs -> 2 (x ~250 regs for 8x16 -> 1); 128 threads x <=180
        # regs -> 2; 64 x <=170 -> 5
        if self.tm * self.tn > 64:
            return 1
        return {256: 2, 128: 2, 64: 5}[self.threads]

    @property
    def smem_bytes(self) -> int:
        """Dynamic shared memory of one block: two buffers of BK x (BM + 4) and BK x (BN + 4) floats."""
        return 2 * self.bk * (self.bm + self.bn + 2 * TILE_PAD) * 4

    @property
    def defines(self) -> dict:
        return dict(GEMM_BM=self.bm, GEMM_BN=self.bn, GEMM_BK=self.bk, GEMM_TM=self.tm, GEMM_TN=self.tn)

    @property
    def name(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"


CONFIGS = (
    TileConfig(128, 128, 8, 8, 8, 1.00),
    TileConfig(128, 64, 8, 8, 8, 0.85),
    TileConfig(64, 128, 8, 8, 8, 0.85),
    TileConfig(64, 64, 8, 8, 8, 0.70),
    TileConfig(32, 64, 8, 4, 8, 0.55),
    TileConfig(32, 32, 8, 4, 4, 0.40),
    TileConfig(128, 256, 8, 8, 16, 1.03),   # measured 40.1 vs 39.0 TFLOP/s of 128x128 at 4096^3 (H100)
    TileConfig(256, 128, 8, 16, 8, 1.08),   # measured 42.2 vs 39.0 TFLOP/s at 4096^3 (H100)
    # BK=16 halves the barriers per FMA; H100 at 4096^3, one run: 43.0 (128x128) and 43.7 (256x128, > 48 KB
    # of shared memory) vs 38.7 / 42.4 TFLOP/s for BK=8 in the same run
    TileConfig(128, 128, 16, 8, 8, 1.10),
    TileConfig(256, 128, 16, 16, 8, 1.12),
)
CONFIG_BY_NAME = {c.name: c for c in CONFIGS}


# Cost model constants (H100, strict FP32): cuBLAS-level FMA rate per SM, memory bandwidth, and the L2 read
# rate of one block summing its tile's split-K partials. Eager calls from Python cost ~17 us each on the
# host (measured, 1x1x1 GEMM), which hides kernels shorter than that, so eagerly a second launch pays only
# when it saves > ~10 us (runtime.launch_floor); inside a replayed CUDA graph a launch costs ~1 us
# (runtime.launch_cost_regime).
_FMA_PER_SM_S = 51e12 / 2 / 132
_BYTES_S = 3.0e12
_SM_BYTES_S = 120e9  # one block's float4 __ldcg loads from L2 (assumed: ~64 B/clk/SM at ~1.8 GHz, halved)
# Serial split-K's tail is bound by L2 round trips: the summing block issues the loads of 2 splits x E
# vectors per thread, waits, adds, and goes on. Assumed ~0.5 us per round and ~0.5 us for the fence and
# counter: a serial kernel with one dependent round per element (16 rounds at (64, 10, 128) split in two)
# ran 2-9 us slower in a graph than the same GEMM without the tail would (H100). Rough; the autotuner
# times the real candidates anyway.
L2_ROUND_S = 0.5e-6
FENCE_S = 0.5e-6


def estimate_seconds(cfg: TileConfig, M: int, N: int, K: int, splits: int, sms: int = 132,
                     launch_s: float | None = None, reduce: str = "launch") -> float:
    """Rough time of one GEMM: waves of blocks at the config's rate, plus split-K's extra traffic/launch.

    An SM needs ~8 resident warps for its full FMA rate; a partial wave (few blocks per SM) runs each
    block faster but the SM below its peak. Launches are asynchronous: calls made back to back from
    Python take max(GPU time, the call's host time ``runtime.launch_floor(launches, launch_s)``), so
    eagerly (``launch_s`` ~20 us for the call's first launch, ~10 us for a second) a second launch only
    pays when the GPU time it saves exceeds that; inside a replayed CUDA graph (~1 us each) it is added to
    the GPU time.

    reduce: how split-K partials are summed: "launch" (a second kernel, conv's split-K) or "serial" (in
    the GEMM's own launch by the last block of each tile: no second launch, but that block reads the
    tile's ``splits`` partials alone, after every other block of the tile has finished).
    """
    launch_s = launch_cost() if launch_s is None else launch_s
    tiles = math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn)
    k_chunk = math.ceil(math.ceil(K / splits) / cfg.bk) * cfg.bk
    total = tiles * splits
    waves = math.ceil(total / (sms * cfg.blocks_per_sm))
    resident = min(cfg.blocks_per_sm, math.ceil(total / sms))
    sm_rate = cfg.rate * _FMA_PER_SM_S * min(1.0, resident * cfg.threads / 32 / 8)
    block_fma = cfg.bm * cfg.bn * max(k_chunk, cfg.bk)
    launches = 2 if splits > 1 and reduce == "launch" else 1
    gpu = waves * resident * block_fma / sm_rate + launches * GRAPH_LAUNCH_S
    if splits > 1:  # partials written and read back
        gpu += 2 * 4 * splits * M * N / _BYTES_S
        if reduce == "serial":  # the tile's last block sums its splits x BM x BN partials, then writes
            gpu += serial_tail_seconds(cfg, N, splits)
    return max(gpu, launch_floor(launches, launch_s))


def serial_tail_seconds(cfg: TileConfig, N: int, splits: int) -> float:
    """The serial reduce of one tile (kernel splitk_tile_reduce): rounds of 2 splits x E vectors per
    thread (float4 when N % 4 == 0: E = 2; else scalars, E = 4), plus the bytes at one SM's L2 rate."""
    vec, per_thread = (4, 2) if N % 4 == 0 else (1, 4)
    passes = math.ceil(cfg.bm * cfg.bn / vec / (per_thread * cfg.threads))
    rounds = passes * math.ceil(splits / 2)
    return FENCE_S + rounds * L2_ROUND_S + 4 * (splits + 1) * cfg.bm * cfg.bn / _SM_BYTES_S


def choose_config(M: int, N: int, K: int, sms: int = 132, max_splits: int = 32, launch_s: float | None = None,
                  candidates: tuple | None = None, reduce: str = "launch"):
    """(TileConfig, splits) with the lowest ``estimate_seconds``; splits keep >= 64 k per block.

    launch_s: the cost of a call's first launch (default: the current ``launch_cost``, 20 us eagerly); a
    split-K reduce launch adds ``runtime.launch_floor``'s further-launch cost.
    candidates: the TileConfigs to choose from (default: all of ``CONFIGS``).
    reduce: "launch" or "serial", as in ``estimate_seconds``; "auto" weighs both for every split and
    returns (TileConfig, splits, serial) (``gemm`` plans with "auto").
    Ties (eager calls whose GPU time hides under the host's launch cost) go to the lowest GPU time
    with "serial" / "auto", to the first candidate with "launch".
    """
    if reduce not in ("launch", "serial", "auto"):
        raise ValueError(f"choose_config: reduce={reduce!r}; use 'launch', 'serial' or 'auto'")
    best = _choose_config(M, N, K, sms, max_splits, launch_cost() if launch_s is None else launch_s, candidates,
                          reduce)
    return best if reduce == "auto" else best[:2]


@functools.lru_cache(maxsize=4096)
def _choose_config(M, N, K, sms, max_splits, launch_s, candidates, reduce):
    return ranked_plans(M, N, K, sms, max_splits, launch_s, candidates, reduce)[0]


@functools.lru_cache(maxsize=4096)
def ranked_plans(M: int, N: int, K: int, sms: int = 132, max_splits: int = 32, launch_s: float = 20e-6,
                 candidates: tuple | None = None, reduce: str = "auto") -> tuple:
    """Every (TileConfig, splits, serial) ``choose_config`` weighs, cheapest first by (estimate, GPU
    estimate); arguments as ``choose_config``'s, all given (memoised)."""
    ranked = []
    modes = ("launch", "serial") if reduce == "auto" else (reduce,)
    for cfg in candidates or CONFIGS:
        s = 1
        while s <= max_splits and (s == 1 or K // s >= 64):
            for mode in modes if s > 1 else modes[:1]:
                t = estimate_seconds(cfg, M, N, K, s, sms, launch_s, mode)
                # ties (eager plans under the host's launch floor): the lower GPU time first for gemm's
                # own plans, which the tuner then times; conv's ("launch") keep the first candidate in
                # CONFIGS order (its eager conv rows measured up to 1.7x slower with the GPU-time
                # tie-break on the H100: the model's small-plan times are optimistic)
                gpu = estimate_seconds(cfg, M, N, K, s, sms, 0.0, mode) if reduce != "launch" else 0.0
                ranked.append(((t, gpu), len(ranked), (cfg, s, mode == "serial")))
            s *= 2
    return tuple(plan for _, _, plan in sorted(ranked))


def tune_candidates(M: int, N: int, K: int, sms: int = 132, count: int = 6) -> list:
    """The plans (TileConfig, splits, serial) the autotuner times for one GEMM shape: the ``count`` the
    cost model ranks first, plus the model's best unsplit plan and its best of each reduce mode where
    those are not among them (the model is least sure about big unsplit tiles at tiny K and about the
    serial reduce's tail)."""
    ranked = ranked_plans(M, N, K, sms, 32, launch_cost(), None, "auto")
    return pick_candidates(ranked, count, (lambda p: p[1] == 1, lambda p: p[1] > 1 and p[2],
                                           lambda p: p[1] > 1 and not p[2]))


def pick_candidates(ranked: list, count: int, wants) -> list:
    """The first ``count`` of ``ranked`` plans, plus the best plan each predicate in ``wants`` accepts where
    it is not among them (the cost model's blind spots get timed too)."""
    picked = list(ranked[:count])
    for want in wants:
        best = next((p for p in ranked if want(p)), None)
        if best is not None and best not in picked:
            picked.append(best)
    return picked


def split_chunk(K: int, splits: int, bk: int) -> tuple[int, int]:
    """(k_chunk, splits): the reduction range of one split, a multiple of bk, and the splits it needs."""
    if splits <= 1:
        return max(K, 1), 1
    k_chunk = math.ceil(math.ceil(K / splits) / bk) * bk
    return k_chunk, math.ceil(K / k_chunk)
