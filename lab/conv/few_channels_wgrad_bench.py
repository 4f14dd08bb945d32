"""Few-channel conv backward-weights on the GPU: its two launch shapes ("rows", "bands") against cuDNN, on the
harness conv suite's few-channel rows (and the ResNet stem), with a short table printed last.

    python3 lab/conv/few_channels_wgrad_bench.py --out "$OUT" [--reps 50] [--no-sweep]
    python3 lab/conv/few_channels_wgrad_bench.py --warm   # first: compile every kernel module of the default
                                                          # path in parallel (runtime.precompile)

Per row (FP32; PyTorch with cudnn.benchmark on and TF32 off, as the harness):
- parity: dW of each launch shape against PyTorch's float64 weight gradient (normwise max error), and
  "bands" twice (bit-identical: deterministic);
- "row": what the harness times for a backward_weights row, dW and db through ``conv.conv2d_backward`` with
  weights_algo="few_channels" (its launch shape chosen by its rule), against ``aten.convolution_backward``
  with output mask (dx, dW, db) = (F, T, T); eager calls;
- "dW": ``conv.few_channels.backward_weights`` alone with ``launch=`` each shape, eager, against
  ``convolution_backward`` for dW alone;
- "dW graph": the same replayed from a CUDA graph of 20 calls: the GPU time per call without the host's
  launch cost (both sides);
- with --sweep (default on): "bands" with a few other plans (band height pb, grid), graph-timed.
Timing: CUDA events of the library that launches; a sample is the mean over enough back-to-back calls to
last >= 1 ms (the harness's rule), ``--reps`` samples after warm-up; median and IQR in microseconds.
Writes bench.json (every sample set) and bench_table.txt to --out.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab

from lab.common.timing import graph_samples_ms, torch_graph_samples_ms  # noqa: E402

LAUNCHES = ("rows", "bands")

ROWS = [  # name, x shape, W shape, stride, padding
    ("N256 C3 32x32 K32 3x3 s1 p1", (256, 3, 32, 32), (32, 3, 3, 3), 1, 1),
    ("N256 C1 28x28 K32 5x5 s1 p2", (256, 1, 28, 28), (32, 1, 5, 5), 1, 2),
    ("N64 C3 224x224 K64 7x7 s2 p3", (64, 3, 224, 224), (64, 3, 7, 7), 2, 3),
]


def _quantiles(samples):
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return statistics.median(samples), q[2] - q[0]


def time_eager(fn, sync, event_pair, reps):
    """Median and IQR (us per call) of ``reps`` samples, each >= 1 ms of back-to-back calls."""
    for _ in range(5):
        fn()
    sync()
    start, stop, elapsed = event_pair()
    start()
    fn()
    first = stop()
    inner = max(1, int(np.ceil(1.0 / max(first, 1e-4))))
    samples = []
    for _ in range(reps):
        sync()
        start()
        for _ in range(inner):
            fn()
        samples.append(stop() * 1e3 / inner)
    return _quantiles(samples) + (samples,)


def cupy_events():
    import cupy

    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()

    def start():
        ev0.record()

    def stop():
        ev1.record()
        ev1.synchronize()
        return cupy.cuda.get_elapsed_time(ev0, ev1)  # ms

    return start, stop, None


def torch_events():
    import torch

    ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start():
        ev0.record()

    def stop():
        ev1.record()
        ev1.synchronize()
        return ev0.elapsed_time(ev1)

    return start, stop, None


def cupy_graph_time(fn, reps, calls=20):
    """GPU time per call (us, median, IQR, samples) of ``calls`` calls captured in one CUDA graph, ``reps``
    replays after 3 untimed ones."""
    samples = [ms * 1e3 for ms in graph_samples_ms(fn, calls, reps, warm=3)]
    return _quantiles(samples) + (samples,)


def torch_graph_time(fn, reps, calls=20):
    """``cupy_graph_time`` for PyTorch work (cuDNN)."""
    samples = [ms * 1e3 for ms in torch_graph_samples_ms(fn, calls, reps, warm=3)]
    return _quantiles(samples) + (samples,)


def bench_row(name, x_shape, w_shape, stride, padding, reps, sweep, log):
    import cupy
    import torch

    from custom_impl.gpu import conv, runtime
    from custom_impl.gpu.conv import few_channels

    rng = np.random.default_rng(0)
    dims = tuple(conv.conv_dims(x_shape, w_shape, stride, padding))
    N, C, H, Wd, K, R, S, P, Q, sh, sw, ph, pw = dims
    x = rng.standard_normal(x_shape).astype(np.float32)
    W = (rng.standard_normal(w_shape) / np.sqrt(C * R * S)).astype(np.float32)
    dy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
    gx, gW, gdy = cupy.asarray(x), cupy.asarray(W), cupy.asarray(dy)
    dW, db = cupy.empty(W.shape, np.float32), cupy.empty((K,), np.float32)
    sms = runtime.sm_count()
    plans = {v: few_channels.weights_plan(dims, sms, v) for v in LAUNCHES}
    n_conv = conv.conv2d_workspace_size(x_shape, w_shape, stride, padding)
    n_ws = max([n_conv] + [p.grid * K * C * R * S for p in plans.values() if p is not None])
    extra = []
    if sweep and plans["bands"] is not None:
        base = plans["bands"]
        for pb in sorted({1, 2, 4, 7, base.pb}):
            for mult in (1, 2):
                if (base.kc // 4) * C * R * pb > few_channels.BANDS_THREADS or pb > P:
                    continue
                p = few_channels.bands_plan(dims, base.kc, pb, None, sms)
                p = p._replace(grid=max(1, min(N * -(-P // pb), p.grid * mult)))
                if p.smem <= few_channels.BANDS_SMEM_BYTES and p != base:
                    extra.append(p)
        n_ws = max([n_ws] + [p.grid * K * C * R * S for p in extra])
    ws = cupy.empty((n_ws,), np.float32)
    log(f"== {name}: dims {dims}, SMs {sms}")
    for v, p in plans.items():
        log(f"   {v} plan: {p}")

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    tx, tW, tdy = (torch.from_numpy(a).cuda() for a in (x, W, dy))
    cb = torch.ops.aten.convolution_backward
    st, pd = [sh, sw], [ph, pw]

    def torch_row():
        return cb(tdy, tx, tW, [K], st, pd, [1, 1], False, [0, 0], 1, [False, True, True])

    def torch_dw():
        return cb(tdy, tx, tW, None, st, pd, [1, 1], False, [0, 0], 1, [False, True, False])

    # parity against float64 (the harness's oracle), normwise max error
    ref = cb(tdy.double(), tx.double(), tW.double(), None, st, pd, [1, 1], False, [0, 0], 1,
             [False, True, False])[1].cpu().numpy()
    scale = np.abs(ref).max()
    parity = {}
    for v in LAUNCHES:
        if plans[v] is None:
            continue
        few_channels.backward_weights(gdy, gx, dW, dims, ws, launch=v)
        parity[v] = float(np.abs(cupy.asnumpy(dW) - ref).max() / scale)
    parity["cudnn"] = float(np.abs(torch_dw()[1].double().cpu().numpy() - ref).max() / scale)
    if plans["bands"] is not None:
        a = cupy.asnumpy(few_channels.backward_weights(gdy, gx, dW, dims, ws, launch="bands"))
        b = cupy.asnumpy(few_channels.backward_weights(gdy, gx, dW, dims, ws, launch="bands"))
        parity["bands_deterministic"] = bool(np.array_equal(a, b))
    log(f"   parity (max|dW - ref64| / max|ref64|): {parity}")

    results = []
    csync = cupy.cuda.Device().synchronize
    tsync = torch.cuda.synchronize
    orig = few_channels.backward_weights

    def record(kind, variant, m, extra_info=""):
        med, iqr, samples = m
        results.append(dict(row=name, kind=kind, variant=variant, median_us=med, iqr_us=iqr, samples_us=samples,
                            info=extra_info))
        log(f"   {kind:9s} {variant:16s} {med:9.1f} us  (IQR {iqr:6.1f})  {extra_info}")

    try:
        record("row", "ours", time_eager(
            lambda: conv.conv2d_backward(gdy, gx, gW, stride, padding, need_dx=False, dW=dW, db=db, workspace=ws,
                                         weights_algo="few_channels"), csync, cupy_events, reps))
    except Exception as err:  # noqa: BLE001
        log(f"   row ours: failed ({type(err).__name__}: {err})")
    record("row", "cuDNN", time_eager(torch_row, tsync, torch_events, reps))
    for v in LAUNCHES:
        if plans[v] is not None:
            fn = functools.partial(orig, gdy, gx, dW, dims, ws, launch=v)
            record("dW", f"ours {v}", time_eager(fn, csync, cupy_events, reps))
            try:
                record("dW graph", f"ours {v}", cupy_graph_time(fn, reps))
            except Exception as err:  # noqa: BLE001
                log(f"   dW graph ours {v}: failed ({type(err).__name__}: {err})")
    record("dW", "cuDNN", time_eager(torch_dw, tsync, torch_events, reps))
    try:
        record("dW graph", "cuDNN", torch_graph_time(torch_dw, reps))
    except Exception as err:  # noqa: BLE001
        log(f"   dW graph cuDNN: failed ({type(err).__name__}: {err})")
    for p in extra:
        fn = functools.partial(orig, gdy, gx, dW, dims, ws, launch="bands", plan=p)
        fn()
        err = float(np.abs(cupy.asnumpy(dW) - ref).max() / scale)
        try:
            record("sweep", f"bands pb{p.pb} g{p.grid}", cupy_graph_time(fn, max(10, reps // 3)),
                   f"thr {p.threads} smem {p.smem} err {err:.1e}")
        except Exception as e:  # noqa: BLE001
            log(f"   sweep {p}: failed ({type(e).__name__}: {e})")
    return dict(row=name, dims=dims, plans={k: (None if p is None else p._asdict()) for k, p in plans.items()},
                parity=parity, results=results)


def table(rows):
    lines = []
    for r in rows:
        by = {(x["kind"], x["variant"]): x["median_us"] for x in r["results"]}
        par = r["parity"]
        lines.append(f"{r['row']}  (parity rows {par.get('rows', float('nan')):.1e}, "
                     f"bands {par.get('bands', float('nan')):.1e}, cuDNN {par['cudnn']:.1e}; "
                     f"bands deterministic {par.get('bands_deterministic')})")
        row_ours, row_ref = by.get(("row", "ours"), float("nan")), by.get(("row", "cuDNN"), float("nan"))
        lines.append(f"  row (dW + db, few_channels): ours {row_ours:.1f} us, cuDNN {row_ref:.1f} us, "
                     f"ratio {row_ref / row_ours:.2f}")
        lines.append(f"  {'what':10s} {'rows us':>9s} {'bands us':>9s} {'cuDNN us':>9s} {'r. rows':>9s} {'r. bands':>9s}")
        for kind in ("dW", "dW graph"):
            a, b, ref = (by.get((kind, k), float("nan")) for k in ("ours rows", "ours bands", "cuDNN"))
            lines.append(f"  {kind:10s} {a:9.1f} {b:9.1f} {ref:9.1f} {ref / a:9.2f} {ref / b:9.2f}")
        sweep = [x for x in r["results"] if x["kind"] == "sweep"]
        if sweep:
            lines.append("  bands plan sweep (graph us): "
                         + ", ".join(f"{x['variant']} {x['median_us']:.1f}" for x in sweep))
    return "\n".join(lines)


def warm(log):
    """Compile every kernel module the default path can choose, in parallel (CuPy's disk cache keeps them)."""
    from custom_impl.gpu import runtime

    t0 = time.time()
    done = runtime.precompile(progress=log)
    log(f"warm: {len(done)} modules in {time.time() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--rows", default="0,1,2", help="indices into ROWS")
    ap.add_argument("--warm", action="store_true", help="only compile the modules (see warm)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "warm.log" if args.warm else "bench.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    if args.warm:
        warm(log)
        return
    import cupy
    import torch

    log(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, torch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}, cupy {cupy.__version__}")
    rows = []
    t0 = time.time()
    for i in (int(v) for v in args.rows.split(",")):
        try:
            rows.append(bench_row(*ROWS[i], args.reps, not args.no_sweep and i < 2, log))
        except Exception:  # noqa: BLE001 - one row's failure must not cost the others
            import traceback

            log(f"   row {ROWS[i][0]} failed:\n{traceback.format_exc()}")
        log(f"   ({time.time() - t0:.1f} s so far)")
        with open(os.path.join(args.out, "bench.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
    text = table(rows)
    with open(os.path.join(args.out, "bench_table.txt"), "w") as fh:
        fh.write(text + "\n")
    log(text)


if __name__ == "__main__":
    main()
