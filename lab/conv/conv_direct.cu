// conv2d by direct loops, one output element per thread, grid-stride (launch with 256 threads and at most
// 132*32 blocks): forward, backward-data and backward-weights. The obviously-correct baseline the implicit
// GEMMs were first checked against; the tests now compare with a float64 NumPy reference instead, and the
// product's "auto" path never chose it.
// Lab kernel, not part of the product (custom_impl/ never loads it). It is compiled against the product's
// kernels: it includes custom_impl/kernels/conv_implicit_gemm.cu (and through it gemm_tiles.cuh) for
// ConvDims, ConvPhase and the GEMM tile machinery, so build it with -I custom_impl/kernels and the GEMM_*
// tile defines, e.g.
//   nvcc -arch=sm_90 -cubin -I custom_impl/kernels -DKERNEL_HEADERS_DIGEST=x \
//        -o /tmp/x.cubin lab/conv/conv_direct.cu
#include "../../custom_impl/kernels/conv_implicit_gemm.cu"  // also found through -I custom_impl/kernels

extern "C" __global__ void conv_direct_fwd(const float* __restrict__ x, const float* __restrict__ Wt,
                                           const float* __restrict__ b, float* __restrict__ y,
                                           int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                                           int sh, int sw, int ph, int pw) {
    const long long total = (long long)N * K * P * Q;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int q = idx % Q;
        int p = (idx / Q) % P;
        int k = (idx / ((long long)P * Q)) % K;
        int n = idx / ((long long)K * P * Q);
        float acc = b ? b[k] : 0.f;
        for (int c = 0; c < C; ++c)
            for (int r = 0; r < R; ++r) {
                int ih = p * sh - ph + r;
                if (ih < 0 || ih >= H) continue;
                for (int s = 0; s < S; ++s) {
                    int iw = q * sw - pw + s;
                    if (iw < 0 || iw >= W) continue;
                    acc = fmaf(Wt[((k * C + c) * R + r) * S + s], x[(((size_t)n * C + c) * H + ih) * W + iw], acc);
                }
            }
        y[idx] = acc;
    }
}

extern "C" __global__ void conv_direct_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt,
                                                 float* __restrict__ dx,
                                                 int N, int C, int H, int W, int K, int R, int S, int P,
                                                 int Q, int sh, int sw, int ph, int pw) {
    const long long total = (long long)N * C * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int w = idx % W;
        int h = (idx / W) % H;
        int c = (idx / ((long long)H * W)) % C;
        int n = idx / ((long long)C * H * W);
        float acc = 0.f;
        for (int k = 0; k < K; ++k)
            for (int r = 0; r < R; ++r) {
                int th = h + ph - r;  // = p*sh
                if (th < 0 || th % sh) continue;
                int p = th / sh;
                if (p >= P) continue;
                for (int s = 0; s < S; ++s) {
                    int tw = w + pw - s;  // = q*sw
                    if (tw < 0 || tw % sw) continue;
                    int q = tw / sw;
                    if (q >= Q) continue;
                    acc = fmaf(Wt[((k * C + c) * R + r) * S + s], dy[(((size_t)n * K + k) * P + p) * Q + q], acc);
                }
            }
        dx[idx] = acc;
    }
}

extern "C" __global__ void conv_direct_wgrad(const float* __restrict__ dy, const float* __restrict__ x,
                                                    float* __restrict__ dW,
                                                    int N, int C, int H, int W, int K, int R, int S, int P,
                                                    int Q, int sh, int sw, int ph, int pw) {
    const int total = K * C * R * S;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        int s = idx % S;
        int r = (idx / S) % R;
        int c = (idx / (R * S)) % C;
        int k = idx / (C * R * S);
        float acc = 0.f;
        for (int n = 0; n < N; ++n)
            for (int p = 0; p < P; ++p) {
                int ih = p * sh - ph + r;
                if (ih < 0 || ih >= H) continue;
                for (int q = 0; q < Q; ++q) {
                    int iw = q * sw - pw + s;
                    if (iw < 0 || iw >= W) continue;
                    acc = fmaf(dy[(((size_t)n * K + k) * P + p) * Q + q], x[(((size_t)n * C + c) * H + ih) * W + iw], acc);
                }
            }
        dW[idx] = acc;
    }
}

