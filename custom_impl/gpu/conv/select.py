"""Which conv algorithm runs a layer: the one place that decides which algorithms can run a shape, and
chooses among them by timing.

Legend: ``dims`` a ``ConvDims`` (N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw; geometry.py). Phases:
"forward", "backward_data", "backward_weights".

Candidates per phase (``candidates``), in this order (a tie goes to the first):
  forward           "implicit_gemm" always; "winograd" (F(2x2, 3x3), or F(2x2, 5x5) on a 5x5 layer) and
                    "winograd4" (F(4x4, 3x3); 3x3 only) where ``winograd_ok`` (in chunks of images where the
                    whole batch would exceed its workspace cap); "few_channels" where the few-channels
                    forward fits (C <= 8, S <= 8).
  backward_data     "implicit_gemm" always; "few_channels" (C <= 8, S <= 32, W within 64 KB of shared
                    memory: ``few_channels.data_fits``); "winograd" and "winograd4" where
                    ``winograd_ok``; "patch" where ``patch_ok``; "strided_1x1" for a 1x1 kernel with a
                    stride and no padding (``strided_1x1.fits``).
  backward_weights  "implicit_gemm" always; "few_channels" where its launch plan exists; "winograd"
                    (F(3x3, 2x2), or F(5x5, 2x2)) and "winograd4" (F(3x3, 4x4)) where ``winograd_ok`` (in
                    chunks of images, as the forward); "patch" where ``patch_ok``.
  every phase, last "fft" where ``fft.fits`` (kernels of >= 32 taps with >= 8 channels in and out).
"auto" (``choose``) takes the cached choice for (phase, dims[, bias presence]), else times every candidate
once through ``runtime.autotune`` and caches the fastest, per device and launch-cost regime: eagerly a
candidate is worth what 5 back-to-back eager calls take (its extra launches' host time included); under
the graph launch cost, the GPU time of 5 calls queued behind a sleep kernel (what a replayed graph sees);
each the least of 2 interleaved rounds after 2 warm-up calls. A shape with one candidate is cached
untimed; inside a CUDA-graph capture an uncached shape gets "implicit_gemm".

``workspace_size`` covers every candidate of every phase (and every algorithm a caller may name).
"""
from __future__ import annotations

import functools

from .. import runtime
from . import fft, few_channels, implicit_gemm, patch, strided_1x1, winograd
from .geometry import conv_dims, planning_sms

PHASES = ("forward", "backward_data", "backward_weights")
FORWARD_ALGOS = ("implicit_gemm", "winograd", "few_channels", "winograd4", "fft")
DATA_ALGOS = ("implicit_gemm", "few_channels", "winograd", "patch", "strided_1x1", "winograd4", "fft")
WEIGHTS_ALGOS = ("implicit_gemm", "few_channels", "winograd", "winograd4", "patch", "fft")
ALGOS = {"forward": FORWARD_ALGOS, "backward_data": DATA_ALGOS, "backward_weights": WEIGHTS_ALGOS}
WINOGRAD_TILES = {"winograd": 2, "winograd4": 4}   # algorithm -> winograd.py's output (dy) tile
DEFAULT = "implicit_gemm"   # runs every shape; what a CUDA-graph capture gets for an untimed shape

WINOGRAD_MIN_CHANNELS = 16      # below this the 16 small GEMMs have too short a reduction to pay
WINOGRAD_MAX_WORKSPACE = 1 << 29  # float32 elements (2 GB): U, V and the GEMM output round-trip HBM
PATCH_MIN_CHANNELS = 8  # below this few_channels is the candidate; a patch kernel's 8-wide tiles idle


def _shapes(dims):
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    return (N, C, H, Wd), (K, C, R, S), (sh, sw), (ph, pw)


def winograd_ok(dims, phase: str, sms: int | None = None, tile: int = 2) -> bool:
    """Whether Winograd (winograd.py) is a candidate for this layer and phase: stride 1, a 3x3 kernel (tile
    2 or 4) or a 5x5 one (tile 2), padding <= R - 1, >= WINOGRAD_MIN_CHANNELS channels in and out, and a
    workspace within
    WINOGRAD_MAX_WORKSPACE: every phase runs the batch in chunks of images to stay within it
    (``winograd_images``; ``sms``: the SM count the weight gradient's plan is made for; ``tile``: its dy
    tile, 2 for "winograd", 4 for "winograd4")."""
    if min(dims[1], dims[4]) < WINOGRAD_MIN_CHANNELS or not winograd.fits(*_shapes(dims), tile):
        return False
    return winograd_images(dims, phase, sms, tile) > 0


def winograd_images(dims, phase: str, sms: int | None = None, tile: int = 2) -> int:
    """Images per chunk that Winograd's ``phase`` runs this layer with: the whole batch when its workspace
    fits WINOGRAD_MAX_WORKSPACE, else equal chunks that do (0: not even one image fits). VGG-16's 3x3
    layers at 112x112 and 224x224 need 2.3-6.1 GB for a batch of 64 at once. ``sms`` and ``tile``: as in
    ``winograd_ok`` (backward-weights only; ``sms`` default the current device's)."""
    x_shape, w_shape, stride, padding = _shapes(dims)
    weights = phase == "backward_weights"
    sms = planning_sms() if sms is None and weights else sms
    return _winograd_images(x_shape, w_shape, padding, phase, WINOGRAD_MAX_WORKSPACE, sms if weights else None,
                            tile)


@functools.lru_cache(maxsize=4096)
def _winograd_images(x_shape, w_shape, padding, phase, limit, sms, tile):
    return winograd.chunk_images(x_shape, w_shape, padding, phase, limit, sms, tile)


def patch_ok(dims, phase: str, sms: int = 132) -> bool:
    """Whether the patch kernel of ``phase`` ("backward_weights" / "backward_data") is a candidate for
    this layer: stride 1, a 3..7 tap kernel (R and S: with fewer taps a staged patch is reused too little
    to beat the implicit GEMM), >= PATCH_MIN_CHANNELS input channels, and a launch plan that fits."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if (sh, sw) != (1, 1) or not (3 <= R <= 7 and 3 <= S <= patch.MAX_S) or C < PATCH_MIN_CHANNELS:
        return False
    if phase == "backward_weights":
        return patch.weights_plan(dims, sms) is not None
    return patch.data_plan(dims) is not None


def _winograds(dims, phase: str, sms: int) -> list:
    """The Winograd algorithms (WINOGRAD_TILES) that can run this layer in ``phase``."""
    return [name for name, tile in WINOGRAD_TILES.items() if winograd_ok(dims, phase, sms, tile)]


def candidates(dims, phase: str, sms: int = 132) -> list:
    """The algorithms that can run this layer in ``phase``: what "auto" times (module docstring)."""
    N, C, H, Wd, K, R, S = dims[:7]
    names = [DEFAULT]
    if phase == "forward":
        names += _winograds(dims, phase, sms)
        if few_channels.forward_fits(dims):
            names.append("few_channels")
    elif phase == "backward_data":
        if few_channels.data_fits(C, K, R, S):
            names.append("few_channels")
        names += _winograds(dims, phase, sms)
        if patch_ok(dims, phase, sms):
            names.append("patch")
        if strided_1x1.fits(dims):
            names.append("strided_1x1")
    elif phase == "backward_weights":
        if few_channels.weights_plan(dims, sms) is not None:
            names.append("few_channels")
        names += _winograds(dims, phase, sms)
        if patch_ok(dims, phase, sms):
            names.append("patch")
    else:
        raise ValueError(f"conv candidates: phase={phase!r}; use one of {PHASES}")
    if fft.fits(dims, phase):
        names.append("fft")
    return names


def check_algo(algo: str, phase: str, what: str) -> None:
    """Raise ValueError unless ``algo`` is "auto" or an algorithm of ``phase``; ``what`` names the caller."""
    if algo != "auto" and algo not in ALGOS[phase]:
        names = ", ".join(repr(a) for a in ("auto",) + ALGOS[phase])
        raise ValueError(f"{what}: algo={algo!r}; use one of {names}")


def choose(phase: str, dims, run, sms: int = 132, key=()) -> str:
    """The algorithm "auto" runs for this layer and phase: the cached choice, else the fastest of
    ``candidates(dims, phase, sms)`` timed now, with ``run(name)`` making one call of algorithm ``name``
    on the caller's arrays (asked only on a cache miss). ``key``: more of what the choice depends on
    (the forward's bias presence)."""
    def calls():
        return {name: functools.partial(run, name) for name in candidates(dims, phase, sms)}

    return runtime.autotune(("conv", phase, dims) + tuple(key), calls, DEFAULT)


def workspace_size(dims, sms: int = 132) -> int:
    """float32 elements of workspace the forward and backward passes of this layer need, whichever
    algorithm runs them (0 if none). Plans depend on the launch cost in force: size the workspace under
    the same setting as the calls that use it."""
    x_shape, w_shape, stride, padding = _shapes(dims)
    need = implicit_gemm.workspace_size(dims, sms)
    if few_channels.weights_plan(dims, sms) is not None:
        need = max(need, few_channels.workspace_size(x_shape, w_shape, stride, padding, sms))
    for phase in PHASES:
        for tile in WINOGRAD_TILES.values():
            if winograd_ok(dims, phase, sms, tile):
                images = winograd_images(dims, phase, sms, tile)
                need = max(need, winograd.workspace_size(x_shape, w_shape, stride, padding, phase, sms, images,
                                                          tile))
    # "fft" where it can run
    need = max(need, strided_1x1.workspace_size(dims, sms), *(fft.workspace_size(dims, p) for p in fft.PHASES))
    # patch wherever it can run (also when called by name, not only where it is a timed candidate)
    return max(need, patch.workspace_size(x_shape, w_shape, stride, padding, sms))


def kernel_modules(dims) -> list:
    """(family, defines) of every kernel module the candidates of any phase of this layer may load."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    mods = implicit_gemm.modules()
    if any(winograd_ok(dims, phase) for phase in PHASES):
        mods += winograd.modules()
    if few_channels.forward_fits(dims) or few_channels.weights_plan(dims) is not None:
        mods.append((few_channels.FAMILY, {"SC_S": S, "SC_SW": sw}))
    if few_channels.data_fits(C, K, R, S):
        mods.append((few_channels.FAMILY, {"SC_C": C, "SC_S": S, "SC_SW": sw}))
    if patch_ok(dims, "backward_data") or patch_ok(dims, "backward_weights"):
        mods.append((patch.FAMILY, patch.defines(S)))
    if patch_ok(dims, "backward_weights"):
        mods += [(patch.FAMILY, patch.defines(S, p.kb, p.t)) for p in patch.weights_candidates(dims)
                 if (p.kb, p.t) != (patch.KB, 1)]
    if strided_1x1.fits(dims):
        mods += strided_1x1.modules()
    return mods + fft.modules_of(dims)


def zoo_kernel_modules() -> list:
    """``kernel_modules`` of every conv layer of the model zoo's specs (the shapes the default suites run;
    the modules that depend on a layer's shape, not on its batch size, at batch 1 and 256)."""
    import modelspec

    mods = []
    for name in modelspec.zoo_names():
        for layer in modelspec.load(name).layers:
            if layer.type != "conv2d":
                continue
            w_shape = (layer.out_channels, layer.in_shape[0], *layer.kernel_size)
            for n in (1, 256):
                dims = conv_dims((n, *layer.in_shape), w_shape, tuple(layer.stride), tuple(layer.padding))
                mods += kernel_modules(dims)
    return mods
