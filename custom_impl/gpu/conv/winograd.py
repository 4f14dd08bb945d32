"""Winograd convolution on the GPU (``kernels/conv_winograd.cu``), stride 1: the algorithm "winograd" of
every phase, F(2x2, 3x3) for 3x3 kernels (forward, backward-data and, as F(3x3, 2x2), backward-weights) and
F(2x2, 5x5) for 5x5 kernels (the same passes on a 6x6 transform domain, at the end of this docstring); and
"winograd4", F(4x4, 3x3) / F(3x3, 4x4) for 3x3 kernels. Most of what follows describes F(2x2, 3x3).

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out; padding (ph, pw) in 0..2; P = H + 2ph - 2,
Q = W + 2pw - 2. NCHW, cross-correlation (PyTorch), W (K, C, 3, 3).

    forward:        y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p-ph+r, q-pw+s]
    backward-data:  dx          = the forward of dy (N, K, P, Q) with padding (2-ph, 2-pw) and the filter
                                  W'[c,k,r,s] = W[k,c,2-r,2-s] (K and C swapped, rotated 180 degrees)

Algorithm (F(2x2, 3x3); Bt 4x4, G 4x3, At 2x4 with entries 0, +-1, +-1/2; see conv_winograd.cu). The output is
cut into 2x2 tiles: tP = ceil(P/2), tQ = ceil(Q/2), T = N*tP*tQ tiles, tile t = (n*tP + tp)*tQ + tq, and
each tile needs the 4x4 input patch starting at (2tp - ph, 2tq - pw). With xi in 0..15 (the 4x4 tile
flattened), four kernels run in order on CuPy's current stream:

    1. winograd_filter  U[xi, k, c]  = (G W[k,c] G^T)[xi]                 U  (16, K, Cp)   Cp = ceil4(C)
    2. winograd_input   V[xi, c, t]  = (Bt d[n,c,tile t] B)[xi]           V  (16, C, Tp)   Tp = ceil4(T)
    3. winograd_gemm    Mo[xi]       = U[xi] (K x C) @ V[xi] (C x Tp)     Mo (16, K, Tp)   16 GEMMs, grid.z
    4. winograd_output  y[n,k,2tp+i,2tq+j] = (At Mo[:, k, t] A)[i, j] + b[k]   (i, j past P, Q skipped)

The row lengths are padded to multiples of 4 (zeros in the padding) so that every GEMM operand row is
float4-aligned. The GEMM is gemm_tiles.cuh's ``gemm_tile`` (KVecLoader for U, MNVecLoader for V, the plain
row-major epilogue) with a tile config chosen from ``CANDIDATES`` by the tiles.py cost model.

Cost, for N64 C256 28x28 K256 pad 1 (T = 12544; backward-data of the same layer is the same with C, K
swapped): the GEMMs do 2*16*K*C*T = 26.3 GFLOP where the direct convolution does 2*9*K*C*N*P*Q = 59.2
(2.25x fewer multiplies). Memory traffic (minimum, HBM): filter 2.4 MB read + 4.2 MB written (U); input
transform 51.4 MB of x read (the overlapping patches come from L1/L2) + 205.5 MB of V written; GEMM 205.5 MB
of V read (from L2 for the second of the K/BM = 2 row tiles where it is still there) + 205.5 MB of Mo
written; output transform 205.5 MB of Mo read + 51.4 MB of y written: ~0.93 GB, ~0.31 ms at 3.0 TB/s,
against ~0.6 ms for the GEMMs at ~42 TFLOP/s. Measured (H100 80GB HBM3, per kernel): GEMMs 664 us (39.6
TFLOP/s), input transform 100 us, output 90 us, filter 9 us; forward 899 us with the BK=16 tile, vs 1817 us
for the implicit GEMM and 662 us for cuDNN. For N256 C64 56x56 K64 the transforms (385 + 353 us, at
~2.7 TB/s) cost nearly as much as the GEMMs (848 us). Unfused on purpose: four simple kernels, the GEMM reused
unchanged; the price is V and Mo round-tripping through HBM (8x the bytes of x and y). Fusing the input
transform into the GEMM's B loader and the output transform into its epilogue would remove that traffic.

Backward-weights (F(3x3, 2x2), the same 4x4 transform domain): the output-side 2x2 tiles of dy and the
4x4 input patches of x that the forward pairs with them give, per tile, dW[k,c] += G^T [(A e A^T) (.) (Bt d B)] G
with e the 2x2 dy tile, d the 4x4 x patch and A = At^T. Summed over tiles that is 16 GEMMs reducing over t:

    1. winograd_input        V[xi, c, t]  = (Bt d B)[xi]             V  (16, C, Tp)   (the forward's kernel)
    2. winograd_dy           Y[xi, k, t]  = (A e A^T)[xi]            Y  (16, K, Tp)
    3. winograd_wgrad_gemm   Mw[s, xi]    = Y[xi] (K x Tp) @ V[xi]^T   Mw (splits, 16, K, C): split-K over t
    4. winograd_wgrad_output dW[k, c]     = G^T (sum_s Mw[s, :, k, c]) G   (splits summed in a fixed order)

For N64 C256 28x28 K256: 2*16*K*C*Tp = 26.3 GFLOP against the direct 59.2, plus ~0.8 GB of V and Y
written and read back. The reduction is long (Tp = 12544) and the output small (16 x 256 x 256), so the
GEMM splits t (``weights_plan``) to fill the SMs. ``tile=4`` (the algorithm "winograd4") runs F(3x3, 4x4)
instead: 4x4 dy tiles and 6x6 x patches, 36 GEMMs over a quarter as many tiles, 2*36*K*C*T4 = 14.8 GFLOP
for the layer above (4x fewer multiplications than the direct sum) and 36/64 of the V and Y bytes, at a
larger rounding error (transform entries up to 8; see conv_winograd.cu).

5x5 kernels (``tile=2`` with W (K, C, 5, 5)): F(2x2, 5x5) uses F(4x4, 3x3)'s interpolation points (0, +-1,
+-2, infinity), so the same 6x6 input transform Bt, with the patch at (2tp - ph, 2tq - pw); G is 6x5 and At
2x6 (conv_winograd.cu). Per 2x2 tile and (k, c) 36 multiplications where the direct sum takes 4 x 25 = 100
(2.8x fewer). Padding 0..4; backward-data pads dy by 4 - padding; the weight gradient is F(5x5, 2x2), as
F(3x3, 2x2) with xis = 36. For LeNet's conv2 (N256 C32 14x14 K64, pad 2): 2*36*K*C*T = 1.85 GFLOP of GEMMs
against the direct sum's 5.14, and V, Mo 58 + 116 MB.

A batch whose V and Y exceed the caller's workspace cap runs in chunks of images (``images``): each chunk
transforms its images into V and Y and writes its own split partials into Mw, and the output transform
sums every chunk's partials in one fixed order, so chunking needs no accumulation pass and stays
deterministic (VGG-16's 3x3 layers at 112x112 and 224x224, batch 64, run in 2-4 chunks within the 2 GB cap
of conv/select.py).

Workspace: U, V and Mo, ``workspace_size(...)`` float32 elements (each part a multiple of 4 elements). With
the output and ``workspace`` given nothing is allocated and the host is never synchronised (CUDA-graph
capturable); ``workspace=None`` takes the runtime's shared grow-only per-device buffer (``runtime.workspace``),
which allocates the first time it has to grow. Results are deterministic (no atomics).

Example::

    if fits(x.shape, W.shape, 1, 1):
        y = forward(x, W, b, None, 1)                # y (N, K, P, Q)
        dx = backward_data(dy, W, None, 1)           # dx (N, C, H, W)
        dW = backward_weights(dy, x, None, 1)        # dW (K, C, 3, 3), or (K, C, 5, 5) for a 5x5 layer
"""
from __future__ import annotations

import functools

import numpy as np

from .. import runtime
from ..runtime import blocks, check_array, checked_workspace, i32, i32_memo, pair, ptr, vec_ok_at
from ..tiles import CONFIG_BY_NAME, estimate_seconds, split_chunk
from .geometry import planning_sms

FAMILY = "conv_winograd"
THREADS = 256       # threads per block of the transform kernels
KERNEL_SIZES = (3, 5)   # R x R kernels: F(2x2, 3x3) and F(4x4, 3x3) for 3x3, F(2x2, 5x5) for 5x5
INT32_MAX = 2**31 - 1
PHASES = ("forward", "backward_data", "backward_weights")
# kernel size -> its output (weight gradient: dy) tile sizes: F(2x2, 3x3) / F(4x4, 3x3) (F(3x3, 2x2) /
# F(3x3, 4x4)), F(2x2, 5x5) (F(5x5, 2x2)); F(4x4, 5x5)'s 8x8 domain would round too far
TILES_BY_SIZE = {3: (2, 4), 5: (2,)}
TILES = tuple(sorted({t for tiles in TILES_BY_SIZE.values() for t in tiles}))   # every tile size: (2, 4)
# (tile, kernel size) -> the prefix of its kernels' names in conv_winograd.cu
KERNEL_PREFIX = {(2, 3): "conv_winograd", (4, 3): "conv_winograd4", (2, 5): "conv_winograd25"}
GRID_Y_MAX = 65535  # the transforms put the channel on grid.y
# The GEMM tile configs compiled and tested here (``config=``): implicit_gemm.CONFIGS plus the tiles' BK=16
# 128x128 tile. NOTE: the chooser leaves the BK=16 tile out: in winograd_gemm it measured 3-5% slower than
# 128x128x8 (H100 80GB HBM3: 697 vs 664 us at N64 C256 28x28 K256, 347 vs 336 at N128 C256 14x14 K256,
# 131 vs 127 at N128 C128 16x16 K128), although the tiles' model rates it 1.10 vs 1.00 for square GEMMs.
CONFIGS = tuple(CONFIG_BY_NAME[n] for n in ("128x128x16_8x8", "128x128x8_8x8", "128x64x8_8x8", "64x128x8_8x8",
                                            "64x64x8_8x8", "32x64x8_4x8", "32x32x8_4x4"))
CANDIDATES = CONFIGS[1:]


@functools.lru_cache(maxsize=None)
def _pass_kernels(m, r, cfg, device_id) -> tuple:
    """(filter, input, output, dy, weight output) kernels of the m x m tile and r x r kernel, and the two
    GEMMs (forward, weight gradient), from the module of ``cfg``: one lookup per call, not one per launch."""
    prefix = KERNEL_PREFIX[m, r]
    return (_kernel(f"{prefix}_filter", cfg, device_id), _kernel(f"{prefix}_input", cfg, device_id),
            _kernel(f"{prefix}_output", cfg, device_id), _kernel(f"{prefix}_dy", cfg, device_id),
            _kernel(f"{prefix}_wgrad_output", cfg, device_id), _kernel("conv_winograd_gemm", cfg, device_id),
            _kernel("conv_winograd_wgrad_gemm", cfg, device_id))


@functools.lru_cache(maxsize=None)
def _kernel(name, cfg, device_id):
    """The compiled kernel ``name`` from the module of GEMM tile config ``cfg`` (all kernels of a pass come
    from one module: one compile per tile config), per device."""
    return runtime.kernel(FAMILY, name, cfg.defines, cfg.smem_bytes)


def modules() -> list:
    """(family, defines) of every module of this family the default path can load (the chooser's tiles)."""
    return [(FAMILY, dict(cfg.defines)) for cfg in CANDIDATES]


def _ceil4(v: int) -> int:
    return (v + 3) // 4 * 4


def _problem(x_shape, w_shape, stride, padding):
    """(N, C, H, W, K, P, Q, ph, pw, R) of a forward with an R x R kernel, or a string saying why Winograd
    cannot run it."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        return f"x {tuple(x_shape)} and W {tuple(w_shape)} must both be 4-D (N, C, H, W) and (K, C, R, R)"
    N, C, H, Wd = (int(v) for v in x_shape)
    K, Cw, R, S = (int(v) for v in w_shape)
    try:
        sh, sw = pair(stride, "stride", "winograd")
        ph, pw = pair(padding, "padding", "winograd")
    except (TypeError, ValueError):
        return f"stride {stride!r} and padding {padding!r} must be ints or (h, w) pairs"
    if C != Cw:
        return f"x has {C} channels but W {tuple(w_shape)} expects {Cw}"
    if R != S or R not in KERNEL_SIZES:
        return f"W {tuple(w_shape)} is a {R}x{S} kernel; Winograd here needs 3x3 or 5x5"
    if (sh, sw) != (1, 1):
        return f"stride {(sh, sw)}; Winograd needs stride 1"
    if not (0 <= ph <= R - 1 and 0 <= pw <= R - 1):
        return (f"padding {(ph, pw)}; Winograd with a {R}x{R} kernel needs 0 <= padding <= {R - 1} (backward-data "
                f"pads by {R - 1} - padding)")
    if min(N, C, H, Wd, K) < 1:
        return f"x {tuple(x_shape)} and W {tuple(w_shape)} must have no empty dimension"
    P, Q = H + 2 * ph - (R - 1), Wd + 2 * pw - (R - 1)
    if P < 1 or Q < 1:
        return f"a {R}x{R} kernel does not fit the {H}x{Wd} input padded by {(ph, pw)}"
    return N, C, H, Wd, K, P, Q, ph, pw, R


def _limits_message(N, C_in, C_out, Ho, Wo) -> str | None:
    """Why one Winograd pass (C_in -> C_out channels, output Ho x Wo) exceeds the kernels' 32-bit limits."""
    T = N * -(-Ho // 2) * -(-Wo // 2)
    if _ceil4(T) > INT32_MAX:
        return f"{T} output tiles exceed the kernels' int32 tile index"
    if max(C_in, C_out) > GRID_Y_MAX:
        return f"{max(C_in, C_out)} channels exceed the grid.y limit of {GRID_Y_MAX}"
    if 16 * max(C_in, C_out) * _ceil4(min(C_in, C_out)) > INT32_MAX:
        return "the filter transform's (channels x channels) index exceeds int32"
    return None


def fits(x_shape, w_shape, stride, padding, tile: int = 2) -> bool:
    """Whether every phase can run this convolution in ``tile`` x ``tile`` output tiles: W (K, C, 3, 3) with
    tile 2 or 4, or W (K, C, 5, 5) with tile 2; stride 1; 0 <= padding <= R - 1 (h and w); tile / channel
    counts within the kernels' 32-bit indices."""
    prob = _problem(x_shape, w_shape, stride, padding)
    if isinstance(prob, str) or tile not in TILES_BY_SIZE[prob[9]]:
        return False
    N, C, H, Wd, K, P, Q, ph, pw, R = prob
    return _limits_message(N, C, K, P, Q) is None and _limits_message(N, K, C, H, Wd) is None


def checked_problem(x_shape, w_shape, stride, padding, what):
    """``_problem``'s tuple, or a ValueError naming ``what`` and the way out where Winograd cannot run the
    convolution or its tile / channel counts exceed the kernels' 32-bit indices. Memoised per shapes,
    stride and padding (eager calls repeat them); an unhashable stride or padding (a list) is checked
    unmemoised."""
    try:
        prob, msg = _checked(tuple(x_shape), tuple(w_shape), stride, padding)
    except TypeError:
        prob, msg = _check(x_shape, w_shape, stride, padding)
    if isinstance(prob, str):
        raise ValueError(f"winograd.{what}: {prob}. Check winograd.fits(...) first and use "
                         f"another algorithm for this layer ('implicit_gemm', or 'auto')")
    if msg is not None:
        raise ValueError(f"winograd.{what}: {msg}; split the batch or use the implicit GEMMs (algo 'implicit_gemm')")
    return prob


def _check(x_shape, w_shape, stride, padding):
    """(``_problem``'s tuple or reason, the 32-bit limits' message or None)."""
    prob = _problem(x_shape, w_shape, stride, padding)
    if isinstance(prob, str):
        return prob, None
    N, C, H, Wd, K, P, Q, ph, pw, R = prob
    return prob, _limits_message(N, C, K, P, Q) or _limits_message(N, K, C, H, Wd)


_checked = functools.lru_cache(maxsize=4096)(_check)


class _Pass:
    """One Winograd pass: ``C_in`` input channels of an Hi x Wi image, ``C_out`` outputs of Ho x Wo, in m x m
    output tiles of an r x r kernel."""

    def __init__(self, N, C_in, Hi, Wi, C_out, Ho, Wo, ph, pw, m=2, r=3):
        self.N, self.C_in, self.Hi, self.Wi, self.C_out, self.Ho, self.Wo = N, C_in, Hi, Wi, C_out, Ho, Wo
        self.ph, self.pw, self.m, self.r = ph, pw, m, r
        self.tP, self.tQ = -(-Ho // m), -(-Wo // m)   # m x m output tiles (the weight gradient's: dy tiles)
        self.T = N * self.tP * self.tQ
        self.Tp = _ceil4(self.T)
        self.Ip = _ceil4(C_in)
        self.xis = (m + r - 1) ** 2           # transform-domain values per tile: 16 for F(2x2, 3x3), else 36
        self.n_u = self.xis * C_out * self.Ip   # U  (xis, C_out, Ip)
        self.n_v = self.xis * C_in * self.Tp    # V  (xis, C_in, Tp)
        self.n_m = self.xis * C_out * self.Tp   # Mo (xis, C_out, Tp)

    @property
    def size(self) -> int:
        return self.n_u + self.n_v + self.n_m

    def for_images(self, n: int) -> "_Pass":
        """The same pass over ``n`` images (a chunk of the batch)."""
        return _pass(n, self.C_in, self.Hi, self.Wi, self.C_out, self.Ho, self.Wo, self.ph, self.pw, self.m,
                     self.r)

    @functools.cached_property
    def input_args(self) -> tuple:
        """The input transforms' scalar arguments (N, C_in, Hi, Wi, ph, pw, tP, tQ, Tp) as int32s."""
        return i32(self.N, self.C_in, self.Hi, self.Wi, self.ph, self.pw, self.tP, self.tQ, self.Tp)

    @functools.cached_property
    def output_args(self) -> tuple:
        """The output and dy transforms' scalar arguments (N, C_out, Ho, Wo, tP, tQ, Tp) as int32s."""
        return i32(self.N, self.C_out, self.Ho, self.Wo, self.tP, self.tQ, self.Tp)


@functools.lru_cache(maxsize=4096)
def _pass(*args) -> _Pass:
    """``_Pass(*args)``, one object per geometry: its argument tuples are built once, not per call."""
    return _Pass(*args)


def forward_pass(prob, images: int | None = None, tile: int = 2) -> _Pass:
    """The forward pass of ``prob`` in ``tile`` x ``tile`` output tiles (TILES_BY_SIZE), over chunks of ``images``
    images (None: the whole batch at once)."""
    N, C, H, Wd, K, P, Q, ph, pw, R = prob
    return _pass(min(N, images or N), C, H, Wd, K, P, Q, ph, pw, _checked_tile(tile, R), R)


def backward_pass(prob, images: int | None = None, tile: int = 2) -> _Pass:
    """The backward-data pass of ``prob`` (the forward of dy with the flipped filter), as ``forward_pass``."""
    N, C, H, Wd, K, P, Q, ph, pw, R = prob
    return _pass(min(N, images or N), K, P, Q, C, H, Wd, R - 1 - ph, R - 1 - pw, _checked_tile(tile, R), R)


def _checked_tile(tile, r: int) -> int:
    """``tile`` where an r x r kernel has it (TILES_BY_SIZE), else a ValueError naming the ones it has."""
    if tile not in TILES_BY_SIZE[r]:
        raise ValueError(f"winograd: tile={tile!r} with a {r}x{r} kernel; use one of {TILES_BY_SIZE[r]} "
                         f"(3x3: F(2x2, 3x3) or F(4x4, 3x3); 5x5: F(2x2, 5x5))")
    return tile


def chunk_images(x_shape, w_shape, padding, phase: str, max_elements: int, sms: int | None = None,
                 tile: int = 2) -> int:
    """Images per chunk for ``phase`` ("forward", "backward_data" or "backward_weights") of this stride-1
    3x3 convolution so that the workspace stays within ``max_elements`` float32 elements: the whole batch
    when it fits, else the batch cut into equal chunks (the last one possibly smaller) each within the
    bound; 0 when none does. Forward and backward-data compute the filter transform U once and share it
    across the chunks; V and Mo are per chunk, so the chunks run one after another in one workspace.
    Backward-weights (``sms``: the SM count its plan is made for; ``tile``: its dy tile, TILES_BY_SIZE) transforms
    x and dy per chunk and keeps every chunk's GEMM partials, summed in one fixed order at the end; it
    takes the fewest chunks (at most MAX_WEIGHT_SPLITS) that fit."""
    if phase not in PHASES:
        raise ValueError(f"winograd.chunk_images: phase={phase!r}; use one of {PHASES}")
    prob = checked_problem(x_shape, w_shape, 1, padding, "chunk_images")
    N = prob[0]
    if phase == "backward_weights":
        # NOTE: the partials grow with the chunk count (up to MAX_WEIGHT_SPLITS slabs, or one per chunk past
        # that), so the workspace is not monotone in the images per chunk: try the chunk counts in order
        # and take the first that fits, up to MAX_WEIGHT_SPLITS chunks
        sms = _sms(sms)
        for chunks in range(1, min(N, MAX_WEIGHT_SPLITS) + 1):
            images = -(-N // chunks)
            if (chunks == 1 or images < -(-N // (chunks - 1))) \
                    and weights_pass(prob, sms, images=images, tile=tile).size <= max_elements:
                return images
        return 0
    make = forward_pass if phase == "forward" else backward_pass
    if make(prob, None, tile).size <= max_elements:
        return N
    lo, hi = 0, N        # the largest n with a workspace within the bound: lo fits (or is 0), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if make(prob, mid, tile).size <= max_elements else (lo, mid)
    if lo == 0:
        return 0
    chunks = -(-N // lo)
    return -(-N // chunks)   # equal chunks: 64 images within a bound of 55 run as 32 + 32, not 55 + 9


MAX_WEIGHT_SPLITS = 64     # split-K of the weight-gradient GEMMs: at most this many t ranges
MIN_WEIGHT_CHUNK = 256     # ... each at least this long (shorter ones spend more on partials than FFMAs)


def weights_plan(M: int, N: int, Tp: int, sms: int = 132, max_splits: int = MAX_WEIGHT_SPLITS, xis: int = 16):
    """(TileConfig, t_chunk, splits) of the ``xis`` weight-gradient GEMMs (16 for F(3x3, 2x2), 36 for
    F(3x3, 4x4)) M (= K) x N (= C) over Tp tiles: the ``CANDIDATES`` config and power-of-two split count
    (<= ``max_splits``) with the lowest tiles.py ``estimate_seconds``, the GEMMs costed as one of
    xis * ceil(M / BM) * BM rows (one launch, as ``choose_config``). The output transform always runs, so
    a split costs only its partials' traffic (counted by the estimate)."""
    return _weights_plan(int(M), int(N), int(Tp), int(sms), int(max_splits), int(xis))


@functools.lru_cache(maxsize=4096)
def _weights_plan(M, N, Tp, sms, max_splits, xis):
    cfg, s = _best_plan(M, N, Tp, sms, max(1, max_splits), xis)
    t_chunk, splits = split_chunk(Tp, s, cfg.bk)
    return cfg, t_chunk, splits


class WeightsPass:
    """The backward-weights plan, F(R x R, ``tile`` x ``tile``) (TILES_BY_SIZE), over chunks of ``images``
    images (None: the whole batch at once); xis = (tile + R - 1)^2 transform-domain values.

    Per chunk: tiles over dy's P x Q, V (xis, C, Tp), Y (xis, K, Tp) (sized for the largest chunk, reused
    by each), and the chunk's split partials, each a (xis, K, C) slab of Mw; every chunk's slabs stay in
    Mw (``slabs`` in all) and the output transform sums them in order, so the result is deterministic and
    the chunks need no accumulation pass. A batch in chunks has at most MAX_WEIGHT_SPLITS // chunks splits
    per chunk (at least one), which bounds Mw."""

    def __init__(self, prob, sms: int, config=None, splits=None, images=None, tile: int = 2):
        N, C, H, Wd, K, P, Q, ph, pw, R = prob
        _checked_tile(tile, R)
        images = min(N, images or N)
        self.images, self.tile, self.xis = images, tile, (tile + R - 1) ** 2
        self.geo = _pass(images, C, H, Wd, K, P, Q, ph, pw, tile, R)   # the largest chunk: T / Tp / tP / tQ
        n_chunks = -(-N // images)
        cfg, t_chunk, n_splits = weights_plan(K, C, self.geo.Tp, sms, MAX_WEIGHT_SPLITS // n_chunks, self.xis)
        if config is not None:
            cfg = CONFIG_BY_NAME[config] if isinstance(config, str) else config
            t_chunk, n_splits = split_chunk(self.geo.Tp, n_splits, cfg.bk)
        if splits is not None:
            if not 1 <= int(splits) <= MAX_WEIGHT_SPLITS:
                raise ValueError(f"winograd.backward_weights: splits={splits}; use 1..{MAX_WEIGHT_SPLITS}")
            t_chunk, n_splits = split_chunk(self.geo.Tp, int(splits), cfg.bk)
        self.cfg, self.K, self.C = cfg, K, C
        # (first image, geometry, t_chunk, splits, first slab) of each chunk; a short last chunk has fewer
        # tiles, so its t ranges are planned again with the same split count
        self.chunks = []
        slab = 0
        for n0 in range(0, N, images):
            geo = self.geo if N - n0 >= images else self.geo.for_images(N - n0)
            chunk, count = (t_chunk, n_splits) if geo is self.geo else split_chunk(geo.Tp, n_splits, cfg.bk)
            self.chunks.append((n0, geo, chunk, count, slab))
            slab += count
        self.slabs = slab
        self.n_v = self.xis * C * self.geo.Tp
        self.n_y = self.xis * K * self.geo.Tp
        self.n_m = _ceil4(self.slabs * self.xis * K * C)

    @property
    def size(self) -> int:
        return self.n_v + self.n_y + self.n_m


@functools.lru_cache(maxsize=4096)
def weights_pass(prob, sms: int, config=None, splits=None, images=None, tile: int = 2) -> WeightsPass:
    """``WeightsPass(...)``, memoised: a repeated call plans nothing (the same arguments, the same object)."""
    return WeightsPass(prob, sms, config, splits, images, tile)


def workspace_size(x_shape, w_shape, stride, padding, phase: str = "forward", sms: int | None = None,
                   images: int | None = None, tile: int = 2) -> int:
    """float32 elements of workspace that ``forward`` (phase "forward"), ``backward_data`` ("backward_data")
    or ``backward_weights`` ("backward_weights": its split count depends on ``sms``, the device's SM count,
    default the current device's, or 132 without CuPy; ``tile`` its dy tile, TILES_BY_SIZE) needs for this
    convolution; ``images``: the chunk size the pass runs with (None: the whole batch)."""
    prob = checked_problem(x_shape, w_shape, stride, padding, "workspace_size")
    if phase == "forward":
        return forward_pass(prob, images, tile).size
    if phase == "backward_data":
        return backward_pass(prob, images, tile).size
    if phase == "backward_weights":
        return weights_pass(prob, _sms(sms), images=images, tile=tile).size
    raise ValueError(f"winograd.workspace_size: phase={phase!r}; use one of {PHASES}")


def _sms(sms: int | None) -> int:
    return planning_sms() if sms is None else int(sms)


def choose_config(M: int, N: int, Kr: int, sms: int = 132, xis: int = 16):
    """The TileConfig of ``CANDIDATES`` with the lowest tiles.py ``estimate_seconds`` for the ``xis`` GEMMs
    M x N over Kr (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)). NOTE: the GEMMs are one launch (grid.z), so
    each config is costed as one GEMM of xis * ceil(M / BM) * BM rows: the same number of blocks, the
    padding rows of M counted as work."""
    return _choose_config(int(M), int(N), int(Kr), int(sms), int(xis))


@functools.lru_cache(maxsize=4096)
def _choose_config(M, N, Kr, sms, xis):
    return _best_plan(M, N, Kr, sms, 1, xis)[0]


def _best_plan(M, N, Kr, sms, max_splits, xis=16):
    """(TileConfig, splits) of ``CANDIDATES`` x power-of-two splits (<= max_splits, each split >=
    MIN_WEIGHT_CHUNK long) with the lowest ``estimate_seconds`` for the ``xis`` GEMMs costed as one GEMM of
    xis * ceil(M / BM) * BM rows."""
    best = None
    for cfg in CANDIDATES:
        rows = xis * -(-M // cfg.bm) * cfg.bm
        s = 1
        while s <= max_splits and (s == 1 or Kr // s >= MIN_WEIGHT_CHUNK):
            t = estimate_seconds(cfg, rows, N, Kr, s, sms, launch_s=0.0)
            if best is None or t < best[0]:
                best = (t, cfg, s)
            s *= 2
    return best[1], best[2]


F32 = 4   # bytes per float32 element


def _at(a, offset: int = 0) -> int:
    """The device address of float32 element ``offset`` (flat) of CuPy array ``a``. The launches pass
    addresses, not slices: a CuPy slice costs microseconds of host time, several per eager call."""
    return a.data.ptr + F32 * offset


# Launch lists. A pass's launches (kernels, grids, addresses, scalars) follow from its geometry, tile config
# and the arrays' addresses alone; an eager call that repeats them (the common case: the same shapes and
# buffers call after call) replays the list its first call made instead of working the addresses, grids
# and flags out again. Keyed on everything they depend on; addresses only (no array is kept alive), so an
# array freed and another allocated at its address with the same geometry gets the same, correct launches.
_launch_lists: dict = {}
MAX_LAUNCH_LISTS = 4096   # past this many keys (shapes x buffers), the lists are made afresh


def _run(ps: _Pass, inp, Wt, b, out, ws, flip: bool, config=None) -> None:
    """The four kernels of one pass: inp (N, C_in, Hi, Wi) -> out (N, C_out, Ho, Wo), in chunks of ``ps.N``
    images (the filter transform once, then input transform, GEMMs and output transform per chunk)."""
    _replay((ps, flip, config, runtime.device_id(), inp.shape[0], inp.data.ptr, Wt.data.ptr, ptr(b), out.data.ptr,
             ws.data.ptr), _launch_list, ps, inp, Wt, b, out, ws, flip, config)


def _replay(key, build, *args) -> None:
    """Run the launch list memoised under ``key``, made by ``build(*args)`` the first time."""
    launches = _launch_lists.get(key)
    if launches is None:
        if len(_launch_lists) >= MAX_LAUNCH_LISTS:
            _launch_lists.clear()
        launches = _launch_lists[key] = build(*args)
    for kern, grid, block, args, smem in launches:
        kern(grid, block, args, shared_mem=smem)


def _launch_list(ps: _Pass, inp, Wt, b, out, ws, flip: bool, config) -> list:
    """``_run``'s launches as (kernel, grid, block, arguments, shared memory) tuples."""
    U = _at(ws)
    K, C = (ps.C_in, ps.C_out) if flip else (ps.C_out, ps.C_in)   # W is (K, C, R, R) either way
    cfg = config or choose_config(ps.C_out, ps.Tp, ps.C_in, runtime.sm_count(), ps.xis)
    cfg = CONFIG_BY_NAME[cfg] if isinstance(cfg, str) else cfg
    # NOTE: all kernels come from the module compiled for cfg: one compile per tile config.
    kernels = _pass_kernels(ps.m, ps.r, cfg, runtime.device_id())
    launches = [(kernels[0], (blocks(ps.C_out * ps.Ip, THREADS),), (THREADS,),
                 (ptr(Wt), np.uint64(U)) + i32_memo((K, C, int(flip))), 0)]
    N = inp.shape[0]
    in_img, out_img = ps.C_in * ps.Hi * ps.Wi, ps.C_out * ps.Ho * ps.Wo   # floats per image
    for n0 in range(0, N, ps.N):
        n = min(ps.N, N - n0)
        launches += _chunk_launches(ps if n == ps.N else ps.for_images(n), cfg, kernels, U, _at(inp, n0 * in_img),
                                    b, _at(out, n0 * out_img), ws)
    return launches


def _chunk_launches(ps: _Pass, cfg, kernels, U: int, inp: int, b, out: int, ws) -> list:
    """Input transform, GEMMs and output transform of ``ps.N`` images at addresses ``inp`` / ``out``, with U
    already in ``ws`` at address ``U``; ``kernels``: ``_pass_kernels``'. As ``_launch_list``'s tuples."""
    V = _at(ws, ps.n_u)
    Mo = _at(ws, ps.n_u + ps.n_v)
    _, k_input, k_output, _, _, k_gemm, _ = kernels
    flags = int(vec_ok_at(U, ps.Ip)) | int(vec_ok_at(V, ps.Tp)) << 1 | int(vec_ok_at(Mo, ps.Tp)) << 2
    gemm_args = (np.uint64(U), np.uint64(V), np.uint64(Mo)) + i32_memo((ps.C_out, ps.Tp, ps.C_in, ps.Ip, flags))
    return [(k_input, (blocks(ps.Tp, THREADS), ps.C_in), (THREADS,),
             (np.uint64(inp), np.uint64(V)) + ps.input_args, 0),
            (k_gemm, (blocks(ps.Tp, cfg.bn), blocks(ps.C_out, cfg.bm), ps.xis), (cfg.threads,), gemm_args,
             cfg.smem_bytes),
            (k_output, (blocks(ps.T, THREADS), ps.C_out), (THREADS,),
             (np.uint64(Mo), ptr(b), np.uint64(out)) + ps.output_args, 0)]


def forward(x, W, b, y, padding, workspace=None, config=None, images=None, tile=2, check=True):
    """y = conv2d(x, W) + b with stride 1: x (N, C, H, W), W (K, C, R, R) with R 3 or 5, b (K,) or None,
    y (N, K, P, Q) or None (allocated); padding an int or (ph, pw), each 0..R-1. Returns y.

    ``tile``: 2 runs F(2x2, 3x3) (a 5x5 kernel: F(2x2, 5x5), 36 GEMMs, 2.8x fewer multiplications than the
    direct sum), 4 runs F(4x4, 3x3) (36 GEMMs over a quarter of the tiles: 4x fewer multiplications than the
    direct sum against 2.25x, a larger rounding error; 3x3 only). ``workspace``: float32, at
    least ``workspace_size(..., phase="forward", images=images, tile=tile)`` elements, or None for the
    runtime's shared per-device buffer. ``config``: a GEMM TileConfig (or its name) instead of the chosen
    one. ``images``: run the batch in chunks of this many images (``chunk_images``; None: all at once).
    ``check=False``: the caller has checked the arrays (the conv entry points; the shapes still are)."""
    import cupy

    if check:
        check_array(x, "winograd.forward: x", ndim=4)
        check_array(W, "winograd.forward: W", ndim=4)
    prob = checked_problem(x.shape, W.shape, 1, padding, "forward")
    N, C, H, Wd, K, P, Q, ph, pw, R = prob
    if b is not None and check:
        check_array(b, "winograd.forward: b", shape=(K,))
    if y is None:
        y = cupy.empty((N, K, P, Q), dtype=np.float32)
    elif check or tuple(y.shape) != (N, K, P, Q):
        check_array(y, "winograd.forward: y", shape=(N, K, P, Q))
    ps = forward_pass(prob, _checked_images(images, "forward"), tile)
    ws = checked_workspace(workspace, ps.size, "winograd.forward",
                           "winograd.workspace_size(..., phase='forward', images=images, tile=tile)")
    _run(ps, x, W, b, y, ws, flip=False, config=config)
    return y


def backward_data(dy, W, dx, padding, workspace=None, config=None, images=None, tile=2, check=True):
    """dx of a stride-1 3x3 or 5x5 convolution: dy (N, K, P, Q), W (K, C, R, R) -> dx (N, C, H, W) with
    H = P + R - 1 - 2ph, W = Q + R - 1 - 2pw (dx None: allocated). Returns dx.

    Runs the forward pass on dy with the flipped filter (W[k,c,R-1-r,R-1-s] as a (C, K) filter) and padding
    (R - 1 - ph, R - 1 - pw). ``workspace``: at least ``workspace_size(..., phase="backward_data", images=images,
    tile=tile)`` elements, or None for the shared per-device buffer. ``images``, ``tile``, ``check``: as in
    ``forward``."""
    import cupy

    if check:
        check_array(dy, "winograd.backward_data: dy", ndim=4)
        check_array(W, "winograd.backward_data: W", ndim=4)
    ph, pw = pair(padding, "padding", "winograd")
    N, Kd, P, Q = dy.shape
    K, C = W.shape[:2]
    if Kd != K:
        raise ValueError(f"winograd.backward_data: dy {tuple(dy.shape)} has {Kd} channels but W {tuple(W.shape)} "
                         f"has {K} output channels")
    R = W.shape[2]
    x_shape = (N, C, P + R - 1 - 2 * ph, Q + R - 1 - 2 * pw)
    if dx is not None:
        if check:
            check_array(dx, "winograd.backward_data: dx", ndim=4)
        x_shape = tuple(dx.shape)
    prob = checked_problem(x_shape, W.shape, 1, (ph, pw), "backward_data")
    if check or tuple(dy.shape) != (N, K, prob[5], prob[6]):
        check_array(dy, "winograd.backward_data: dy", shape=(N, K, prob[5], prob[6]))
    if dx is None:
        dx = cupy.empty(x_shape, dtype=np.float32)
    ps = backward_pass(prob, _checked_images(images, "backward_data"), tile)
    ws = checked_workspace(workspace, ps.size, "winograd.backward_data",
                           "winograd.workspace_size(..., phase='backward_data', images=images, tile=tile)")
    _run(ps, dy, W, None, dx, ws, flip=True, config=config)
    return dx


def _checked_images(images, what: str) -> int | None:
    if images is not None and (not isinstance(images, (int, np.integer)) or images < 1):
        raise ValueError(f"winograd.{what}: images={images!r}; use a positive int (images per chunk) or None")
    return images


def backward_weights(dy, x, dW, padding, workspace=None, config=None, splits=None, images=None, tile=2,
                     check=True):
    """dW of a stride-1 3x3 or 5x5 convolution: dy (N, K, P, Q), x (N, C, H, W) -> dW (K, C, R, R) (None:
    allocated; R = H + 2ph - P + 1, which must be 3 or 5), overwritten (not accumulated). Returns dW.

    ``tile``: 2 runs F(3x3, 2x2) (2x2 dy tiles, 16 GEMMs; a 5x5 kernel: F(5x5, 2x2), 36 GEMMs), 4 runs
    F(3x3, 4x4) (4x4 dy tiles, 36 GEMMs: 4x fewer multiplications than the direct sum against 2.25x, a
    somewhat larger rounding error; 3x3 only).
    ``workspace``: at least ``workspace_size(..., phase="backward_weights", images=images, tile=tile)``
    elements, or None for the shared per-device buffer. ``config`` / ``splits``: the GEMM tile config (or name) and
    split count of each chunk's t reduction instead of ``weights_plan``'s. ``images``: transform and
    reduce the batch in chunks of this many images (``chunk_images``; None: all at once); the chunks'
    partial sums are added in one fixed order, so a given chunking always gives the same bits. ``check``: as
    in ``forward``."""
    import cupy

    if check:
        check_array(dy, "winograd.backward_weights: dy", ndim=4)
        check_array(x, "winograd.backward_weights: x", ndim=4)
    N, C = x.shape[:2]
    K = dy.shape[1]
    if dW is not None:
        if check:
            check_array(dW, "winograd.backward_weights: dW", ndim=4)
        w_shape = (K, C) + tuple(dW.shape[2:])
    else:   # the kernel size that maps x to dy's P x Q
        ph, pw = pair(padding, "padding", "winograd")
        w_shape = (K, C, x.shape[2] + 2 * ph - dy.shape[2] + 1, x.shape[3] + 2 * pw - dy.shape[3] + 1)
        if w_shape[2] != w_shape[3] or w_shape[2] not in KERNEL_SIZES:
            raise ValueError(f"winograd.backward_weights: dy shape {tuple(dy.shape)} and x shape {tuple(x.shape)} at "
                             f"padding {(ph, pw)} imply a {w_shape[2]}x{w_shape[3]} kernel; Winograd needs 3x3 or "
                             f"5x5 (a 3x3 kernel: dy shape {(N, K, x.shape[2] + 2 * ph - 2, x.shape[3] + 2 * pw - 2)})")
    prob = checked_problem(x.shape, w_shape, 1, padding, "backward_weights")
    if check or tuple(dy.shape) != (N, K, prob[5], prob[6]):
        check_array(dy, "winograd.backward_weights: dy", shape=(N, K, prob[5], prob[6]))
    if dW is None:
        dW = cupy.empty(w_shape, dtype=np.float32)
    elif check:
        check_array(dW, "winograd.backward_weights: dW", shape=w_shape)
    sms = runtime.sm_count()
    wp = weights_pass(prob, sms, config, splits, _checked_images(images, "backward_weights"), tile)
    ws = checked_workspace(workspace, wp.size, "winograd.backward_weights",
                           "winograd.workspace_size(..., phase='backward_weights', images=images, tile=tile)")
    _run_weights(wp, dy, x, dW, ws)
    return dW


def _run_weights(wp: WeightsPass, dy, x, dW, ws) -> None:
    """Per chunk: the x and dy transforms into V and Y, then the xis GEMMs into the chunk's slabs of Mw;
    then the output transform over every slab (its launch list memoised as ``_run``'s)."""
    _replay((wp, runtime.device_id(), dy.data.ptr, x.data.ptr, dW.data.ptr, ws.data.ptr), _weights_launch_list, wp,
            dy, x, dW, ws)


def _weights_launch_list(wp: WeightsPass, dy, x, dW, ws) -> list:
    """``_run_weights``' launches as (kernel, grid, block, arguments, shared memory) tuples."""
    cfg, K, C, xis = wp.cfg, wp.K, wp.C, wp.xis
    # NOTE: all kernels come from the module compiled for cfg: one compile per tile config.
    _, k_input, _, k_dy, k_out, _, k_gemm = _pass_kernels(wp.geo.m, wp.geo.r, cfg, runtime.device_id())
    V, Yt, Mw = _at(ws), _at(ws, wp.n_v), _at(ws, wp.n_v + wp.n_y)
    x_img, dy_img = C * wp.geo.Hi * wp.geo.Wi, K * wp.geo.Ho * wp.geo.Wo   # floats per image
    launches = []
    for n0, g, t_chunk, splits, slab in wp.chunks:
        out = Mw + F32 * slab * xis * K * C
        flags = int(vec_ok_at(V, g.Tp) and vec_ok_at(Yt, g.Tp)) | int(vec_ok_at(out, C)) << 1
        gemm_args = (np.uint64(Yt), np.uint64(V), np.uint64(out)) + i32_memo((K, C, g.Tp, t_chunk, flags, xis))
        launches += [(k_input, (blocks(g.Tp, THREADS), C), (THREADS,),
                      (np.uint64(_at(x, n0 * x_img)), np.uint64(V)) + g.input_args, 0),
                     (k_dy, (blocks(g.Tp, THREADS), K), (THREADS,),
                      (np.uint64(_at(dy, n0 * dy_img)), np.uint64(Yt)) + g.output_args, 0),
                     (k_gemm, (blocks(C, cfg.bn), blocks(K, cfg.bm), xis * splits), (cfg.threads,), gemm_args,
                      cfg.smem_bytes)]
    launches.append((k_out, (blocks(K * C, THREADS),), (THREADS,),
                     (np.uint64(Mw), ptr(dW)) + i32_memo((K, C, wp.slabs)), 0))
    return launches
