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

// x[n, c, p*sh-ph+r, q*sw-pw+s] for output pixel j = (n,p,q) and tap crs = (c,r,s); nullptr outside the
// image, for j >= j_end or crs >= crs_end.
struct Im2colAt {
    const float* x;
    TcConvDims d;
    int j_end, crs_end;
    __device__ __forceinline__ const float* base() const { return x; }
    __device__ __forceinline__ const float* gather(int j, int crs) const {
        if (j >= j_end || crs >= crs_end) return nullptr;
        const int PQ = d.P * d.Q, RS = d.R * d.S;
        const int n = j / PQ;
        const int pq = j - n * PQ;
        const int p = pq / d.Q;
        const int q = pq - p * d.Q;
        const int c = crs / RS;
        const int rs = crs - c * RS;
        const int r = rs / d.S;
        const int s = rs - r * d.S;
        const int ih = p * d.sh - d.ph + r;
        const int iw = q * d.sw - d.pw + s;
        if ((unsigned)ih >= (unsigned)d.H || (unsigned)iw >= (unsigned)d.W) return nullptr;
        return x + (((long long)n * d.C + c) * d.H + ih) * d.W + iw;
    }
};

struct FwdColsAt : Im2colAt {   // forward B: (mn = j, k = crs)
    __device__ __forceinline__ const float* at(int mn, int k) const { return gather(mn, k); }
};
struct WgradColsAt : Im2colAt {   // backward-weights B: (mn = crs, k = j)
    __device__ __forceinline__ const float* at(int mn, int k) const { return gather(k, mn); }
};

// backward-weights A: (mn = k, k = j = (n,p,q)) -> dy[n, k, p, q]
struct GradRowsAt {
    const float* dy;
    int K, PQ, j_end;
    __device__ __forceinline__ const float* base() const { return dy; }
    __device__ __forceinline__ const float* at(int m, int j) const {
        if (m >= K || j >= j_end) return nullptr;
        const int n = j / PQ;
        return dy + ((long long)n * K + m) * PQ + (j - n * PQ);
    }
};

// Forward output: C[m = k, j = (n,p,q)] -> y[n, k, p, q] + b[k]; or (ws set) the raw partial into ws[m, j].
struct TcConvForwardEpilogue {
    float* y;
    const float* b;
    float* ws;
    int K, PQ, cols;
    __device__ __forceinline__ void store2(int m, int j, float v0, float v1) const {
        if (m >= K) return;
        const float v[2] = {v0, v1};
#pragma unroll
        for (int f = 0; f < 2; ++f) {
            const int jj = j + f;
            if (jj >= cols) continue;
            if (ws) {
                ws[(long long)m * cols + jj] = v[f];
            } else {
                const int n = jj / PQ;
                y[((long long)n * K + m) * PQ + (jj - n * PQ)] = v[f] + (b ? b[m] : 0.f);
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
    TcGatherLoader<BN, BK, NT, false, FwdColsAt> lb;
    lb.f.x = x; lb.f.d = d; lb.f.j_end = cols; lb.f.crs_end = k_end; lb.mn0 = n0; lb.tid = threadIdx.x;
    TcConvForwardEpilogue ep{y, b, partial ? ws + (long long)blockIdx.z * K * cols : nullptr, K, P * Q, cols};
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
    TcGatherLoader<BM, BK, NT, true, GradRowsAt> la;
    la.f.dy = dy; la.f.K = K; la.f.PQ = P * Q; la.f.j_end = k_end; la.mn0 = m0; la.tid = threadIdx.x;
    TcGatherLoader<BN, BK, NT, true, WgradColsAt> lb;
    lb.f.x = x; lb.f.d = d; lb.f.j_end = k_end; lb.f.crs_end = CRS; lb.mn0 = n0; lb.tid = threadIdx.x;
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

__device__ __forceinline__ TcPhase tc_phase(const TcConvDims& d, int z) {
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

// A: (mn = c, k = kk = (k, r', s')) -> W[k, c, th + r'*sh, tw + s'*sw]
struct WeightPhaseAt {
    const float* Wt;
    TcConvDims d;
    TcPhase f;
    int k_end;
    __device__ __forceinline__ const float* base() const { return Wt; }
    __device__ __forceinline__ const float* at(int c, int kk) const {
        if (c >= d.C || kk >= k_end) return nullptr;
        const int RtSt = f.Rt * f.St;
        const int k = kk / RtSt;
        const int rem = kk - k * RtSt;
        const int rp = rem / f.St;
        const int sp = rem - rp * f.St;
        return Wt + ((long long)k * d.C + c) * d.R * d.S + (f.th + rp * d.sh) * d.S + f.tw + sp * d.sw;
    }
};

// B: (mn = j = (n,h',w'), k = kk = (k, r', s')) -> dy[n, k, hq - r', wq - s']
struct GradPhaseAt {
    const float* dy;
    TcConvDims d;
    TcPhase f;
    int cols, k_end;
    __device__ __forceinline__ const float* base() const { return dy; }
    __device__ __forceinline__ const float* at(int j, int kk) const {
        if (j >= cols || kk >= k_end) return nullptr;
        const int HWh = f.Hh * f.Wh;
        const int n = j / HWh;
        const int hw = j - n * HWh;
        const int hh = hw / f.Wh;
        const int ww = hw - hh * f.Wh;
        const int RtSt = f.Rt * f.St;
        const int k = kk / RtSt;
        const int rem = kk - k * RtSt;
        const int rp = rem / f.St;
        const int sp = rem - rp * f.St;
        const int p = (f.h0 + d.ph - f.th) / d.sh + hh - rp;   // exact division: h0 + ph = th (mod sh)
        const int q = (f.w0 + d.pw - f.tw) / d.sw + ww - sp;
        if ((unsigned)p >= (unsigned)d.P || (unsigned)q >= (unsigned)d.Q) return nullptr;
        return dy + (((long long)n * d.K + k) * d.P + p) * d.Q + q;
    }
};

// C[m = c, j = (n,h',w')] -> dx[n, c, h0 + h'*sh, w0 + w'*sw]; or (ws set) the raw partial into ws[m, j].
struct TcPhaseGradEpilogue {
    float* dx;
    float* ws;
    TcConvDims d;
    TcPhase f;
    int cols;
    __device__ __forceinline__ void store2(int m, int j, float v0, float v1) const {
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
            const int HWh = f.Hh * f.Wh;
            const int n = jj / HWh;
            const int hw = jj - n * HWh;
            const int hh = hw / f.Wh;
            const int ww = hw - hh * f.Wh;
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
    TcGatherLoader<BM, BK, NT, false, WeightPhaseAt> la;
    la.f.Wt = Wt; la.f.d = d; la.f.f = f; la.f.k_end = k_end; la.mn0 = m0; la.tid = threadIdx.x;
    TcGatherLoader<BN, BK, NT, false, GradPhaseAt> lb;
    lb.f.dy = dy; lb.f.d = d; lb.f.f = f; lb.f.cols = cols; lb.f.k_end = k_end; lb.mn0 = n0; lb.tid = threadIdx.x;
    TcPhaseGradEpilogue ep{dx, split ? ws + (long long)blockIdx.z * C * cols : nullptr, d, f, cols};
    tc_gemm_tile<BM, BN, BK, TC_WM, TC_WN, false, false>(la, lb, ep, m0, n0, k_begin, k_end);
}
