// conv2d backward-data as ONE implicit GEMM over all pixels: M = C, cols = N*H*W, reduction = K*R*S,
// A = W^T, B = dy gathered per tap, zero where the stride skips a tap. Superseded by the per-stride-phase
// GEMM (conv_implicit_gemm_dgrad), which never visits the skipped taps; the product's "auto" path never
// chose it. Launch: grid (ceil(N*H*W / BN), ceil(C / BM)), GEMM_NT threads, the tile's shared memory.
// Lab kernel, not part of the product (custom_impl/ never loads it). It is compiled against the product's
// kernels: it includes custom_impl/kernels/conv_implicit_gemm.cu (and through it gemm_tiles.cuh) for
// ConvDims, ConvPhase and the GEMM tile machinery, so build it with -I custom_impl/kernels and the GEMM_*
// tile defines, e.g.
//   nvcc -arch=sm_90 -cubin -I custom_impl/kernels -DKERNEL_HEADERS_DIGEST=x \
//        -o /tmp/x.cubin lab/conv/conv_gather_dgrad.cu
#include "../../custom_impl/kernels/conv_implicit_gemm.cu"  // also found through -I custom_impl/kernels

// Backward-data A operand: A[m = c, kk = (k,r,s)] = W[k, c, r, s]; mn-vector mapping (4 consecutive c).
template <int BMN, int BK, int NT>
struct WeightTLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    static_assert(LOADS >= 1 && (BMN * BK) % (4 * NT) == 0, "tile not divisible among threads");
    const float* Wt;
    int C, RS, k_end, mn0, tid;
    float4 r[LOADS];
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kk = k0 + v / (BMN / 4);
            int c = mn0 + (v % (BMN / 4)) * 4;
            int k = kk / RS;
            int rs = kk - k * RS;
            bool kok = kk < k_end;
            const float* q = Wt + ((long long)k * C) * RS + rs;  // + c*RS
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) o[e] = (kok && c + e < C) ? q[(long long)(c + e) * RS] : 0.f;
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            *reinterpret_cast<float4*>(Sm + (v / (BMN / 4)) * LDS + (v % (BMN / 4)) * 4) = r[i];
        }
    }
};

// Backward-data B operand: B[kk = (k,r,s), j = (n,h,w)] = dy[n, k, (h+ph-r)/sh, (w+pw-s)/sw] where both
// divisions are exact and in range, else 0. mn-vector mapping; per-column offsets computed once.
template <int BMN, int BK, int NT>
struct GradColsLoader {
    static constexpr int LOADS = BMN * BK / (4 * NT);
    const float* dy;
    int P, Q, RS, S, sh, sw, k_end, tid;
    long long base[LOADS][4];  // n*K*P*Q
    int hp[LOADS][4];          // h + ph, or OUT_OF_IMAGE
    int wp[LOADS][4];          // w + pw
    float4 r[LOADS];

    __device__ __forceinline__ void init(const ConvDims& d, int j0, int cols) {
        P = d.P; Q = d.Q; RS = d.R * d.S; S = d.S; sh = d.sh; sw = d.sw;
        const int HW = d.H * d.W;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int mv = (v % (BMN / 4)) * 4;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int j = j0 + mv + e;
                int n = j / HW;
                int hw = j - n * HW;
                int h = hw / d.W;
                int w = hw - h * d.W;
                base[i][e] = (long long)n * d.K * d.P * d.Q;
                hp[i][e] = j < cols ? h + d.ph : OUT_OF_IMAGE;
                wp[i][e] = w + d.pw;
            }
        }
    }
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            int kk = k0 + v / (BMN / 4);
            int k = kk / RS;
            int rs = kk - k * RS;
            int rr = rs / S;
            int ss = rs - rr * S;
            bool kok = kk < k_end;
            float o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int th = hp[i][e] - rr;  // p * sh when valid
                int tw = wp[i][e] - ss;  // q * sw when valid
                int p = th / sh;
                int q = tw / sw;
                bool ok = kok && th >= 0 && tw >= 0 && p * sh == th && q * sw == tw && p < P && q < Q;
                o[e] = ok ? dy[base[i][e] + ((long long)k * P + p) * Q + q] : 0.f;
            }
            r[i] = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
    __device__ __forceinline__ void store(float* Sm) const {
        constexpr int LDS = BMN + TILE_PAD;
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            int v = tid + i * NT;
            *reinterpret_cast<float4*>(Sm + (v / (BMN / 4)) * LDS + (v % (BMN / 4)) * 4) = r[i];
        }
    }
};

// Backward-data output: C[m = c, j = (n,h,w)] -> dx[n, c, h, w].
struct ConvGradEpilogue {
    float* dx;
    int C, HW, cols;
    __device__ __forceinline__ void store4(int m, int j, const float (&v)[4]) const {
        if (m >= C) return;
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            int jj = j + f;
            if (jj < cols) {
                int n = jj / HW;
                int hw = jj - n * HW;
                dx[((long long)n * C + m) * HW + hw] = v[f];
            }
        }
    }
};

extern "C" __global__ void __launch_bounds__(GEMM_NT, GEMM_MIN_BLOCKS)
conv_gather_dgrad(const float* __restrict__ dy, const float* __restrict__ Wt, float* __restrict__ dx,
                      int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                      int sh, int sw, int ph, int pw) {
    constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, NT = GEMM_NT;
    const ConvDims d{N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw};
    const int KRS = K * R * S;
    const int cols = N * H * W;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    WeightTLoader<BM, BK, NT> la;
    la.Wt = Wt; la.C = C; la.RS = R * S; la.k_end = KRS; la.mn0 = m0; la.tid = threadIdx.x;
    GradColsLoader<BN, BK, NT> lb;
    lb.tid = threadIdx.x;
    lb.init(d, n0, cols);
    lb.dy = dy; lb.k_end = KRS;
    ConvGradEpilogue ep{dx, C, H * W, cols};
    gemm_tile<BM, BN, BK, GEMM_TM, GEMM_TN>(la, lb, ep, m0, n0, 0, KRS);
}
