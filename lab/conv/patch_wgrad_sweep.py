"""The patch backward-weights kernel of one layer at every plan: k per block (the PT_KB module), (c, r) tasks
per thread (PT_T), output rows per item, channels per block and splits, beside cuDNN's time for the same
gradient.

    python3 lab/conv/patch_wgrad_sweep.py [--layer N,C,H,W,K,R,S,pad] [--batches 16,64,256] [--out DIR]

Default layer: LeNet's conv2 (32 -> 64 channels, 14x14, 5x5, padding 2). Every plan is timed as a CUDA-graph
replay (its split-K reduce included) and checked against cuDNN's gradient (max |difference| over
max |cuDNN|); plans whose shared memory or splits do not fit are left out. Prints the 12 fastest plans and
the default plan per batch; writes sweep.csv.
"""
from __future__ import annotations

import itertools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab

import numpy as np  # noqa: E402

from lab.common import layer_probe  # noqa: E402
from lab.common.timing import graph_time_ms, torch_graph_time_ms  # noqa: E402

ROWS = (1, 2, 3, 4, 7)
CHANNELS = (2, 4, 5, 8)
SPLIT_SCALES = (0.5, 1.0, 2.0)   # x the default splits of the plan


def sweep(layer, batch):
    """[(name, ms, rel_err)] of every plan, the default first, and cuDNN's ms."""
    import cupy
    import torch

    from custom_impl.gpu import runtime
    from custom_impl.gpu.conv import patch
    from custom_impl.gpu.conv.geometry import conv_dims

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    N, C, H, W, K, R, S, pad = batch, *layer[1:]
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
    dims = conv_dims(x.shape, (K, C, R, S), 1, pad)
    dy = cupy.asarray(rng.standard_normal((N, K, dims.P, dims.Q), dtype=np.float32))
    tx, tdy = torch.as_tensor(x, device="cuda"), torch.as_tensor(dy, device="cuda")
    ref = torch.nn.grad.conv2d_weight(tx, (K, C, R, S), tdy, padding=pad)
    cudnn_ms = torch_graph_time_ms(lambda: torch.nn.grad.conv2d_weight(tx, (K, C, R, S), tdy, padding=pad))
    ref = cupy.asarray(ref)
    scale = float(cupy.abs(ref).max())
    sms = runtime.sm_count()
    plans = {"default": patch.weights_plan(dims, sms)}
    for kb, t in itertools.product(patch.KB_CHOICES, patch.T_CHOICES):
        plans[f"kb{kb} t{t} default"] = patch.weights_plan(dims, sms, kb=kb, t=t)
        for pb, cb in itertools.product(ROWS, CHANNELS):
            base = patch.weights_plan(dims, sms, kb=kb, pb=pb, cb=cb, t=t)
            if base is None:
                continue
            for f in SPLIT_SCALES:
                plan = patch.weights_plan(dims, sms, kb=kb, pb=pb, cb=cb, splits=max(1, round(base.grid[0] * f)),
                                          t=t)
                plans[f"kb{kb} t{t} pb{plan.pb} cb{plan.cb} splits {plan.grid[0]} (chunk {plan.chunk})"] = plan
    big = max(p.grid[0] for p in plans.values() if p is not None) * K * C * R * S
    ws = cupy.empty((big,), np.float32)
    dW = cupy.empty((K, C, R, S), np.float32)
    rows, seen = [], set()
    for name, plan in plans.items():
        if plan is None or (plan in seen and name != "default"):
            continue
        seen.add(plan)
        dW.fill(np.nan)
        patch.backward_weights(dy, x, dW, dims, ws, plan)
        err = float(cupy.abs(dW - ref).max()) / scale
        ms = graph_time_ms(lambda: patch.backward_weights(dy, x, dW, dims, ws, plan))
        rows.append((name, ms, err))
    return rows, cudnn_ms


def main(argv=None) -> int:
    layer, batches, out = layer_probe.parse(__doc__, "16,64,256", "out/patch_wgrad_sweep", argv)
    table = []
    for batch in batches:
        rows, cudnn_ms = sweep(layer, batch)
        table += [(batch, name, ms, err, cudnn_ms) for name, ms, err in rows]
        print(f"\n== batch {batch}, layer {layer[1:]}: cuDNN {cudnn_ms * 1e3:.1f} us")
        default = rows[0]
        ranked = sorted(rows[1:], key=lambda r: r[1])[:12]
        for name, ms, err in [default] + ranked:
            print(f"{name:44s} {ms * 1e3:8.1f} us  cuDNN/this {cudnn_ms / ms:5.2f}  rel err {err:.1e}")
    layer_probe.write_csv(os.path.join(out, "sweep.csv"), ["batch", "plan", "ms", "rel_err", "cudnn_ms"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
