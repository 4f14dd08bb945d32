"""The reference implementation: the networks of ``modelspec`` as torch.nn modules (cuBLAS/cuDNN on the GPU).

Strict FP32: TF32 is switched off for matmul and cuDNN and the float32 matmul precision is "highest";
``precision_flags()`` reports the flags as they are actually set, for the harness to record.

>>> import reference_impl
>>> model = reference_impl.build("mlp-mnist", device="cpu", seed=0)
>>> model.impl, model.device
('reference', 'cpu')
"""
from __future__ import annotations

import modelspec
import torch

from .model import DTYPES, ReferenceModel, Unsupported

DEVICES = ("cpu", "gpu")

__all__ = ["DEVICES", "DTYPES", "ReferenceModel", "Unsupported", "build", "precision_flags"]


def _set_precision(torch_device: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch_device == "cuda":
        torch.backends.cudnn.benchmark = True


def precision_flags() -> dict:
    """The precision-relevant torch flags as they are set now (read back, not assumed)."""
    flags = {
        "torch.backends.cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "torch.backends.cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch.backends.cudnn.benchmark": bool(torch.backends.cudnn.benchmark),
        "torch.backends.cudnn.deterministic": bool(torch.backends.cudnn.deterministic),
    }
    # torch >= 2.9 also has the fp32_precision API; record it where it exists.
    for name, obj in (("torch.backends.cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
                      ("torch.backends.cudnn.fp32_precision", torch.backends.cudnn)):
        value = getattr(obj, "fp32_precision", None)
        if value is not None:
            flags[name] = str(value)
    return flags


def build(spec, device: str = "cpu", seed: int = 0, dtype: str = "float32") -> ReferenceModel:
    """Build the PyTorch model for ``spec`` (ModelSpec, dict, zoo name or .toml/.json path) on ``device``.

    Parameters come from ``spec.init_params(seed)``, identical to ``custom_impl.build(spec, seed=seed)``.
    device "cpu": PyTorch on the CPU; "gpu": PyTorch on CUDA (cuBLAS/cuDNN), TF32 off, cudnn.benchmark on.
    dtype "float32" (the reference) or "float64" (an oracle: the same network and parameters in float64;
    every method then takes and returns float64).

    >>> build("mlp-mnist", dtype="float64").get_params()["0.weight"].dtype
    dtype('float64')
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(repr(d) for d in DTYPES)}")
    spec = modelspec.load(spec)
    if device == "cpu":
        torch_device = "cpu"
    elif device == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device 'gpu': this torch ({torch.__version__}) sees no CUDA device "
                               f"(torch.version.cuda = {torch.version.cuda}); install a CUDA build of torch on a "
                               "machine with an NVIDIA GPU, or use device='cpu'")
        torch_device = "cuda"
    else:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(repr(d) for d in DEVICES)}")
    _set_precision(torch_device)
    return ReferenceModel(spec, device=device, torch_device=torch_device, seed=seed, dtype=dtype)
