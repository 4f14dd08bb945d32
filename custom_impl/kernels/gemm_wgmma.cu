// GEMM on Hopper's warpgroup tensor-core instructions (wgmma, needs the sm_90a target):
//   C[M, N] = act(A' B'^T + bias[None, :] + beta * C)
// over operands that gemm_wgmma_prep has already rounded to the product precision and laid out contiguous
// along k: A' (M, Kp) and B' (N, Kp), Kp a multiple of WG_BKE, zeros in [K, Kp). TF32 operands stay 32-bit
// floats whose low 13 mantissa bits are zero (cvt.rna, as gemm_tc.cu rounds them), so the tensor cores use
// them exactly; BF16 operands are 16-bit (cvt.rn). Products are exact and summed in FP32.
//
// Kernels:
//   gemm_wgmma_prep  rounds (and transposes where the source is stored (K, R)) one operand per grid z into
//                    the workspace: dst[r * Kp + k] = round(src(r, k)), 0 for k >= K.
//   gemm_wgmma       one block per BM x BN tile of C (and per split-K chunk, grid z). BM / 64 warpgroups of
//                    128 threads, warpgroup w owns rows [64 w, 64 w + 64) and all BN columns (wgmma
//                    m64nBNk8 for TF32, k16 for BF16, both operands from shared memory).
//
// Shared memory: WG_STAGES stages, each the A tile (BM rows) and the B tile (BN rows) of one k tile. A row
// is 128 bytes (32 TF32 or 64 BF16 values along k) in the 128-byte swizzle of wgmma's shared-memory
// descriptors: the 16-byte chunk c of row r sits at chunk c ^ (r % 8), so the 8 rows of a 1024-byte atom
// spread each chunk column over all banks. Tiles start on 1024-byte boundaries. A descriptor gives the
// tile's start address, the stride between 8-row groups (1024 bytes) and the swizzle mode; the k step
// within the 128-byte row is a 32-byte advance of the start address, which the hardware swizzles like the
// copies did.
//
// Pipeline, k tile t (cp.async copies, one commit group per tile, 16-byte chunks zero-filled past M / N):
//   wait for this thread's copies of tile t; proxy fence (the tensor cores read through the async proxy);
//   barrier: every copy of tile t is in, and every warpgroup has retired its wgmma of tile t - 2
//   issue the copies of tile t + STAGES - 2 into the stage tile t - 2 used
//   issue the wgmma of tile t (BKE / KSTEP instructions), commit, wait until only this group is pending
//   (tile t - 1 retired)
// so two k tiles of copies are in flight while the tensor cores work, and a stage is rewritten only after
// the wgmma that read it has retired in every warpgroup.
#include "gemm_tc_tiles.cuh"  // TcGemmEpilogue, cp.async and rounding wrappers

#ifndef WG_BM
#define WG_BM 128
#endif
#ifndef WG_BN
#define WG_BN 256
#endif
#ifndef WG_STAGES
#define WG_STAGES 4
#endif
#ifndef WG_PREC
#define WG_PREC 0  // 0: TF32, 1: BF16
#endif
#define WG_NT (WG_BM / 64 * 128)
#define WG_EB (WG_PREC == 0 ? 4 : 2)  // bytes per operand element
#define WG_BKE (128 / WG_EB)          // k per 128-byte row
#define WG_KSTEP (WG_PREC == 0 ? 8 : 16)
#define WG_A_BYTES (WG_BM * 128)
#define WG_STAGE_BYTES ((WG_BM + WG_BN) * 128)
#if WG_PREC == 0
#define WG_MMA_SUFFIX "k8.f32.tf32.tf32"
#define WG_MMA_TRANS ""
#else
#define WG_MMA_SUFFIX "k16.f32.bf16.bf16"
#define WG_MMA_TRANS ", 0, 0"  // both operands k-major: no transpose
#endif

static_assert(WG_BM % 64 == 0 && WG_BM <= 128, "one or two warpgroups of 64 rows");
static_assert(WG_BN == 128 || WG_BN == 256, "wgmma n of 128 or 256");
static_assert(WG_STAGES >= 3, "the pipeline keeps a stage for the wgmma still retiring");

// wgmma exists only in the architecture-specific target sm_90a (__CUDA_ARCH_FEAT_SM90_ALL), which the
// runtime builds this family for (runtime.ARCH_SPECIFIC). Compiled for plain sm_90, as a tool that builds
// every kernel file alike does, the prep kernels stay whole and gemm_wgmma's body is a trap.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_WGMMA 1
#else
#define WG_WGMMA 0
#endif

#if WG_WGMMA
// ---- PTX wrappers --------------------------------------------------------------------------------------
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Keeps the compiler from moving accesses of the accumulators across the asynchronous wgmma that owns
// them (an empty asm that "reads and writes" each one).
template <int N>
__device__ __forceinline__ void wg_fence_acc(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor of a k-major tile in the 128-byte swizzle starting at `addr` (shared
// space): bits 0-13 address / 16, 16-29 leading offset / 16 (unused by this layout, 1 by convention),
// 32-45 stride between 8-row groups / 16 (1024 bytes), 62-63 swizzle mode (1: 128 bytes).
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
           (1ull << 62);
}

// d (the warpgroup's 64 x WG_BN accumulators, WG_BN / 2 per thread) += A B^T over one k step, from the
// shared-memory tiles of descriptors da and db. The second half of the register list exists at BN = 256.
#if WG_BN == 256
#define WG_MMA_N "256"
#define WG_MMA_DESC "%128, %129"
#else
#define WG_MMA_N "128"
#define WG_MMA_DESC "%64, %65"
#endif
__device__ __forceinline__ void wg_mma(float (&d)[WG_BN / 2], unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n" WG_MMA_N WG_MMA_SUFFIX " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#if WG_BN == 256
        ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
        ", %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
        ", %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111"
        ", %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#endif
        "}, " WG_MMA_DESC ", p, 1, 1" WG_MMA_TRANS ";\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#if WG_BN == 256
          , "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
#endif
        : "l"(da), "l"(db));
}

#endif  // WG_WGMMA

// ---- operand preparation -------------------------------------------------------------------------------
// Grid (ceil(Kp / 32), ceil(max(a_rows, b_rows) / 32), 2): z = 0 prepares A, z = 1 B, one 32 x 32 tile per
// block. *_flags bit 0 (trans): the source is stored (K, rows), row r of the operand is its column r; the
// tile goes through shared memory so that both the read (along the source's contiguous dimension) and the
// write (along k) are coalesced. Bit 1 (vec): the source is stored (rows, K) with K % 4 == 0 and 16-byte
// aligned; each thread then rounds 4 consecutive k of one row from one float4 (a chunk lies wholly in or
// past [0, K)) and stores them with one 16-byte (TF32) or 8-byte (BF16) store, without shared memory.
__device__ __forceinline__ void wg_store_rounded(void* dst, size_t i, float v) {
#if WG_PREC == 0
    reinterpret_cast<unsigned*>(dst)[i] = tc_tf32(v);
#else
    reinterpret_cast<unsigned short*>(dst)[i] = tc_bf16(v);
#endif
}

// Four consecutive values rounded into dst[i .. i + 3] (i % 4 == 0): one 16-byte store of TF32 values or one
// 8-byte store of BF16 pairs (cvt.rn.bf16x2: the same rounding as wg_store_rounded's cvt.rn.bf16).
__device__ __forceinline__ void wg_store_rounded4(void* dst, size_t i, float4 v) {
#if WG_PREC == 0
    reinterpret_cast<uint4*>(dst)[i >> 2] = make_uint4(tc_tf32(v.x), tc_tf32(v.y), tc_tf32(v.z), tc_tf32(v.w));
#else
    reinterpret_cast<uint2*>(dst)[i >> 2] = make_uint2(tc_bf16x2(v.x, v.y), tc_bf16x2(v.z, v.w));
#endif
}

extern "C" __global__ void __launch_bounds__(256)
gemm_wgmma_prep(const float* __restrict__ a_src, void* __restrict__ a_dst, int a_rows, int a_flags,
                const float* __restrict__ b_src, void* __restrict__ b_dst, int b_rows, int b_flags, int K, int Kp) {
    __shared__ float tile[32][33];
    const bool first = blockIdx.z == 0;
    const float* src = first ? a_src : b_src;
    void* dst = first ? a_dst : b_dst;
    const int R = first ? a_rows : b_rows;
    const int flags = first ? a_flags : b_flags;
    const bool trans = flags & 1;
    const int r0 = blockIdx.y * 32, k0 = blockIdx.x * 32;
    if (r0 >= R) return;
    if (!trans && (flags & 2)) {  // the whole block takes this branch (flags are per z): no barrier below
        const int r = r0 + (threadIdx.x >> 3), k = k0 + (threadIdx.x & 7) * 4;
        if (r < R && k < Kp) {
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (k < K) v = *reinterpret_cast<const float4*>(src + (size_t)r * K + k);
            wg_store_rounded4(dst, (size_t)r * Kp + k, v);
        }
        return;
    }
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
#pragma unroll
    for (int i = ty; i < 32; i += 8) {
        float v = 0.f;
        if (trans) {  // element (r0 + tx, k0 + i) at src[k * R + r]
            const int r = r0 + tx, k = k0 + i;
            if (r < R && k < K) v = src[(size_t)k * R + r];
            tile[tx][i] = v;
        } else {      // element (r0 + i, k0 + tx) at src[r * K + k]
            const int r = r0 + i, k = k0 + tx;
            if (r < R && k < K) v = src[(size_t)r * K + k];
            tile[i][tx] = v;
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = ty; i < 32; i += 8) {
        const int r = r0 + i, k = k0 + tx;
        if (r < R && k < Kp) wg_store_rounded(dst, (size_t)r * Kp + k, tile[i][tx]);
    }
}

// Convolution operands for the same GEMM (Legend: N batch, C in-channels, K out-channels, H,W in, P,Q
// out, R,S kernel, stride sh,sw, padding ph,pw). Writes dst[r * Kp + k] = round(operand(r, k)) for rows
// r < rows and k < Kp (0 past the reduction length `red`), where by `mode`:
//   0 WT    (k_out, c r s)        = W[k_out][c][r][s]                        forward B (rows K, red C R S)
//   1 COLS  (n p q, c r s)        = x[n][c][p sh - ph + r][q sw - pw + s]    forward A (rows N P Q)
//   2 COLST (c r s, n p q)        = the same element                         backward-weights B (rows C R S)
//   3 DY    (k_out, n p q)        = dy[n][k_out][p][q]                       backward-weights A (rows K)
//   4 DCOLS (n h w, k_out r s)    = dy[n][k_out][p][q] where p sh = h + ph - r and q sw = w + pw - s
//                                   (0 where not a whole output index)      backward-data A (rows N H W)
//   5 WC    (c, k_out r s)        = W[k_out][c][r][s]                        backward-data B (rows C)
// So forward is (N P Q x K) = COLS WT^T written into y (N, K, P, Q), backward-data (N H W x C) = DCOLS WC^T
// into dx (N, C, H, W), backward-weights (K x C R S) = DY COLST^T into dW.
//
// Grid (ceil(Kp / 256), ceil(rows / rows_per_block)). A thread owns one k for the block's rows: it splits k
// into its indices once, and steps the row's indices (n p q, c r s or n h w) by carries, so the loop has
// no integer division (but for a stride above 1 in backward-data). The 32 threads of a warp write 32
// consecutive k of a row (coalesced), and read mostly neighbouring elements (consecutive k are
// consecutive s, q or pixels).
// Steps the indices (a, b, c) of a row-major (., B, C) range to the next element: c fastest.
__device__ __forceinline__ void wg_step3(int& a, int& b, int& c, int B, int C) {
    if (++c == C) {
        c = 0;
        if (++b == B) {
            b = 0;
            ++a;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
conv_wgmma_prep(const float* __restrict__ src, void* __restrict__ dst, int mode, int rows, int red, int Kp,
                int rows_per_block, int N, int C, int H, int W, int K, int R, int S, int P, int Q, int sh,
                int sw, int ph, int pw) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int r0 = blockIdx.y * rows_per_block;
    const int r1 = min(rows, r0 + rows_per_block);
    if (k >= Kp || r0 >= r1) return;
    const bool live = k < red;
    const int kk = live ? k : 0;  // a harmless index for the padding columns, which write 0
    const int RS = R * S, PQ = P * Q, HW = H * W;
    size_t at = (size_t)r0 * Kp + k;
    if (mode == 0 || mode == 3 || mode == 5) {  // one stride per row
        size_t idx;
        int step;
        if (mode == 0) {         // W[r][k] as (K, C R S)
            idx = (size_t)r0 * red + kk;
            step = red;
        } else if (mode == 3) {  // dy[n][r][pq], k = n P Q + pq
            idx = ((size_t)(kk / PQ) * K + r0) * PQ + kk % PQ;
            step = PQ;
        } else {                 // W[k_out][r][rs], k = k_out R S + rs
            idx = ((size_t)(kk / RS) * C + r0) * RS + kk % RS;
            step = RS;
        }
        for (int r = r0; r < r1; ++r, at += Kp, idx += step) wg_store_rounded(dst, at, live ? src[idx] : 0.f);
    } else if (mode == 1 || mode == 2) {  // x at (pixel n p q, tap c kr ks): k fixes one, the rows step the other
        const int pixel = mode == 1 ? r0 : kk, tap = mode == 1 ? kk : r0;
        int n = pixel / PQ, p = (pixel % PQ) / Q, q = pixel % Q;
        int c = tap / RS, kr = (tap % RS) / S, ks = tap % S;
        for (int r = r0; r < r1; ++r, at += Kp) {
            const int h = p * sh - ph + kr, w = q * sw - pw + ks;
            float v = 0.f;
            if (live && h >= 0 && h < H && w >= 0 && w < W) v = src[(((size_t)n * C + c) * H + h) * W + w];
            wg_store_rounded(dst, at, v);
            if (mode == 1) wg_step3(n, p, q, P, Q);
            else wg_step3(c, kr, ks, R, S);
        }
    } else {                     // mode 4: rows n h w step by carries; k = k_out R S + kr S + ks
        const int ko = kk / RS, kr = (kk % RS) / S, ks = kk % S;
        int n = r0 / HW, h = (r0 % HW) / W, w = r0 % W;
        for (int r = r0; r < r1; ++r, at += Kp) {
            const int ph_ = h + ph - kr, pw_ = w + pw - ks;  // p sh and q sw, if whole
            float v = 0.f;
            if (live && ph_ >= 0 && pw_ >= 0) {
                const int p = sh == 1 ? ph_ : ph_ / sh, q = sw == 1 ? pw_ : pw_ / sw;
                if (p * sh == ph_ && q * sw == pw_ && p < P && q < Q)
                    v = src[(((size_t)n * K + ko) * P + p) * Q + q];
            }
            wg_store_rounded(dst, at, v);
            wg_step3(n, h, w, H, W);
        }
    }
}

// ---- the GEMM ------------------------------------------------------------------------------------------
// Copies of one k tile (k elements [k0, k0 + BKE)) of rows [row0, row0 + ROWS) of a prepared operand into
// the tile at shared address `s`, issued by NT threads (this one is thread `tid` of them).
template <int ROWS, int NT = WG_NT>
__device__ __forceinline__ void wg_load_tile(unsigned s, const unsigned char* p, int rows, int row0, int Kp,
                                             int k0, int tid) {
    constexpr int CHUNKS = ROWS * 8;
    static_assert(CHUNKS % NT == 0, "tile not divisible among threads");
#pragma unroll
    for (int i = 0; i < CHUNKS / NT; ++i) {
        const int c = tid + i * NT;
        const int r = c >> 3, ch = c & 7;
        const bool ok = row0 + r < rows;
        const unsigned char* src = ok ? p + ((size_t)(row0 + r) * Kp + k0) * WG_EB + ch * 16 : p;
        tc_cp16(s + r * 128 + ((ch ^ (r & 7)) << 4), src, ok);
    }
}

// Output element (m, n): C[m * N + n] (pq == 1), or of an NCHW tensor whose rows m run over images and
// their pq pixels and whose columns n are its channels (pq > 1: a convolution's output or input gradient):
// C[((m / pq) * N + n) * pq + m % pq]. Bias per column, beta / act / split-K as TcGemmEpilogue (split-K
// only with pq == 1).
struct WgEpilogue {
    TcGemmEpilogue plain;
    int pq;

    __device__ __forceinline__ void store2(int m, int n, float v0, float v1) const {
        if (pq == 1) {
            plain.store2(m, n, v0, v1);
            return;
        }
        if (m >= plain.M) return;
        const size_t at = ((size_t)(m / pq) * plain.N + n) * pq + m % pq;
        const float v[2] = {v0, v1};
#pragma unroll
        for (int f = 0; f < 2; ++f) {
            if (n + f >= plain.N) continue;
            float o = v[f];
            if (plain.bias) o += plain.bias[n + f];
            if (plain.beta) o += plain.C[at + (size_t)f * pq];
            plain.C[at + (size_t)f * pq] = apply_act(o, plain.act);
        }
    }
};

// A warpgroup's accumulators (rows [row0, row0 + 64) x columns [n0, n0 + BN)) through WgEpilogue.
// Accumulator i of a thread: column group j = i / 4 (8 columns), within it (g, 2q), (g, 2q + 1),
// (g + 8, 2q), (g + 8, 2q + 1), rows relative to the warp's 16 (as mma.sync's C fragment).
// flags bit 2: float2 stores into C (or W), bit 3: split-K (block z's raw partial into W + z * M * N).
// pq: 1 for a row-major C, else the pixels per image of an NCHW output (WgEpilogue).
__device__ __forceinline__ void wg_store_acc(const float (&acc)[WG_BN / 2], float* C, const float* bias, float* W,
                                             int M, int N, int beta, int act, int flags, int pq, int row0, int n0,
                                             int tid) {
    const bool split = (flags >> 3) & 1;
    WgEpilogue ep;
    ep.plain.C = split ? W + (size_t)blockIdx.z * M * N : C;
    ep.plain.bias = bias; ep.plain.M = M; ep.plain.N = N; ep.plain.beta = beta; ep.plain.act = act;
    ep.plain.vec2 = (flags >> 2) & 1; ep.plain.partial = split;
    ep.pq = pq;
    const int lane = tid & 31, warp = (tid >> 5) & 3;
    const int row = row0 + warp * 16 + (lane >> 2);
    const int col = n0 + 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < WG_BN / 8; ++j) {
        ep.store2(row, col + 8 * j, acc[4 * j], acc[4 * j + 1]);
        ep.store2(row + 8, col + 8 * j, acc[4 * j + 2], acc[4 * j + 3]);
    }
}

// flags and pq: as wg_store_acc.
extern "C" __global__ void __launch_bounds__(WG_NT, 1)
gemm_wgmma(const void* __restrict__ Ap, const void* __restrict__ Bp, float* __restrict__ C,
           const float* __restrict__ bias, float* __restrict__ W, int M, int N, int Kp, int k_chunk, int beta,
           int act, int flags, int pq) {
#if WG_WGMMA
    extern __shared__ __align__(1024) unsigned char wg_smem_raw[];
    const unsigned raw = tc_smem_addr(wg_smem_raw);
    const unsigned base = (raw + 1023) & ~1023u;  // the launch asks for 1 KB more than the stages
    const int tid = threadIdx.x;
    const int wg = tid >> 7;
    const int m0 = blockIdx.y * WG_BM, n0 = blockIdx.x * WG_BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int ntiles = (min(Kp, k_begin + k_chunk) - k_begin) / WG_BKE;
    const unsigned char* A = static_cast<const unsigned char*>(Ap);
    const unsigned char* B = static_cast<const unsigned char*>(Bp);

    float acc[WG_BN / 2];
#pragma unroll
    for (int i = 0; i < WG_BN / 2; ++i) acc[i] = 0.f;

#pragma unroll
    for (int s = 0; s < WG_STAGES - 2; ++s) {
        if (s < ntiles) {
            const unsigned st = base + s * WG_STAGE_BYTES;
            wg_load_tile<WG_BM>(st, A, M, m0, Kp, k_begin + s * WG_BKE, tid);
            wg_load_tile<WG_BN>(st + WG_A_BYTES, B, N, n0, Kp, k_begin + s * WG_BKE, tid);
        }
        tc_cp_commit();  // NOTE: one group per tile even when empty, so the wait counts stay uniform
    }
    for (int t = 0; t < ntiles; ++t) {
        tc_cp_wait<WG_STAGES - 3>();
        wg_proxy_fence();
        __syncthreads();
        const int nt = t + WG_STAGES - 2;
        if (nt < ntiles) {
            const unsigned st = base + (nt % WG_STAGES) * WG_STAGE_BYTES;
            wg_load_tile<WG_BM>(st, A, M, m0, Kp, k_begin + nt * WG_BKE, tid);
            wg_load_tile<WG_BN>(st + WG_A_BYTES, B, N, n0, Kp, k_begin + nt * WG_BKE, tid);
        }
        tc_cp_commit();
        const unsigned st = base + (t % WG_STAGES) * WG_STAGE_BYTES;
        const unsigned long long da = wg_desc(st + wg * 64 * 128);
        const unsigned long long db = wg_desc(st + WG_A_BYTES);
        wg_fence_acc(acc);
        wg_fence();
#pragma unroll
        for (int j = 0; j < WG_BKE / WG_KSTEP; ++j) {  // 32 bytes of k per instruction: +2 in address / 16
            wg_mma(acc, da + 2 * j, db + 2 * j);
        }
        wg_commit();
        wg_wait<1>();
        wg_fence_acc(acc);
    }
    wg_wait<0>();
    wg_fence_acc(acc);
    tc_cp_wait<0>();

    wg_store_acc(acc, C, bias, W, M, N, beta, act, flags, pq, m0 + wg * 64, n0, tid);
#else
    __trap();
#endif
}
