"""General matrix multiply on the GPU in our own kernels (``kernels/gemm.cu``, ``kernels/gemm_tiles.cuh``).

    out[M, N] = act(op(a) @ op(b) + bias[None, :])            (accumulate=False)
    out[M, N] = out + op(a) @ op(b)  (then + bias, then act)   (accumulate=True)

``op(a)`` is ``a`` (stored (M, K)) or ``a.T`` (stored (K, M), ``trans_a=True``); likewise ``op(b)`` is ``b``
(stored (K, N)) or ``b.T`` (stored (N, K), ``trans_b=True``). Transposes are handled by how tiles are
loaded, never by copies. act is "none", "relu", "sigmoid" or "tanh", applied in the epilogue.

Kernel versions (docs/kernels.md keeps their history):
  v1  ``gemm_v1``: 16x16 shared tiles, one output per thread; the correctness baseline.
  v2  ``gemm_v2_{nn,nt,tn,tt}``: warp-tiled register-blocked GEMM, double-buffered shared memory, float4
      global loads where aligned, fused epilogue; a tile config and split-K factor chosen per shape
      (``choose_config``); split-K partial sums are added in a fixed order (deterministic).
  v2 serial split-K (session 4): the split-K partials are summed inside the same launch, by the last
      block of each output tile to finish (a per-tile arrival counter), in the order z = 0, 1, ... as the
      separate ``gemm_splitk_reduce`` launch did, so results are bitwise the same with one launch fewer.

Everything runs on CuPy's current stream; with ``out=`` given (and ``workspace=`` when split-K is used, or
the per-device split-K buffer already grown by a warm-up call; the per-tile counters of serial split-K are
a per-device buffer grown the same way) nothing is allocated and the host is never synchronised, so calls
can be captured into a CUDA graph. Split-K calls share those buffers, so they must be ordered on one stream
(as captured graphs and eager calls on the current stream are).

Example::

    y = gemm(x, W, trans_b=True, bias=b, act="relu")     # dense layer: relu(x @ W.T + b)
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import numpy as np

from ._compile import blocks, check_array, function

ACTS = {"none": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
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
    # BK=16 halves the barriers per FMA; H100 run 4 at 4096^3: 43.0 (128x128) and 43.7 (256x128, > 48 KB
    # of shared memory) vs 38.7 / 42.4 TFLOP/s for BK=8 in the same run
    TileConfig(128, 128, 16, 8, 8, 1.10),
    TileConfig(256, 128, 16, 16, 8, 1.12),
)
# Compiled and tested, selectable by name (``config=``), not candidates of ``choose_config``: measured
# slower than the ones above (H100 run 4: 42.8 TFLOP/s at 4096^3).
EXTRA_CONFIGS = (
    TileConfig(128, 256, 16, 8, 16, 1.03),
)
# Measured and dropped in session 4 (H100, 4096^3, one run: 256x128x16 at 44.4 TFLOP/s): k tiles of 32,
# 256x128x32 41.3 and 128x256x32 42.9 TFLOP/s (249-255 registers, 100 KB of shared memory).
CONFIG_BY_NAME = {c.name: c for c in CONFIGS + EXTRA_CONFIGS}

# Cost model constants (H100, strict FP32): cuBLAS-level FMA rate per SM, memory bandwidth, the L2 read
# rate of one block summing its tile's split-K partials, and the cost of a second (reduce) launch. Eager calls from Python cost ~17 us each on the host (measured, 1x1x1 GEMM),
# which hides kernels shorter than that, so eagerly a second launch pays only when it saves > ~20 us;
# inside a replayed CUDA graph a launch costs ~1 us (``set_launch_cost(1e-6)`` before capturing).
_FMA_PER_SM_S = 51e12 / 2 / 132
_BYTES_S = 3.0e12
_SM_BYTES_S = 120e9  # one block's float4 __ldcg loads from L2 (assumed: ~64 B/clk/SM at ~1.8 GHz, halved)
# Serial split-K's tail is bound by L2 round trips: the summing block issues the loads of 2 splits x E
# vectors per thread, waits, adds, and goes on. Assumed ~0.5 us per round and ~0.5 us for the fence and
# counter: the first serial kernel (one dependent round per element, 16 rounds at (64, 10, 128) split in
# two) ran 2-9 us slower in a graph than the same GEMM without the tail would (dev/overhead.py, H100,
# session 4). Rough; the autotuner times the real candidates anyway.
_L2_ROUND_S = 0.5e-6
_FENCE_S = 0.5e-6
_LAUNCH_S = 20e-6
GRAPH_LAUNCH_S = 1e-6  # one more kernel inside a replayed CUDA graph (shared/GPU.md: ~1.0 us)


def _num_sms() -> int:
    import cupy

    return _sms_of(cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _sms_of(device_id: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def estimate_seconds(cfg: TileConfig, M: int, N: int, K: int, splits: int, sms: int = 132,
                     launch_s: float | None = None, reduce: str = "launch") -> float:
    """Rough time of one GEMM: waves of blocks at the config's rate, plus split-K's extra traffic/launch.

    An SM needs ~8 resident warps for its full FMA rate; a partial wave (few blocks per SM) runs each
    block faster but the SM below its peak. Launches are asynchronous: calls made back to back from
    Python take max(GPU time, launches x host cost), so eagerly (``launch_s`` ~20 us of host time each)
    a second launch only pays when the GPU time it saves exceeds that; inside a replayed CUDA graph
    (~1 us each) it is added to the GPU time.

    reduce: how split-K partials are summed: "launch" (a second kernel, conv's split-K) or "serial" (in
    the GEMM's own launch by the last block of each tile: no second launch, but that block reads the
    tile's ``splits`` partials alone, after every other block of the tile has finished).
    """
    launch_s = _LAUNCH_S if launch_s is None else launch_s
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
            gpu += _serial_tail_seconds(cfg, N, splits)
    return max(gpu, launches * launch_s)


def _serial_tail_seconds(cfg: TileConfig, N: int, splits: int) -> float:
    """The serial reduce of one tile (kernel splitk_tile_reduce): rounds of 2 splits x E vectors per
    thread (float4 when N % 4 == 0: E = 2; else scalars, E = 4), plus the bytes at one SM's L2 rate."""
    vec, per_thread = (4, 2) if N % 4 == 0 else (1, 4)
    passes = math.ceil(cfg.bm * cfg.bn / vec / (per_thread * cfg.threads))
    rounds = passes * math.ceil(splits / 2)
    return _FENCE_S + rounds * _L2_ROUND_S + 4 * (splits + 1) * cfg.bm * cfg.bn / _SM_BYTES_S


def choose_config(M: int, N: int, K: int, sms: int = 132, max_splits: int = 32, launch_s: float | None = None,
                  candidates: tuple | None = None, reduce: str = "launch"):
    """(TileConfig, splits) with the lowest ``estimate_seconds``; splits keep >= 64 k per block.

    launch_s: the cost of the extra split-K launch (default: the current ``launch_cost``, 20 us eagerly).
    candidates: the TileConfigs to choose from (default: all of ``CONFIGS``).
    reduce: "launch" or "serial", as in ``estimate_seconds``; "auto" weighs both for every split and
    returns (TileConfig, splits, serial) (``gemm`` plans with "auto").
    Ties (eager calls whose GPU time hides under the host's launch cost) go to the lowest GPU time
    with "serial" / "auto", to the first candidate with "launch".
    """
    if reduce not in ("launch", "serial", "auto"):
        raise ValueError(f"choose_config: reduce={reduce!r}; use 'launch', 'serial' or 'auto'")
    best = _choose_config(M, N, K, sms, max_splits, _LAUNCH_S if launch_s is None else launch_s, candidates,
                          reduce)
    return best if reduce == "auto" else best[:2]


@functools.lru_cache(maxsize=4096)
def _choose_config(M, N, K, sms, max_splits, launch_s, candidates, reduce):
    return _ranked_plans(M, N, K, sms, max_splits, launch_s, candidates, reduce)[0]


@functools.lru_cache(maxsize=4096)
def _ranked_plans(M, N, K, sms, max_splits, launch_s, candidates, reduce):
    """Every (TileConfig, splits, serial) the choice weighs, cheapest first by (estimate, GPU estimate)."""
    ranked = []
    modes = ("launch", "serial") if reduce == "auto" else (reduce,)
    for cfg in candidates or CONFIGS:
        s = 1
        while s <= max_splits and (s == 1 or K // s >= 64):
            for mode in modes if s > 1 else modes[:1]:
                t = estimate_seconds(cfg, M, N, K, s, sms, launch_s, mode)
                # ties (eager plans under the host's launch floor): the lower GPU time first for gemm's
                # own plans, which the tuner then times; conv's ("launch") keep the first candidate in
                # CONFIGS order, as before session 4 (its eager conv rows measured up to 1.7x slower
                # with the GPU-time tie-break on the H100: the model's small-plan times are optimistic)
                gpu = estimate_seconds(cfg, M, N, K, s, sms, 0.0, mode) if reduce != "launch" else 0.0
                ranked.append(((t, gpu), len(ranked), (cfg, s, mode == "serial")))
            s *= 2
    return tuple(plan for _, _, plan in sorted(ranked))


def tune_candidates(M: int, N: int, K: int, sms: int = 132, count: int = 6) -> list:
    """The plans (TileConfig, splits, serial) the autotuner times for one GEMM shape: the ``count`` the
    cost model ranks first, plus the model's best unsplit plan and its best of each reduce mode where
    those are not among them (the model is least sure about big unsplit tiles at tiny K and about the
    serial reduce's tail)."""
    ranked = _ranked_plans(M, N, K, sms, 32, _LAUNCH_S, None, "auto")
    picked = list(ranked[:count])
    for want in (lambda p: p[1] == 1, lambda p: p[1] > 1 and p[2], lambda p: p[1] > 1 and not p[2]):
        best = next((p for p in ranked if want(p)), None)
        if best is not None and best not in picked:
            picked.append(best)
    return picked


def set_launch_cost(seconds: float) -> None:
    """The cost of one extra kernel launch that split-K weighs against its speed-up: 20e-6 for eager
    calls from Python (the default), ~1e-6 (``GRAPH_LAUNCH_S``) when the calls are captured into a CUDA
    graph and replayed. ``launch_cost`` sets it for a ``with`` block only."""
    global _LAUNCH_S
    _LAUNCH_S = float(seconds)


@contextlib.contextmanager
def launch_cost(seconds: float):
    """``with launch_cost(GRAPH_LAUNCH_S):`` plans every GEMM / conv inside as if launches cost ``seconds``
    (restored after). Use it around the eager warm-up *and* the capture of a CUDA graph, so both choose
    the same configs and split-K workspaces."""
    global _LAUNCH_S
    before = _LAUNCH_S
    _LAUNCH_S = float(seconds)
    try:
        yield
    finally:
        _LAUNCH_S = before


def split_chunk(K: int, splits: int, bk: int) -> tuple[int, int]:
    """(k_chunk, splits): the reduction range of one split, a multiple of bk, and the splits it needs."""
    if splits <= 1:
        return max(K, 1), 1
    k_chunk = math.ceil(math.ceil(K / splits) / bk) * bk
    return k_chunk, math.ceil(K / k_chunk)


_split_buffers: dict = {}


def split_workspace(n: int):
    """A float32 device buffer of at least ``n`` elements for split-K partials, per device, grow-only.

    NOTE: a buffer once handed out is never freed (kept in the list), so CUDA graphs that captured it stay
    valid; it is shared by all calls on the device, which is safe because they are ordered on one stream.
    """
    import cupy

    dev = cupy.cuda.Device().id
    bufs = _split_buffers.setdefault(dev, [])
    if not bufs or bufs[-1].size < n:
        bufs.append(cupy.empty(max(n, 1 << 20), dtype=np.float32))
    return bufs[-1]


_counter_buffers: dict = {}


def split_counters(n: int):
    """An int32 device buffer of at least ``n`` zeros, per device, grow-only: the per-tile arrival counters
    of serial split-K (each launch leaves them zero again). Never freed, like ``split_workspace``."""
    import cupy

    dev = cupy.cuda.Device().id
    bufs = _counter_buffers.setdefault(dev, [])
    if not bufs or bufs[-1].size < n:
        bufs.append(cupy.zeros(max(n, 4096), dtype=np.int32))
    return bufs[-1]


def kernel(family: str, name: str, cfg: TileConfig | None = None):
    """The compiled kernel ``name`` of ``kernels/<family>.cu`` with cfg's tile defines (memoised per device)."""
    import cupy

    return _kernel(family, name, cfg, cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _kernel(family, name, cfg, device_id):
    fn = function(family, name, **(cfg.defines if cfg is not None else {}))
    if cfg is not None and cfg.smem_bytes > 48 * 1024:
        # NOTE: above 48 KB a kernel's dynamic shared memory must be opted into, once per function
        # (RawModule.get_function returns a RawKernel, which sets the CUDA function attribute).
        fn.max_dynamic_shared_size_bytes = cfg.smem_bytes
    return fn


def _ptr(a) -> np.uint64:
    return np.uint64(0) if a is None else np.uint64(a.data.ptr)


def _vec_ok(a, ld: int) -> bool:
    return ld % 4 == 0 and a.data.ptr % 16 == 0


def _check_operands(a, b, out, trans_a, trans_b, bias, act, accumulate):
    import cupy

    check_array(a, "a", ndim=2)
    check_array(b, "b", ndim=2)
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"gemm: op(a) is {M}x{K} but op(b) is {Kb}x{N}; the inner sizes must match "
                         f"(check trans_a={trans_a}, trans_b={trans_b})")
    if bias is not None:
        check_array(bias, "bias", shape=(N,))
    if act not in ACTS:
        raise ValueError(f"gemm: act={act!r} is not one of {sorted(ACTS)}")
    if out is None:
        if accumulate:
            raise ValueError("gemm: accumulate=True needs out= (the array to add into)")
        out = cupy.empty((M, N), dtype=np.float32)
    else:
        check_array(out, "out", shape=(M, N))
    return M, N, K, out


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, bias=None, act="none", accumulate=False,
         version="v2", config=None, splits=None, workspace=None, reduce=None):
    """out = act(op(a) @ op(b) + bias (+ out if accumulate)); returns out.

    a: (M, K) or (K, M) if trans_a; b: (K, N) or (N, K) if trans_b; bias: (N,) or None; out: (M, N).
    version "v1" runs the baseline kernel; "v2" (default) the tiled one with ``config`` (a TileConfig or
    its name) and ``splits`` chosen by ``choose_config`` unless given. ``workspace``: float32 buffer of
    at least splits*M*N elements for split-K partials (default: the shared per-device buffer).
    ``reduce``: how split-K partials are summed, "serial" (in the same launch) or "launch" (a second
    kernel); default: the planner's choice, or "serial" when ``config`` or ``splits`` is given.
    """
    fast = (version == "v2" and config is None and splits is None and workspace is None and reduce is None
            and out is not None)
    key = _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate) if fast else None
    launch = _launch_plans.get(key) if key is not None else None
    if launch is not None:
        run_launch(launch, a, b, out, bias)
        return out
    M, N, K, out = _check_operands(a, b, out, trans_a, trans_b, bias, act, accumulate)
    if M == 0 or N == 0:
        return out
    if version == "v1":
        kern = kernel("gemm", "gemm_v1")
        kern((blocks(N, 16), blocks(M, 16)), (16, 16),
             (a, b, out, _ptr(bias), np.int32(M), np.int32(N), np.int32(K), np.int32(trans_a),
              np.int32(trans_b), np.int32(1 if accumulate else 0), np.int32(ACTS[act])))
        return out
    if version != "v2":
        raise ValueError(f"gemm: version={version!r}; use 'v1' or 'v2'")
    if reduce not in (None, "serial", "launch"):
        raise ValueError(f"gemm: reduce={reduce!r}; use 'serial' or 'launch'")
    if config is None and splits is None:
        config, splits, serial = _tuned_choice(a, b, out, bias, trans_a, trans_b, act, accumulate, M, N, K)
        reduce = reduce or ("serial" if serial else "launch")
    plan = _make_plan(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, config, splits, reduce)
    launch = _launch_args(plan, out, workspace)
    if key is not None:
        _launch_plans[key] = launch
    run_launch(launch, a, b, out, bias)
    return out


def cached_launch(a, b, out, bias=None, trans_a=False, trans_b=False, act="none", accumulate=False):
    """The eager launch an earlier ``gemm(a, b, out, ...)`` with these shapes, alignments and options made
    (run it with ``run_launch``), or None. For wrappers (dense layers) whose own argument checks such a
    call has already passed: a hit lets them skip the checks."""
    key = _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate)
    return _launch_plans.get(key) if key is not None else None


def launch_cached(a, b, out, bias=None, trans_a=False, trans_b=False, act="none", accumulate=False) -> bool:
    """Run ``gemm(a, b, out, ...)``'s cached launch and return True, or return False (nothing launched)."""
    launch = cached_launch(a, b, out, bias, trans_a, trans_b, act, accumulate)
    if launch is None:
        return False
    run_launch(launch, a, b, out, bias)
    return True


def run_launch(launch, a, b, out, bias) -> None:
    """Run a launch made by ``_launch_args``: the GEMM kernel, then the separate split-K reduce if any."""
    kern, grid, block, smem, tail, red = launch
    kern(grid, block, (a, b, out, _ptr(bias)) + tail, shared_mem=smem)
    if red is not None:
        red_kern, red_grid, ws_ptr, red_tail = red
        red_kern(red_grid, (256,), (ws_ptr, out, _ptr(bias)) + red_tail)


# Autotuning: the first call of a GEMM shape (per transposes, epilogue and operand alignment) times the
# plans ``tune_candidates`` proposes on its own operands and keeps the fastest, so a wrong guess of the cost
# model (up to 7x at tiny K on the 256x128 tile, H100 session 4) costs one timing, not every call. Each
# candidate is timed over TUNE_CALLS back-to-back launches queued behind gemm_gpu_sleep: GPU time, not the
# host's launch cost; a candidate is then worth max(GPU time, its launches x the launch cost in force),
# ties to the lower GPU time, as in ``estimate_seconds`` (eagerly a second launch costs ~20 us of host
# time, in a graph ~1 us), so the choice is cached per launch cost too. Nothing is timed inside a
# CUDA-graph capture (the model's first choice is used, uncached); ``AUTOTUNE = False`` turns it off.
AUTOTUNE = True
TUNE_CALLS = 5
TUNE_SLEEP_US = 300
_tuned: dict = {}


def _tuned_choice(a, b, out, bias, trans_a, trans_b, act, accumulate, M, N, K):
    """(TileConfig, splits, serial) for this call: cached, else timed (see above), else the model's."""
    import cupy

    key = (M, N, K, trans_a, trans_b, act, bias is None, accumulate, a.data.ptr & 15, b.data.ptr & 15,
           out.data.ptr & 15, _LAUNCH_S, cupy.cuda.runtime.getDevice())
    hit = _tuned.get(key)
    if hit is not None:
        return hit
    cands = tune_candidates(M, N, K, _num_sms())
    if len(cands) == 1 or not AUTOTUNE:
        return cands[0]
    stream = cupy.cuda.get_current_stream()
    if stream.ptr and cupy.cuda.runtime.streamIsCapturing(stream.ptr):
        return cands[0]
    scratch = cupy.empty((M, N), dtype=np.float32)  # timing never writes the caller's out (accumulate)
    launches = []
    for cfg, splits, serial in cands:
        plan = _make_plan(a, b, scratch, trans_a, trans_b, act, accumulate, M, N, K, cfg, splits,
                          "serial" if serial else "launch")
        launches.append(_launch_args(plan, scratch))
        run_launch(launches[-1], a, b, scratch, bias)  # compiles, grows the split-K buffers
    times = _time_launches([lambda la=la: run_launch(la, a, b, scratch, bias) for la in launches])

    def worth(i):
        gpu = times[i] * 1e-3 / TUNE_CALLS
        _, splits, serial = cands[i]
        return max(gpu, (2 if splits > 1 and not serial else 1) * _LAUNCH_S), gpu

    best = cands[min(range(len(cands)), key=worth)]
    _tuned[key] = best
    return best


def _time_launches(calls) -> list:
    """GPU milliseconds of TUNE_CALLS back-to-back runs of each call (``time_calls`` behind a sleep)."""
    return time_calls(calls, TUNE_CALLS, behind_sleep=True)


def time_calls(calls, reps: int = TUNE_CALLS, behind_sleep: bool = True, rounds: int = 2) -> list:
    """Milliseconds of ``reps`` back-to-back runs of each call, the least of ``rounds`` rounds (the rounds
    interleave the calls, so a slow moment of the host or GPU does not single one out). ``behind_sleep``:
    each batch is queued behind a TUNE_SLEEP_US-long kernel, so the events measure GPU time only (what a
    replayed CUDA graph sees); without it they measure what eager calls cost, host launch time included
    where it exceeds the GPU's (the first launch starts on an idle stream)."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    sleep = kernel("gemm", "gemm_gpu_sleep")
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    best = [math.inf] * len(calls)
    for _ in range(rounds):
        for i, call in enumerate(calls):
            stream.synchronize()
            if behind_sleep:
                sleep((1,), (1,), (np.int32(TUNE_SLEEP_US),))
            start.record(stream)
            for _ in range(reps):
                call()
            end.record(stream)
            end.synchronize()
            best[i] = min(best[i], cupy.cuda.get_elapsed_time(start, end))
    return best


# Launches of eager calls (the common case: shapes repeat call after call). A cached launch holds everything
# ``gemm`` derives from the shapes, alignment and options (config, split, grid, kernel, workspace, scalar
# arguments), so a repeated call skips the checks and the choice: ~10 us of Python per call down to the
# launch itself (shared/GPU.md: a launch from Python costs ~8 us). Keyed on everything the checks looked
# at, so a call that would fail them never hits a cached launch. Split-K's default workspace and counters
# are held by the cached launch: both buffers are never freed and were sized for this call.
_launch_plans: dict = {}
_F32 = np.dtype(np.float32)


def _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate):
    """The plan key of a call, or None when an operand is not a C-contiguous float32 CuPy array."""
    import cupy

    try:
        arrays = (a, b, out) if bias is None else (a, b, out, bias)
        for x in arrays:
            if type(x) is not cupy.ndarray or x.dtype != _F32 or not x.flags.c_contiguous:
                return None
        return (a.shape, b.shape, out.shape, None if bias is None else bias.shape, trans_a, trans_b, act,
                accumulate, a.data.ptr & 15, b.data.ptr & 15, out.data.ptr & 15, _LAUNCH_S,
                cupy.cuda.runtime.getDevice())
    except AttributeError:
        return None


def _make_plan(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, config=None, splits=None, reduce=None):
    """Everything a launch derives from the shapes, alignment and options: (kernel, grid, block, shared
    memory, scalar arguments, flags, splits, M*N). A missing ``config`` (a TileConfig or its name) or
    ``splits`` is ``choose_config``'s; ``reduce`` defaults to "serial" (``gemm`` passes the tuned one)."""
    if config is None or splits is None:
        auto_cfg, auto_splits, _ = choose_config(M, N, K, _num_sms(), reduce="auto")
        config = auto_cfg if config is None else config
        splits = auto_splits if splits is None else splits
    reduce = reduce or "serial"
    cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
    k_chunk, splits = split_chunk(K, splits, cfg.bk)
    kern = kernel("gemm", "gemm_v2_" + ("t" if trans_a else "n") + ("t" if trans_b else "n"), cfg)
    flags = int(_vec_ok(a, M if trans_a else K)) | int(_vec_ok(b, K if trans_b else N)) << 1
    if splits == 1:  # flag bit 2: float4 stores into out
        flags |= int(_vec_ok(out, N)) << 2
    else:  # bit 3: split-K, bit 4: serial; bits 2 and 5 (float4 partials / reduce) follow the workspace
        flags |= 1 << 3 | (reduce == "serial") << 4
    scalars = (np.int32(M), np.int32(N), np.int32(K), np.int32(k_chunk), np.int32(1 if accumulate else 0),
               np.int32(ACTS[act]))
    grid = (blocks(N, cfg.bn), blocks(M, cfg.bm), splits)
    return kern, grid, (cfg.threads,), cfg.smem_bytes, scalars, flags, splits, M * N


def _launch_args(plan, out, workspace=None):
    """(kernel, grid, block, shared memory, arguments after (a, b, out, bias), separate reduce or None) of
    a plan (``run_launch`` runs it): with split-K the partials go to ``workspace`` (default: the shared
    per-device buffer), serial split-K's per-tile counters to the shared ones; flag bit 2 (float4 partial
    stores) follows the workspace's alignment, bit 5 (float4 serial reduce) also out's."""
    kern, grid, block, smem, scalars, flags, splits, MN = plan
    if splits == 1:
        return kern, grid, block, smem, (np.uint64(0), np.uint64(0)) + scalars + (np.int32(flags),), None
    need = splits * MN
    ws = workspace if workspace is not None else split_workspace(need)
    if ws.size < need:
        raise ValueError(f"gemm: workspace has {ws.size} elements, split-K needs {need}")
    M, N = int(scalars[0]), int(scalars[1])
    ws_vec = _vec_ok(ws, N)
    flags |= int(ws_vec) << 2 | int(ws_vec and _vec_ok(out, N)) << 5
    if flags >> 4 & 1:
        counters, red = _ptr(split_counters(grid[0] * grid[1])), None
    else:
        counters = np.uint64(0)
        red_grid, red_tail = _reduce_args(M, N, splits, int(scalars[4]), int(scalars[5]))
        red = (kernel("gemm", "gemm_splitk_reduce"), red_grid, _ptr(ws), red_tail)
    return kern, grid, block, smem, (_ptr(ws), counters) + scalars + (np.int32(flags),), red


@functools.lru_cache(maxsize=4096)
def _reduce_args(M: int, N: int, splits: int, beta: int, act_code: int):
    """(grid, scalar arguments) of gemm_splitk_reduce for these sizes, made once per shape."""
    return (min(blocks(M * N, 256), 132 * 16),), tuple(np.int32(v) for v in (M, N, splits, beta, act_code))


def splitk_reduce(ws, out, bias, M: int, N: int, splits: int, beta, act_code) -> None:
    """out = act(sum over z of ws[z] (in order) + bias + beta*out); ws (splits, M, N) flat."""
    red_grid, red_tail = _reduce_args(int(M), int(N), int(splits), int(beta), int(act_code))
    red = kernel("gemm", "gemm_splitk_reduce")
    red(red_grid, (256,), (ws, out, _ptr(bias)) + red_tail)
