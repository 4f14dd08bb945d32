"""pytest-benchmark suite set-up: the repository root on sys.path and the ``gpu`` skip hook for benchmarks/.

Collectible on CPU-only machines: parameters marked ``gpu`` are skipped with the reason when CuPy, a
CUDA device or a CUDA build of torch is missing.
"""
from __future__ import annotations

import functools
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@functools.lru_cache(maxsize=1)
def _gpu_missing() -> str | None:
    from harness.env import gpu_available

    ok, why = gpu_available()
    if not ok:
        return why
    try:
        import torch
    except Exception as err:
        return f"torch cannot be imported ({err})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    why = _gpu_missing() if gpu_items else None   # checked once: it imports CuPy and torch
    for item in gpu_items:
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=f"gpu benchmark: {why}"))
