// Split-K helpers shared by gemm.cu, gemm_thin.cu and dense.cu: serial split-K's arrival count and the
// reduce of one output tile by the last block to arrive (the order of gemm_splitk_reduce: z = 0, 1, ...).
#pragma once
#include "gemm_tiles.cuh"  // apply_act

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

// A block's arrival at a fixed-order reduction: publish what this block stored (its partial), count it in
// on counters[slot]; true in the last of the `arrivals` blocks that count on that slot, which then sums
// all of them (threadFenceReduction pattern: fence before the count, fence after seeing it, and L2 loads
// (__ldcg), since other SMs' L1s do not see these writes). Every thread of the block must call it (thread
// (0, 0, 0) counts); the caller resets counters[slot] to 0 after its reduce.
__device__ __forceinline__ bool block_arrive_last(int* counters, int slot, int arrivals) {
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)
        is_last = atomicAdd(counters + slot, 1) == arrivals - 1;
    __syncthreads();
    if (!is_last) return false;
    __threadfence();
    return true;
}

// Serial split-K: the tile's gridDim.z blocks arrive on counters[tile] (block_arrive_last).
__device__ __forceinline__ bool splitk_arrive_last(int* counters, int tile) {
    return block_arrive_last(counters, tile, gridDim.z);
}
