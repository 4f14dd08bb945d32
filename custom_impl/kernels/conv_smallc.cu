// conv2d backward kernels for layers with few input channels (C <= 8): the first layer of a CNN (C = 1 or 3).
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, (sh,sw) stride, (ph,pw) padding.
//   dx[n,c,h,w] = sum_{k,r,s: h+ph-r = p*sh, w+pw-s = q*sw} W[k,c,r,s] dy[n,k,p,q]
//   dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]      (zero outside the image)
// The implicit GEMMs of conv.cu have M = C (backward-data) or N = C*R*S (backward-weights), so with C = 1..3
// their tiles are mostly padding; these kernels are direct and register-blocked instead.
//
// Compile-time shape (one module per value set, chosen by custom_impl/gpu/conv_smallc.py):
//   SC_S  = S, the kernel width;  SC_SW = sw, the stride along w;  SC_C = C (backward-data only).
// The kernels check the runtime dims against them and do nothing on a mismatch (the outputs stay unwritten).
//
//   conv_smallc_backward_weights  row correlations: for fixed (n, p) and (c, r) the sum over q is a 1-D
//       correlation of the dy row dy[n,k,p,:] with the x row ih = p*sh-ph+r. A block is split into G groups
//       of T threads; a group stages one output row (its dy row for a chunk of kc k's and the C*R x rows,
//       zero-padded) in shared memory, and each thread owns one task (4 consecutive k, one (c,r)) with
//       4*S accumulators in registers, stepping over q four at a time (4 LDS.128 of dy, 3*sw+S LDS of x,
//       16*S FMAs). Accumulators persist over all rows of the group; at the end of a k-chunk the G groups
//       are added in group order in shared memory and the block writes its partial (K, C*R*S) sums to
//       ws[blockIdx.x] (every element, zeros included).
//   conv_smallc_reduce            dW = sum over the blocks' partials, in a fixed order (deterministic).
//   conv_smallc_backward_data     per stride phase (grid.z, as conv.cu's v3/v4): one thread computes 4
//       consecutive pixels of one phase row for all C channels (acc[C][4]); per (k, tap row) it loads the
//       St+3 dy values the 4 pixels need once into registers and does 4*St*C FMAs with W from shared memory
//       (broadcast reads: all threads of a block share the phase and k).

#ifndef SC_S
#define SC_S 3
#endif
#ifndef SC_SW
#define SC_SW 1
#endif
#ifndef SC_C
#define SC_C 3
#endif

#define SC_KT 4   // k per backward-weights task (one LDS.128 of dy per k and 4 q)
#define SC_U 4    // q per backward-weights inner step; staged dy rows are padded to a multiple of it
#define SC_TW 4   // phase pixels along w per backward-data thread
#define SC_ST ((SC_S + SC_SW - 1) / SC_SW)  // the most taps along w any stride phase has

// ---- backward-weights ---------------------------------------------------------------------------------
// Extra arguments: kc (k per chunk, a multiple of 4), xld (row stride of the staged x rows, odd: the C*R
// rows read at one column by a warp fall in distinct banks), gstride (floats of shared memory per group,
// a multiple of 4). Threads: G*T with T = (kc/4)*C*R. Shared memory (dynamic): max(G*gstride, kc*C*R*S)
// floats. Group layout: ds (kc, Qp) dy rows, Qp = Q rounded up to 4, then xs (C*R, xld) x rows holding
// x[n, c, p*sh-ph+r, col-pw] for col < (Q-1)*sw+S (zero elsewhere, in the padding and past the end).
extern "C" __global__ void __launch_bounds__(384, 2)
conv_smallc_backward_weights(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
                             int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                             int sh, int sw, int ph, int pw, int kc, int xld, int gstride) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    if (S != SC_S || sw != SC_SW) return;  // compiled for another shape: the wrapper never does this

    const int CR = C * R;
    const int CRS = CR * S;
    const int T = (kc / SC_KT) * CR;     // threads (tasks) per group
    const int G = blockDim.x / T;        // groups per block
    const int g = threadIdx.x / T;       // this thread's group
    const int tl = threadIdx.x - g * T;  // thread within the group
    const int kq = tl / CR;              // task: k = k0 + kq*4 + (0..3)
    const int cr = tl - kq * CR;         //       and (c, r) = (cr / R, cr % R)
    const int Qp = (Q + SC_U - 1) / SC_U * SC_U;
    const int xcols = (Q - 1) * SC_SW + SC_S;  // columns of the padded x row that some tap reaches
    float* ds = smem + g * gstride;            // (kc, Qp)
    float* xs = ds + kc * Qp;                  // (C*R, xld)

    // Output rows (n, p) = item / P, item % P; the block's G groups get contiguous, near-equal ranges.
    const int items = N * P;
    const int groups = gridDim.x * G;
    const int gg = blockIdx.x * G + g;
    const int base = items / groups;
    const int rem = items - base * groups;
    const int i0 = gg * base + min(gg, rem);
    const int cnt = base + (gg < rem ? 1 : 0);
    const int iters = base + (rem > 0 ? 1 : 0);  // the same for every group: the barriers line up

    for (int k0 = 0; k0 < K; k0 += kc) {
        float acc[SC_KT][SC_S];
#pragma unroll
        for (int kk = 0; kk < SC_KT; ++kk)
#pragma unroll
            for (int s = 0; s < SC_S; ++s) acc[kk][s] = 0.f;

        for (int it = 0; it < iters; ++it) {
            const bool active = it < cnt;
            if (active) {
                const int item = i0 + it;
                const int n = item / P;
                const int p = item - n * P;
                // dy[n, k0 + kk, p, q] -> ds[kk*Qp + q]; zero for k >= K and q >= Q.
                const float* dyrow = dy + ((long long)n * K * P + p) * Q;
                for (int i = tl; i < kc * Qp; i += T) {
                    const int kk = i / Qp;
                    const int q = i - kk * Qp;
                    const int k = k0 + kk;
                    ds[i] = (k < K && q < Q) ? dyrow[(long long)k * P * Q + q] : 0.f;
                }
                // x[n, c, p*sh-ph+r, col-pw] -> xs[(c*R + r)*xld + col]
                for (int i = tl; i < CR * xld; i += T) {
                    const int rr = i / xld;
                    const int col = i - rr * xld;
                    const int c = rr / R;
                    const int r = rr - c * R;
                    const int ih = p * sh - ph + r;
                    const int iw = col - pw;
                    const bool ok = col < xcols && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                    xs[i] = ok ? x[(((long long)n * C + c) * H + ih) * W + iw] : 0.f;
                }
            }
            __syncthreads();  // staged rows visible to the group
            if (active) {
                const float* xr = xs + cr * xld;
                const float* dr = ds + kq * SC_KT * Qp;
                for (int q0 = 0; q0 < Qp; q0 += SC_U) {
                    float xv[(SC_U - 1) * SC_SW + SC_S];  // xv[i] = x column q0*sw + i
#pragma unroll
                    for (int i = 0; i < (SC_U - 1) * SC_SW + SC_S; ++i) xv[i] = xr[q0 * SC_SW + i];
                    float4 dv[SC_KT];                     // dy[k][q0 .. q0+3]
#pragma unroll
                    for (int kk = 0; kk < SC_KT; ++kk) dv[kk] = *reinterpret_cast<const float4*>(dr + kk * Qp + q0);
#pragma unroll
                    for (int kk = 0; kk < SC_KT; ++kk) {
                        const float d[SC_U] = {dv[kk].x, dv[kk].y, dv[kk].z, dv[kk].w};
#pragma unroll
                        for (int u = 0; u < SC_U; ++u)
#pragma unroll
                            for (int s = 0; s < SC_S; ++s) acc[kk][s] = fmaf(d[u], xv[u * SC_SW + s], acc[kk][s]);
                    }
                }
            }
            __syncthreads();  // the group's buffers are free for the next row
        }

        // Add the G groups' sums in group order: red[(k - k0)*CRS + cr*S + s] (the (k, c, r, s) layout).
        float* red = smem;
        for (int gi = 0; gi < G; ++gi) {
            if (g == gi) {
#pragma unroll
                for (int kk = 0; kk < SC_KT; ++kk)
#pragma unroll
                    for (int s = 0; s < SC_S; ++s) {
                        const int idx = (kq * SC_KT + kk) * CRS + cr * SC_S + s;
                        red[idx] = gi == 0 ? acc[kk][s] : red[idx] + acc[kk][s];
                    }
            }
            __syncthreads();  // one group at a time
        }
        const int kvalid = min(kc, K - k0);
        float* out = ws + (long long)blockIdx.x * K * CRS + (long long)k0 * CRS;
        for (int i = threadIdx.x; i < kvalid * CRS; i += blockDim.x) out[i] = red[i];
        __syncthreads();  // red is read before the next chunk stages rows over it
    }
}

// dW[i] = sum over z < splits of ws[z*n + i], i < n. A block takes 32 consecutive i (one per lane) and
// its 8 warps split z into 8 contiguous ranges, each summed in order; the 8 sums are then added in warp
// order. The order depends only on splits: deterministic.
extern "C" __global__ void __launch_bounds__(256)
conv_smallc_reduce(const float* __restrict__ ws, float* __restrict__ out, int n, int splits) {
    __shared__ float part[8][32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int i = blockIdx.x * 32 + lane;
    const int z0 = (int)((long long)splits * warp / 8);
    const int z1 = (int)((long long)splits * (warp + 1) / 8);
    float v = 0.f;
    if (i < n)
        for (int z = z0; z < z1; ++z) v += ws[(long long)z * n + i];
    part[warp][lane] = v;
    __syncthreads();
    if (warp == 0 && i < n) {
        float t = part[0][lane];
#pragma unroll
        for (int w = 1; w < 8; ++w) t += part[w][lane];
        out[i] = t;
    }
}

// ---- backward-data ------------------------------------------------------------------------------------
// Phase z = (th, tw): pixels h with (h + ph) % sh == th only receive taps r = th + r'*sh (likewise w, s).
// Its pixels are h = h0 + hh*sh, w = w0 + ww*sw (hh < Hh, ww < Wh) and tap (r', s') reads dy at
// p = hq - r', q = wq - s' with hq = (h + ph - th)/sh, wq = (w + pw - tw)/sw (exact). A phase with no taps
// writes zeros. Thread j -> (n, hh, wb) with wb fastest; it owns pixels ww = 4*wb + i, i < 4.
// Shared memory (dynamic): W, K*C*R*S floats.
extern "C" __global__ void __launch_bounds__(256)
conv_smallc_backward_data(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
                          int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                          int sh, int sw, int ph, int pw) {
    extern __shared__ float4 smem4[];
    float* w_s = reinterpret_cast<float*>(smem4);  // (K, C, R, S)
    if (C != SC_C || S != SC_S || sw != SC_SW) return;  // compiled for another shape
    const int RS = R * SC_S;
    const int wsize = K * SC_C * RS;
    for (int i = threadIdx.x; i < wsize; i += blockDim.x) w_s[i] = Wt[i];
    __syncthreads();

    const int th = blockIdx.z / SC_SW;
    const int tw = blockIdx.z - th * SC_SW;
    const int h0 = ((th - ph) % sh + sh) % sh;               // first pixel of the phase
    const int w0 = ((tw - pw) % SC_SW + SC_SW) % SC_SW;
    const int Hh = h0 < H ? (H - h0 + sh - 1) / sh : 0;       // phase pixels per image
    const int Wh = w0 < W ? (W - w0 + SC_SW - 1) / SC_SW : 0;
    const int Rt = th < R ? (R - th + sh - 1) / sh : 0;       // taps of the phase
    const int St = tw < SC_S ? (SC_S - tw + SC_SW - 1) / SC_SW : 0;
    const int Wb = (Wh + SC_TW - 1) / SC_TW;                  // 4-pixel groups per phase row
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= (long long)N * Hh * Wb) return;  // no barrier below
    const int wb = (int)(j % Wb);
    const long long t = j / Wb;
    const int hh = (int)(t % Hh);
    const int n = (int)(t / Hh);
    const int ww = wb * SC_TW;
    const int hq = (h0 + ph - th) / sh + hh;       // p = hq - r'
    const int wq = (w0 + pw - tw) / SC_SW + ww;    // q = wq + i - s' for pixel ww + i

    float acc[SC_C][SC_TW];
#pragma unroll
    for (int c = 0; c < SC_C; ++c)
#pragma unroll
        for (int i = 0; i < SC_TW; ++i) acc[c][i] = 0.f;

    for (int k = 0; k < K; ++k) {
        const float* dyk = dy + ((long long)n * K + k) * P * Q;
        const float* wk = w_s + k * SC_C * RS;
        for (int rp = 0; rp < Rt; ++rp) {
            const int p = hq - rp;
            if ((unsigned)p >= (unsigned)P) continue;
            const int r = th + rp * sh;
            const float* row = dyk + (long long)p * Q;
            // v[m] = dy[n, k, p, wq + m - (SC_ST-1)], zero outside [0, Q); pixel i, tap s' uses
            // m = i - s' + SC_ST - 1, so only m >= SC_ST - St are needed.
            float v[SC_ST + SC_TW - 1];
#pragma unroll
            for (int m = 0; m < SC_ST + SC_TW - 1; ++m) {
                const int q = wq + m - (SC_ST - 1);
                v[m] = (m >= SC_ST - St && (unsigned)q < (unsigned)Q) ? __ldg(row + q) : 0.f;
            }
#pragma unroll
            for (int sp = 0; sp < SC_ST; ++sp) {
                if (sp < St) {
                    const int s = tw + sp * SC_SW;
#pragma unroll
                    for (int c = 0; c < SC_C; ++c) {
                        const float wv = wk[c * RS + r * SC_S + s];
#pragma unroll
                        for (int i = 0; i < SC_TW; ++i) acc[c][i] = fmaf(wv, v[i - sp + SC_ST - 1], acc[c][i]);
                    }
                }
            }
        }
    }
    const int h = h0 + hh * sh;
#pragma unroll
    for (int c = 0; c < SC_C; ++c) {
        float* o = dx + (((long long)n * SC_C + c) * H + h) * W + w0;
#pragma unroll
        for (int i = 0; i < SC_TW; ++i)
            if (ww + i < Wh) o[(long long)(ww + i) * SC_SW] = acc[c][i];
    }
}
