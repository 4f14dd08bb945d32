// Thin GEMMs: C[M,N] = act(A @ B^T + bias[None, :] + beta * C) with A stored (M, K), B stored (N, K) and
// N <= 16: the forward X @ W^T of a classifier's last dense layer (10 outputs) at large batch. The tiled
// kernels (gemm.cu) compute such a C as one column of 64..256-wide tiles, most of each tile past the
// matrix; these read A once, from all SMs, and keep C's N columns whole in registers.
// Same arguments, flags, split-K partials and serial reduce as the gemm_* kernels (gemm.cu), so gemm.py
// launches them through the same plan machinery (flag bit 2, float4 stores, goes unused: a lane stores
// one or two values).
//
//   gemm_thin_n{8,16}  N <= 8 / 16. A block of THIN_WARPS warps; a warp owns R = 4 consecutive rows of C and
//       all N columns. Its lanes split k: lane l reads A and B at k = k0 + 4 l .. 4 l + 3 (one float4 per row
//       when the rows are float4-aligned, flags bits 0 and 1; else one float at k0 + l), stepping 128 (32)
//       along the block's k range, and keeps R x NMAX partial sums. The warp then sums them over its 32
//       lanes by recursive halving: at each of 5 steps a lane keeps half of its values and adds its
//       partner's copy of that half (__shfl_xor), ending with R * NMAX / 32 totals. B (N x K, small) is read
//       by every warp from L1 / L2.
// Sums are in a fixed order (each lane's k ascending, then the fixed lane tree, then split-K's z
// ascending): the same bits on every run. The sums' order differs from the tiled kernels', as two tile
// configs' do.
#include "gemm_splitk.cuh"

#define THIN_WARPS 4
#define THIN_THREADS (THIN_WARPS * 32)

// One step of the warp's recursive halving (thin_n_body): acc[0..H) = this lane's half of acc[0..2H) plus
// the partner lane's (lane ^ O) copy of the same half.
template <int H, int O, int V>
__device__ __forceinline__ void halve_step(float (&acc)[V], int lane) {
    const bool up = lane & O;
#pragma unroll
    for (int i = 0; i < H; ++i) {
        const float send = up ? acc[i] : acc[i + H];
        const float keep = up ? acc[i + H] : acc[i];
        acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
    }
}

template <int NMAX, int R>
__device__ __forceinline__ void thin_n_body(const float* __restrict__ A, const float* __restrict__ B,
                                            float* __restrict__ C, const float* __restrict__ bias,
                                            float* __restrict__ W, int* __restrict__ counters, int M, int N,
                                            int K, int k_chunk, int beta, int act, int flags) {
    constexpr int V = R * NMAX;          // partial sums per lane
    static_assert(V % 32 == 0 && (V & (V - 1)) == 0, "R * NMAX must be a power of two >= 32");
    constexpr int PER_LANE = V / 32;     // totals per lane after the halving
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int m0 = (blockIdx.x * THIN_WARPS + warp) * R;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool split = (flags >> 3) & 1;

    float acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = 0.f;

    // rows past M read row M - 1 (in range, never stored): no test inside the loop
    const float* a_row[R];
#pragma unroll
    for (int r = 0; r < R; ++r) a_row[r] = A + (size_t)min(m0 + r, M - 1) * K;
    if ((flags & 3) == 3 && k_begin % 4 == 0 && k_end % 4 == 0) {
        for (int k = k_begin + lane * 4; k < k_end; k += 128) {
            float4 a[R];
#pragma unroll
            for (int r = 0; r < R; ++r) a[r] = __ldg(reinterpret_cast<const float4*>(a_row[r] + k));
#pragma unroll
            for (int n = 0; n < NMAX; ++n) {
                if (n < N) {
                    const float4 b = __ldg(reinterpret_cast<const float4*>(B + (size_t)n * K + k));
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        float s = acc[r * NMAX + n];
                        s = fmaf(a[r].x, b.x, s);
                        s = fmaf(a[r].y, b.y, s);
                        s = fmaf(a[r].z, b.z, s);
                        acc[r * NMAX + n] = fmaf(a[r].w, b.w, s);
                    }
                }
            }
        }
    } else {
        for (int k = k_begin + lane; k < k_end; k += 32) {
            float a[R];
#pragma unroll
            for (int r = 0; r < R; ++r) a[r] = __ldg(a_row[r] + k);
#pragma unroll
            for (int n = 0; n < NMAX; ++n) {
                if (n < N) {
                    const float b = __ldg(B + (size_t)n * K + k);
#pragma unroll
                    for (int r = 0; r < R; ++r) acc[r * NMAX + n] = fmaf(a[r], b, acc[r * NMAX + n]);
                }
            }
        }
    }

    // Recursive halving over the warp: after the step with partner lane ^ o (o = 16, 8, 4, 2, 1) a lane holds
    // half as many values (the upper half of the previous ones where lane & o, else the lower half); value i
    // of lane L ends as the total of index i + L * PER_LANE.
    // (a + b == b + a exactly, so both partners' sums are the same whichever lane adds them.)
    halve_step<V / 2, 16>(acc, lane);
    halve_step<V / 4, 8>(acc, lane);
    halve_step<V / 8, 4>(acc, lane);
    halve_step<V / 16, 2>(acc, lane);
    halve_step<V / 32, 1>(acc, lane);
    const int first = lane * PER_LANE;   // index r * NMAX + n of acc[0]
    const int m = m0 + first / NMAX;
    const int n = first % NMAX;
    // one lane's PER_LANE (1 or 2) totals: raw partials into W + z*M*N (split), else act(v + bias + beta*C)
    float* dst = split ? W + (size_t)blockIdx.z * M * N : C;
    if (m < M) {
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            if (n + i < N) {
                float o = acc[i];
                if (!split) {
                    if (bias) o += bias[n + i];
                    if (beta) o += C[(size_t)m * N + n + i];
                    o = apply_act(o, act);
                }
                dst[(size_t)m * N + n + i] = o;
            }
        }
    }
    if (!split || !((flags >> 4) & 1)) return;
    if (!splitk_arrive_last(counters, blockIdx.x)) return;
    if ((flags >> 5) & 1)
        splitk_tile_reduce<4, THIN_WARPS * R, NMAX, THIN_THREADS>(W, C, bias, M, N, blockIdx.x * THIN_WARPS * R,
                                                                  0, gridDim.z, beta, act);
    else
        splitk_tile_reduce<1, THIN_WARPS * R, NMAX, THIN_THREADS>(W, C, bias, M, N, blockIdx.x * THIN_WARPS * R,
                                                                  0, gridDim.z, beta, act);
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

#define THIN_ARGS                                                                                        \
    const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,                     \
        const float* __restrict__ bias, float* __restrict__ W, int* __restrict__ counters, int M, int N, \
        int K, int k_chunk, int beta, int act, int flags
#define THIN_PASS A, B, C, bias, W, counters, M, N, K, k_chunk, beta, act, flags

// Register budgets: R * NMAX = 32 / 64 partial sums, 4 blocks per SM.
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_n8(THIN_ARGS) {
    thin_n_body<8, 4>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_n16(THIN_ARGS) {
    thin_n_body<16, 4>(THIN_PASS);
}
