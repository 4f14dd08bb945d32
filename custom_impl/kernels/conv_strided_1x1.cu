// Backward-data of a 1x1 convolution with stride (sh, sw) and no padding, second step: spread the
// stride-1 result over dx.
//
// Legend: N batch, C in-channels, H,W input, P,Q output (P = (H-1)/sh + 1, Q = (W-1)/sw + 1), NCHW float32.
// Such a conv reads x only at h = p*sh, w = q*sw, so dx is zero elsewhere and, at those pixels, equals the
// backward-data of a 1x1 stride-1 conv over an (N, C, P, Q) input: dxc, one GEMM (C x N*P*Q over K) that
// the implicit GEMM runs first (with split-K where it pays). This kernel then writes every element of dx
// once:
//     dx[n, c, h, w] = dxc[n, c, h/sh, w/sw]  if h % sh == 0 and w % sw == 0,  else 0
// One thread per 4 consecutive w of one row: a float4 store when `vec` (W % 4 == 0 and dx 16-byte
// aligned), else 4 scalar stores. `conv_strided_1x1_scatter` indexes with 64-bit integers (any size),
// `_i32` with 32-bit unsigned ones for fewer than 2^31 groups (the wrapper picks; divisions are cheaper).

template <typename I>
__device__ __forceinline__ void scatter(const float* __restrict__ dxc, float* __restrict__ dx, I g, I groups,
                                        int H, int W, int P, int Q, int sh, int sw, int vec) {
    if (g >= groups) return;
    const I W4 = (I)((W + 3) >> 2);
    const I row = g / W4;                 // (n*C + c)*H + h
    const int w0 = (int)(g - row * W4) * 4;
    const I nc = row / (I)H;
    const int h = (int)(row - nc * (I)H);
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (h % sh == 0) {
        const float* src = dxc + (nc * (I)P + (I)(h / sh)) * (I)Q;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int w = w0 + j;
            if (w < W && w % sw == 0) v[j] = src[w / sw];
        }
    }
    float* dst = dx + row * (I)W + w0;
    if (vec) {
        *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
        if (w0 + j < W) dst[j] = v[j];
}

extern "C" __global__ void conv_strided_1x1_scatter(const float* __restrict__ dxc, float* __restrict__ dx,
                                                    long long groups, int H, int W, int P, int Q,
                                                    int sh, int sw, int vec) {
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    scatter<long long>(dxc, dx, g, groups, H, W, P, Q, sh, sw, vec);
}

extern "C" __global__ void conv_strided_1x1_scatter_i32(const float* __restrict__ dxc, float* __restrict__ dx,
                                                        unsigned groups, int H, int W, int P, int Q,
                                                        int sh, int sw, int vec) {
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    scatter<unsigned>(dxc, dx, g, groups, H, W, P, Q, sh, sw, vec);
}
