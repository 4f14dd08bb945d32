"""conv2d as tiled FFT convolutions (``kernels/conv_fft.cu``): the algorithm "fft" of every phase, for
kernels of many taps (DeepSpeech 2's 21x11 and 5x10 layers), any stride and padding.

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
convolution e (*) W read at (R-1+a, S-1+b), which no wrap-around reaches.

The forward is the same machinery with the roles swapped: its stride-1 output z[n,k,h,w] = sum_{c,r,s}
W[k,c,r,s] x[n,c,h-ph+r,w-pw+s] is, with W rotated by 180 degrees, the convolution above with u = x,
padding (R-1-ph, S-1-pw), a reduction over c into k; y keeps every sh-th row and sw-th column of z, plus the
bias (the transforms compute the discarded points too: a stride of 2 doubles the work along its axis).

The weight gradient tiles the same stride-1 grid: dW[k,c,r,s] = sum over the tiles t of every image of
sum_{i,j} d_t[k,i,j] e_t[c,i+r,j+s], with d_t dy's tile (upsampled by the stride, th x tw, zero-padded to
LH x LW) and e_t x's window from (h0-ph, w0-pw); per bin that is sum_t conj(D[t,k,f]) Ex[t,c,f], one GEMM
reducing over the tiles (the whole batch at once), and dW the inverse read at lags (r, s) < (R, S).

With ci the reduction channels (backward-data K, forward C) and co the outputs (C, K), four kernels run in
order (the weight gradient: two input passes, x's windows as Ex (T, C, B) and dy's tiles conjugated as
D (K, T, B), the bins as D (K x T) times Ex (T x C), the output pass on dW's spectra):

    1. conv_fft_filter   Wh[ci, co, f] = FFT2(W[k, c] padded to LH x LW)[f]   Wh (ci, co, B)   complex
    2. conv_fft_input    E[t, ci, f]   = FFT2(e of tile t of image n)[f]      E  (T, ci, B)    T = n * tiles
    3. conv_fft_bins     X[t, co, f]   = sum_ci E[t, ci, f] Wh[ci, co, f]     X  (T, co, B)
    4. conv_fft_output   tile t        = IFFT2(X[t, co])[R-1+a, S-1+b] / (LH*LW)   a < th, b < tw

B = LH * (LW/2 + 1) bins (the real transform's half spectrum, kh-major); a tile is one block's transform
in shared memory (radix-2, twiddle tables made per block). Steps 2-4 run per chunk of images where E and X
of the whole batch would exceed ``MAX_WORKSPACE``; Wh is made once per call.

Cost, for DeepSpeech 2's conv2 backward-data at N64 (C32, 41x350, K96, 21x11, stride (2, 1), pad
(10, 5)): the direct sum is 667 GFLOP; with 64 x 128 transforms (th 44, tw 118: 1 x 3 tiles) the bin
GEMMs do 8 * T * K * C * B = 19.6 GFLOP, the transforms about 5 GFLOP, and E, Wh and X take 0.9 GB of
workspace. Its forward takes the same plan. The size is chosen (``plan``) to make T * B, the GEMMs' work,
least.

Outputs are written (``=``). With the output and ``workspace`` given nothing is allocated and nothing
synchronises the host (CUDA-graph capturable). Results are deterministic (no atomics).

Example::

    dims = conv_dims(x.shape, W.shape, (2, 1), (10, 5))
    if fits(dims, "forward"):
        forward(x, W, b, y, dims, workspace)          # y (N, K, P, Q)
    if fits(dims):
        backward_data(dy, W, dx, dims, workspace)     # dx (N, C, H, W)
    if fits(dims, "backward_weights"):
        backward_weights(dy, x, dW, dims, workspace)  # dW (K, C, R, S)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import runtime
from ..runtime import checked_workspace, i32, i32_memo

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


PHASES = ("forward", "backward_data", "backward_weights")


class Plan(NamedTuple):
    lh: int          # transform size (rows, columns)
    lw: int
    th: int          # output rows / columns per tile (of dx, or of the forward's stride-1 output z)
    tw: int
    tiles_h: int
    tiles_w: int
    bins: int        # LH * (LW/2 + 1)
    images: int      # images per chunk
    n_wh: int        # workspace floats of Wh, E, X (E and X for one chunk; the weight gradient: Ex, D, dWh)
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


def fits(dims, phase: str = "backward_data") -> bool:
    """Whether "fft" can run this layer's ``phase`` (``PHASES``): R * S >= MIN_TAPS, C
    and K >= MIN_CHANNELS, a transform size of ``SIZES`` that holds the kernel, and a plan within
    MAX_WORKSPACE and int32 indices."""
    return plan(dims, phase) is not None


def problem(dims, phase: str) -> tuple:
    """(N, reduction channels, output channels, tiled rows, tiled columns, R, S) of ``phase``: backward-data
    reduces over K into C channels of dx (H x W); the forward over C into K channels of its stride-1
    output z ((P-1)*sh + 1 x (Q-1)*sw + 1), whose every sh-th row and sw-th column is y; the weight gradient
    tiles the same z grid (dy upsampled by the stride) and reduces over its tiles of every image."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    if phase == "backward_data":
        return N, K, C, H, Wd, R, S
    if phase in ("forward", "backward_weights"):
        return N, C, K, (P - 1) * sh + 1, (Q - 1) * sw + 1, R, S
    raise ValueError(f"fft: phase={phase!r}; use one of {PHASES}")


def plan(dims, phase: str = "backward_data", max_elements: int | None = None) -> Plan | None:
    """The launch plan of this layer's ``phase`` (None: "fft" does not run it, ``fits``): the transform size
    with the least GEMM work (tiles x bins), ties to the smaller transform, and the most images per chunk
    (equal chunks) whose workspace fits ``max_elements`` float32 elements (None: MAX_WORKSPACE); memoised."""
    dims = tuple(int(v) for v in dims)
    limit = int(MAX_WORKSPACE if max_elements is None else max_elements)
    N, C, H, Wd, K, R, S, P, Q, *_ = dims
    if max(N * C * H * Wd, N * K * P * Q) > INT32_MAX:
        return None
    return _plan(problem(dims, phase), limit, phase == "backward_weights")


@functools.lru_cache(maxsize=4096)
def _plan(prob, max_elements, weights):
    N, c_in, c_out, Ht, Wt, R, S = prob
    if R * S < MIN_TAPS or min(c_in, c_out) < MIN_CHANNELS:
        return None
    best = None
    for lh in SIZES:
        for lw in SIZES:
            if lh * lw > MAX_POINTS or lh < R + 1 or lw < S + 1:
                continue
            th, tw = lh - R + 1, lw - S + 1
            tiles = -(-Ht // th) * -(-Wt // tw)
            bins = lh * (lw // 2 + 1)
            key = (tiles * bins, lh * lw)
            if best is None or key < best[0]:
                best = (key, lh, lw, th, tw)
    if best is None:
        return None
    _, lh, lw, th, tw = best
    tiles_h, tiles_w = -(-Ht // th), -(-Wt // tw)
    bins = lh * (lw // 2 + 1)
    n_wh = 2 * c_in * c_out * bins
    if weights:
        # the whole batch at once (its tiles are the reduction): Ex (T, C, B) and the conjugate dy spectra
        # (K, T, B) in the bins' operand slots, dW's spectra (K, C, B) in the output slot
        rows = N * tiles_h * tiles_w
        p = Plan(lh, lw, th, tw, tiles_h, tiles_w, bins, N, 2 * rows * c_in * bins, 2 * c_out * rows * bins, n_wh)
        return p if p.size <= max_elements and max(p.n_wh, p.n_e) <= INT32_MAX else None

    def sized(images):
        rows = images * tiles_h * tiles_w
        return Plan(lh, lw, th, tw, tiles_h, tiles_w, bins, images, n_wh, 2 * rows * c_in * bins,
                    2 * rows * c_out * bins)

    whole = sized(N)
    if whole.size <= max_elements:
        chosen = whole
    else:
        per_image = (sized(1).n_e + sized(1).n_x)
        fit = (max_elements - n_wh) // per_image
        if fit < 1:
            return None
        chosen = sized(-(-N // -(-N // fit)))     # equal chunks: 64 images within a bound of 55 run as 32 + 32
    if max(chosen.n_e, chosen.n_x, chosen.n_wh) > INT32_MAX:
        return None
    return chosen


def workspace_size(dims, phase: str = "backward_data") -> int:
    """float32 elements of workspace ``phase`` needs (0 where the layer does not fit)."""
    p = plan(dims, phase)
    return p.size if p is not None else 0


def modules() -> list:
    """(family, defines) of every module of this family: one per transform size a plan may take."""
    return [(FAMILY, {"FFT_LH": lh, "FFT_LW": lw}) for lh in SIZES for lw in SIZES if lh * lw <= MAX_POINTS]


def modules_of(dims) -> list:
    """(family, defines) of the kernel modules this layer's phases load (none where they do not fit)."""
    mods = []
    for phase in PHASES:
        p = plan(dims, phase)
        if p is not None and (FAMILY, p.defines) not in mods:
            mods.append((FAMILY, p.defines))
    return mods


@functools.lru_cache(maxsize=None)
def _kernels(lh, lw, device_id) -> tuple:
    """(filter, input, bins, output) kernels of the lh x lw transform size's module: one lookup per call,
    not one per launch."""
    return (_kernel("conv_fft_filter", lh, lw, device_id), _kernel("conv_fft_input", lh, lw, device_id),
            _kernel("conv_fft_bins", lh, lw, device_id), _kernel("conv_fft_output", lh, lw, device_id))


@functools.lru_cache(maxsize=None)
def _kernel(name, lh, lw, device_id):
    smem = smem_bytes(lh, lw) if name != "conv_fft_bins" else bins_smem_bytes()
    return runtime.kernel(FAMILY, name, {"FFT_LH": lh, "FFT_LW": lw}, smem)


BINS_K = 8   # reduction channels per shared-memory stage of conv_fft_bins


def bins_smem_bytes() -> int:
    """Dynamic shared memory of conv_fft_bins: one chunk (BINS_K) of E rows and Wh columns, complex."""
    return 8 * BINS_K * BIN_BLOCK * (ROWS_TILE + COLS_TILE)


@functools.lru_cache(maxsize=4096)
def _args(dims, phase, p: Plan):
    """The scalar arguments of the kernels of ``phase`` (int32), built once per layer and phase."""
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    _, c_in, c_out, Ht, Wt, _, _ = problem(dims, phase)
    geo = i32(Ht, Wt, p.th, p.tw, p.tiles_w, p.tiles)
    whole = i32(p.lh, p.lw, 0)     # every row and column of the window, E[t, ci] (not transposed)
    if phase == "backward_weights":
        return {"filter": None, "x": i32(C, H, Wd, 1, 1, -ph, -pw) + geo + whole,
                "dy": i32(K, P, Q, sh, sw, 0, 0) + geo + i32(p.th, p.tw, 1),
                "output": i32(C, 1, 1, R, S, R, S, 1, 1, 1, 1, R, S)}
    if phase == "backward_data":   # windows of dy upsampled by the stride; dx written whole
        src = i32(K, P, Q, sh, sw, ph - (R - 1), pw - (S - 1))
        out = i32(1, 1, H, Wd)
    else:                          # windows of x; every sh-th row and sw-th column of z is y
        src = i32(C, H, Wd, 1, 1, -ph, -pw)
        out = i32(sh, sw, P, Q)
    return {"filter": i32(K, C, R, S, int(phase == "forward")), "input": src + geo + whole,
            "output": i32(c_out, R, S) + geo + out}


def _addresses(p: Plan, workspace, phase):
    ws = checked_workspace(workspace, p.size, f"conv {phase} (fft)", "conv2d_workspace_size")
    base = ws.data.ptr
    return np.uint64(base), np.uint64(base + 4 * p.n_wh), np.uint64(base + 4 * (p.n_wh + p.n_e))


def _run(phase, dims, p: Plan, src, W, b, out, workspace) -> None:
    """The four kernels of ``phase`` (forward or backward-data): the filter transform once, then per chunk of
    images the input windows' transforms, the bin GEMMs and the inverse transforms into ``out``."""
    N = dims[0]
    _, c_in, c_out, *_ = problem(dims, phase)
    wh, e, x = _addresses(p, workspace, phase)
    args = _args(dims, phase, p)
    K, C = dims[4], dims[1]
    k_filter, k_in, k_bins, k_out = _kernels(p.lh, p.lw, runtime.device_id())
    k_filter((K * C,), (THREADS,), (W, wh) + args["filter"], shared_mem=p.smem_bytes)
    src_image, out_image = src.size // N, out.size // N   # floats per image
    bias = np.uint64(0) if b is None else b
    for n0 in range(0, N, p.images):
        rows = min(p.images, N - n0) * p.tiles
        src_at = np.uint64(src.data.ptr + 4 * n0 * src_image)
        out_at = np.uint64(out.data.ptr + 4 * n0 * out_image)
        k_in((rows, c_in), (THREADS,), (src_at, e) + args["input"], shared_mem=p.smem_bytes)
        grid = (-(-rows // ROWS_TILE) * -(-c_out // COLS_TILE), -(-p.bins // BIN_BLOCK))
        k_bins(grid, (THREADS,), (e, wh, x) + i32_memo((rows, c_in, c_out)), shared_mem=bins_smem_bytes())
        k_out((rows, c_out), (THREADS,), (x, out_at, bias) + args["output"], shared_mem=p.smem_bytes)


def _checked_plan(dims, phase) -> Plan:
    p = plan(dims, phase)
    if p is None:
        N, C, H, Wd, K, R, S, *_ = dims
        raise ValueError(f"conv2d {phase}: algo 'fft' runs kernels of >= {MIN_TAPS} taps with >= {MIN_CHANNELS} "
                         f"channels in and out within its workspace and transform limits; this layer is {R}x{S}, "
                         f"{C} -> {K} channels: use algo='auto' or 'implicit_gemm'")
    return p


def forward(x, W, b, y, dims, workspace=None):
    """y (N, K, P, Q) = conv2d(x, W) + b (b (K,) or None) for a layer that ``fits(dims, "forward")``; y
    written. The transforms compute the stride-1 output z and keep every sh-th row and sw-th column."""
    dims = tuple(int(v) for v in dims)
    _run("forward", dims, _checked_plan(dims, "forward"), x, W, b, y, workspace)
    return y


def backward_weights(dy, x, dW, dims, workspace=None):
    """dW (K, C, R, S) from dy (N, K, P, Q) and x (N, C, H, W) for a layer that ``fits(dims,
    "backward_weights")``; dW written. dW[k, c] is the sum over every image's tiles t of the correlation of
    x's window with dy's tile, read at lags (r, s) < (R, S): per bin, sum_t conj(D[t, k]) Ex[t, c], one GEMM
    reducing over the tiles."""
    dims = tuple(int(v) for v in dims)
    p = _checked_plan(dims, "backward_weights")
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    ex, d, dwh = _addresses(p, workspace, "backward_weights")
    args = _args(dims, "backward_weights", p)
    rows = N * p.tiles
    _, k_in, k_bins, k_out = _kernels(p.lh, p.lw, runtime.device_id())
    k_in((rows, C), (THREADS,), (x, ex) + args["x"], shared_mem=p.smem_bytes)
    k_in((rows, K), (THREADS,), (dy, d) + args["dy"], shared_mem=p.smem_bytes)
    grid = (-(-K // ROWS_TILE) * -(-C // COLS_TILE), -(-p.bins // BIN_BLOCK))
    k_bins(grid, (THREADS,), (d, ex, dwh) + i32_memo((K, rows, C)), shared_mem=bins_smem_bytes())
    k_out((K, C), (THREADS,), (dwh, dW, np.uint64(0)) + args["output"], shared_mem=p.smem_bytes)
    return dW


def backward_data(dy, W, dx, dims, workspace=None):
    """dx (N, C, H, W) from dy (N, K, P, Q) and W (K, C, R, S) for a layer that ``fits``; dx written."""
    dims = tuple(int(v) for v in dims)
    _run("backward_data", dims, _checked_plan(dims, "backward_data"), dy, W, None, dx, workspace)
    return dx


runtime.register_modules(modules)
