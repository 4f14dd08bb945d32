// The whole SGD train step of a small multilayer perceptron (the thesis's 2-3-1 network and its like) in two
// launches, instead of one or more per layer, loss and reduction: at such widths every launch is pure
// latency, and the per-layer path spends ~80 us per step at batch 8192 on a network of 13 parameters.
//
// Legend: N batch, L dense layers, F0 inputs, Fl outputs of layer l; layer l: z_l = W_l a_(l-1) + b_l,
// a_l = act_l(z_l); W_l (Fl, F(l-1)) row-major, as the spec and PyTorch lay it out. The loss works on a_L (the
// logits): softmax cross-entropy, or sigmoid binary cross-entropy for FL = 1, mean over the batch, with the
// same formulas as loss.cu. act' from the output as activation.cu: relu' = (a > 0), sigmoid' = a (1 - a),
// tanh' = 1 - a^2.
//
// The network is compile-time (one module per shape): MF_L layers, widths MF_F0 .. MF_F4, activation codes
// MF_A1 .. MF_A4 (0 none, 1 relu, 2 sigmoid, 3 tanh), bias flags MF_B1 .. MF_B4, MF_LOSS (0 softmax
// cross-entropy, 1 sigmoid BCE). The parameters in "packed" order (W_1, b_1, W_2, b_2, ...; MF_P values)
// sit in the model's flat buffers at offsets off[2 (l - 1)] (W_l) and off[2 (l - 1) + 1] (b_l).
//
//   mlp_fused_partial  block b takes the samples [b chunk, (b + 1) chunk); its threads stride over them, one
//                      sample at a time: forward, loss, backward through every layer in registers (the
//                      parameters staged in shared memory), each parameter's gradient term added to the
//                      thread's own sum. The block then sums every parameter over its threads (a warp
//                      butterfly, then the warps in order) and writes part[b (MF_P + 1) + p], the per-sample
//                      losses' sum at p = MF_P.
//   mlp_fused_finish   one block: thread p sums part[. + p] over the blocks in order and writes the gradient
//                      into the flat gradient buffer (p = MF_P: the mean loss).
// A fixed partition and fixed orders throughout: the same bits on every run (no atomics). SGD is the
// model's usual one launch over the flat buffers (sgd.cu).

#ifndef MF_L
#define MF_L 2
#endif
#ifndef MF_F0
#define MF_F0 2
#endif
#ifndef MF_F1
#define MF_F1 3
#endif
#ifndef MF_F2
#define MF_F2 1
#endif
#ifndef MF_F3
#define MF_F3 1
#endif
#ifndef MF_F4
#define MF_F4 1
#endif
#ifndef MF_A1
#define MF_A1 1
#endif
#ifndef MF_A2
#define MF_A2 0
#endif
#ifndef MF_A3
#define MF_A3 0
#endif
#ifndef MF_A4
#define MF_A4 0
#endif
#ifndef MF_B1
#define MF_B1 1
#endif
#ifndef MF_B2
#define MF_B2 1
#endif
#ifndef MF_B3
#define MF_B3 1
#endif
#ifndef MF_B4
#define MF_B4 1
#endif
#ifndef MF_LOSS
#define MF_LOSS 1
#endif
#define MF_THREADS 256
#define MF_WARPS (MF_THREADS / 32)

static_assert(MF_L >= 1 && MF_L <= 4, "one to four dense layers");

__host__ __device__ constexpr int mf_width(int l) {
    return l == 0 ? MF_F0 : l == 1 ? MF_F1 : l == 2 ? MF_F2 : l == 3 ? MF_F3 : MF_F4;
}
__host__ __device__ constexpr int mf_act(int l) { return l == 1 ? MF_A1 : l == 2 ? MF_A2 : l == 3 ? MF_A3 : MF_A4; }
__host__ __device__ constexpr int mf_bias(int l) { return l == 1 ? MF_B1 : l == 2 ? MF_B2 : l == 3 ? MF_B3 : MF_B4; }
// packed offset of W_l (l = 1 .. MF_L + 1; at MF_L + 1: the parameter count)
__host__ __device__ constexpr int mf_woff(int l) {
    return l <= 1 ? 0 : mf_woff(l - 1) + mf_width(l - 1) * mf_width(l - 2) + (mf_bias(l - 1) ? mf_width(l - 1) : 0);
}
__host__ __device__ constexpr int mf_boff(int l) { return mf_woff(l) + mf_width(l) * mf_width(l - 1); }
#define MF_P mf_woff(MF_L + 1)
#define MF_OUT mf_width(MF_L)

static_assert(MF_LOSS == 0 || MF_OUT == 1, "sigmoid BCE takes one logit per sample");

__device__ __forceinline__ float mf_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int ACT>
__device__ __forceinline__ float mf_apply(float z) {
    if (ACT == 1) return z > 0.0f ? z : (z != z ? z : 0.0f);  // NaN passes through, as activation.cu
    if (ACT == 2) return 1.0f / (1.0f + expf(-z));
    if (ACT == 3) return tanhf(z);
    return z;
}

template <int ACT>
__device__ __forceinline__ float mf_slope(float a) {  // act' from the output a
    if (ACT == 1) return a > 0.0f ? 1.0f : 0.0f;
    if (ACT == 2) return a * (1.0f - a);
    if (ACT == 3) return 1.0f - a * a;
    return 1.0f;
}

// A sample's activations a_0 .. a_L in one array: a_l at [mf_aoff(l), mf_aoff(l) + width(l)); the deltas
// dL/dz_l in another of the same layout (its a_0 part unused). Indices are compile-time: registers.
__host__ __device__ constexpr int mf_aoff(int l) { return l <= 0 ? 0 : mf_aoff(l - 1) + mf_width(l - 1); }
#define MF_ACTS mf_aoff(MF_L + 1)

// a_l = act_l(W_l a_(l-1) + b_l) for l = L .. MF_L; the products in input order, then the bias
template <int L>
__device__ __forceinline__ void mf_forward(const float* w, float (&a)[MF_ACTS]) {
    constexpr int I = mf_width(L - 1), O = mf_width(L);
#pragma unroll
    for (int j = 0; j < O; ++j) {
        float z = 0.0f;
#pragma unroll
        for (int i = 0; i < I; ++i) z = fmaf(w[mf_woff(L) + j * I + i], a[mf_aoff(L - 1) + i], z);
        if (mf_bias(L)) z += w[mf_boff(L) + j];
        a[mf_aoff(L) + j] = mf_apply<mf_act(L)>(z);
    }
    if constexpr (L < MF_L) mf_forward<L + 1>(w, a);
}

// From d = dL/dz_L: the gradient terms of W_l, b_l added to g and dL/dz_(l-1) into d, for l = L .. 1
template <int L>
__device__ __forceinline__ void mf_backward(const float* w, const float (&a)[MF_ACTS], float (&d)[MF_ACTS],
                                            float (&g)[MF_P]) {
    constexpr int I = mf_width(L - 1), O = mf_width(L);
#pragma unroll
    for (int j = 0; j < O; ++j) {
#pragma unroll
        for (int i = 0; i < I; ++i)
            g[mf_woff(L) + j * I + i] = fmaf(d[mf_aoff(L) + j], a[mf_aoff(L - 1) + i], g[mf_woff(L) + j * I + i]);
        if (mf_bias(L)) g[mf_boff(L) + j] += d[mf_aoff(L) + j];
    }
    if constexpr (L > 1) {
#pragma unroll
        for (int i = 0; i < I; ++i) {
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < O; ++j) s = fmaf(w[mf_woff(L) + j * I + i], d[mf_aoff(L) + j], s);
            d[mf_aoff(L - 1) + i] = s * mf_slope<mf_act(L - 1)>(a[mf_aoff(L - 1) + i]);
        }
        mf_backward<L - 1>(w, a, d, g);
    }
}

// Index of packed parameter p in the flat buffers.
__device__ __forceinline__ int mf_flat_index(const int* __restrict__ off, int p) {
#pragma unroll
    for (int l = 1; l <= MF_L; ++l) {
        const int nw = mf_width(l) * mf_width(l - 1);
        const int nb = mf_bias(l) ? mf_width(l) : 0;
        if (p < nw) return off[2 * (l - 1)] + p;
        p -= nw;
        if (p < nb) return off[2 * (l - 1) + 1] + p;
        p -= nb;
    }
    return -1;
}

extern "C" __global__ void __launch_bounds__(MF_THREADS)
mlp_fused_partial(const float* __restrict__ x, const long long* __restrict__ label, const float* __restrict__ flat_w,
                  const int* __restrict__ off, float* __restrict__ part, int N, int chunk) {
    __shared__ float w[MF_P];
    __shared__ float red[MF_WARPS][MF_P + 1];
    for (int p = threadIdx.x; p < MF_P; p += MF_THREADS) w[p] = flat_w[mf_flat_index(off, p)];
    __syncthreads();

    float g[MF_P];
#pragma unroll
    for (int p = 0; p < MF_P; ++p) g[p] = 0.0f;
    float loss_sum = 0.0f;
    const float inv_n = 1.0f / (float)N;
    const float nan = __int_as_float(0x7fc00000);
    const int s1 = min(N, (blockIdx.x + 1) * chunk);
    for (int s = blockIdx.x * chunk + threadIdx.x; s < s1; s += MF_THREADS) {
        float a[MF_ACTS], d[MF_ACTS];
#pragma unroll
        for (int i = 0; i < MF_F0; ++i) a[i] = x[(long long)s * MF_F0 + i];
        mf_forward<1>(w, a);
        const float* z = a + mf_aoff(MF_L);   // the logits
        float* dz = d + mf_aoff(MF_L);
        // loss and dL/da_L, as loss.cu (an out-of-range label: NaN loss and gradient)
        const long long y = label[s];
#if MF_LOSS == 0
        const bool ok = y >= 0 && y < MF_OUT;
        float m = z[0];
#pragma unroll
        for (int k = 1; k < MF_OUT; ++k) m = fmaxf(m, z[k]);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < MF_OUT; ++k) sum += expf(z[k] - m);
        const float inv_s = 1.0f / sum;
        float zy = 0.0f;
#pragma unroll
        for (int k = 0; k < MF_OUT; ++k) {
            const float p = expf(z[k] - m) * inv_s;
            dz[k] = ok ? ((k == y) ? p - 1.0f : p) * inv_n : nan;
            if (k == y) zy = z[k];
        }
        loss_sum += ok ? (m + logf(sum)) - zy : nan;
#else
        const bool ok = y == 0 || y == 1;
        const float v = z[0], t = (float)y;
        const float e = expf(-fabsf(v));
        const float sig = v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        loss_sum += ok ? fmaxf(v, 0.0f) - v * t + log1pf(e) : nan;
        dz[0] = ok ? (sig - t) * inv_n : nan;
#endif
        // dL/dz_L: through the last layer's activation, if it has one; then every layer, the last first
#pragma unroll
        for (int k = 0; k < MF_OUT; ++k) dz[k] *= mf_slope<mf_act(MF_L)>(z[k]);
        mf_backward<MF_L>(w, a, d, g);
    }

    // the block's sums: each warp's by a butterfly, then the warps in order
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int p = 0; p < MF_P; ++p) {
        const float v = mf_warp_sum(g[p]);
        if (lane == 0) red[warp][p] = v;
    }
    const float lv = mf_warp_sum(loss_sum);
    if (lane == 0) red[warp][MF_P] = lv;
    __syncthreads();
    for (int p = threadIdx.x; p <= MF_P; p += MF_THREADS) {
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < MF_WARPS; ++k) v += red[k][p];
        part[(long long)blockIdx.x * (MF_P + 1) + p] = v;
    }
}

extern "C" __global__ void __launch_bounds__(MF_THREADS)
mlp_fused_finish(const float* __restrict__ part, int nblocks, const int* __restrict__ off, float* __restrict__ flat_g,
                 float* __restrict__ loss, int N) {
    for (int p = threadIdx.x; p <= MF_P; p += MF_THREADS) {
        float v = 0.0f;
        for (int b = 0; b < nblocks; ++b) v += part[(long long)b * (MF_P + 1) + p];
        if (p < MF_P) flat_g[mf_flat_index(off, p)] = v;
        else loss[0] = v / (float)N;
    }
}
