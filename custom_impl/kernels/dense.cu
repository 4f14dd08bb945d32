// Dense-layer kernels (the matrix products are gemm.cu's):
//   dense_bias_grad         db[u] = sum_n dy[n, u], deterministic (a fixed partition and order, no atomics).
//                           Block (32, 32) = 32 columns x 32 row-threads; block (c, s) sums the rows
//                           [s*nchunk, (s+1)*nchunk) of its 32 columns: each row-thread a strided set of
//                           rows in order, then a fixed-order tree over the 32 row-threads. It writes
//                           out[s*U + u] (= db[u] itself when gridDim.y == 1). With `counters` (one zeroed
//                           int per column block, left zeroed) the last block of a column block to finish
//                           also sums its columns' partials into db (as dense_bias_grad_finish: the same
//                           bits), so no second launch is needed.
//   dense_bias_grad_finish  db[u] = the partials out[s*U + u] over s, in the same order.
// Splitting the rows keeps the SMs busy when U is small: a 29-column layer at 22,400 rows was one block.
#include "gemm_splitk.cuh"  // block_arrive_last

// Row-thread ty's share of the partials p[s*U + u], s = ty, ty + 32, ... in order, then the tree over the 32
// row-threads in `part`; the column's sum lands in part[0][tx]. Shared by the serial finish and the finish
// kernel, so both give the same bits. `cg`: read through L2 only (partials other blocks just wrote).
template <bool CG>
__device__ __forceinline__ void finish_columns(const float* __restrict__ p, float (*part)[33], int u, int U, int S) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    float acc = 0.f;
    if (u < U) {
#pragma unroll 4
        for (int s = ty; s < S; s += 32) acc += CG ? __ldcg(p + (size_t)s * U + u) : p[(size_t)s * U + u];
    }
    part[ty][tx] = acc;
    __syncthreads();
    for (int half = 16; half > 0; half >>= 1) {
        if (ty < half) part[ty][tx] += part[ty + half][tx];
        __syncthreads();
    }
}

extern "C" __global__ void dense_bias_grad(const float* __restrict__ dy, float* __restrict__ out,
                                           float* __restrict__ db, int* __restrict__ counters,
                                           int N, int U, int nchunk) {
    __shared__ float part[32][33];  // [row-thread][column], +1 against bank conflicts
    const int tx = threadIdx.x;     // column within the block
    const int ty = threadIdx.y;     // row phase
    const int u = blockIdx.x * 32 + tx;
    const int n0 = blockIdx.y * nchunk;
    const int n1 = min(N, n0 + nchunk);
    float acc = 0.f;
    // NOTE: unrolled so that 8 loads are in flight per thread; the adds stay in row order. Rolled, each add
    // waits on its load before the next load issues.
    if (u < U) {
#pragma unroll 8
        for (int n = n0 + ty; n < n1; n += 32) acc += dy[(size_t)n * U + u];
    }
    part[ty][tx] = acc;
    __syncthreads();
    for (int half = 16; half > 0; half >>= 1) {
        if (ty < half) part[ty][tx] += part[ty + half][tx];
        __syncthreads();
    }
    if (ty == 0 && u < U) out[(size_t)blockIdx.y * U + u] = part[0][tx];
    if (counters == nullptr || gridDim.y == 1) return;
    // Serial finish: the last of the column block's gridDim.y blocks to arrive reads the others' partials
    // from L2 (gemm_splitk.cuh)
    if (!block_arrive_last(counters, blockIdx.x, gridDim.y)) return;
    finish_columns<true>(out, part, u, U, gridDim.y);
    if (ty == 0 && u < U) db[u] = part[0][tx];
    if (tx == 0 && ty == 0) counters[blockIdx.x] = 0;   // ready for the next launch (stream order)
}

extern "C" __global__ void dense_bias_grad_finish(const float* __restrict__ p, float* __restrict__ db, int U, int S) {
    __shared__ float part[32][33];
    const int u = blockIdx.x * 32 + threadIdx.x;
    finish_columns<false>(p, part, u, U, S);
    if (threadIdx.y == 0 && u < U) db[u] = part[0][threadIdx.x];
}
