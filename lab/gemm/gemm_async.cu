// Experiment: the FP32 GEMM C = op(A) @ op(B) (C (M, N) row-major) with a cp.async multi-stage pipeline
// instead of the product's register-staged double buffering. Each operand is either contiguous along k
// (AS_A_KCONTIG=1: A (M, K); AS_B_KCONTIG=1: B stored (N, K), the dense forward X @ W^T) or along m / n
// (A stored (K, M); B (K, N)): the dense layer's three GEMMs are (1, 1) forward, (1, 0) backward-data and
// (0, 0) backward-weights.
//
// The product's main loop (custom_impl/kernels/gemm_tiles.cuh) loads each k tile into registers and
// stores it transposed (k-major) into shared memory, so that a thread's fragment of one k is TM/4 + TN/4
// float4 reads. cp.async cannot transpose: here a tile stays as it lies in global memory, [mn][k] with
// 16 floats of k per row, and a thread reads 2 k of each of its rows at once (one 8-byte read per row and
// k pair). What that buys: no staging registers and no shared-memory stores in the main loop, and
// STAGES - 1 tiles in flight instead of one.
//
// An operand contiguous along m / n is copied as it lies, [k][mn] rows padded by 4 floats, and read as
// the product reads it: 4 consecutive mn of one k per float4 (8 or 4 distinct addresses a warp, one
// wavefront). The rest of this note is about operands contiguous along k.
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
// Compile-time config: AS_A_KCONTIG, AS_B_KCONTIG (above), AS_BM, AS_BN, AS_TM, AS_TN (thread tile;
// TM % 4 == TN % 8 == 0), AS_STAGES (>= 2), AS_MIN_BLOCKS (blocks per SM the register allocation must allow) or AS_MAXNREG (a register cap).
// Dynamic shared memory: AS_STAGES * 16 * (AS_BM + AS_BN + 4 per operand contiguous along mn) * 4 bytes. One
// block of (BM/TM)*(BN/TN) threads.

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
#ifndef AS_A_KCONTIG
#define AS_A_KCONTIG 1
#endif
#ifndef AS_B_KCONTIG
#define AS_B_KCONTIG 1
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

// One operand's tiles: BMN rows (m or n) x 16 k per stage. A thread reads T of the rows, rbase + g * G + e
// (g < T / 4, e < 4), G = 32 for A (lanes lm own 4 * lm + e) and 16 for B (lanes ln own 4 * ln + f).
template <int BMN, int T, int G, int NT, bool KCONTIG>
struct AsOperand {
    static constexpr int TILE = KCONTIG ? BMN * AS_BK : AS_BK * (BMN + 4);   // floats per stage
    static constexpr int COPIES = BMN * 4 / NT;                             // 16-byte copies per thread
    static_assert(COPIES >= 1 && (BMN * 4) % NT == 0, "copies not divisible among threads");
    const float* g;   // this thread's first copy in global memory (at k0 = 0)
    size_t g_step;    // floats between its copies in global memory
    int dst, dst_step;  // its first copy in the stage, and between its copies
    int rd[2][4];     // read offsets in the stage (k-contiguous: [row parity ^ group bit][k chunk])

    __device__ __forceinline__ void init(const float* p, int ld, int mn0, int tid, int rbase) {
        if constexpr (KCONTIG) {
            static_assert((NT / 4) % 32 == 0, "copy passes must keep the swizzle bits of a row");
            const int row = tid / 4, k = (tid % 4) * 4;
            g = p + (size_t)(mn0 + row) * ld + k;
            g_step = (size_t)(NT / 4) * ld;
            dst = as_swizzle(row, k);
            dst_step = (NT / 4) * AS_BK;
            const int x0 = (rbase >> 2) & 7;
#pragma unroll
            for (int q = 0; q < 2; ++q)
#pragma unroll
                for (int c = 0; c < 4; ++c) rd[q][c] = (rbase >> 1) * 32 + (((q * 4 + c) ^ x0) << 2);
        } else {
            constexpr int PER_ROW = BMN / 4;   // copies per k row
            static_assert(NT % PER_ROW == 0, "a thread's copies must share one mn offset");
            const int k = tid / PER_ROW, mn = (tid % PER_ROW) * 4;
            g = p + (size_t)k * ld + mn0 + mn;
            g_step = (size_t)(NT / PER_ROW) * ld;
            dst = k * (BMN + 4) + mn;
            dst_step = (NT / PER_ROW) * (BMN + 4);
            rd[0][0] = rbase;
        }
        (void)G;
    }
    __device__ __forceinline__ void issue(float* tile, int k0, int ld) const {
        const float* src = g + (KCONTIG ? (size_t)k0 : (size_t)k0 * ld);
#pragma unroll
        for (int i = 0; i < COPIES; ++i) as_copy16(tile + dst + i * dst_step, src + i * g_step);
    }
    // v0 / v1: this thread's T values at k = kk and kk + 1 of the stage
    __device__ __forceinline__ void read(const float* tile, int kk, float (&v0)[T], float (&v1)[T]) const {
        if constexpr (KCONTIG) {
            const int c = kk >> 2, k2 = kk & 3;
#pragma unroll
            for (int gi = 0; gi < T / 4; ++gi)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    // the group's bit 2 of (row / 4) flips the slot's half where G / 4 is odd in it (B: G = 16)
                    const int q = (e & 1) ^ ((gi * (G / 4)) >> 2 & 1);
                    const float2 v = *reinterpret_cast<const float2*>(
                        tile + rd[q][c] + (gi * (G / 2) + (e >> 1)) * 32 + k2);
                    v0[gi * 4 + e] = v.x;
                    v1[gi * 4 + e] = v.y;
                }
        } else {
#pragma unroll
            for (int gi = 0; gi < T / 4; ++gi) {
                const float4 a = *reinterpret_cast<const float4*>(tile + kk * (BMN + 4) + rd[0][0] + gi * G);
                const float4 b = *reinterpret_cast<const float4*>(tile + (kk + 1) * (BMN + 4) + rd[0][0] + gi * G);
                v0[gi * 4 + 0] = a.x; v0[gi * 4 + 1] = a.y; v0[gi * 4 + 2] = a.z; v0[gi * 4 + 3] = a.w;
                v1[gi * 4 + 0] = b.x; v1[gi * 4 + 1] = b.y; v1[gi * 4 + 2] = b.z; v1[gi * 4 + 3] = b.w;
            }
        }
    }
};

#ifdef AS_MAXNREG
#define AS_BOUNDS __maxnreg__(AS_MAXNREG)
#else
#define AS_BOUNDS __launch_bounds__(AS_NT, AS_MIN_BLOCKS)
#endif

extern "C" __global__ void AS_BOUNDS gemm_async(const float* __restrict__ A, const float* __restrict__ B,
                                                float* __restrict__ C, int M, int N, int K) {
    constexpr int BM = AS_BM, BN = AS_BN, BK = AS_BK, TM = AS_TM, TN = AS_TN, NT = AS_NT, S = AS_STAGES;
    constexpr int WM = 8 * TM, WN = 4 * TN, WARPS_M = BM / WM;
    static_assert(BM % WM == 0 && BN % WN == 0 && TM % 4 == 0 && TN % 8 == 0,
                  "bad tile config (the swizzle terms need TN % 8 == 0)");
    using OpA = AsOperand<BM, TM, 32, NT, AS_A_KCONTIG != 0>;
    using OpB = AsOperand<BN, TN, 16, NT, AS_B_KCONTIG != 0>;
    constexpr int STAGE = OpA::TILE + OpB::TILE;
    extern __shared__ __align__(128) float as_smem[];

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = tid / 32, lane = tid % 32;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    const int row_base = wm * WM + (lane / 4) * 4;   // + i * 32 + e
    const int col_base = wn * WN + (lane % 4) * 4;   // + j * 16 + f
    const int lda = AS_A_KCONTIG ? K : M, ldb = AS_B_KCONTIG ? K : N;
    OpA opa;
    OpB opb;
    opa.init(A, lda, m0, tid, row_base);
    opb.init(B, ldb, n0, tid, col_base);

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    const int ntiles = K / BK;
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < ntiles) {
            opa.issue(as_smem + s * STAGE, s * BK, lda);
            opb.issue(as_smem + s * STAGE + OpA::TILE, s * BK, ldb);
        }
        as_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        as_wait<S - 2>();
        __syncthreads();  // tile t landed for every thread; every thread is done with tile t - 1's slot
        if (t + S - 1 < ntiles) {
            float* st = as_smem + ((t + S - 1) % S) * STAGE;
            opa.issue(st, (t + S - 1) * BK, lda);
            opb.issue(st + OpA::TILE, (t + S - 1) * BK, ldb);
        }
        as_commit();
        const float* st = as_smem + (t % S) * STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 2) {
            float a0[TM], a1[TM], b0[TN], b1[TN];
            opa.read(st, kk, a0, a1);
            opb.read(st + OpA::TILE, kk, b0, b1);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a0[i], b0[j], acc[i][j]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a1[i], b1[j], acc[i][j]);
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
