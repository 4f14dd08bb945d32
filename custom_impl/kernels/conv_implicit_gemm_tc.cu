// conv2d as implicit GEMMs on the tensor cores (NCHW, cross-correlation as in PyTorch): forward,
// backward-data, backward-weights with TF32 (TC_PREC 0) or BF16 (TC_PREC 1) products and FP32 accumulation,
// on the machinery of gemm_tc_tiles.cuh (cp.async pipeline, fragments rounded in registers).
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, (sh,sw) stride,
// (ph,pw) padding; P = (H + 2ph - R)/sh + 1, Q = (W + 2pw - S)/sw + 1.
//   y[n,k,p,q]  = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s]
//   dx[n,c,h,w] = sum_{k,r,s: (h+ph-r) = p*sh, (w+pw-s) = q*sw} W[k,c,r,s] dy[n,k,p,q]
//   dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]
// The GEMM shapes are those of conv_implicit_gemm.cu (the FP32 kernels):
//   conv_tc_fwd    M = K, cols = N*P*Q, reduction = C*R*S; split-K partials (K, cols) per grid.z slab,
//                  finished by conv_implicit_gemm.cu's conv_splitk_reduce_nchw (fixed order, with the bias)
//   conv_tc_wgrad  M = K, cols = C*R*S, reduction = N*P*Q; split-K partials (K, CRS) per slab, finished by
//                  gemm.cu's gemm_splitk_reduce
//   conv_tc_dgrad  one GEMM per stride phase (grid.z): M = C, cols = the phase's pixels, reduction =
//                  K * the phase's taps; stride 1 (one phase) may split-K instead (slabs (C, cols)).
// Every operand is gathered element by element (4-byte cp.async, zero-filled outside the image), except
// the forward's W, a plain (K, CRS) matrix.
#include "gemm_tc_tiles.cuh"

struct TcConvDims {
    int N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw;
};

#define TC_HD __host__ __device__ __forceinline__

// ---- gathered operands ----------------------------------------------------------------------------------
// A gathered operand element (mn, k) is one element of a tensor or zero (outside the image, past the end of
// the reduction or of the output). A loader's sources(i, k0, src) gives the four source pointers of the
// thread's chunk i of the tile starting at reduction index k0 (nullptr: zero); tc_gather_issue copies them
// with 4-byte zero-filling cp.async (the elements of a chunk are not contiguous in general). The index
// arithmetic is host-and-device code, so tests check it on the host against the plain formulas
// (tests/custom_impl/gpu/conv_tc_gather_check.cu).
//
// Cost: a runtime integer division compiles to ~20 instructions, and one warp issues a tile's loads and its
// mma.sync alone, so the divisions that split a flat index into (n, p, q) or (c, r, s) are done by
// multiply-and-shift (TcFastDiv, divisors prepared once per thread), once per chunk rather than once per
// element: the chunk's other three elements are reached by stepping, and a thread's output pixels (an
// mn-major operand's columns) are the same in every chunk, so the compiler computes them once per tile.

TC_HD unsigned tc_umulhi(unsigned a, unsigned b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return (unsigned)(((unsigned long long)a * b) >> 32);
#endif
}

// n / d for 0 <= n < 2^31 and 1 <= d < 2^31 as (umulhi(n, m) + n) >> s, with s = ceil(log2 d) and
// m = floor(2^32 (2^s - d) / d) + 1 (round-up reciprocal; hi + n < 2^32 since hi <= n < 2^31). A divisor of
// 0 (an empty phase, never divided by) is taken as 1.
struct TcFastDiv {
    int d;
    unsigned m;
    int s;
    TcFastDiv() = default;
    TC_HD explicit TcFastDiv(int divisor) {
        d = divisor > 1 ? divisor : 1;
        s = 0;
        while ((1ll << s) < d) ++s;
        m = (unsigned)(((1ull << 32) * ((1ull << s) - (unsigned long long)d)) / (unsigned long long)d + 1);
    }
    TC_HD int quot(int n) const { return (int)((tc_umulhi((unsigned)n, m) + (unsigned)n) >> s); }
    // v = (a * d + b * inner.d + c), b < d / inner.d, c < inner.d: a mixed-radix index split in two
    // multiply-shifts (this divisor is the outer extent, inner the innermost one).
    TC_HD void split3(int v, const TcFastDiv& inner, int& a, int& b, int& c) const {
        a = quot(v);
        const int rem = v - a * d;
        b = inner.quot(rem);
        c = rem - b * inner.d;
    }
};

// Chunk i of thread tid covers 4 elements of a BMN x BK tile: (mn, k + e) if KMAJ, else (mn + e, k).
template <int BMN, int BK, int NT, bool KMAJ>
struct TcChunks {
    static constexpr int CHUNKS = BMN * BK / 4;
    static constexpr int PER = CHUNKS / NT;
    static_assert(PER >= 1 && CHUNKS % NT == 0, "tile not divisible among threads");
    TC_HD static int mn(int tid, int i) {
        const int c = tid + i * NT;
        return KMAJ ? c / (BK / 4) : (c % (BMN / 4)) * 4;
    }
    TC_HD static int k(int tid, int i) {
        const int c = tid + i * NT;
        return KMAJ ? (c % (BK / 4)) * 4 : c / (BMN / 4);
    }
};

// An mn-major loader's columns are the same in every chunk of a thread (what its per-tile hoisting needs).
template <int BMN, int NT>
struct TcFixedColumns {
    static_assert(NT % (BMN / 4) == 0, "a thread's four columns must be the same in every chunk");
};

template <int BMN, int BK, int NT, bool KMAJ, class L>
__device__ __forceinline__ void tc_gather_issue(const L& l, float* S, int k0) {
    using Ch = TcChunks<BMN, BK, NT, KMAJ>;
    using Sm = TcSmem<BMN, BK, KMAJ>;
#pragma unroll
    for (int i = 0; i < Ch::PER; ++i) {
        const float* src[4];
        l.sources(i, k0, src);
        const int mn = Ch::mn(l.tid, i), kk = Ch::k(l.tid, i);
#pragma unroll
        for (int e = 0; e < 4; ++e)
            tc_cp4(S + Sm::at(KMAJ ? mn : mn + e, KMAJ ? kk + e : kk), src[e] ? src[e] : l.base(), src[e] != nullptr);
    }
}

// Forward B: (mn = j = (n,p,q) in [j0, cols), k = crs = (c,r,s) < k_end) -> x[n, c, p*sh-ph+r, q*sw-pw+s].
template <int BMN, int BK, int NT>
struct TcFwdColsLoader : TcFixedColumns<BMN, NT> {
    using Sm = TcSmem<BMN, BK, false>;
    using Ch = TcChunks<BMN, BK, NT, false>;
    const float* x;
    TcConvDims d;
    TcFastDiv pq_div, q_div, rs_div, s_div;
    int j0, cols, k_end, tid;

    TC_HD void init(const float* x_, const TcConvDims& d_, int j0_, int cols_, int k_end_, int tid_) {
        x = x_; d = d_; j0 = j0_; cols = cols_; k_end = k_end_; tid = tid_;
        pq_div = TcFastDiv(d.P * d.Q); q_div = TcFastDiv(d.Q); rs_div = TcFastDiv(d.R * d.S); s_div = TcFastDiv(d.S);
    }
    TC_HD const float* base() const { return x; }
    TC_HD void sources(int i, int k0, const float* (&src)[4]) const {
        const int j = j0 + Ch::mn(tid, 0);   // TcFixedColumns: chunk 0's columns are every chunk's
        int n, p, q, c, r, s;
        pq_div.split3(j, q_div, n, p, q);
        const int kk = k0 + Ch::k(tid, i);
        rs_div.split3(kk, s_div, c, r, s);
        const bool kok = kk < k_end;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int ih = p * d.sh - d.ph + r;
            const int iw = q * d.sw - d.pw + s;
            const bool ok = kok && j + e < cols && (unsigned)ih < (unsigned)d.H && (unsigned)iw < (unsigned)d.W;
            src[e] = ok ? x + (((long long)n * d.C + c) * d.H + ih) * d.W + iw : nullptr;
            if (++q == d.Q) { q = 0; if (++p == d.P) { p = 0; ++n; } }
        }
    }
    __device__ __forceinline__ void issue(float* S, int k0) const { tc_gather_issue<BMN, BK, NT, false>(*this, S, k0); }
};

// Backward-weights A: (mn = m < K, k = j = (n,p,q) < k_end) -> dy[n, m, p, q].
template <int BMN, int BK, int NT>
struct TcGradRowsLoader {
    using Sm = TcSmem<BMN, BK, true>;
    using Ch = TcChunks<BMN, BK, NT, true>;
    const float* dy;
    TcFastDiv pq_div;
    int K, mn0, k_end, tid;

    TC_HD void init(const float* dy_, const TcConvDims& d, int mn0_, int k_end_, int tid_) {
        dy = dy_; K = d.K; mn0 = mn0_; k_end = k_end_; tid = tid_; pq_div = TcFastDiv(d.P * d.Q);
    }
    TC_HD const float* base() const { return dy; }
    TC_HD void sources(int i, int k0, const float* (&src)[4]) const {
        const int m = mn0 + Ch::mn(tid, i);
        const int j = k0 + Ch::k(tid, i);
        int n = pq_div.quot(j);
        int pq = j - n * pq_div.d;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            src[e] = m < K && j + e < k_end ? dy + ((long long)n * K + m) * pq_div.d + pq : nullptr;
            if (++pq == pq_div.d) { pq = 0; ++n; }
        }
    }
    __device__ __forceinline__ void issue(float* S, int k0) const { tc_gather_issue<BMN, BK, NT, true>(*this, S, k0); }
};

// Backward-weights B: (mn = crs = (c,r,s) < C*R*S, k = j = (n,p,q) < k_end) -> x[n, c, p*sh-ph+r, q*sw-pw+s].
template <int BMN, int BK, int NT>
struct TcWgradColsLoader {
    using Sm = TcSmem<BMN, BK, true>;
    using Ch = TcChunks<BMN, BK, NT, true>;
    const float* x;
    TcConvDims d;
    TcFastDiv pq_div, q_div, rs_div, s_div;
    int mn0, k_end, tid;

    TC_HD void init(const float* x_, const TcConvDims& d_, int mn0_, int k_end_, int tid_) {
        x = x_; d = d_; mn0 = mn0_; k_end = k_end_; tid = tid_;
        pq_div = TcFastDiv(d.P * d.Q); q_div = TcFastDiv(d.Q); rs_div = TcFastDiv(d.R * d.S); s_div = TcFastDiv(d.S);
    }
    TC_HD const float* base() const { return x; }
    TC_HD void sources(int i, int k0, const float* (&src)[4]) const {
        const int crs = mn0 + Ch::mn(tid, i);
        int c, r, s, n, p, q;
        rs_div.split3(crs, s_div, c, r, s);
        const bool row_ok = c < d.C;
        const int j = k0 + Ch::k(tid, i);
        pq_div.split3(j, q_div, n, p, q);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int ih = p * d.sh - d.ph + r;
            const int iw = q * d.sw - d.pw + s;
            const bool ok = row_ok && j + e < k_end && (unsigned)ih < (unsigned)d.H && (unsigned)iw < (unsigned)d.W;
            src[e] = ok ? x + (((long long)n * d.C + c) * d.H + ih) * d.W + iw : nullptr;
            if (++q == d.Q) { q = 0; if (++p == d.P) { p = 0; ++n; } }
        }
    }
    __device__ __forceinline__ void issue(float* S, int k0) const { tc_gather_issue<BMN, BK, NT, true>(*this, S, k0); }
};

// Forward output: C[m = k, j = (n,p,q)] -> y[n, k, p, q] + b[k]; or (ws set) the raw partial into ws[m, j].
struct TcConvForwardEpilogue {
    float* y;
    const float* b;
    float* ws;
    int K, cols;
    TcFastDiv pq_div;   // by P*Q
    TC_HD void store2(int m, int j, float v0, float v1) const {
        if (m >= K) return;
        const float v[2] = {v0, v1};
#pragma unroll
        for (int f = 0; f < 2; ++f) {
            const int jj = j + f;
            if (jj >= cols) continue;
            if (ws) {
                ws[(long long)m * cols + jj] = v[f];
            } else {
                const int n = pq_div.quot(jj);
                y[((long long)n * K + m) * pq_div.d + (jj - n * pq_div.d)] = v[f] + (b ? b[m] : 0.f);
            }
        }
    }
};

// flags bit 0: W vectorisable (CRS % 4 == 0, 16-byte aligned); bit 1: split-K partials into ws.
extern "C" __global__ void __launch_bounds__(TC_NT, 1)
conv_tc_fwd(const float* __restrict__ x, const float* __restrict__ Wt, const float* __restrict__ b,
            float* __restrict__ y, float* __restrict__ ws, int N, int C, int H, int W, int K, int R, int S,
            int P, int Q, int sh, int sw, int ph, int pw, int k_chunk, int flags) {
    constexpr int BM = TC_BM, BN = TC_BN, BK = TC_BK, NT = TC_NT;
    const TcConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const int CRS = C * R * S;
    const int cols = N * P * Q;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(CRS, k_begin + k_chunk);
    const bool partial = (flags >> 1) & 1;
    TcMatrixLoader<BM, BK, NT, true> la;   // W as (K, CRS)
    la.p = Wt; la.ld = CRS; la.mn_size = K; la.mn0 = m0; la.k_end = k_end; la.tid = threadIdx.x;
    la.vec = flags & 1;
    TcFwdColsLoader<BN, BK, NT> lb;
    lb.init(x, d, n0, cols, k_end, threadIdx.x);
    TcConvForwardEpilogue ep{y, b, partial ? ws + (long long)blockIdx.z * K * cols : nullptr, K, cols, lb.pq_div};
    tc_gemm_tile<BM, BN, BK, TC_WM, TC_WN, true, false>(la, lb, ep, m0, n0, k_begin, k_end);
}

// out: dW (K, CRS) when gridDim.z == 1, else the split-K workspace (gridDim.z, K, CRS) of partial sums.
// flags bit 0: float2 stores (CRS even, out 8-byte aligned).
extern "C" __global__ void __launch_bounds__(TC_NT, 1)
conv_tc_wgrad(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out, int N, int C,
              int H, int W, int K, int R, int S, int P, int Q, int sh, int sw, int ph, int pw, int k_chunk,
              int flags) {
    constexpr int BM = TC_BM, BN = TC_BN, BK = TC_BK, NT = TC_NT;
    const TcConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const int CRS = C * R * S;
    const int NPQ = N * P * Q;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(NPQ, k_begin + k_chunk);
    TcGradRowsLoader<BM, BK, NT> la;
    la.init(dy, d, m0, k_end, threadIdx.x);
    TcWgradColsLoader<BN, BK, NT> lb;
    lb.init(x, d, n0, k_end, threadIdx.x);
    TcGemmEpilogue ep;
    ep.C = out + (size_t)blockIdx.z * K * CRS;
    ep.bias = nullptr; ep.M = K; ep.N = CRS; ep.beta = 0; ep.act = 0;
    ep.vec2 = flags & 1; ep.partial = true;
    tc_gemm_tile<BM, BN, BK, TC_WM, TC_WN, true, true>(la, lb, ep, m0, n0, k_begin, k_end);
}

// ---- backward-data: one implicit GEMM per stride phase (as conv_implicit_gemm.cu) -----------------------
// Pixels h with (h + ph) % sh == th only receive taps r = th + r'*sh (and likewise w, s): grid.z runs over
// the sh*sw phases (th, tw), each a dense GEMM: M = C, cols = N*Hh*Wh (pixels h = h0 + h'*sh,
// w = w0 + w'*sw), reduction = K*Rt*St with
//   A[c, (k,r',s')] = W[k, c, th + r'*sh, tw + s'*sw],  B[(k,r',s'), (n,h',w')] = dy[n, k, hq - r', wq - s']
// where hq = (h + ph - th)/sh (exact), zero where p = hq - r' or q = wq - s' falls outside [0,P) x [0,Q).
struct TcPhase {
    int th, tw, h0, w0, Hh, Wh, Rt, St;
};

TC_HD TcPhase tc_phase(const TcConvDims& d, int z) {
    TcPhase f;
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

// A: (mn = c < C, k = kk = (k, r', s') < k_end) -> W[k, c, th + r'*sh, tw + s'*sw].
template <int BMN, int BK, int NT>
struct TcWeightPhaseLoader {
    using Sm = TcSmem<BMN, BK, false>;
    using Ch = TcChunks<BMN, BK, NT, false>;
    const float* Wt;
    TcConvDims d;
    TcPhase f;
    TcFastDiv tap_div, st_div;   // by Rt*St, St
    int mn0, k_end, tid;

    TC_HD void init(const float* Wt_, const TcConvDims& d_, const TcPhase& f_, int mn0_, int k_end_, int tid_) {
        Wt = Wt_; d = d_; f = f_; mn0 = mn0_; k_end = k_end_; tid = tid_;
        tap_div = TcFastDiv(f.Rt * f.St); st_div = TcFastDiv(f.St);
    }
    TC_HD const float* base() const { return Wt; }
    TC_HD void sources(int i, int k0, const float* (&src)[4]) const {
        const int c = mn0 + Ch::mn(tid, i);
        const int kk = k0 + Ch::k(tid, i);
        int k, rp, sp;
        tap_div.split3(kk, st_div, k, rp, sp);
        const int RS = d.R * d.S;
        const float* w = Wt + ((long long)k * d.C + c) * RS + (f.th + rp * d.sh) * d.S + f.tw + sp * d.sw;
        const bool kok = kk < k_end;
#pragma unroll
        for (int e = 0; e < 4; ++e) src[e] = kok && c + e < d.C ? w + (long long)e * RS : nullptr;
    }
    __device__ __forceinline__ void issue(float* S, int k0) const { tc_gather_issue<BMN, BK, NT, false>(*this, S, k0); }
};

// B: (mn = j = (n,h',w') < cols, k = kk = (k, r', s') < k_end) -> dy[n, k, hq - r', wq - s'] with
// hq = (h0 + ph - th)/sh + h', wq = (w0 + pw - tw)/sw + w'.
template <int BMN, int BK, int NT>
struct TcGradPhaseColsLoader : TcFixedColumns<BMN, NT> {
    using Sm = TcSmem<BMN, BK, false>;
    using Ch = TcChunks<BMN, BK, NT, false>;
    const float* dy;
    TcConvDims d;
    TcFastDiv hw_div, w_div, tap_div, st_div;   // by Hh*Wh, Wh, Rt*St, St
    int hq0, wq0, Hh, j0, cols, k_end, tid;

    TC_HD void init(const float* dy_, const TcConvDims& d_, const TcPhase& f, int j0_, int cols_, int k_end_,
                    int tid_) {
        dy = dy_; d = d_; j0 = j0_; cols = cols_; k_end = k_end_; tid = tid_;
        hq0 = (f.h0 + d.ph - f.th) / d.sh;   // exact: h0 + ph = th (mod sh)
        wq0 = (f.w0 + d.pw - f.tw) / d.sw;
        Hh = f.Hh;
        hw_div = TcFastDiv(f.Hh * f.Wh); w_div = TcFastDiv(f.Wh); tap_div = TcFastDiv(f.Rt * f.St);
        st_div = TcFastDiv(f.St);
    }
    TC_HD const float* base() const { return dy; }
    TC_HD void sources(int i, int k0, const float* (&src)[4]) const {
        const int j = j0 + Ch::mn(tid, 0);   // TcFixedColumns: chunk 0's columns are every chunk's
        // NOTE: split3 written out: through it, ptxas spilled 24-28 bytes in this kernel's 128x128 configs
        // (255 registers); written out, 8-16 bytes (nvcc 13.0, sm_90, -Xptxas -v)
        int n = hw_div.quot(j);
        const int hw = j - n * hw_div.d;
        int hh = w_div.quot(hw);
        int ww = hw - hh * w_div.d;
        const int kk = k0 + Ch::k(tid, i);
        const int k = tap_div.quot(kk);
        const int rem = kk - k * tap_div.d;
        const int rp = st_div.quot(rem);
        const int sp = rem - rp * st_div.d;
        const bool kok = kk < k_end;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int p = hq0 + hh - rp;
            const int q = wq0 + ww - sp;
            const bool ok = kok && j + e < cols && (unsigned)p < (unsigned)d.P && (unsigned)q < (unsigned)d.Q;
            src[e] = ok ? dy + (((long long)n * d.K + k) * d.P + p) * d.Q + q : nullptr;
            if (++ww == w_div.d) { ww = 0; if (++hh == Hh) { hh = 0; ++n; } }
        }
    }
    __device__ __forceinline__ void issue(float* S, int k0) const { tc_gather_issue<BMN, BK, NT, false>(*this, S, k0); }
};

// C[m = c, j = (n,h',w')] -> dx[n, c, h0 + h'*sh, w0 + w'*sw]; or (ws set) the raw partial into ws[m, j].
struct TcPhaseGradEpilogue {
    float* dx;
    float* ws;
    TcConvDims d;
    TcPhase f;
    int cols;
    TcFastDiv hw_div, w_div;   // by Hh*Wh, Wh
    TC_HD void store2(int m, int j, float v0, float v1) const {
        if (m >= d.C) return;
        const float v[2] = {v0, v1};
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int jj = j + e;
            if (jj >= cols) continue;
            if (ws) {
                ws[(long long)m * cols + jj] = v[e];
                continue;
            }
            int n, hh, ww;
            hw_div.split3(jj, w_div, n, hh, ww);
            dx[(((long long)n * d.C + m) * d.H + f.h0 + hh * d.sh) * d.W + f.w0 + ww * d.sw] = v[e];
        }
    }
};

// grid.z: the stride phases, or (stride 1, `ws` set) the split-K slabs of the one phase. A phase with no
// taps (stride > kernel) runs an empty reduction and writes zeros.
extern "C" __global__ void __launch_bounds__(TC_NT, 1)
conv_tc_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx, int N, int C,
              int H, int W, int K, int R, int S, int P, int Q, int sh, int sw, int ph, int pw,
              float* __restrict__ ws, int k_chunk) {
    constexpr int BM = TC_BM, BN = TC_BN, BK = TC_BK, NT = TC_NT;
    const TcConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const bool split = ws != nullptr;
    const TcPhase f = tc_phase(d, split ? 0 : blockIdx.z);
    const int cols = N * f.Hh * f.Wh;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    if (n0 >= cols) return;  // the whole block: this phase has fewer pixels than the grid covers
    const int red = K * f.Rt * f.St;
    const int k_begin = split ? blockIdx.z * k_chunk : 0;
    const int k_end = split ? min(red, k_begin + k_chunk) : red;
    TcWeightPhaseLoader<BM, BK, NT> la;
    la.init(Wt, d, f, m0, k_end, threadIdx.x);
    TcGradPhaseColsLoader<BN, BK, NT> lb;
    lb.init(dy, d, f, n0, cols, k_end, threadIdx.x);
    TcPhaseGradEpilogue ep{dx, split ? ws + (long long)blockIdx.z * C * cols : nullptr, d, f, cols, lb.hw_div,
                           lb.w_div};   // the loader's divisors: the same registers
    tc_gemm_tile<BM, BN, BK, TC_WM, TC_WN, false, false>(la, lb, ep, m0, n0, k_begin, k_end);
}
