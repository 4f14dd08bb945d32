// Winograd F(2x2, 3x3) convolution, stride 1, 3x3 kernels: forward and (through a flipped filter)
// backward-data; the weight gradient as F(3x3, 2x2); and in the sections at the end, on a 6x6 transform
// domain, F(4x4, 3x3) / F(3x3, 4x4) for 3x3 kernels and F(2x2, 5x5) / F(5x5, 2x2) for 5x5 kernels.
// Launched by custom_impl/gpu/conv/winograd.py, which also documents the algorithm.
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out (P = H + 2ph - 2), (ph,pw) padding.
// Tiles: 2x2 output tiles, tP = ceil(P/2), tQ = ceil(Q/2), T = N*tP*tQ, tile t = (n*tP + tp)*tQ + tq;
// Tp = T rounded up to a multiple of 4 (the row length of V and Mo: float4-aligned rows for the GEMM).
// xi = 4*i + j in 0..15 indexes the 4x4 transformed tile.
//
//   conv_winograd_filter  U[xi][o][i] = (G g G^T)[xi], g = W[o, i] (3x3), U (16, O, Ip), Ip = I rounded up to 4,
//                    zeros at i >= I. Forward: O = K, I = C, g = W[k, c]. flip (backward-data):
//                    O = C, I = K, g[r][s] = W[k, c, 2-r, 2-s] (K/C swapped, rotated 180 degrees).
//   conv_winograd_input   V[xi][c][t] = (Bt d B)[xi], d = x[n, c, 2tp-ph .. +3, 2tq-pw .. +3] (zeros outside
//                    the image); V (16, C, Tp), zeros at t >= T. One thread per (c, t), t fastest.
//   conv_winograd_gemm    Mo[xi] = U[xi] (O x I) @ V[xi] (I x Tp), grid.z = xi: 16 independent GEMMs on
//                    gemm_tiles.cuh (tile config from the GEMM_* defines, as gemm.cu). Mo (16, O, Tp).
//   conv_winograd_output  y[n, k, 2tp+i, 2tq+j] = (At Mo[:, k, t] A)[i][j] + b[k] for 2tp+i < P, 2tq+j < Q.
//                    One thread per (k, t), t fastest.
// Matrices: Bt = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//           At = [1 1 1 0; 0 1 -1 -1]. Offsets into x, y, V and Mo are 64-bit. No atomics.
#include "gemm_tiles.cuh"

// Tile t = (n*tP + tp)*tQ + tq of the 2x2 output tiles.
struct WinoTile {
    int n, tp, tq;
};
__device__ __forceinline__ WinoTile wino_tile(int t, int tP, int tQ) {
    const int nt = t / tQ;
    return WinoTile{nt / tP, nt % tP, t - nt * tQ};
}

// The XIS transform-domain values of one padding column t >= T (the GEMMs read them: they must be zero).
template <int XIS>
__device__ __forceinline__ void wino_zero(float* p, long long xi_stride) {
#pragma unroll
    for (int xi = 0; xi < XIS; ++xi) p[xi * xi_stride] = 0.f;
}

// This thread's tile in a per-tile transform kernel (grid (ceil(Tp / blockDim.x), channels): t along x,
// coalesced stores; the channel on y): its first output `out` (+ xi * xi_stride for value xi) in the
// (XIS, channels, Tp) array `base`, and the tile. False where the thread is done: t >= Tp, or a padding
// column T <= t < Tp, whose XIS values it zeroes first.
template <int XIS>
__device__ __forceinline__ bool wino_thread_tile(float* base, int channels, int N, int tP, int tQ, int Tp,
                                                 float*& out, long long& xi_stride, WinoTile& tile) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= Tp) return false;
    xi_stride = (long long)channels * Tp;
    out = base + (long long)blockIdx.y * Tp + t;
    if (t >= N * tP * tQ) {
        wino_zero<XIS>(out, xi_stride);
        return false;
    }
    tile = wino_tile(t, tP, tQ);
    return true;
}


// This thread's filter in a filter-transform kernel (one thread per (o, i) of U's padded (O, Ip) matrix, O
// and I the output and reduction channels: (K, C), or (C, K) where `flip`): its R x R filter w = W[k, c],
// and its U slot `idx` (+ xi * xi_stride for value xi). False where the thread is done: past O * Ip, or a
// padding row i >= I (never read by the GEMM, whose reduction stops at I), whose XIS values it zeroes first.
template <int XIS, int R = 3>
__device__ __forceinline__ bool wino_filter_thread(const float* Wt, float* U, int K, int C, int flip,
                                                   const float*& w, int& idx, long long& xi_stride) {
    const int O = flip ? C : K;
    const int I = flip ? K : C;
    const int Ip = (I + 3) & ~3;
    idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= O * Ip) return false;
    const int o = idx / Ip;
    const int i = idx - o * Ip;
    xi_stride = (long long)O * Ip;
    if (i >= I) {
        wino_zero<XIS>(U + idx, xi_stride);
        return false;
    }
    const int k = flip ? i : o;
    const int c = flip ? o : i;
    w = Wt + ((long long)k * C + c) * (R * R);
    return true;
}

// ---- filter transform ----------------------------------------------------------------------------------
// One thread per (o, i) of U's padded (O, Ip) matrix; O*Ip <= 2^31 (checked by the wrapper).
extern "C" __global__ void conv_winograd_filter(const float* __restrict__ Wt, float* __restrict__ U,
                                           int K, int C, int flip) {
    const float* w;
    int idx;
    long long OI;
    if (!wino_filter_thread<16>(Wt, U, K, C, flip, w, idx, OI)) return;
    float g[3][3];
#pragma unroll
    for (int r = 0; r < 3; ++r)
#pragma unroll
        for (int s = 0; s < 3; ++s) g[r][s] = flip ? w[(2 - r) * 3 + (2 - s)] : w[r * 3 + s];
    // u = G g: 4 x 3
    float u[4][3];
#pragma unroll
    for (int s = 0; s < 3; ++s) {
        u[0][s] = g[0][s];
        u[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
        u[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
        u[3][s] = g[2][s];
    }
    // (G g) G^T: 4 x 4
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        float v0 = u[a][0];
        float v1 = 0.5f * (u[a][0] + u[a][1] + u[a][2]);
        float v2 = 0.5f * (u[a][0] - u[a][1] + u[a][2]);
        float v3 = u[a][2];
        U[(a * 4 + 0) * OI + idx] = v0;
        U[(a * 4 + 1) * OI + idx] = v1;
        U[(a * 4 + 2) * OI + idx] = v2;
        U[(a * 4 + 3) * OI + idx] = v3;
    }
}

// ---- input transform -----------------------------------------------------------------------------------
// grid (ceil(Tp / blockDim.x), C): c = blockIdx.y, t along x (coalesced V stores; x reads at stride 2).
extern "C" __global__ void conv_winograd_input(const float* __restrict__ x, float* __restrict__ V,
                                          int N, int C, int H, int W, int ph, int pw, int tP, int tQ,
                                          int Tp) {
    const int c = blockIdx.y;
    float* v_out;    // + xi * CT
    long long CT;    // elements per xi slice of V
    WinoTile tile;
    if (!wino_thread_tile<16>(V, C, N, tP, tQ, Tp, v_out, CT, tile)) return;
    const int n = tile.n, tp = tile.tp, tq = tile.tq;
    const int h0 = 2 * tp - ph;   // top-left of the 4x4 patch in image coordinates (may be < 0)
    const int w0 = 2 * tq - pw;
    const float* const plane = x + ((long long)n * C + c) * H * W;
    float d[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int h = h0 + a;
        const bool row_ok = h >= 0 && h < H;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int w = w0 + b;
            d[a][b] = (row_ok && w >= 0 && w < W) ? plane[(long long)h * W + w] : 0.f;
        }
    }
    // e = Bt d (rows), then e B (columns)
    float e[4][4];
#pragma unroll
    for (int b = 0; b < 4; ++b) {
        e[0][b] = d[0][b] - d[2][b];
        e[1][b] = d[1][b] + d[2][b];
        e[2][b] = d[2][b] - d[1][b];
        e[3][b] = d[1][b] - d[3][b];
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        v_out[(a * 4 + 0) * CT] = e[a][0] - e[a][2];
        v_out[(a * 4 + 1) * CT] = e[a][1] + e[a][2];
        v_out[(a * 4 + 2) * CT] = e[a][2] - e[a][1];
        v_out[(a * 4 + 3) * CT] = e[a][1] - e[a][3];
    }
}

// ---- batched GEMM ---------------------------------------------------------------------------------------
// Mo[z] (M x N) = U[z] (M x Kr, row stride ldu) @ V[z] (Kr x N), z = blockIdx.z in 0..15; N = Tp.
// flags bit 0: U float4-loadable (ldu % 4 == 0, aligned), bit 1: V (N % 4 == 0, aligned), bit 2: Mo.
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_winograd_gemm(const float* __restrict__ U, const float* __restrict__ V, float* __restrict__ Mo,
              int M, int N, int Kr, int ldu, int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const size_t z = blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    KVecLoader<BM, BK, NT> la;   // U: contiguous along the reduction
    la.p = U + z * M * ldu; la.ld = ldu; la.mn_size = M; la.k_end = Kr; la.mn0 = m0; la.tid = threadIdx.x;
    la.vec = flags & 1;
    MNVecLoader<BN, BK, NT> lb;  // V: contiguous along t
    lb.p = V + z * Kr * N; lb.ld = N; lb.mn_size = N; lb.k_end = Kr; lb.mn0 = n0; lb.tid = threadIdx.x;
    lb.vec = (flags >> 1) & 1;
    GemmEpilogue ep;
    ep.C = Mo + z * M * N; ep.bias = nullptr; ep.M = M; ep.N = N; ep.beta = 0; ep.act = 0;
    ep.vec = (flags >> 2) & 1; ep.partial = false;
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, 0, Kr);
}

// ---- output transform ----------------------------------------------------------------------------------
// grid (ceil(T / blockDim.x), K): k = blockIdx.y, t along x (coalesced Mo loads). b may be null.
extern "C" __global__ void conv_winograd_output(const float* __restrict__ Mo, const float* __restrict__ b,
                                           float* __restrict__ y, int N, int K, int P, int Q, int tP,
                                           int tQ, int Tp) {
    const int k = blockIdx.y;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int T = N * tP * tQ;
    if (t >= T) return;
    const long long KT = (long long)K * Tp;                 // elements per xi slice of Mo
    const float* const m_in = Mo + (long long)k * Tp + t;   // + xi * KT
    float m[4][4];
#pragma unroll
    for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = m_in[xi * KT];
    // f = At m (rows): 2 x 4, then f A (columns): 2 x 2
    float f[2][4];
#pragma unroll
    for (int b4 = 0; b4 < 4; ++b4) {
        f[0][b4] = m[0][b4] + m[1][b4] + m[2][b4];
        f[1][b4] = m[1][b4] - m[2][b4] - m[3][b4];
    }
    const float bias = b ? b[k] : 0.f;
    const WinoTile tile = wino_tile(t, tP, tQ);
    const int n = tile.n, tp = tile.tp, tq = tile.tq;
    float* const plane = y + ((long long)n * K + k) * P * Q;
#pragma unroll
    for (int a = 0; a < 2; ++a) {
        const int p = 2 * tp + a;
        if (p >= P) continue;   // the last tile row of an odd P
        const float o0 = f[a][0] + f[a][1] + f[a][2] + bias;
        const float o1 = f[a][1] - f[a][2] - f[a][3] + bias;
        const int q = 2 * tq;
        plane[(long long)p * Q + q] = o0;
        if (q + 1 < Q) plane[(long long)p * Q + q + 1] = o1;   // the last tile column of an odd Q
    }
}

// ==== backward-weights: Winograd F(3x3, 2x2) over the 2x2 output tiles ===================================
// dW[k,c] (3x3) = sum over tiles t of the correlation of the 4x4 x patch d (the forward's input tile) with
// the 2x2 dy tile e = dy[n, k, 2tp..+1, 2tq..+1] (zeros past P, Q). Per tile, with A = At^T (4x2):
//     dW[k,c] += G^T [ (A e A^T) (.) (Bt d B) ] G          ((.) elementwise on the 4x4 transform domain)
// so the sum over tiles is 16 GEMMs on the transformed tiles, reducing over t:
//   conv_winograd_input      V[xi][c][t]  = (Bt d B)[xi]        (the forward's kernel, unchanged)
//   conv_winograd_dy         Y[xi][k][t]  = (A e A^T)[xi]       Y (16, K, Tp), zeros at t >= T
//   conv_winograd_wgrad_gemm Mw[s][xi] (K x C) = Y[xi] (K x Tp) @ V[xi]^T over t in split s's range
//   conv_winograd_wgrad_output dW[k,c] = G^T (sum_s Mw[s][:, k, c]) G    (the splits summed in a fixed order)

// ---- dy transform ----------------------------------------------------------------------------------------
// grid (ceil(Tp / blockDim.x), K): k = blockIdx.y, t along x (coalesced Y stores).
extern "C" __global__ void conv_winograd_dy(const float* __restrict__ dy, float* __restrict__ Y,
                                       int N, int K, int P, int Q, int tP, int tQ, int Tp) {
    const int k = blockIdx.y;
    float* y_out;    // + xi * KT
    long long KT;    // elements per xi slice of Y
    WinoTile tile;
    if (!wino_thread_tile<16>(Y, K, N, tP, tQ, Tp, y_out, KT, tile)) return;
    const int n = tile.n, tp = tile.tp, tq = tile.tq;
    const int p0 = 2 * tp, q0 = 2 * tq;
    const float* const plane = dy + ((long long)n * K + k) * P * Q;
    float e[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            e[i][j] = (p0 + i < P && q0 + j < Q) ? plane[(long long)(p0 + i) * Q + q0 + j] : 0.f;
    // f = A e (rows): 4 x 2, then f A^T (columns): 4 x 4. A = [1 0; 1 1; 1 -1; 0 -1].
    float f[4][2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        f[0][j] = e[0][j];
        f[1][j] = e[0][j] + e[1][j];
        f[2][j] = e[0][j] - e[1][j];
        f[3][j] = -e[1][j];
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        y_out[(a * 4 + 0) * KT] = f[a][0];
        y_out[(a * 4 + 1) * KT] = f[a][0] + f[a][1];
        y_out[(a * 4 + 2) * KT] = f[a][0] - f[a][1];
        y_out[(a * 4 + 3) * KT] = -f[a][1];
    }
}

// ---- batched split-K GEMM over the tiles ----------------------------------------------------------------
// blockIdx.z = s * xis + xi: Mw[z] (K x C, row-major) = Y[xi] (K x Tp) @ V[xi]^T (Tp x C) over
// t in [s * t_chunk, min(Tp, (s + 1) * t_chunk)); t_chunk is a multiple of GEMM_BK. xis: the transform
// domain's size (16 for F(3x3, 2x2), 36 for F(3x3, 4x4) below). Both operands are contiguous along the
// reduction t (rows of length Tp). flags bit 0: Y and V float4-loadable (Tp % 4 == 0, both 16-byte
// aligned), bit 1: Mw float4-storable (C % 4 == 0, aligned).
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_winograd_wgrad_gemm(const float* __restrict__ Y, const float* __restrict__ V, float* __restrict__ Mw,
                    int K, int C, int Tp, int t_chunk, int flags, int xis) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const int s = blockIdx.z / xis;
    const int xi = blockIdx.z - s * xis;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int t_begin = s * t_chunk;
    const int t_end = min(Tp, t_begin + t_chunk);
    KVecLoader<BM, BK, NT> la;   // Y[xi]: (k, t) at k * Tp + t
    la.p = Y + (size_t)xi * K * Tp; la.ld = Tp; la.mn_size = K; la.k_end = t_end; la.mn0 = m0;
    la.tid = threadIdx.x; la.vec = flags & 1;
    KVecLoader<BN, BK, NT> lb;   // V[xi]: (c, t) at c * Tp + t
    lb.p = V + (size_t)xi * C * Tp; lb.ld = Tp; lb.mn_size = C; lb.k_end = t_end; lb.mn0 = n0;
    lb.tid = threadIdx.x; lb.vec = flags & 1;
    GemmEpilogue ep;
    ep.C = Mw + (size_t)blockIdx.z * K * C; ep.bias = nullptr; ep.M = K; ep.N = C; ep.beta = 0; ep.act = 0;
    ep.vec = (flags >> 1) & 1; ep.partial = true;
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, t_begin, t_end);
}

// ---- weight output transform ------------------------------------------------------------------------------
// m = the sum over the `slabs` partial slabs of Mw (each A*A slices of KC floats, slice xi at xi * KC) of
// element idx, the slabs added in order (deterministic).
template <int A>
__device__ __forceinline__ void wino_sum_slabs(const float* __restrict__ Mw, int idx, long long KC, int slabs,
                                               float (&m)[A][A]) {
#pragma unroll
    for (int xi = 0; xi < A * A; ++xi) m[xi / A][xi % A] = Mw[xi * KC + idx];
    for (int s = 1; s < slabs; ++s) {
        const float* const part = Mw + (long long)s * A * A * KC + idx;
#pragma unroll
        for (int xi = 0; xi < A * A; ++xi) m[xi / A][xi % A] += part[xi * KC];
    }
}

// One thread per (k, c), c fastest (coalesced Mw loads); K * C < 2^31 (checked by the wrapper).
// G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1] (3x4).
extern "C" __global__ void conv_winograd_wgrad_output(const float* __restrict__ Mw, float* __restrict__ dW,
                                                 int K, int C, int splits) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= K * C) return;
    float m[4][4];
    wino_sum_slabs(Mw, idx, (long long)K * C, splits, m);
    // f = G^T m (rows): 3 x 4, then f G (columns): 3 x 3
    float f[3][4];
#pragma unroll
    for (int b4 = 0; b4 < 4; ++b4) {
        const float h = 0.5f * (m[1][b4] + m[2][b4]);
        f[0][b4] = m[0][b4] + h;
        f[1][b4] = 0.5f * (m[1][b4] - m[2][b4]);
        f[2][b4] = h + m[3][b4];
    }
    float* const w = dW + (long long)idx * 9;
#pragma unroll
    for (int r = 0; r < 3; ++r) {
        const float h = 0.5f * (f[r][1] + f[r][2]);
        w[r * 3 + 0] = f[r][0] + h;
        w[r * 3 + 1] = 0.5f * (f[r][1] - f[r][2]);
        w[r * 3 + 2] = h + f[r][3];
    }
}


// ==== the 6x6 transform domain: F(4x4, 3x3) and F(2x2, 5x5), and their weight gradients ===================
// Both tile sizes share the interpolation points 0, +-1, +-2 and infinity, so both transform an x patch of
// 6x6 with the same Bt; they differ in the output tile M (4 or 2), the kernel size R = 7 - M (3 or 5), the
// filter transform G (6 x R) and the output transform At (M x 6). xi = 6*a + b in 0..35. Tiles:
// tP = ceil(P/M), tQ = ceil(Q/M), T = N*tP*tQ, t as in the first section.
//   Bt (6x6)  = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   F(4x4, 3x3): G (6x3) = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//                At (4x6) = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//   F(2x2, 5x5): G (6x5) = [1/4 0 0 0 0; -1/6 (x5); -1/6 1/6 -1/6 1/6 -1/6; 1/24 1/12 1/6 1/3 2/3;
//                           1/24 -1/12 1/6 -1/3 2/3; 0 0 0 0 1]      (row j: p_j^k / prod_{l != j} (p_j - p_l))
//                At (2x6) = [1 1 1 1 1 0; 0 1 -1 2 -2 1]
// Forward and backward-data (per tile and (k, c): 36 multiplications where the direct sum takes 16 x 9 = 144
// for F(4x4, 3x3), 4 x 25 = 100 for F(2x2, 5x5)):
//   conv_winograd{4,25}_filter  U[xi][o][i] = (G g G^T)[xi], U (36, O, Ip), g as conv_winograd_filter's
//                               (flip: K and C swapped, rotated 180 degrees)
//   conv_winograd{4,25}_input   V[xi][c][t] = (Bt d B)[xi], d the 6x6 x patch at (M tp - ph, M tq - pw)
//                               (zeros outside); V (36, C, Tp), zeros at t >= T
//   conv_winograd_gemm          Mo[xi] = U[xi] @ V[xi], grid.z = 36
//   conv_winograd{4,25}_output  y[n, k, M tp+i, M tq+j] = (At Mo[:, k, t] A)[i][j] + b[k] (inside P, Q)
// Backward-weights, F(3x3, 4x4) and F(5x5, 2x2): the first section's sum with M x M dy tiles e at (M tp,
// M tq) (zeros past P, Q) and A = At^T (6 x M):  dW[k,c] += G^T [ (A e A^T) (.) (Bt d B) ] G  (R x R)
//   conv_winograd{4,25}_input         V (36, C, Tp), as above
//   conv_winograd{4,25}_dy            Y[xi][k][t] = (A e A^T)[xi], Y (36, K, Tp), zeros at t >= T
//   conv_winograd_wgrad_gemm          with xis = 36
//   conv_winograd{4,25}_wgrad_output  dW[k, c] = G^T (sum_s Mw[s][:, k, c]) G, the slabs summed in order
// Rounding: F(4x4, 3x3)'s larger transform entries (8 in At, 5 in Bt) grow the float32 error 10-25x over
// F(2x2, 3x3)'s in NumPy emulation (lab/conv/winograd_emulate.py), its weight gradient's 5-10x; F(2x2, 5x5)
// measured there as well. All within the conv tests' bounds.

// ---- the transforms of one vector: Bt (both), then G, At, A, G^T of each tile size ----------------------

// The 6 values of Bt v for a column (or row) v of 6.
__device__ __forceinline__ void wino4_bt(const float (&v)[6], float (&o)[6]) {
    o[0] = 4.f * v[0] - 5.f * v[2] + v[4];
    o[1] = -4.f * (v[1] + v[2]) + v[3] + v[4];
    o[2] = 4.f * (v[1] - v[2]) - v[3] + v[4];
    o[3] = 2.f * (v[3] - v[1]) - v[2] + v[4];
    o[4] = 2.f * (v[1] - v[3]) - v[2] + v[4];
    o[5] = 4.f * v[1] - 5.f * v[3] + v[5];
}

// F(4x4, 3x3): the 6 values of G v for v of 3.
__device__ __forceinline__ void wino4_g(const float (&v)[3], float (&o)[6]) {
    const float s02 = v[0] + v[2];
    o[0] = 0.25f * v[0];
    o[1] = -(1.f / 6.f) * (s02 + v[1]);
    o[2] = -(1.f / 6.f) * (s02 - v[1]);
    o[3] = (1.f / 24.f) * v[0] + (1.f / 12.f) * v[1] + (1.f / 6.f) * v[2];
    o[4] = (1.f / 24.f) * v[0] - (1.f / 12.f) * v[1] + (1.f / 6.f) * v[2];
    o[5] = v[2];
}

// F(4x4, 3x3): the 4 values of At v for v of 6.
__device__ __forceinline__ void wino4_at(const float (&v)[6], float (&o)[4]) {
    const float s12 = v[1] + v[2], d12 = v[1] - v[2], s34 = v[3] + v[4], d34 = v[3] - v[4];
    o[0] = v[0] + s12 + s34;
    o[1] = d12 + 2.f * d34;
    o[2] = s12 + 4.f * s34;
    o[3] = d12 + 8.f * d34 + v[5];
}

// F(3x3, 4x4): the 6 values of A v for v of 4.
__device__ __forceinline__ void wino4_a(const float (&v)[4], float (&o)[6]) {
    const float even = v[0] + v[2], odd = v[1] + v[3];
    const float even4 = v[0] + 4.f * v[2], odd4 = 2.f * v[1] + 8.f * v[3];
    o[0] = v[0];
    o[1] = even + odd;
    o[2] = even - odd;
    o[3] = even4 + odd4;
    o[4] = even4 - odd4;
    o[5] = v[3];
}

// F(3x3, 4x4): the 3 values of G^T v for v of 6.
__device__ __forceinline__ void wino4_gt(const float (&v)[6], float (&o)[3]) {
    const float s12 = v[1] + v[2], d12 = v[1] - v[2], s34 = v[3] + v[4], d34 = v[3] - v[4];
    o[0] = 0.25f * v[0] - (1.f / 6.f) * s12 + (1.f / 24.f) * s34;
    o[1] = -(1.f / 6.f) * d12 + (1.f / 12.f) * d34;
    o[2] = -(1.f / 6.f) * s12 + (1.f / 6.f) * s34 + v[5];
}

// F(2x2, 5x5): the 6 values of G v for v of 5.
__device__ __forceinline__ void wino25_g(const float (&v)[5], float (&o)[6]) {
    const float even = v[0] + v[2] + v[4], odd = v[1] + v[3];
    const float even4 = v[0] + 4.f * v[2] + 16.f * v[4], odd4 = 2.f * v[1] + 8.f * v[3];
    o[0] = 0.25f * v[0];
    o[1] = -(1.f / 6.f) * (even + odd);
    o[2] = -(1.f / 6.f) * (even - odd);
    o[3] = (1.f / 24.f) * (even4 + odd4);
    o[4] = (1.f / 24.f) * (even4 - odd4);
    o[5] = v[4];
}

// F(2x2, 5x5): the 2 values of At v for v of 6.
__device__ __forceinline__ void wino25_at(const float (&v)[6], float (&o)[2]) {
    o[0] = v[0] + (v[1] + v[2]) + (v[3] + v[4]);
    o[1] = (v[1] - v[2]) + 2.f * (v[3] - v[4]) + v[5];
}

// F(5x5, 2x2): the 6 values of A v for v of 2.
__device__ __forceinline__ void wino25_a(const float (&v)[2], float (&o)[6]) {
    o[0] = v[0];
    o[1] = v[0] + v[1];
    o[2] = v[0] - v[1];
    o[3] = v[0] + 2.f * v[1];
    o[4] = v[0] - 2.f * v[1];
    o[5] = v[1];
}

// F(5x5, 2x2): the 5 values of G^T v for v of 6.
__device__ __forceinline__ void wino25_gt(const float (&v)[6], float (&o)[5]) {
    const float s12 = v[1] + v[2], d12 = v[1] - v[2], s34 = v[3] + v[4], d34 = v[3] - v[4];
    o[0] = 0.25f * v[0] - (1.f / 6.f) * s12 + (1.f / 24.f) * s34;
    o[1] = -(1.f / 6.f) * d12 + (1.f / 12.f) * d34;
    o[2] = -(1.f / 6.f) * s12 + (1.f / 6.f) * s34;
    o[3] = -(1.f / 6.f) * d12 + (1.f / 3.f) * d34;
    o[4] = -(1.f / 6.f) * s12 + (2.f / 3.f) * s34 + v[5];
}

// The templates below pick a tile size's transform by the array lengths (M output / dy values, R taps).
__device__ __forceinline__ void wino6_g(const float (&v)[3], float (&o)[6]) { wino4_g(v, o); }
__device__ __forceinline__ void wino6_g(const float (&v)[5], float (&o)[6]) { wino25_g(v, o); }
__device__ __forceinline__ void wino6_at(const float (&v)[6], float (&o)[4]) { wino4_at(v, o); }
__device__ __forceinline__ void wino6_at(const float (&v)[6], float (&o)[2]) { wino25_at(v, o); }
__device__ __forceinline__ void wino6_a(const float (&v)[4], float (&o)[6]) { wino4_a(v, o); }
__device__ __forceinline__ void wino6_a(const float (&v)[2], float (&o)[6]) { wino25_a(v, o); }
__device__ __forceinline__ void wino6_gt(const float (&v)[6], float (&o)[3]) { wino4_gt(v, o); }
__device__ __forceinline__ void wino6_gt(const float (&v)[6], float (&o)[5]) { wino25_gt(v, o); }

// ---- the kernels' bodies, per output tile M (R = 7 - M) ------------------------------------------------

// A separable 2-D transform T x T^T of an IN x IN tile: `xf(v, o)` maps a vector of IN to OUT (one of the
// wino6_* functions above); `load(i, j)` gives tile element (i, j), `store(a, b, value)` takes element (a, b)
// of the OUT x OUT result. Columns first (t = T tile), then the rows of t.
template <int IN, int OUT, class Xf, class Load, class Store>
__device__ __forceinline__ void wino_separable(Xf xf, Load load, Store store) {
    float t[OUT][IN];   // t[a][j] = (T tile[:, j])[a]
#pragma unroll
    for (int j = 0; j < IN; ++j) {
        float v[IN], o[OUT];
#pragma unroll
        for (int i = 0; i < IN; ++i) v[i] = load(i, j);
        xf(v, o);
#pragma unroll
        for (int a = 0; a < OUT; ++a) t[a][j] = o[a];
    }
#pragma unroll
    for (int a = 0; a < OUT; ++a) {
        float o[OUT];
        xf(t[a], o);    // (T tile T^T)[a][:] = T applied to row a of T tile
#pragma unroll
        for (int b = 0; b < OUT; ++b) store(a, b, o[b]);
    }
}

// Filter transform: one thread per (o, i) of U's padded (O, Ip) matrix; 36 * O * Ip <= 2^31 (checked by
// the wrapper).
template <int R>
__device__ __forceinline__ void wino6_filter(const float* __restrict__ Wt, float* __restrict__ U, int K, int C,
                                             int flip) {
    const float* w;
    int idx;
    long long OI;
    if (!wino_filter_thread<36, R>(Wt, U, K, C, flip, w, idx, OI)) return;
    wino_separable<R, 6>([](const auto& v, auto& o) { wino6_g(v, o); },
                         [&](int r, int s) { return flip ? w[(R - 1 - r) * R + (R - 1 - s)] : w[r * R + s]; },
                         [&](int a, int b, float u) { U[(a * 6 + b) * OI + idx] = u; });
}

// Input transform: grid (ceil(Tp / blockDim.x), C): c = blockIdx.y, t along x (coalesced V stores); the
// 6x6 patch of tile (tp, tq) starts at (M tp - ph, M tq - pw).
template <int M>
__device__ __forceinline__ void wino6_input(const float* __restrict__ x, float* __restrict__ V, int N, int C,
                                            int H, int W, int ph, int pw, int tP, int tQ, int Tp) {
    const int c = blockIdx.y;
    float* v_out;    // + xi * CT
    long long CT;    // elements per xi slice of V
    WinoTile tile;
    if (!wino_thread_tile<36>(V, C, N, tP, tQ, Tp, v_out, CT, tile)) return;
    const int h0 = M * tile.tp - ph;   // top-left of the 6x6 patch in image coordinates (may be < 0)
    const int w0 = M * tile.tq - pw;
    const float* const plane = x + ((long long)tile.n * C + c) * H * W;
    wino_separable<6, 6>([](const auto& v, auto& o) { wino4_bt(v, o); },
                         [&](int a, int b) {
                             const int h = h0 + a, w = w0 + b;
                             return (w >= 0 && w < W && h >= 0 && h < H) ? plane[(long long)h * W + w] : 0.f;
                         },
                         [&](int a, int b, float v) { v_out[(a * 6 + b) * CT] = v; });
}

// Output transform: grid (ceil(T / blockDim.x), K): k = blockIdx.y, t along x (coalesced Mo loads). b may
// be null.
template <int M>
__device__ __forceinline__ void wino6_output(const float* __restrict__ Mo, const float* __restrict__ b,
                                             float* __restrict__ y, int N, int K, int P, int Q, int tP, int tQ,
                                             int Tp) {
    const int k = blockIdx.y;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int T = N * tP * tQ;
    if (t >= T) return;
    const long long KT = (long long)K * Tp;                 // elements per xi slice of Mo
    const float* const m_in = Mo + (long long)k * Tp + t;   // + xi * KT
    const float bias = b ? b[k] : 0.f;
    const WinoTile tile = wino_tile(t, tP, tQ);
    float* const plane = y + ((long long)tile.n * K + k) * P * Q;
    // rows past P and columns past Q (the last tile's, where P or Q % M != 0) are not stored
    wino_separable<6, M>([](const auto& v, auto& o) { wino6_at(v, o); },
                         [&](int a, int b6) { return m_in[(a * 6 + b6) * KT]; },
                         [&](int i, int j, float v) {
                             const int p = M * tile.tp + i, q = M * tile.tq + j;
                             if (p < P && q < Q) plane[(long long)p * Q + q] = v + bias;
                         });
}

// dy transform: grid (ceil(Tp / blockDim.x), K): k = blockIdx.y, t along x (coalesced Y stores); the M x M
// dy tile of (tp, tq) at (M tp, M tq).
template <int M>
__device__ __forceinline__ void wino6_dy(const float* __restrict__ dy, float* __restrict__ Y, int N, int K,
                                         int P, int Q, int tP, int tQ, int Tp) {
    const int k = blockIdx.y;
    float* y_out;    // + xi * KT
    long long KT;    // elements per xi slice of Y
    WinoTile tile;
    if (!wino_thread_tile<36>(Y, K, N, tP, tQ, Tp, y_out, KT, tile)) return;
    const int p0 = M * tile.tp, q0 = M * tile.tq;
    const float* const plane = dy + ((long long)tile.n * K + k) * P * Q;
    wino_separable<M, 6>([](const auto& v, auto& o) { wino6_a(v, o); },
                         [&](int i, int j) {
                             return (q0 + j < Q && p0 + i < P) ? plane[(long long)(p0 + i) * Q + q0 + j] : 0.f;
                         },
                         [&](int a, int b, float v) { y_out[(a * 6 + b) * KT] = v; });
}

// Weight output transform: one thread per (k, c), c fastest (coalesced Mw loads); K * C < 2^31 (checked by
// the wrapper). dW (K, C, R, R).
template <int R>
__device__ __forceinline__ void wino6_wgrad_output(const float* __restrict__ Mw, float* __restrict__ dW, int K,
                                                   int C, int splits) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= K * C) return;
    float m[6][6];
    wino_sum_slabs(Mw, idx, (long long)K * C, splits, m);
    float* const w = dW + (long long)idx * (R * R);
    wino_separable<6, R>([](const auto& v, auto& o) { wino6_gt(v, o); },
                         [&](int a, int b) { return m[a][b]; },
                         [&](int r, int s, float v) { w[r * R + s] = v; });
}

// ---- the kernels: F(4x4, 3x3) / F(3x3, 4x4) ("winograd4"), F(2x2, 5x5) / F(5x5, 2x2) ("winograd", 5x5) ---

extern "C" __global__ void conv_winograd4_filter(const float* __restrict__ Wt, float* __restrict__ U,
                                                 int K, int C, int flip) {
    wino6_filter<3>(Wt, U, K, C, flip);
}

extern "C" __global__ void conv_winograd25_filter(const float* __restrict__ Wt, float* __restrict__ U,
                                                  int K, int C, int flip) {
    wino6_filter<5>(Wt, U, K, C, flip);
}

extern "C" __global__ void conv_winograd4_input(const float* __restrict__ x, float* __restrict__ V, int N, int C,
                                                int H, int W, int ph, int pw, int tP, int tQ, int Tp) {
    wino6_input<4>(x, V, N, C, H, W, ph, pw, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd25_input(const float* __restrict__ x, float* __restrict__ V, int N, int C,
                                                 int H, int W, int ph, int pw, int tP, int tQ, int Tp) {
    wino6_input<2>(x, V, N, C, H, W, ph, pw, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd4_output(const float* __restrict__ Mo, const float* __restrict__ b,
                                                 float* __restrict__ y, int N, int K, int P, int Q, int tP,
                                                 int tQ, int Tp) {
    wino6_output<4>(Mo, b, y, N, K, P, Q, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd25_output(const float* __restrict__ Mo, const float* __restrict__ b,
                                                  float* __restrict__ y, int N, int K, int P, int Q, int tP,
                                                  int tQ, int Tp) {
    wino6_output<2>(Mo, b, y, N, K, P, Q, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd4_dy(const float* __restrict__ dy, float* __restrict__ Y, int N, int K,
                                             int P, int Q, int tP, int tQ, int Tp) {
    wino6_dy<4>(dy, Y, N, K, P, Q, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd25_dy(const float* __restrict__ dy, float* __restrict__ Y, int N, int K,
                                              int P, int Q, int tP, int tQ, int Tp) {
    wino6_dy<2>(dy, Y, N, K, P, Q, tP, tQ, Tp);
}

extern "C" __global__ void conv_winograd4_wgrad_output(const float* __restrict__ Mw, float* __restrict__ dW,
                                                       int K, int C, int splits) {
    wino6_wgrad_output<3>(Mw, dW, K, C, splits);
}

extern "C" __global__ void conv_winograd25_wgrad_output(const float* __restrict__ Mw, float* __restrict__ dW,
                                                        int K, int C, int splits) {
    wino6_wgrad_output<5>(Mw, dW, K, C, splits);
}
