"""The 6x6-domain transform functions of kernels/conv_winograd.cu: F(4x4, 3x3) / F(3x3, 4x4)'s (wino4_bt,
wino4_a, wino4_gt, wino4_g, wino4_at) and F(2x2, 5x5) / F(5x5, 2x2)'s (wino25_g, wino25_at, wino25_a,
wino25_gt), compiled for the host with the system's C++ compiler and checked against the matrices of
lab/conv/winograd_emulate.py on random vectors: the kernels' own arithmetic, without a GPU.

    python3 lab/conv/winograd_transforms_check.py      # needs g++ (or $CXX)

The functions are cut out of the .cu file by name (each a `__device__ __forceinline__ void` with its body),
the CUDA qualifiers defined away; a small main reads vectors on stdin and prints every function's output.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from winograd_emulate import A4, AT4, AT25, BT4, G4, G25, GT4  # noqa: E402

# name -> (input length, output length, matrix applied to the input vector)
FUNCTIONS = {"wino4_bt": (6, 6, BT4), "wino4_a": (4, 6, A4), "wino4_gt": (6, 3, GT4), "wino4_g": (3, 6, G4),
             "wino4_at": (6, 4, AT4), "wino25_g": (5, 6, G25), "wino25_at": (6, 2, AT25),
             "wino25_a": (2, 6, AT25.T), "wino25_gt": (6, 5, G25.T)}


def extract(code: str, name: str) -> str:
    """The definition of device function ``name`` (signature through its closing brace)."""
    m = re.search(rf"__device__ __forceinline__ void {name}\(", code)
    if m is None:
        raise SystemExit(f"{name} not found in conv_winograd.cu")
    depth, i = 0, code.index("{", m.start())
    for j in range(i, len(code)):
        depth += {"{": 1, "}": -1}.get(code[j], 0)
        if depth == 0:
            return code[m.start():j + 1]
    raise SystemExit(f"{name}: unbalanced braces")


def main() -> int:
    with open(os.path.join(ROOT, "custom_impl", "kernels", "conv_winograd.cu")) as f:
        code = f.read()
    src = ["#include <cstdio>", "#define __device__", "#define __forceinline__ inline"]
    src += [extract(code, name) for name in FUNCTIONS]
    body = []
    for name, (n_in, n_out, _) in FUNCTIONS.items():
        body.append(f"{{ float v[{n_in}], o[{n_out}]; for (int i = 0; i < {n_in}; ++i) std::scanf(\"%f\", &v[i]);"
                    f" {name}(v, o); for (int i = 0; i < {n_out}; ++i) std::printf(\"%.9g \", o[i]);"
                    f" std::printf(\"\\n\"); }}")
    src.append("int main() { int reps; std::scanf(\"%d\", &reps); for (int r = 0; r < reps; ++r) {"
               + " ".join(body) + "} return 0; }")
    rng = np.random.default_rng(0)
    reps = 200
    inputs = {name: rng.standard_normal((reps, n_in)).astype(np.float32) for name, (n_in, _, _) in FUNCTIONS.items()}
    stdin = [str(reps)]
    for r in range(reps):
        for name in FUNCTIONS:
            stdin.append(" ".join(f"{v:.9g}" for v in inputs[name][r]))
    with tempfile.TemporaryDirectory() as tmp:
        cpp, exe = os.path.join(tmp, "t.cpp"), os.path.join(tmp, "t")
        with open(cpp, "w") as f:
            f.write("\n".join(src))
        subprocess.run([os.environ.get("CXX", "g++"), "-O2", "-ffp-contract=off", "-o", exe, cpp], check=True)
        out = subprocess.run([exe], input="\n".join(stdin), capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")
    worst = 0.0
    for r in range(reps):
        for k, (name, (_, _, mat)) in enumerate(FUNCTIONS.items()):
            got = np.array(lines[r * len(FUNCTIONS) + k].split(), dtype=np.float64)
            want = mat @ inputs[name][r].astype(np.float64)
            scale = np.abs(mat) @ np.abs(inputs[name][r].astype(np.float64))
            err = np.abs(got - want) / np.maximum(scale, 1e-30)
            worst = max(worst, err.max())
            # float32 arithmetic of a handful of terms: a few ulps of the sum of |terms|; a wrong coefficient
            # or sign is off by O(1) of it
            assert err.max() < 1e-5, f"{name}: {got} against {want}"
    print(f"{len(FUNCTIONS)} transform functions x {reps} random vectors match their matrices "
          f"(worst error {worst:.2e} of the sum of |terms|)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
