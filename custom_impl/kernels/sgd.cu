// SGD with momentum over ALL parameters in one launch, as torch.optim.SGD (no dampening, no weight decay).
//
// w, g, v are single flat float32 buffers of n elements; every layer's weight / bias is a view into them.
// sgd_momentum: v = m*v + g; w -= lr*v.   sgd_plain (momentum 0): w -= lr*g, v left untouched (torch keeps
// no buffer then, and one created later starts as g, which m*0 + g gives too).
// NOTE: __fmul_rn keeps m*v a separately rounded product (torch: buf.mul_(m).add_(g)), so nvcc does not
// contract it into an FMA; the weight update w + (-lr)*v is one FMA, as torch's add_(alpha=-lr) kernel.

extern "C" __global__ void sgd_momentum(float* __restrict__ w, const float* __restrict__ g,
                                        float* __restrict__ v, long long n, float lr, float m)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float vi = __fmul_rn(m, v[i]) + g[i];
        v[i] = vi;
        w[i] = fmaf(-lr, vi, w[i]);
    }
}

extern "C" __global__ void sgd_plain(float* __restrict__ w, const float* __restrict__ g, long long n, float lr)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        w[i] = fmaf(-lr, g[i], w[i]);
    }
}
