"""Parity rules per precision: the bar a row's error against the float64 oracle must stay under.
(``harness parity``, the check of every variant without timing, is harness/parity_check.py.)

Every row is compared with the float64 oracle (harness/workloads.py). Per precision:

- **fp32**: the strict-FP32 tolerances of workloads.py (LAYER_RTOL, MODEL_RTOL, ...), unchanged.
- **tf32 / bf16**: ``precision_tolerance`` adds the operands' rounding to the FP32 tolerance. TF32 keeps 10
  mantissa bits (unit roundoff u = 2^-11), BF16 7 (u = 2^-8). A product sum with both operands rounded
  is off by sum_k a_k b_k (d_a + d_b), |d| <= u, roughly uniform and independent: its standard deviation
  is sqrt(2/3) u sqrt(sum_k (a_k b_k)^2). For random data the absolute error therefore grows like
  sqrt(K) (K the reduction length) *and so does the output* (sqrt(K) rms terms), so relative to the
  output's scale (the normwise measures of workloads.py) it stays ~u whatever K; what does grow with
  sqrt(K) relative to the output is the FP32 accumulation, which the FP32 tolerance already covers. The
  largest error of many outputs against the largest output: allow 8 u per layer (a margin of ~10 over
  sqrt(2/3) u for a few thousand outputs; PyTorch's BF16 outputs are stored in bfloat16, another u/2).
  A model chains L layers with parameters, whose errors add up roughly independently (sqrt(L)) and feed
  the next layer, and whose ReLUs flip where a pre-activation sits within the error of zero: allow
  48 u sqrt(L). Measured on the H100 (2026-12-06, tests/custom_impl/gpu/test_precision_models.py),
  PyTorch's own errors at these precisions reach 26-28.5 u sqrt(L) in TF32 (lenet-mnist 0.0271,
  cnn-cifar 0.0311, mlp-deep 0.0258, loss and gradients against float64) and 19.7 u sqrt(L) in BF16
  (cnn-cifar 0.172): the gradients behind ReLUs amplify the rounding well past the 16 u sqrt(L) that
  the rounding model alone gives; 48 leaves 1.7x over the worst of them. These bars are wide on purpose
  (bf16: 0.03 per layer); the sharp test is the next one.
- **ours vs PyTorch at the same precision** (``judge``): a row of ours at tf32 / bf16 passes only when its
  error is also at most 2x PyTorch's error at that precision on the same inputs (PyTorch's eager model or
  op, run once untimed), or 2x one unit roundoff u of the precision where PyTorch's error is smaller:
  cuBLAS / cuDNN may run an op in FP32 despite the flags (algorithms without a TF32 variant, small
  problems), and holding ours to 2x an FP32 error would hold a TF32 kernel to FP32. One u is what a
  correctly rounded product sum of random data shows (sqrt(2/3) u, see above); 2x that is the bar then.
  A model row's floor is also the **rounded-operand oracle** (``reference_impl.build(..., dtype="float64",
  operand_rounding=...)``: exact sums of operands rounded to the precision): where a pooling window or a
  ReLU sits within the rounding of a tie, rounding alone routes a gradient elsewhere, an error far above
  u that a correct implementation shows as well (reference_impl/rounding.py has the measurements: on
  digits-cnn the oracle and our TF32 kernels both show 0.0555, PyTorch, FP32 in cuDNN there, 4e-4). A
  model row of ours passes at 2x that oracle's error even where it is above the precision's bar.
"""
from __future__ import annotations

import math

UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8}   # of a product's operands
LAYER_ROUNDING_FACTOR = 8    # x u per layer row (module docstring)
MODEL_ROUNDING_FACTOR = 48   # x u sqrt(L) per model row (PyTorch measured up to 28.5: module docstring)
TORCH_FACTOR = 2             # ours <= 2x PyTorch's error at the same precision (or 2 u)


def precision_tolerance(precision: str, fp32_tol: float, layers: int = 1, model: bool = False) -> float:
    """The parity bar of a row at ``precision``: its FP32 tolerance ``fp32_tol`` plus, for tf32 / bf16, the
    operands' rounding: LAYER_ROUNDING_FACTOR u for a layer row, MODEL_ROUNDING_FACTOR u sqrt(layers) for
    a model row with ``layers`` layers with parameters (module docstring).

    >>> precision_tolerance("fp32", 1e-4)
    0.0001
    >>> round(precision_tolerance("tf32", 1e-4), 6)      # 1e-4 + 8 * 2^-11
    0.004006
    """
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(UNIT_ROUNDOFF)}")
    if precision == "fp32":
        return fp32_tol
    u = UNIT_ROUNDOFF[precision]
    if model:
        return fp32_tol + MODEL_ROUNDING_FACTOR * u * math.sqrt(max(1, layers))
    return fp32_tol + LAYER_ROUNDING_FACTOR * u


def torch_bar(precision: str, torch_err: float, rounding_err: float | None = None) -> float:
    """The most a row of ours at ``precision`` may be off when PyTorch's error there is ``torch_err`` and
    the rounded-operand oracle's ``rounding_err`` (None for a layer row): TORCH_FACTOR x the largest of
    the two and u (module docstring)."""
    floor = max(float(torch_err), UNIT_ROUNDOFF[precision], float(rounding_err or 0.0))
    return TORCH_FACTOR * floor


def judge(err: float, tol: float, precision: str = "fp32", torch_err: float | None = None,
          rounding_err: float | None = None) -> tuple[bool, float, str]:
    """(ok, the bar applied, why it failed or "") for a row with error ``err`` against tolerance ``tol``;
    ``torch_err`` (rows of ours at tf32 / bf16): PyTorch's error on the same inputs at that precision;
    ``rounding_err`` (model rows of ours at tf32 / bf16): the rounded-operand oracle's error there. The
    bar is ``tol``, or 2x the largest of PyTorch's error, the oracle's and u where that is lower; and at
    least 2x the oracle's, which a correct implementation shows, even where that is above ``tol``.

    >>> judge(3e-3, 5e-2, "bf16", torch_err=1e-3)[0]   # within 2x max(PyTorch's error, 2^-8)
    True
    >>> judge(2e-2, 5e-2, "bf16", torch_err=1e-3)[0]   # under the bar, but 20x PyTorch's error
    False
    >>> judge(5e-2, 3e-2, "tf32", torch_err=4e-4, rounding_err=5.5e-2)[0]   # PyTorch ran FP32 there
    True
    """
    bar = tol
    if torch_err is not None and precision != "fp32":
        if not math.isfinite(torch_err) or (rounding_err is not None and not math.isfinite(rounding_err)):
            return False, bar, f"PyTorch's {precision} error could not be measured ({torch_err}, {rounding_err})"
        bar = min(tol, torch_bar(precision, torch_err, rounding_err))
        if rounding_err is not None:
            bar = max(bar, TORCH_FACTOR * rounding_err)
    if err is None or not err <= bar:
        if bar != tol:
            return False, bar, (f"rel err {err:.3g} > {bar:.3g} = {TORCH_FACTOR}x max(PyTorch's {precision} error "
                                f"{torch_err:.3g}, the rounded-operand oracle's "
                                f"{'-' if rounding_err is None else f'{rounding_err:.3g}'}, "
                                f"u = {UNIT_ROUNDOFF[precision]:.3g})")
        return False, bar, f"rel err {err:.3g} > {tol:g}"
    return True, bar, ""
