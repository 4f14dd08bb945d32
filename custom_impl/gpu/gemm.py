"""General matrix multiply on the GPU in our own kernels (``kernels/gemm.cu``, ``kernels/gemm_tiles.cuh``).

    out[M, N] = act(op(a) @ op(b) + bias[None, :])            (accumulate=False)
    out[M, N] = out + op(a) @ op(b)  (then + bias, then act)   (accumulate=True)

``op(a)`` is ``a`` (stored (M, K)) or ``a.T`` (stored (K, M), ``trans_a=True``); likewise ``op(b)`` is ``b``
(stored (K, N)) or ``b.T`` (stored (N, K), ``trans_b=True``). Transposes are handled by how tiles are
loaded, never by copies. act is "none", "relu", "sigmoid" or "tanh", applied in the epilogue.

Kernels: ``gemm_{nn,nt,tn,tt}`` (by transposes): a warp-tiled register-blocked GEMM, double-buffered
shared memory, float4 global loads where aligned, fused epilogue; a tile config (``tiles.TileConfig``)
and split-K factor chosen per shape by the cost model of ``tiles.py`` and the autotuner (below). Outputs
at most 16 wide in the dense forward layout also have the thin kernels (``thin.py``,
``kernels/gemm_thin.cu``) among the plans the autotuner times. Split-K
partials are summed in a fixed order (deterministic), either inside the same launch by the last block of
each output tile to finish (serial split-K: a per-tile arrival counter) or by a second launch,
``gemm_splitk_reduce``; both give bitwise the same sums.

Everything runs on CuPy's current stream; with ``out=`` given (and ``workspace=`` when split-K is used, or
the per-device ``runtime.workspace`` already grown by a warm-up call; the per-tile counters of serial
split-K are ``runtime.counters``, grown the same way) nothing is allocated and the host is never
synchronised, so calls can be captured into a CUDA graph. Split-K calls share those buffers, so they
must be ordered on one stream (as captured graphs and eager calls on the current stream are).

Example::

    y = gemm(x, W, trans_b=True, bias=b, act="relu")     # dense layer: relu(x @ W.T + b)
"""
from __future__ import annotations

import functools

import numpy as np

from . import runtime, thin
from .runtime import FLOAT32, NULL, blocks, check_array, launch_cost, launch_floor, ptr, sm_count, vec_ok
from .thin import FAMILY as THIN_FAMILY
from .thin import KERNELS as THIN_KERNELS
from .tiles import CONFIG_BY_NAME, CONFIGS, choose_config, split_chunk, tune_candidates

ACTS = {"none": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
KERNELS = {(ta, tb): "gemm_" + ("t" if ta else "n") + ("t" if tb else "n")
           for ta in (False, True) for tb in (False, True)}  # (trans_a, trans_b) -> kernel name


def _gemm_modules() -> list:
    """The gemm modules the default path can compile: one per tile config, the plain one (the split-K
    reduce) and the thin kernels' (``thin.py``)."""
    return [("gemm", {})] + [("gemm", cfg.defines) for cfg in CONFIGS] + [(THIN_FAMILY, {})]


runtime.register_modules(_gemm_modules)


def check_operands(a, b, out, trans_a, trans_b, bias, act, accumulate, who="gemm"):
    """(M, N, K, out) for op(a) @ op(b) (+ bias, act): shapes, dtypes and options checked, ``out`` made when
    None; ``who`` names the caller in the errors."""
    import cupy

    check_array(a, "a", ndim=2)
    check_array(b, "b", ndim=2)
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"{who}: op(a) is {M}x{K} but op(b) is {Kb}x{N}; the inner sizes must match "
                         f"(check trans_a={trans_a}, trans_b={trans_b})")
    if bias is not None:
        check_array(bias, "bias", shape=(N,))
    if act not in ACTS:
        raise ValueError(f"{who}: act={act!r} is not one of {sorted(ACTS)}")
    if out is None:
        if accumulate:
            raise ValueError(f"{who}: accumulate=True needs out= (the array to add into)")
        out = cupy.empty((M, N), dtype=np.float32)
    else:
        check_array(out, "out", shape=(M, N))
    return M, N, K, out


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, bias=None, act="none", accumulate=False,
         config=None, splits=None, workspace=None, reduce=None):
    """out = act(op(a) @ op(b) + bias (+ out if accumulate)); returns out.

    a: (M, K) or (K, M) if trans_a; b: (K, N) or (N, K) if trans_b; bias: (N,) or None; out: (M, N).
    ``config`` (a TileConfig, a ``thin.ThinConfig`` or either's name) and ``splits`` (split-K factor) are
    chosen per shape unless given (the autotuner, below). ``workspace``: float32 buffer of at least
    splits*M*N elements for split-K partials (default: ``runtime.workspace``). ``reduce``: how split-K
    partials are summed, "serial" (in the same launch) or "launch" (a second kernel); default: the tuner's
    choice, or "serial" when ``config`` or ``splits`` is given.
    """
    fast = config is None and splits is None and workspace is None and reduce is None and out is not None
    key = _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate) if fast else None
    launch = _launch_plans.get(key) if key is not None else None
    if launch is not None:
        run_launch(launch, a, b, out, bias)
        return out
    M, N, K, out = check_operands(a, b, out, trans_a, trans_b, bias, act, accumulate)
    if M == 0 or N == 0:
        return out
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
    kern(grid, block, (a, b, out, ptr(bias)) + tail, shared_mem=smem)
    if red is not None:
        red_kern, red_grid, ws_ptr, red_tail = red
        red_kern(red_grid, (256,), (ws_ptr, out, ptr(bias)) + red_tail)


# Autotuning: the first call of a GEMM shape (per transposes, epilogue and operand alignment) times the
# plans ``tiles.tune_candidates`` proposes on its own operands and keeps the fastest (``runtime.autotune``,
# cached per device and launch cost), so a wrong guess of the cost model (up to 7x at tiny K on the
# 256x128 tile, H100) costs one timing, not every call. Each candidate is run once (compiles, grows the
# split-K buffers), then timed over TUNE_REPS back-to-back launches queued behind the runtime's sleep
# kernel: GPU time, not the host's launch cost; a candidate is then worth max(GPU time, the host time of its
# launches, ``runtime.launch_floor``), ties to the lower GPU time, as in ``tiles.estimate_seconds`` (eagerly
# the call's first launch costs ~20 us of host time and a second ~10 us more, in a graph ~1 us each).
# Nothing is timed inside a CUDA-graph capture (the model's first choice is used, uncached);
# ``runtime.AUTOTUNE = False`` turns it off.
def _tuned_choice(a, b, out, bias, trans_a, trans_b, act, accumulate, M, N, K):
    """(TileConfig, splits, serial) for this call: cached, else timed (see above), else the model's."""
    key = ("gemm", M, N, K, trans_a, trans_b, act, bias is None, accumulate, a.data.ptr & 15,
           b.data.ptr & 15, out.data.ptr & 15)
    hit = runtime.tuned(key)
    if hit is not None:
        return hit
    cands = tune_candidates(M, N, K, sm_count()) + thin.candidates(M, N, K, trans_a, trans_b, sm_count())
    if len(cands) == 1:
        return cands[0]

    def candidates():
        import cupy

        scratch = cupy.empty((M, N), dtype=np.float32)  # timing never writes the caller's out (accumulate)
        calls = {}
        for plan in cands:
            cfg, splits, serial = plan
            launch = _launch_args(_make_plan(a, b, scratch, trans_a, trans_b, act, accumulate, M, N, K, cfg,
                                             splits, "serial" if serial else "launch"), scratch)
            calls[plan] = functools.partial(run_launch, launch, a, b, scratch, bias)
        return calls

    cost = launch_cost()

    def worth(plan, ms):
        gpu = ms * 1e-3 / runtime.TUNE_REPS
        _, splits, serial = plan
        return max(gpu, launch_floor(2 if splits > 1 and not serial else 1, cost)), gpu

    return runtime.autotune(key, candidates, cands[0], warmups=1, behind_sleep=True, score=worth)


def plan_name(plan) -> str:
    """A plan (config, splits, serial) as text: "256x128x16_16x8", "thin_n16", or with split-K
    "32x64x8_4x8 x32 serial" / "... x32 launch" (how the partials are summed).

    >>> plan_name((CONFIG_BY_NAME["32x64x8_4x8"], 32, True)), plan_name((thin.THIN_BY_NAME["thin_n16"], 1, False))
    ('32x64x8_4x8 x32 serial', 'thin_n16')
    """
    cfg, splits, serial = plan
    return cfg.name if splits == 1 else f"{cfg.name} x{splits} {'serial' if serial else 'launch'}"


def tuned_plan(M: int, N: int, K: int, trans_a: bool = False, trans_b: bool = False) -> str | None:
    """The plan (``plan_name``) the autotuner keeps for a GEMM of these sizes and transposes on the current
    device and launch-cost regime, or None before its first tuned call there. Calls that differ only in
    epilogue or operand alignment have their own choices; this names the first one cached."""
    want = ("gemm", M, N, K, trans_a, trans_b)
    here = (runtime.device_id(), launch_cost())
    for (device, cost, key), plan in runtime.tuned_choices().items():
        if (device, cost) == here and tuple(key[:6]) == want:
            return plan_name(plan)
    return None


# Launches of eager calls (the common case: shapes repeat call after call). A cached launch holds everything
# ``gemm`` derives from the shapes, alignment and options (config, split, grid, kernel, workspace, scalar
# arguments), so a repeated call skips the checks and the choice: ~10 us of Python per call down to the
# launch itself (shared/GPU.md: a launch from Python costs ~8 us). Keyed on everything the checks looked
# at, so a call that would fail them never hits a cached launch. Split-K's default workspace and counters
# are held by the cached launch: both buffers are never freed and were sized for this call.
_launch_plans: dict = {}


def _plan_key(a, b, out, bias, trans_a, trans_b, act, accumulate):
    """The plan key of a call, or None when an operand is not a C-contiguous float32 CuPy array."""
    import cupy

    try:
        arrays = (a, b, out) if bias is None else (a, b, out, bias)
        for x in arrays:
            if type(x) is not cupy.ndarray or x.dtype != FLOAT32 or not x.flags.c_contiguous:
                return None
        return (a.shape, b.shape, out.shape, None if bias is None else bias.shape, trans_a, trans_b, act,
                accumulate, a.data.ptr & 15, b.data.ptr & 15, out.data.ptr & 15, launch_cost(),
                cupy.cuda.runtime.getDevice())
    except AttributeError:
        return None


def config_by_name(name: str):
    """The TileConfig or ``thin.ThinConfig`` named ``name``; a KeyError that lists the names otherwise."""
    cfg = CONFIG_BY_NAME.get(name) or thin.THIN_BY_NAME.get(name)
    if cfg is None:
        raise KeyError(f"gemm: no config named {name!r}; known: {sorted(CONFIG_BY_NAME) + sorted(thin.THIN_BY_NAME)}")
    return cfg


def _make_plan(a, b, out, trans_a, trans_b, act, accumulate, M, N, K, config=None, splits=None, reduce=None):
    """Everything a launch derives from the shapes, alignment and options: (kernel, grid, block, shared
    memory, scalar arguments, flags, splits, M*N). A missing ``config`` (a TileConfig, a ThinConfig or a name) or
    ``splits`` is ``choose_config``'s; ``reduce`` defaults to "serial" (``gemm`` passes the tuned one)."""
    if config is None or splits is None:
        auto_cfg, auto_splits, _ = choose_config(M, N, K, sm_count(), reduce="auto")
        config = auto_cfg if config is None else config
        splits = auto_splits if splits is None else splits
    reduce = reduce or "serial"
    cfg = config_by_name(config) if isinstance(config, str) else config
    k_chunk, splits = split_chunk(K, splits, cfg.bk)
    if isinstance(cfg, thin.ThinConfig):
        if not cfg.fits(M, N, trans_a, trans_b):
            raise ValueError(f"gemm: config {cfg.name!r} does not compute a {M}x{N} output with trans_a={trans_a}, "
                             f"trans_b={trans_b}; thin configs that do: "
                             f"{[c.name for c in thin.THIN_CONFIGS if c.fits(M, N, trans_a, trans_b)]}")
        kern, grid = runtime.kernel(THIN_FAMILY, THIN_KERNELS[cfg]), cfg.grid(M, splits)
    else:
        kern = runtime.kernel("gemm", KERNELS[trans_a, trans_b], cfg.defines, cfg.smem_bytes)
        grid = (blocks(N, cfg.bn), blocks(M, cfg.bm), splits)
    flags = int(vec_ok(a, M if trans_a else K)) | int(vec_ok(b, K if trans_b else N)) << 1
    if splits == 1:  # flag bit 2: float4 stores into out
        flags |= int(vec_ok(out, N)) << 2
    else:  # bit 3: split-K, bit 4: serial; bits 2 and 5 (float4 partials / reduce) follow the workspace
        flags |= 1 << 3 | (reduce == "serial") << 4
    scalars = (np.int32(M), np.int32(N), np.int32(K), np.int32(k_chunk), np.int32(1 if accumulate else 0),
               np.int32(ACTS[act]))
    return kern, grid, (cfg.threads,), cfg.smem_bytes, scalars, flags, splits, M * N


def _launch_args(plan, out, workspace=None):
    """(kernel, grid, block, shared memory, arguments after (a, b, out, bias), separate reduce or None) of
    a plan (``run_launch`` runs it): with split-K the partials go to ``workspace`` (default: the shared
    per-device buffer), serial split-K's per-tile counters to the shared ones; flag bit 2 (float4 partial
    stores) follows the workspace's alignment, bit 5 (float4 serial reduce) also out's."""
    kern, grid, block, smem, scalars, flags, splits, MN = plan
    if splits == 1:
        return kern, grid, block, smem, (NULL, NULL) + scalars + (np.int32(flags),), None
    need = splits * MN
    ws = workspace if workspace is not None else runtime.workspace(need)
    if ws.size < need:
        raise ValueError(f"gemm: workspace has {ws.size} elements, split-K needs {need}")
    M, N = int(scalars[0]), int(scalars[1])
    ws_vec = vec_ok(ws, N)
    flags |= int(ws_vec) << 2 | int(ws_vec and vec_ok(out, N)) << 5
    if flags >> 4 & 1:
        tile_counters, red = ptr(runtime.counters(grid[0] * grid[1])), None
    else:
        tile_counters = NULL
        red_grid, red_tail = _reduce_args(M, N, splits, int(scalars[4]), int(scalars[5]))
        red = (runtime.kernel("gemm", "gemm_splitk_reduce"), red_grid, ptr(ws), red_tail)
    return kern, grid, block, smem, (ptr(ws), tile_counters) + scalars + (np.int32(flags),), red


@functools.lru_cache(maxsize=4096)
def _reduce_args(M: int, N: int, splits: int, beta: int, act_code: int):
    """(grid, scalar arguments) of gemm_splitk_reduce for these sizes, made once per shape."""
    return (min(blocks(M * N, 256), 132 * 16),), tuple(np.int32(v) for v in (M, N, splits, beta, act_code))


def splitk_reduce(ws, out, bias, M: int, N: int, splits: int, beta, act_code) -> None:
    """out = act(sum over z of ws[z] (in order) + bias + beta*out); ws (splits, M, N) flat."""
    splitk_reducer(M, N, splits, beta, act_code)(ws, out, bias)


def splitk_reducer(M: int, N: int, splits: int, beta=0, act_code=0):
    """``splitk_reduce`` for these sizes as a function of (ws, out, bias), for the current device: the kernel,
    grid and scalar arguments looked up once (for callers that keep launches of a tuned plan)."""
    red_grid, red_tail = _reduce_args(int(M), int(N), int(splits), int(beta), int(act_code))
    red = runtime.kernel("gemm", "gemm_splitk_reduce")

    def reduce(ws, out, bias):
        red(red_grid, (256,), (ws, out, ptr(bias)) + red_tail)
    return reduce
