"""One visit to the GPU machine: the GPU tests, then a few train-step timings; a short summary last.

Run from the repository root on the GPU machine (nothing to install there):

    python3 dev/gpu_check.py --out "$OUT"                     # tests + timings
    python3 dev/gpu_check.py --out "$OUT" --no-tests          # timings only
    python3 dev/gpu_check.py --out "$OUT" --tests tests/test_gpu_ops.py --no-timings

Writes the full pytest log (pytest_gpu.log), the JUnit XML and the timings (timings.csv) to --out.
Timings (CUDA events on the current stream, after warm-up; median over repeats of the mean step time
over ``--steps`` back-to-back steps; inputs already on the device): ours with CUDA-graph replay, ours
eager, PyTorch eager, PyTorch CUDA graph. These are a quick look only; the harness does the real
benchmarks.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_TESTS = ["tests/test_gpu_ops.py", "tests/test_gpu_model.py", "tests/test_no_vendor.py",
                 "tests/test_parity.py"]


def run_tests(paths, out, timeout):
    log = os.path.join(out, "pytest_gpu.log")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider",
           f"--junitxml={os.path.join(out, 'pytest_gpu.xml')}", *paths]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        text += f"\n*** pytest stopped after {timeout} s ***\n"
        rc = -1
    with open(log, "w") as fh:
        fh.write(text)
    lines = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR")) or " passed" in ln
             or " failed" in ln or "stopped after" in ln]
    return rc, time.time() - t0, lines


def _time_loop(step, sync_events, steps, repeats):
    """Median over ``repeats`` of the mean time of ``steps`` back-to-back calls of step(), in us."""
    start, stop, elapsed_ms = sync_events
    times = []
    for _ in range(repeats):
        start()
        for _ in range(steps):
            step()
        stop()
        times.append(elapsed_ms() * 1000.0 / steps)
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def _cupy_events():
    import cupy

    a, b = cupy.cuda.Event(), cupy.cuda.Event()
    return (lambda: a.record(), lambda: (b.record(), b.synchronize()),
            lambda: cupy.cuda.get_elapsed_time(a, b))


def _torch_events():
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    return (lambda: a.record(), lambda: (b.record(), b.synchronize()), lambda: a.elapsed_time(b))


def run_timings(models, batches, out, steps, repeats):
    import cupy
    import numpy as np
    import torch

    import custom_impl.gpu.model as gm
    import modelspec
    import reference_impl

    rows = []
    for name in models:
        spec = modelspec.load(name)
        for n in batches:
            rng = np.random.default_rng(n)
            x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
            y = rng.integers(0, spec.num_classes, n).astype(np.int64)
            xc, yc = cupy.asarray(x), cupy.asarray(y)
            xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            variants = {}
            for use_graph in (True, False):
                m = gm.build(spec, seed=0, use_graph=use_graph)
                variants["ours-graph" if use_graph else "ours-eager"] = (
                    lambda m=m: m.train_step(xc, yc, 0.01, 0.9), _cupy_events)
            ref = reference_impl.build(spec, device="gpu", seed=0)
            variants["torch-eager"] = (lambda: ref.train_step(xt, yt, 0.01, 0.9), _torch_events)
            ref2 = reference_impl.build(spec, device="gpu", seed=0)
            variants["torch-graph"] = (lambda: ref2.train_step_graphed(xt, yt, 0.01, 0.9), _torch_events)
            for variant, (step, events) in variants.items():
                try:
                    for _ in range(5):
                        step()  # eager, capture, replays; compilation and autotuning
                    torch.cuda.synchronize()
                    cupy.cuda.Device().synchronize()
                    med, lo, hi = _time_loop(step, events(), steps, repeats)
                    rows.append(dict(model=name, batch=n, variant=variant, median_us=round(med, 2),
                                     min_us=round(lo, 2), max_us=round(hi, 2), status="ok"))
                except Exception as err:  # keep going: one broken variant must not hide the others
                    rows.append(dict(model=name, batch=n, variant=variant, median_us=float("nan"),
                                     min_us=float("nan"), max_us=float("nan"),
                                     status=f"{type(err).__name__}: {str(err)[:120]}"))
    path = os.path.join(out, "timings.csv")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def diagnose_maxpool(name, batch, seed=0):
    """Compare our max-pool routing with torch's: on our own pool input (the tie rule: must be 0
    mismatches) and on torch's pool input (near-ties flipped by float32 differences upstream)."""
    import cupy
    import numpy as np
    import torch
    import torch.nn.functional as F

    import custom_impl
    import modelspec
    import reference_impl
    from tests.helpers import random_batch

    spec = modelspec.load(name)
    x, y = random_batch(spec, batch, seed=seed)
    ours = custom_impl.build(spec, device="gpu", seed=0)
    ref = reference_impl.build(spec, device="gpu", seed=0)
    ours.loss_and_grads(x, y)
    plan = ours._plan(batch)
    xt = torch.from_numpy(x).cuda()
    lines = []
    for i, step in enumerate(ours.steps):
        if step.kind != "pool" or step.layer.type != "maxpool2d":
            continue
        (R, S), (sh, sw) = step.layer.kernel_size, step.layer.stride
        xin = plan.acts[i]
        n, c, h, w = xin.shape
        am = cupy.asnumpy(plan.saved[i]).astype(np.int64)
        p_idx = np.arange(am.shape[2])[None, None, :, None]
        q_idx = np.arange(am.shape[3])[None, None, None, :]
        ours_flat = (p_idx * sh + am // S) * w + (q_idx * sw + am % S)
        with torch.no_grad():
            t_own = torch.as_tensor(cupy.asnumpy(xin)).cuda()
            _, idx_own = F.max_pool2d(t_own, (R, S), (sh, sw), return_indices=True)
            t_ref = ref.net[:step.layer.index](xt)
            _, idx_ref = F.max_pool2d(t_ref, (R, S), (sh, sw), return_indices=True)
        # NOTE: with relu fused into the pool (step.relu) our argmax is over the pre-relu input, so windows
        # whose max is <= 0 route differently from torch's all-zero ties by design (no gradient either way):
        # compare only windows with a positive maximum.
        live = cupy.asnumpy(plan.acts[i + 1]) > 0 if getattr(step, "relu", False) else np.ones(am.shape, bool)
        if getattr(step, "relu", False):
            t_own = torch.relu(t_own)
            with torch.no_grad():
                _, idx_own = F.max_pool2d(t_own, (R, S), (sh, sw), return_indices=True)
        own_mis = int(((idx_own.cpu().numpy() != ours_flat) & live).sum())
        ref_mis = (idx_ref.cpu().numpy() != ours_flat) & live
        xr = t_ref.cpu().numpy().reshape(n, c, h * w)
        gaps = []
        for nn_, cc, pp, qq in zip(*np.nonzero(ref_mis)):
            a = xr[nn_, cc, ours_flat[nn_, cc, pp, qq]]
            b = xr[nn_, cc, idx_ref.cpu().numpy()[nn_, cc, pp, qq]]
            gaps.append(abs(float(a) - float(b)) / max(abs(float(b)), 1e-30))
        diff = float(np.abs(t_own.cpu().numpy() - t_ref.cpu().numpy()).max())
        lines.append(f"{name} N={batch} layer {step.layer.index}: {am.size} windows; routing vs torch on OUR input: "
                     f"{own_mis} mismatches; on torch's input: {int(ref_mis.sum())} mismatches, relative gaps "
                     f"{['%.1e' % g for g in gaps[:6]]}; max |our input - torch input| {diff:.2e}")
    return lines


def truth(name, batch, seed=0):
    """Gradient errors of ours (GPU) and of the reference (GPU, cuDNN) against float64 (torch on the CPU)."""
    import numpy as np
    import torch

    import custom_impl
    import modelspec
    import reference_impl
    from tests.helpers import random_batch

    spec = modelspec.load(name)
    x, y = random_batch(spec, batch, seed=seed)
    _, g_ours = custom_impl.build(spec, device="gpu", seed=0).loss_and_grads(x, y)
    _, g_ref = reference_impl.build(spec, device="gpu", seed=0).loss_and_grads(x, y)
    _, g_cpu = custom_impl.build(spec, device="cpu", seed=0).loss_and_grads(x, y)
    r64 = reference_impl.build(spec, device="cpu", seed=0)
    r64.net.double()
    xt = torch.from_numpy(x.astype(np.float64))
    loss = r64._loss(r64.net(xt), r64._labels(y, batch).to(torch.float64) if spec.loss != "softmax_cross_entropy"
                     else r64._labels(y, batch))
    loss.backward()
    lines = []
    for k, p in r64.params.items():
        g64 = p.grad.numpy()
        scale = float(np.abs(g64).max())
        errs = {nm: float(np.abs(g[k].astype(np.float64) - g64).max()) / scale
                for nm, g in (("ours-gpu", g_ours), ("cudnn", g_ref), ("ours-cpu", g_cpu))}
        lines.append(f"  {name} N={batch} {k:10s} max|g - g64| / max|g64|: " +
                     "  ".join(f"{nm} {e:.2e}" for nm, e in errs.items()))
    return lines


def breakdown(name, batch, reps=20):
    """Per-step GPU time (us) of our forward and backward: each step's launches captured ``reps`` times
    in one CUDA graph and the replay timed with events, so launch overhead (~1 us a kernel) is all that
    is left of the host."""
    import cupy

    import custom_impl
    import modelspec
    from tests.helpers import random_batch

    spec = modelspec.load(name)
    x, y = random_batch(spec, batch)
    m = custom_impl.build(spec, device="gpu", seed=0)
    m.loss_and_grads(x, y)
    plan = m._plan(batch)
    ev = [cupy.cuda.Event() for _ in range(2)]
    stream = cupy.cuda.Stream(non_blocking=True)
    out = []
    for i, step in enumerate(m.steps):
        for phase in ("fwd", "bwd"):
            if step.kind == "flatten" or (phase == "bwd" and step.weight is None and not step.needs_dx):
                continue

            def run():
                if phase == "fwd":
                    step.forward(m, plan.acts[i], plan.acts[i + 1], plan.saved[i], plan.ws)
                else:
                    step.backward(m, plan.dacts[i + 1], plan.acts[i], plan.acts[i + 1], plan.saved[i],
                                  plan.dacts[i], plan.ws)
            run()
            with stream:
                stream.begin_capture()
                for _ in range(reps):
                    run()
                graph = stream.end_capture()
            graph.launch(stream)
            ev[0].record(stream)
            graph.launch(stream)
            ev[1].record(stream)
            ev[1].synchronize()
            out.append((f"{step!r} {phase}", cupy.cuda.get_elapsed_time(ev[0], ev[1]) * 1000 / reps))
    total = sum(us for _, us in out)
    return [f"  {us:9.1f} us  {what}" for what, us in out] + [f"  {total:9.1f} us  total"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--tests", nargs="*", default=DEFAULT_TESTS)
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-timings", action="store_true")
    ap.add_argument("--pytest-timeout", type=int, default=200)
    ap.add_argument("--models", nargs="*", default=["mlp-mnist", "lenet-mnist"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64, 1024])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--diagnose", nargs="*", default=[], help="MODEL:N pairs: max-pool routing vs torch")
    ap.add_argument("--truth", nargs="*", default=[], help="MODEL:N pairs: gradients vs float64")
    ap.add_argument("--breakdown", nargs="*", default=[], help="MODEL:N pairs: per-step eager GPU time")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    summary = []
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        summary.append(f"device: {props['name'].decode()}  cupy {cupy.__version__}")
    except Exception as err:
        summary.append(f"device: unknown ({err})")
    if not args.no_tests:
        rc, secs, lines = run_tests(args.tests, args.out, args.pytest_timeout)
        summary.append(f"pytest -m gpu ({secs:.0f} s, rc {rc}):")
        summary.extend("  " + ln for ln in lines[-40:])
    if not args.no_timings:
        try:
            rows = run_timings(args.models, args.batches, args.out, args.steps, args.repeats)
            summary.append("train step, median us per step (min..max over repeats):")
            summary.append(f"  {'model':12s} {'N':>5s} " + " ".join(f"{v:>20s}" for v in
                                                               ("ours-graph", "ours-eager", "torch-eager", "torch-graph")))
            keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
            for model, n in keys:
                cells = []
                for v in ("ours-graph", "ours-eager", "torch-eager", "torch-graph"):
                    r = next((r for r in rows if r["model"] == model and r["batch"] == n and r["variant"] == v), None)
                    cells.append(f"{r['median_us']:>9.1f} ({r['min_us']:.0f}..{r['max_us']:.0f})" if r and r["status"] == "ok"
                                 else f"{'ERR':>20s}")
                summary.append(f"  {model:12s} {n:5d} " + " ".join(f"{c:>20s}" for c in cells))
            for r in rows:
                if r["status"] != "ok":
                    summary.append(f"  error {r['model']} N={r['batch']} {r['variant']}: {r['status']}")
        except Exception as err:
            import traceback

            summary.append(f"timings failed: {type(err).__name__}: {err}")
            summary.append(traceback.format_exc()[-1500:])
    for item in args.diagnose:
        name, n = item.split(":")
        try:
            summary.extend(diagnose_maxpool(name, int(n)))
        except Exception as err:
            summary.append(f"diagnose {item} failed: {type(err).__name__}: {err}")
    for item in args.truth:
        name, n = item.split(":")
        try:
            summary.append(f"gradients vs float64 (torch CPU double), {name} N={n}:")
            summary.extend(truth(name, int(n)))
        except Exception as err:
            summary.append(f"truth {item} failed: {type(err).__name__}: {err}")
    for item in args.breakdown:
        name, n = item.split(":")
        try:
            summary.append(f"per-step GPU time, {name} N={n} (graph replays of 20 launches each):")
            summary.extend(breakdown(name, int(n)))
        except Exception as err:
            summary.append(f"breakdown {item} failed: {type(err).__name__}: {err}")
    text = "\n".join(summary)
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
