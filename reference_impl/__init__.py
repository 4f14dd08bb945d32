"""The reference implementation: the networks of ``modelspec`` as torch.nn modules (cuBLAS/cuDNN on the GPU),
or, with ``framework="jax"``, as jitted JAX functions (XLA, which calls cuBLAS/cuDNN on the GPU).

Precision per model (``build(..., precision=...)``):
- "fp32" (the default): strict FP32: TF32 switched off for matmul and cuDNN, float32 matmul precision
  "highest", set at build time for the whole process (what every fp32 model relies on).
- "tf32" (GPU): TF32 allowed for cuBLAS matmuls and cuDNN convolutions (``allow_tf32`` on both, matmul
  precision "high"), set only while one of the model's methods runs and restored after, so fp32 models in
  the same process stay strict.
- "bf16" (GPU): mixed precision as ``torch.autocast(device_type="cuda", dtype=torch.bfloat16)`` around the
  forward pass and the loss (BF16 operands for linear and conv, FP32 parameters, loss and SGD; the
  backward runs in the dtypes autocast chose, outside the autocast region, as PyTorch recommends), with
  TF32 off for what stays in FP32.
``precision_flags()`` reports the flags as they are set now and ``precision_flags(p)`` as they are set
inside a model of precision p (read back inside ``precision_scope(p)``), for the harness to record.
JAX (``framework="jax"``) runs "fp32" only: every matrix product and convolution at
``lax.Precision.HIGHEST``.

>>> import reference_impl
>>> model = reference_impl.build("mlp-mnist", device="cpu", seed=0)
>>> model.impl, model.device
('reference', 'cpu')
"""
from __future__ import annotations

import sys

import modelspec
import torch

from .model import AUTOCAST_DTYPE, DTYPES, PRECISIONS, ReferenceModel, Unsupported, precision_scope

DEVICES = ("cpu", "gpu")
FRAMEWORKS = ("torch", "jax")
JAX_INSTALL = 'pip install -e ".[jax]"'

__all__ = ["AUTOCAST_DTYPE", "DEVICES", "DTYPES", "FRAMEWORKS", "JAX_INSTALL", "PRECISIONS", "ReferenceModel",
           "Unsupported", "build", "jax_unavailable", "precision_flags", "precision_scope"]


def _set_precision(torch_device: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch_device == "cuda":
        torch.backends.cudnn.benchmark = True


def precision_flags(precision: str | None = None) -> dict:
    """The precision-relevant torch flags as they are set now (read back, not assumed); with a precision
    ("fp32", "tf32", "bf16"), as they are set inside ``precision_scope(precision)`` (what a model of that
    precision runs under), plus ``autocast`` ("cuda bfloat16" for bf16, else "off")."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
        with precision_scope(precision):
            flags = precision_flags()
        flags["autocast"] = f"cuda {str(AUTOCAST_DTYPE[precision]).removeprefix('torch.')}" \
            if precision in AUTOCAST_DTYPE else "off"
        return flags
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


def build(spec, device: str = "cpu", seed: int = 0, dtype: str = "float32", framework: str = "torch",
          precision: str = "fp32", operand_rounding: str | None = None):
    """Build the reference model for ``spec`` (ModelSpec, dict, zoo name or .toml/.json path) on ``device``.

    Parameters come from ``spec.init_params(seed)``, identical to ``custom_impl.build(spec, seed=seed)``.
    framework "torch" (default): a ``ReferenceModel``; device "cpu": PyTorch on the CPU; "gpu": PyTorch on
    CUDA (cuBLAS/cuDNN), TF32 off, cudnn.benchmark on. dtype "float32" (the reference) or "float64" (an
    oracle: the same network and parameters in float64; every method then takes and returns float64).
    ``precision``: "fp32" (default), "tf32" or "bf16" (GPU only, float32 torch models only; module
    docstring); the model's ``precision`` attribute says which.
    ``operand_rounding``: "tf32" or "bf16" with dtype "float64" (framework "torch"): the rounded-operand
    oracle, whose conv and dense products read operands rounded to that precision and sum exactly
    (``reference_impl/rounding.py``): the error a correct tensor-core implementation is expected to show.
    framework "jax": a ``jax_model.JaxModel``, the same contract with every phase one ``jax.jit``-compiled
    XLA function (float32 and precision "fp32" only; needs JAX: ``pip install -e ".[jax]"``).

    >>> build("mlp-mnist", dtype="float64").get_params()["0.weight"].dtype
    dtype('float64')
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of "
                         f"{', '.join(repr(f) for f in FRAMEWORKS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(repr(d) for d in DTYPES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    if precision != "fp32" and dtype != "float32":
        raise ValueError(f"precision {precision!r} is a mode of float32 models; dtype={dtype!r} takes "
                         "precision='fp32' (the float64 oracle is exact float64)")
    if framework == "jax" and dtype != "float32":
        raise ValueError(f"framework 'jax' computes in float32 only, got dtype {dtype!r}; the float64 oracle is "
                         "the PyTorch model: build(spec, device, dtype='float64') with framework='torch'")
    if framework == "jax" and precision != "fp32":
        raise ValueError(f"framework 'jax' runs precision 'fp32' only (lax.Precision.HIGHEST), got {precision!r}; "
                         "tf32 / bf16 references are the PyTorch model: framework='torch'")
    if operand_rounding is not None:
        from .rounding import OPERAND_ROUNDINGS

        if operand_rounding not in OPERAND_ROUNDINGS or dtype != "float64" or framework != "torch":
            raise ValueError(f"operand_rounding={operand_rounding!r}: the rounded-operand oracle takes one of "
                             f"{', '.join(map(repr, OPERAND_ROUNDINGS))} with dtype='float64' and framework='torch' "
                             f"(got dtype={dtype!r}, framework={framework!r})")
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
    if precision != "fp32" and device != "gpu":
        raise ValueError(f"precision {precision!r} needs device 'gpu' (tensor cores); device {device!r} runs "
                         "'fp32' only: use precision='fp32', or device='gpu'")
    _set_precision(torch_device)
    return ReferenceModel(spec, device=device, torch_device=torch_device, seed=seed, dtype=dtype,
                          precision=precision, operand_rounding=operand_rounding)
