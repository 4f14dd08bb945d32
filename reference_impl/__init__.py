"""The reference implementation: the networks of ``modelspec`` as torch.nn modules (cuBLAS/cuDNN on the GPU),
or, with ``framework="jax"``, as jitted JAX functions (XLA, which calls cuBLAS/cuDNN on the GPU).

Strict FP32: TF32 is switched off for matmul and cuDNN and the float32 matmul precision is "highest";
JAX runs every matrix product and convolution at ``lax.Precision.HIGHEST``. ``precision_flags()`` reports
the flags as they are actually set, for the harness to record.

>>> import reference_impl
>>> model = reference_impl.build("mlp-mnist", device="cpu", seed=0)
>>> model.impl, model.device
('reference', 'cpu')
"""
from __future__ import annotations

import sys

import modelspec
import torch

from .model import DTYPES, ReferenceModel, Unsupported

DEVICES = ("cpu", "gpu")
FRAMEWORKS = ("torch", "jax")
JAX_INSTALL = 'pip install -e ".[jax]"'

__all__ = ["DEVICES", "DTYPES", "FRAMEWORKS", "JAX_INSTALL", "ReferenceModel", "Unsupported", "build",
           "jax_unavailable", "precision_flags"]


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
    jax_model = sys.modules.get(f"{__name__}.jax_model")
    if jax_model is not None:   # JAX's settings once a JAX model was built in this process
        flags.update({f"jax: {k}": v for k, v in jax_model.precision_flags().items()})
    return flags


def jax_unavailable(device: str = "cpu") -> str | None:
    """None when ``build(..., framework="jax")`` can run on ``device``, else why not, with the fix.

    Importing JAX here sets up how it shares the GPU (``reference_impl/jax_model.py``); on the GPU this
    starts JAX's CUDA backend.

    >>> jax_unavailable("cpu") is None or "pip install" in jax_unavailable("cpu")
    True
    """
    try:
        from . import jax_model
    except ImportError as err:
        return (f"framework 'jax': JAX is not installed ({err}); install it from the repository root: "
                f"{JAX_INSTALL} (on a GPU machine also JAX's CUDA plugin, e.g. `pip install -U \"jax[cuda13]\"`)")
    try:
        jax_model.device_of(device)
    except RuntimeError as err:
        return str(err)
    return None


def build(spec, device: str = "cpu", seed: int = 0, dtype: str = "float32", framework: str = "torch"):
    """Build the reference model for ``spec`` (ModelSpec, dict, zoo name or .toml/.json path) on ``device``.

    Parameters come from ``spec.init_params(seed)``, identical to ``custom_impl.build(spec, seed=seed)``.
    framework "torch" (default): a ``ReferenceModel``; device "cpu": PyTorch on the CPU; "gpu": PyTorch on
    CUDA (cuBLAS/cuDNN), TF32 off, cudnn.benchmark on. dtype "float32" (the reference) or "float64" (an
    oracle: the same network and parameters in float64; every method then takes and returns float64).
    framework "jax": a ``jax_model.JaxModel``, the same contract with every phase one ``jax.jit``-compiled
    XLA function (float32 only; needs JAX: ``pip install -e ".[jax]"``).

    >>> build("mlp-mnist", dtype="float64").get_params()["0.weight"].dtype
    dtype('float64')
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of "
                         f"{', '.join(repr(f) for f in FRAMEWORKS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(repr(d) for d in DTYPES)}")
    if framework == "jax" and dtype != "float32":
        raise ValueError(f"framework 'jax' computes in float32 only, got dtype {dtype!r}; the float64 oracle is "
                         "the PyTorch model: build(spec, device, dtype='float64') with framework='torch'")
    spec = modelspec.load(spec)
    if framework == "jax":
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; choose one of {', '.join(repr(d) for d in DEVICES)}")
        why = jax_unavailable(device)
        if why is not None:
            raise RuntimeError(why)
        from . import jax_model

        return jax_model.build(spec, device, seed)
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
