// conv2d kernels for layers with few input channels (C <= 8): the first layer of a CNN (C = 1 or 3);
// forward, backward-data and backward-weights (two launch shapes: rows and bands of rows).
// Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, (sh,sw) stride, (ph,pw) padding.
//   dx[n,c,h,w] = sum_{k,r,s: h+ph-r = p*sh, w+pw-s = q*sw} W[k,c,r,s] dy[n,k,p,q]
//   dW[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*sh-ph+r, q*sw-pw+s]      (zero outside the image)
// The implicit GEMMs of conv_implicit_gemm.cu have M = C (backward-data) or N = C*R*S (backward-weights),
// so with C = 1..3 their tiles are mostly padding; these kernels are direct and register-blocked instead.
//
// Compile-time shape (one module per value set, chosen by custom_impl/gpu/conv/few_channels.py):
//   SC_S  = S, the kernel width;  SC_SW = sw, the stride along w;  SC_C = C (backward-data only).
// The kernels check the runtime dims against them and do nothing on a mismatch (the outputs stay unwritten).
//
//   conv_few_channels_wgrad_rows  row correlations: for fixed (n, p) and (c, r) the sum over q is a 1-D
//       correlation of the dy row dy[n,k,p,:] with the x row ih = p*sh-ph+r. A block is split into G groups
//       of T threads; a group stages one output row (its dy row for a chunk of kc k's and the C*R x rows,
//       zero-padded) in shared memory, and each thread owns one task (4 consecutive k, one (c,r)) with
//       4*S accumulators in registers, stepping over q four at a time (4 LDS.128 of dy, 3*sw+S LDS of x,
//       16*S FMAs). Accumulators persist over all rows of the group; at the end of a k-chunk the G groups
//       are added in group order in shared memory and the block writes its partial (K, C*R*S) sums to
//       ws[blockIdx.x] (every element, zeros included).
//   conv_few_channels_reduce_rows  dW = sum over the blocks' partials, in a fixed order (deterministic).
//   conv_few_channels_wgrad_bands  the same row correlations over bands of PB output rows, pipelined: a
//       block owns one chunk of kc k's (blockIdx.y) and a contiguous range of work items (n, band of PB rows
//       of p); cp.async copies the next item's dy band (kc x PB rows, 16-byte chunks when Q % 4 == 0 and dy
//       is aligned) and its x rows (C x ((PB-1)*sh+R) rows, zero-filled outside the image) into the other of
//       two shared buffers while the block computes the current one. Thread = task (4 k, one (c, r), one
//       row pp of the band) with 4*S sums in registers over all items; the staging loops step their
//       (row, column) indices incrementally (no division per element). At the end the PB rows' sums are
//       added in pp order and the block writes its partial (kc, C*R*S) to ws[blockIdx.x] (the rows kernel's layout).
//   conv_few_channels_reduce_bands  conv_few_channels_reduce_rows with blockDim.x/32 warps splitting the
//       partials.
//   conv_few_channels_dgrad     per stride phase (grid.z, as conv_implicit_gemm_dgrad): one thread computes 4
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
conv_few_channels_wgrad_rows(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
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
conv_few_channels_reduce_rows(const float* __restrict__ ws, float* __restrict__ out, int n, int splits) {
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

// ---- backward-weights over bands of rows ------------------------------------------------------------
// cp.async (sm_80+): global -> shared copies that bypass the registers and complete asynchronously; a thread
// waits for its own groups with cp.async.wait_group, and a barrier then makes every thread's copies visible.
__device__ __forceinline__ unsigned sc_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// 4 bytes, or a zero when !ok (source size 0: nothing is read; src must still be a valid address).
__device__ __forceinline__ void sc_cp_async4(unsigned dst, const float* src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(dst), "l"(src), "r"(ok ? 4 : 0) : "memory");
}
// 16 bytes; dst and src 16-byte aligned.
__device__ __forceinline__ void sc_cp_async16(unsigned dst, const float* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void sc_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void sc_cp_async_wait1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ void sc_cp_async_wait0() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

#define SC_XV ((SC_U - 1) * SC_SW + SC_S)  // x columns one U-step of q reads
#define SC_XK (SC_S > SC_SW ? SC_S - SC_SW : 0)  // of which the next step reads again (kept in registers)

// Extra arguments: kc (k per chunk, a multiple of 4), pb (output rows per band), qs (row stride of the staged
// dy rows, a multiple of 4 with qs/4 odd: the <= 8 rows a warp reads at one q fall in distinct bank
// quads), xld (row stride of the staged x rows, odd: distinct rows read at one column hit distinct banks),
// stage (floats per buffer, a multiple of 4), vec (1: Q % 4 == 0 and dy 16-byte aligned, dy in 16-byte
// copies). Threads: (kc/4) * C*R * pb. Shared memory (dynamic): max(2*stage, pb*kc*C*R*S) floats.
// Buffer layout: ds (kc*pb, qs), row kk*pb + pp = dy[n, k0+kk, p0+pp, 0 .. Qp) with Qp = Q rounded up to 4
// (zeros past Q); then xs (C*XR, xld), row c*XR + i = x[n, c, p0*sh-ph+i, col-pw] for col < (Qp-1)*sw+S
// (zeros outside the image), XR = (pb-1)*sh + R. Rows of pp >= P - p0 (past the image) are not staged and
// not read.
extern "C" __global__ void __launch_bounds__(512)
conv_few_channels_wgrad_bands(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
                                int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                                int sh, int sw, int ph, int pw, int kc, int pb, int qs, int xld, int stage,
                                int vec) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    if (S != SC_S || sw != SC_SW) return;  // compiled for another shape: the wrapper never does this

    const int CR = C * R;
    const int CRS = CR * SC_S;
    const int XR = (pb - 1) * sh + R;             // staged x rows per channel
    const int Qp = (Q + SC_U - 1) / SC_U * SC_U;
    const int xcols = (Qp - 1) * SC_SW + SC_S;    // staged x columns: every column a q < Qp reaches
    const int nb = (P + pb - 1) / pb;             // bands per image
    const int T = blockDim.x;
    const int t = threadIdx.x;
    const int k0 = blockIdx.y * kc;
    const int kvalid = min(kc, K - k0);

    // This thread's task: t = cr + CR*(pp + pb*kq); k = k0 + 4*kq + (0..3), (c, r), band row pp.
    const int cr = t % CR;
    const int pp = (t / CR) % pb;
    const int kq = t / (CR * pb);
    const int c = cr / R;
    const int r = cr - c * R;
    const bool kactive = kq * SC_KT < kvalid;

    // Staging walks, per thread: unit e = t, t + T, ... of a (rows, units-per-row) table, the (row, unit)
    // pair stepped by (T / upr, T % upr) with one carry, the row split into (outer, inner) the same way.
    // dy: rows kk*pb + pps (kk < kvalid), upr = Q/4 chunks (vec) or Qp floats.
    const int upr = vec ? Q / 4 : Qp;
    const int d_j = T % upr;
    const int d_row = T / upr;
    const int d_pp = d_row % pb;
    const int d_kk = d_row / pb;
    const int j_0 = t % upr;
    const int pp_0 = (t / upr) % pb;
    const int kk_0 = (t / upr) / pb;
    // x: rows xc*XR + xi (xc < C), xcols floats per row.
    const int e_col = T % xcols;
    const int e_row = T / xcols;
    const int e_xi = e_row % XR;
    const int e_xc = e_row / XR;
    const int col_0 = t % xcols;
    const int xi_0 = (t / xcols) % XR;
    const int xc_0 = (t / xcols) / XR;

    // Work items: item = n*nb + band; the block takes a contiguous, near-equal range.
    const int items = N * nb;
    const int base = items / gridDim.x;
    const int rem = items - base * gridDim.x;
    const int i0 = blockIdx.x * base + min((int)blockIdx.x, rem);
    const int cnt = base + ((int)blockIdx.x < rem ? 1 : 0);

    // Issue the copies of item (n, band) into buffer buf (one commit group per call, see the loop).
    auto stage_item = [&](float* buf, int n, int band) {
        const int p0 = band * pb;
        const int ppvalid = min(pb, P - p0);
        const float* dyn = dy + ((long long)n * K + k0) * P * Q + (long long)p0 * Q;
        for (int kk = kk_0, ps = pp_0, j = j_0; kk < kvalid;) {
            if (ps < ppvalid) {
                float* dst = buf + (kk * pb + ps) * qs;
                const float* src = dyn + (kk * P + ps) * Q;
                if (vec) {
                    sc_cp_async16(sc_smem_addr(dst + 4 * j), src + 4 * j);
                } else {
                    const bool ok = j < Q;
                    sc_cp_async4(sc_smem_addr(dst + j), ok ? src + j : dy, ok);
                }
            }
            j += d_j;
            const int jc = j >= upr ? 1 : 0;
            j -= jc * upr;
            ps += d_pp + jc;
            const int pc = ps >= pb ? 1 : 0;
            ps -= pc * pb;
            kk += d_kk + pc;
        }
        float* xs = buf + kc * pb * qs;
        const float* xn = x + (long long)n * C * H * W;
        const int ih0 = p0 * sh - ph;
        for (int xc = xc_0, xi = xi_0, col = col_0; xc < C;) {
            const int ih = ih0 + xi;
            const int iw = col - pw;
            const bool ok = (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
            sc_cp_async4(sc_smem_addr(xs + (xc * XR + xi) * xld + col), ok ? xn + (xc * H + ih) * W + iw : x, ok);
            col += e_col;
            const int cc = col >= xcols ? 1 : 0;
            col -= cc * xcols;
            xi += e_xi + cc;
            const int ic = xi >= XR ? 1 : 0;
            xi -= ic * XR;
            xc += e_xc + ic;
        }
    };

    float acc[SC_KT][SC_S];
#pragma unroll
    for (int kk = 0; kk < SC_KT; ++kk)
#pragma unroll
        for (int s = 0; s < SC_S; ++s) acc[kk][s] = 0.f;

    int n = i0 / nb;
    int band = i0 - n * nb;
    if (cnt > 0) stage_item(smem, n, band);
    sc_cp_async_commit();
    for (int it = 0; it < cnt; ++it) {
        const int n_next = band + 1 == nb ? n + 1 : n;
        const int band_next = band + 1 == nb ? 0 : band + 1;
        // The other buffer was last read in iteration it-1, which ended with a barrier.
        if (it + 1 < cnt) stage_item(smem + ((it + 1) & 1) * stage, n_next, band_next);
        sc_cp_async_commit();   // possibly empty: the wait below always leaves exactly the newest group
        sc_cp_async_wait1();    // this thread's copies of item it have landed
        __syncthreads();        // ... and every other thread's
        const float* buf = smem + (it & 1) * stage;
        if (kactive && pp < P - band * pb) {
            const float* xr = buf + kc * pb * qs + (c * XR + pp * sh + r) * xld;
            const float* dr = buf + (kq * SC_KT * pb + pp) * qs;
            const int kstride = pb * qs;
            // xv[i] = x column q0*sw + i; a step reads only the columns past the previous window (the last XK
            // columns of a window are the first XK of the next).
            float xv[SC_XV];
#pragma unroll
            for (int i = 0; i < SC_XK; ++i) xv[i] = xr[i];
#pragma unroll 2
            for (int q0 = 0; q0 < Qp; q0 += SC_U) {
#pragma unroll
                for (int i = SC_XK; i < SC_XV; ++i) xv[i] = xr[q0 * SC_SW + i];
                float4 dv[SC_KT];  // dy[k][q0 .. q0+3]
#pragma unroll
                for (int kk = 0; kk < SC_KT; ++kk) dv[kk] = *reinterpret_cast<const float4*>(dr + kk * kstride + q0);
#pragma unroll
                for (int kk = 0; kk < SC_KT; ++kk) {
                    const float d[SC_U] = {dv[kk].x, dv[kk].y, dv[kk].z, dv[kk].w};
#pragma unroll
                    for (int u = 0; u < SC_U; ++u)
#pragma unroll
                        for (int s = 0; s < SC_S; ++s) acc[kk][s] = fmaf(d[u], xv[u * SC_SW + s], acc[kk][s]);
                }
#pragma unroll
                for (int i = 0; i < SC_XK; ++i) xv[i] = xv[i + SC_U * SC_SW];  // slide the window by U*sw
            }
        }
        __syncthreads();  // buffer it&1 is free for item it+2
        n = n_next;
        band = band_next;
    }
    sc_cp_async_wait0();  // nothing is in flight (the last group was empty); kept for safety
    __syncthreads();

    // Add the pb rows' sums in pp order: red[(pp*kc + k - k0)*CRS + cr*S + s].
    float* red = smem;
#pragma unroll
    for (int kk = 0; kk < SC_KT; ++kk)
#pragma unroll
        for (int s = 0; s < SC_S; ++s) red[(pp * kc + kq * SC_KT + kk) * CRS + cr * SC_S + s] = acc[kk][s];
    __syncthreads();
    float* out = ws + (long long)blockIdx.x * K * CRS + (long long)k0 * CRS;
    const int plane = kc * CRS;
    for (int i = t; i < kvalid * CRS; i += T) {
        float v = red[i];
        for (int q = 1; q < pb; ++q) v += red[q * plane + i];
        out[i] = v;
    }
}

// dW[i] = sum over z < splits of ws[z*n + i]: conv_few_channels_reduce_rows with W = blockDim.x/32 warps
// (<= 32), warp w
// summing z in [splits*w/W, splits*(w+1)/W) in order, then the W sums added in warp order (deterministic
// for a given blockDim).
extern "C" __global__ void __launch_bounds__(1024)
conv_few_channels_reduce_bands(const float* __restrict__ ws, float* __restrict__ out, int n, int splits) {
    __shared__ float part[32][33];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    const int i = blockIdx.x * 32 + lane;
    const int z0 = (int)((long long)splits * warp / nw);
    const int z1 = (int)((long long)splits * (warp + 1) / nw);
    float v = 0.f;
    if (i < n) {
        const float* p = ws + (long long)z0 * n + i;
#pragma unroll 4
        for (int z = z0; z < z1; ++z, p += n) v += *p;
    }
    part[warp][lane] = v;
    __syncthreads();
    if (warp == 0 && i < n) {
        float s = part[0][lane];
        for (int w = 1; w < nw; ++w) s += part[w][lane];
        out[i] = s;
    }
}

// ---- backward-data ------------------------------------------------------------------------------------
// Phase z = (th, tw): pixels h with (h + ph) % sh == th only receive taps r = th + r'*sh (likewise w, s).
// Its pixels are h = h0 + hh*sh, w = w0 + ww*sw (hh < Hh, ww < Wh) and tap (r', s') reads dy at
// p = hq - r', q = wq - s' with hq = (h + ph - th)/sh, wq = (w + pw - tw)/sw (exact). A phase with no taps
// writes zeros. Thread j -> (n, hh, wb) with wb fastest; it owns pixels ww = 4*wb + i, i < 4.
// Shared memory (dynamic): W, K*C*R*S floats.
extern "C" __global__ void __launch_bounds__(256)
conv_few_channels_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
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

// ---- forward ------------------------------------------------------------------------------------------------
// y[n,k,p,q] = b[k] + sum_{c,r,s} W[k,c,r,s] x[n, c, p*sh-ph+r, q*sw-pw+s] for few input channels. The
// implicit GEMM reduces over C*R*S = 9..49 here (a handful of k tiles) with M = K = 32..64 rows of a 128-row
// tile, so most of its work is padding and per-element gather index math (LeNet conv1, N1024: 194 us for
// 1.3 GFLOP). Here one thread computes SC_FU consecutive q of one output row (n, p) for SC_FK consecutive k:
// per (c, r) it loads the (SC_FU-1)*sw+S x values those outputs need once into registers and does
// SC_FK*S*SC_FU FMAs with W from shared memory (broadcast reads: a block shares its k group).
// Grid (ceil(N*P*ceil(Q/SC_FU) / blockDim.x), ceil(K / SC_FK)); shared memory (dynamic) SC_FK*C*R*S floats.
// flags bit 0: y rows float4-storable (Q % 4 == 0 and y 16-byte aligned). b may be null.
#define SC_FK 8                                  // k per forward thread
#define SC_FU 8                                  // output columns per forward thread
#define SC_FXV ((SC_FU - 1) * SC_SW + SC_S)      // x values per (c, r) a forward thread needs

extern "C" __global__ void __launch_bounds__(256)
conv_few_channels_fwd(const float* __restrict__ x, const float* __restrict__ Wt, const float* __restrict__ b,
                    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                    int sh, int sw, int ph, int pw, int flags) {
    extern __shared__ float4 smem4[];
    float* const w_s = reinterpret_cast<float*>(smem4);  // (SC_FK, C, R, S): this block's k, zeros past K
    if (S != SC_S || sw != SC_SW) return;  // compiled for another shape: the wrapper never does this
    const int k0 = blockIdx.y * SC_FK;
    const int CRS = C * R * SC_S;
    const int kn = min(SC_FK, K - k0);
    for (int i = threadIdx.x; i < SC_FK * CRS; i += blockDim.x) w_s[i] = i < kn * CRS ? Wt[(long long)k0 * CRS + i] : 0.f;
    __syncthreads();

    const int Qb = (Q + SC_FU - 1) / SC_FU;
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= (long long)N * P * Qb) return;  // no barrier below
    const int qb = (int)(j % Qb);
    const long long t = j / Qb;
    const int p = (int)(t % P);
    const int n = (int)(t / P);
    const int q0 = qb * SC_FU;
    const int iw0 = q0 * SC_SW - pw;

    float acc[SC_FK][SC_FU];
#pragma unroll
    for (int kk = 0; kk < SC_FK; ++kk)
#pragma unroll
        for (int u = 0; u < SC_FU; ++u) acc[kk][u] = 0.f;

    for (int c = 0; c < C; ++c) {
        const float* const xc = x + ((long long)n * C + c) * H * W;
        for (int r = 0; r < R; ++r) {
            const int ih = p * sh - ph + r;
            if ((unsigned)ih >= (unsigned)H) continue;  // a padding row: contributes zeros
            const float* const xr = xc + (long long)ih * W;
            float xv[SC_FXV];  // xv[i] = x column iw0 + i, zero outside the image
#pragma unroll
            for (int i = 0; i < SC_FXV; ++i) {
                const int iw = iw0 + i;
                xv[i] = (unsigned)iw < (unsigned)W ? xr[iw] : 0.f;
            }
            const float* const wr = w_s + (c * R + r) * SC_S;
#pragma unroll
            for (int kk = 0; kk < SC_FK; ++kk)
#pragma unroll
                for (int s = 0; s < SC_S; ++s) {
                    const float w = wr[kk * CRS + s];
#pragma unroll
                    for (int u = 0; u < SC_FU; ++u) acc[kk][u] = fmaf(w, xv[u * SC_SW + s], acc[kk][u]);
                }
        }
    }

    const bool vec = (flags & 1) && q0 + SC_FU <= Q;
    float* const yb = y + (((long long)n * K + k0) * P + p) * Q + q0;
#pragma unroll
    for (int kk = 0; kk < SC_FK; ++kk) {
        if (kk >= kn) break;
        const float bias = b ? b[k0 + kk] : 0.f;
        float* const yr = yb + (long long)kk * P * Q;
        if (vec) {
#pragma unroll
            for (int u = 0; u < SC_FU; u += 4)
                *reinterpret_cast<float4*>(yr + u) = make_float4(acc[kk][u] + bias, acc[kk][u + 1] + bias,
                                                                 acc[kk][u + 2] + bias, acc[kk][u + 3] + bias);
        } else {
#pragma unroll
            for (int u = 0; u < SC_FU; ++u)
                if (q0 + u < Q) yr[u] = acc[kk][u] + bias;
        }
    }
}
