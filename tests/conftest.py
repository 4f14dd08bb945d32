"""Shared pytest set-up: the ``gpu`` marker's skip hook and the repository root on sys.path.

Tests marked ``@pytest.mark.gpu`` need CuPy, a CUDA device and a CUDA build of PyTorch; without any of
these they are skipped with the reason. Nothing else is ever skipped here.
"""
from __future__ import annotations

import functools
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
for _path in (ROOT, TESTS):  # the checkout without installing (the GPU machine has no pip); tests/helpers.py
    if _path not in sys.path:
        sys.path.insert(0, _path)


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when GPU tests can run, otherwise why not (checked once per session)."""
    try:
        import cupy
    except Exception as err:  # ImportError, or a broken CUDA install raising something else on import
        return f"CuPy cannot be imported ({type(err).__name__}: {err})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return f"CuPy finds no CUDA runtime/device ({type(err).__name__}: {err})"
    if count < 1:
        return "no CUDA device visible to CuPy"
    try:
        import torch
    except Exception as err:
        return f"torch cannot be imported ({type(err).__name__}: {err})"
    if not torch.cuda.is_available():
        return f"torch.cuda is unavailable (torch {torch.__version__} is a CPU build or sees no device)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    checked = False
    for item in items:
        if item.get_closest_marker("gpu") is None:
            continue
        if not checked:
            reason = gpu_unavailable_reason()
            checked = True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))
