// Tiled-GEMM machinery shared by gemm.cu (explicit GEMMs) and conv.cu (implicit-GEMM convolutions).
//
// One block computes a BM x BN tile of C = op(A) @ op(B) over a range of the reduction index k.
// Operand tiles go through shared memory, stored k-major ("transposed": S[k][mn], row length BMN + PAD)
// so that the inner product reads TM (TN) consecutive floats of one k row as float4s.
// Double buffering: the next tile is fetched from global memory into registers while the current one
// is multiplied, then written into the other shared buffer; one barrier per k tile.
//
// Thread tiling (warp tiling): a warp owns a WM x WN = (8*TM) x (4*TN) sub-tile; its 32 lanes form an
// 8 (m) x 4 (n) grid; lane (lm, ln) owns rows  wm*WM + i*32 + lm*4 + {0..3}, i < TM/4,
//                                       cols  wn*WN + j*16 + ln*4 + {0..3}, j < TN/4.
// So the A fragment of one k is TM/4 float4 reads (8 distinct addresses per warp: no bank conflict),
// the B fragment TN/4 float4 reads (4 distinct addresses, broadcast).
//
// Loaders (operand fetchers) are small structs with
//     load(k0)    fetch the tile starting at reduction index k0 into registers (zeros outside the matrix)
//     store(S)    write those registers into shared memory S[BK][BMN + PAD]
// and an epilogue struct with store4(m, n, v[4]) that writes C[m, n..n+3] with its own bounds checks.
// The plain-matrix loaders below come in two builds: CHECKED (bounds tests per vector, scalar fallback) and
// unchecked, for tiles wholly inside aligned operands; gemm.cu picks per block. The checks cost ~6% of the
// 4096^3 GEMM on the H100 (branch structure, address and predicate math in every k tile; docs/kernels.md).
// Two mappings of a loader's 4-float vectors onto the tile exist:
//   "k-vector":  4 consecutive k at one mn (operand contiguous along k: A (M,K), B^T stored (N,K));
//   "mn-vector": 4 consecutive mn at one k (operand contiguous along mn: A^T stored (K,M), B (K,N)).
#pragma once

// Tile configuration of the including file's GEMM-shaped kernels, set per compiled module by tiles.py's
// TileConfig.defines (-DGEMM_BM=... etc.); these defaults are the 128x128x8 tile with 8x8 per thread.
#ifndef GEMM_BM
#define GEMM_BM 128
#endif
#ifndef GEMM_BN
#define GEMM_BN 128
#endif
#ifndef GEMM_BK
#define GEMM_BK 8
#endif
#ifndef GEMM_TM
#define GEMM_TM 8
#endif
#ifndef GEMM_TN
#define GEMM_TN 8
#endif
#define GEMM_NT ((GEMM_BM / GEMM_TM) * (GEMM_BN / GEMM_TN))
// Two blocks per SM for the 256-thread tiles caps registers at 128 per thread; smaller tiles uncapped.
#define GEMM_MIN_BLOCKS ((GEMM_NT >= 256 && GEMM_TM * GEMM_TN <= 64) ? 2 : 1)

#define TILE_PAD 4  // floats of padding per smem row: keeps float4 alignment and breaks the 2-way
                    // bank conflict of the k-vector loaders' transposing scalar stores.

// ---- plain matrix loaders (gemm) ----------------------------------------------------------------------

// Operand element (mn, k) at p[mn * ld + k]; vectors of 4 consecutive k. `vec`: ld % 4 == 0 and p is
// 16-byte aligned, so an in-range vector starting at a multiple of 4 can be one float4 load.
// CHECKED = false: the caller guarantees vec and a tile wholly inside the matrix (gemm.cu's interior test), so every
// vector is one unconditional float4 load (no bounds tests, no branches in the main loop).
template <int BMN, int BK, int NT, bool CHECKED = true>
struct KVecLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* p;
    int ld, mn_size, k_end, mn0, tid;
    bool vec;
    float4 r[LOADS];

    __device__ __forceinline__ void load(int k0) {
        if constexpr (!CHECKED) {
            static_assert(NT % (BK / 4) == 0, "a thread's vectors must share one k offset");
            const float* q = p + (size_t)(mn0 + tid / (BK / 4)) * ld + k0 + (tid % (BK / 4)) * 4;
#pragma unroll
            for (int i = 0; i < LOADS; ++i)
                r[i] = *reinterpret_cast<const float4*>(q + (size_t)(i * (NT / (BK / 4))) * ld);
        } else {
#pragma unroll
            for (int i = 0; i < LOADS; ++i) {
                int v = tid + i * NT;
                int row = v / (BK / 4);          // mn within the tile
                int kv = (v % (BK / 4)) * 4;     // first k within the tile
                int gm = mn0 + row;
                int gk = k0 + kv;
                if (vec && gm < mn_size && gk + 3 < k_end) {
                    r[i] = *reinterpret_cast<const float4*>(p + (size_t)gm * ld + gk);
                } else {
                    const float* q = p + (size_t)gm * ld;
                    bool ok = gm < mn_size;
                    r[i].x = (ok && gk + 0 < k_end) ? q[gk + 0] : 0.f;
                    r[i].y = (ok && gk + 1 < k_end) ? q[gk + 1] : 0.f;
                    r[i].z = (ok && gk + 2 < k_end) ? q[gk + 2] : 0.f;
                    r[i].w = (ok && gk + 3 < k_end) ? q[gk + 3] : 0.f;
                }
            }
        }
    }
    __device__ __forceinline__ void store(float* S) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int row = v / (BK / 4);
            int kv = (v % (BK / 4)) * 4;
            S[(kv + 0) * LDS + row] = r[i].x;
            S[(kv + 1) * LDS + row] = r[i].y;
            S[(kv + 2) * LDS + row] = r[i].z;
            S[(kv + 3) * LDS + row] = r[i].w;
        }
    }
};

// Operand element (mn, k) at p[k * ld + mn]; vectors of 4 consecutive mn. `vec`: ld % 4 == 0, aligned.
// CHECKED = false: as for KVecLoader.
template <int BMN, int BK, int NT, bool CHECKED = true>
struct MNVecLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* p;
    int ld, mn_size, k_end, mn0, tid;
    bool vec;
    float4 r[LOADS];

    __device__ __forceinline__ void load(int k0) {
        if constexpr (!CHECKED) {
            static_assert(NT % (BMN / 4) == 0, "a thread's vectors must share one mn offset");
            const float* q = p + (size_t)(k0 + tid / (BMN / 4)) * ld + mn0 + (tid % (BMN / 4)) * 4;
#pragma unroll
            for (int i = 0; i < LOADS; ++i)
                r[i] = *reinterpret_cast<const float4*>(q + (size_t)(i * (NT / (BMN / 4))) * ld);
        } else {
#pragma unroll
            for (int i = 0; i < LOADS; ++i) {
                int v = tid + i * NT;
                int kr = v / (BMN / 4);          // k within the tile
                int mv = (v % (BMN / 4)) * 4;    // first mn within the tile
                int gk = k0 + kr;
                int gm = mn0 + mv;
                if (vec && gk < k_end && gm + 3 < mn_size) {
                    r[i] = *reinterpret_cast<const float4*>(p + (size_t)gk * ld + gm);
                } else {
                    const float* q = p + (size_t)gk * ld;
                    bool ok = gk < k_end;
                    r[i].x = (ok && gm + 0 < mn_size) ? q[gm + 0] : 0.f;
                    r[i].y = (ok && gm + 1 < mn_size) ? q[gm + 1] : 0.f;
                    r[i].z = (ok && gm + 2 < mn_size) ? q[gm + 2] : 0.f;
                    r[i].w = (ok && gm + 3 < mn_size) ? q[gm + 3] : 0.f;
                }
            }
        }
    }
    __device__ __forceinline__ void store(float* S) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kr = v / (BMN / 4);
            int mv = (v % (BMN / 4)) * 4;
            *reinterpret_cast<float4*>(S + kr * LDS + mv) = r[i];
        }
    }
};

// std::conditional without <type_traits> (NVRTC has no standard library headers).
template <bool C, class T, class F> struct pick_type { using type = T; };
template <class T, class F> struct pick_type<false, T, F> { using type = F; };
template <bool V> struct bool_constant { static constexpr bool value = V; };

// ---- activation of the fused epilogues ----------------------------------------------------------------
// act: 0 none, 1 relu, 2 sigmoid, 3 tanh (same codes as gemm.py's ACTS).
__device__ __forceinline__ float apply_act(float v, int act) {
    if (act == 1) return v > 0.f ? v : 0.f;
    if (act == 2) return 1.f / (1.f + expf(-v));
    if (act == 3) return tanhf(v);
    return v;
}

// ---- epilogue of plain row-major outputs ---------------------------------------------------------------
// Writes C[m, n..n+3] (row-major, ld = N) with bias / beta / act, or the raw partial sum.
struct GemmEpilogue {
    float* C;
    const float* bias;
    int M, N, beta, act;
    bool vec;       // N % 4 == 0 and C 16-byte aligned: one float4 store per full group
    bool partial;   // split-K partial: raw sums, no bias/beta/act

    __device__ __forceinline__ void store4(int m, int n, const float (&v)[4]) const {
        if (m >= M) return;
        float o[4];
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            o[f] = v[f];
            if (!partial && n + f < N) {
                if (bias) o[f] += bias[n + f];
                if (beta) o[f] += C[(size_t)m * N + n + f];
                o[f] = apply_act(o[f], act);
            }
        }
        if (vec && n + 3 < N) {
            *reinterpret_cast<float4*>(C + (size_t)m * N + n) = make_float4(o[0], o[1], o[2], o[3]);
        } else {
#pragma unroll
                for (int f = 0; f < 4; ++f)
                    if (n + f < N) C[(size_t)m * N + n + f] = o[f];
        }
    }
};

// ---- the main loop -----------------------------------------------------------------------------------
// Computes this block's BM x BN tile over k in [k_begin, k_end) (k_begin a multiple of BK) and hands
// every 4-column group of the accumulators to ep.store4(m, n, v) with global m, n (unchecked: the
// epilogue checks bounds). Needs blockDim.x == (BM/TM)*(BN/TN) and 2*BK*(BM+BN+2*TILE_PAD)*4 bytes of dynamic
// shared memory.
template <int BM, int BN, int BK, int TM, int TN, class LA, class LB, class EP>
__device__ __forceinline__ void gemm_tile(LA& la, LB& lb, EP& ep, int m0, int n0, int k_begin, int k_end) {
    constexpr int WM = 8 * TM;
    constexpr int WN = 4 * TN;
    constexpr int WARPS_M = BM / WM;
    static_assert(BM % WM == 0 && BN % WN == 0 && TM % 4 == 0 && TN % 4 == 0, "bad tile config");
    constexpr int LDA = BM + TILE_PAD;
    constexpr int LDB = BN + TILE_PAD;
    // Dynamic shared memory (the launch passes gemm_smem_bytes = 2*BK*(LDA + LDB)*4, TileConfig.smem_bytes
    // in tiles.py), so tiles above the 48 KB static limit (e.g. 256x128 with BK=16) can be compiled.
    extern __shared__ __align__(16) float gemm_smem[];
    float* const As = gemm_smem;                  // [buffer][k][m]: buffer b at As + b * BK * LDA
    float* const Bs = gemm_smem + 2 * BK * LDA;   // [buffer][k][n]: buffer b at Bs + b * BK * LDB

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int wm = warp % WARPS_M;
    const int wn = warp / WARPS_M;
    const int lm = lane / 4;   // 0..7
    const int ln = lane % 4;   // 0..3
    const int row_base = wm * WM + lm * 4;   // + i*32 + e
    const int col_base = wn * WN + ln * 4;   // + j*16 + f

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    const int ntiles = (k_end - k_begin + BK - 1) / BK;
    if (ntiles > 0) {
        la.load(k_begin);
        lb.load(k_begin);
        la.store(As);
        lb.store(Bs);
    }
    __syncthreads();

    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        const bool more = t + 1 < ntiles;
        if (more) {  // global loads in flight while the FFMAs below run
            la.load(k_begin + (t + 1) * BK);
            lb.load(k_begin + (t + 1) * BK);
        }
        const float* a_s = As + cur * (BK * LDA);
        const float* b_s = Bs + cur * (BK * LDB);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM / 4; ++i) {
                float4 t4 = *reinterpret_cast<const float4*>(a_s + k * LDA + row_base + i * 32);
                a[i * 4 + 0] = t4.x; a[i * 4 + 1] = t4.y; a[i * 4 + 2] = t4.z; a[i * 4 + 3] = t4.w;
            }
#pragma unroll
            for (int j = 0; j < TN / 4; ++j) {
                float4 t4 = *reinterpret_cast<const float4*>(b_s + k * LDB + col_base + j * 16);
                b[j * 4 + 0] = t4.x; b[j * 4 + 1] = t4.y; b[j * 4 + 2] = t4.z; b[j * 4 + 3] = t4.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (more) {
            // NOTE: writing the other buffer is safe: every thread passed the barrier that ended the
            // previous iteration, whose FFMAs were the last readers of that buffer.
            la.store(As + (cur ^ 1) * (BK * LDA));
            lb.store(Bs + (cur ^ 1) * (BK * LDB));
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM / 4; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int j = 0; j < TN / 4; ++j) {
                float v[4] = {acc[i * 4 + e][j * 4 + 0], acc[i * 4 + e][j * 4 + 1],
                              acc[i * 4 + e][j * 4 + 2], acc[i * 4 + e][j * 4 + 3]};
                ep.store4(m0 + row_base + i * 32 + e, n0 + col_base + j * 16, v);
            }
}
