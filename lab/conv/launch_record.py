"""Every kernel launch the Winograd, patch and implicit-GEMM wrappers make, recorded without a GPU, to compare
two versions of the host code: kernel name, grid, block, each argument (an array or pointer as its device
address, a scalar as its value) and the dynamic shared memory, on CuPy replaced by lab/conv/host_mock.py's
stub.

    python3 lab/conv/launch_record.py OUT.json     # record (Winograd: forward, backward-data, weight gradient
                                                   # with both dy tiles, whole batch and in chunks, planned
                                                   # and 3 splits, the first of each phase repeated; patch:
                                                   # both backward passes; implicit GEMM: every phase, strided
                                                   # too, planned and 3 splits, its tuned plan called twice)
    python3 lab/conv/launch_record.py A.json B.json   # compare two recordings: the first launch that differs

Record once with the old code (e.g. `git stash`), once with the new: equal recordings mean the new host code
launches exactly the same kernels on the same memory with the same arguments.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import host_mock  # noqa: E402

# (N, C, H, W, K, padding): a small odd batch, an asymmetric padding, a VGG-like layer
LAYERS = [(9, 16, 12, 11, 24, 1), (7, 17, 9, 10, 19, (0, 2)), (64, 64, 56, 56, 64, 1)]
# (N, C, H, W, K, R, S, stride, padding) of the patch and implicit-GEMM calls: small batches (split k ranges),
# LeNet's conv2, a strided 3x3, a 1x1 with and without float4 planes
CONV_LAYERS = [(2, 16, 14, 14, 32, 5, 5, 1, 2), (64, 32, 14, 14, 64, 5, 5, 1, 2), (3, 9, 11, 13, 10, 3, 3, 1, 1),
               (4, 33, 13, 17, 9, 3, 3, 2, 1), (16, 832, 7, 7, 256, 1, 1, 1, 0), (8, 64, 14, 14, 32, 1, 1, 1, 0)]


def _value(a):
    if isinstance(a, host_mock._Array):
        return ["ptr", int(a.data.ptr)]
    if isinstance(a, np.uint64):
        return ["ptr", int(a)]
    if isinstance(a, (np.integer, int)):
        return ["i", int(a)]
    if isinstance(a, (np.floating, float)):
        return ["f", float(a)]
    return ["?", repr(a)]


def record() -> list:
    host_mock._install_stub()
    import cupy

    log = []

    class Kernel:
        max_dynamic_shared_size_bytes = 0

        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args, shared_mem=0):
            log.append([self.name, list(grid), list(block), [_value(a) for a in args], int(shared_mem)])

    cupy.RawModule = lambda code=None, options=(), **kw: types.SimpleNamespace(get_function=Kernel)
    host_mock._addresses = itertools.count(1 << 20, 1 << 20)
    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import winograd

    runtime.AUTOTUNE = False
    A = host_mock._Array
    out = []
    for N, C, H, W, K, pad in LAYERS:
        ph, pw = (pad, pad) if isinstance(pad, int) else pad
        P, Q = H + 2 * ph - 2, W + 2 * pw - 2
        x, w, b = A((N, C, H, W)), A((K, C, 3, 3)), A((K,))
        dy, y, dx, dW, ws = A((N, K, P, Q)), A((N, K, P, Q)), A((N, C, H, W)), A((K, C, 3, 3)), A((1 << 27,))
        for images in (None, 2, 3):
            calls = [("forward", lambda: winograd.forward(x, w, b, y, pad, workspace=ws, images=images)),
                     ("backward_data", lambda: winograd.backward_data(dy, w, dx, pad, workspace=ws, images=images))]
            for tile, splits in itertools.product((2, 4), (None, 3)):
                calls.append((f"backward_weights tile {tile} splits {splits}",
                              lambda tile=tile, splits=splits: winograd.backward_weights(
                                  dy, x, dW, pad, workspace=ws, images=images, tile=tile, splits=splits)))
            if images is None:   # a repeated call (the same arrays and workspace): the same launches again
                calls += [(f"{what}, again", call) for what, call in calls[:3]]
            for what, call in calls:
                log.clear()
                call()
                out.append([f"N{N} C{C} {H}x{W} K{K} pad {pad} images {images}: {what}", list(log)])
    from custom_impl.gpu.conv import conv_dims, implicit_gemm, patch

    for N, C, H, W, K, R, S, st, pad in CONV_LAYERS:
        dims = conv_dims((N, C, H, W), (K, C, R, S), st, pad)
        x, w, b, dx, dW = A((N, C, H, W)), A((K, C, R, S)), A((K,)), A((N, C, H, W)), A((K, C, R, S))
        dy, y, ws = A((N, K, dims.P, dims.Q)), A((N, K, dims.P, dims.Q)), A((1 << 27,))
        calls = []
        if patch.data_plan(dims) is not None:
            calls.append(("patch backward_data", lambda: patch.backward_data(dy, w, dx, dims, ws)))
        if patch.weights_plan(dims) is not None:
            calls.append(("patch backward_weights", lambda: patch.backward_weights(dy, x, dW, dims, ws)))
        for splits in (None, 3):
            calls += [(f"implicit_gemm forward splits {splits}",
                       lambda s=splits: implicit_gemm.forward(x, w, b, y, dims, ws, splits=s)),
                      (f"implicit_gemm backward_weights splits {splits}",
                       lambda s=splits: implicit_gemm.backward_weights(dy, x, dW, dims, ws, splits=s))]
            if splits is None or dims.sh * dims.sw == 1:
                calls.append((f"implicit_gemm backward_data splits {splits}",
                               lambda s=splits: implicit_gemm.backward_data(dy, w, dx, dims, ws, splits=s)))
        # the tuned path: each phase's model plan cached as if timed (one candidate is cached untimed), then
        # two calls each, with the shared workspace: the first plans, a repeated eager call may reuse that
        calls += [(f"implicit_gemm {phase} tuned, call {i}", call) for phase, call in (
            ("forward", lambda: implicit_gemm.forward(x, w, b, y, dims)),
            ("backward_weights", lambda: implicit_gemm.backward_weights(dy, x, dW, dims)),
            ("backward_data", lambda: implicit_gemm.backward_data(dy, w, dx, dims))) for i in (1, 2)]
        host_mock.cache_choices(dims)
        for what, call in calls:
            log.clear()
            call()
            out.append([f"{dims}: {what}", list(log)])
    return out


def compare(a: list, b: list) -> int:
    if len(a) != len(b):
        print(f"different calls recorded: {len(a)} vs {len(b)}")
        return 1
    for (what, la), (_, lb) in zip(a, b):
        if la != lb:
            first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
            print(f"{what}: launch {first} differs ({len(la)} vs {len(lb)} launches)")
            print(f"  A: {la[first] if first < len(la) else '-'}\n  B: {lb[first] if first < len(lb) else '-'}")
            return 1
    print(f"identical: {len(a)} calls, {sum(len(x) for _, x in a)} launches")
    return 0


def main(argv) -> int:
    if len(argv) == 1:
        out = record()
        with open(argv[0], "w") as f:
            json.dump(out, f)
        print(f"{len(out)} calls, {sum(len(x) for _, x in out)} launches -> {argv[0]}")
        return 0
    if len(argv) == 2:
        with open(argv[0]) as fa, open(argv[1]) as fb:
            return compare(json.load(fa), json.load(fb))
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
