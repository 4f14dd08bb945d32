"""Our own implementation of the networks in ``modelspec``: NumPy on the CPU, CUDA kernels via CuPy on the GPU.

Two entry points:
- ``build(spec, device, seed, precision="fp32", use_graph=None, fuse_pool=True)``: a model with the contract of
  ``custom_impl.base.CustomModel`` (the same as ``reference_impl``'s models).
- ``layer_ops(device)``: the module of layer functions of a device (``custom_impl.cpu.ops`` or
  ``custom_impl.gpu.ops``), one signature per op on both devices.

>>> import custom_impl
>>> model = custom_impl.build("mlp-mnist", device="cpu", seed=0)
>>> model.impl, model.device
('custom', 'cpu')
>>> custom_impl.layer_ops("cpu").__name__
'custom_impl.cpu.ops'
"""
from __future__ import annotations

import numpy as np

import modelspec

from .base import CustomModel

DEVICES = ("cpu", "gpu")
# fp32: strict FP32 everywhere; tf32 / bf16 (GPU only): dense and conv products on the tensor cores with
# TF32 / BF16 operands and FP32 accumulation, FP32 storage, loss and SGD (docs/model-contract.md)
PRECISIONS = ("fp32", "tf32", "bf16")
DEVICE_PRECISIONS = {"cpu": ("fp32",), "gpu": PRECISIONS}

__all__ = ["CustomModel", "DEVICES", "DEVICE_PRECISIONS", "PRECISIONS", "build", "check_precision", "layer_ops"]

_GPU_INSTALL = ("install CuPy for your CUDA version from the repository root: "
                "`pip install .[gpu-cuda12]` (CUDA 12) or `pip install .[gpu-cuda13]` (CUDA 13)")


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(repr(d) for d in DEVICES)}")


def check_precision(precision, device: str) -> None:
    """Raise ValueError unless ``precision`` is one of PRECISIONS and runs on ``device``.

    >>> check_precision("tf32", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision 'tf32' needs device 'gpu' (tensor cores); device 'cpu' runs 'fp32' only: use precision='fp32', or device='gpu'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         f"{', '.join(repr(p) for p in PRECISIONS)}")
    allowed = DEVICE_PRECISIONS[device]
    if precision not in allowed:
        raise ValueError(f"precision {precision!r} needs device 'gpu' (tensor cores); device {device!r} runs "
                         f"{', '.join(repr(p) for p in allowed)} only: use precision='fp32', or device='gpu'")


def build(spec, device: str = "cpu", seed: int = 0, precision: str = "fp32", use_graph: bool | None = None,
          fuse_pool: bool = True, fuse_mlp: bool = True) -> CustomModel:
    """Build our model for ``spec`` (a ModelSpec, dict, zoo name or .toml/.json path) on ``device``.

    Parameters start from ``spec.init_params(seed)``, so a reference model built with the same seed is
    identical. device "cpu": NumPy; "gpu": our CUDA kernels (needs CuPy and a CUDA device).

    ``precision``: "fp32" (strict FP32, the default and the only one on the CPU), "tf32" or "bf16" (GPU:
    dense and conv products on the tensor cores with TF32 / BF16 operands, FP32 accumulation, FP32
    parameters, activations, loss and SGD); the model's ``precision`` attribute says which. Anything else
    raises ValueError naming the allowed values.

    GPU options (a ValueError for device "cpu", whose model has neither choice):
    - ``use_graph``: replay train steps and inference as CUDA graphs (True), or launch every kernel
      eagerly (False); None: the environment variable ``CUSTOM_GPU_GRAPH`` ("0" turns graphs off), else True.
    - ``fuse_pool``: run a relu followed by maxpool2d as one fused pooling step (the CPU model always does).
    - ``fuse_mlp``: train an MLP small enough for it (the thesis's 2-3-1 network: dense layers of at most 16
      units, ``custom_impl.gpu.mlp_fused``) with the two-launch fused train step (True), or layer by layer.

    >>> build("mlp-mnist", device="cpu", use_graph=False)
    Traceback (most recent call last):
    ...
    ValueError: custom_impl.build: use_graph=False: GPU options (CUDA graphs, pooling and MLP fusion); device 'cpu' takes none (its model always fuses relu + maxpool2d): drop use_graph, or use device='gpu'
    """
    spec = modelspec.load(spec)
    _check_device(device)
    check_precision(precision, device)
    if device == "cpu":
        given = ([f"use_graph={use_graph!r}"] if use_graph is not None else []) + \
                ([f"fuse_pool={fuse_pool!r}"] if fuse_pool is not True else []) + \
                ([f"fuse_mlp={fuse_mlp!r}"] if fuse_mlp is not True else [])
        if given:
            raise ValueError(f"custom_impl.build: {', '.join(given)}: GPU options (CUDA graphs, pooling and MLP "
                             "fusion); device 'cpu' takes none (its model always fuses relu + maxpool2d): drop "
                             f"{' and '.join(g.split('=')[0] for g in given)}, or use device='gpu'")
        from .cpu.model import CPUModel
        return CPUModel(spec, seed=seed)
    return _build_gpu(spec, seed, precision=precision, use_graph=use_graph, fuse_pool=fuse_pool, fuse_mlp=fuse_mlp)


def layer_ops(device: str):
    """The layer functions of ``device``: the module ``custom_impl.cpu.ops`` ("cpu", NumPy arrays) or
    ``custom_impl.gpu.ops`` ("gpu", CuPy arrays), which export the same functions with the same signatures
    (dense_forward, dense_backward, dense_backward_data, conv2d_forward, conv2d_backward,
    conv2d_backward_data, conv2d_workspace_size, maxpool2d_forward, maxpool2d_backward, avgpool2d_forward,
    avgpool2d_backward, activation_forward, activation_backward; see ``custom_impl/cpu/ops.py``).

    >>> ops = layer_ops("cpu")
    >>> ops.dense_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)).shape
    (2, 4)
    """
    _check_device(device)
    if device == "cpu":
        from .cpu import ops
    else:
        from .gpu import ops
    return ops


def _build_gpu(spec, seed: int, **options) -> CustomModel:
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
    return gpu_model.build(spec, seed, **options)
