"""One visit to the GPU machine for the GEMM / dense / conv kernels: tests, then timings against
cuBLAS / cuDNN (strict FP32: TF32 off on both), a short table printed last.

    python3 lab/gemm/bench.py --out "$OUT"                 # tests + all timings
    python3 lab/gemm/bench.py --out "$OUT" --no-tests --only gemm4096,dense,conv

Rows: GEMMs in the three dense layouts (the "auto" path, one split, fixed tile configs at 4096^3) and conv
layers of the harness's gpu suite, each phase by its "auto" choice and by every algorithm
``conv.candidates`` lists for that layer (``algo=`` / ``weights_algo=``).

Timing: CUDA events around a batch of back-to-back calls on one stream (cupy's current stream = torch's
current stream: both are the legacy default stream here), after warm-up; the figure is the median over
repeats of the per-call mean, with the IQR/median spread reported. Ratio = torch time / our time.
Measuring, records (results.csv) and the table are kept apart.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab.common

import numpy as np  # noqa: E402

ZOO_DENSE = [(784, 1024), (1024, 1024), (1024, 10), (784, 128), (128, 10)]  # (F, U) of mlp-deep, mlp-mnist
SQUARE_DENSE = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (128, 4096, 1024),
                (7000, 1760, 1760), (1760, 7000, 1760), (8192, 512, 2048), (33, 1000, 513)]
CONV = [  # N, C, H, W, K, R, S, stride, padding (the harness gpu suite)
    (256, 1, 28, 28, 32, 5, 5, 1, 2), (256, 32, 14, 14, 64, 5, 5, 1, 2), (256, 3, 32, 32, 32, 3, 3, 1, 1),
    (128, 64, 32, 32, 64, 3, 3, 1, 1), (128, 128, 16, 16, 128, 3, 3, 1, 1), (64, 256, 28, 28, 256, 3, 3, 1, 1),
    (256, 64, 56, 56, 64, 3, 3, 1, 1), (128, 256, 14, 14, 256, 3, 3, 1, 1), (64, 128, 28, 28, 256, 3, 3, 2, 1),
    (64, 256, 56, 56, 64, 1, 1, 1, 0), (64, 3, 224, 224, 64, 7, 7, 2, 3), (33, 17, 29, 31, 45, 3, 3, 1, 1),
]


def time_call(fn, min_ms=10.0, repeats=11, warmup=3):
    """(median seconds per call, IQR / median) by CUDA events around batches of calls."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    one = max(cupy.cuda.get_elapsed_time(start, stop), 1e-3)
    n = max(1, min(2000, int(math.ceil(min_ms / one))))
    samples = []
    for _ in range(repeats):
        start.record()
        for _ in range(n):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, stop) / n * 1e-3)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float(med), float((q3 - q1) / med)


def gemm_rows(args, rng):
    import cupy
    import torch

    from custom_impl.gpu.gemm import gemm
    from lab.common.configs import tile_config
    from lab.common.kernels import lab_kernel

    rows = []

    def add(group, name, flops, ours_fn, ref_fn, variant="auto"):
        t_ours, sp_ours = time_call(ours_fn)
        t_ref, sp_ref = time_call(ref_fn)
        rows.append(dict(group=group, row=name, variant=variant, ours_us=t_ours * 1e6, ref_us=t_ref * 1e6,
                         ours_tflops=flops / t_ours / 1e12, ref_tflops=flops / t_ref / 1e12,
                         ratio=t_ref / t_ours, spread=max(sp_ours, sp_ref)))
        print(f"  {group:8s} {name:34s} {variant:16s} ours {t_ours*1e6:9.1f} us  ref {t_ref*1e6:9.1f} us  "
              f"ratio {t_ref/t_ours:5.2f}", flush=True)

    def check(ours, ref, K, what):
        err = float(cupy.abs(ours - cupy.asarray(ref)).max())
        scale = float(cupy.abs(cupy.asarray(ref)).max())
        if not err <= 1e-5 * math.sqrt(K) * max(scale, 1.0) * 10:
            print(f"  PARITY FAIL {what}: max err {err:.3g} scale {scale:.3g}")

    def dense_three(M, N, K, group, variants=("auto",)):
        x = cupy.asarray(rng.standard_normal((M, K), dtype=np.float32))
        W = cupy.asarray(rng.standard_normal((N, K), dtype=np.float32))
        dy = cupy.asarray(rng.standard_normal((M, N), dtype=np.float32))
        tx, tW, tdy = (torch.as_tensor(a, device="cuda") for a in (x, W, dy))
        y = cupy.empty((M, N), np.float32)
        dx = cupy.empty((M, K), np.float32)
        dW = cupy.empty((N, K), np.float32)
        ty, tdx, tdW = torch.empty(M, N, device="cuda"), torch.empty(M, K, device="cuda"), torch.empty(N, K, device="cuda")
        flops = 2.0 * M * N * K
        for v in variants:
            if v == "naive":  # lab/gemm/gemm_naive.cu: the baseline kernel, not in the product
                naive = lab_kernel("gemm/gemm_naive.cu", "gemm_naive")
                args = (x, W, y, np.uint64(0)) + tuple(np.int32(i) for i in (M, N, K, 0, 1, 0, 0))
                fwd = (lambda naive=naive, args=args:
                       naive(((N + 15) // 16, (M + 15) // 16), (16, 16), args))
            else:
                kw = ({} if v == "auto" else dict(splits=1) if v == "nosplit"
                      else dict(config=tile_config(v), splits=1))
                fwd = (lambda kw=kw: gemm(x, W, y, trans_b=True, **kw))
            fwd()
            check(y, torch.matmul(tx, tW.t()), K, f"fwd {M}x{N}x{K} {v}")
            add(group, f"fwd {M}x{N}x{K}", flops, fwd, lambda: torch.matmul(tx, tW.t(), out=ty), v)
        if group in ("gemm4096", "overhead", "waves"):
            return
        gemm(dy, W, dx)
        check(dx, torch.matmul(tdy, tW), N, f"bwd-data {M}x{N}x{K}")
        add(group, f"bwd-data {M}x{N}x{K}", flops, lambda: gemm(dy, W, dx), lambda: torch.matmul(tdy, tW, out=tdx))
        gemm(dy, x, dW, trans_a=True)
        check(dW, torch.matmul(tdy.t(), tx), M, f"bwd-weights {M}x{N}x{K}")
        add(group, f"bwd-weights {M}x{N}x{K}", flops, lambda: gemm(dy, x, dW, trans_a=True),
            lambda: torch.matmul(tdy.t(), tx, out=tdW))

    if "gemm4096" in args.only:
        dense_three(4096, 4096, 4096, "gemm4096", args.gemm4096_variants.split(","))
    if "waves" in args.only:
        # wave quantization at 4096^3 with 256x128 tiles: 512 tiles on 132 SMs (one block each) is 3.88 waves;
        # N = 4224 gives 528 tiles, exactly 4 waves, N = 3072 gives 384 (2.91): equal times for 4096 and
        # 4224 mean the last wave of 4096 runs a quarter of the time on 116 of 132 SMs
        for n in (3072, 4096, 4224):
            dense_three(4096, n, 4096, "waves", ["256x128x16_16x8"])
        dense_three(1, 1, 1, "overhead", ["auto"])
    if "dense" in args.only:
        for M, N, K in SQUARE_DENSE:
            dense_three(M, N, K, "dense")
        for batch in (64, 1024, 8192):
            for F, U in ZOO_DENSE:
                small = batch * U * F < (1 << 28)
                dense_three(batch, U, F, "dense", ("auto", "nosplit") if small else ("auto",))
    return rows


def conv_rows(args, rng):
    import cupy
    import torch

    from custom_impl.gpu import conv, runtime

    rows = []
    sms = runtime.sm_count()
    for (N, C, H, W, K, R, S, st, pd) in CONV:
        x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
        w = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32) * 0.1)
        b = cupy.asarray(rng.standard_normal((K,), dtype=np.float32))
        y = conv.conv2d_forward(x, w, b, st, pd)
        dy = cupy.asarray(rng.standard_normal(y.shape, dtype=np.float32))
        dx, dW, db = cupy.empty_like(x), cupy.empty_like(w), cupy.empty_like(b)
        ws = cupy.empty((max(1, conv.conv2d_workspace_size(x.shape, w.shape, st, pd)),), np.float32)
        tx, tw, tb, tdy = (torch.as_tensor(a, device="cuda") for a in (x, w, b, dy))
        P, Q = y.shape[2:]
        flops = 2.0 * N * K * P * Q * C * R * S
        name = f"N{N} C{C} {H}x{W} K{K} {R}x{S} s{st} p{pd}"
        dims = conv.conv_dims(x.shape, w.shape, st, pd)
        ty = torch.nn.functional.conv2d(tx, tw, tb, st, pd)
        tdx, tdW, _ = torch.ops.aten.convolution_backward(tdy, tx, tw, None, [st, st], [pd, pd], [1, 1], False,
                                                          [0, 0], 1, [True, True, False])
        conv.conv2d_backward(dy, x, w, st, pd, dx=dx, dW=dW, db=db, workspace=ws)
        for what, ours, ref in (("fwd", y, ty), ("dx", dx, tdx), ("dW", dW, tdW)):
            err = float(cupy.abs(ours - cupy.asarray(ref)).max())
            scale = float(cupy.abs(cupy.asarray(ref)).max())
            if not err <= 1e-4 * max(scale, 1.0):
                print(f"  PARITY FAIL conv {what} {name}: max err {err:.3g} scale {scale:.3g}")
                # who is off? both against float64 (torch's own double kernels)
                d = [a.double() for a in (tdy, tx, tw)]
                if what == "fwd":
                    exact = torch.nn.functional.conv2d(d[1], d[2], tb.double(), st, pd)
                else:
                    mask = [what == "dx", what == "dW", False]
                    exact = torch.ops.aten.convolution_backward(d[0], d[1], d[2], None, [st, st], [pd, pd], [1, 1],
                                                                False, [0, 0], 1, mask)[0 if what == "dx" else 1]
                e_ours = float((torch.as_tensor(ours, device="cuda").double() - exact).abs().max())
                e_ref = float((ref.double() - exact).abs().max())
                print(f"    vs float64: ours {e_ours:.3g}, cuDNN {e_ref:.3g}")

        def cudnn(mask):
            return lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, None, [st, st], [pd, pd], [1, 1], False,
                                                               [0, 0], 1, mask)

        refs = {"forward": lambda: torch.nn.functional.conv2d(tx, tw, tb, st, pd),
                "backward_data": cudnn([True, False, False]), "backward_weights": cudnn([False, True, False])}

        def ours(phase, algo):
            if phase == "forward":
                return lambda: conv.conv2d_forward(x, w, b, st, pd, out=y, workspace=ws, algo=algo)
            if phase == "backward_data":
                return lambda: conv.conv2d_backward_data(dy, w, x.shape, st, pd, dx=dx, workspace=ws, algo=algo)
            return lambda: conv.conv2d_backward(dy, x, w, st, pd, need_dx=False, dW=dW, need_db=False, workspace=ws,
                                                weights_algo=algo)

        for phase, label in (("forward", "fwd"), ("backward_data", "bwd-data"), ("backward_weights", "bwd-weights")):
            for algo in ["auto"] + list(conv.candidates(dims, phase, sms)):
                t_ours, sp_o = time_call(ours(phase, algo))
                t_ref, sp_r = time_call(refs[phase])
                rows.append(dict(group="conv", row=f"{label} {name}", variant=algo, ours_us=t_ours * 1e6,
                                 ref_us=t_ref * 1e6, ours_tflops=flops / t_ours / 1e12,
                                 ref_tflops=flops / t_ref / 1e12, ratio=t_ref / t_ours, spread=max(sp_o, sp_r)))
                print(f"  conv {label:12s} {name:44s} {algo:14s} ours {t_ours*1e6:9.1f} us ref {t_ref*1e6:9.1f} us "
                      f"ratio {t_ref/t_ours:5.2f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gemm_bench"))
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("-k", default=None, help="pytest -k expression selecting the tests to run")
    ap.add_argument("--only", default="gemm4096,dense,conv")
    ap.add_argument("--gemm4096-variants", default="auto,128x128x8_8x8,128x256x8_8x16,256x128x8_16x8,"
                    "128x128x16_8x8,256x128x16_16x8,128x256x16_8x16",
                    help="comma-separated: auto, nosplit, a tile config BMxBNxBK_TMxTN (one split), or naive "
                         "(lab/gemm/gemm_naive.cu)")
    args = ap.parse_args(argv)
    args.only = set(args.only.split(","))
    os.makedirs(args.out, exist_ok=True)
    summary = []
    if not args.no_tests:
        t0 = time.time()
        log = os.path.join(args.out, "pytest_gemm_conv.log")
        with open(log, "w") as fh:
            rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", "--tb=short",
                                  "tests/custom_impl/gpu/test_gemm.py", "tests/custom_impl/gpu/test_conv.py"] + (["-k", args.k] if args.k else []),
                                 cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        with open(log) as fh:
            lines = fh.read().splitlines()
        print("\n".join(lines[-25:]))
        summary.append(f"tests rc={rc} ({time.time() - t0:.0f} s): {lines[-1] if lines else ''}")

    import cupy
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print("device:", torch.cuda.get_device_name(0), "| cupy", cupy.__version__, "| torch", torch.__version__)
    rng = np.random.default_rng(0)
    rows = []
    rows += gemm_rows(args, rng)
    if "conv" in args.only:
        rows += conv_rows(args, rng)
    if rows:
        with open(os.path.join(args.out, "results.csv"), "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    print("\n=== summary (ratio = torch time / ours; card:", torch.cuda.get_device_name(0), ") ===")
    for line in summary:
        print(line)
    for group in ("gemm4096", "overhead", "dense", "conv"):
        g = [r for r in rows if r["group"] == group and r["variant"] in ("auto",)]
        if not g:
            continue
        ratios = [r["ratio"] for r in g]
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        worst = min(g, key=lambda r: r["ratio"])
        print(f"{group}: rows {len(g)} geomean {geo:.3f} min {worst['ratio']:.3f} ({worst['row']})")
    for r in rows:
        if r["group"] == "gemm4096":
            print(f"gemm4096 {r['variant']:16s} {r['ours_tflops']:6.1f} TFLOP/s vs cuBLAS {r['ref_tflops']:6.1f} "
                  f"ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
