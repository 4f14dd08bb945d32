// Runtime helpers: kernels the GPU runtime itself launches (custom_impl/gpu/runtime.py).
//   gpu_sleep   keeps the GPU busy for about `us` microseconds (one thread): the autotuner launches it
//               before timing a candidate, so the candidate's launches queue up behind it and the events
//               measure GPU time, not host time.

extern "C" __global__ void gpu_sleep(int us) {
    for (int i = 0; i < us; ++i) __nanosleep(1000);
}
