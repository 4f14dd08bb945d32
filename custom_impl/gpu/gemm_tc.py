"""General matrix multiply on the tensor cores in our own kernels (``kernels/gemm_tc.cu``, ``gemm_tc_tiles.cuh``).

    out[M, N] = act(op(a) @ op(b) + bias[None, :])            (accumulate=False)
    out[M, N] = out + op(a) @ op(b)  (then + bias, then act)   (accumulate=True)

As ``gemm.gemm`` (same operands, transposes, epilogues), with the products on the tensor cores:
``precision="tf32"`` rounds both operands to TF32 (10 mantissa bits, round to nearest, ties away) and
multiplies with ``mma.sync.m16n8k8``; ``precision="bf16"`` rounds them to BF16 (7 mantissa bits, round to
nearest even) and multiplies with ``mma.sync.m16n8k16``. Storage stays float32 everywhere (the operands are
rounded in registers as they leave shared memory) and every sum is accumulated in FP32, so the result is
the FP32-accumulated product of the rounded operands. Kernels ``gemm_tc_{nn,nt,tn,tt}``: cp.async
multi-stage pipelines, padded shared memory, ldmatrix for TF32 operands stored contiguous along k
(docs/kernels.md). Split-K partials go to a workspace and are summed in order by gemm.cu's
``gemm_splitk_reduce`` (deterministic: the same bits run to run).

On a device of compute capability 9.0 (H100, H200) the plans also include ``gemm_wgmma.cu`` (``WgConfig``):
Hopper's warpgroup instructions (``wgmma``, sm_90a) reading both operands from 128-byte-swizzled shared
memory. It multiplies operands prepared by one pass (``gemm_wgmma_prep``) into the shared workspace:
rounded exactly as above (TF32 kept as 32-bit floats with the dropped bits zero, BF16 as 16-bit values,
as autocast's casts make them), transposed to run along k and zero-padded to whole k tiles, so one kernel
serves every transpose and results keep the semantics of the mma.sync kernels.

Plans: a tile config (``TcConfig``, a few per precision) and a split-K factor per shape, ranked by a rough
model (``ranked_plans``) and chosen by timing its best few with ``runtime.autotune`` (once per shape,
transposes, epilogue, alignment, precision and launch-cost regime). With ``out=`` given (and
``workspace=`` for split-K, or the runtime's shared buffer grown by an earlier call) nothing is allocated
and the host is never synchronised: calls can be captured in a CUDA graph.

Example::

    y = gemm_tc(x, W, trans_b=True, bias=b, act="relu", precision="bf16")   # relu(x @ W.T + b)
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from . import runtime
from .gemm import ACTS, check_operands, splitk_reduce
from .runtime import FLOAT32, GRAPH_LAUNCH_S, NULL, blocks, i32, launch_cost, launch_floor, ptr, sm_count, vec_ok
from .tiles import pick_candidates, split_chunk

PRECISIONS = ("tf32", "bf16")
FAMILY = "gemm_tc"
KERNELS = {(ta, tb): "gemm_tc_" + ("t" if ta else "n") + ("t" if tb else "n")
           for ta in (False, True) for tb in (False, True)}  # (trans_a, trans_b) -> kernel name
PREC_CODE = {"tf32": 0, "bf16": 1}


def check_precision(precision: str, what: str) -> None:
    """Raise ValueError unless ``precision`` is one of PRECISIONS; ``what`` names the caller."""
    if precision not in PRECISIONS:
        raise ValueError(f"{what}: precision={precision!r} is not a tensor-core precision; use one of "
                         f"{', '.join(repr(p) for p in PRECISIONS)}")


@dataclasses.dataclass(frozen=True)
class TcConfig:
    """One block computes BM x BN outputs, BK of the reduction per pipeline stage; a warp owns WM x WN."""

    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    stages: int
    precision: str
    rate: float   # expected fraction of the big tiles' per-SM rate (smaller tiles reuse less)

    @property
    def threads(self) -> int:
        return (self.bm // self.wm) * (self.bn // self.wn) * 32

    def smem_bytes(self, trans_a: bool = False, trans_b: bool = False) -> int:
        """Dynamic shared memory of one block for these transposes (gemm_tc_tiles.cuh's TcSmem): TC_STAGES
        stages of both operand tiles, each laid out along its contiguous dimension with its padding."""
        return self.stages * (tile_floats(self.bm, self.bk, not trans_a, self.precision)
                              + tile_floats(self.bn, self.bk, trans_b, self.precision)) * 4

    @property
    def blocks_per_sm(self) -> int:
        # ~225-240 registers per thread (ptxas, sm_90): 64 K registers hold 2 blocks of 128 threads, 1 of 256;
        # shared memory (<= 110 KB per block of 128 threads) allows the same
        return 2 if self.threads <= 128 else 1

    @property
    def defines(self) -> dict:
        return dict(TC_BM=self.bm, TC_BN=self.bn, TC_BK=self.bk, TC_WM=self.wm, TC_WN=self.wn,
                    TC_STAGES=self.stages, TC_PREC=PREC_CODE[self.precision])

    @property
    def name(self) -> str:
        return f"{self.precision}_{self.bm}x{self.bn}x{self.bk}_{self.wm}x{self.wn}_s{self.stages}"


def tile_floats(bmn: int, bk: int, kmajor: bool, precision: str) -> int:
    """Floats of one stage of one operand tile in shared memory (gemm_tc_tiles.cuh's TcSmem::FLOATS)."""
    if kmajor:
        return bmn * (bk + (4 if precision == "tf32" else 8))
    return bk * (bmn + (8 if precision == "tf32" else 4))


# A few tile configs per precision (the autotuner times them per shape): the 128x256 and 128x128 tiles for
# large outputs, 64x64 for small ones (more blocks to fill 132 SMs). Warps of 64x64 hold 128 FP32
# accumulators per thread; BK = 32 is 4 TF32 or 2 BF16 k-steps per barrier.
CONFIGS = tuple(TcConfig(bm, bn, 32, wm, wn, 3, p, rate)
                for p in PRECISIONS
                for bm, bn, wm, wn, rate in ((128, 256, 64, 64, 1.0), (128, 128, 64, 64, 0.95),
                                             (64, 64, 32, 32, 0.6)))
CONFIG_BY_NAME = {c.name: c for c in CONFIGS}


def configs(precision: str) -> tuple:
    return tuple(c for c in CONFIGS if c.precision == precision)


WG_FAMILY = "gemm_wgmma"
WG_PREP_THREADS = 256   # gemm_wgmma_prep: 32 x 32 tiles, 8 rows of 32 threads


@dataclasses.dataclass(frozen=True)
class WgConfig:
    """A ``gemm_wgmma`` tile: BM x BN outputs per block (BM / 64 warpgroups, each 64 rows x BN), k tiles of
    one 128-byte row per operand row (32 TF32 or 64 BF16 values), ``stages`` of them in shared memory."""

    bm: int
    bn: int
    stages: int
    precision: str
    rate: float   # expected fraction of the big tile's per-SM rate

    @property
    def threads(self) -> int:
        return self.bm // 64 * 128

    @property
    def bk(self) -> int:
        """k per tile: one 128-byte row of the operand element."""
        return 128 // WG_ELEMENT_BYTES[self.precision]

    @property
    def smem_bytes(self) -> int:
        """Dynamic shared memory of one block: the stages plus 1 KB to align them on 1024 bytes."""
        return self.stages * (self.bm + self.bn) * 128 + 1024

    @property
    def blocks_per_sm(self) -> int:
        # ptxas (sm_90a): 188 registers at BN = 256 (one block of 256 threads), 114 at BN = 128; allocated in 8s
        regs = 192 if self.bn == 256 else 120
        return max(1, min(65536 // (regs * self.threads), 232448 // self.smem_bytes))

    @property
    def defines(self) -> dict:
        return dict(WG_BM=self.bm, WG_BN=self.bn, WG_STAGES=self.stages, WG_PREC=PREC_CODE[self.precision])

    @property
    def name(self) -> str:
        return f"{self.precision}_wgmma_{self.bm}x{self.bn}_s{self.stages}"


WG_ELEMENT_BYTES = {"tf32": 4, "bf16": 2}
# 128x256 for large outputs; 128x128 in 3 stages fits two blocks per SM; 64x128 gives small outputs more blocks.
# NOTE: a stage is refilled STAGES - 2 k tiles ahead (gemm_wgmma.cu), so 3 stages leave one tile, ~0.3 us of
# wgmma per block, to cover a copy's latency; 128x128 in 6 stages (one block per SM) leaves four. At 4096^3
# (H100, 2026-12-07) the 3-stage tile ran at 201 TFLOP/s TF32 against cuBLAS's 387: whether the copies'
# latency is what holds it is what the 6-stage config measures.
WG_CONFIGS = tuple(WgConfig(bm, bn, st, p, rate) for p in PRECISIONS
                   for bm, bn, st, rate in ((128, 256, 4, 1.0), (128, 128, 3, 0.9), (128, 128, 6, 0.95),
                                            (64, 128, 4, 0.7)))
CONFIG_BY_NAME.update({c.name: c for c in WG_CONFIGS})


def _modules() -> list:
    """The gemm_tc and gemm_wgmma modules the default path can compile: one per tile config."""
    return [(FAMILY, cfg.defines) for cfg in CONFIGS] + [(WG_FAMILY, cfg.defines) for cfg in WG_CONFIGS]


runtime.register_modules(_modules)

# Model constants (H100 SXM): the tensor-core FMA rate per SM that mma.sync reaches on large tiles (assumed
# ~60% of the datasheet dense peak, TF32 495 / BF16 989 TFLOP/s: mma.sync issues from every warp and cannot
# reach wgmma's rate), and the bandwidth that split-K partials round-trip at.
_FMA_PER_SM_S = {"tf32": 0.6 * 495e12 / 2 / 132, "bf16": 0.6 * 989e12 / 2 / 132}
_BYTES_S = 3.0e12


def estimate_seconds(cfg: TcConfig, M: int, N: int, K: int, splits: int, sms: int = 132,
                     launch_s: float | None = None) -> float:
    """Rough time of one GEMM: waves of blocks at the config's rate, plus split-K's partials and reduce
    launch; max(GPU time, ``runtime.launch_floor(launches)``) as in ``tiles.estimate_seconds``."""
    launch_s = launch_cost() if launch_s is None else launch_s
    tiles = math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn)
    k_chunk = math.ceil(math.ceil(K / splits) / cfg.bk) * cfg.bk
    total = tiles * splits
    waves = math.ceil(total / (sms * cfg.blocks_per_sm))
    resident = min(cfg.blocks_per_sm, math.ceil(total / sms))
    # an SM needs ~8 warps to keep its tensor cores busy
    sm_rate = cfg.rate * _FMA_PER_SM_S[cfg.precision] * min(1.0, resident * cfg.threads / 32 / 8)
    # the pipeline fills (stages - 1) tiles before the first mma: short reductions pay it
    steps = max(k_chunk, cfg.bk) + (cfg.stages - 1) * cfg.bk
    launches = 2 if splits > 1 else 1
    gpu = waves * resident * cfg.bm * cfg.bn * steps / sm_rate + launches * GRAPH_LAUNCH_S
    if splits > 1:
        gpu += 2 * 4 * splits * M * N / _BYTES_S
    return max(gpu, launch_floor(launches, launch_s))


@functools.lru_cache(maxsize=4096)
def ranked_plans(M: int, N: int, K: int, precision: str, sms: int = 132, launch_s: float = 20e-6) -> tuple:
    """Every (TcConfig, splits) weighed for a shape, cheapest first (estimate, then GPU estimate). Splits
    are powers of two up to 32 that keep >= 4 k tiles per block."""
    return _ranked(configs(precision), estimate_seconds, M, N, K, sms, launch_s)


def _ranked(cfgs, estimate, M: int, N: int, K: int, sms: int, launch_s: float) -> tuple:
    """(config, splits) for every config of ``cfgs`` and every power-of-two split up to 32 that keeps >= 4 k
    tiles per block, sorted by ``estimate`` (with the launch cost, then without)."""
    ranked = []
    for cfg in cfgs:
        s = 1
        while s <= 32 and (s == 1 or math.ceil(K / s) >= 4 * cfg.bk):
            key = (estimate(cfg, M, N, K, s, sms, launch_s), estimate(cfg, M, N, K, s, sms, 0.0))
            ranked.append((key, len(ranked), (cfg, s)))
            s *= 2
    return tuple(plan for _, _, plan in sorted(ranked))


# wgmma's expected share of the datasheet dense peak on large tiles, and the bandwidth of the prep pass
_WG_FMA_PER_SM_S = {"tf32": 0.8 * 495e12 / 2 / 132, "bf16": 0.8 * 989e12 / 2 / 132}
_PREP_BYTES_S = 2.5e12


def wg_estimate_seconds(cfg: WgConfig, M: int, N: int, K: int, splits: int, sms: int = 132,
                        launch_s: float | None = None) -> float:
    """Rough time of one ``gemm_wgmma`` GEMM: the prep pass (read FP32, write the prepared operands), waves
    of blocks at the config's rate over whole k tiles, split-K's partials; max(GPU time,
    ``runtime.launch_floor(launches)``)."""
    launch_s = launch_cost() if launch_s is None else launch_s
    kp, k_chunk, splits = wg_split(K, splits, cfg.bk)
    total = math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn) * splits
    waves = math.ceil(total / (sms * cfg.blocks_per_sm))
    resident = min(cfg.blocks_per_sm, math.ceil(total / sms))
    sm_rate = cfg.rate * _WG_FMA_PER_SM_S[cfg.precision] * min(1.0, resident * cfg.threads / 256)
    steps = k_chunk + (cfg.stages - 2) * cfg.bk   # the pipeline fills before the first wgmma
    launches = 3 if splits > 1 else 2
    gpu = waves * resident * cfg.bm * cfg.bn * steps / sm_rate + launches * GRAPH_LAUNCH_S
    gpu += (M + N) * (4 * K + WG_ELEMENT_BYTES[cfg.precision] * kp) / _PREP_BYTES_S
    if splits > 1:
        gpu += 2 * 4 * splits * M * N / _BYTES_S
    return max(gpu, launch_floor(launches, launch_s))


@functools.lru_cache(maxsize=4096)
def wg_ranked_plans(M: int, N: int, K: int, precision: str, sms: int = 132, launch_s: float = 20e-6) -> tuple:
    """Every (WgConfig, splits) weighed for a shape, cheapest first, as ``ranked_plans``."""
    cfgs = [c for c in WG_CONFIGS if c.precision == precision]
    return _ranked(cfgs, wg_estimate_seconds, M, N, K, sms, launch_s)


def wgmma_supported() -> bool:
    """Whether this device runs ``gemm_wgmma``: compute capability 9.0 (H100, H200), and its module loads
    (a driver too old for the toolkit that built the cubin, or an NVRTC without sm_90a, is warned about
    once and leaves the mma.sync kernels to every plan)."""
    if not runtime.arch_supported(WG_FAMILY):
        return False
    import cupy

    return _wgmma_loads(cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _wgmma_loads(device_id: int) -> bool:
    import warnings

    try:
        for cfg in WG_CONFIGS:
            runtime.kernel(WG_FAMILY, "gemm_wgmma", cfg.defines)
    except Exception as err:  # any load or compile failure: the portable kernels still serve every call
        warnings.warn(f"gemm_wgmma does not load on device {device_id} ({type(err).__name__}: {err}); "
                      "tensor-core GEMMs and convolutions use the mma.sync kernels only", RuntimeWarning)
        return False
    return True


# NOTE: three, so that the measured 4096^3 best (128x128 in 3 stages) stays among the timed plans with the
# 6-stage tile ranked above it
WG_TUNED = 3


def tune_candidates(M: int, N: int, K: int, precision: str, sms: int = 132, count: int = 4,
                    wgmma: bool = False) -> list:
    """The plans the autotuner times: the model's ``count`` best, plus its best unsplit plan and its best
    plan of every tile config where those are not among them; with ``wgmma``, also the three best
    ``gemm_wgmma`` plans."""
    ranked = ranked_plans(M, N, K, precision, sms, launch_cost())
    wants = [lambda p: p[1] == 1] + [functools.partial(lambda c, p: p[0] == c, c) for c in configs(precision)]
    cands = pick_candidates(ranked, count, wants)
    if wgmma:
        cands += list(wg_ranked_plans(M, N, K, precision, sms, launch_cost())[:WG_TUNED])
    return cands


ROUND_THREADS = 256


def round_operand(src, dst, precision: str) -> None:
    """dst = src rounded to ``precision`` ("tf32": nearest, ties away, the 13 dropped mantissa bits zero;
    "bf16": nearest even), kept as float32: the operands an FP32 kernel multiplies in a tf32 / bf16
    convolution (conv/__init__.py), so that its products are the tensor cores' (exact products of rounded
    values) and only the accumulation order differs. ``src``, ``dst``: float32 CuPy arrays of one size,
    each contiguous (checked by the caller); no allocation, no host synchronisation."""
    n = src.size
    if n == 0:
        return
    kern = runtime.kernel(FAMILY, "round_operand", configs(precision)[0].defines)
    vec = int(src.data.ptr % 16 == 0 and dst.data.ptr % 16 == 0)
    grid = min(blocks(-(-n // 4) if vec else n, ROUND_THREADS), sm_count() * 8)
    kern((grid,), (ROUND_THREADS,), (src, dst, np.int64(n), np.int32(PREC_CODE[precision]), np.int32(vec)))


def gemm_tc(a, b, out=None, *, precision="tf32", trans_a=False, trans_b=False, bias=None, act="none",
            accumulate=False, config=None, splits=None, workspace=None):
    """out = act(op(a) @ op(b) + bias (+ out if accumulate)) with TF32 or BF16 products; returns out.

    a: (M, K) or (K, M) if trans_a; b: (K, N) or (N, K) if trans_b; bias: (N,) or None; out: (M, N); all
    float32. ``config`` (a TcConfig or its name, of this precision) and ``splits`` are chosen per shape
    unless given. ``workspace``: float32 buffer of >= splits*M*N elements for split-K partials (default:
    ``runtime.workspace``).
    """
    fast = config is None and splits is None and workspace is None and out is not None
    key = _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate, precision) if fast else None
    launch = _launches.get(key) if key is not None else None
    if launch is not None:
        run_launch(launch, a, b, out, bias)
        return out
    check_precision(precision, "gemm_tc")
    M, N, K, out = check_operands(a, b, out, trans_a, trans_b, bias, act, accumulate, "gemm_tc")
    if M == 0 or N == 0:
        return out
    if config is not None:
        cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
        if isinstance(cfg, WgConfig) and not wgmma_supported():
            raise ValueError(f"gemm_tc: config {cfg.name} uses wgmma, which needs a device of compute "
                             f"capability 9.0 (H100, H200); use a mma.sync config ({configs(precision)[0].name})")
        if cfg.precision != precision:
            raise ValueError(f"gemm_tc: config {cfg.name} is for {cfg.precision}, not {precision}")
        plan = (cfg, 1 if splits is None else int(splits))
    elif splits is not None:
        plan = (ranked_plans(M, N, K, precision, sm_count(), launch_cost())[0][0], int(splits))
    else:
        plan = _tuned_plan(a, b, out, bias, trans_a, trans_b, act, accumulate, precision, M, N, K)
    launch = _launch_args(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, plan, workspace)
    if key is not None:
        _launches[key] = launch
    run_launch(launch, a, b, out, bias)
    return out


def run_launch(launch, a, b, out, bias) -> None:
    """Run a launch made by ``_launch_args``: the operand prep of a wgmma plan, the tensor-core kernel, then
    the split-K reduce if any."""
    kern, grid, block, smem, tail, red, prep = launch
    if prep is None:
        kern(grid, block, (a, b, out, ptr(bias)) + tail, shared_mem=smem)
    else:
        prep_kern, prep_grid, a_prep, b_prep, k_args = prep
        prep_kern(prep_grid, (WG_PREP_THREADS,), (a,) + a_prep + (b,) + b_prep + k_args)
        kern(grid, block, (a_prep[0], b_prep[0], out, ptr(bias)) + tail, shared_mem=smem)
    if red is not None:
        ws, M, N, splits, beta, act_code = red
        splitk_reduce(ws, out, bias, M, N, splits, beta, act_code)


def cached_launch(a, b, out, bias=None, trans_a=False, trans_b=False, act="none", accumulate=False,
                  precision="tf32"):
    """The eager launch an earlier ``gemm_tc(a, b, out, ...)`` with these shapes, alignments and options
    made (run it with ``run_launch``), or None."""
    key = _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate, precision)
    return _launches.get(key) if key is not None else None


_launches: dict = {}


def _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate, precision):
    """The launch key of a call, or None when an operand is not a C-contiguous float32 CuPy array."""
    import cupy

    try:
        arrays = (a, b, out) if bias is None else (a, b, out, bias)
        for x in arrays:
            if type(x) is not cupy.ndarray or x.dtype != FLOAT32 or not x.flags.c_contiguous:
                return None
        return (precision, a.shape, b.shape, out.shape, None if bias is None else bias.shape, trans_a, trans_b,
                act, accumulate, a.data.ptr & 15, b.data.ptr & 15, out.data.ptr & 15, launch_cost(),
                cupy.cuda.runtime.getDevice())
    except AttributeError:
        return None


def _tuned_plan(a, b, out, bias, trans_a, trans_b, act, accumulate, precision, M, N, K):
    """(TcConfig, splits) for this call: cached, else the fastest of ``tune_candidates`` timed on the
    caller's operands (into a scratch output), else (inside a graph capture) the model's first."""
    key = ("gemm_tc", precision, M, N, K, trans_a, trans_b, act, bias is None, accumulate, a.data.ptr & 15,
           b.data.ptr & 15, out.data.ptr & 15)
    hit = runtime.tuned(key)
    if hit is not None:
        return hit
    cands = tune_candidates(M, N, K, precision, sm_count(), wgmma=wgmma_supported())
    if len(cands) == 1:
        return cands[0]

    def candidates():
        import cupy

        scratch = cupy.empty((M, N), dtype=np.float32)  # timing never writes the caller's out (accumulate)
        calls = {}
        for plan in cands:
            launch = _launch_args(a, b, scratch, trans_a, trans_b, act, accumulate, M, N, K, plan)
            calls[plan] = functools.partial(run_launch, launch, a, b, scratch, bias)
        return calls

    cost = launch_cost()

    def worth(plan, ms):
        gpu = ms * 1e-3 / runtime.TUNE_REPS
        return max(gpu, launch_floor(_launch_count(plan), cost)), gpu

    return runtime.autotune(key, candidates, cands[0], warmups=1, behind_sleep=True, score=worth)


def _launch_count(plan) -> int:
    """Kernel launches of a plan: the GEMM, the split-K reduce, the wgmma operand prep."""
    return 1 + (plan[1] > 1) + isinstance(plan[0], WgConfig)


def wg_workspace_size(M: int, N: int, K: int, plan) -> int:
    """float32 elements of workspace a ``gemm_wgmma`` plan needs: the prepared operands A' (M, Kp) and B'
    (N, Kp) (rows of whole 128-byte k tiles, so B' starts aligned), then the split-K partials."""
    cfg, splits = plan
    kp = wg_split(K, 1, cfg.bk)[0]
    prepared = math.ceil((M + N) * kp * WG_ELEMENT_BYTES[cfg.precision] / 4)
    return prepared + (splits * M * N if splits > 1 else 0)


def _wg_launch_args(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, plan, workspace=None):
    """``_launch_args`` of a ``gemm_wgmma`` plan: the prepared operands and any split-K partials go to
    ``workspace`` (default: the shared ``runtime.workspace``)."""
    cfg, splits = plan
    kp, k_chunk, splits = wg_split(K, splits, cfg.bk)
    need = wg_workspace_size(M, N, K, (cfg, splits))
    ws = workspace if workspace is not None else runtime.workspace(need)
    if ws.size < need:
        raise ValueError(f"gemm_tc: workspace has {ws.size} elements, this wgmma plan needs {need} "
                         f"(wg_workspace_size)")
    a_dst, b_dst, partials = wg_buffers(ws, M, N, kp, cfg.precision)
    prep = (runtime.kernel(WG_FAMILY, "gemm_wgmma_prep", cfg.defines),
            (blocks(kp, 32), blocks(max(M, N), 32), 2),
            (np.uint64(a_dst), np.int32(M), np.int32(_prep_flags(a, trans_a, K))),
            (np.uint64(b_dst), np.int32(N), np.int32(_prep_flags(b, not trans_b, K))),   # B' (N, K): b (K, N) is
            # transposed
            (np.int32(K), np.int32(kp)))
    return wg_gemm_launch(cfg, splits, M, N, kp, k_chunk, out, accumulate, act, 1, partials) + (prep,)


def _prep_flags(src, trans: bool, K: int) -> int:
    """gemm_wgmma_prep's flags for one operand: bit 0 stored (K, rows), bit 1 stored (rows, K) with float4
    rows (K % 4 == 0, 16-byte aligned), which it rounds without its shared-memory transpose."""
    return int(trans) | (int(not trans and vec_ok(src, K)) << 1)


def wg_split(K: int, splits: int, bk: int) -> tuple:
    """(Kp, k_chunk, splits) of a wgmma GEMM: the reduction padded to whole k tiles of ``bk``, cut into
    chunks of whole tiles, and the number of chunks that leaves (none empty)."""
    kp = math.ceil(K / bk) * bk
    k_chunk = math.ceil(math.ceil(kp / splits) / bk) * bk
    return kp, k_chunk, math.ceil(kp / k_chunk)


def wg_buffers(ws, M: int, N: int, kp: int, precision: str) -> tuple:
    """Device addresses of A' (M, kp), B' (N, kp) and the split-K partials in workspace ``ws`` (the layout
    ``wg_workspace_size`` counts; B' starts on a 128-byte multiple, since M * kp * bytes is one)."""
    if ws.data.ptr % 16:
        raise ValueError("gemm_tc: a wgmma plan's workspace must be 16-byte aligned (cp.async copies)")
    eb = WG_ELEMENT_BYTES[precision]
    a_dst = ws.data.ptr
    return a_dst, a_dst + M * kp * eb, a_dst + math.ceil((M + N) * kp * eb / 4) * 4


def wg_gemm_launch(cfg: WgConfig, splits: int, M: int, N: int, kp: int, k_chunk: int, out, accumulate: bool,
                   act: str, pq: int, partials: int) -> tuple:
    """(kernel, grid, block, shared memory, arguments after (A', B', out, bias), split-K reduce or None) of
    the ``gemm_wgmma`` kernel: out (M, N) row-major (pq == 1) or NCHW with pq pixels per image; split-K
    partials at device address ``partials`` (pq == 1 only)."""
    kern = runtime.kernel(WG_FAMILY, "gemm_wgmma", cfg.defines, cfg.smem_bytes)
    scalars = (np.int32(M), np.int32(N), np.int32(kp), np.int32(k_chunk), np.int32(1 if accumulate else 0),
               np.int32(ACTS[act]))
    grid = (blocks(N, cfg.bn), blocks(M, cfg.bm), splits)
    even = N % 2 == 0
    if splits == 1:
        flags = int(even and pq == 1 and out.data.ptr % 8 == 0) << 2
        return kern, grid, (cfg.threads,), cfg.smem_bytes, (NULL,) + scalars + i32(flags, pq), None
    if pq != 1:
        raise ValueError("gemm_wgmma: split-K partials are row-major; an NCHW output (pq > 1) runs unsplit")
    flags = 1 << 3 | int(even and partials % 8 == 0) << 2
    red = (np.uint64(partials), M, N, splits, 1 if accumulate else 0, ACTS[act])
    return kern, grid, (cfg.threads,), cfg.smem_bytes, (np.uint64(partials),) + scalars + i32(flags, 1), red


def _launch_args(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, plan, workspace=None):
    """(kernel, grid, block, shared memory, arguments after (a, b, out, bias), split-K reduce or None,
    operand prep or None)."""
    if isinstance(plan[0], WgConfig):
        return _wg_launch_args(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, plan, workspace)
    cfg, splits = plan
    k_chunk, splits = split_chunk(K, splits, cfg.bk)
    smem = cfg.smem_bytes(trans_a, trans_b)
    kern = runtime.kernel(FAMILY, KERNELS[trans_a, trans_b], cfg.defines, smem)
    flags = int(vec_ok(a, M if trans_a else K)) | int(vec_ok(b, K if trans_b else N)) << 1
    scalars = (np.int32(M), np.int32(N), np.int32(K), np.int32(k_chunk), np.int32(1 if accumulate else 0),
               np.int32(ACTS[act]))
    grid = (blocks(N, cfg.bn), blocks(M, cfg.bm), splits)
    even = N % 2 == 0
    if splits == 1:
        flags |= int(even and out.data.ptr % 8 == 0) << 2
        return kern, grid, (cfg.threads,), smem, (NULL,) + scalars + (np.int32(flags),), None, None
    need = splits * M * N
    ws = workspace if workspace is not None else runtime.workspace(need)
    if ws.size < need:
        raise ValueError(f"gemm_tc: workspace has {ws.size} elements, split-K needs {need}")
    flags |= 1 << 3 | int(even and ws.data.ptr % 8 == 0) << 2
    red = (ptr(ws), M, N, splits, 1 if accumulate else 0, ACTS[act])
    return kern, grid, (cfg.threads,), smem, (ptr(ws),) + scalars + (np.int32(flags),), red, None
