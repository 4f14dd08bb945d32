"""conv2d backward-data as a tiled FFT convolution (``kernels/conv_fft.cu``): the algorithm "fft" of
backward-data, for kernels of many taps (DeepSpeech 2's 21x11 and 5x10 layers), any stride and padding.

Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel; stride (sh, sw), padding
(ph, pw); ``dims`` a ``ConvDims`` (geometry.py). NCHW, cross-correlation (PyTorch).

    backward-data:  dx[n,c,h,w] = sum_{k,r,s} W[k,c,r,s] u[n,k,h+ph-r,w+pw-s]
    with u the stride-upsampled dy: u[n,k,i,j] = dy[n,k,i/sh,j/sw] where sh | i and sw | j (and inside
    dy), else 0.

So dx is, per (n, c), a sum over k of 2-D linear convolutions of u with W[k, c], which the transform
turns into products: for every frequency bin f, X[n,c,f] = sum_k E[n,k,f] Wh[k,c,f], one small complex
GEMM per bin. The transforms are tiled (overlap-save): dx is cut into th x tw tiles, th = LH - R + 1,
tw = LW - S + 1, with LH x LW (powers of two, ``SIZES``) the transform size; the window of u a tile needs,
e[i,j] = u[h0+ph-(R-1)+i, w0+pw-(S-1)+j] (LH x LW), is transformed whole, and the tile is the circular
convolution e (*) W read at (R-1+a, S-1+b), which no wrap-around reaches. Four kernels run in order:

    1. conv_fft_filter   Wh[k, c, f] = FFT2(W[k, c] padded to LH x LW)[f]       Wh (K, C, B)   complex
    2. conv_fft_dy       E[t, k, f]  = FFT2(e of tile t of image n)[f]          E  (T, K, B)   T = n * tiles
    3. conv_fft_bins     X[t, c, f]  = sum_k E[t, k, f] Wh[k, c, f]             X  (T, C, B)
    4. conv_fft_dx       dx tile t   = IFFT2(X[t, c])[R-1+a, S-1+b] / (LH*LW)   a < th, b < tw

B = LH * (LW/2 + 1) bins (the real transform's half spectrum, kh-major); a tile is one block's transform
in shared memory (radix-2, twiddle tables made per block). Steps 2-4 run per chunk of images where E and X of
the whole batch would exceed ``MAX_WORKSPACE``; Wh is made once per call.

Cost, for DeepSpeech 2's conv2 backward-data at N64 (C32, 41x350, K96, 21x11, stride (2, 1), pad
(10, 5)): the direct sum is 667 GFLOP; with 64 x 128 transforms (th 44, tw 118: 1 x 3 tiles) the bin
GEMMs do 8 * T * K * C * B = 19.6 GFLOP, the transforms about 5 GFLOP, and E, Wh and X take 0.9 GB of
workspace. The size is chosen (``plan``) to make T * B, the GEMMs' work, least.

Outputs are written (``=``). With ``dx`` and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable). Results are deterministic (no atomics).

Example::

    dims = conv_dims(x.shape, W.shape, (2, 1), (10, 5))
    if fits(dims):
        backward_data(dy, W, dx, dims, workspace)     # dx (N, C, H, W)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import runtime
from ..runtime import checked_workspace, i32

FAMILY = "conv_fft"
SIZES = (32, 64, 128)         # transform sizes per axis (powers of two: the kernels' radix-2 transforms)
MAX_POINTS = 64 * 128         # LH * LW at most: a tile and its spectrum in one block's shared memory
MIN_TAPS = 32                 # R * S below this: the transforms cost more than the products they save
MIN_CHANNELS = 8              # C and K: fewer make each bin's GEMM too small to pay for the transforms
MAX_WORKSPACE = 1 << 29       # float32 elements (2 GB): E and X per chunk of images, Wh once
THREADS = 256                 # threads per block of every kernel
BIN_BLOCK = 32                # bins per block of conv_fft_bins (one per lane)
ROWS_TILE, COLS_TILE = 16, 16  # (tile, k) rows x c columns per block of conv_fft_bins
INT32_MAX = 2**31 - 1


class Plan(NamedTuple):
    lh: int          # transform size (rows, columns)
    lw: int
    th: int          # dx rows / columns per tile
    tw: int
    tiles_h: int
    tiles_w: int
    bins: int        # LH * (LW/2 + 1)
    images: int      # images per chunk
    n_wh: int        # workspace floats of Wh, E, X (E and X for one chunk)
    n_e: int
    n_x: int

    @property
    def tiles(self) -> int:
        return self.tiles_h * self.tiles_w

    @property
    def size(self) -> int:
        return self.n_wh + self.n_e + self.n_x

    @property
    def defines(self) -> dict:
        return {"FFT_LH": self.lh, "FFT_LW": self.lw}

    @property
    def smem_bytes(self) -> int:
        return smem_bytes(self.lh, self.lw)


def smem_bytes(lh: int, lw: int) -> int:
    """Dynamic shared memory of the transform kernels of size lh x lw: the row pairs' complex transforms
    (lh/2 x lw), the half spectrum (lh x (lw/2 + 1)) and the twiddle tables (lw/2 + lh/2), 8 bytes a value."""
    return 8 * (lh // 2 * lw + lh * (lw // 2 + 1) + lw // 2 + lh // 2)


def fits(dims) -> bool:
    """Whether "fft" can run this layer's backward-data: R * S >= MIN_TAPS, C and K >= MIN_CHANNELS, a
    transform size of ``SIZES`` that holds the kernel, and a plan within MAX_WORKSPACE and int32 indices."""
    return plan(dims) is not None


def plan(dims, max_elements: int | None = None) -> Plan | None:
    """The launch plan of this layer's backward-data (None: "fft" does not run it, ``fits``): the transform
    size with the least GEMM work (tiles x bins), ties to the smaller transform, and the most images per
    chunk (equal chunks) whose workspace fits ``max_elements`` float32 elements (None: MAX_WORKSPACE);
    memoised."""
    return _plan(tuple(int(v) for v in dims), int(MAX_WORKSPACE if max_elements is None else max_elements))


@functools.lru_cache(maxsize=4096)
def _plan(dims, max_elements):
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if R * S < MIN_TAPS or min(C, K) < MIN_CHANNELS:
        return None
    best = None
    for lh in SIZES:
        for lw in SIZES:
            if lh * lw > MAX_POINTS or lh < R + 1 or lw < S + 1:
                continue
            th, tw = lh - R + 1, lw - S + 1
            tiles = -(-H // th) * -(-Wd // tw)
            bins = lh * (lw // 2 + 1)
            key = (tiles * bins, lh * lw)
            if best is None or key < best[0]:
                best = (key, lh, lw, th, tw)
    if best is None:
        return None
    _, lh, lw, th, tw = best
    tiles_h, tiles_w = -(-H // th), -(-Wd // tw)
    bins = lh * (lw // 2 + 1)
    n_wh = 2 * K * C * bins

    def sized(images):
        rows = images * tiles_h * tiles_w
        return Plan(lh, lw, th, tw, tiles_h, tiles_w, bins, images, n_wh, 2 * rows * K * bins, 2 * rows * C * bins)

    whole = sized(N)
    if whole.size <= max_elements:
        chosen = whole
    else:
        per_image = (sized(1).n_e + sized(1).n_x)
        fit = (max_elements - n_wh) // per_image
        if fit < 1:
            return None
        chosen = sized(-(-N // -(-N // fit)))     # equal chunks: 64 images within a bound of 55 run as 32 + 32
    if max(chosen.n_e, chosen.n_x, chosen.n_wh) > INT32_MAX or max(N * C * H * Wd, N * K * P * Q) > INT32_MAX:
        return None
    return chosen


def workspace_size(dims) -> int:
    """float32 elements of workspace ``backward_data`` needs (0 where the layer does not fit)."""
    p = plan(dims)
    return p.size if p is not None else 0


def modules() -> list:
    """(family, defines) of every module of this family: one per transform size a plan may take."""
    return [(FAMILY, {"FFT_LH": lh, "FFT_LW": lw}) for lh in SIZES for lw in SIZES if lh * lw <= MAX_POINTS]


def modules_of(dims) -> list:
    """(family, defines) of the kernel module this layer's backward-data loads (none where it does not
    fit)."""
    p = plan(dims)
    return [] if p is None else [(FAMILY, p.defines)]


def kernel(name: str, p: Plan):
    """The compiled kernel ``name`` of the module for ``p``'s transform size; memoised per device."""
    import cupy

    return _kernel(name, p.lh, p.lw, cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _kernel(name, lh, lw, device_id):
    smem = smem_bytes(lh, lw) if name != "conv_fft_bins" else bins_smem_bytes()
    return runtime.kernel(FAMILY, name, {"FFT_LH": lh, "FFT_LW": lw}, smem)


def bins_smem_bytes() -> int:
    """Dynamic shared memory of conv_fft_bins: one k chunk (BINS_K) of E rows and Wh columns, complex."""
    return 8 * BINS_K * BIN_BLOCK * (ROWS_TILE + COLS_TILE)


BINS_K = 8   # k values per shared-memory stage of conv_fft_bins


@functools.lru_cache(maxsize=4096)
def _args(dims, p: Plan):
    """The scalar arguments of the four kernels (int32), built once per layer."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    geo = i32(H, Wd, p.th, p.tw, p.tiles_w, p.tiles)
    return {
        "filter": i32(K, C, R, S),
        "dy": i32(K, P, Q, sh, sw, ph - (R - 1), pw - (S - 1)) + geo,
        "dx": i32(C, R, S) + geo,
    }


def backward_data(dy, W, dx, dims, workspace=None):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S) for a layer that ``fits``; dx written."""
    dims = tuple(int(v) for v in dims)
    p = plan(dims)
    if p is None:
        N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
        raise ValueError(f"conv2d backward_data: algo 'fft' runs kernels of >= {MIN_TAPS} taps with >= "
                         f"{MIN_CHANNELS} channels in and out within its workspace and transform limits; this "
                         f"layer is {R}x{S}, {C} -> {K} channels: use algo='auto' or 'implicit_gemm'")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    ws = checked_workspace(workspace, p.size, "conv backward_data (fft)", "conv2d_workspace_size")
    base = ws.data.ptr
    wh, e, x = np.uint64(base), np.uint64(base + 4 * p.n_wh), np.uint64(base + 4 * (p.n_wh + p.n_e))
    args = _args(dims, p)
    kernel("conv_fft_filter", p)((K * C,), (THREADS,), (W, wh) + args["filter"], shared_mem=p.smem_bytes)
    k_dy, k_bins, k_dx = kernel("conv_fft_dy", p), kernel("conv_fft_bins", p), kernel("conv_fft_dx", p)
    for n0 in range(0, N, p.images):
        n = min(p.images, N - n0)
        rows = n * p.tiles
        dy_at = np.uint64(dy.data.ptr + 4 * n0 * K * P * Q)
        dx_at = np.uint64(dx.data.ptr + 4 * n0 * C * H * Wd)
        k_dy((rows, K), (THREADS,), (dy_at, e) + args["dy"], shared_mem=p.smem_bytes)
        grid = (-(-rows // ROWS_TILE) * -(-C // COLS_TILE), -(-p.bins // BIN_BLOCK))
        k_bins(grid, (THREADS,), (e, wh, x) + i32(rows, K, C), shared_mem=bins_smem_bytes())
        k_dx((rows, C), (THREADS,), (x, dx_at) + args["dx"], shared_mem=p.smem_bytes)
    return dx


runtime.register_modules(modules)
