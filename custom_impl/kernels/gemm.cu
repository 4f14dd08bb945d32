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

// GEMM_INTERIOR=0 compiles only the bounds-checked loaders, for measuring what the interior fast path
// gains (lab/gemm). Tiles held to 128 registers for two blocks per SM
// (GEMM_MIN_BLOCKS 2) keep the checked loaders only: with a second copy of the main loop ptxas spilled there
// (48-168 bytes in the nn/tn/tt kernels of the 128x128 tiles).
#ifndef GEMM_INTERIOR
#define GEMM_INTERIOR (GEMM_MIN_BLOCKS == 1)
#endif


// Serial split-K's reduce of one BM x BN tile (the last block of the tile to finish runs it):
// C[m, n] = act(sum over z = 0, 1, ... of W[z][m, n] + bias[n] + beta * C[m, n]), the order of
// gemm_splitk_reduce. The tile's V-wide vectors (V = 4: float4, needs N % 4 == 0 and W, C 16-byte aligned;
// V = 1: scalars) are dealt E at a time to each thread, and the loads of two z for those E are issued
// before any is used: L2 round trips, not bandwidth, bound this tail (a dependent load per element would
// cost ~0.5 us each).
template <int V>
__device__ __forceinline__ void ldcg_vec(const float* p, float (&v)[V]) {  // V floats from L2 (float4 or 1)
    if constexpr (V == 4) {
        const float4 t = __ldcg(reinterpret_cast<const float4*>(p));
        v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
    } else {
        v[0] = __ldcg(p);
    }
}

template <int V, int BM, int BN, int NT>
__device__ __forceinline__ void splitk_tile_reduce(const float* W, float* C, const float* bias, int M, int N,
                                                   int m0, int n0, int splits, int beta, int act) {
    constexpr int E = V == 4 ? 2 : 4;            // vectors per thread per round
    constexpr int TOTAL = BM * BN / V;           // vectors in the tile
    const size_t MN = (size_t)M * N;
    for (int base = 0; base < TOTAL; base += E * NT) {
        size_t idx[E];
        bool ok[E];
        float s[E][V];
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int v = base + e * NT + threadIdx.x;
            const int m = m0 + v / (BN / V);
            const int n = n0 + (v % (BN / V)) * V;
            ok[e] = v < TOTAL && m < M && n < N;   // V == 4: N % 4 == 0, so n < N covers n + 3
            idx[e] = ok[e] ? (size_t)m * N + n : 0;
#pragma unroll
            for (int f = 0; f < V; ++f) s[e][f] = 0.f;
        }
        int z = 0;
        for (; z + 1 < splits; z += 2) {
            float p0[E][V], p1[E][V];
#pragma unroll
            for (int e = 0; e < E; ++e) {
                if (!ok[e]) continue;
                ldcg_vec<V>(W + z * MN + idx[e], p0[e]);
                ldcg_vec<V>(W + (z + 1) * MN + idx[e], p1[e]);
            }
#pragma unroll
            for (int e = 0; e < E; ++e)
#pragma unroll
                for (int f = 0; f < V; ++f) {
                    if (!ok[e]) continue;
                    s[e][f] += p0[e][f];
                    s[e][f] += p1[e][f];
                }
        }
        if (z < splits) {
#pragma unroll
            for (int e = 0; e < E; ++e) {
                if (!ok[e]) continue;
                float p[V];
                ldcg_vec<V>(W + z * MN + idx[e], p);
#pragma unroll
                for (int f = 0; f < V; ++f) s[e][f] += p[f];
            }
        }
#pragma unroll
        for (int e = 0; e < E; ++e) {
            if (!ok[e]) continue;
            const int n = (int)(idx[e] % N);
            float o[V];
#pragma unroll
            for (int f = 0; f < V; ++f) {
                o[f] = s[e][f];
                if (bias) o[f] += bias[n + f];
                if (beta) o[f] += C[idx[e] + f];
                o[f] = apply_act(o[f], act);
            }
            if constexpr (V == 4) {
                *reinterpret_cast<float4*>(C + idx[e]) = make_float4(o[0], o[1], o[2], o[3]);
            } else {
                C[idx[e]] = o[0];
            }
        }
    }
}

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

    // Serial split-K: publish this block's partial, count it in; the last of the tile's gridDim.z blocks
    // sums all of them (threadFenceReduction pattern: fence before the count, fence after seeing it, and
    // L2 loads (__ldcg), since other SMs' L1s do not see these writes).
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (tid == 0) is_last = atomicAdd(counters + tile, 1) == (int)gridDim.z - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
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
