// Experiment: the FP32 GEMM C = A @ B^T (A (M, K), B (N, K), both contiguous along k: the dense forward
// layout) with a cp.async multi-stage pipeline instead of the product's register-staged double buffering.
//
// The product's main loop (custom_impl/kernels/gemm_tiles.cuh) loads each k tile into registers and
// stores it transposed (k-major) into shared memory, so that a thread's fragment of one k is TM/4 + TN/4
// float4 reads. cp.async cannot transpose: here a tile stays as it lies in global memory, [mn][k] with
// 16 floats of k per row, and a thread reads 2 k of each of its rows at once (one 8-byte read per row and
// k pair). What that buys: no staging registers and no shared-memory stores in the main loop, and
// STAGES - 1 tiles in flight instead of one.
//
// Bank conflicts. A warp's fragment read touches 8 rows (A: lanes lm = 0..7 own rows 4*lm + e) or 4 rows
// (B: lanes ln = 0..3) at the same k. Two 16-float rows share a 128-byte line; the line's eight 16-byte
// slots (row parity, k chunk) are permuted by bits 2..4 of the row:
//     element (r, k) at  (r / 2) * 32 + (((r % 2) * 4 + k / 4) ^ ((r / 4) % 8)) * 4 + k % 4
// so the 8 rows of an A read fall into 8 distinct 4-bank groups and the 4 rows of a B read into 4: every
// read is one wavefront. The cp.async writes of a warp fill whole lines (8 rows x 4 chunks). A thread's
// (r / 4) % 8 is lm for all its A rows and ln + 4 * (j % 2) for its B columns, so every read address is
// one of 8 per-thread offsets (row parity, k chunk) plus a compile-time constant.
//
// Interior tiles only: M % BM == N % BN == K % 16 == 0 and 16-byte aligned operands (the bench checks).
// Compile-time config: AS_BM, AS_BN, AS_TM, AS_TN (thread tile; TM % 4 == TN % 8 == 0), AS_STAGES (>= 2),
// AS_MIN_BLOCKS (blocks per SM the register allocation must allow) or AS_MAXNREG (a register cap).
// Dynamic shared memory: AS_STAGES * 16 * (AS_BM + AS_BN) * 4 bytes. One block of (BM/TM)*(BN/TN) threads.

#ifndef AS_BM
#define AS_BM 256
#endif
#ifndef AS_BN
#define AS_BN 128
#endif
#ifndef AS_TM
#define AS_TM 16
#endif
#ifndef AS_TN
#define AS_TN 8
#endif
#ifndef AS_STAGES
#define AS_STAGES 3
#endif
#ifndef AS_MIN_BLOCKS
#define AS_MIN_BLOCKS 1
#endif
#define AS_BK 16
#define AS_NT ((AS_BM / AS_TM) * (AS_BN / AS_TN))

__device__ __forceinline__ int as_swizzle(int r, int k) {
    return (r >> 1) * 32 + ((((r & 1) * 4 + (k >> 2)) ^ ((r >> 2) & 7)) << 2) + (k & 3);
}

__device__ __forceinline__ void as_copy16(float* dst, const float* src) {
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
}

__device__ __forceinline__ void as_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void as_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

#ifdef AS_MAXNREG
#define AS_BOUNDS __maxnreg__(AS_MAXNREG)
#else
#define AS_BOUNDS __launch_bounds__(AS_NT, AS_MIN_BLOCKS)
#endif

extern "C" __global__ void AS_BOUNDS gemm_async_nt(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    constexpr int BM = AS_BM, BN = AS_BN, BK = AS_BK, TM = AS_TM, TN = AS_TN, NT = AS_NT, S = AS_STAGES;
    constexpr int WM = 8 * TM, WN = 4 * TN, WARPS_M = BM / WM;
    static_assert(BM % WM == 0 && BN % WN == 0 && TM % 4 == 0 && TN % 8 == 0, "bad tile config (the B swizzle terms need TN % 8 == 0)");
    static_assert((BM * 4) % NT == 0 && (BN * 4) % NT == 0 && NT % 4 == 0, "chunks not divisible among threads");
    constexpr int A_TILE = BM * BK, B_TILE = BN * BK, STAGE = A_TILE + B_TILE;
    constexpr int ROWS_PER_PASS = NT / 4;  // rows one pass of the block's 16-byte copies covers
    static_assert(ROWS_PER_PASS % 32 == 0, "copy passes must keep the swizzle bits of a row");
    extern __shared__ __align__(128) float as_smem[];

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    // copies: chunk v = tid + i * NT is row v / 4, k chunk v % 4 of the tile
    const int crow = tid / 4, ck = (tid % 4) * 4;
    const int cdst = as_swizzle(crow, ck);   // + i * ROWS_PER_PASS * BK keeps the swizzle (ROWS_PER_PASS % 32 == 0)
    const float* ga = A + (size_t)(m0 + crow) * K + ck;
    const float* gb = B + (size_t)(n0 + crow) * K + ck;

    auto issue = [&](int t) {
        float* sa = as_smem + (t % S) * STAGE;
        float* sb = sa + A_TILE;
        const int k0 = t * BK;
#pragma unroll
        for (int i = 0; i < BM * 4 / NT; ++i)
            as_copy16(sa + cdst + i * ROWS_PER_PASS * BK, ga + (size_t)i * ROWS_PER_PASS * K + k0);
#pragma unroll
        for (int i = 0; i < BN * 4 / NT; ++i)
            as_copy16(sb + cdst + i * ROWS_PER_PASS * BK, gb + (size_t)i * ROWS_PER_PASS * K + k0);
    };

    const int warp = tid / 32, lane = tid % 32;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    const int lm = lane / 4, ln = lane % 4;
    const int row_base = wm * WM + lm * 4;   // + i * 32 + e
    const int col_base = wn * WN + ln * 4;   // + j * 16 + f
    // per-thread read offsets: [row parity][k chunk] -> float offset of the slot within a line
    int a_off[2][4], b_off[2][4];
#pragma unroll
    for (int p = 0; p < 2; ++p)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            a_off[p][c] = (row_base >> 1) * 32 + (((p * 4 + c) ^ lm) << 2);
            b_off[p][c] = A_TILE + (col_base >> 1) * 32 + (((p * 4 + c) ^ ln) << 2);
        }

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    const int ntiles = K / BK;
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < ntiles) issue(s);
        as_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        as_wait<S - 2>();
        __syncthreads();  // tile t landed for every thread; every thread is done with tile t - 1's slot
        if (t + S - 1 < ntiles) issue(t + S - 1);
        as_commit();
        const float* st = as_smem + (t % S) * STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 2) {
            const int c = kk >> 2, k2 = kk & 3;
            float2 a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM / 4; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    a[i * 4 + e] = *reinterpret_cast<const float2*>(
                        st + a_off[e & 1][c] + (i * 16 + (e >> 1)) * 32 + k2);
#pragma unroll
            for (int j = 0; j < TN / 4; ++j)
#pragma unroll
                for (int f = 0; f < 4; ++f)
                    b[j * 4 + f] = *reinterpret_cast<const float2*>(
                        st + b_off[(f ^ j) & 1][c] + (j * 8 + (f >> 1)) * 32 + k2);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i].x, b[j].x, acc[i][j]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i].y, b[j].y, acc[i][j]);
        }
    }
    as_wait<0>();

#pragma unroll
    for (int i = 0; i < TM / 4; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int j = 0; j < TN / 4; ++j) {
                const int m = m0 + row_base + i * 32 + e, n = n0 + col_base + j * 16;
                *reinterpret_cast<float4*>(C + (size_t)m * N + n) = make_float4(
                    acc[i * 4 + e][j * 4 + 0], acc[i * 4 + e][j * 4 + 1], acc[i * 4 + e][j * 4 + 2],
                    acc[i * 4 + e][j * 4 + 3]);
            }
}
