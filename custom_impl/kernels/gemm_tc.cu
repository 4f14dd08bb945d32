// GEMM on tensor cores: C[M,N] = act(op(A) @ op(B) + bias[None, :] + beta * C), op = identity or transpose.
// A is stored (M,K) (or (K,M) when trans_a), B (K,N) (or (N,K) when trans_b), C (M,N), all row-major float32.
// Products in TF32 (TC_PREC 0, mma.m16n8k8) or BF16 (TC_PREC 1, mma.m16n8k16) of the operands rounded in
// registers, FP32 accumulation (gemm_tc_tiles.cuh). act: 0 none, 1 relu, 2 sigmoid, 3 tanh; beta 0 or 1.
//   gemm_tc_{nn,nt,tn,tt}  by transposes; optional split-K over gridDim.z: block z writes its raw sum over
//                          k in [z*k_chunk, (z+1)*k_chunk) to W + z*M*N, and gemm.cu's gemm_splitk_reduce
//                          adds the partials in order (deterministic) with bias, beta and act.
//   round_operand           dst[i] = src[i] rounded to TF32 or BF16 (tc_round_float), kept as float32: the
//                          operands of an FP32 algorithm that runs a tf32 / bf16 convolution (conv/__init__.py)
#include "gemm_tc_tiles.cuh"

// flags bit 0: A vectorisable (16-byte copies), bit 1: B vectorisable, bit 2: float2 stores into C (or into
// W for split-K), bit 3: split-K (block z's raw partial into W + z*M*N).
template <bool TA, bool TB>
__device__ __forceinline__ void gemm_tc_body(const float* A, const float* B, float* C, const float* bias, float* W,
                                             int M, int N, int K, int k_chunk, int beta, int act, int flags) {
    constexpr int BM = TC_BM, BN = TC_BN, BK = TC_BK, NT = TC_NT;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool split = (flags >> 3) & 1;
    // A: trans_a -> stored (K, M), contiguous along m (MNMAJ); else (M, K), contiguous along k (KMAJ).
    // B: trans_b -> stored (N, K), contiguous along k (KMAJ); else (K, N), contiguous along n (MNMAJ).
    constexpr bool A_KMAJ = !TA;
    constexpr bool B_KMAJ = TB;
    TcMatrixLoader<BM, BK, NT, A_KMAJ> la;
    la.p = A; la.ld = TA ? M : K; la.mn_size = M; la.mn0 = m0; la.k_end = k_end; la.tid = threadIdx.x;
    la.vec = flags & 1;
    TcMatrixLoader<BN, BK, NT, B_KMAJ> lb;
    lb.p = B; lb.ld = TB ? K : N; lb.mn_size = N; lb.mn0 = n0; lb.k_end = k_end; lb.tid = threadIdx.x;
    lb.vec = (flags >> 1) & 1;
    TcGemmEpilogue ep;
    ep.C = split ? W + (size_t)blockIdx.z * M * N : C;
    ep.bias = bias; ep.M = M; ep.N = N; ep.beta = beta; ep.act = act;
    ep.vec2 = (flags >> 2) & 1; ep.partial = split;
    tc_gemm_tile<BM, BN, BK, TC_WM, TC_WN, A_KMAJ, B_KMAJ>(la, lb, ep, m0, n0, k_begin, k_end);
}

#define GEMM_TC_ENTRY(name, TA, TB)                                                                     \
    extern "C" __global__ void __launch_bounds__(TC_NT, 1)                                             \
    name(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,              \
         const float* __restrict__ bias, float* __restrict__ W, int M, int N, int K, int k_chunk,       \
         int beta, int act, int flags) {                                                                \
        gemm_tc_body<TA, TB>(A, B, C, bias, W, M, N, K, k_chunk, beta, act, flags);                    \
    }
GEMM_TC_ENTRY(gemm_tc_nn, false, false)
GEMM_TC_ENTRY(gemm_tc_nt, false, true)
GEMM_TC_ENTRY(gemm_tc_tn, true, false)
GEMM_TC_ENTRY(gemm_tc_tt, true, true)

// dst[i] = tc_round_float(src[i], bf16) for i < n; vec: both pointers 16-byte aligned (float4 body, then the
// n % 4 tail). A grid-stride loop: any grid covers n.
extern "C" __global__ void __launch_bounds__(256)
round_operand(const float* __restrict__ src, float* __restrict__ dst, long long n, int bf16, int vec) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        const long long n4 = n >> 2;
        const float4* s4 = reinterpret_cast<const float4*>(src);
        float4* d4 = reinterpret_cast<float4*>(dst);
        for (long long j = i; j < n4; j += stride) {
            float4 v = s4[j];
            v.x = tc_round_float(v.x, bf16);
            v.y = tc_round_float(v.y, bf16);
            v.z = tc_round_float(v.z, bf16);
            v.w = tc_round_float(v.w, bf16);
            d4[j] = v;
        }
        i += n4 << 2;   // the tail (n % 4 < 4 elements): threads 0..n%4-1 of the grid
        if (i < n) dst[i] = tc_round_float(src[i], bf16);
        return;
    }
    for (; i < n; i += stride) dst[i] = tc_round_float(src[i], bf16);
}
