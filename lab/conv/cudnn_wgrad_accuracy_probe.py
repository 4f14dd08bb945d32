"""Which cuDNN engine the frameworks pick for a conv weight gradient, and how accurate it is, per setting.

    python3 lab/conv/cudnn_wgrad_accuracy_probe.py --out DIR [--reps 30]

On the H100, LeNet's 5x5 conv (32 -> 64 channels, 14x14, batch 256) backward-weights row failed parity for
both PyTorch and JAX with the same error (max-norm rel err 7.4e-3 against float64; ours 4.9e-7), which
suggests that both frameworks' autotuners pick the same inexact cuDNN engine. For a few conv shapes this
probe measures, in one fresh process per setting (XLA reads its flags once per process):

- PyTorch (TF32 off): ``cudnn.benchmark`` on (the reference's setting), off (cuDNN's heuristic), and on with
  ``cudnn.deterministic``;
- JAX at ``Precision.HIGHEST``: XLA's default autotuning, ``--xla_gpu_autotune_level=0`` (no autotuning),
  ``--xla_gpu_deterministic_ops=true`` and ``--xla_gpu_exclude_nondeterministic_ops=true``;

the max-norm relative error of dW and db against a float64 oracle (the harness's parity measure), the
median time per call (CUDA events around single calls, after warm-up), and the names of the GPU kernels one
call launches (torch.profiler; in the JAX processes it records the kernels XLA launches too). The JAX
default process also dumps XLA's optimised HLO to DIR/xla_dump; the conv custom calls' ``algo_id`` lines
are printed. Data: the harness's layer data (seed 0: x, W / sqrt(C R S), b, dy, standard normal).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: harness

# (N, C, H, W, K, R, S, stride, pad)
SHAPES = [(256, 32, 14, 14, 64, 5, 5, 1, 2), (64, 32, 14, 14, 64, 5, 5, 1, 2), (1024, 32, 14, 14, 64, 5, 5, 1, 2),
          (256, 1, 28, 28, 32, 5, 5, 1, 2), (64, 64, 56, 56, 64, 3, 3, 1, 1)]
MODES = {
    "torch-benchmark": {},
    "torch-heuristic": {},
    "torch-deterministic": {},
    "jax-default": {"XLA_FLAGS": "--xla_dump_to={out}/xla_dump --xla_dump_hlo_as_text"},
    "jax-autotune0": {"XLA_FLAGS": "--xla_gpu_autotune_level=0"},
    "jax-deterministic": {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"},
    "jax-exclude-nondet": {"XLA_FLAGS": "--xla_gpu_exclude_nondeterministic_ops=true"},
}


def data(shape):
    """The harness's layer data for one conv shape, seed 0 (same draw order as harness.workloads)."""
    n, c, h, w, k, r, s, st, pad = shape
    rng = np.random.default_rng(7)
    p, q = (h + 2 * pad - r) // st + 1, (w + 2 * pad - s) // st + 1
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    W = rng.standard_normal((k, c, r, s), dtype=np.float32) / np.float32(math.sqrt(c * r * s))
    b = rng.standard_normal((k,), dtype=np.float32)
    dy = rng.standard_normal((n, k, p, q), dtype=np.float32)
    return x, W, b, dy


def key(shape) -> str:
    return "N{}_C{}_H{}_W{}_K{}_R{}_S{}_st{}_pad{}".format(*shape)


def oracle(out: str) -> None:
    """float64 dW, db of every shape (PyTorch on the CPU), saved to DIR/oracle.npz."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    saved = {}
    for shape in SHAPES:
        x, W, _, dy = data(shape)
        st, pad = shape[7], shape[8]
        dW = torch.nn.grad.conv2d_weight(torch.from_numpy(x).double(), W.shape, torch.from_numpy(dy).double(),
                                         stride=st, padding=pad)
        saved[key(shape) + "_dW"] = dW.numpy()
        saved[key(shape) + "_db"] = dy.astype(np.float64).sum(axis=(0, 2, 3))
    np.savez(os.path.join(out, "oracle.npz"), **saved)


def kernel_names(fn, sync) -> list[str]:
    """Names of the GPU kernels one call of fn launches (torch.profiler / CUPTI); [] if that fails."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            sync()
        names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
        return sorted(set(n[:110] for n in names))
    except Exception as e:   # NOTE: a probe: report, do not stop
        return [f"(profiler failed: {type(e).__name__}: {e})"]


def worker(mode: str, out: str, reps: int) -> list[dict]:
    from harness.workloads import rel_err   # the harness's parity measure (max-norm)

    ref = np.load(os.path.join(out, "oracle.npz"))
    rows = []
    if mode.startswith("torch"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = mode != "torch-heuristic"
        torch.backends.cudnn.deterministic = mode == "torch-deterministic"
        sync = torch.cuda.synchronize
    else:
        import jax
        from jax import lax

        def sync():
            (jax.device_put(0.0) + 0).block_until_ready()

    for shape in SHAPES:
        x, W, b, dy = data(shape)
        st, pad = shape[7], shape[8]
        if mode.startswith("torch"):
            xt, Wt, bt, dyt = (torch.from_numpy(a).cuda() for a in (x, W, b, dy))
            Wt.requires_grad_(True)
            bt.requires_grad_(True)

            def call():
                return torch.ops.aten.convolution_backward(dyt, xt, Wt, [Wt.shape[0]], [st, st], [pad, pad], [1, 1],
                                                           False, [0, 0], 1, [False, True, True])[1:]
        else:
            xj, Wj, bj, dyj = (jax.device_put(a) for a in (x, W, b, dy))

            def conv(W_, b_):
                y = lax.conv_general_dilated(xj, W_, (st, st), ((pad, pad), (pad, pad)),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                             precision=lax.Precision.HIGHEST)
                return y + b_[None, :, None, None]

            fn = jax.jit(lambda dy_, W_, b_: jax.vjp(conv, W_, b_)[1](dy_))
            t0 = time.perf_counter()
            compiled = fn.lower(dyj, Wj, bj).compile()
            compile_s = time.perf_counter() - t0

            def call():
                return compiled(dyj, Wj, bj)
        got = call()
        sync()
        dW, db = (np.asarray(g.detach().cpu().numpy() if hasattr(g, "detach") else g) for g in got)
        for _ in range(3):
            call()
        sync()
        times = []
        if mode.startswith("torch"):
            for _ in range(reps):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                call()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e))
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                r = call()
                jax.block_until_ready(r)
                times.append((time.perf_counter() - t0) * 1e3)
        row = {"mode": mode, "shape": key(shape), "dW_rel_err": rel_err([dW], [ref[key(shape) + "_dW"]]),
               "db_rel_err": rel_err([db], [ref[key(shape) + "_db"]]), "median_ms": float(np.median(times)),
               "kernels": kernel_names(call, sync)}
        if not mode.startswith("torch"):
            row["compile_s"] = compile_s
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def algo_lines(out: str) -> list[str]:
    """The conv custom calls of XLA's optimised HLO (their cuDNN algorithm ids), from the dump."""
    lines = []
    for path in sorted(glob.glob(os.path.join(out, "xla_dump", "*after_optimizations.txt"))):
        for line in open(path):
            if "__cudnn$conv" in line:
                m = re.search(r'"algo_id":"?(\d+)"?', line)
                target = re.search(r'custom_call_target="([^"]+)"', line)
                shape = line.split("=", 1)[1].split("custom-call", 1)[0].strip()[:60]
                lines.append(f"{os.path.basename(path)[:40]}: {target.group(1) if target else '?'} {shape} "
                             f"algo_id={m.group(1) if m else '?'}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--worker", choices=sorted(MODES))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.worker:
        worker(a.worker, a.out, a.reps)
        return 0
    oracle(a.out)
    rows = []
    for mode in a.modes.split(","):
        env = dict(os.environ)
        env.update({k: v.format(out=a.out) for k, v in MODES[mode].items()})
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        p = subprocess.run([sys.executable, __file__, "--worker", mode, "--out", a.out, "--reps", str(a.reps)],
                           env=env, capture_output=True, text=True, timeout=240)
        with open(os.path.join(a.out, f"{mode}.log"), "w") as f:
            f.write(p.stdout + "\n--- stderr\n" + p.stderr)
        got = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        if p.returncode != 0:
            print(f"{mode}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] }")
        rows += got
    with open(os.path.join(a.out, "wgrad_accuracy.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n".join(algo_lines(a.out)[:20]))
    print(f"\n{'mode':20} {'shape':36} {'dW err':>9} {'db err':>9} {'ms':>8}  kernels")
    for r in rows:
        ks = ";".join(k for k in r["kernels"] if "elementwise" not in k and "fill" not in k.lower())
        print(f"{r['mode']:20} {r['shape']:36} {r['dW_rel_err']:9.2e} {r['db_rel_err']:9.2e} {r['median_ms']:8.4f}  "
              f"{ks[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
