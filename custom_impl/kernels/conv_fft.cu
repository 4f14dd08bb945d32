// conv2d backward-data and forward as tiled FFT convolutions (conv/fft.py holds the algorithm, its plans and
// its workspace layout; this file its four kernels).
//
// Legend: N batch, C in-channels, K out-channels, H,W dx, P,Q dy, R,S kernel, NCHW float32. FFT_LH x FFT_LW
// (LH x LW) is the transform size, powers of two, fixed per compiled module; BINS = LH * (LW/2 + 1) values
// of a real tile's half spectrum, kh-major (np.fft.rfft2's layout). A tile's transform runs in one block's
// shared memory:
//   forward: the LH rows as LH/2 complex row pairs z = row(2i) + i row(2i+1), LW-point transforms of the
//            pairs, each pair split into its two rows' half spectra (z[k] +- conj(z[LW-k])), then LH-point
//            transforms down the LW/2 + 1 columns;
//   inverse: the same steps backwards (the half spectra rebuilt into full rows by Hermitian symmetry).
// Radix-2 decimation in time: each transform's input is stored in bit-reversed order, its output comes in
// natural order; twiddles from tables in shared memory, made per block by sincospif of exact dyadic
// arguments.
//
// Backward-data (reduction ci = k, outputs co = c, output dx) and the forward (ci = c, co = k, output the
// stride-1 z of which y keeps every sh-th row and sw-th column; the filter rotated by 180 degrees turns its
// correlation into the same convolution):
//   conv_fft_filter  Wh[ci, co, :] = FFT2(W[k, c] (rotated for the forward) at the origin of an LH x LW
//                    zero tile)                                                           block (k*C + c)
//   conv_fft_input   E[t, ci, :] = FFT2(e_t), e_t[i, j] = u[h0 + oh + i, w0 + ow + j]     block (t, ci)
//                    u the source upsampled by (sh, sw) (dy with the stride: dy[y/sh, x/sw] where sh | y
//                    and sw | x, else 0; x as it is); tile t = image * tiles + tile,
//                    (h0, w0) = (tile / tiles_w * th, tile % tiles_w * tw)
//   conv_fft_bins    X[t, co, f] = sum_ci E[t, ci, f] Wh[ci, co, f]                       (t, co, f) tiles
//   conv_fft_output  out tile t = IFFT2(X[t, co])[R-1+a, S-1+b] / (LH*LW) (+ bias), a < th, b < tw, inside
//                    the output, subsampled by the forward's stride                       block (t, co)
// Every sum runs in a fixed order (no atomics): results are deterministic.

#ifndef FFT_LH
#define FFT_LH 64
#endif
#ifndef FFT_LW
#define FFT_LW 128
#endif

constexpr int LH = FFT_LH;
constexpr int LW = FFT_LW;
constexpr int HALF_W = LW / 2 + 1;
constexpr int BINS = LH * HALF_W;
constexpr int THREADS = 256;

constexpr int log2_of(int v) { return v <= 1 ? 0 : 1 + log2_of(v / 2); }
constexpr int LOG_LH = log2_of(LH);
constexpr int LOG_LW = log2_of(LW);
static_assert((1 << LOG_LH) == LH && (1 << LOG_LW) == LW, "transform sizes must be powers of two");

// conv_fft_bins: bins per block (one per lane), k values per shared-memory stage, rows x columns per block
// (8 warps as 4 x 2, each thread 4 rows x 8 columns of one bin); fft.py's BIN_BLOCK, BINS_K, ROWS_TILE,
// COLS_TILE
constexpr int BIN_BLOCK = 32;
constexpr int BINS_K = 8;
constexpr int ROWS_TILE = 16;
constexpr int COLS_TILE = 16;
constexpr int THREAD_ROWS = 4;
constexpr int THREAD_COLS = 8;
static_assert((ROWS_TILE / THREAD_ROWS) * (COLS_TILE / THREAD_COLS) * 32 == THREADS, "one bin per lane");

__device__ __forceinline__ int bit_reversed(int v, int bits) { return (int)(__brev((unsigned)v) >> (32 - bits)); }

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// `count` transforms of length L in place, the n-th one's element j at buf[n * row_step + j * elem_step],
// stored in bit-reversed order; sign -1: forward (exp(-i...)), +1: inverse (unnormalised). tw[m] =
// exp(-2 pi i m / L) for m < L/2 (``twiddles``): a stage of half-length `half` takes tw[pos * L / (2 half)].
template <int L>
__device__ void transform(float2* buf, int count, int row_step, int elem_step, float sign, const float2* tw) {
    for (int half = 1; half < L; half *= 2) {
        const int step = L / (2 * half);
        for (int v = threadIdx.x; v < count * (L / 2); v += THREADS) {
            const int n = v / (L / 2), j = v % (L / 2);
            const int pos = j % half;
            const int i0 = (j / half) * 2 * half + pos;
            float2 w = tw[pos * step];
            if (sign > 0.f) w.y = -w.y;
            float2* p0 = buf + n * row_step + i0 * elem_step;
            float2* p1 = p0 + half * elem_step;
            const float2 a = *p0, t = cmul(w, *p1);
            *p0 = make_float2(a.x + t.x, a.y + t.y);
            *p1 = make_float2(a.x - t.x, a.y - t.y);
        }
        __syncthreads();
    }
}

// The twiddle tables of both transform lengths, tw_w[m] = exp(-2 pi i m / LW) (m < LW/2) and tw_h (LH),
// from sincospif of the exact dyadic m / (L/2); the caller synchronises before the first transform.
__device__ void twiddles(float2* tw_w, float2* tw_h) {
    for (int m = threadIdx.x; m < LW / 2 + LH / 2; m += THREADS) {
        const bool w_side = m < LW / 2;
        const int j = w_side ? m : m - LW / 2;
        float s, c;
        sincospif(-(float)j / (float)((w_side ? LW : LH) / 2), &s, &c);
        (w_side ? tw_w : tw_h)[j] = make_float2(c, s);
    }
}

// Shared memory of a tile transform (fft.py's smem_bytes): Z, the LH/2 row pairs of LW values, then S, the
// LH x HALF_W half spectrum, then the twiddle tables (LW/2 and LH/2 values)
__device__ __forceinline__ float2* pairs_buffer() {
    extern __shared__ float2 smem[];
    return smem;
}
__device__ __forceinline__ float2* spectrum_buffer() {
    extern __shared__ float2 smem[];
    return smem + (LH / 2) * LW;
}
__device__ __forceinline__ float2* twiddle_buffer() {
    extern __shared__ float2 smem[];
    return smem + (LH / 2) * LW + LH * HALF_W;
}

// The forward transform of the real LH x LW tile value(i, j) into out[0 .. BINS) (its complex conjugate
// where `conj`).
template <class Value>
__device__ void forward_tile(const Value& value, float2* __restrict__ out, bool conj = false) {
    float2* Z = pairs_buffer();
    float2* Sp = spectrum_buffer();
    float2* tw_w = twiddle_buffer();
    float2* tw_h = tw_w + LW / 2;
    twiddles(tw_w, tw_h);
    for (int v = threadIdx.x; v < (LH / 2) * LW; v += THREADS) {
        const int i2 = v / LW, j = v % LW;
        Z[i2 * LW + bit_reversed(j, LOG_LW)] = make_float2(value(2 * i2, j), value(2 * i2 + 1, j));
    }
    __syncthreads();
    transform<LW>(Z, LH / 2, LW, 1, -1.f, tw_w);
    // rows 2 i2 and 2 i2 + 1 from their pair: A = (z[k] + conj(z[-k])) / 2, B = (z[k] - conj(z[-k])) / 2i,
    // written at bit-reversed rows for the column transforms
    for (int v = threadIdx.x; v < (LH / 2) * HALF_W; v += THREADS) {
        const int i2 = v / HALF_W, k = v % HALF_W;
        const float2 z = Z[i2 * LW + k], zc = Z[i2 * LW + ((LW - k) & (LW - 1))];
        Sp[bit_reversed(2 * i2, LOG_LH) * HALF_W + k] = make_float2(0.5f * (z.x + zc.x), 0.5f * (z.y - zc.y));
        Sp[bit_reversed(2 * i2 + 1, LOG_LH) * HALF_W + k] = make_float2(0.5f * (z.y + zc.y), -0.5f * (z.x - zc.x));
    }
    __syncthreads();
    transform<LH>(Sp, HALF_W, 1, HALF_W, -1.f, tw_h);
    for (int f = threadIdx.x; f < BINS; f += THREADS) out[f] = conj ? make_float2(Sp[f].x, -Sp[f].y) : Sp[f];
}

struct FilterValue {
    const float* w;   // W[k, c], R x S
    int R, S, flip;   // flip: W[k, c] rotated by 180 degrees (the forward's correlation as a convolution)
    __device__ float operator()(int i, int j) const {
        if (i >= R || j >= S) return 0.f;
        return flip ? w[(R - 1 - i) * S + (S - 1 - j)] : w[i * S + j];
    }
};

// blockIdx.x: k * C + c. Backward-data (flip 0) writes Wh[k, c, :]: reduction over k, outputs c; the
// forward (flip 1) Wh[c, k, :] of the rotated filter: reduction over c, outputs k.
extern "C" __global__ void __launch_bounds__(THREADS)
conv_fft_filter(const float* __restrict__ W, float2* __restrict__ Wh, int K, int C, int R, int S, int flip) {
    const int kc = blockIdx.x, k = kc / C, c = kc % C;
    const long long slot = flip ? (long long)c * K + k : kc;
    forward_tile(FilterValue{W + (long long)kc * R * S, R, S, flip}, Wh + slot * BINS);
}

struct WindowValue {
    const float* src;  // one channel of one image, P x Q
    int P, Q, sh, sw, y0, x0;   // the window's origin in u: (h0 + oh, w0 + ow)
    int vh, vw;                 // the window's rows and columns past these are zeros
    __device__ float operator()(int i, int j) const {
        const int y = y0 + i, x = x0 + j;
        if (i >= vh || j >= vw || y < 0 || x < 0 || y % sh != 0 || x % sw != 0) return 0.f;
        const int p = y / sh, q = x / sw;
        return (p < P && q < Q) ? src[p * Q + q] : 0.f;
    }
};

// E[t, ci, :] = FFT2 of the window e[i, j] = u[h0 + oh + i, w0 + ow + j] (i < vh, j < vw; zero past them),
// u the source channel ci (P x Q) upsampled by (sh, sw): dy with the stride for backward-data and the weight
// gradient's dy tiles, x as it is (sh = sw = 1) for the forward and the weight gradient's x windows.
// blockIdx.x: t = image * tiles + tile (images of this chunk), blockIdx.y: ci; (h0, w0) the origin of tile t
// in the Ht x Wt grid it tiles (dx, or the stride-1 z). `transposed`: the conjugate spectrum at E[ci, t, :]
// (the weight gradient's dy tiles, the reduction over t).
extern "C" __global__ void __launch_bounds__(THREADS)
conv_fft_input(const float* __restrict__ src, float2* __restrict__ E, int Ci, int P, int Q, int sh, int sw, int oh,
               int ow, int Ht, int Wt, int th, int tw, int tiles_w, int tiles, int vh, int vw, int transposed) {
    const int t = blockIdx.x, ci = blockIdx.y;
    const int n = t / tiles, tile = t % tiles;
    const int h0 = tile / tiles_w * th, w0 = tile % tiles_w * tw;
    const WindowValue value{src + ((long long)n * Ci + ci) * P * Q, P, Q, sh, sw, h0 + oh, w0 + ow, vh, vw};
    const long long slot = transposed ? (long long)ci * gridDim.x + t : (long long)t * Ci + ci;
    forward_tile(value, E + slot * BINS, transposed != 0);
}

// X[t, c, f] = sum_k E[t, k, f] Wh[k, c, f] over k in order (k: the reduction channels ci, c: the outputs
// co). grid.x: (row tile, column tile), grid.y: bins.
extern "C" __global__ void __launch_bounds__(THREADS, 1)
conv_fft_bins(const float2* __restrict__ E, const float2* __restrict__ Wh, float2* __restrict__ X, int rows, int K,
              int C) {
    extern __shared__ float2 smem[];
    float2* Es = smem;                                   // [ROWS_TILE][BINS_K][BIN_BLOCK]
    float2* Ws = smem + ROWS_TILE * BINS_K * BIN_BLOCK;  // [BINS_K][COLS_TILE][BIN_BLOCK]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int col_tiles = (C + COLS_TILE - 1) / COLS_TILE;
    const int r0 = blockIdx.x / col_tiles * ROWS_TILE, c0 = blockIdx.x % col_tiles * COLS_TILE;
    const int f0 = blockIdx.y * BIN_BLOCK;
    const int wr = warp / (COLS_TILE / THREAD_COLS) * THREAD_ROWS;
    const int wc = warp % (COLS_TILE / THREAD_COLS) * THREAD_COLS;
    float2 acc[THREAD_ROWS][THREAD_COLS];
#pragma unroll
    for (int i = 0; i < THREAD_ROWS; ++i)
#pragma unroll
        for (int j = 0; j < THREAD_COLS; ++j) acc[i][j] = make_float2(0.f, 0.f);
    for (int k0 = 0; k0 < K; k0 += BINS_K) {
        for (int v = threadIdx.x; v < ROWS_TILE * BINS_K * BIN_BLOCK; v += THREADS) {
            const int l = v % BIN_BLOCK, kk = v / BIN_BLOCK % BINS_K, r = v / (BIN_BLOCK * BINS_K);
            const int row = r0 + r, k = k0 + kk, f = f0 + l;
            Es[v] = (row < rows && k < K && f < BINS) ? E[((long long)row * K + k) * BINS + f] : make_float2(0.f, 0.f);
        }
        for (int v = threadIdx.x; v < BINS_K * COLS_TILE * BIN_BLOCK; v += THREADS) {
            const int l = v % BIN_BLOCK, c = v / BIN_BLOCK % COLS_TILE, kk = v / (BIN_BLOCK * COLS_TILE);
            const int k = k0 + kk, f = f0 + l;
            Ws[v] = (c0 + c < C && k < K && f < BINS) ? Wh[((long long)k * C + c0 + c) * BINS + f]
                                                       : make_float2(0.f, 0.f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BINS_K; ++kk) {
            float2 a[THREAD_ROWS], b[THREAD_COLS];
#pragma unroll
            for (int i = 0; i < THREAD_ROWS; ++i) a[i] = Es[((wr + i) * BINS_K + kk) * BIN_BLOCK + lane];
#pragma unroll
            for (int j = 0; j < THREAD_COLS; ++j) b[j] = Ws[(kk * COLS_TILE + wc + j) * BIN_BLOCK + lane];
#pragma unroll
            for (int i = 0; i < THREAD_ROWS; ++i)
#pragma unroll
                for (int j = 0; j < THREAD_COLS; ++j) {
                    acc[i][j].x = fmaf(a[i].x, b[j].x, fmaf(-a[i].y, b[j].y, acc[i][j].x));
                    acc[i][j].y = fmaf(a[i].x, b[j].y, fmaf(a[i].y, b[j].x, acc[i][j].y));
                }
        }
        __syncthreads();
    }
    const int f = f0 + lane;
    if (f >= BINS) return;
#pragma unroll
    for (int i = 0; i < THREAD_ROWS; ++i)
#pragma unroll
        for (int j = 0; j < THREAD_COLS; ++j) {
            const int row = r0 + wr + i, c = c0 + wc + j;
            if (row < rows && c < C) X[((long long)row * C + c) * BINS + f] = acc[i][j];
        }
}

// blockIdx.x: t (as conv_fft_input), blockIdx.y: co. out points at this chunk's first image, (Po, Qo) per
// channel; the tile's value at (h0 + a, w0 + b) of the Ht x Wt output goes to out[(h0 + a) / so_h,
// (w0 + b) / so_w] where so_h, so_w divide them (backward-data: 1, 1; the forward: its stride), plus
// bias[co] where bias is given.
extern "C" __global__ void __launch_bounds__(THREADS)
conv_fft_output(const float2* __restrict__ X, float* __restrict__ out, const float* __restrict__ bias, int Co, int R,
                int S, int Ht, int Wt, int th, int tw, int tiles_w, int tiles, int so_h, int so_w, int Po, int Qo) {
    float2* Z = pairs_buffer();
    float2* Sp = spectrum_buffer();
    float2* tw_w = twiddle_buffer();
    float2* tw_h = tw_w + LW / 2;
    twiddles(tw_w, tw_h);
    const int t = blockIdx.x, co = blockIdx.y;
    const int n = t / tiles, tile = t % tiles;
    const int h0 = tile / tiles_w * th, w0 = tile % tiles_w * tw;
    const float2* in = X + ((long long)t * Co + co) * BINS;
    for (int f = threadIdx.x; f < BINS; f += THREADS)
        Sp[bit_reversed(f / HALF_W, LOG_LH) * HALF_W + f % HALF_W] = in[f];
    __syncthreads();
    transform<LH>(Sp, HALF_W, 1, HALF_W, 1.f, tw_h);
    // full rows from the half spectra: a = A[k], b = B[k] for k <= LW/2, else conj(A[LW-k]), conj(B[LW-k]);
    // the imaginary parts of the real bins 0 and LW/2 are dropped (rounding only); z = a + i b
    for (int v = threadIdx.x; v < (LH / 2) * LW; v += THREADS) {
        const int i2 = v / LW, k = v % LW;
        const int kk = k <= LW / 2 ? k : LW - k;
        float2 a = Sp[2 * i2 * HALF_W + kk], b = Sp[(2 * i2 + 1) * HALF_W + kk];
        if (k > LW / 2) {
            a.y = -a.y;
            b.y = -b.y;
        } else if (k == 0 || k == LW / 2) {
            a.y = 0.f;
            b.y = 0.f;
        }
        Z[i2 * LW + bit_reversed(k, LOG_LW)] = make_float2(a.x - b.y, a.y + b.x);
    }
    __syncthreads();
    transform<LW>(Z, LH / 2, LW, 1, 1.f, tw_w);
    const float scale = 1.f / (float)(LH * LW);
    const float add = bias != nullptr ? bias[co] : 0.f;
    float* dst = out + ((long long)n * Co + co) * Po * Qo;
    for (int v = threadIdx.x; v < th * tw; v += THREADS) {
        const int a = v / tw, b = v % tw;
        const int h = h0 + a, w = w0 + b;
        if (h >= Ht || w >= Wt || h % so_h != 0 || w % so_w != 0) continue;
        const int i = R - 1 + a, j = S - 1 + b;
        const float2 z = Z[(i >> 1) * LW + j];
        dst[(long long)(h / so_h) * Qo + w / so_w] = ((i & 1) ? z.y : z.x) * scale + add;
    }
}
