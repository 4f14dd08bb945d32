// Tensor-core tile machinery shared by gemm_tc.cu (explicit GEMMs) and conv_implicit_gemm_tc.cu
// (implicit-GEMM convolutions): FP32 storage in global and shared memory, TF32 or BF16 products on the
// tensor cores through inline PTX mma.sync, FP32 accumulation.
//
// One block computes a BM x BN tile of C = op(A) @ op(B) over a range [k_begin, k_end) of the reduction.
// Pipeline: TC_STAGES shared-memory stages filled by cp.async (16-byte copies where a 4-float chunk lies
// inside an aligned operand, else 4-byte copies; out-of-range elements are zero-filled by the copy itself,
// src-size 0), one barrier per k tile: wait for tile t, barrier, issue the copies of tile t + STAGES - 1
// into the stage tile t - 1 used (every thread has passed the barrier, so no warp still reads it), compute
// tile t.
//
// Shared memory holds FP32 (what cp.async copies); each fragment is rounded to the product precision in
// registers as it is loaded: TF32 with cvt.rna.tf32.f32 (round to nearest, ties away), BF16 with
// cvt.rn.bf16x2.f32 (round to nearest even). Every element is rounded once per use, the same way each
// time, so the result equals the FP32-accumulated product of the rounded operands.
//
// Two shared layouts per operand, following the operand's global layout so that cp.async copies
// contiguous 16-byte chunks:
//   KMAJ  S[mn][k], row length LD = BK + pad   (operand contiguous along k: A (M,K), B^T stored (N,K))
//   MNMAJ S[k][mn], row length LD = BMN + pad  (operand contiguous along mn: A^T stored (K,M), B (K,N))
// The padding makes every fragment load conflict-free (g = lane / 4, t = lane % 4 below):
//   TF32 KMAJ  LD = BK + 4 (LD/4 odd): ldmatrix rows of 16 B land on distinct bank groups
//   TF32 MNMAJ LD = BMN + 8: element (k = t, mn = g) at bank 8t + g
//   BF16 KMAJ  LD = BK + 8: float2 of (mn = g, k = 2t..2t+1) at banks 8g + 2t (per half-warp)
//   BF16 MNMAJ LD = BMN + 4: element (k = 2t (+1), mn = g) at bank 8t + g (+4)
//
// Fragments (PTX ISA, "Matrix fragments for mma.m16n8k8" / "mma.m16n8k16"):
//   TF32 m16n8k8   a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4);   b0 (k t, n g)  b1 (k t+4, n g)
//   BF16 m16n8k16  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..) (low half: lower k);
//                  b0 (k 2t..2t+1, n g)  b1 (k 2t+8..2t+9, n g)
//   C/D (both)     c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
// TF32 KMAJ fragments come through ldmatrix (an 8x8 b16 matrix is 8 rows x 4 floats: lane l receives row
// l/4, float l%4 of each matrix); the others through plain 32-bit / 64-bit shared loads.
//
// Loaders (operand fetchers) are structs with
//     issue(S, k0)   issue the cp.async copies of the tile starting at reduction index k0 into stage S
// and a type Sm (TcSmem) giving their shared layout; an epilogue struct has store2(m, n, v0, v1) writing
// C[m, n] and C[m, n+1] with its own bounds checks.
#pragma once

#include "gemm_tiles.cuh"  // apply_act, pick_type, bool_constant

// Tile configuration, set per compiled module by gemm_tc.py's TcConfig.defines; defaults: 128x128x32,
// warps of 64x64, 3 stages, TF32.
#ifndef TC_BM
#define TC_BM 128
#endif
#ifndef TC_BN
#define TC_BN 128
#endif
#ifndef TC_BK
#define TC_BK 32
#endif
#ifndef TC_WM
#define TC_WM 64
#endif
#ifndef TC_WN
#define TC_WN 64
#endif
#ifndef TC_STAGES
#define TC_STAGES 3
#endif
#ifndef TC_PREC
#define TC_PREC 0  // 0: TF32 (mma m16n8k8), 1: BF16 (mma m16n8k16)
#endif
#define TC_NT ((TC_BM / TC_WM) * (TC_BN / TC_WN) * 32)
#define TC_KSTEP (TC_PREC == 0 ? 8 : 16)

static_assert(TC_BK % TC_KSTEP == 0 && TC_BK % 16 == 0, "TC_BK must be a multiple of 16");
static_assert(TC_BM % TC_WM == 0 && TC_BN % TC_WN == 0, "the warp tile must divide the block tile");
static_assert(TC_WM % 16 == 0 && TC_WN % 16 == 0, "warp tiles are whole 16x16 fragment pairs");
static_assert(TC_STAGES >= 2, "at least two pipeline stages");

// ---- PTX wrappers --------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned tc_smem_addr(const void* p) {
    unsigned r;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes global -> shared (a 32-bit shared-space address); ok == false copies nothing and zero-fills.
__device__ __forceinline__ void tc_cp16(unsigned dst, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ void tc_cp16(float* dst, const float* src, bool ok) {
    tc_cp16(tc_smem_addr(dst), src, ok);
}

// 4 bytes global -> shared; ok == false zero-fills.
__device__ __forceinline__ void tc_cp4(float* dst, const float* src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(tc_smem_addr(dst)), "l"(src),
                 "r"(ok ? 4 : 0));
}

__device__ __forceinline__ void tc_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void tc_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ unsigned tc_tf32(float x) {  // round to TF32 (nearest, ties away from zero)
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ unsigned tc_bf16x2(float lo, float hi) {  // {hi, lo} as bf16 (nearest even)
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ unsigned short tc_bf16(float x) {  // round to BF16 (nearest even), its 16 bits
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

// x rounded to an operand precision and kept as a float: TF32 (bf16 == 0) by cvt.rna with the 13 dropped
// mantissa bits cleared, BF16 by cvt.rn (nearest, ties to even). Products of two such values are exact in
// FP32 (at most 22 significant bits), as on the tensor cores.
__device__ __forceinline__ float tc_round_float(float x, int bf16) {
    if (bf16) return __uint_as_float((unsigned)tc_bf16(x) << 16);
    return __uint_as_float(tc_tf32(x) & 0xffffe000u);
}

__device__ __forceinline__ void tc_ldsm_x4(unsigned (&r)[4], const float* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tc_smem_addr(p)));
}

// d += a b on one 16x8 output fragment, FP32 accumulation.
__device__ __forceinline__ void tc_mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#if TC_PREC == 0
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ---- shared layouts --------------------------------------------------------------------------------------
template <int BMN, int BK, bool KMAJ>
struct TcSmem {
    static constexpr int LD = KMAJ ? BK + (TC_PREC == 0 ? 4 : 8) : BMN + (TC_PREC == 0 ? 8 : 4);
    static constexpr int FLOATS = KMAJ ? BMN * LD : BK * LD;   // one stage of this operand
    static_assert(LD % 4 == 0, "rows must stay 16-byte aligned for cp.async");
    __device__ __forceinline__ static int at(int mn, int k) { return KMAJ ? mn * LD + k : k * LD + mn; }
};

// ---- plain matrix loader ---------------------------------------------------------------------------------
// Element (mn, k) of the operand is p[mn * ld + k] (KMAJ: contiguous along k) or p[k * ld + mn] (MNMAJ).
// Chunks of 4 floats along the contiguous dimension; `vec`: ld % 4 == 0 and p 16-byte aligned, so a
// chunk wholly inside the matrix is one 16-byte copy; any other chunk is 4 zero-filling 4-byte copies.
template <int BMN, int BK, int NT, bool KMAJ>
struct TcMatrixLoader {
    using Sm = TcSmem<BMN, BK, KMAJ>;
    static constexpr int CHUNKS = BMN * BK / 4;
    static constexpr int PER = CHUNKS / NT;
    static_assert(PER >= 1 && CHUNKS % NT == 0, "tile not divisible among threads");
    const float* p;
    int ld, mn_size, mn0, k_end, tid;
    bool vec;

    __device__ __forceinline__ void issue(float* S, int k0) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int c = tid + i * NT;
            int mn, kk;
            if constexpr (KMAJ) {
                mn = c / (BK / 4);
                kk = (c % (BK / 4)) * 4;
            } else {
                kk = c / (BMN / 4);
                mn = (c % (BMN / 4)) * 4;
            }
            const int gmn = mn0 + mn;
            const int gk = k0 + kk;
            float* dst = S + Sm::at(mn, kk);
            if constexpr (KMAJ) {
                const float* src = p + (size_t)gmn * ld + gk;
                if (vec && gmn < mn_size && gk + 3 < k_end) {
                    tc_cp16(dst, src, true);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const bool ok = gmn < mn_size && gk + e < k_end;
                        tc_cp4(dst + e, ok ? src + e : p, ok);
                    }
                }
            } else {
                const float* src = p + (size_t)gk * ld + gmn;
                if (vec && gk < k_end && gmn + 3 < mn_size) {
                    tc_cp16(dst, src, true);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const bool ok = gk < k_end && gmn + e < mn_size;
                        tc_cp4(dst + Sm::at(e, 0), ok ? src + e : p, ok);
                    }
                }
            }
        }
    }
};

// ---- fragments -------------------------------------------------------------------------------------------
// A fragment of rows [m, m + 16) x the k step [ks, ks + KSTEP) from stage As (layout Sm).
template <class Sm, bool KMAJ>
__device__ __forceinline__ void tc_load_a(unsigned (&a)[4], const float* As, int m, int ks, int lane) {
    const int g = lane >> 2, t = lane & 3;
#if TC_PREC == 0
    if constexpr (KMAJ) {
        // matrices: 0 rows m..m+7 k ks..ks+3, 1 rows m+8.. same k, 2 rows m.. k ks+4.., 3 rows m+8.. k ks+4..
        tc_ldsm_x4(a, As + Sm::at(m + (lane & 7) + ((lane >> 3) & 1) * 8, ks + (lane >> 4) * 4));
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = tc_tf32(__uint_as_float(a[i]));
    } else {
        a[0] = tc_tf32(As[Sm::at(m + g, ks + t)]);
        a[1] = tc_tf32(As[Sm::at(m + g + 8, ks + t)]);
        a[2] = tc_tf32(As[Sm::at(m + g, ks + t + 4)]);
        a[3] = tc_tf32(As[Sm::at(m + g + 8, ks + t + 4)]);
    }
#else
    if constexpr (KMAJ) {
        const float2 v0 = *reinterpret_cast<const float2*>(As + Sm::at(m + g, ks + 2 * t));
        const float2 v1 = *reinterpret_cast<const float2*>(As + Sm::at(m + g + 8, ks + 2 * t));
        const float2 v2 = *reinterpret_cast<const float2*>(As + Sm::at(m + g, ks + 2 * t + 8));
        const float2 v3 = *reinterpret_cast<const float2*>(As + Sm::at(m + g + 8, ks + 2 * t + 8));
        a[0] = tc_bf16x2(v0.x, v0.y);
        a[1] = tc_bf16x2(v1.x, v1.y);
        a[2] = tc_bf16x2(v2.x, v2.y);
        a[3] = tc_bf16x2(v3.x, v3.y);
    } else {
        a[0] = tc_bf16x2(As[Sm::at(m + g, ks + 2 * t)], As[Sm::at(m + g, ks + 2 * t + 1)]);
        a[1] = tc_bf16x2(As[Sm::at(m + g + 8, ks + 2 * t)], As[Sm::at(m + g + 8, ks + 2 * t + 1)]);
        a[2] = tc_bf16x2(As[Sm::at(m + g, ks + 2 * t + 8)], As[Sm::at(m + g, ks + 2 * t + 9)]);
        a[3] = tc_bf16x2(As[Sm::at(m + g + 8, ks + 2 * t + 8)], As[Sm::at(m + g + 8, ks + 2 * t + 9)]);
    }
#endif
}

// B fragments of two neighbouring 8-column groups [n, n + 8) and [n + 8, n + 16): b0 and b1.
template <class Sm, bool KMAJ>
__device__ __forceinline__ void tc_load_b2(unsigned (&b0)[2], unsigned (&b1)[2], const float* Bs, int n, int ks,
                                           int lane) {
    const int g = lane >> 2, t = lane & 3;
#if TC_PREC == 0
    if constexpr (KMAJ) {
        // matrices: 0 cols n..n+7 k ks..ks+3, 1 cols n.. k ks+4.., 2 cols n+8.. k ks.., 3 cols n+8.. k ks+4..
        unsigned r[4];
        tc_ldsm_x4(r, Bs + Sm::at(n + (lane & 7) + (lane >> 4) * 8, ks + ((lane >> 3) & 1) * 4));
        b0[0] = tc_tf32(__uint_as_float(r[0]));
        b0[1] = tc_tf32(__uint_as_float(r[1]));
        b1[0] = tc_tf32(__uint_as_float(r[2]));
        b1[1] = tc_tf32(__uint_as_float(r[3]));
    } else {
        b0[0] = tc_tf32(Bs[Sm::at(n + g, ks + t)]);
        b0[1] = tc_tf32(Bs[Sm::at(n + g, ks + t + 4)]);
        b1[0] = tc_tf32(Bs[Sm::at(n + 8 + g, ks + t)]);
        b1[1] = tc_tf32(Bs[Sm::at(n + 8 + g, ks + t + 4)]);
    }
#else
    if constexpr (KMAJ) {
        const float2 u0 = *reinterpret_cast<const float2*>(Bs + Sm::at(n + g, ks + 2 * t));
        const float2 u1 = *reinterpret_cast<const float2*>(Bs + Sm::at(n + g, ks + 2 * t + 8));
        const float2 w0 = *reinterpret_cast<const float2*>(Bs + Sm::at(n + 8 + g, ks + 2 * t));
        const float2 w1 = *reinterpret_cast<const float2*>(Bs + Sm::at(n + 8 + g, ks + 2 * t + 8));
        b0[0] = tc_bf16x2(u0.x, u0.y);
        b0[1] = tc_bf16x2(u1.x, u1.y);
        b1[0] = tc_bf16x2(w0.x, w0.y);
        b1[1] = tc_bf16x2(w1.x, w1.y);
    } else {
        b0[0] = tc_bf16x2(Bs[Sm::at(n + g, ks + 2 * t)], Bs[Sm::at(n + g, ks + 2 * t + 1)]);
        b0[1] = tc_bf16x2(Bs[Sm::at(n + g, ks + 2 * t + 8)], Bs[Sm::at(n + g, ks + 2 * t + 9)]);
        b1[0] = tc_bf16x2(Bs[Sm::at(n + 8 + g, ks + 2 * t)], Bs[Sm::at(n + 8 + g, ks + 2 * t + 1)]);
        b1[1] = tc_bf16x2(Bs[Sm::at(n + 8 + g, ks + 2 * t + 8)], Bs[Sm::at(n + 8 + g, ks + 2 * t + 9)]);
    }
#endif
}

// Writes C[m, n] and C[m, n+1] (row-major, ld = N) with bias / beta / act, or the raw partial sums.
struct TcGemmEpilogue {
    float* C;
    const float* bias;
    int M, N, beta, act;
    bool vec2;     // N even and C 8-byte aligned: a float2 store per pair
    bool partial;  // split-K partial: raw sums, no bias / beta / act

    __device__ __forceinline__ void store2(int m, int n, float v0, float v1) const {
        if (m >= M || n >= N) return;
        float o[2] = {v0, v1};
        float* row = C + (size_t)m * N;
        if (!partial) {
#pragma unroll
            for (int f = 0; f < 2; ++f) {
                if (n + f >= N) continue;
                if (bias) o[f] += bias[n + f];
                if (beta) o[f] += row[n + f];
                o[f] = apply_act(o[f], act);
            }
        }
        if (vec2 && n + 1 < N) {
            *reinterpret_cast<float2*>(row + n) = make_float2(o[0], o[1]);
        } else {
            row[n] = o[0];
            if (n + 1 < N) row[n + 1] = o[1];
        }
    }
};

// ---- the main loop -----------------------------------------------------------------------------------
// Computes this block's BM x BN tile over k in [k_begin, k_end) (k_begin a multiple of BK) and hands
// every pair of accumulators to ep.store2(m, n, v0, v1) with global m, n (the epilogue checks bounds).
// Needs blockDim.x == TC_NT and TC_STAGES * (LA::Sm::FLOATS + LB::Sm::FLOATS) * 4 bytes of dynamic
// shared memory (gemm_tc.py's TcConfig.smem_bytes).
template <int BM, int BN, int BK, int WM, int WN, bool A_KMAJ, bool B_KMAJ, class LA, class LB, class EP>
__device__ __forceinline__ void tc_gemm_tile(const LA& la, const LB& lb, const EP& ep, int m0, int n0,
                                             int k_begin, int k_end) {
    constexpr int MF = WM / 16;        // 16-row fragments per warp
    constexpr int NF = WN / 8;         // 8-column fragments per warp (even: loaded in pairs)
    constexpr int WARPS_M = BM / WM;
    constexpr int A_FLOATS = LA::Sm::FLOATS;
    constexpr int STAGE = LA::Sm::FLOATS + LB::Sm::FLOATS;
    extern __shared__ __align__(16) float tc_smem[];

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm0 = (warp % WARPS_M) * WM;
    const int wn0 = (warp / WARPS_M) * WN;

    float acc[MF][NF][4];
#pragma unroll
    for (int i = 0; i < MF; ++i)
#pragma unroll
        for (int j = 0; j < NF; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    const int ntiles = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < ntiles) {
            la.issue(tc_smem + s * STAGE, k_begin + s * BK);
            lb.issue(tc_smem + s * STAGE + A_FLOATS, k_begin + s * BK);
        }
        tc_cp_commit();  // NOTE: one group per stage even when empty, so wait_group counts stay uniform
    }

    for (int t = 0; t < ntiles; ++t) {
        tc_cp_wait<TC_STAGES - 2>();   // this thread's copies of tile t have landed
        __syncthreads();               // everyone's have; and every warp is done with tile t - 1's stage
        const int nt = t + TC_STAGES - 1;
        if (nt < ntiles) {
            float* S = tc_smem + (nt % TC_STAGES) * STAGE;
            la.issue(S, k_begin + nt * BK);
            lb.issue(S + A_FLOATS, k_begin + nt * BK);
        }
        tc_cp_commit();
        const float* As = tc_smem + (t % TC_STAGES) * STAGE;
        const float* Bs = As + A_FLOATS;
#pragma unroll
        for (int ks = 0; ks < BK; ks += TC_KSTEP) {
            unsigned a[MF][4];
            unsigned b[NF][2];
#pragma unroll
            for (int i = 0; i < MF; ++i) tc_load_a<typename LA::Sm, A_KMAJ>(a[i], As, wm0 + i * 16, ks, lane);
#pragma unroll
            for (int j = 0; j < NF; j += 2)
                tc_load_b2<typename LB::Sm, B_KMAJ>(b[j], b[j + 1], Bs, wn0 + j * 8, ks, lane);
#pragma unroll
            for (int i = 0; i < MF; ++i)
#pragma unroll
                for (int j = 0; j < NF; ++j) tc_mma(acc[i][j], a[i], b[j]);
        }
    }
    tc_cp_wait<0>();  // only empty groups can be left; nothing is in flight when the block exits

    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < MF; ++i)
#pragma unroll
        for (int j = 0; j < NF; ++j) {
            const int m = m0 + wm0 + i * 16 + g;
            const int n = n0 + wn0 + j * 8 + 2 * t4;
            ep.store2(m, n, acc[i][j][0], acc[i][j][1]);
            ep.store2(m + 8, n, acc[i][j][2], acc[i][j][3]);
        }
}
