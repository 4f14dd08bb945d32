// Pooling: max and average over R x S windows with stride (sh, sw), no padding, NCHW float32.
//
// Legend: N batch, C channels, H,W input, P,Q output, R,S window, sh,sw stride.
// Forward: one thread per output element. Backward: one thread per INPUT element, gathering over the
// outputs whose windows cover it (windows may overlap), so every dx is written once, with no atomics,
// in a fixed order: deterministic.
// Max pooling routes the gradient to the first maximum of each window in row-major order (as PyTorch);
// forward saves that position (r*S + s, int32) in `argmax` for backward.
// relu: maxpool2d_* take a flag for a ReLU fused in front of the pool (spec: relu then maxpool2d):
// max(relu(x)) = relu(max(x)), so forward pools x itself and writes relu(max); backward routes dy only
// where the pooled output y > 0 (relu'(x) at the window's maximum). Ties behave as unfused: a window whose
// max is <= 0 gets no gradient either way.
// Backward comes in two algorithms: "gather", `*_backward` (any stride, windows may overlap), and "tiled",
// `*_backward_tiled`, for stride >= window (no overlap, all zoo models): one thread per window writes
// its stride-sized tile of dx (dy at the max / dy/(R*S) inside the window, 0 in the gap), with no
// per-pixel range arithmetic; measured on an H100, lenet-mnist N=1024 (32x28x28, 2x2): gather 246 us,
// ~4x under HBM bandwidth because of index divisions.
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
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
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
        y[i] = (relu && !(best > 0.0f) && best == best) ? 0.0f : best;  // relu keeps NaN, as torch
        argmax[i] = where;
    }
}

extern "C" __global__ void maxpool2d_forward(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int* __restrict__ argmax,       // (N, C, P, Q) window position r*S + s of the first max
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_forward_body<long long>(x, y, argmax, NC, H, W, P, Q, R, S, sh, sw, relu);
}

extern "C" __global__ void maxpool2d_forward_i32(
    const float* __restrict__ x,    // (N, C, H, W)
    float* __restrict__ y,          // (N, C, P, Q)
    int* __restrict__ argmax,       // (N, C, P, Q) window position r*S + s of the first max
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_forward_body<unsigned int>(x, y, argmax, NC, H, W, P, Q, R, S, sh, sw, relu);
}

template <typename I>
__device__ __forceinline__ void maxpool2d_backward_body(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    const float* __restrict__ y,      // (N, C, P, Q) pooled output (read only with relu)
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
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
        const float* yp = y + nc * P * Q;
        float acc = 0.0f;
        for (int p = p0; p <= p1; ++p) {
            for (int q = q0; q <= q1; ++q) {
                int here = (h - p * sh) * S + (w - q * sw);  // this pixel's position in window (p, q)
                if (amp[p * Q + q] == here && (!relu || yp[p * Q + q] > 0.0f)) acc += dyp[p * Q + q];
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void maxpool2d_backward(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    const float* __restrict__ y,      // (N, C, P, Q) pooled output (read only with relu)
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_backward_body<long long>(dy, argmax, y, dx, NC, H, W, P, Q, R, S, sh, sw, relu);
}

extern "C" __global__ void maxpool2d_backward_i32(
    const float* __restrict__ dy,     // (N, C, P, Q)
    const int* __restrict__ argmax,   // (N, C, P, Q) saved by maxpool2d_forward
    const float* __restrict__ y,      // (N, C, P, Q) pooled output (read only with relu)
    float* __restrict__ dx,           // (N, C, H, W)
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_backward_body<unsigned int>(dy, argmax, y, dx, NC, H, W, P, Q, R, S, sh, sw, relu);
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

// ---- tiled backward for stride >= window ---------------------------------------------------------------
// Window (p, q) owns the tile rows [p*sh, p*sh + sh) x cols [q*sw, q*sw + sw) of dx (the last row / column
// of windows also owns the remainder up to H / W): the tiles partition the plane and, with stride >= window,
// each window lies inside its tile, so every dx element is written exactly once. In a warp, neighbouring q
// write neighbouring sw-wide runs of one row: coalesced.
template <typename I>
__device__ __forceinline__ void maxpool2d_backward_tiled_body(
    const float* __restrict__ dy, const int* __restrict__ argmax, const float* __restrict__ y,
    float* __restrict__ dx, int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    I total = (I)NC * P * Q;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int q = (int)(i % Q);
        int p = (int)((i / Q) % P);
        I nc = i / ((I)P * Q);
        int h0 = p * sh;
        int w0 = q * sw;
        int h1 = p == P - 1 ? H : h0 + sh;
        int w1 = q == Q - 1 ? W : w0 + sw;
        int am = argmax[i];
        int ah = h0 + am / S;  // the window's maximum, in plane coordinates
        int aw = w0 + am % S;
        float g = (!relu || y[i] > 0.0f) ? dy[i] : 0.0f;
        float* dxp = dx + nc * H * W;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w)
                dxp[(I)h * W + w] = (h == ah && w == aw) ? g : 0.0f;
    }
}

extern "C" __global__ void maxpool2d_backward_tiled(
    const float* __restrict__ dy, const int* __restrict__ argmax, const float* __restrict__ y,
    float* __restrict__ dx, int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_backward_tiled_body<long long>(dy, argmax, y, dx, NC, H, W, P, Q, R, S, sh, sw, relu);
}

extern "C" __global__ void maxpool2d_backward_tiled_i32(
    const float* __restrict__ dy, const int* __restrict__ argmax, const float* __restrict__ y,
    float* __restrict__ dx, int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw, int relu)
{
    maxpool2d_backward_tiled_body<unsigned int>(dy, argmax, y, dx, NC, H, W, P, Q, R, S, sh, sw, relu);
}

template <typename I>
__device__ __forceinline__ void avgpool2d_backward_tiled_body(
    const float* __restrict__ dy, float* __restrict__ dx,
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    I total = (I)NC * P * Q;
    float area = (float)(R * S);
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        int q = (int)(i % Q);
        int p = (int)((i / Q) % P);
        I nc = i / ((I)P * Q);
        int h0 = p * sh;
        int w0 = q * sw;
        int h1 = p == P - 1 ? H : h0 + sh;
        int w1 = q == Q - 1 ? W : w0 + sw;
        float g = dy[i] / area;
        float* dxp = dx + nc * H * W;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w)
                dxp[(I)h * W + w] = (h < h0 + R && w < w0 + S) ? g : 0.0f;
    }
}

extern "C" __global__ void avgpool2d_backward_tiled(
    const float* __restrict__ dy, float* __restrict__ dx,
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_backward_tiled_body<long long>(dy, dx, NC, H, W, P, Q, R, S, sh, sw);
}

extern "C" __global__ void avgpool2d_backward_tiled_i32(
    const float* __restrict__ dy, float* __restrict__ dx,
    int NC, int H, int W, int P, int Q, int R, int S, int sh, int sw)
{
    avgpool2d_backward_tiled_body<unsigned int>(dy, dx, NC, H, W, P, Q, R, S, sh, sw);
}
