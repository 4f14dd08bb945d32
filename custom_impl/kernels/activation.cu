// Activations relu / sigmoid / tanh, forward and backward, elementwise over flat float32 arrays.
//
// Backward takes the saved OUTPUT y of the forward (not its input): relu' = (y > 0), sigmoid' = y(1 - y),
// tanh' = 1 - y^2. dx may alias dy (in-place backward): each thread reads dy[i] before writing dx[i].
// Grid-stride loops: any n, any grid.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void relu_forward(const float* x, float* y, long long n)
{
    GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = v > 0.0f ? v : (v != v ? v : 0.0f);  // NaN passes through, as torch.relu
    }
}

extern "C" __global__ void relu_backward(const float* dy, const float* y, float* dx, long long n)
{
    GRID_STRIDE(i, n) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

extern "C" __global__ void sigmoid_forward(const float* x, float* y, long long n)
{
    GRID_STRIDE(i, n) {
        // 1 / (1 + e^-x): e^-x overflows to inf for x < -88, giving exactly 0; no NaN for any finite x.
        y[i] = 1.0f / (1.0f + expf(-x[i]));
    }
}

extern "C" __global__ void sigmoid_backward(const float* dy, const float* y, float* dx, long long n)
{
    GRID_STRIDE(i, n) {
        float s = y[i];
        dx[i] = dy[i] * (s * (1.0f - s));
    }
}

extern "C" __global__ void tanh_forward(const float* x, float* y, long long n)
{
    GRID_STRIDE(i, n) {
        y[i] = tanhf(x[i]);
    }
}

extern "C" __global__ void tanh_backward(const float* dy, const float* y, float* dx, long long n)
{
    GRID_STRIDE(i, n) {
        float t = y[i];
        dx[i] = dy[i] * (1.0f - t * t);
    }
}
