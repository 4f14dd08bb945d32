"""Which OpenBLAS kernel set NumPy runs on this CPU, and what the CPU train steps do under another one.

    python3 lab/cpu/blas_coretype_probe.py                      # as NumPy picks
    OPENBLAS_CORETYPE=SkylakeX python3 lab/cpu/blas_coretype_probe.py

NumPy's OpenBLAS (DYNAMIC_ARCH) picks its kernels from the CPU model at load time, or takes
``OPENBLAS_CORETYPE``. Prints the architecture it runs (threadpoolctl), an SGEMM 2048^3 rate, and our
CPU train step (median of 10) for three zoo models.
"""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # the repository root: custom_impl, lab.common
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # as the harness sets it

import numpy as np  # noqa: E402


def main() -> int:
    try:
        import threadpoolctl

        arch = [(d.get("internal_api"), d.get("architecture"), d.get("num_threads"))
                for d in threadpoolctl.threadpool_info()]
    except ImportError:
        arch = "threadpoolctl not installed"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    out = np.empty_like(a)
    for _ in range(2):
        np.matmul(a, a, out=out)
    t = time.perf_counter()
    for _ in range(10):
        np.matmul(a, a, out=out)
    dt = (time.perf_counter() - t) / 10
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}: {arch}; SGEMM 2048^3 {2 * 2048**3 / dt / 1e9:.0f} "
          f"GFLOP/s", flush=True)
    import custom_impl
    from lab.common.timing import step_times

    for name, batch in (("mlp-deep", 64), ("mlp-deep", 256), ("lenet-mnist", 64), ("cnn-cifar", 256)):
        m = custom_impl.build(name, seed=0)
        x = rng.standard_normal((batch, *m.spec.input_shape)).astype(np.float32)
        y = rng.integers(0, m.spec.num_classes, size=batch)
        print(f"  {name} batch {batch}: {np.median(step_times(m, x, y, 10)) * 1e3:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
