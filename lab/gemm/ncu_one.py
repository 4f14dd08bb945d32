"""One GEMM for Nsight Compute: ``ncu -k regex:gemm -s 1 -c 1 ... python3 lab/gemm/ncu_one.py [M N K CONFIG]``.

Runs op(a) @ op(b) (dense forward layout, X @ W^T) three times with the given tile config (default: the
one choose_config picks); ncu then reports stall reasons, issue efficiency and shared-memory traffic of
one launch.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root


def main(argv) -> int:
    import cupy
    import numpy as np

    from custom_impl.gpu.gemm import gemm

    M, N, K = (int(v) for v in argv[:3]) if len(argv) >= 3 else (4096, 4096, 4096)
    config = argv[3] if len(argv) >= 4 else None
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((M, K), dtype=np.float32))
    W = cupy.asarray(rng.standard_normal((N, K), dtype=np.float32))
    y = cupy.empty((M, N), np.float32)
    for _ in range(3):
        gemm(x, W, y, trans_b=True, config=config, splits=None if config is None else 1)
    cupy.cuda.Device().synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
