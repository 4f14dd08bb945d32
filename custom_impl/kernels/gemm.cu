// GEMM family: C[M,N] = act(op(A) @ op(B) + bias[None, :] + beta * C), op = identity or transpose.
// A is stored (M,K) (or (K,M) when trans_a), B is stored (K,N) (or (N,K) when trans_b), C is (M,N),
// all row-major float32. act: 0 none, 1 relu, 2 sigmoid, 3 tanh. beta: 0 (C is not read) or 1.
//   gemm_v1            one output per thread, 16x16 shared tiles; the obviously-correct baseline.
//   gemm_v2_{nn,nt,tn,tt}   register-blocked warp-tiled GEMM from gemm_tiles.cuh (tile config from the
//                      GEMM_* defines), optional split-K: with `partial`, block z writes its raw sum over
//                      k in [z*k_chunk, (z+1)*k_chunk) to C + z*M*N, and gemm_splitk_reduce finishes.
//   gemm_splitk_reduce C = act(sum_z W[z] + bias + beta*C), summing z in order (deterministic).
#include "gemm_tiles.cuh"


extern "C" __global__ void gemm_v1(const float* __restrict__ A, const float* __restrict__ B,
                                   float* __restrict__ C, const float* __restrict__ bias,
                                   int M, int N, int K, int trans_a, int trans_b, int beta, int act) {
    __shared__ float As[16][17];  // [m][k], +1 column against bank conflicts
    __shared__ float Bs[16][17];  // [k][n]
    const int tx = threadIdx.x;   // n within the tile
    const int ty = threadIdx.y;   // m within the tile
    const int m = blockIdx.y * 16 + ty;
    const int n = blockIdx.x * 16 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        // A tile element (ty, tx) = op(A)[blockIdx.y*16 + ty, k0 + tx]
        int am = blockIdx.y * 16 + ty;
        int ak = k0 + tx;
        float av = 0.f;
        if (am < M && ak < K) av = trans_a ? A[(size_t)ak * M + am] : A[(size_t)am * K + ak];
        As[ty][tx] = av;
        // B tile element (ty, tx) = op(B)[k0 + ty, blockIdx.x*16 + tx]
        int bk = k0 + ty;
        int bn = blockIdx.x * 16 + tx;
        float bv = 0.f;
        if (bk < K && bn < N) bv = trans_b ? B[(size_t)bn * K + bk] : B[(size_t)bk * N + bn];
        Bs[ty][tx] = bv;
        __syncthreads();
        for (int k = 0; k < 16; ++k) acc = fmaf(As[ty][k], Bs[k][tx], acc);
        __syncthreads();  // before the next tile overwrites As/Bs
    }
    if (m < M && n < N) {
        float v = acc;
        if (bias) v += bias[n];
        if (beta) v += C[(size_t)m * N + n];
        C[(size_t)m * N + n] = apply_act(v, act);
    }
}

// flags bit 0: A vectorisable, bit 1: B vectorisable, bit 2: C vectorisable, bit 3: partial (split-K).
template <bool TA, bool TB>
__device__ __forceinline__ void gemm_v2_body(const float* A, const float* B, float* C, const float* bias,
                                             int M, int N, int K, int k_chunk, int beta, int act,
                                             int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool partial = (flags >> 3) & 1;
    // A: trans_a -> stored (K, M): mn-vector; else stored (M, K): k-vector.
    using LA = typename pick_type<TA, MNVecLoader<BM, BK, NT>, KVecLoader<BM, BK, NT>>::type;
    // B: trans_b -> stored (N, K): k-vector; else stored (K, N): mn-vector.
    using LB = typename pick_type<TB, KVecLoader<BN, BK, NT>, MNVecLoader<BN, BK, NT>>::type;
    LA la;
    la.p = A; la.ld = TA ? M : K; la.mn_size = M; la.k_end = k_end; la.mn0 = m0; la.tid = tid;
    la.vec = flags & 1;
    LB lb;
    lb.p = B; lb.ld = TB ? K : N; lb.mn_size = N; lb.k_end = k_end; lb.mn0 = n0; lb.tid = tid;
    lb.vec = (flags >> 1) & 1;
    GemmEpilogue ep;
    ep.C = partial ? C + (size_t)blockIdx.z * M * N : C;
    ep.bias = bias; ep.M = M; ep.N = N; ep.beta = beta; ep.act = act;
    ep.vec = (flags >> 2) & 1; ep.partial = partial;
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}

#define GEMM_V2_ENTRY(name, TA, TB)                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)                              \
    name(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,               \
         const float* __restrict__ bias, int M, int N, int K, int k_chunk, int beta, int act, int flags) { \
        gemm_v2_body<TA, TB>(A, B, C, bias, M, N, K, k_chunk, beta, act, flags);                         \
    }
GEMM_V2_ENTRY(gemm_v2_nn, false, false)
GEMM_V2_ENTRY(gemm_v2_nt, false, true)
GEMM_V2_ENTRY(gemm_v2_tn, true, false)
GEMM_V2_ENTRY(gemm_v2_tt, true, true)

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
