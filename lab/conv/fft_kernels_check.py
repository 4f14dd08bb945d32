"""The "fft" algorithm's CUDA kernels (custom_impl/kernels/conv_fft.cu) built for the host
and run there: each CUDA thread of a block is a host thread, ``__syncthreads`` a std::barrier of the block's
256 threads, shared memory one host array reused block after block (blocks run one at a time, in order). The four
kernels run the product's plans and launch arguments (custom_impl/gpu/conv/fft.py) on random data, and the
output of each phase is checked against a direct float64 convolution (the forward with a bias). Needs g++ with C++20 (or
$CXX), no GPU.

    python3 lab/conv/fft_kernels_check.py          # every case of lab/conv/fft_emulate.py

What it checks that the NumPy emulation does not: the kernels' own index arithmetic (bit reversal, the
radix-2 butterflies, the row-pair split and its inverse, the tile windows and read-out, the forward's
rotated filter and subsampled, biased output, the bin GEMM's staging and partial tiles). What it does not:
CUDA's sincospif (the host uses sin / cos of pi x in double), warp timing, or anything about speed.
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
from fft_emulate import CASES, compared, direct_backward_data, direct_backward_weights, direct_forward  # noqa: E402

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
static Dim3 gridDim;
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
    gridDim = grid;
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

static void input(const float* src, float2* E, int rows, int ci_count, const int* ia) {
    launch(Dim3{rows, ci_count, 1}, [&] {
        conv_fft_input(src, E, ia[0], ia[1], ia[2], ia[3], ia[4], ia[5], ia[6], ia[7], ia[8], ia[9], ia[10], ia[11],
                       ia[12], ia[13], ia[14], ia[15]);
    });
}

static void bins(const float2* E, const float2* Wh, float2* X, int rows, int c_in, int c_out) {
    const int grid_x = (rows + ROWS_TILE - 1) / ROWS_TILE * ((c_out + COLS_TILE - 1) / COLS_TILE);
    launch(Dim3{grid_x, (BINS + BIN_BLOCK - 1) / BIN_BLOCK, 1}, [&] { conv_fft_bins(E, Wh, X, rows, c_in, c_out); });
}

static void output(const float2* X, float* out, const float* bias, int rows, const int* oa) {
    launch(Dim3{rows, oa[0], 1}, [&] {
        conv_fft_output(X, out, bias, oa[0], oa[1], oa[2], oa[3], oa[4], oa[5], oa[6], oa[7], oa[8], oa[9], oa[10],
                        oa[11], oa[12]);
    });
}

int main(int argc, char** argv) {
    // mode (0 backward-data, 1 forward, 2 weight gradient) N images tiles c_in c_out src_floats out_floats
    // K C R S | filter: 5 | input: 16 | second input (the weight gradient's dy): 16 | output: 13
    // | src.bin W.bin bias.bin dy.bin out.bin
    constexpr int COUNT = 12 + 5 + 16 + 16 + 13;
    int a[COUNT];
    for (int i = 0; i < COUNT; ++i) a[i] = atoi(argv[1 + i]);
    const int mode = a[0], N = a[1], images = a[2], tiles = a[3], c_in = a[4], c_out = a[5];
    const int src_n = a[6], out_n = a[7], K = a[8], C = a[9], R = a[10], S = a[11];
    const int *fa = a + 12, *ia = a + 17, *da = a + 33, *oa = a + 49;
    const char** path = (const char**)argv + 1 + COUNT;
    auto src = load<float>(path[0], (size_t)src_n);
    auto W = load<float>(path[1], (size_t)K * C * R * S);
    auto bias = load<float>(path[2], (size_t)K);
    std::vector<float> out((size_t)out_n, NAN);
    if (mode == 2) {   // Ex (T, C), D (K, T) conjugate, dWh (K, C); the whole batch at once
        const int rows = N * tiles;
        auto dy = load<float>(path[3], (size_t)da[0] * N * da[1] * da[2]);
        std::vector<float2> Ex((size_t)rows * C * BINS, float2{NAN, NAN}), D((size_t)K * rows * BINS, float2{NAN, NAN});
        std::vector<float2> dWh((size_t)K * C * BINS, float2{NAN, NAN});
        input(src.data(), Ex.data(), rows, C, ia);
        input(dy.data(), D.data(), rows, K, da);
        bins(D.data(), Ex.data(), dWh.data(), K, rows, C);
        output(dWh.data(), out.data(), nullptr, K, oa);
    } else {
        std::vector<float2> Wh((size_t)K * C * BINS, float2{NAN, NAN});
        std::vector<float2> E((size_t)images * tiles * c_in * BINS, float2{NAN, NAN});
        std::vector<float2> X((size_t)images * tiles * c_out * BINS, float2{NAN, NAN});
        launch(Dim3{K * C, 1, 1}, [&] { conv_fft_filter(W.data(), Wh.data(), K, C, R, S, fa[4]); });
        for (int n0 = 0; n0 < N; n0 += images) {
            const int n = N - n0 < images ? N - n0 : images, rows = n * tiles;
            input(src.data() + (size_t)n0 * (src_n / N), E.data(), rows, c_in, ia);
            bins(E.data(), Wh.data(), X.data(), rows, c_in, c_out);
            output(X.data(), out.data() + (size_t)n0 * (out_n / N), mode == 1 ? bias.data() : nullptr, rows, oa);
        }
    }
    FILE* f = fopen(path[4], "wb");
    fwrite(out.data(), sizeof(float), out.size(), f);
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
            W = rng.standard_normal(w_shape).astype(np.float32)
            b = rng.standard_normal(K).astype(np.float32)
            x = rng.standard_normal(x_shape).astype(np.float32)
            dy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
            x64, dy64, W64 = x.astype(np.float64), dy.astype(np.float64), W.astype(np.float64)
            for phase in fft.PHASES:
                p = fft.plan(dims, phase)
                if (p.lh, p.lw) not in built:
                    built[p.lh, p.lw] = build(p.lh, p.lw, tmp)
                _, c_in, c_out, *_ = fft.problem(dims, phase)
                args = fft._args(dims, phase, p)
                unused = [0] * 16
                if phase == "backward_data":
                    src, ref, mode = dy, direct_backward_data(dy64, W64, x_shape, stride, padding), 0
                    ints = list(args["filter"]) + list(args["input"]) + unused + list(args["output"])
                elif phase == "forward":
                    src, mode = x, 1
                    ref = direct_forward(x64, W64, stride, padding) + b.astype(np.float64)[None, :, None, None]
                    ints = list(args["filter"]) + list(args["input"]) + unused + list(args["output"])
                else:
                    src, ref, mode = x, direct_backward_weights(dy64, x64, w_shape, stride, padding), 2
                    ints = [0] * 5 + list(args["x"]) + list(args["dy"]) + list(args["output"])
                paths = [os.path.join(tmp, name) for name in ("src.bin", "W.bin", "bias.bin", "dy.bin", "out.bin")]
                for arr, path in zip((src, W, b, dy), paths):
                    arr.tofile(path)
                for images in ((p.images,) if phase == "backward_weights" else (p.images, 1)):
                    head = [mode, N, images, p.tiles, c_in, c_out, src.size, ref.size, K, C, R, S]
                    subprocess.run([built[p.lh, p.lw]] + [str(int(v)) for v in head + ints] + paths, check=True)
                    out = np.fromfile(paths[4], np.float32).reshape(ref.shape)
                    worst = max(worst, compared(out, ref, f"{phase} {x_shape} {w_shape} stride {stride} pad "
                                                          f"{padding}: {p.lh}x{p.lw}, {images} images a chunk"))
    print(f"worst {worst:.1e}")
    return 0 if worst < 1e-5 else 1   # float32 transforms: ~1e-7..1e-6 of max |out|; a wrong index is ~1


if __name__ == "__main__":
    sys.exit(main())
