// Dense-layer helpers beside the GEMMs of gemm.cu: the bias gradient.
//   dense_bias_grad  db[u] = sum_n dy[n, u]; block (32, 32): 32 columns per block, 32 row-threads per
//                    column each summing a strided set of rows in order, then a fixed-order tree over the
//                    32 partial sums (deterministic: no atomics).
extern "C" __global__ void dense_bias_grad(const float* __restrict__ dy, float* __restrict__ db, int N, int U) {
    __shared__ float part[32][33];  // [row-thread][column], +1 against bank conflicts
    const int tx = threadIdx.x;     // column within the block
    const int ty = threadIdx.y;     // row phase
    const int u = blockIdx.x * 32 + tx;
    float acc = 0.f;
    // NOTE: unrolled so that 8 loads are in flight per thread; the adds stay in row order (the same sum). Rolled,
    // each add waits on its load before the next load issues: a 29-column layer at 22,400 rows is one block
    // whose threads each wait on 700 loads in turn.
    if (u < U) {
#pragma unroll 8
        for (int n = ty; n < N; n += 32) acc += dy[(size_t)n * U + u];
    }
    part[ty][tx] = acc;
    __syncthreads();
    for (int half = 16; half > 0; half >>= 1) {
        if (ty < half) part[ty][tx] += part[ty + half][tx];
        __syncthreads();
    }
    if (ty == 0 && u < U) db[u] = part[0][tx];
}
