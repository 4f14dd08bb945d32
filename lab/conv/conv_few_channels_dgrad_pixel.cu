// conv2d backward-data for few input channels (C <= 8): direct, one thread per pixel of one stride phase
// holding all C outputs, W in shared memory (K*C*R*S floats <= 48 KB). Superseded by the product's
// conv_few_channels_dgrad (4 pixels x C channels per thread, dy values reused across taps in registers);
// the product's "auto" path never chose it. Launch: grid (ceil(N*ceil(H/sh)*ceil(W/sw) / 256), 1, sh*sw),
// 256 threads, 4*K*C*R*S bytes of dynamic shared memory.
// Lab kernel, not part of the product (custom_impl/ never loads it). It is compiled against the product's
// kernels: it includes custom_impl/kernels/conv_implicit_gemm.cu (and through it gemm_tiles.cuh) for
// ConvDims, ConvPhase and the GEMM tile machinery, so build it with -I custom_impl/kernels and the GEMM_*
// tile defines, e.g.
//   nvcc -arch=sm_90 -cubin -I custom_impl/kernels -DKERNEL_HEADERS_DIGEST=x \
//        -o /tmp/x.cubin lab/conv/conv_few_channels_dgrad_pixel.cu
#include "../../custom_impl/kernels/conv_implicit_gemm.cu"  // also found through -I custom_impl/kernels

// The implicit GEMMs have M = C, so with C = 1 or 3 almost all of their 32+-row tiles is padding.
// Here one thread owns one pixel (n, h, w) of one phase (grid.z, as conv_implicit_gemm_dgrad) and all C of
// its channels in registers; W sits in shared memory (dynamic, K*C*R*S floats). Every thread of a block has
// the same tap set, so the loops do not diverge and each W read is a broadcast; dy reads are coalesced along w'.
#define SMALLC_MAX 8
extern "C" __global__ void __launch_bounds__(256)
conv_few_channels_dgrad_pixel(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
                             int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                             int sh, int sw, int ph, int pw) {
    extern __shared__ float w_s[];  // (K, C, R, S)
    const int wsize = K * C * R * S;
    for (int i = threadIdx.x; i < wsize; i += blockDim.x) w_s[i] = Wt[i];
    __syncthreads();

    const ConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const ConvPhase f = conv_phase(d, blockIdx.z);
    const int HWh = f.Hh * f.Wh;
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= (long long)N * HWh) return;  // no barrier below
    const int n = j / HWh;
    const int hw = j - (long long)n * HWh;
    const int hh = hw / f.Wh;
    const int ww = hw - hh * f.Wh;
    const int hq = (f.h0 + ph - f.th) / sh + hh;  // p = hq - r'
    const int wq = (f.w0 + pw - f.tw) / sw + ww;  // q = wq - s'
    const int RS = R * S;

    float acc[SMALLC_MAX];
#pragma unroll
    for (int c = 0; c < SMALLC_MAX; ++c) acc[c] = 0.f;
    for (int k = 0; k < K; ++k) {
        const float* dyk = dy + ((long long)n * K + k) * P * Q;
        const float* wk = w_s + k * C * RS;
        for (int rp = 0; rp < f.Rt; ++rp) {
            const int p = hq - rp;
            if ((unsigned)p >= (unsigned)P) continue;
            const int r = f.th + rp * sh;
            for (int sp = 0; sp < f.St; ++sp) {
                const int q = wq - sp;
                if ((unsigned)q >= (unsigned)Q) continue;
                const int tap = r * S + f.tw + sp * sw;
                const float g = dyk[p * Q + q];
#pragma unroll
                for (int c = 0; c < SMALLC_MAX; ++c)
                    if (c < C) acc[c] = fmaf(wk[c * RS + tap], g, acc[c]);
            }
        }
    }
    const int h = f.h0 + hh * sh;
    const int w = f.w0 + ww * sw;
#pragma unroll
    for (int c = 0; c < SMALLC_MAX; ++c)
        if (c < C) dx[(((long long)n * C + c) * H + h) * W + w] = acc[c];
}
