// conv2d as implicit GEMMs (NCHW, cross-correlation as in PyTorch): forward, backward-data, backward-weights,
// bias gradient.
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, (sh,sw) stride,
// (ph,pw) padding; P = (H + 2ph - R)/sh + 1, Q = (W + 2pw - S)/sw + 1.
//   y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
//   dx[n,c,h,w] = sum_{k,r,s: (h+ph-r) = p*sh, (w+pw-s) = q*sw} W[k,c,r,s] dy[n,k,p,q]
//   dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s];   db[k] = sum_{n,p,q} dy[n,k,p,q]
//
// Implicit GEMMs on the gemm_tiles.cuh machinery (tile config from GEMM_* defines), no im2col buffer:
// operand tiles are gathered straight from x / dy / W with index arithmetic.
//   conv_implicit_gemm_fwd    M = K, cols = N*P*Q, reduction = C*R*S    (A = W as (K, CRS); B = im2col(x));
//                             split-K partials finished by conv_splitk_reduce_nchw
//   conv_implicit_gemm_dgrad  one GEMM per stride phase (grid.z): M = C, cols = the phase's pixels,
//                             reduction = K * the phase's taps (see its section)
//   conv_implicit_gemm_wgrad  M = K, cols = C*R*S, reduction = N*P*Q    (A = dy as (K, NPQ); B = im2col(x)^T),
//                             split-K over the reduction: block z writes a partial (K, CRS) sum to
//                             dW + z*K*CRS and gemm_splitk_reduce adds them in order (deterministic).
//   conv_pointwise_fwd / conv_pointwise_dgrad  the forward and backward-data of a 1x1 kernel with stride 1
//                             and no padding as plain GEMMs over x or dy seen as (channels, N*H*W): float4
//                             loads and stores where H*W % 4 == 0 (see their section)
//   conv_bias_grad_*          db[k]: blocks over (k, chunk of n), fixed-order tree and chunk sums (deterministic).
#include "gemm_tiles.cuh"

#define OUT_OF_IMAGE (-(1 << 29))   // a row/column origin that fails every bounds check

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15) == 0;
}

// ---- bias gradient ------------------------------------------------------------------------------------
// db[k] = sum over n, p, q of dy[n, k, p, q], deterministic (fixed partition and order, no atomics):
//   conv_bias_grad_partial  block (k, s) sums the images n in [s*nchunk, (s+1)*nchunk) of channel k and
//                           writes out[k * gridDim.y + s] (= db[k] itself when gridDim.y == 1). With
//                           `counters` (K zeroed ints, left zeroed) the last block of channel k to finish
//                           also sums the channel's partials in s order into db[k] (as
//                           conv_bias_grad_finish: the same bits), so no second launch is needed.
//   conv_bias_grad_finish   db[k] = sum over s in order of part[k * S + s].
// Splitting over n keeps every SM busy when K is small (K = 32 blocks alone used 32 of 132 SMs and read
// up to 3 MB each). blockDim.x == 256.
__device__ __forceinline__ float lane_sum(float v) { return v; }
__device__ __forceinline__ float lane_sum(float4 v) { return (v.x + v.y) + (v.z + v.w); }

// This thread's share of sum over n in [n0, n1), pq < PQV of dy[(n*K + k)*PQV + pq], T = float or float4
// (PQV = P*Q or P*Q/4): elements i = tid + 256*t, their (n, pq) stepped without a division per element, in
// two chains of adds that alternate (a fixed order: deterministic).
template <typename T>
__device__ __forceinline__ float bias_chunk_sum(const T* __restrict__ dy, int k, int K, int PQV, int n0, int n1) {
    const long long count = (long long)max(n1 - n0, 0) * PQV;
    const int dn = 256 / PQV, dpq = 256 % PQV;
    int n = n0 + threadIdx.x / PQV;
    int pq = threadIdx.x % PQV;
    float acc0 = 0.f, acc1 = 0.f;
    long long i = threadIdx.x;
#pragma unroll 2
    for (; i + 256 < count; i += 512) {
        const T a = dy[((long long)n * K + k) * PQV + pq];
        n += dn; pq += dpq;
        if (pq >= PQV) { pq -= PQV; ++n; }
        const T b = dy[((long long)n * K + k) * PQV + pq];
        n += dn; pq += dpq;
        if (pq >= PQV) { pq -= PQV; ++n; }
        acc0 += lane_sum(a);
        acc1 += lane_sum(b);
    }
    if (i < count) acc0 += lane_sum(dy[((long long)n * K + k) * PQV + pq]);
    return acc0 + acc1;
}

extern "C" __global__ void conv_bias_grad_partial(const float* __restrict__ dy, float* __restrict__ out,
                                                  float* __restrict__ db, int* __restrict__ counters,
                                                  int N, int K, int PQ, int nchunk, int vec) {
    __shared__ float part[256];
    const int k = blockIdx.x;
    const int n0 = blockIdx.y * nchunk;
    const int n1 = min(N, n0 + nchunk);
    // vec (PQ a multiple of 4 and dy 16-byte aligned: every (n, k) row starts 16-byte aligned): the rows are
    // read as float4s (4x fewer loads for the same bytes).
    const float acc = vec ? bias_chunk_sum(reinterpret_cast<const float4*>(dy), k, K, PQ / 4, n0, n1)
                          : bias_chunk_sum(dy, k, K, PQ, n0, n1);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int half = 128; half > 0; half >>= 1) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    out[(long long)k * gridDim.y + blockIdx.y] = part[0];
    if (counters == nullptr || gridDim.y == 1) return;
    // Serial finish (threadFenceReduction pattern: the partial is visible device-wide before it is counted;
    // the last block reads the others' partials from L2, __ldcg, since its L1 does not see their writes).
    __threadfence();
    if (atomicAdd(counters + k, 1) != (int)gridDim.y - 1) return;
    __threadfence();
    const float* pk = out + (long long)k * gridDim.y;
    const int S = gridDim.y;
    float v = 0.f;
    int s = 0;
    for (; s + 8 <= S; s += 8) {   // 8 loads in flight, then the adds in s order
        float t[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) t[j] = __ldcg(pk + s + j);
#pragma unroll
        for (int j = 0; j < 8; ++j) v += t[j];
    }
    for (; s < S; ++s) v += __ldcg(pk + s);
    db[k] = v;
    counters[k] = 0;   // ready for the next launch (stream order)
}

extern "C" __global__ void conv_bias_grad_finish(const float* __restrict__ part, float* __restrict__ db,
                                                 int K, int S) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K) return;
    float v = 0.f;
    for (int s = 0; s < S; ++s) v += part[(long long)k * S + s];
    db[k] = v;
}

// ---- implicit GEMM loaders and epilogues --------------------------------------------------------------

// A loader's float4s into its [k][mn] shared-memory tile: vector i of thread tid (v = tid + i * NT) holds
// 4 consecutive mn at one k, k row v / (BMN / 4), mn v % (BMN / 4) * 4 (the mn-vector mapping).
template <int BMN, int NT, int LOADS>
__device__ __forceinline__ void store_mn_vectors(float* Sm, int tid, const float4 (&r)[LOADS]) {
    constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
    for (int i = 0; i < LOADS; ++i) {
        int v = tid + i * NT;
        *reinterpret_cast<float4*>(Sm + (v / (BMN / 4)) * LDS + (v % (BMN / 4)) * 4) = r[i];
    }
}

struct ConvDims {
    int N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw;
};

// Forward B operand: B[kk = (c,r,s), j = (n,p,q)] = x[n, c, p*sh-ph+r, q*sw-pw+s] (zero in the padding);
// mn-vector mapping: 4 consecutive j at one kk. The (n,p,q) of the thread's columns never change, so
// their image offset and window origin are computed once.
template <int BMN, int BK, int NT>
struct Im2colColsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* x;
    int H, W, RS, S, k_end, tid;
    long long base[LOADS][4];  // n*C*H*W
    int ih0[LOADS][4];         // p*sh - ph, or OUT_OF_IMAGE for columns past the end
    int iw0[LOADS][4];         // q*sw - pw
    float4 r[LOADS];

    __device__ __forceinline__ void init(const ConvDims& d, int j0, int cols) {
        x = nullptr; H = d.H; W = d.W; RS = d.R * d.S; S = d.S;
        const int PQ = d.P * d.Q;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int mv = (v % (BMN / 4)) * 4;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int j = j0 + mv + e;
                int n = j / PQ;
                int pq = j - n * PQ;
                int p = pq / d.Q;
                int q = pq - p * d.Q;
                base[i][e] = (long long)n * d.C * d.H * d.W;
                ih0[i][e] = j < cols ? p * d.sh - d.ph : OUT_OF_IMAGE;
                iw0[i][e] = q * d.sw - d.pw;
            }
        }
    }
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kk = k0 + v / (BMN / 4);
            int c = kk / RS;
            int rs = kk - c * RS;
            int rr = rs / S;
            int ss = rs - rr * S;
            bool kok = kk < k_end;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int ih = ih0[i][e] + rr;
                int iw = iw0[i][e] + ss;
                bool ok = kok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                o[e] = ok ? x[base[i][e] + ((long long)c * H + ih) * W + iw] : 0.f;
            }
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const { store_mn_vectors<BMN, NT>(Sm, tid, r); }
};

// Forward output: C[m = k, j = (n,p,q)] -> y[n, k, p, q] + b[k]; or, split-K (`ws` set), the raw partial
// sum of this block's reduction range into ws[m, j] (row-major (K, cols), one slab per blockIdx.z).
struct ConvForwardEpilogue {
    float* y;
    const float* b;
    float* ws;
    int K, PQ, cols;
    bool ws_vec;  // cols % 4 == 0 and ws 16-byte aligned: one float4 store per full group
    __device__ __forceinline__ void store4(int m, int j, const float (&v)[4]) const {
        if (m >= K) return;
        if (ws) {
            float* row = ws + (long long)m * cols;
            if (ws_vec && j + 3 < cols) {
                *reinterpret_cast<float4*>(row + j) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
#pragma unroll
                for (int f = 0; f < 4; ++f)
                    if (j + f < cols) row[j + f] = v[f];
            }
            return;
        }
        const float bias = b ? b[m] : 0.f;
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            int jj = j + f;
            if (jj < cols) {
                int n = jj / PQ;
                int pq = jj - n * PQ;
                y[((long long)n * K + m) * PQ + pq] = v[f] + bias;
            }
        }
    }
};

// flags bit 0: W vectorisable (CRS % 4 == 0, aligned); bit 1: split-K partials into ws (gridDim.z slabs of
// (K, N*P*Q), reduction range [z*k_chunk, (z+1)*k_chunk)), finished by conv_splitk_reduce_nchw.
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_implicit_gemm_fwd(const float* __restrict__ x, const float* __restrict__ Wt, const float* __restrict__ b,
                float* __restrict__ y, float* __restrict__ ws, int N, int C, int H, int W, int K, int R, int S,
                int P, int Q, int sh, int sw, int ph, int pw, int k_chunk, int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const ConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const int CRS = C * R * S;
    const int cols = N * P * Q;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(CRS, k_begin + k_chunk);
    const bool partial = (flags >> 1) & 1;
    KVecLoader<BM, BK, NT> la;  // W as (K, CRS)
    la.p = Wt; la.ld = CRS; la.mn_size = K; la.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x;
    la.vec = flags & 1;
    Im2colColsLoader<BN, BK, NT> lb;
    lb.tid = threadIdx.x;
    lb.init(d, n0, cols);
    lb.x = x; lb.k_end = k_end;
    float* slab = partial ? ws + (long long)blockIdx.z * K * cols : nullptr;
    ConvForwardEpilogue ep{y, b, slab, K, P * Q, cols,
                           partial && cols % 4 == 0 && (reinterpret_cast<unsigned long long>(ws) & 15) == 0};
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}

// y[n, k, pq] = b[k] + sum over z (in order: deterministic) of ws[z, k, n*PQ + pq]; one thread per output.
// Finishes the split-K forward (k = out-channel) and stride-1 backward-data (k = in-channel, no bias).
extern "C" __global__ void conv_splitk_reduce_nchw(const float* __restrict__ ws, float* __restrict__ y,
                                                      const float* __restrict__ b, int N, int K, int PQ,
                                                      int splits) {
    const long long total = (long long)N * K * PQ;
    const long long cols = (long long)N * PQ;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long n = idx / ((long long)K * PQ);
        const int rem = (int)(idx - n * K * PQ);
        const int k = rem / PQ;
        const int pq = rem - k * PQ;
        const float* src = ws + (long long)k * cols + n * PQ + pq;
        float v = 0.f;
        for (int z = 0; z < splits; ++z) v += src[(long long)z * K * cols];
        y[idx] = v + (b ? b[k] : 0.f);
    }
}

// Backward-weights A operand: A[m = k, j = (n,p,q)] = dy[n, k, p, q]; k-vector mapping (4 consecutive j
// at one k). The (n, pq) of the first j is found by division, the next three by stepping.
template <int BMN, int BK, int NT>
struct GradRowsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* dy;
    int K, PQ, k_end, mn0, tid;
    float4 r[LOADS];
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int m = mn0 + v / (BK / 4);
            int j = k0 + (v % (BK / 4)) * 4;
            int n = j / PQ;
            int pq = j - n * PQ;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                o[e] = (m < K && j + e < k_end) ? dy[((long long)n * K + m) * PQ + pq] : 0.f;
                if (++pq == PQ) { pq = 0; ++n; }
            }
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int row = v / (BK / 4);
            int kv = (v % (BK / 4)) * 4;
            Sm[(kv + 0) * LDS + row] = r[i].x;
            Sm[(kv + 1) * LDS + row] = r[i].y;
            Sm[(kv + 2) * LDS + row] = r[i].z;
            Sm[(kv + 3) * LDS + row] = r[i].w;
        }
    }
};

// Backward-weights B operand: B[crs = (c,r,s), j = (n,p,q)] = x[n, c, p*sh-ph+r, q*sw-pw+s];
// k-vector mapping (4 consecutive j at one crs); (c, r, s) of the thread's rows computed once.
template <int BMN, int BK, int NT>
struct Im2colRowsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    const float* x;
    int C, H, W, P, Q, sh, sw, k_end, tid;
    long long coff[LOADS];  // c*H*W
    int r0[LOADS];          // r - ph, or OUT_OF_IMAGE for rows past C*R*S
    int s0[LOADS];          // s - pw
    float4 rg[LOADS];

    __device__ __forceinline__ void init(const ConvDims& d, int mn0) {
        C = d.C; H = d.H; W = d.W; P = d.P; Q = d.Q; sh = d.sh; sw = d.sw;
        const int RS = d.R * d.S;
        const int CRS = d.C * RS;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int crs = mn0 + v / (BK / 4);
            int c = crs / RS;
            int rs = crs - c * RS;
            int r = rs / d.S;
            int s = rs - r * d.S;
            coff[i] = (long long)c * d.H * d.W;
            r0[i] = crs < CRS ? r - d.ph : OUT_OF_IMAGE;
            s0[i] = s - d.pw;
        }
    }
    __device__ __forceinline__ void load(int k0) {
        const int PQ = P * Q;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int j = k0 + (v % (BK / 4)) * 4;
            int n = j / PQ;
            int pq = j - n * PQ;
            int p = pq / Q;
            int q = pq - p * Q;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int ih = p * sh + r0[i];
                int iw = q * sw + s0[i];
                bool ok = j + e < k_end && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                o[e] = ok ? x[((long long)n * C * H * W) + coff[i] + (long long)ih * W + iw] : 0.f;
                if (++q == Q) { q = 0; if (++p == P) { p = 0; ++n; } }
            }
            rg[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int row = v / (BK / 4);
            int kv = (v % (BK / 4)) * 4;
            Sm[(kv + 0) * LDS + row] = rg[i].x;
            Sm[(kv + 1) * LDS + row] = rg[i].y;
            Sm[(kv + 2) * LDS + row] = rg[i].z;
            Sm[(kv + 3) * LDS + row] = rg[i].w;
        }
    }
};

// out: dW (K, CRS) when gridDim.z == 1, else the split-K workspace (gridDim.z, K, CRS) of partial sums.
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_implicit_gemm_wgrad(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
                         int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                         int sh, int sw, int ph, int pw, int k_chunk, int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const ConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const int CRS = C * R * S;
    const int NPQ = N * P * Q;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(NPQ, k_begin + k_chunk);
    GradRowsLoader<BM, BK, NT> la;
    la.dy = dy; la.K = K; la.PQ = P * Q; la.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x;
    Im2colRowsLoader<BN, BK, NT> lb;
    lb.tid = threadIdx.x;
    lb.init(d, n0);
    lb.x = x; lb.k_end = k_end;
    GemmEpilogue ep;
    ep.C = out + (size_t)blockIdx.z * K * CRS;
    ep.bias = nullptr; ep.M = K; ep.N = CRS; ep.beta = 0; ep.act = 0;
    ep.vec = flags & 1; ep.partial = true;
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}

// ---- backward-data: one implicit GEMM per stride phase -------------------------------------------------
// Pixels h with (h + ph) % sh == th only receive taps r = th + r'*sh (and likewise w, s), so grid.z runs
// over the sh*sw phases (th, tw) and each phase is a dense GEMM with no skipped (zero) taps:
//   M = C, cols = N*Hh*Wh (the phase's pixels h = h0 + h'*sh, w = w0 + w'*sw), reduction = K*Rt*St,
//   A[c, (k,r',s')] = W[k, c, th + r'*sh, tw + s'*sw],  B[(k,r',s'), (n,h',w')] = dy[n, k, hq - r', wq - s']
// with hq = (h + ph - th)/sh (exact), zero where p = hq - r' or q = wq - s' falls outside [0,P) x [0,Q).
// A phase with no taps (Rt or St = 0, e.g. stride > kernel) writes zeros. For stride 1 it is one phase.
struct ConvPhase {
    int th, tw;   // tap residues
    int h0, w0;   // first pixel of the phase
    int Hh, Wh;   // pixels of the phase per image
    int Rt, St;   // taps of the phase
};

__device__ __forceinline__ ConvPhase conv_phase(const ConvDims& d, int z) {
    ConvPhase f;
    f.th = z / d.sw;
    f.tw = z - f.th * d.sw;
    f.h0 = ((f.th - d.ph) % d.sh + d.sh) % d.sh;
    f.w0 = ((f.tw - d.pw) % d.sw + d.sw) % d.sw;
    f.Hh = f.h0 < d.H ? (d.H - f.h0 + d.sh - 1) / d.sh : 0;
    f.Wh = f.w0 < d.W ? (d.W - f.w0 + d.sw - 1) / d.sw : 0;
    f.Rt = f.th < d.R ? (d.R - f.th + d.sh - 1) / d.sh : 0;
    f.St = f.tw < d.S ? (d.S - f.tw + d.sw - 1) / d.sw : 0;
    return f;
}

template <int BMN, int BK, int NT>
struct WeightPhaseLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* Wt;
    int C, R, S, RS, RtSt, St, th, tw, sh, sw, k_end, mn0, tid;
    float4 r[LOADS];
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kk = k0 + v / (BMN / 4);
            int c = mn0 + (v % (BMN / 4)) * 4;
            int k = kk / RtSt;
            int rem = kk - k * RtSt;
            int rp = rem / St;
            int sp = rem - rp * St;
            int tap = (th + rp * sh) * S + tw + sp * sw;   // r*S + s, always inside the kernel
            bool kok = kk < k_end;
            const float* q = Wt + (long long)k * C * RS + tap;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) o[e] = (kok && c + e < C) ? q[(long long)(c + e) * RS] : 0.f;
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const { store_mn_vectors<BMN, NT>(Sm, tid, r); }
};

template <int BMN, int BK, int NT>
struct GradPhaseColsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    const float* dy;
    int P, Q, RtSt, St, k_end, tid;
    long long base[LOADS][4];  // n*K*P*Q
    int hq[LOADS][4];          // (h + ph - th)/sh, or OUT_OF_IMAGE for columns past the end
    int wq[LOADS][4];          // (w + pw - tw)/sw
    float4 r[LOADS];

    __device__ __forceinline__ void init(const ConvDims& d, const ConvPhase& f, int j0, int cols) {
        P = d.P; Q = d.Q; RtSt = f.Rt * f.St; St = f.St;
        const int HWh = f.Hh * f.Wh;
        const int hq0 = (f.h0 + d.ph - f.th) / d.sh;   // exact: h0 + ph = th (mod sh)
        const int wq0 = (f.w0 + d.pw - f.tw) / d.sw;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int mv = (v % (BMN / 4)) * 4;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int j = j0 + mv + e;
                int n = j / HWh;
                int hw = j - n * HWh;
                int hh = hw / f.Wh;
                int ww = hw - hh * f.Wh;
                base[i][e] = (long long)n * d.K * d.P * d.Q;
                hq[i][e] = j < cols ? hq0 + hh : OUT_OF_IMAGE;
                wq[i][e] = wq0 + ww;
            }
        }
    }
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kk = k0 + v / (BMN / 4);
            int k = kk / RtSt;
            int rem = kk - k * RtSt;
            int rp = rem / St;
            int sp = rem - rp * St;
            bool kok = kk < k_end;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int p = hq[i][e] - rp;
                int q = wq[i][e] - sp;
                bool ok = kok && (unsigned)p < (unsigned)P && (unsigned)q < (unsigned)Q;
                o[e] = ok ? dy[base[i][e] + ((long long)k * P + p) * Q + q] : 0.f;
            }
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const { store_mn_vectors<BMN, NT>(Sm, tid, r); }
};

// C[m = c, j = (n,h',w')] -> dx[n, c, h0 + h'*sh, w0 + w'*sw].
struct ConvPhaseGradEpilogue {
    float* dx;
    float* ws;  // split-K (stride 1 only): raw partial sums into ws[m, j] ((C, cols) row-major), else null
    int C, H, W, HWh, Wh, h0, w0, sh, sw, cols;
    __device__ __forceinline__ void store4(int m, int j, const float (&v)[4]) const {
        if (m >= C) return;
        if (ws) {
#pragma unroll
            for (int f = 0; f < 4; ++f)
                if (j + f < cols) ws[(long long)m * cols + j + f] = v[f];
            return;
        }
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            int jj = j + f;
            if (jj < cols) {
                int n = jj / HWh;
                int hw = jj - n * HWh;
                int hh = hw / Wh;
                int ww = hw - hh * Wh;
                dx[(((long long)n * C + m) * H + h0 + hh * sh) * W + w0 + ww * sw] = v[f];
            }
        }
    }
};

extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_implicit_gemm_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
                      int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                      int sh, int sw, int ph, int pw, float* __restrict__ ws, int k_chunk) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const ConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    // grid.z: the stride phases, or (stride 1, `ws` set) the split-K slabs of the one phase
    const bool split = ws != nullptr;
    const ConvPhase f = conv_phase(d, split ? 0 : blockIdx.z);
    const int cols = N * f.Hh * f.Wh;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    if (n0 >= cols) return;  // the whole block: this phase has fewer pixels than the grid covers
    const int red = K * f.Rt * f.St;
    const int k_begin = split ? blockIdx.z * k_chunk : 0;
    const int k_end = split ? min(red, k_begin + k_chunk) : red;
    WeightPhaseLoader<BM, BK, NT> la;
    la.Wt = Wt; la.C = C; la.R = R; la.S = S; la.RS = R * S; la.RtSt = f.Rt * f.St; la.St = f.St;
    la.th = f.th; la.tw = f.tw; la.sh = sh; la.sw = sw; la.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x;
    GradPhaseColsLoader<BN, BK, NT> lb;
    lb.tid = threadIdx.x;
    lb.init(d, f, n0, cols);
    lb.dy = dy; lb.k_end = k_end;
    float* slab = split ? ws + (long long)blockIdx.z * C * cols : nullptr;
    ConvPhaseGradEpilogue ep{dx, slab, C, H, W, f.Hh * f.Wh, f.Wh, f.h0, f.w0, sh, sw, cols};
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}


// ---- 1x1 convolutions, stride 1, no padding: plain GEMMs ------------------------------------------------
// x (N, C, HW) and dy (N, K, HW) are (channels, N*HW) matrices whose column j = (n, hw) of channel c sits at
// src[(n*CH + c)*HW + hw]. With HW % 4 == 0 and 16-byte aligned arrays (the host's condition) a 4-column
// group is one float4 of one image's plane: the loader keeps one offset per group instead of the im2col
// loaders' window origins (fewer registers, no index divisions in the main loop) and loads vectors; the
// epilogue stores vectors.
//   conv_pointwise_fwd    M = K, cols = N*HW, reduction = C:  A = W as (K, C), B = x
//   conv_pointwise_dgrad  M = C, cols = N*HW, reduction = K:  A = W^T (W read as (K, C), c fastest), B = dy
// Split-K (flags bit 1): block z sums [z*k_chunk, (z+1)*k_chunk) into ws + z*M*cols ((M, cols) row-major),
// finished by conv_splitk_reduce_nchw as the implicit GEMMs' partials are.
template <int BMN, int BK, int NT>
struct PointwiseColsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* src;
    int HW, k_end, tid;
    long long off[LOADS];   // (n*CH)*HW + hw of the group's first column, or -1 past the last column
    float4 r[LOADS];

    __device__ __forceinline__ void init(int j0, int cols, int CH) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int j = j0 + ((tid + i * NT) % (BMN / 4)) * 4;
            int n = j / HW;
            off[i] = j < cols ? (long long)n * CH * HW + (j - n * HW) : -1;
        }
    }
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int kk = k0 + (tid + i * NT) / (BMN / 4);
            r[i] = kk < k_end && off[i] >= 0
                       ? __ldg(reinterpret_cast<const float4*>(src + off[i] + (long long)kk * HW))
                       : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const { store_mn_vectors<BMN, NT>(Sm, tid, r); }
};

// C[m, j = (n, hw)] -> out[(n*M + m)*HW + hw] (+ bias[m]), or the raw partial into ws[m*cols + j]; a group
// (j % 4 == 0, cols % 4 == 0) is all in or all out, one float4.
struct PointwiseEpilogue {
    float* out;
    const float* bias;
    float* ws;
    int M, HW, cols;
    __device__ __forceinline__ void store4(int m, int j, const float (&v)[4]) const {
        if (m >= M || j >= cols) return;
        if (ws) {
            *reinterpret_cast<float4*>(ws + (long long)m * cols + j) = make_float4(v[0], v[1], v[2], v[3]);
            return;
        }
        const float b = bias ? bias[m] : 0.f;
        const int n = j / HW;
        *reinterpret_cast<float4*>(out + ((long long)n * M + m) * HW + (j - n * HW)) =
            make_float4(v[0] + b, v[1] + b, v[2] + b, v[3] + b);
    }
};

// flags bit 0: W rows vectorisable (C % 4 == 0 for the forward's (K, C) rows, aligned); bit 1: split-K.
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_pointwise_fwd(const float* __restrict__ x, const float* __restrict__ Wt, const float* __restrict__ b,
                   float* __restrict__ y, float* __restrict__ ws, int N, int C, int HW, int K, int k_chunk,
                   int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const int cols = N * HW;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(C, k_begin + k_chunk);
    const bool partial = (flags >> 1) & 1;
    KVecLoader<BM, BK, NT> la;   // W as (K, C)
    la.p = Wt; la.ld = C; la.mn_size = K; la.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x; la.vec = flags & 1;
    PointwiseColsLoader<BN, BK, NT> lb;
    lb.src = x; lb.HW = HW; lb.k_end = k_end; lb.tid = threadIdx.x;
    lb.init(n0, cols, C);
    PointwiseEpilogue ep{y, b, partial ? ws + (long long)blockIdx.z * K * cols : nullptr, K, HW, cols};
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}

// flags bit 0: W's (K, C) rows read as float4s along c (C % 4 == 0, aligned); bit 1: split-K.
extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_pointwise_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
                     float* __restrict__ ws, int N, int C, int HW, int K, int k_chunk, int flags) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const int cols = N * HW;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const bool partial = (flags >> 1) & 1;
    MNVecLoader<BM, BK, NT> la;  // A[c, k] = W[k, c]: element (m, kk) at kk * C + m
    la.p = Wt; la.ld = C; la.mn_size = C; la.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x; la.vec = flags & 1;
    PointwiseColsLoader<BN, BK, NT> lb;
    lb.src = dy; lb.HW = HW; lb.k_end = k_end; lb.tid = threadIdx.x;
    lb.init(n0, cols, K);
    PointwiseEpilogue ep{dx, nullptr, partial ? ws + (long long)blockIdx.z * C * cols : nullptr, C, HW, cols};
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, k_begin, k_end);
}
