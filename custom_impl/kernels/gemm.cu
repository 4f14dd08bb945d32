// GEMM family: C[M,N] = act(op(A) @ op(B) + bias[None, :] + beta * C), op = identity or transpose.
// A is stored (M,K) (or (K,M) when trans_a), B is stored (K,N) (or (N,K) when trans_b), C is (M,N),
// all row-major float32. act: 0 none, 1 relu, 2 sigmoid, 3 tanh. beta: 0 (C is not read) or 1.
//   gemm_{nn,nt,tn,tt}  register-blocked warp-tiled GEMM from gemm_tiles.cuh (tile config from the
//                      GEMM_* defines), optional split-K over gridDim.z: block z writes its raw sum over
//                      k in [z*k_chunk, (z+1)*k_chunk) to W + z*M*N; then either gemm_splitk_reduce is
//                      launched, or (serial split-K, flag bit 4) the last block of a tile to finish (a
//                      per-tile arrival counter) sums that tile's partials in the order z = 0, 1, ... and
//                      writes C: one launch, the same sums as gemm_splitk_reduce. Blocks whose tile lies
//                      inside aligned operands (and whose k range is whole k tiles) run the loaders
//                      without bounds tests; edge blocks the checked ones (same sums, same order).
//   gemm_splitk_reduce C = act(sum_z W[z] + bias + beta*C), summing z in order (deterministic); also used
//                      by the conv families' split-K weight gradients.
#include "gemm_tiles.cuh"
#include "gemm_splitk.cuh"  // splitk_tile_reduce, splitk_arrive_last

// GEMM_INTERIOR=0 compiles only the bounds-checked loaders, for measuring what the interior fast path
// gains (lab/gemm). Tiles held to 128 registers for two blocks per SM
// (GEMM_MIN_BLOCKS 2) keep the checked loaders only: with a second copy of the main loop ptxas spilled there
// (48-168 bytes in the nn/tn/tt kernels of the 128x128 tiles).
#ifndef GEMM_INTERIOR
#define GEMM_INTERIOR (GEMM_MIN_BLOCKS == 1)
#endif


// flags bit 0: A vectorisable, bit 1: B vectorisable, bit 2: the tile stores may be float4 (into C, or into
// W for split-K), bit 3: split-K (gridDim.z > 1: block z's raw partial into W + z*M*N), bit 4: serial
// split-K (the last block of each tile sums the partials and writes C; `counters` holds one zeroed int per
// tile and is left zeroed; without bit 4 gemm_splitk_reduce is launched after), bit 5: the serial reduce
// may use float4 (N % 4 == 0, W and C 16-byte aligned).
template <bool TA, bool TB>
__device__ __forceinline__ void gemm_body(const float* A, const float* B, float* C, const float* bias,
                                             float* W, int* counters, int M, int N, int K, int k_chunk,
                                             int beta, int act, int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool split = (flags >> 3) & 1;
    GemmEpilogue ep;
    ep.C = split ? W + (size_t)blockIdx.z * M * N : C;
    ep.bias = bias; ep.M = M; ep.N = N; ep.beta = beta; ep.act = act;
    ep.vec = (flags >> 2) & 1; ep.partial = split;
    // Interior tiles of vectorisable operands take loaders without bounds tests (CHECKED = false): the
    // tile lies inside both matrices and its k range is whole k tiles.
    auto run = [&](auto checked) {
        constexpr bool CH = decltype(checked)::value;
        // A: trans_a -> stored (K, M): mn-vector; else stored (M, K): k-vector.
        using LA = typename pick_type<TA, MNVecLoader<BM, BK, NT, CH>, KVecLoader<BM, BK, NT, CH>>::type;
        // B: trans_b -> stored (N, K): k-vector; else stored (K, N): mn-vector.
        using LB = typename pick_type<TB, KVecLoader<BN, BK, NT, CH>, MNVecLoader<BN, BK, NT, CH>>::type;
        LA la;
        la.p = A; la.ld = TA ? M : K; la.mn_size = M; la.k_end = k_end; la.mn0 = m0; la.tid = tid;
        la.vec = flags & 1;
        LB lb;
        lb.p = B; lb.ld = TB ? K : N; lb.mn_size = N; lb.k_end = k_end; lb.mn0 = n0; lb.tid = tid;
        lb.vec = (flags >> 1) & 1;
        gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
    };
#if GEMM_INTERIOR
    const bool interior = (flags & 1) && ((flags >> 1) & 1) && m0 + BM <= M && n0 + BN <= N &&
                          k_end > k_begin && (k_end - k_begin) % BK == 0;
    if (interior)
        run(bool_constant<false>{});
    else
#endif
        run(bool_constant<true>{});
    if (!split || !((flags >> 4) & 1)) return;

    // Serial split-K: the last block of the tile to arrive sums its partials (gemm_splitk.cuh).
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (!splitk_arrive_last(counters, tile)) return;
    if ((flags >> 5) & 1)
        splitk_tile_reduce<4, BM, BN, NT>(W, C, bias, M, N, m0, n0, gridDim.z, beta, act);
    else
        splitk_tile_reduce<1, BM, BN, NT>(W, C, bias, M, N, m0, n0, gridDim.z, beta, act);
    if (tid == 0) counters[tile] = 0;  // ready for the next launch (stream order: nothing else reads it now)
}

#define GEMM_ENTRY(name, TA, TB)                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)                              \
    name(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,               \
         const float* __restrict__ bias, float* __restrict__ W, int* __restrict__ counters, int M, int N, \
         int K, int k_chunk, int beta, int act, int flags) {                                            \
        gemm_body<TA, TB>(A, B, C, bias, W, counters, M, N, K, k_chunk, beta, act, flags);            \
    }
GEMM_ENTRY(gemm_nn, false, false)
GEMM_ENTRY(gemm_nt, false, true)
GEMM_ENTRY(gemm_tn, true, false)
GEMM_ENTRY(gemm_tt, true, true)

// W: (splits, M, N) partial sums; one thread per output element.
extern "C" __global__ void gemm_splitk_reduce(const float* __restrict__ W, float* __restrict__ C,
                                              const float* __restrict__ bias, int M, int N, int splits,
                                              int beta, int act) {
    const size_t MN = (size_t)M * N;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < MN;
         idx += (size_t)gridDim.x * blockDim.x) {
        float v = 0.f;
        for (int z = 0; z < splits; ++z) v += W[z * MN + idx];
        if (bias) v += bias[idx % N];
        if (beta) v += C[idx];
        C[idx] = apply_act(v, act);
    }
}
