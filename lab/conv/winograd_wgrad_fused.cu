// Experiment: the weight gradient of a 5x5 stride-1 conv as F(5x5, 2x2) Winograd with the transforms fused
// into the sum, so the transform domain never goes through global memory.
//
// The product's "winograd" weight gradient (custom_impl/kernels/conv_winograd.cu) writes V = Bt d B
// (36, C, T) and Y = A e A^T (36, K, T) to global memory and reads them back in 36 GEMMs: at LeNet's conv2,
// batch 256 (T = 12,544 tiles), 58 + 116 MB each way, most of its 0.265 ms (docs/kernels.md). Here a block
// stages the rows of x and dy that one row of tiles needs (cp.async, double-buffered), transforms them in
// shared memory and adds the tiles' products into transform-domain sums held in registers:
//
//   dW[k, c] = G^T [ sum over tiles t of (A e_t[k] A^T) (.) (Bt d_t[c] B) ] G        ((.) elementwise, 6x6)
//
// with e_t the 2x2 dy tile at (2tp, 2tq) (zeros past P, Q), d_t the 6x6 x patch at (2tp - ph, 2tq - pw)
// (zeros outside the image), and the matrices of F(2x2, 5x5) (the same Bt, A = At^T and G as
// conv_winograd.cu's wino4_bt, wino25_a and wino25_gt). xi = 6a + b indexes the domain.
//
// Shared memory: 2 x (FW_XS + FW_DS) staging floats, then Ys (12 x FW_TQ x 64) and Vs (12 x FW_TQ x 32):
// 82.75 KB at FW_TQ = 8, 158.75 KB at 16 (winograd_wgrad_fused_emulate.Layout). One block per SM.
// Blocks: grid (chunks of tile rows, 3 groups of 12 xi (a in {2g, 2g+1}), k blocks of 64 x c blocks of 32).
// A row of tiles is one (n, tp): tQ <= FW_TQ tiles. 384 threads = 12 warps; warp w owns xi = 12g + w, lane
// (kq, cq) = (lane / 4, lane % 4) owns k0 + 8kq .. +7 x c0 + 8cq .. +7: 64 sums. Per row: stage x (6 rows
// x 2tQ+4 columns x 32 channels) and dy (2 rows x 2tQ columns x 64 k), then the block
// transforms only its group's two rows a of each patch (Bt's row a against the patch's columns, then Bt
// along the row) and of each dy tile, into Ys[xl][t][k], Vs[xl][t][c], then every warp adds
// sum_t Ys[xl][t][k] Vs[xl][t][c] to its 64 sums. The block writes its sums (its chunk's partial) to
// part[((chunk * 3 + g) * 12 + xl) * K * C + k * C + c]; fw_reduce adds the chunks in order into
// Mt[xi][k * C + c]; fw_output applies G^T . G. Fixed orders throughout: deterministic.
//
// Numerics: the product's F(5x5, 2x2) in another summation order (per-row products summed over tiles in
// registers, then chunks in order), so its error is of the same order (docs/kernels.md).
// Compile-time: FW_TQ (tiles per row at most; the kernel does nothing for a wider layer).

#ifndef FW_TQ
#define FW_TQ 8
#endif
#define FW_K 64
#define FW_C 32
#define FW_THREADS 384
#define FW_XLD (2 * FW_TQ + 4)   // staged x row: 2tQ + 4 columns at most
#define FW_DLD (2 * FW_TQ)       // staged dy row
#define FW_XC (6 * FW_XLD + 1)    // staged x: floats per channel (odd: a warp's 32 channels hit 32 banks)
#define FW_DK (2 * FW_DLD + 1)    // staged dy: floats per k (odd, likewise)
#define FW_XS (FW_C * FW_XC)
#define FW_DS (FW_K * FW_DK)

// The 6x6 domain's vector transforms (wino4_bt, wino25_a, wino25_gt) are conv_winograd.cu's and the
// 4-byte zero-filling cp.async helpers (pt_cp4, pt_commit, pt_wait) conv_patch.cu's: both files are included
// whole (their own kernels compile into this module too, unused).
#include "../../custom_impl/kernels/conv_winograd.cu"  // also found through -I custom_impl/kernels
#include "../../custom_impl/kernels/conv_patch.cu"     // likewise

__constant__ float fw_bt[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                  {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
__constant__ float fw_a[6][2] = {{1, 0}, {1, 1}, {1, -1}, {1, 2}, {1, -2}, {0, 1}};

struct FwShape {
    int N, C, H, W, K, P, Q, ph, pw, tP, tQ, k0, c0;
};

// The x rows and dy rows of tile row `row` = (n, tp) into Xs [c][i][j] and Ds [k][a][q] (zeros outside). Two
// threads per staged row, each copying half of it: the row's bounds and address are worked out once, the
// elements then step by one column (no division per element).
static_assert(FW_THREADS == 2 * FW_C * 6, "x staging: two threads per (channel, patch row)");
static_assert(2 * FW_K * 2 <= FW_THREADS, "dy staging: two threads per (k, tile row)");
__device__ __forceinline__ void fw_stage(const float* __restrict__ x, const float* __restrict__ dy, const FwShape& s,
                                         int row, float* Xs, float* Ds) {
    const int n = row / s.tP, tp = row - n * s.tP;
    const int h = threadIdx.x & 1;
    {
        const int xr = threadIdx.x >> 1;          // (c, i) = (xr / 6, xr % 6)
        const int c = xr / 6, i = xr - 6 * c;
        const int cc = s.c0 + c, ih = 2 * tp - s.ph + i;
        const bool row_ok = cc < s.C && (unsigned)ih < (unsigned)s.H;
        const int j0 = h * (FW_XLD / 2);
        const float* src = x + (((long long)n * s.C + (row_ok ? cc : 0)) * s.H + (row_ok ? ih : 0)) * s.W;
        float* dst = Xs + c * FW_XC + i * FW_XLD + j0;
#pragma unroll
        for (int jj = 0; jj < FW_XLD / 2; ++jj) {
            const int iw = j0 + jj - s.pw;
            const bool ok = row_ok && (unsigned)iw < (unsigned)s.W;
            pt_cp4(dst + jj, ok ? src + iw : x, ok);
        }
    }
    if (threadIdx.x < 2 * FW_K * 2) {
        const int dr = threadIdx.x >> 1;          // (k, a) = (dr / 2, dr % 2)
        const int k = dr >> 1, a = dr & 1;
        const int kk = s.k0 + k, p = 2 * tp + a;
        const bool row_ok = kk < s.K && p < s.P;
        const int q0 = h * (FW_DLD / 2);
        const float* src = dy + (((long long)n * s.K + (row_ok ? kk : 0)) * s.P + (row_ok ? p : 0)) * s.Q;
        float* dst = Ds + k * FW_DK + a * FW_DLD + q0;
#pragma unroll
        for (int qq = 0; qq < FW_DLD / 2; ++qq) {
            const bool ok = row_ok && q0 + qq < s.Q;
            pt_cp4(dst + qq, ok ? src + q0 + qq : dy, ok);
        }
    }
}

extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)
fw_wgrad_partial(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ part,
                 int N, int C, int H, int W, int K, int P, int Q, int ph, int pw, int chunk) {
    extern __shared__ float4 fw_smem4[];
    float* const smem = reinterpret_cast<float*>(fw_smem4);
    FwShape s;
    s.N = N; s.C = C; s.H = H; s.W = W; s.K = K; s.P = P; s.Q = Q; s.ph = ph; s.pw = pw;
    s.tP = (P + 1) / 2;
    s.tQ = (Q + 1) / 2;
    if (s.tQ > FW_TQ) return;   // compiled for narrower layers: the probe never launches this
    const int kblocks = (K + FW_K - 1) / FW_K;
    s.k0 = (blockIdx.z % kblocks) * FW_K;
    s.c0 = (blockIdx.z / kblocks) * FW_C;
    const int g = blockIdx.y;                 // this block's rows a = 2g, 2g + 1 of the domain
    float* const Xbuf = smem;                 // [2][FW_XS]
    float* const Dbuf = smem + 2 * FW_XS;     // [2][FW_DS]
    float* const Ys = Dbuf + 2 * FW_DS;       // [12][FW_TQ][FW_K]
    float* const Vs = Ys + 12 * FW_TQ * FW_K; // [12][FW_TQ][FW_C]

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kq = lane >> 2, cq = lane & 3;
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    const int rows = N * s.tP;
    const int r0 = blockIdx.x * chunk, r1 = min(rows, r0 + chunk);
    const int tQ = s.tQ;
    if (r0 < r1) fw_stage(x, dy, s, r0, Xbuf, Dbuf);
    pt_commit();
    for (int r = r0; r < r1; ++r) {
        const int cur = (r - r0) & 1;
        if (r + 1 < r1) {
            // buffer cur ^ 1 was last read by the transforms of row r - 1, which every thread finished before
            // the barrier that preceded that row's products
            fw_stage(x, dy, s, r + 1, Xbuf + (cur ^ 1) * FW_XS, Dbuf + (cur ^ 1) * FW_DS);
            pt_commit();
            pt_wait<1>();
        } else {
            pt_wait<0>();
        }
        __syncthreads();   // row r landed for every thread; every warp is done with row r - 1's Ys, Vs
        const float* Xs = Xbuf + cur * FW_XS;
        const float* Ds = Dbuf + cur * FW_DS;
        // dy tiles: item (t, k), the group's two rows of A e A^T
        for (int item = threadIdx.x; item < tQ * FW_K; item += FW_THREADS) {
            const int t = item / FW_K, k = item - t * FW_K;
            const float* e0 = Ds + k * FW_DK + 2 * t;           // e[0][0..1]
            const float* e1 = e0 + FW_DLD;                      // e[1][0..1]
#pragma unroll
            for (int al = 0; al < 2; ++al) {
                const int a = 2 * g + al;
                const float u[2] = {fw_a[a][0] * e0[0] + fw_a[a][1] * e1[0], fw_a[a][0] * e0[1] + fw_a[a][1] * e1[1]};
                float o[6];
                wino25_a(u, o);
#pragma unroll
                for (int b = 0; b < 6; ++b) Ys[((al * 6 + b) * FW_TQ + t) * FW_K + k] = o[b];
            }
        }
        // x patches: item (t, c), the group's two rows of Bt d B
        for (int item = threadIdx.x; item < tQ * FW_C; item += FW_THREADS) {
            const int t = item / FW_C, c = item - t * FW_C;
            const float* d = Xs + c * FW_XC + 2 * t;          // d[i][j] = d[i * FW_XLD + j]
#pragma unroll
            for (int al = 0; al < 2; ++al) {
                const int a = 2 * g + al;
                float rv[6];
#pragma unroll
                for (int j = 0; j < 6; ++j) {
                    float v = 0.f;
#pragma unroll
                    for (int i = 0; i < 6; ++i) v = fmaf(fw_bt[a][i], d[i * FW_XLD + j], v);
                    rv[j] = v;
                }
                float o[6];
                wino4_bt(rv, o);
#pragma unroll
                for (int b = 0; b < 6; ++b) Vs[((al * 6 + b) * FW_TQ + t) * FW_C + c] = o[b];
            }
        }
        __syncthreads();   // Ys, Vs of row r complete
        const float* yrow = Ys + warp * FW_TQ * FW_K + kq * 8;
        const float* vrow = Vs + warp * FW_TQ * FW_C + cq * 8;
        for (int t = 0; t < tQ; ++t) {
            const float4 y0 = *reinterpret_cast<const float4*>(yrow + t * FW_K);
            const float4 y1 = *reinterpret_cast<const float4*>(yrow + t * FW_K + 4);
            const float4 v0 = *reinterpret_cast<const float4*>(vrow + t * FW_C);
            const float4 v1 = *reinterpret_cast<const float4*>(vrow + t * FW_C + 4);
            const float yv[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
            const float vv[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(yv[i], vv[j], acc[i][j]);
        }
    }

    float* out = part + ((long long)(blockIdx.x * 3 + g) * 12 + warp) * K * C;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int k = s.k0 + kq * 8 + i;
        if (k >= K) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = s.c0 + cq * 8 + j;
            if (c < C) out[(long long)k * C + c] = acc[i][j];
        }
    }
}

// Mt[xi][kc] = sum over chunks, in order, of part[((chunk * 3 + xi / 12) * 12 + xi % 12) * KC + kc]
extern "C" __global__ void fw_reduce(const float* __restrict__ part, float* __restrict__ Mt, int KC, int chunks) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= 36LL * KC) return;
    const int xi = (int)(idx / KC), kc = (int)(idx - (long long)xi * KC);
    const int g = xi / 12, xl = xi - 12 * g;
    float v = 0.f;
    for (int ch = 0; ch < chunks; ++ch) v += part[((long long)(ch * 3 + g) * 12 + xl) * KC + kc];
    Mt[idx] = v;
}

// dW[kc][r][s] = (G^T M G)[r][s], M[a][b] = Mt[6a + b][kc]
extern "C" __global__ void fw_output(const float* __restrict__ Mt, float* __restrict__ dW, int KC) {
    const int kc = blockIdx.x * blockDim.x + threadIdx.x;
    if (kc >= KC) return;
    float tmp[6][5];   // tmp[a][s] = (M[a][:] G)[s]
#pragma unroll
    for (int a = 0; a < 6; ++a) {
        float row[6];
#pragma unroll
        for (int b = 0; b < 6; ++b) row[b] = Mt[(long long)(6 * a + b) * KC + kc];
        wino25_gt(row, tmp[a]);
    }
#pragma unroll
    for (int s5 = 0; s5 < 5; ++s5) {
        float col[6], o[5];
#pragma unroll
        for (int a = 0; a < 6; ++a) col[a] = tmp[a][s5];
        wino25_gt(col, o);
#pragma unroll
        for (int r5 = 0; r5 < 5; ++r5) dW[(long long)kc * 25 + r5 * 5 + s5] = o[r5];
    }
}
