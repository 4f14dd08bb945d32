// conv2d backward passes of multi-tap kernels (R x S, stride 1) that stage an input patch in shared memory
// once and reuse it for all R*S taps, where conv_implicit_gemm.cu's GEMMs re-gather one im2col element per tap
// (their loaders' index math costs 20-30% on top of the GEMM, and M = K or C = 32..64 wastes half a tile).
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, (ph,pw) padding; stride 1,
// so P = H + 2ph - R + 1, Q = W + 2pw - S + 1.
//   dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p-ph+r, q-pw+s]          (x zero outside the image)
//   dx[n,c,h,w] = sum_{k,r,s} W[k,c,r,s] dy[n, k, h+ph-r, w+pw-s]          (dy zero outside [0,P) x [0,Q))
//
// Both are row correlations: along a row, output column q (or w) and tap s meet at input column q+s (or
// w+S-1-s in the staged dy row), so a thread that owns PT_U = 4 consecutive columns and all S taps loads
// the PT_U+S-1 window values once (float4s) and does 4*S FMAs per value loaded per channel it owns.
//
// Compile-time: PT_S = S (one module per kernel width, custom_impl/gpu/conv/patch.py picks it). The kernels
// check the runtime shape against it and do nothing on a mismatch (the wrapper never launches one).
// Shared memory is filled with cp.async (4 bytes each, zero-fill outside the tensors), double-buffered: the
// next stage is in flight while the current one is multiplied. Every shared-memory row is a multiple of 4
// floats long (float4 reads) and, where a warp reads 8 rows at once, 4 (mod 8) floats long (no bank conflict).
//
//   conv_patch_backward_weights  block (split z, channel group, k group of PT_KB = 64 or 32, a define): for
//       each item (n, strip of pb output rows) of its range, stages dy[n, k0..k0+PT_KB-1, strip, :] (rows
//       padded to ldq) and the x patch x[n, c0..c0+cb-1, rows p0-ph .. p0+pb-1-ph+R-1, cols -pw ..]
//       (cb x (pb+R-1) x ldx); thread (kt, slot) owns k = k0 + kt + 8*kk (kk < PT_KB/8) x PT_T (c, r) tasks
//       (slot + j*slots, j < PT_T, slots = blockDim/8) x all S taps: PT_T*PT_KB/8*S sums over every item.
//       PT_KB = 32 halves the registers (3 blocks per SM instead of 2) and doubles the blocks per split, for
//       layers with too few items to fill the GPU. PT_T = 2 (a define, 1 by default) has a thread use each
//       staged dy float4 for two (c, r) rows: 12 shared-memory loads per 320 FMAs instead of 10 per 160,
//       on half the threads (and more registers each). The block writes its partial (K, C, R, S) to
//       out + z*K*C*R*S; gemm_splitk_reduce adds the z slabs in order.
//   conv_patch_backward_data     block (image n, strip of hb rows, channel group of 8*CT, split z): over chunks
//       of kc k in its range [z*kz, (z+1)*kz), stages the dy patch (kc x (hb+R-1) x ldd) and
//       W^T[k, r, s, c0..c0+8CT-1] from the (K, R, S, C) copy that conv_patch_transpose_w makes; thread
//       (ct, wc, hl) owns 8 channels x 4 columns of row hl. With gridDim.z > 1 (small batches: too few
//       blocks to fill the GPU) block z writes its partial dx to dx + z*N*C*H*W, and gemm_splitk_reduce
//       adds the z slabs in order (deterministic).
//   conv_patch_transpose_w       wt[(k*R*S + rs)*C + c] = W[(k*C + c)*R*S + rs].

#ifndef PT_S
#define PT_S 5
#endif
#define PT_U 4                                 // output columns per inner step
#define PT_XV ((PT_U + PT_S - 1 + 3) / 4 * 4)  // window floats loaded per step (whole float4s)
#ifndef PT_KB
#define PT_KB 64                               // dW: k per block (8 lanes kt x PT_KB/8 k each): 64 or 32
#endif
#ifndef PT_T
#define PT_T 1                                 // dW: (c, r) tasks per thread: 1 or 2
#endif
#define PT_WT_TM (PT_KB / 8)                   // dW: k per thread
#define PT_TM 8                                // dx: channels per thread
#define PT_WT_THREADS (320 / PT_T)             // dW: at most 40 (c, r) tasks / PT_T x 8 lanes kt
// dW: blocks per SM the register budget is set for (PT_T = 2 holds twice the sums in half the threads)
#define PT_WT_MINB (PT_T == 1 ? (PT_KB == 64 ? 2 : 3) : (PT_KB == 64 ? 3 : 4))
static_assert(PT_T == 1 || PT_T == 2, "one or two (c, r) tasks per thread");
#define PT_DX_THREADS 256

// ---- cp.async (sm_80+) ----------------------------------------------------------------------------------
__device__ __forceinline__ unsigned pt_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// dst = ok ? *src : 0, asynchronously; with ok false nothing is read (src-size 0), src only has to be valid.
__device__ __forceinline__ void pt_cp4(float* dst, const float* src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(pt_smem_addr(dst)), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void pt_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// wait until at most `pending` of this thread's committed groups are still in flight
template <int pending>
__device__ __forceinline__ void pt_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory"); }

// ---- backward-weights -------------------------------------------------------------------------------------
// Extra arguments: cb (channels per block), pb (output rows per item), ldq (staged dy row, >= Q rounded up to
// 4, = 4 mod 8), ldx (staged x row, >= that + PT_XV - 4, = 4 mod 8), chunk (items per block).
// Grid (splits, ceil(C/cb), ceil(K/PT_KB)); threads 8 * (cb*R rounded up to 4). Shared memory (dynamic):
// two stages of nd + nx floats, nd = pb*PT_KB*ldq (dy: [pp][k][q]), nx = cb*(pb+R-1)*ldx (x: [c][row][col]).
// Staged element e of a stage is written at offset e (row-major), so only its source needs index math: the
// digits of e = tid + i*blockDim are stepped (no division per element).
struct PtWeightsStage {
    const float* dy;
    const float* x;
    int N, C, H, W, K, P, Q, ph, pw;
    int k0, c0, pb, ldq, ldx, xrows, nd, nx, strips;
    int dj0, drow0, dsj, dsrow;           // dy: e = row*ldq + j, row = pp*PT_KB + kl
    int xj0, xr0, xc0, xsj, xsr, xsc;     // x:  e = (cl*xrows + xr)*ldx + j

    __device__ __forceinline__ void issue(int item, float* buf) const {
        const int n = item / strips;
        const int p0 = (item - n * strips) * pb;
        int j = dj0, row = drow0;
        for (int e = threadIdx.x; e < nd; e += blockDim.x) {
            const int kl = row & (PT_KB - 1);
            const int pp = row / PT_KB;  // a power of 2: a shift
            const int k = k0 + kl;
            const int p = p0 + pp;
            const bool ok = j < Q && k < K && p < P;
            pt_cp4(buf + e, ok ? dy + (((long long)n * K + k) * P + p) * Q + j : dy, ok);
            j += dsj;
            row += dsrow;
            if (j >= ldq) { j -= ldq; ++row; }
        }
        float* xb = buf + nd;
        int xj = xj0, xr = xr0, xc = xc0;
        for (int e = threadIdx.x; e < nx; e += blockDim.x) {
            const int c = c0 + xc;
            const int ih = p0 - ph + xr;
            const int iw = xj - pw;
            const bool ok = c < C && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
            pt_cp4(xb + e, ok ? x + (((long long)n * C + c) * H + ih) * W + iw : x, ok);
            xj += xsj;
            xr += xsr;
            xc += xsc;
            if (xj >= ldx) { xj -= ldx; ++xr; }
            if (xr >= xrows) { xr -= xrows; ++xc; }
        }
    }
};

extern "C" __global__ void __launch_bounds__(PT_WT_THREADS, PT_WT_MINB)
conv_patch_backward_weights(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
                            int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                            int sh, int sw, int ph, int pw, int cb, int pb, int ldq, int ldx, int chunk) {
    extern __shared__ float4 pt_smem4[];
    float* const smem = reinterpret_cast<float*>(pt_smem4);
    if (S != PT_S || sh != 1 || sw != 1) return;  // compiled for another shape: the wrapper never does this

    const int NT = blockDim.x;
    const int tid = threadIdx.x;
    PtWeightsStage st;
    st.dy = dy; st.x = x;
    st.N = N; st.C = C; st.H = H; st.W = W; st.K = K; st.P = P; st.Q = Q; st.ph = ph; st.pw = pw;
    st.k0 = blockIdx.z * PT_KB;
    st.c0 = blockIdx.y * cb;
    st.pb = pb; st.ldq = ldq; st.ldx = ldx;
    st.xrows = pb + R - 1;
    st.nd = pb * PT_KB * ldq;
    st.nx = cb * st.xrows * ldx;
    st.strips = (P + pb - 1) / pb;
    // digits of e = tid and of the step NT
    st.dj0 = tid % ldq;  st.drow0 = tid / ldq;
    st.dsj = NT % ldq;   st.dsrow = NT / ldq;
    st.xj0 = tid % ldx;  st.xr0 = (tid / ldx) % st.xrows;  st.xc0 = tid / ldx / st.xrows;
    st.xsj = NT % ldx;   st.xsr = (NT / ldx) % st.xrows;   st.xsc = NT / ldx / st.xrows;
    const int stage = st.nd + st.nx;  // a multiple of 4: float4 alignment of both buffers

    // this thread's tasks j < PT_T: k = k0 + kt + 8*kk (kk < PT_WT_TM), channel c0 + cl[j], tap row r[j],
    // every tap s; task (c, r) index slot + j*slots. A task past cb*R (only j > 0 of an active thread) reads
    // task 0's rows and is not written.
    const int kt = tid & 7;
    const int slots = NT >> 3;
    const bool active = (tid >> 3) < cb * R;
    int cl[PT_T], r[PT_T];
    bool live[PT_T];
#pragma unroll
    for (int j = 0; j < PT_T; ++j) {
        const int task = (tid >> 3) + j * slots;
        live[j] = task < cb * R;
        const int t = live[j] ? task : (tid >> 3);
        cl[j] = t / R;
        r[j] = t - cl[j] * R;
    }

    float acc[PT_T][PT_WT_TM][PT_S];
#pragma unroll
    for (int j = 0; j < PT_T; ++j)
#pragma unroll
        for (int kk = 0; kk < PT_WT_TM; ++kk)
#pragma unroll
            for (int s = 0; s < PT_S; ++s) acc[j][kk][s] = 0.f;

    const int items = N * st.strips;
    const int it0 = blockIdx.x * chunk;
    const int it1 = min(items, it0 + chunk);
    if (it0 < it1) st.issue(it0, smem);
    pt_commit();
    for (int it = it0; it < it1; ++it) {
        float* const cur = smem + ((it - it0) & 1) * stage;
        if (it + 1 < it1) {
            st.issue(it + 1, smem + ((it + 1 - it0) & 1) * stage);
            pt_commit();
            pt_wait<1>();
        } else {
            pt_wait<0>();
        }
        __syncthreads();  // every thread's copies of stage `it` have landed
        const int n = it / st.strips;
        const int p0 = (it - n * st.strips) * pb;
        const int prows = min(pb, P - p0);
        if (active) {
            const float* xb[PT_T];  // task j's x row p0 + pp - ph + r[j] at xb[j] + pp*ldx
#pragma unroll
            for (int j = 0; j < PT_T; ++j) xb[j] = cur + st.nd + (cl[j] * st.xrows + r[j]) * ldx;
            const float* db = cur + kt * ldq;                           // dy row (pp, kt + 8*kk)
            for (int pp = 0; pp < prows; ++pp) {
                const float* drow = db + pp * PT_KB * ldq;
                for (int q0 = 0; q0 < Q; q0 += PT_U) {
                    float xv[PT_T][PT_XV];  // xv[j][i] = x column q0 + i - pw of task j's row
#pragma unroll
                    for (int j = 0; j < PT_T; ++j)
#pragma unroll
                        for (int v = 0; v < PT_XV / 4; ++v) {
                            const float4 t = *reinterpret_cast<const float4*>(xb[j] + pp * ldx + q0 + 4 * v);
                            xv[j][4 * v + 0] = t.x; xv[j][4 * v + 1] = t.y;
                            xv[j][4 * v + 2] = t.z; xv[j][4 * v + 3] = t.w;
                        }
#pragma unroll
                    for (int kk = 0; kk < PT_WT_TM; ++kk) {
                        const float4 t = *reinterpret_cast<const float4*>(drow + kk * 8 * ldq + q0);
                        const float d[PT_U] = {t.x, t.y, t.z, t.w};  // dy[k][q0 .. q0+3], zero past Q
#pragma unroll
                        for (int j = 0; j < PT_T; ++j)
#pragma unroll
                            for (int u = 0; u < PT_U; ++u)
#pragma unroll
                                for (int s = 0; s < PT_S; ++s)
                                    acc[j][kk][s] = fmaf(d[u], xv[j][u + s], acc[j][kk][s]);
                    }
                }
            }
        }
        __syncthreads();  // `cur` is free: the next iteration's issue may overwrite it
    }

    if (!active) return;
    const int RS = R * PT_S;
#pragma unroll
    for (int j = 0; j < PT_T; ++j) {
        const int c = st.c0 + cl[j];
        if (!live[j] || c >= C) continue;
        float* o = out + (long long)blockIdx.x * K * C * RS + (long long)c * RS + r[j] * PT_S;
#pragma unroll
        for (int kk = 0; kk < PT_WT_TM; ++kk) {
            const int k = st.k0 + kt + 8 * kk;
            if (k < K) {
#pragma unroll
                for (int s = 0; s < PT_S; ++s) o[(long long)k * C * RS + s] = acc[j][kk][s];
            }
        }
    }
}

// ---- backward-data ---------------------------------------------------------------------------------------
extern "C" __global__ void conv_patch_transpose_w(const float* __restrict__ Wt, float* __restrict__ wt,
                                                  int K, int C, int RS) {
    const long long total = (long long)K * C * RS;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int c = idx % C;               // idx = (k*RS + rs)*C + c: coalesced writes
        const long long krs = idx / C;
        const int rs = krs % RS;
        const int k = krs / RS;
        wt[idx] = Wt[((long long)k * C + c) * RS + rs];
    }
}

// Extra arguments: ct_shift (CT = 1 << ct_shift channel tiles of 8 per block, CB = 8*CT channels), wch
// (column chunks of 4 per row = ceil(W/4)), hb (rows per block), kc (k per stage), ldd (staged dy row,
// >= (wch-1)*4 + PT_XV, = 4 mod 8), kz (k per split, a multiple of kc). Grid (N * ceil(H/hb), ceil(C/CB),
// ceil(K/kz)); threads CT*wch*hb.
// Stage layout: dy patch [kl][i][j] (kc x nrows x ldd, nrows = hb+R-1) holding dy[n, k0+kl, h0+ph-(R-1)+i,
// j+pw-(S-1)], then W^T [kl][r][s][cl] (kc x R*S x CB) holding W[k0+kl, c0+cl, r, s].
// Output (h0+hl, w) with tap (r, s) reads dy patch row hl+R-1-r, column w+S-1-s.
struct PtDataStage {
    const float* dy;
    const float* wt;  // (K, R, S, C)
    int C, K, P, Q, R, RS, ph, pw, n, h0, c0, cb_shift, nrows, ldd, ndy, nw;
    int dj0, di0, dk0, dsj, dsi, dsk;  // dy: e = (kl*nrows + i)*ldd + j

    __device__ __forceinline__ void issue(int k0, float* buf) const {
        int j = dj0, i = di0, kl = dk0;
        for (int e = threadIdx.x; e < ndy; e += blockDim.x) {
            const int k = k0 + kl;
            const int p = h0 + ph - (R - 1) + i;
            const int q = j + pw - (PT_S - 1);
            const bool ok = k < K && (unsigned)p < (unsigned)P && (unsigned)q < (unsigned)Q;
            pt_cp4(buf + e, ok ? dy + (((long long)n * K + k) * P + p) * Q + q : dy, ok);
            j += dsj;
            i += dsi;
            kl += dsk;
            if (j >= ldd) { j -= ldd; ++i; }
            if (i >= nrows) { i -= nrows; ++kl; }
        }
        float* wb = buf + ndy;
        const int rows_left = (K - k0) * RS;  // (kl, rs) rows that exist
        const int cbm = (1 << cb_shift) - 1;
        for (int e = threadIdx.x; e < nw; e += blockDim.x) {
            const int cl = e & cbm;
            const int row = e >> cb_shift;  // kl*RS + rs
            const bool ok = row < rows_left && c0 + cl < C;
            pt_cp4(wb + e, ok ? wt + ((long long)k0 * RS + row) * C + c0 + cl : wt, ok);
        }
    }
};

extern "C" __global__ void __launch_bounds__(PT_DX_THREADS, 2)
conv_patch_backward_data(const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
                         int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                         int sh, int sw, int ph, int pw, int ct_shift, int wch, int hb, int kc, int ldd, int kz) {
    extern __shared__ float4 pt_smem4[];
    float* const smem = reinterpret_cast<float*>(pt_smem4);
    if (S != PT_S || sh != 1 || sw != 1) return;  // compiled for another shape: the wrapper never does this

    const int NT = blockDim.x;
    const int tid = threadIdx.x;
    const int hstrips = (H + hb - 1) / hb;
    const int cb_shift = ct_shift + 3;
    const int CB = 1 << cb_shift;
    PtDataStage st;
    st.dy = dy; st.wt = wt;
    st.C = C; st.K = K; st.P = P; st.Q = Q; st.R = R; st.RS = R * PT_S; st.ph = ph; st.pw = pw;
    st.n = blockIdx.x / hstrips;
    st.h0 = (blockIdx.x - st.n * hstrips) * hb;
    st.c0 = blockIdx.y * CB;
    st.cb_shift = cb_shift;
    st.nrows = hb + R - 1;
    st.ldd = ldd;
    st.ndy = kc * st.nrows * ldd;
    st.nw = kc * st.RS * CB;
    st.dj0 = tid % ldd;  st.di0 = (tid / ldd) % st.nrows;  st.dk0 = tid / ldd / st.nrows;
    st.dsj = NT % ldd;   st.dsi = (NT / ldd) % st.nrows;   st.dsk = NT / ldd / st.nrows;
    const int stage = st.ndy + st.nw;  // a multiple of 4

    // this thread: channels c0 + ct*8 + ci (ci < 8), row h0 + hl, columns wc*4 + u (u < 4)
    const int ct = tid & ((1 << ct_shift) - 1);
    const int pix = tid >> ct_shift;
    const int hl = pix / wch;
    const int wc = pix - hl * wch;

    float acc[PT_TM][PT_U];
#pragma unroll
    for (int ci = 0; ci < PT_TM; ++ci)
#pragma unroll
        for (int u = 0; u < PT_U; ++u) acc[ci][u] = 0.f;

    const int k_lo = blockIdx.z * kz;  // this split's k range [k_lo, k_hi); kz is a multiple of kc
    const int k_hi = min(K, k_lo + kz);
    const int chunks = (k_hi - k_lo + kc - 1) / kc;
    st.issue(k_lo, smem);
    pt_commit();
    for (int t = 0; t < chunks; ++t) {
        float* const cur = smem + (t & 1) * stage;
        if (t + 1 < chunks) {
            st.issue(k_lo + (t + 1) * kc, smem + ((t + 1) & 1) * stage);
            pt_commit();
            pt_wait<1>();
        } else {
            pt_wait<0>();
        }
        __syncthreads();  // every thread's copies of chunk t have landed
        const int kn = min(kc, k_hi - k_lo - t * kc);
        const float* wb = cur + st.ndy + ct * 8;
        for (int kl = 0; kl < kn; ++kl) {
            for (int r = 0; r < R; ++r) {
                const float* drow = cur + (kl * st.nrows + hl + R - 1 - r) * ldd + wc * PT_U;
                float xv[PT_XV];  // xv[m] = dy column w0 + m + pw - (S-1), w0 = wc*4
#pragma unroll
                for (int v = 0; v < PT_XV / 4; ++v) {
                    const float4 tv = *reinterpret_cast<const float4*>(drow + 4 * v);
                    xv[4 * v + 0] = tv.x; xv[4 * v + 1] = tv.y; xv[4 * v + 2] = tv.z; xv[4 * v + 3] = tv.w;
                }
                const float* wr = wb + (kl * st.RS + r * PT_S) * CB;
#pragma unroll
                for (int s = 0; s < PT_S; ++s) {
                    const float4 w0 = *reinterpret_cast<const float4*>(wr + s * CB);
                    const float4 w1 = *reinterpret_cast<const float4*>(wr + s * CB + 4);
                    const float wv[PT_TM] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
                    for (int ci = 0; ci < PT_TM; ++ci)
#pragma unroll
                        for (int u = 0; u < PT_U; ++u)
                            acc[ci][u] = fmaf(wv[ci], xv[u + PT_S - 1 - s], acc[ci][u]);
                }
            }
        }
        __syncthreads();  // `cur` is free: the next iteration's issue may overwrite it
    }

    const int h = st.h0 + hl;
    if (hl >= hb || h >= H) return;
    float* const slab = dx + (long long)blockIdx.z * N * C * H * W;
#pragma unroll
    for (int ci = 0; ci < PT_TM; ++ci) {
        const int c = st.c0 + ct * 8 + ci;
        if (c < C) {
            float* o = slab + (((long long)st.n * C + c) * H + h) * W;
#pragma unroll
            for (int u = 0; u < PT_U; ++u)
                if (wc * PT_U + u < W) o[wc * PT_U + u] = acc[ci][u];
        }
    }
}
