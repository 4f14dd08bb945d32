"""One conv layer call for Nsight Compute, on the GPU machine:

    ncu -k regex:conv_patch_backward_weights -s 1 -c 1 --set full -o OUT/patch_wgrad \\
        python3 lab/conv/ncu_layer.py [--layer N,C,H,W,K,R,S,pad] [--phase backward_weights] [--algo patch]

Runs the phase three times with the named algorithm (default: LeNet's conv2 at batch 64, backward-weights,
"patch"), in the graph launch regime (the plans a graphed train step uses); ncu then profiles the second
launch of the kernel it is given (-s 1 -c 1).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root


def main(argv=None) -> int:
    import cupy
    import numpy as np

    from custom_impl.gpu import conv, runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="64,32,14,14,64,5,5,2", help="N,C,H,W,K,R,S,padding (stride 1)")
    ap.add_argument("--phase", default="backward_weights", choices=("forward", "backward_data", "backward_weights"))
    ap.add_argument("--algo", default="patch")
    args = ap.parse_args(argv)
    N, C, H, W, K, R, S, pad = (int(v) for v in args.layer.split(","))
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
    Wt = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32))
    b = cupy.asarray(rng.standard_normal(K, dtype=np.float32))
    P, Q = H + 2 * pad - R + 1, W + 2 * pad - S + 1
    dy = cupy.asarray(rng.standard_normal((N, K, P, Q), dtype=np.float32))
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        ws = cupy.empty((conv.conv2d_workspace_size(x.shape, Wt.shape, 1, pad),), np.float32)
        for _ in range(3):
            if args.phase == "forward":
                conv.conv2d_forward(x, Wt, b, 1, pad, workspace=ws, algo=args.algo)
            elif args.phase == "backward_data":
                conv.conv2d_backward_data(dy, Wt, x.shape, 1, pad, workspace=ws, algo=args.algo)
            else:
                conv.conv2d_backward(dy, x, Wt, 1, pad, need_dx=False, need_db=False, workspace=ws,
                                     weights_algo=args.algo)
    cupy.cuda.Device().synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
