// Naive GEMM: one output per thread from 16x16 shared-memory tiles; the obviously-correct baseline the
// tiled kernels of custom_impl/kernels/gemm.cu were first checked against. Not in the product: the default
// path never chooses it (the product's tests compare against a float64 NumPy reference instead).
// C[M,N] = act(op(A) @ op(B) + bias + beta * C), same arguments and layouts as gemm.cu's header says.
// Compile from the repository root with -I custom_impl/kernels (apply_act comes from gemm_tiles.cuh);
// launch with block (16, 16), grid (ceil(N/16), ceil(M/16)).
#include "../../custom_impl/kernels/gemm_tiles.cuh"  // also found through -I custom_impl/kernels

extern "C" __global__ void gemm_naive(const float* __restrict__ A, const float* __restrict__ B,
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

