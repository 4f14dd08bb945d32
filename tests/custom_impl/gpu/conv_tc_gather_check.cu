// Host check of the tensor-core convolution's index arithmetic (kernels/conv_implicit_gemm_tc.cu), built
// with nvcc and run on the CPU by test_conv_tc_gather.py; no GPU needed.
//
// For each layer and tile shape, every phase is emulated through the kernel's own loaders and epilogues:
// each block's operand tiles are filled element by element from the loaders' sources() over every thread,
// chunk and k tile (as tc_gather_issue would copy them), multiplied in float64, and handed to the epilogue's
// store2 in pairs (as the mma main loop does). The result must equal a direct float64 convolution, and every
// in-range tile element must come from exactly one (thread, chunk, element). The mma fragments and the
// cp.async pipeline are not emulated: the GPU tests cover them.
//
// Also checks TcFastDiv against integer division. Prints one line per failure and "checked <count> cases,
// <bad> bad"; exits 1 on any.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "conv_implicit_gemm_tc.cu"

static int g_bad = 0, g_cases = 0;

struct Layer {
    int N, C, H, W, K, R, S, sh, sw, ph, pw;
    TcConvDims dims() const {
        const int P = (H + 2 * ph - R) / sh + 1, Q = (W + 2 * pw - S) / sw + 1;
        return TcConvDims{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    }
};

static std::vector<float> randoms(size_t n, unsigned seed) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xFFFF) / 65536.0f - 0.5f;   // never all zeros
    }
    return v;
}

static void fail(const char* what, const Layer& L, int bmn, int nt, const char* detail) {
    if (++g_bad <= 20)
        std::printf("FAIL %s: layer N%d C%d H%d W%d K%d R%d S%d st%d,%d pad%d,%d tile %d threads %d: %s\n", what, L.N,
                    L.C, L.H, L.W, L.K, L.R, L.S, L.sh, L.sw, L.ph, L.pw, bmn, nt, detail);
}

// Fills tile[mn][k] (BMN x BK) of the block at mn0, k tile k0, from loader l, as tc_gather_issue copies it.
// False when an element is copied zero or several times, when an element outside the operand (mn >= mn_size
// or k >= k_end) is not zero-filled, or when a source lies outside the tensor [base, base + size).
template <int BMN, int BK, int NT, bool KMAJ, class L>
static bool fill_tile(const L& l, const std::vector<float>& tensor, int mn0, int mn_size, int k0, int k_end,
                      std::vector<double>& tile, std::vector<int>& hits) {
    using Ch = TcChunks<BMN, BK, NT, KMAJ>;
    std::fill(hits.begin(), hits.end(), 0);
    bool ok = true;
    for (int tid = 0; tid < NT; ++tid) {
        L lt = l;
        lt.tid = tid;
        for (int i = 0; i < Ch::PER; ++i) {
            const float* src[4];
            lt.sources(i, k0, src);
            for (int e = 0; e < 4; ++e) {
                const int mn = Ch::mn(tid, i) + (KMAJ ? 0 : e), kk = Ch::k(tid, i) + (KMAJ ? e : 0);
                if (src[e] && (mn0 + mn >= mn_size || k0 + kk >= k_end)) ok = false;
                if (src[e] && (src[e] < tensor.data() || src[e] >= tensor.data() + tensor.size())) {
                    ok = false;
                    continue;
                }
                tile[mn * BK + kk] = src[e] ? (double)*src[e] : 0.0;
                hits[mn * BK + kk] += 1;
            }
        }
    }
    for (int h : hits)
        if (h != 1) return false;
    return ok;
}

// y[n,k,p,q] = b[k] + sum W x (double), dx, dW: the direct definitions.
static void direct(const Layer& L, const std::vector<float>& x, const std::vector<float>& Wt, const std::vector<float>& b,
                   const std::vector<float>& dy, std::vector<double>& y, std::vector<double>& dx,
                   std::vector<double>& dW) {
    const TcConvDims d = L.dims();
    y.assign((size_t)d.N * d.K * d.P * d.Q, 0.0);
    dx.assign((size_t)d.N * d.C * d.H * d.W, 0.0);
    dW.assign((size_t)d.K * d.C * d.R * d.S, 0.0);
    for (int n = 0; n < d.N; ++n)
        for (int k = 0; k < d.K; ++k)
            for (int p = 0; p < d.P; ++p)
                for (int q = 0; q < d.Q; ++q) {
                    const size_t yi = (((size_t)n * d.K + k) * d.P + p) * d.Q + q;
                    double acc = b[k];
                    for (int c = 0; c < d.C; ++c)
                        for (int r = 0; r < d.R; ++r)
                            for (int s = 0; s < d.S; ++s) {
                                const int ih = p * d.sh - d.ph + r, iw = q * d.sw - d.pw + s;
                                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                                const size_t xi = (((size_t)n * d.C + c) * d.H + ih) * d.W + iw;
                                const size_t wi = (((size_t)k * d.C + c) * d.R + r) * d.S + s;
                                acc += (double)Wt[wi] * x[xi];
                                dx[xi] += (double)Wt[wi] * dy[yi];
                                dW[wi] += (double)dy[yi] * x[xi];
                            }
                    y[yi] = acc;
                }
}

static bool close(double a, double b) { return std::fabs(a - b) <= 1e-9 * (1.0 + std::fabs(b)); }

template <int BM, int BN, int BK, int NT>
static void check_layer(const Layer& L, unsigned seed) {
    const TcConvDims d = L.dims();
    const int CRS = d.C * d.R * d.S, PQ = d.P * d.Q, NPQ = d.N * PQ;
    const auto x = randoms((size_t)d.N * d.C * d.H * d.W, seed);
    const auto Wt = randoms((size_t)d.K * CRS, seed + 1);
    const auto b = randoms(d.K, seed + 2);
    const auto dy = randoms((size_t)d.N * d.K * PQ, seed + 3);
    std::vector<double> y_ref, dx_ref, dW_ref;
    direct(L, x, Wt, b, dy, y_ref, dx_ref, dW_ref);
    char msg[256];

    // ---- forward: C[k, j] = sum_crs W[k, crs] B[crs, j], B from TcFwdColsLoader; split in two k ranges
    {
        ++g_cases;
        std::vector<float> y((size_t)d.N * d.K * PQ, NAN);
        std::vector<double> acc((size_t)d.K * NPQ, 0.0);
        std::vector<double> tile((size_t)BN * BK);
        std::vector<int> hits((size_t)BN * BK);
        const int k_chunk = ((CRS + 1) / 2 + BK - 1) / BK * BK;
        bool ok = true;
        for (int kb = 0; kb < CRS && ok; kb += k_chunk) {
            const int k_end = std::min(CRS, kb + k_chunk);
            for (int n0 = 0; n0 < NPQ && ok; n0 += BN) {
                TcFwdColsLoader<BN, BK, NT> lb;
                lb.init(x.data(), d, n0, NPQ, k_end, 0);
                for (int k0 = kb; k0 < k_end; k0 += BK) {
                    if (!fill_tile<BN, BK, NT, false>(lb, x, n0, NPQ, k0, k_end, tile, hits)) { ok = false; break; }
                    for (int m = 0; m < d.K; ++m)
                        for (int jj = 0; jj < BN && n0 + jj < NPQ; ++jj)
                            for (int kk = 0; kk < BK && k0 + kk < k_end; ++kk)
                                acc[(size_t)m * NPQ + n0 + jj] += (double)Wt[(size_t)m * CRS + k0 + kk] * tile[jj * BK + kk];
                }
            }
        }
        if (!ok) fail("forward B tile coverage", L, BN, NT, "an element copied zero or several times, not zero-filled outside the operand, or read outside the tensor");
        TcConvForwardEpilogue ep{y.data(), b.data(), nullptr, d.K, NPQ, TcFastDiv(PQ)};
        for (int m = 0; m < d.K + 8; ++m)
            for (int j = 0; j < NPQ + 8; j += 2)
                ep.store2(m, j, m < d.K && j < NPQ ? (float)acc[(size_t)m * NPQ + j] : 0.f,
                          m < d.K && j + 1 < NPQ ? (float)acc[(size_t)m * NPQ + j + 1] : 0.f);
        for (size_t i = 0; i < y.size() && ok; ++i)
            if (!(std::fabs(y[i] - y_ref[i]) <= 1e-4 * (1.0 + std::fabs(y_ref[i])))) {
                std::snprintf(msg, sizeof msg, "y[%zu] = %g, direct %g", i, (double)y[i], y_ref[i]);
                fail("forward", L, BN, NT, msg);
                ok = false;
            }
    }

    // ---- backward-weights: C[k, crs] = sum_j A[k, j] B[crs, j]; A TcGradRowsLoader, B TcWgradColsLoader
    {
        ++g_cases;
        std::vector<double> dW((size_t)d.K * CRS, 0.0);
        std::vector<double> ta((size_t)BM * BK), tb((size_t)BN * BK);
        std::vector<int> ha((size_t)BM * BK), hb((size_t)BN * BK);
        const int k_chunk = ((NPQ + 2) / 3 + BK - 1) / BK * BK;
        bool ok = true;
        for (int kb = 0; kb < NPQ && ok; kb += k_chunk) {
            const int k_end = std::min(NPQ, kb + k_chunk);
            for (int m0 = 0; m0 < d.K && ok; m0 += BM)
                for (int n0 = 0; n0 < CRS && ok; n0 += BN) {
                    TcGradRowsLoader<BM, BK, NT> la;
                    la.init(dy.data(), d, m0, k_end, 0);
                    TcWgradColsLoader<BN, BK, NT> lb;
                    lb.init(x.data(), d, n0, k_end, 0);
                    for (int k0 = kb; k0 < k_end; k0 += BK) {
                        if (!fill_tile<BM, BK, NT, true>(la, dy, m0, d.K, k0, k_end, ta, ha) ||
                            !fill_tile<BN, BK, NT, true>(lb, x, n0, CRS, k0, k_end, tb, hb)) { ok = false; break; }
                        for (int m = 0; m < BM && m0 + m < d.K; ++m)
                            for (int n = 0; n < BN && n0 + n < CRS; ++n) {
                                double s = 0;
                                for (int kk = 0; kk < BK; ++kk) s += ta[m * BK + kk] * tb[n * BK + kk];
                                dW[(size_t)(m0 + m) * CRS + n0 + n] += s;
                            }
                    }
                }
        }
        if (!ok) fail("backward-weights tile coverage", L, BN, NT, "an element copied zero or several times, not zero-filled outside the operand, or read outside the tensor");
        for (size_t i = 0; i < dW.size() && ok; ++i)
            if (!close(dW[i], dW_ref[i])) {
                std::snprintf(msg, sizeof msg, "dW[%zu] = %g, direct %g", i, dW[i], dW_ref[i]);
                fail("backward-weights", L, BN, NT, msg);
                ok = false;
            }
    }

    // ---- backward-data: per stride phase, C[c, j] = sum_kk A[c, kk] B[kk, j]; A TcWeightPhaseLoader,
    // B TcGradPhaseColsLoader; every dx element must be written by exactly one phase.
    {
        ++g_cases;
        std::vector<float> dx((size_t)d.N * d.C * d.H * d.W, NAN);
        std::vector<double> ta((size_t)BM * BK), tb((size_t)BN * BK);
        std::vector<int> ha((size_t)BM * BK), hb((size_t)BN * BK);
        bool ok = true;
        for (int z = 0; z < d.sh * d.sw && ok; ++z) {
            const TcPhase f = tc_phase(d, z);
            const int cols = d.N * f.Hh * f.Wh, red = d.K * f.Rt * f.St;
            if (cols == 0) continue;
            std::vector<double> acc((size_t)d.C * cols, 0.0);
            for (int m0 = 0; m0 < d.C && ok; m0 += BM)
                for (int n0 = 0; n0 < cols && ok; n0 += BN) {
                    TcWeightPhaseLoader<BM, BK, NT> la;
                    la.init(Wt.data(), d, f, m0, red, 0);
                    TcGradPhaseColsLoader<BN, BK, NT> lb;
                    lb.init(dy.data(), d, f, n0, cols, red, 0);
                    for (int k0 = 0; k0 < red; k0 += BK) {
                        if (!fill_tile<BM, BK, NT, false>(la, Wt, m0, d.C, k0, red, ta, ha) ||
                            !fill_tile<BN, BK, NT, false>(lb, dy, n0, cols, k0, red, tb, hb)) { ok = false; break; }
                        for (int m = 0; m < BM && m0 + m < d.C; ++m)
                            for (int n = 0; n < BN && n0 + n < cols; ++n) {
                                double s = 0;
                                for (int kk = 0; kk < BK; ++kk) s += ta[m * BK + kk] * tb[n * BK + kk];
                                acc[(size_t)(m0 + m) * cols + n0 + n] += s;
                            }
                    }
                }
            TcPhaseGradEpilogue ep{dx.data(), nullptr, d, f, cols, TcFastDiv(f.Hh * f.Wh), TcFastDiv(f.Wh)};
            for (int m = 0; m < d.C + 8; ++m)
                for (int j = 0; j < cols + 8; j += 2)
                    ep.store2(m, j, m < d.C && j < cols ? (float)acc[(size_t)m * cols + j] : 0.f,
                              m < d.C && j + 1 < cols ? (float)acc[(size_t)m * cols + j + 1] : 0.f);
        }
        if (!ok) fail("backward-data tile coverage", L, BN, NT, "an element copied zero or several times, not zero-filled outside the operand, or read outside the tensor");
        for (size_t i = 0; i < dx.size() && ok; ++i)
            if (!(std::fabs(dx[i] - dx_ref[i]) <= 1e-4 * (1.0 + std::fabs(dx_ref[i])))) {
                std::snprintf(msg, sizeof msg, "dx[%zu] = %g, direct %g (NaN: no phase wrote it)", i, (double)dx[i],
                              dx_ref[i]);
                fail("backward-data", L, BN, NT, msg);
                ok = false;
            }
    }
}

// TcFastDiv against integer division: small numerators, multiples of d and their neighbours, random ones.
static void check_fast_division() {
    const int ds[] = {1, 2, 3, 5, 7, 9, 25, 49, 196, 784, 3136, 12544, 65535, 65536, 65537, 1 << 20,
                      (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 2147483647};
    unsigned seed = 1;
    for (int d : ds) {
        ++g_cases;
        const TcFastDiv f(d);
        int bad = 0;
        for (long long t = 0; t < 100000; ++t) {
            seed = seed * 1664525u + 1013904223u;
            const long long n = t < 1000 ? t : (t < 2000 ? (t - 1000) * d + (t & 1 ? -1 : 0) : (long long)(seed >> 1));
            if (n >= 0 && n <= 2147483647 && f.quot((int)n) != (int)(n / d)) ++bad;
        }
        if (f.quot(2147483647) != 2147483647 / d) ++bad;
        if (bad && ++g_bad <= 20) std::printf("FAIL fast division by %d: %d wrong quotients\n", d, bad);
    }
}

int main() {
    check_fast_division();
    // Odd sizes, strides 1-3, non-square kernels and padding, kernels larger than the stride and smaller,
    // 1x1 with stride (empty backward-data phases), more taps than one k tile and fewer.
    const Layer layers[] = {
        {2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1},   {3, 5, 11, 6, 7, 5, 5, 1, 1, 2, 2},  {2, 4, 9, 13, 6, 3, 5, 2, 1, 1, 2},
        {1, 6, 10, 10, 3, 1, 1, 2, 2, 0, 0}, {2, 2, 15, 8, 4, 4, 2, 3, 2, 1, 0},  {1, 1, 17, 23, 9, 5, 7, 2, 3, 2, 3},
        {4, 7, 5, 5, 11, 3, 3, 1, 1, 0, 0},  {1, 9, 12, 7, 2, 7, 1, 1, 1, 3, 0},  {2, 3, 6, 6, 130, 1, 1, 1, 1, 0, 0},
        {1, 33, 4, 5, 3, 2, 2, 1, 1, 1, 1},
    };
    unsigned seed = 12345;
    for (const Layer& L : layers) {
        check_layer<128, 128, 32, 128>(L, seed += 7);    // tile 128x128, warps 64x64
        check_layer<128, 256, 32, 256>(L, seed += 7);    // tile 128x256
        check_layer<64, 64, 32, 128>(L, seed += 7);      // tile 64x64, warps 32x32
    }
    std::printf("checked %d cases, %d bad\n", g_cases, g_bad);
    return g_bad ? 1 : 0;
}
