"""The "fft" backward-data's CUDA kernels (custom_impl/kernels/conv_fft.cu) built for the host and run there:
each CUDA thread of a block is a host thread, ``__syncthreads`` a std::barrier of the block's 256 threads,
shared memory one host array reused block after block (blocks run one at a time, in order). The four
kernels run the product's plan (custom_impl/gpu/conv/fft.py) on random data, and dx is checked against a
direct float64 backward-data. Needs g++ with C++20 (or $CXX), no GPU.

    python3 lab/conv/fft_kernels_check.py          # every case of lab/conv/fft_emulate.py

What it checks that the NumPy emulation does not: the kernels' own index arithmetic (bit reversal, the
radix-2 butterflies, the row-pair split and its inverse, the tile windows and read-out, the bin GEMM's
staging and partial tiles). What it does not: CUDA's sincospif (the host uses sin / cos of pi x in double),
warp timing, or anything about speed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from custom_impl.gpu.conv import fft  # noqa: E402  (needs no CuPy)
from custom_impl.gpu.conv.geometry import conv_dims  # noqa: E402
from fft_emulate import CASES, direct_backward_data  # noqa: E402

SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
struct float2 { float x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
struct Dim3 { int x, y, z; };
thread_local Dim3 threadIdx, blockIdx;
static std::barrier<>* block_barrier;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}
inline void sincospif(float x, float* s, float* c) {
    *s = (float)std::sin(M_PI * (double)x);
    *c = (float)std::cos(M_PI * (double)x);
}
float2 smem[1 << 16];
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__
#define __launch_bounds__(...)
#include KERNEL_FILE

template <class Body>
void launch(Dim3 grid, Body body) {
    std::barrier<> bar(256);
    block_barrier = &bar;
    std::vector<std::thread> threads;
    for (int t = 0; t < 256; ++t)
        threads.emplace_back([&, t] {
            threadIdx = Dim3{t, 0, 0};
            for (int z = 0; z < grid.z; ++z)
                for (int y = 0; y < grid.y; ++y)
                    for (int x = 0; x < grid.x; ++x) {
                        blockIdx = Dim3{x, y, z};
                        body();
                        bar.arrive_and_wait();   // the block ends: shared memory free for the next
                    }
        });
    for (auto& th : threads) th.join();
}

template <class T>
std::vector<T> load(const char* path, size_t n) {
    std::vector<T> v(n);
    FILE* f = fopen(path, "rb");
    if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    return v;
}

int main(int argc, char** argv) {
    // N C H W K R S P Q sh sw ph pw th tw tiles_w tiles images dy.bin W.bin dx.bin
    int a[18];
    for (int i = 0; i < 18; ++i) a[i] = atoi(argv[1 + i]);
    const int N = a[0], C = a[1], H = a[2], Wd = a[3], K = a[4], R = a[5], S = a[6], P = a[7], Q = a[8];
    const int sh = a[9], sw = a[10], ph = a[11], pw = a[12], th = a[13], tw = a[14], tiles_w = a[15];
    const int tiles = a[16], images = a[17];
    auto dy = load<float>(argv[19], (size_t)N * K * P * Q);
    auto W = load<float>(argv[20], (size_t)K * C * R * S);
    std::vector<float> dx((size_t)N * C * H * Wd, NAN);
    std::vector<float2> Wh((size_t)K * C * BINS, float2{NAN, NAN});
    std::vector<float2> E((size_t)images * tiles * K * BINS, float2{NAN, NAN});
    std::vector<float2> X((size_t)images * tiles * C * BINS, float2{NAN, NAN});
    launch(Dim3{K * C, 1, 1}, [&] { conv_fft_filter(W.data(), Wh.data(), K, C, R, S); });
    for (int n0 = 0; n0 < N; n0 += images) {
        const int n = N - n0 < images ? N - n0 : images, rows = n * tiles;
        const float* dy_at = dy.data() + (size_t)n0 * K * P * Q;
        float* dx_at = dx.data() + (size_t)n0 * C * H * Wd;
        launch(Dim3{rows, K, 1}, [&] {
            conv_fft_dy(dy_at, E.data(), K, P, Q, sh, sw, ph - (R - 1), pw - (S - 1), H, Wd, th, tw, tiles_w, tiles);
        });
        const int grid_x = (rows + ROWS_TILE - 1) / ROWS_TILE * ((C + COLS_TILE - 1) / COLS_TILE);
        launch(Dim3{grid_x, (BINS + BIN_BLOCK - 1) / BIN_BLOCK, 1}, [&] { conv_fft_bins(E.data(), Wh.data(), X.data(), rows, K, C); });
        launch(Dim3{rows, C, 1}, [&] { conv_fft_dx(X.data(), dx_at, C, R, S, H, Wd, th, tw, tiles_w, tiles); });
    }
    FILE* f = fopen(argv[21], "wb");
    fwrite(dx.data(), sizeof(float), dx.size(), f);
    fclose(f);
    return 0;
}
"""


def build(lh: int, lw: int, tmp: str) -> str:
    cxx = os.environ.get("CXX", "g++")
    src = os.path.join(tmp, "shim.cpp")
    with open(src, "w") as f:
        f.write(SHIM)
    exe = os.path.join(tmp, f"fft_{lh}x{lw}")
    kernel = os.path.join(ROOT, "custom_impl", "kernels", "conv_fft.cu")
    subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", "-w", "-x", "c++", src, "-o", exe, f"-DFFT_LH={lh}",
                    f"-DFFT_LW={lw}", f'-DKERNEL_FILE="{kernel}"'], check=True)
    return exe


def main() -> int:
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        print("no C++ compiler (g++ or $CXX)")
        return 2
    rng = np.random.default_rng(11)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for x_shape, w_shape, stride, padding in CASES:
            dims = conv_dims(x_shape, w_shape, stride, padding)
            N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
            for images in (None, 1):
                p = fft.plan(dims)
                images = images or p.images
                if (p.lh, p.lw) not in built:
                    built[p.lh, p.lw] = build(p.lh, p.lw, tmp)
                dy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
                W = rng.standard_normal(w_shape).astype(np.float32)
                paths = [os.path.join(tmp, name) for name in ("dy.bin", "W.bin", "dx.bin")]
                dy.tofile(paths[0])
                W.tofile(paths[1])
                args = [N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw, p.th, p.tw, p.tiles_w, p.tiles, images]
                subprocess.run([built[p.lh, p.lw]] + [str(v) for v in args] + paths, check=True)
                dx = np.fromfile(paths[2], np.float32).reshape(N, C, H, Wd)
                ref = direct_backward_data(dy.astype(np.float64), W.astype(np.float64), x_shape, stride, padding)
                assert np.all(np.isfinite(dx)), f"{x_shape} {w_shape}: {np.sum(~np.isfinite(dx))} elements unwritten"
                err = np.abs(dx - ref).max() / np.abs(ref).max()
                worst = max(worst, err)
                print(f"{x_shape} {w_shape} stride {stride} pad {padding}: {p.lh}x{p.lw}, {images} images a chunk: "
                      f"max error / max |dx| = {err:.1e}")
    print(f"worst {worst:.1e}")
    return 0 if worst < 1e-5 else 1   # float32 transforms: ~1e-7..1e-6 of max |dx|; a wrong index is ~1


if __name__ == "__main__":
    sys.exit(main())
