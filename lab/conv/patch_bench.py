"""Timings of the "patch" conv backward passes against the implicit-GEMM ones (dW and dx), the timed "auto"
choice, and cuDNN (PyTorch, strict FP32: TF32 off, cudnn.benchmark on), on LeNet's 5x5 layer.

    python3 lab/conv/patch_bench.py --out DIR [--reps 50]

Each figure: the median (and IQR) of --reps single calls timed with CUDA events after 10 warm-up calls; dW
alone (no db) on both sides. Every output is also compared with PyTorch's float64 result (max |a - b| /
max |b|). Then the dW split count: the patch plan made for other SM counts (``runtime.sm_count`` replaced
for the call), timed on this card. Writes DIR/conv_patch_bench.csv and prints a table last.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl

SHAPES = [  # (N, C, H, W, K, R, S, padding)
    (256, 32, 14, 14, 64, 5, 5, 2),
    (1024, 32, 14, 14, 64, 5, 5, 2),
    (256, 32, 12, 12, 64, 5, 5, 0),
    (1024, 32, 12, 12, 64, 5, 5, 0),
]


def _time(call, record, sync, elapsed, reps):
    for _ in range(10):
        call()
    times = []
    for _ in range(reps):
        a, b = record(), None
        call()
        b = record()
        sync(b)
        times.append(elapsed(a, b))
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return med, q3 - q1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import cupy
    import torch

    from custom_impl.gpu import conv, runtime

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    def cp_record():
        e = cupy.cuda.Event()
        e.record()
        return e

    def th_record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    ours = (cp_record, lambda e: e.synchronize(), cupy.cuda.get_elapsed_time)
    theirs = (th_record, lambda e: e.synchronize(), lambda a, b: a.elapsed_time(b))
    card = torch.cuda.get_device_name()
    rows = []
    for shape in SHAPES:
        N, C, H, Wd, K, R, S, pad = shape
        rng = np.random.default_rng(1)
        dims = conv.conv_dims((N, C, H, Wd), (K, C, R, S), 1, pad)
        P, Q = dims.P, dims.Q
        x = cupy.asarray(rng.standard_normal((N, C, H, Wd), dtype=np.float32))
        W = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32) * 0.05)
        dy = cupy.asarray(rng.standard_normal((N, K, P, Q), dtype=np.float32))
        ws = cupy.zeros((max(1, conv.conv2d_workspace_size(x.shape, W.shape, 1, pad)),), np.float32)
        dW = cupy.empty(W.shape, np.float32)
        dx = cupy.empty(x.shape, np.float32)
        tx, tW, tdy = (torch.as_tensor(a, device="cuda") for a in (x, W, dy))

        def cudnn(mask, t=(tdy, tx, tW)):
            return torch.ops.aten.convolution_backward(t[0], t[1], t[2], None, [1, 1], [pad, pad], [1, 1], False,
                                                       [0, 0], 1, mask)

        # aten.convolution_backward returns (grad_input, grad_weight, grad_bias), output_mask in that order
        ref = cudnn([True, True, False], (tdy.double(), tx.double(), tW.double()))
        ref_dx, ref_dW = ref[0].cpu().numpy(), ref[1].cpu().numpy()
        flop = 2.0 * N * K * C * R * S * P * Q
        for phase in ("dW", "dx"):
            if phase == "dW":
                runs = {a: (lambda a=a: conv.conv2d_backward(dy, x, W, 1, pad, need_dx=False, dW=dW, need_db=False,
                                                             workspace=ws, weights_algo=a))
                        for a in ("implicit_gemm", "patch", "auto")}
                out, ref_out, mask = dW, ref_dW, [False, True, False]
                pick = 1
            else:
                runs = {a: (lambda a=a: conv.conv2d_backward_data(dy, W, x.shape, 1, pad, dx=dx, workspace=ws, algo=a))
                        for a in ("implicit_gemm", "patch", "auto")}
                out, ref_out, mask = dx, ref_dx, [True, False, False]
                pick = 0
            res = {}
            runtime.clear_tuned()  # so that the "auto" call below times its candidates and its choice shows
            for name, call in runs.items():
                call()
                cupy.cuda.Device().synchronize()
                err = float(np.abs(cupy.asnumpy(out) - ref_out).max() / np.abs(ref_out).max())
                med, iqr = _time(call, *ours, args.reps)
                res[name] = (med, iqr, err)
            got = cudnn(mask)[pick]
            torch.cuda.synchronize()
            err = float(np.abs(got.double().cpu().numpy() - ref_out).max() / np.abs(ref_out).max())
            med, iqr = _time(lambda: cudnn(mask), *theirs, args.reps)
            res["cudnn"] = (med, iqr, err)
            chosen = "/".join(sorted({str(v) for v in runtime.tuned_choices().values()})) or "?"
            row = dict(card=card, shape=f"N{N} C{C} {H}x{Wd} K{K} {R}x{S} pad{pad}", phase=phase, auto_pick=chosen,
                       gflop=flop / 1e9)
            for label, (med, iqr, err) in res.items():
                row[f"{label}_ms"] = round(float(med), 4)
                row[f"{label}_iqr_ms"] = round(float(iqr), 4)
                row[f"{label}_relerr"] = f"{err:.2e}"
            rows.append(row)
            print(row, flush=True)
    # sensitivity of the dW split count (plan made for sms * 2 blocks) on the first shape
    from custom_impl.gpu.conv import patch

    N, C, H, Wd, K, R, S, pad = SHAPES[0]
    dims = conv.conv_dims((N, C, H, Wd), (K, C, R, S), 1, pad)
    rng = np.random.default_rng(2)
    x = cupy.asarray(rng.standard_normal((N, C, H, Wd), dtype=np.float32))
    dy = cupy.asarray(rng.standard_normal((N, K, dims.P, dims.Q), dtype=np.float32))
    dW = cupy.empty((K, C, R, S), np.float32)
    real = runtime.sm_count
    sweep = []
    try:
        for fake_sms in (33, 66, 132, 264, 528):
            # NOTE: patch.backward_weights plans for runtime.sm_count() at each call; replaced here for the sweep
            runtime.sm_count = lambda s=fake_sms: s
            plan = patch.weights_plan(dims, fake_sms)
            ws = cupy.zeros((plan.grid[0] * K * C * R * S + 1,), np.float32)
            med, iqr = _time(lambda: patch.backward_weights(dy, x, dW, dims, ws), *ours, args.reps)
            sweep.append(f"  plan for {fake_sms:3d} SMs: grid {plan.grid}, {plan.chunk} items/block: "
                         f"{med:.3f} ms (IQR {iqr:.3f})")
    finally:
        runtime.sm_count = real
    path = os.path.join(args.out, "conv_patch_bench.csv")
    with open(path, "w", newline="") as fh:
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"\ndW patch, {SHAPES[0]}: split-count sweep")
    print("\n".join(sweep))
    print(f"\n=== {card}: median ms of {args.reps} calls (CUDA events), ratio = cuDNN / ours; FP32, TF32 off")
    print(f"{'shape':34} {'pass':4} {'impl.GEMM':>9} {'patch':>8} {'auto':>22} {'cuDNN':>8} {'r_igemm':>7} "
          f"{'r_patch':>7} {'r_auto':>6} {'TF/s patch':>10} {'err patch':>9} {'err cuDNN':>9}")
    for r in rows:
        cud, ig = r["cudnn_ms"], r["implicit_gemm_ms"]
        print(f"{r['shape']:34} {r['phase']:4} {ig:9.3f} {r['patch_ms']:8.3f} "
              f"{r['auto_ms']:8.3f} ({r['auto_pick'][:11]:>11}) {cud:8.3f} {cud / ig:7.2f} "
              f"{cud / r['patch_ms']:7.2f} {cud / r['auto_ms']:6.2f} {r['gflop'] / r['patch_ms']:10.1f} "
              f"{r['patch_relerr']:>9} {r['cudnn_relerr']:>9}")


if __name__ == "__main__":
    main()
