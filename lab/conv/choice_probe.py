"""How stable the timed kernel choice of small eager conv layers is (the rows behind conv_suite_min's swings).

    python3 dev/conv_choice_probe.py

For the small layers of the harness's conv suite, backward_weights phase, eagerly: each candidate's time per
call (wall clock around 50 eager calls ending in a sync, 7 repeats) and its host time alone (no sync), then
conv.choose_backward_weights made afresh 6 times (its cache cleared) to see whether the choice flips.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SHAPES = [(256, 1, 28, 28, 32, 5, 5, 1, 2), (33, 17, 29, 31, 45, 3, 3, 1, 1), (256, 3, 32, 32, 32, 3, 3, 1, 1)]


def _setup(shape):
    import cupy

    from custom_impl.gpu import conv

    N, C, H, W, K, R, S, st, pad = shape
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
    w = cupy.asarray(rng.standard_normal((K, C, R, S), dtype=np.float32))
    dims = conv._dims(x.shape, w.shape, (st, st), (pad, pad))
    P, Q = dims[7], dims[8]
    dy = cupy.asarray(rng.standard_normal((N, K, P, Q), dtype=np.float32))
    dW = cupy.empty(w.shape, np.float32)
    db = cupy.empty((K,), np.float32)
    size = conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad))
    ws = cupy.empty((size,), np.float32) if size else None   # as the harness's rows do
    return x, w, dy, dW, db, ws, dims, (st, st), (pad, pad)


def _candidates(shape):
    from custom_impl.gpu import conv

    x, w, dy, dW, db, ws, dims, st, pad = _setup(shape)
    sms = conv._num_sms()
    names = conv.weights_candidates(dims, sms)
    calls = {v: (lambda v=v: conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db, workspace=ws,
                                                  weights_version=v)) for v in names}
    calls["auto (row)"] = lambda: conv.conv2d_backward(dy, x, w, st, pad, need_dx=False, dW=dW, db=db, workspace=ws)
    return calls, (dy, x, dW, dims, ws, sms)


def _warm(shape) -> str:
    calls, _ = _candidates(shape)
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

    from custom_impl.gpu import conv

    for shape in SHAPES:
        calls, (dy, x, dW, dims, ws, sms) = _candidates(shape)
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
            conv._choices.clear()
            picks.append(conv.choose_backward_weights(dy, x, dW, dims, ws, sms))
        print(f"  fresh choices: {picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
