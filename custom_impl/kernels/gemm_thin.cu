// Thin GEMMs: C[M,N] = act(op(A) @ op(B) + bias[None, :] + beta * C) where one side of C is at most 32 wide,
// the shapes of a classifier's last dense layer at large batch (N = 10 outputs, or DeepSpeech's 29
// characters): its forward X @ W^T has N <= 32, its weight gradient dY^T @ X has M <= 32. The tiled kernels
// (gemm.cu) compute such a C as one row or column of 64..256-wide tiles, most of each tile past the matrix;
// these kernels read the big operand once, from all SMs, and keep the thin side whole in registers.
// Same arguments, flags, split-K partials and serial reduce as the gemm_* kernels (gemm.cu), so gemm.py
// launches them through the same plan machinery.
//
//   gemm_thin_n{8,16,32}  trans_b layout (A stored (M, K), B stored (N, K)), N <= 8 / 16 / 32.
//       A block of THIN_WARPS warps; a warp owns THIN_R consecutive rows of C and all N columns. Its lanes
//       split k: lane l reads A and B at k = k0 + 4 l .. 4 l + 3 (one float4 per row when the rows are
//       float4-aligned, flags bits 0 and 1; else one float at k0 + l), stepping 128 (32) along the block's k
//       range, and keeps R x NMAX partial sums. The warp then sums them over its 32 lanes by recursive
//       halving: at each of 5 steps a lane keeps half of its values and adds its partner's copy of that half
//       (__shfl_xor), so it ends with R * NMAX / 32 totals: 4 consecutive columns of one row for
//       NMAX = 32 and R = 4. B (N x K, small) is read by every warp from L1 / L2.
//   gemm_thin_m{8,16,32}  trans_a layout (A stored (K, M), B stored (K, N)), M <= 8 / 16 / 32.
//       A block of THIN_WARPS warps owns 128 columns of C (4 per lane, float4 loads of B's rows when
//       aligned, flags bit 1) and all M rows; its warps take the k of each 64-row chunk of its k range in
//       turn (warp w: k = w, w + THIN_WARPS, ...; the loads of 4 such rows in flight together), reading
//       A's chunk (64 x M floats, contiguous) from shared memory. The warps' sums are then added in warp
//       order in shared memory.
// Sums are in a fixed order (each lane's k ascending, then the fixed lane / warp tree, then split-K's z
// ascending): the same bits on every run. The sums' order differs from the tiled kernels', as two tile
// configs' do.
#include "gemm_splitk.cuh"

#define THIN_WARPS 4
#define THIN_THREADS (THIN_WARPS * 32)
#define THIN_CHUNK 64   // k rows of A per shared-memory chunk (gemm_thin_m)

// ---- epilogue shared by both kernels: one value or a float4 of consecutive columns ----------------------
// Writes raw partials into W + z*M*N (split) or act(v + bias + beta*C) into C; n..n+V-1 < N is the caller's
// test for V = 4 (N % 4 == 0), per element for V = 1.
template <int V>
__device__ __forceinline__ void thin_store(float* C, float* W, const float* bias, int M, int N, int m, int n,
                                           const float (&v)[V], bool split, int beta, int act) {
    float o[V];
    float* dst = split ? W + (size_t)blockIdx.z * M * N : C;
#pragma unroll
    for (int f = 0; f < V; ++f) {
        o[f] = v[f];
        if (!split) {
            if (bias) o[f] += bias[n + f];
            if (beta) o[f] += C[(size_t)m * N + n + f];
            o[f] = apply_act(o[f], act);
        }
    }
    if constexpr (V == 4) {
        *reinterpret_cast<float4*>(dst + (size_t)m * N + n) = make_float4(o[0], o[1], o[2], o[3]);
    } else {
        dst[(size_t)m * N + n] = o[0];
    }
}

// ---- gemm_thin_n ------------------------------------------------------------------------------------------
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
    const bool vec = (flags >> 2) & 1;   // float4 stores: N % 4 == 0, the destination 16-byte aligned
    if (m < M) {
        if constexpr (PER_LANE % 4 == 0) {
            if (vec) {
#pragma unroll
                for (int i = 0; i < PER_LANE; i += 4) {
                    if (n + i < N) {
                        const float v[4] = {acc[i], acc[i + 1], acc[i + 2], acc[i + 3]};
                        thin_store<4>(C, W, bias, M, N, m, n + i, v, split, beta, act);
                    }
                }
            }
        }
        if (!vec || PER_LANE % 4 != 0) {
#pragma unroll
            for (int i = 0; i < PER_LANE; ++i) {
                if (n + i < N) {
                    const float v[1] = {acc[i]};
                    thin_store<1>(C, W, bias, M, N, m, n + i, v, split, beta, act);
                }
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

// ---- gemm_thin_m ------------------------------------------------------------------------------------------
#define THIN_UNROLL 4   // B rows per warp whose loads are in flight together

// Columns n..n+3 of B's row k (float4 where vec, else scalars, zeros past N).
__device__ __forceinline__ void thin_load_b(const float* __restrict__ B, int k, int N, int n, bool vec,
                                            float (&b)[4]) {
    const float* row = B + (size_t)k * N;
    if (vec) {
        const float4 t = __ldg(reinterpret_cast<const float4*>(row + n));
        b[0] = t.x; b[1] = t.y; b[2] = t.z; b[3] = t.w;
    } else {
#pragma unroll
        for (int f = 0; f < 4; ++f) b[f] = n + f < N ? __ldg(row + n + f) : 0.f;
    }
}

// acc[m][f] += A[k, m] * B[k, n + f] for one k: a_row = A's row k in shared memory (MMAX floats).
template <int MMAX>
__device__ __forceinline__ void thin_m_row(float (&acc)[MMAX][4], const float* a_row, const float (&b)[4], int M) {
#pragma unroll
    for (int i = 0; i < MMAX; i += 4) {
        if (i < M) {
            const float4 a = *reinterpret_cast<const float4*>(a_row + i);
#pragma unroll
            for (int f = 0; f < 4; ++f) {
                acc[i + 0][f] = fmaf(a.x, b[f], acc[i + 0][f]);
                acc[i + 1][f] = fmaf(a.y, b[f], acc[i + 1][f]);
                acc[i + 2][f] = fmaf(a.z, b[f], acc[i + 2][f]);
                acc[i + 3][f] = fmaf(a.w, b[f], acc[i + 3][f]);
            }
        }
    }
}

template <int MMAX>
__device__ __forceinline__ void thin_m_body(const float* __restrict__ A, const float* __restrict__ B,
                                            float* __restrict__ C, const float* __restrict__ bias,
                                            float* __restrict__ W, int* __restrict__ counters, int M, int N,
                                            int K, int k_chunk, int beta, int act, int flags) {
    __shared__ __align__(16) float a_s[THIN_CHUNK][MMAX];   // A's chunk, rows padded to MMAX (zeros)
    __shared__ __align__(16) float red[MMAX][128];          // the warps' sums, added in warp order
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int n0 = blockIdx.x * 128;
    const int n = n0 + lane * 4;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool split = (flags >> 3) & 1;
    // float4 loads of B's rows: rows float4-aligned (flags bit 1) and this lane's 4 columns inside N
    const bool vec_b = ((flags >> 1) & 1) && n + 3 < N;

    float acc[MMAX][4];
#pragma unroll
    for (int i = 0; i < MMAX; ++i)
#pragma unroll
        for (int f = 0; f < 4; ++f) acc[i][f] = 0.f;

    for (int kc = k_begin; kc < k_end; kc += THIN_CHUNK) {
        const int rows = min(THIN_CHUNK, k_end - kc);
        __syncthreads();   // the previous chunk's readers are done
        for (int i = threadIdx.x; i < THIN_CHUNK * MMAX; i += THIN_THREADS) {
            const int r = i / MMAX, m = i % MMAX;
            a_s[r][m] = (r < rows && m < M) ? __ldg(A + (size_t)(kc + r) * M + m) : 0.f;
        }
        __syncthreads();
        // rows r, r + 4 warps, ... of the chunk; UNROLL of them per pass with their B loads issued first (one
        // load in flight per warp would leave most of the memory system idle)
        int r = warp;
        for (; r + (THIN_UNROLL - 1) * THIN_WARPS < rows; r += THIN_UNROLL * THIN_WARPS) {
            float b[THIN_UNROLL][4];
#pragma unroll
            for (int u = 0; u < THIN_UNROLL; ++u) thin_load_b(B, kc + r + u * THIN_WARPS, N, n, vec_b, b[u]);
#pragma unroll
            for (int u = 0; u < THIN_UNROLL; ++u) thin_m_row<MMAX>(acc, a_s[r + u * THIN_WARPS], b[u], M);
        }
        for (; r < rows; r += THIN_WARPS) {
            float b[4];
            thin_load_b(B, kc + r, N, n, vec_b, b);
            thin_m_row<MMAX>(acc, a_s[r], b, M);
        }
    }

    // the warps' sums in warp order: red = acc_0, then red += acc_1, += acc_2, ...
#pragma unroll 1
    for (int w = 0; w < THIN_WARPS; ++w) {
        __syncthreads();
        if (warp == w) {
#pragma unroll
            for (int i = 0; i < MMAX; ++i) {
                float4* p = reinterpret_cast<float4*>(&red[i][lane * 4]);
                if (w == 0) {
                    *p = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
                } else {
                    const float4 q = *p;
                    *p = make_float4(q.x + acc[i][0], q.y + acc[i][1], q.z + acc[i][2], q.w + acc[i][3]);
                }
            }
        }
    }
    __syncthreads();
    const bool vec = (flags >> 2) & 1;   // float4 stores: N % 4 == 0, the destination 16-byte aligned
    if (vec) {
        for (int i = threadIdx.x; i < MMAX * 32; i += THIN_THREADS) {
            const int m = i / 32, c = (i % 32) * 4;
            if (m < M && n0 + c < N) {
                const float v[4] = {red[m][c], red[m][c + 1], red[m][c + 2], red[m][c + 3]};
                thin_store<4>(C, W, bias, M, N, m, n0 + c, v, split, beta, act);
            }
        }
    } else {
        for (int i = threadIdx.x; i < MMAX * 128; i += THIN_THREADS) {
            const int m = i / 128, c = i % 128;
            if (m < M && n0 + c < N) {
                const float v[1] = {red[m][c]};
                thin_store<1>(C, W, bias, M, N, m, n0 + c, v, split, beta, act);
            }
        }
    }
    if (!split || !((flags >> 4) & 1)) return;
    if (!splitk_arrive_last(counters, blockIdx.x)) return;
    if ((flags >> 5) & 1)
        splitk_tile_reduce<4, MMAX, 128, THIN_THREADS>(W, C, bias, M, N, 0, n0, gridDim.z, beta, act);
    else
        splitk_tile_reduce<1, MMAX, 128, THIN_THREADS>(W, C, bias, M, N, 0, n0, gridDim.z, beta, act);
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

#define THIN_ARGS                                                                                        \
    const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,                     \
        const float* __restrict__ bias, float* __restrict__ W, int* __restrict__ counters, int M, int N, \
        int K, int k_chunk, int beta, int act, int flags
#define THIN_PASS A, B, C, bias, W, counters, M, N, K, k_chunk, beta, act, flags

// Register budgets: R * NMAX = 32 / 64 / 128 partial sums; the 128-sum kernels keep 3 blocks per SM.
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_n8(THIN_ARGS) {
    thin_n_body<8, 4>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_n16(THIN_ARGS) {
    thin_n_body<16, 4>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 3) gemm_thin_n32(THIN_ARGS) {
    thin_n_body<32, 4>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_m8(THIN_ARGS) {
    thin_m_body<8>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 4) gemm_thin_m16(THIN_ARGS) {
    thin_m_body<16>(THIN_PASS);
}
extern "C" __global__ void __launch_bounds__(THIN_THREADS, 3) gemm_thin_m32(THIN_ARGS) {
    thin_m_body<32>(THIN_PASS);
}
