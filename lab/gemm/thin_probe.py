"""Each thin plan and the tuned default of a few thin GEMMs, GPU time per call (CUDA events over back-to-back
calls), ours beside torch: which plan the tuner keeps and what each costs. The weight-gradient shapes have
no thin plan in the product (the kernels tried for them lost: docs/kernels.md); they show the tiled plan.

    python3 lab/gemm/thin_probe.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

# (M, N, K, trans_a, trans_b): the dense layers' forward (x @ W^T) and weight gradient (dy^T @ x)
SHAPES = [(22400, 29, 1760, False, True), (29, 1760, 22400, True, False), (8192, 10, 1024, False, True),
          (10, 128, 8192, True, False)]


def main() -> None:
    import cupy
    import torch

    from custom_impl.gpu import gemm, runtime, thin

    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()

    def gpu_us(fn, calls=20):
        fn()
        ev0.record()
        for _ in range(calls):
            fn()
        ev1.record()
        ev1.synchronize()
        return cupy.cuda.get_elapsed_time(ev0, ev1) * 1e3 / calls

    for M, N, K, ta, tb in SHAPES:
        a = cupy.asarray(rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32))
        out = cupy.empty((M, N), np.float32)
        at, bt, ot = torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(out)
        opa, opb = (at.T if ta else at), (bt.T if tb else bt)
        row = {"torch": gpu_us(lambda: torch.matmul(opa, opb, out=ot))}
        row["auto"] = gpu_us(lambda: gemm.gemm(a, b, out, trans_a=ta, trans_b=tb))
        tuned = runtime.tuned_choices()   # {(device, launch cost, key): plan}
        chosen = next((v for k, v in tuned.items() if tuple(k[-1][:4]) == ("gemm", M, N, K)), None)
        for cfg, splits, serial in thin.candidates(M, N, K, ta, tb, runtime.sm_count()):
            name = f"{cfg.name} x{splits}{' serial' if serial else ''}"
            row[name] = gpu_us(lambda: gemm.gemm(a, b, out, trans_a=ta, trans_b=tb, config=cfg, splits=splits,
                                                 reduce="serial" if serial else "launch"))
        print(f"{M}x{N}x{K} ta={ta} tb={tb} tuned: {chosen}")
        for name, us in row.items():
            print(f"    {name:24s} {us:9.1f} us  torch/this {row['torch'] / us:5.2f}")


if __name__ == "__main__":
    main()
