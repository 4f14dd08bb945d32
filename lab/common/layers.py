"""One network's layers as separate calls of the product's layer ops, for per-layer profiles.

    from lab.common.layers import layer_calls
    for label, phase, fn in layer_calls(spec, batch=64, device="gpu"):
        ...

Each layer of ``spec`` gets random inputs of its shape, the spec's initial parameters and preallocated
outputs, and a forward and (where a train step runs one) a backward call through
``custom_impl.layer_ops(device)``: the functions the harness times per layer, with one signature on both
devices. The model's own train step may run fused or cached paths (bias and activation in the GEMM
epilogue, relu folded into max-pooling, saved im2col columns on the CPU), so the sum of these parts
differs from the whole step; that difference is part of what a profile shows.
Legend: N batch, C in-channels, K out-channels, H,W in, P,Q out, R,S kernel, F in-features, U units.
"""
from __future__ import annotations

import numpy as np

ACTIVATIONS = ("relu", "sigmoid", "tanh")


def layer_calls(spec, batch: int, device: str, seed: int = 0) -> list[tuple[str, str, object]]:
    """[(label "i:type", phase "forward"|"backward", call)] over the layers of ``spec`` (flatten skipped)."""
    import custom_impl

    ops = custom_impl.layer_ops(device)
    if device == "gpu":
        import cupy as xp
    else:
        xp = np
    rng = np.random.default_rng(seed)
    params = {k: xp.asarray(v) for k, v in spec.init_params(seed).items()}

    def rand(shape):
        return xp.asarray(rng.standard_normal(shape).astype(np.float32))

    def empty(shape, dtype=np.float32):
        return xp.empty(shape, dtype)

    calls = []
    for layer in spec.layers:
        i, kind = layer.index, layer.type
        if kind == "flatten":
            continue
        label = f"{i}:{kind}"
        x = rand((batch, *layer.in_shape))              # (N, C, H, W) or (N, F)
        y = empty((batch, *layer.out_shape))            # (N, K, P, Q) or (N, U)
        dy = rand((batch, *layer.out_shape))
        need_dx = i > 0                                  # the train step computes no gradient of the input
        dx = empty(x.shape) if need_dx else None
        if kind in ("dense", "conv2d"):
            W = params[f"{i}.weight"]                   # (U, F) or (K, C, R, S)
            b = params.get(f"{i}.bias")
            dW, db = empty(W.shape), (empty(b.shape) if b is not None else None)
            if kind == "dense":
                fwd = (lambda x=x, W=W, b=b, y=y: ops.dense_forward(x, W, b, out=y))
                bwd = (lambda dy=dy, x=x, W=W, dx=dx, dW=dW, db=db, need_dx=need_dx:
                       ops.dense_backward(dy, x, W, need_dx=need_dx, dx=dx, dW=dW, db=db, need_db=db is not None))
            else:
                st, pd = layer.stride, layer.padding
                size = ops.conv2d_workspace_size(x.shape, W.shape, st, pd)
                ws = empty((size,)) if size else None
                fwd = (lambda x=x, W=W, b=b, y=y, st=st, pd=pd, ws=ws:
                       ops.conv2d_forward(x, W, b, st, pd, out=y, workspace=ws))
                bwd = (lambda dy=dy, x=x, W=W, dx=dx, dW=dW, db=db, st=st, pd=pd, ws=ws, need_dx=need_dx:
                       ops.conv2d_backward(dy, x, W, st, pd, need_dx=need_dx, dx=dx, dW=dW, db=db, workspace=ws,
                                           need_db=db is not None))
            calls += [(label, "forward", fwd), (label, "backward", bwd)]
            continue
        if kind == "maxpool2d":
            k, st = layer.kernel_size, layer.stride
            argmax = empty(y.shape, np.int32)           # (N, C, P, Q): window position r*S+s of each max
            fwd = (lambda x=x, y=y, a=argmax, k=k, st=st: ops.maxpool2d_forward(x, k, st, out=y, argmax=a))
            fwd()
            bwd = (lambda dy=dy, a=argmax, xs=x.shape, k=k, st=st, dx=dx:
                   ops.maxpool2d_backward(dy, a, xs, k, st, dx=dx))
        elif kind == "avgpool2d":
            k, st = layer.kernel_size, layer.stride
            fwd = (lambda x=x, y=y, k=k, st=st: ops.avgpool2d_forward(x, k, st, out=y))
            bwd = (lambda dy=dy, xs=x.shape, k=k, st=st, dx=dx: ops.avgpool2d_backward(dy, xs, k, st, dx=dx))
        elif kind in ACTIVATIONS:
            fwd = (lambda x=x, y=y, kind=kind: ops.activation_forward(x, kind, out=y))
            fwd()
            bwd = (lambda dy=dy, y=y, kind=kind, dx=dx: ops.activation_backward(dy, y, kind, dx=dx))
        else:
            raise ValueError(f"layer {i}: type {kind!r} has no layer op here; add it to lab/common/layers.py")
        calls.append((label, "forward", fwd))
        if need_dx:
            calls.append((label, "backward", bwd))
    return calls
