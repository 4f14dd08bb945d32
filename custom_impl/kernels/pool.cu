// Pooling: max and average over R x S windows with stride (sh, sw), no padding, NCHW float32.
//
// Legend: N batch, C channels, H,W input, P,Q output, R,S window, sh,sw stride.
// Forward: one thread per output element. Backward: one thread per INPUT element, gathering over the
// outputs whose windows cover it (windows may overlap), so every dx is written once, with no atomics,
// in a fixed order: deterministic.
// Max pooling routes the gradient to the first maximum of each window in row-major order (as PyTorch);
// forward saves that position (r*S + s, int32) in `argmax` for backward.
// Each kernel has two entry points: `<name>` indexes with 64-bit integers (any size), `<name>_i32` with
// 32-bit unsigned ones, for arrays of fewer than 2^31 elements (the wrapper picks): the index divisions
// (i % W, i / W ...) are several times cheaper in 32 bits.

// Range of outputs p whose window [p*sh, p*sh + R) covers input row h: p0 <= p <= p1 (empty if p0 > p1).
__device__ __forceinline__ void covering(int h, int R, int sh, int P, int* p0, int* p1)
{
    int lo = h - R + 1;
    int first = lo <= 0 ? 0 : (lo + sh - 1) / sh;  // ceil(lo / sh) for lo > 0
    int last = h / sh;
    *p0 = first;
    *p1 = last < P - 1 ? last : P - 1;
}

template <typename I>
__device__ __forceinline__ void maxpool2d_forward_body(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int* __restrict__ argmax,       // (N, C, P, Q) window position r*S + s of the first max
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    I total = (I)NC * P * Q;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int q = (int)(i % Q);
        int p = (int)((i / Q) % P);
        I nc = i / ((I)P * Q);
        const float* xp = x + nc * H * W + (I)(p * sh) * W + q * sw;  // window's top-left
        float best = xp[0];
        int where = 0;
        for (int r = 0; r < R; ++r) {
            for (int s = 0; s < S; ++s) {
                float v = xp[r * W + s];
                // NOTE: strict '>' keeps the first maximum; a NaN wins (and stays) like in PyTorch.
                if (v > best || (v != v && best == best)) {
                    best = v;
                    where = r * S + s;
                }
            }
        }
        y[i] = best;
        argmax[i] = where;
    }
}

extern "C" __global__ void maxpool2d_forward(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int* __restrict__ argmax,       // (N, C, P, Q) window position r*S + s of the first max
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    maxpool2d_forward_body<long long>(x, y, argmax, NC, H, W, P, Q, R, S, sh, sw);
}

extern "C" __global__ void maxpool2d_forward_i32(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int* __restrict__ argmax,       // (N, C, P, Q) window position r*S + s of the first max
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    maxpool2d_forward_body<unsigned int>(x, y, argmax, NC, H, W, P, Q, R, S, sh, sw);
}

template <typename I>
__device__ __forceinline__ void maxpool2d_backward_body(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    I total = (I)NC * H * W;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int w = (int)(i % W);
        int h = (int)((i / W) % H);
        I nc = i / ((I)H * W);
        int p0, p1, q0, q1;
        covering(h, R, sh, P, &p0, &p1);
        covering(w, S, sw, Q, &q0, &q1);
        const float* dyp = dy + nc * P * Q;
        const int* amp = argmax + nc * P * Q;
        float acc = 0.0f;
        for (int p = p0; p <= p1; ++p) {
            for (int q = q0; q <= q1; ++q) {
                int here = (h - p * sh) * S + (w - q * sw);  // this pixel's position in window (p, q)
                if (amp[p * Q + q] == here) acc += dyp[p * Q + q];
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void maxpool2d_backward(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    maxpool2d_backward_body<long long>(dy, argmax, dx, NC, H, W, P, Q, R, S, sh, sw);
}

extern "C" __global__ void maxpool2d_backward_i32(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    maxpool2d_backward_body<unsigned int>(dy, argmax, dx, NC, H, W, P, Q, R, S, sh, sw);
}

template <typename I>
__device__ __forceinline__ void avgpool2d_forward_body(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    I total = (I)NC * P * Q;
    float area = (float)(R * S);
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int q = (int)(i % Q);
        int p = (int)((i / Q) % P);
        I nc = i / ((I)P * Q);
        const float* xp = x + nc * H * W + (I)(p * sh) * W + q * sw;
        float acc = 0.0f;
        for (int r = 0; r < R; ++r)
            for (int s = 0; s < S; ++s)
                acc += xp[r * W + s];
        y[i] = acc / area;  // NOTE: divide (not * 1/area), as PyTorch does
    }
}

extern "C" __global__ void avgpool2d_forward(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_forward_body<long long>(x, y, NC, H, W, P, Q, R, S, sh, sw);
}

extern "C" __global__ void avgpool2d_forward_i32(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_forward_body<unsigned int>(x, y, NC, H, W, P, Q, R, S, sh, sw);
}

template <typename I>
__device__ __forceinline__ void avgpool2d_backward_body(
    const float* __restrict__ dy,   // (N, C, P, Q)
    float* __restrict__ dx,         // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    I total = (I)NC * H * W;
    float area = (float)(R * S);
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int w = (int)(i % W);
        int h = (int)((i / W) % H);
        I nc = i / ((I)H * W);
        int p0, p1, q0, q1;
        covering(h, R, sh, P, &p0, &p1);
        covering(w, S, sw, Q, &q0, &q1);
        const float* dyp = dy + nc * P * Q;
        float acc = 0.0f;
        for (int p = p0; p <= p1; ++p)
            for (int q = q0; q <= q1; ++q)
                acc += dyp[p * Q + q] / area;
        dx[i] = acc;
    }
}

extern "C" __global__ void avgpool2d_backward(
    const float* __restrict__ dy,   // (N, C, P, Q)
    float* __restrict__ dx,         // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_backward_body<long long>(dy, dx, NC, H, W, P, Q, R, S, sh, sw);
}

extern "C" __global__ void avgpool2d_backward_i32(
    const float* __restrict__ dy,   // (N, C, P, Q)
    float* __restrict__ dx,         // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_backward_body<unsigned int>(dy, dx, NC, H, W, P, Q, R, S, sh, sw);
}
