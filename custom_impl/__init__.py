"""Our own implementation of the networks in ``modelspec``: NumPy on the CPU, CUDA kernels via CuPy on the GPU.

>>> import custom_impl
>>> model = custom_impl.build("mlp-mnist", device="cpu", seed=0)
>>> model.impl, model.device
('custom', 'cpu')
"""
from __future__ import annotations

import modelspec

from .base import CustomModel

DEVICES = ("cpu", "gpu")

__all__ = ["CustomModel", "DEVICES", "build"]

_GPU_INSTALL = ("install CuPy for your CUDA version from the repository root: "
                "`pip install .[gpu-cuda12]` (CUDA 12) or `pip install .[gpu-cuda13]` (CUDA 13)")


def build(spec, device: str = "cpu", seed: int = 0) -> CustomModel:
    """Build our model for ``spec`` (a ModelSpec, dict, zoo name or .toml/.json path) on ``device``.

    Parameters start from ``spec.init_params(seed)``, so a reference model built with the same seed is
    identical. device "cpu": NumPy; "gpu": our CUDA kernels (needs CuPy and a CUDA device).
    """
    spec = modelspec.load(spec)
    if device == "cpu":
        from .cpu.model import CPUModel
        return CPUModel(spec, seed=seed)
    if device == "gpu":
        return _build_gpu(spec, seed)
    raise ValueError(f"unknown device {device!r}; choose one of {', '.join(repr(d) for d in DEVICES)}")


def _build_gpu(spec, seed: int) -> CustomModel:
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(f"device 'gpu' needs CuPy, which is not importable ({err}); {_GPU_INSTALL}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError when there is no driver / device
        raise RuntimeError(f"device 'gpu': CuPy is installed but finds no usable CUDA device ({err}); "
                           "run on a machine with an NVIDIA GPU and driver, or use device='cpu'") from None
    if count == 0:
        raise RuntimeError("device 'gpu': CuPy is installed but finds no CUDA device; use device='cpu'")
    try:
        from .gpu import model as gpu_model
    except ModuleNotFoundError as err:
        if err.name not in ("custom_impl.gpu.model", "custom_impl.gpu"):
            raise
        raise RuntimeError("device 'gpu': our GPU implementation (custom_impl/gpu/model.py) is not in this "
                           "checkout; update the repository, or use device='cpu'") from None
    return gpu_model.build(spec, seed)
