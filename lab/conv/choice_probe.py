"""How stable the timed algorithm choice of small eager conv layers is (the rows behind conv_suite_min's swings).

    python3 lab/conv/choice_probe.py

For the small layers of the harness's conv suite, backward_weights phase, eagerly: each candidate algorithm's
time per call (``weights_algo=`` each of ``conv.candidates(dims, "backward_weights")``; wall clock around 50
eager calls ending in a sync, 7 repeats) and its host time alone (no sync), then the "auto" choice made
afresh 6 times (the runtime's tuned-choice cache cleared before each) to see whether the choice flips.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl

import numpy as np  # noqa: E402

SHAPES = [(256, 1, 28, 28, 32, 5, 5, 1, 2), (33, 17, 29, 31, 45, 3, 3, 1, 1), (256, 3, 32, 32, 32, 3, 3, 1, 1)]


def setup_layer(shape):
    """Random x, W, dy, outputs and workspace of one layer (N, C, H, W, K, R, S, stride, pad), as a harness row."""
    import cupy

    from custom_impl.gpu import conv

    N, C, H, W, K, R, S, st, pad = shape
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
    w = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32))
    dims = conv.conv_dims(x.shape, w.shape, (st, st), (pad, pad))
    dy = cupy.asarray(rng.standard_normal((N, K, dims.P, dims.Q), dtype=np.float32))
    dW = cupy.empty(w.shape, np.float32)
    db = cupy.empty((K,), np.float32)
    size = conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad))
    ws = cupy.empty((size,), np.float32) if size else None   # as the harness's rows do
    return x, w, dy, dW, db, ws, dims, (st, st), (pad, pad)


def _candidates(shape):
    from custom_impl.gpu import conv, runtime

    x, w, dy, dW, db, ws, dims, st, pad = setup_layer(shape)
    names = conv.candidates(dims, "backward_weights", runtime.sm_count())
    calls = {v: (lambda v=v: conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db, workspace=ws,
                                                  weights_algo=v)) for v in names}
    calls["auto (row)"] = lambda: conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db, workspace=ws)
    return calls


def _warm(shape) -> str:
    calls = _candidates(shape)
    for c in calls.values():
        c()
    return f"{shape}: {list(calls)}"


def main() -> int:
    ctx = __import__("multiprocessing").get_context("spawn")
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=len(SHAPES), mp_context=ctx) as pool:
        for line in pool.map(_warm, SHAPES):
            print("warm", line, flush=True)
    print(f"compiled in {time.perf_counter() - t0:.0f} s", flush=True)
    import cupy

    from custom_impl.gpu import runtime

    for shape in SHAPES:
        calls = _candidates(shape)
        print(f"\n=== N,C,H,W,K,R,S,stride,pad = {shape}, backward_weights + bias grad, eager")
        for name, c in calls.items():
            for _ in range(3):
                c()
            cupy.cuda.Device().synchronize()
            walls, hosts = [], []
            for _ in range(7):
                cupy.cuda.Device().synchronize()
                t = time.perf_counter()
                for _ in range(50):
                    c()
                hosts.append((time.perf_counter() - t) / 50)
                cupy.cuda.Device().synchronize()
                walls.append((time.perf_counter() - t) / 50)
            print(f"  {name:12s} wall {np.median(walls)*1e6:7.1f} us (min {min(walls)*1e6:6.1f}, max "
                  f"{max(walls)*1e6:6.1f})  host {np.median(hosts)*1e6:7.1f} us", flush=True)
        picks = []
        for _ in range(6):
            runtime.clear_tuned()
            calls["auto (row)"]()
            picks.append(sorted(str(v) for v in runtime.tuned_choices().values()))
        print(f"  fresh choices (every choice the auto call tuned): {picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
