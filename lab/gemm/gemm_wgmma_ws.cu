// Experiment: the package's gemm_wgmma (custom_impl/kernels/gemm_wgmma.cu) with warp specialisation. Compiled
// by lab/gemm/ws_bench.py with the same WG_* defines, for sm_90a.
//
// gemm_wgmma has every thread copy, then meet at one barrier per k tile, so a copy has STAGES - 2 tiles
// of wgmma time to land. Here a block of 384 threads splits the roles:
//   warpgroup 0 (producer)       for tile t: waits until stage t % STAGES is free (empty[s]), issues its
//                                cp.async copies of the A and B tiles, and lets the mbarrier full[s] count
//                                them: cp.async.mbarrier.arrive.noinc fires when this thread's copies land
//                                (full[s] expects all 128 producer threads).
//   warpgroups 1, 2 (consumers)  64 rows x BN each, as gemm_wgmma's warpgroups: wait for full[s], proxy
//                                fence (the copies are generic-proxy writes, wgmma reads through the async
//                                proxy), issue the tile's wgmma, commit, wait until only it is pending, then
//                                every consumer thread arrives on empty[] of the previous tile's stage,
//                                whose wgmma has now retired (empty[s] expects all 256 consumer threads).
// No block barrier in the main loop; the producer runs up to STAGES tiles ahead of the consumers. Both
// consumers issue the same wgmma sequence per accumulator as gemm_wgmma, so results are bit-identical to
// it (what ws_bench.py checks).
//
// gemm_wgmma_tma (below) is the same with the tensor memory accelerator as the producer: one thread of
// warpgroup 0 issues, per tile, two cp.async.bulk.tensor copies (the A and B boxes, each rows x 128 bytes,
// written in the 128-byte swizzle the wgmma descriptors read, rows past M / N zero-filled by the copy engine)
// that complete on full[s] with their byte count (mbarrier.arrive.expect_tx), instead of 128 threads issuing
// 16-byte cp.async copies. The two tensor maps (CUtensorMap, 128 bytes each, encoded on the host by the driver's
// cuTensorMapEncodeTiled over A' (M, Kp) and B' (N, Kp)) sit in global memory, passed by address.
//
// Phases: mbarriers start in phase 0. Tile t is the (t / STAGES)-th use of stage s = t % STAGES, so its
// full[s] phase has parity (t / STAGES) & 1; before refilling s for tile t >= STAGES the producer waits for
// the release of tile t - STAGES, phase parity (t / STAGES - 1) & 1.
#ifndef WG_BN
#define WG_BN 128  // the width ws_bench.py compares (the package file's default is 256)
#endif
#include "../../custom_impl/kernels/gemm_wgmma.cu"  // also found through -I custom_impl/kernels

#define WS_NT 384

#if WG_WGMMA
__device__ __forceinline__ void ws_bar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// Whether the phase of parity `parity` of `bar` has completed (try_wait may suspend the thread a while first).
__device__ __forceinline__ bool ws_bar_try(unsigned bar, unsigned parity) {
    unsigned done;
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    return done != 0;
}

// Waits for that phase. An experiment's copy that never completes (a wrong tensor map, say) would hang the
// block: after WS_SPIN_LIMIT tries the kernel traps instead, so the bench reports an error and goes on.
#ifndef WS_SPIN_LIMIT
#define WS_SPIN_LIMIT (1u << 22)
#endif
__device__ __forceinline__ void ws_bar_wait(unsigned bar, unsigned parity) {
    for (unsigned tries = 1; !ws_bar_try(bar, parity); ++tries)
        if (tries == WS_SPIN_LIMIT) __trap();
}

__device__ __forceinline__ void ws_bar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// An arrive on `bar` once every cp.async this thread issued so far has landed (.noinc: counted in the init).
__device__ __forceinline__ void ws_cp_arrive(unsigned bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// This thread's arrival on `bar`, which now also waits for `bytes` of asynchronous copies to complete on it.
__device__ __forceinline__ void ws_arrive_expect(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// The box of tensor map `map` at (inner coordinate x: k elements, outer y: rows) into shared memory at `dst`,
// its bytes counted on `bar` when they land.
__device__ __forceinline__ void ws_tma_load(unsigned dst, const void* map, int x, int y, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
        ::"r"(dst), "l"(map), "r"(x), "r"(y), "r"(bar)
        : "memory");
}
// The consumer warpgroup c (0 or 1: rows [64 c, 64 c + 64) of the tile) of either kernel: for each k tile,
// wait for its stage (full[s]), issue its wgmma, retire the previous tile's and release that stage
// (empty[]), then the epilogue. PROXY: the stage was written by ordinary cp.async copies (generic proxy),
// so a proxy fence precedes the tensor cores' reads; the copy engine's writes need none.
template <bool PROXY>
__device__ __forceinline__ void ws_consume(unsigned base, unsigned full, unsigned empty, int ntiles, int c,
                                           float* C, const float* bias, float* W, int M, int N, int beta, int act,
                                           int flags, int pq, int m0, int n0, int tid) {
    float acc[WG_BN / 2];
#pragma unroll
    for (int i = 0; i < WG_BN / 2; ++i) acc[i] = 0.f;
    for (int t = 0; t < ntiles; ++t) {
        const int s = t % WG_STAGES;
        ws_bar_wait(full + 8 * s, (t / WG_STAGES) & 1);
        if (PROXY) wg_proxy_fence();
        const unsigned st = base + s * WG_STAGE_BYTES;
        const unsigned long long da = wg_desc(st + c * 64 * 128);
        const unsigned long long db = wg_desc(st + WG_A_BYTES);
        wg_fence_acc(acc);
        wg_fence();
#pragma unroll
        for (int j = 0; j < WG_BKE / WG_KSTEP; ++j) wg_mma(acc, da + 2 * j, db + 2 * j);
        wg_commit();
        wg_wait<1>();
        wg_fence_acc(acc);
        if (t > 0) ws_bar_arrive(empty + 8 * ((t - 1) % WG_STAGES));  // tile t - 1's wgmma has retired
    }
    wg_wait<0>();
    wg_fence_acc(acc);
    wg_store_acc(acc, C, bias, W, M, N, beta, act, flags, pq, m0 + c * 64, n0, tid);
}

// A block of either kernel: its shared memory (the stages from the first 1024-byte boundary, then the
// mbarriers full[s] and empty[s]), its tile and k range; the constructor (every thread) initialises the
// barriers (thread 0: full[s] expecting `full_count` arrivals, empty[s] the 256 consumer threads) and
// meets the block at a barrier.
struct WsBlock {
    unsigned base, full, empty;
    int tid, wg, m0, n0, k_begin, ntiles;
    __device__ __forceinline__ WsBlock(unsigned raw, int Kp, int k_chunk, unsigned full_count) {
        base = (raw + 1023) & ~1023u;
        full = base + WG_STAGES * WG_STAGE_BYTES;  // full[s] at full + 8 s
        empty = full + 8 * WG_STAGES;               // empty[s] at empty + 8 s
        tid = threadIdx.x;
        wg = tid >> 7;
        m0 = blockIdx.y * WG_BM;
        n0 = blockIdx.x * WG_BN;
        k_begin = blockIdx.z * k_chunk;
        ntiles = (min(Kp, k_begin + k_chunk) - k_begin) / WG_BKE;
        if (tid == 0) {
            for (int s = 0; s < WG_STAGES; ++s) {
                ws_bar_init(full + 8 * s, full_count);
                ws_bar_init(empty + 8 * s, 256);
            }
            asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        }
        __syncthreads();
    }
};
#endif

extern "C" __global__ void __launch_bounds__(WS_NT, 1)
gemm_wgmma_ws(const void* __restrict__ Ap, const void* __restrict__ Bp, float* __restrict__ C,
              const float* __restrict__ bias, float* __restrict__ W, int M, int N, int Kp, int k_chunk, int beta,
              int act, int flags, int pq) {
#if WG_WGMMA
    static_assert(WG_BM == 128, "two consumer warpgroups of 64 rows");
    extern __shared__ __align__(1024) unsigned char wg_smem_raw[];
    const WsBlock b(tc_smem_addr(wg_smem_raw), Kp, k_chunk, 128);   // full[s]: the 128 producer threads' copies
    const unsigned base = b.base, full = b.full, empty = b.empty;
    const int tid = b.tid, wg = b.wg, m0 = b.m0, n0 = b.n0, k_begin = b.k_begin, ntiles = b.ntiles;

    if (wg == 0) {  // producer
        const unsigned char* A = static_cast<const unsigned char*>(Ap);
        const unsigned char* B = static_cast<const unsigned char*>(Bp);
        for (int t = 0; t < ntiles; ++t) {
            const int s = t % WG_STAGES;
            if (t >= WG_STAGES) ws_bar_wait(empty + 8 * s, ((t / WG_STAGES) - 1) & 1);
            const unsigned st = base + s * WG_STAGE_BYTES;
            wg_load_tile<WG_BM, 128>(st, A, M, m0, Kp, k_begin + t * WG_BKE, tid);
            wg_load_tile<WG_BN, 128>(st + WG_A_BYTES, B, N, n0, Kp, k_begin + t * WG_BKE, tid);
            ws_cp_arrive(full + 8 * s);
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        return;
    }

    ws_consume<true>(base, full, empty, ntiles, wg - 1, C, bias, W, M, N, beta, act, flags, pq, m0, n0, tid);
#else
    __trap();
#endif
}

// maps: two CUtensorMaps in global memory (A' at maps, B' at maps + 128 bytes), 64-byte aligned. The other
// arguments as gemm_wgmma's after its operands.
extern "C" __global__ void __launch_bounds__(WS_NT, 1)
gemm_wgmma_tma(const unsigned char* __restrict__ maps, float* __restrict__ C, const float* __restrict__ bias,
               float* __restrict__ W, int M, int N, int Kp, int k_chunk, int beta, int act, int flags, int pq) {
#if WG_WGMMA
    static_assert(WG_BM == 128, "two consumer warpgroups of 64 rows");
    extern __shared__ __align__(1024) unsigned char wg_smem_raw[];
    const WsBlock b(tc_smem_addr(wg_smem_raw), Kp, k_chunk, 1);   // full[s]: one arrive, then the copies' bytes
    const unsigned base = b.base, full = b.full, empty = b.empty;
    const int tid = b.tid, wg = b.wg, m0 = b.m0, n0 = b.n0, k_begin = b.k_begin, ntiles = b.ntiles;

    if (wg == 0) {  // producer: one thread
        if (tid == 0) {
            for (int t = 0; t < ntiles; ++t) {
                const int s = t % WG_STAGES;
                if (t >= WG_STAGES) ws_bar_wait(empty + 8 * s, ((t / WG_STAGES) - 1) & 1);
                const unsigned st = base + s * WG_STAGE_BYTES;
                ws_arrive_expect(full + 8 * s, WG_STAGE_BYTES);
                ws_tma_load(st, maps, k_begin + t * WG_BKE, m0, full + 8 * s);
                ws_tma_load(st + WG_A_BYTES, maps + 128, k_begin + t * WG_BKE, n0, full + 8 * s);
            }
        }
        return;
    }

    ws_consume<false>(base, full, empty, ntiles, wg - 1, C, bias, W, M, N, beta, act, flags, pq, m0, n0, tid);
#else
    __trap();
#endif
}
