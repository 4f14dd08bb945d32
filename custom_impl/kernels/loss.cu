// Losses on logits, fused with their gradients, and the deterministic mean over the batch.
//
// Legend: N batch, K classes (logits per sample). Labels are int64 class indices (N,).
// softmax_xent: loss_i = logsumexp(z_i) - z_i[y_i] (stable: m + log(sum exp(z - m)), m = max z_i),
//               dz_i = (softmax(z_i) - onehot(y_i)) / N, both written in one pass, one warp per sample.
// sigmoid_bce:  K = 1, loss_i = softplus(z) - y z = max(z, 0) - y z + log1p(exp(-|z|)),
//               dz_i = (sigmoid(z) - y) / N, one thread per sample.
// A label out of range gives a NaN loss and NaN gradient row (visible, never silently wrong).
// mean_reduce: one block sums the per-sample losses in a fixed order (strided per thread, then a
// shared-memory tree), so the mean is bitwise reproducible run to run.

#define WARP 32

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void softmax_xent(
    const float* __restrict__ z,          // (N, K) logits
    const long long* __restrict__ label,  // (N,)
    float* __restrict__ loss,             // (N,) per-sample loss
    float* __restrict__ dz,               // (N, K) gradient of the mean loss
    int N, int K)
{
    int warps_per_block = blockDim.x / WARP;
    int row = blockIdx.x * warps_per_block + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (row >= N) return;  // whole warps leave together: the shuffles below see full warps
    const float* zr = z + (long long)row * K;
    float* dzr = dz + (long long)row * K;
    long long y = label[row];
    bool ok = y >= 0 && y < K;

    float m = __int_as_float(0xff800000);  // -inf (no math.h under NVRTC)
    for (int k = lane; k < K; k += WARP) m = fmaxf(m, zr[k]);
    m = warp_max(m);
    float s = 0.0f;
    for (int k = lane; k < K; k += WARP) s += expf(zr[k] - m);
    s = warp_sum(s);
    float inv_s = 1.0f / s;
    float nan = __int_as_float(0x7fc00000);
    for (int k = lane; k < K; k += WARP) {
        float p = expf(zr[k] - m) * inv_s;
        float g = (k == y) ? p - 1.0f : p;
        dzr[k] = ok ? g / (float)N : nan;
    }
    if (lane == 0) loss[row] = ok ? (m + logf(s)) - zr[y] : nan;
}

extern "C" __global__ void sigmoid_bce(
    const float* __restrict__ z,          // (N, 1) logits
    const long long* __restrict__ label,  // (N,) 0 or 1
    float* __restrict__ loss,             // (N,)
    float* __restrict__ dz,               // (N, 1)
    int N)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float v = z[i];
    long long yl = label[i];
    bool ok = yl == 0 || yl == 1;
    float y = (float)yl;
    float e = expf(-fabsf(v));                                  // in (0, 1]: never overflows
    float sig = v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);  // sigmoid(v), stable both ways
    float nan = __int_as_float(0x7fc00000);
    loss[i] = ok ? fmaxf(v, 0.0f) - v * y + log1pf(e) : nan;
    dz[i] = ok ? (sig - y) / (float)N : nan;
}

// One block of MEAN_THREADS threads (a power of two); out[0] = sum(x) / n.
#define MEAN_THREADS 256
extern "C" __global__ void mean_reduce(const float* __restrict__ x, float* __restrict__ out, int n)
{
    __shared__ float part[MEAN_THREADS];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += MEAN_THREADS) acc += x[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int half = MEAN_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();  // every partial sum of this level is written before the next level reads it
    }
    if (threadIdx.x == 0) out[0] = part[0] / (float)n;
}
