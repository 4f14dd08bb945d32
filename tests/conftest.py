"""Shared pytest set-up: the ``gpu`` marker's skip hook, the skip summary, and the repository root on sys.path.

Tests marked ``@pytest.mark.gpu`` need CuPy, a CUDA device and a CUDA build of PyTorch; without any of
these they are skipped with the reason. Nothing else is ever skipped here.

The summary at the end of a run (``pytest_terminal_summary``) collapses the GPU tests' skips into one
line per reason ("743 gpu tests skipped: CuPy cannot be imported (...)") and lists every other skip on
its own line with its reason, so a skip that is not about the GPU is never lost among them. With ``-rs``
or ``-ra`` pytest lists every skip itself and this summary stays silent.
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
    """None when GPU tests can run, otherwise why not (checked once per test run)."""
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
            item.add_marker(pytest.mark.skip(reason=f"{GPU_SKIP_PREFIX}{reason}"))


GPU_SKIP_PREFIX = "gpu test: "


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def skip_summary(reports) -> list[str]:
    """The summary lines for skipped test reports: GPU-test skips counted per reason, every other skip
    named with its reason."""
    gpu: dict[str, int] = {}
    other: list[str] = []
    for report in reports:
        reason = _skip_reason(report)
        if reason.startswith(GPU_SKIP_PREFIX):
            why = reason[len(GPU_SKIP_PREFIX):]
            gpu[why] = gpu.get(why, 0) + 1
        else:
            other.append(f"SKIPPED {report.nodeid}: {reason}")
    lines = [f"{n} gpu test{'s' if n != 1 else ''} skipped: {why}" for why, n in gpu.items()]
    return lines + other


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    chars = config.getoption("reportchars", "") or ""
    if "s" in chars or "a" in chars or "A" in chars:
        return      # pytest lists every skip itself
    lines = skip_summary(terminalreporter.stats.get("skipped", []))
    for line in lines:
        terminalreporter.write_line(line)
