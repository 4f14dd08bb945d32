"""One conv layer at small batches: every algorithm of ours per phase, the forward's and backward-data's
implicit GEMM at every tile config and split, beside cuDNN's time for the same call.

    python3 lab/conv/small_batch_probe.py [--layer N,C,H,W,K,R,S,pad] [--batches 16,64,128,256] [--out DIR]

Default layer: LeNet's conv2 (32 -> 64 channels, 14x14, 5x5, padding 2), the largest part of the
lenet-mnist train step at batch 64. Ours are timed as CUDA-graph replays (lab/common/timing.graph_time_ms,
under the graph launch cost, as inside the model's graphed step); cuDNN through PyTorch with
``cudnn.benchmark`` on and TF32 off, also as graph replays (timing.torch_graph_time_ms). Writes probe.csv
and prints one table per batch, fastest first within each phase.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab

import numpy as np  # noqa: E402

from lab.common import layer_probe  # noqa: E402
from lab.common.timing import graph_time_ms, torch_graph_time_ms  # noqa: E402

SPLITS = (1, 2, 4, 8)


def cudnn_rows(layer, batch):
    """[(phase, "cudnn", ms)] for the three phases of the layer at ``batch``."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    N, C, H, W, K, R, S, pad = batch, *layer[1:]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(N, C, H, W, device="cuda", generator=gen)
    w = torch.randn(K, C, R, S, device="cuda", generator=gen)
    b = torch.randn(K, device="cuda", generator=gen)
    y = torch.nn.functional.conv2d(x, w, b, padding=pad)
    dy = torch.randn_like(y)
    grad = torch.nn.grad
    return [("forward", "cudnn", torch_graph_time_ms(lambda: torch.nn.functional.conv2d(x, w, b, padding=pad))),
            ("backward_data", "cudnn", torch_graph_time_ms(lambda: grad.conv2d_input(x.shape, w, dy, padding=pad))),
            ("backward_weights", "cudnn", torch_graph_time_ms(lambda: grad.conv2d_weight(x, w.shape, dy, padding=pad)))]


def our_rows(layer, batch):
    """[(phase, variant, ms)]: each candidate algorithm of each phase; the implicit GEMMs of the forward
    and backward-data also at every tile config x split."""
    import cupy

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import implicit_gemm, select
    from custom_impl.gpu.conv.geometry import conv_dims

    N, C, H, W, K, R, S, pad = batch, *layer[1:]
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
    Wt = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32))
    b = cupy.asarray(rng.standard_normal(K, dtype=np.float32))
    dims = conv_dims(x.shape, Wt.shape, 1, pad)
    P, Q = dims.P, dims.Q
    dy = cupy.asarray(rng.standard_normal((N, K, P, Q), dtype=np.float32))
    y, dx, dW = cupy.empty((N, K, P, Q), np.float32), cupy.empty_like(x), cupy.empty_like(Wt)
    rows = []
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        big = max(conv.conv2d_workspace_size(x.shape, Wt.shape, 1, pad), max(SPLITS) * N * max(C, K) * H * W)
        ws = cupy.empty((big,), np.float32)
        calls = {
            "forward": lambda a: conv.conv2d_forward(x, Wt, b, 1, pad, out=y, workspace=ws, algo=a),
            "backward_data": lambda a: conv.conv2d_backward_data(dy, Wt, x.shape, 1, pad, dx=dx, workspace=ws,
                                                                 algo=a),
            "backward_weights": lambda a: conv.conv2d_backward(dy, x, Wt, 1, pad, need_dx=False, dW=dW,
                                                               need_db=False, workspace=ws, weights_algo=a),
        }
        for phase, call in calls.items():
            for algo in select.candidates(dims, phase):
                rows.append((phase, algo, graph_time_ms(lambda: call(algo))))
        for cfg in implicit_gemm.CONFIGS:
            for splits in SPLITS:
                rows.append(("forward", f"implicit_gemm {cfg.name} split {splits}", graph_time_ms(
                    lambda: implicit_gemm.forward(x, Wt, b, y, dims, ws, config=cfg, splits=splits))))
            rows.append(("backward_data", f"implicit_gemm {cfg.name}", graph_time_ms(
                lambda: implicit_gemm.backward_data(dy, Wt, dx, dims, ws, config=cfg))))
        plan = implicit_gemm.forward_plan(dims)
    print(f"(batch {batch}: the cost model's forward plan is {plan[0].name}, split {plan[2]})")
    return rows


def main(argv=None) -> int:
    layer, batches, out = layer_probe.parse(__doc__, "16,64,128,256", "out/small_batch_probe", argv)
    table = []
    for batch in batches:
        rows = cudnn_rows(layer, batch) + our_rows(layer, batch)
        table += [(batch, *r) for r in rows]
        cudnn = {p: ms for p, v, ms in rows if v == "cudnn"}
        print(f"\n== batch {batch}, layer {layer[1:]}")
        for phase in ("forward", "backward_data", "backward_weights"):
            for p, variant, ms in sorted((r for r in rows if r[0] == phase), key=lambda r: r[2]):
                ratio = cudnn[phase] / ms
                print(f"{phase:17s} {variant:40s} {ms * 1e3:9.1f} us  cuDNN/this {ratio:5.2f}")
    layer_probe.write_csv(os.path.join(out, "probe.csv"), ["batch", "phase", "variant", "ms"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
