"""The rounded-operand oracle (reference_impl/rounding.py): float64 networks whose conv and dense products
read operands rounded to TF32 / BF16.

The rounding is checked bit for bit on values whose rounding is known; the networks against the exact
float64 oracle: rounding operands moves the results (a model whose products all read rounded operands is
not float64-exact), by about the precision's unit roundoff u on a model without ReLUs or pooling where
nothing can flip, and the bf16 oracle further than the tf32 one there (u: 2^-11 TF32, 2^-8 BF16).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_impl
from reference_impl.rounding import rounded


def test_rounded_keeps_the_precisions_mantissa():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal(1001) * 10.0 ** rng.integers(-8, 8, 1001))
    for precision, bits in (("tf32", 10), ("bf16", 7)):
        r = rounded(x, precision)
        assert r.dtype == torch.float64
        frac, _ = np.frexp(r.numpy())          # r = frac * 2^e, 0.5 <= |frac| < 1: bits + 1 significant bits
        assert np.all(frac * 2.0 ** (bits + 1) == np.round(frac * 2.0 ** (bits + 1)))
        # the nearest such value: within half a unit in the last place of the precision
        assert np.all(np.abs(r.numpy() - x.numpy()) <= 2.0 ** -(bits + 1) * np.abs(x.numpy()) * (1 + 1e-6))
    # ties go away from zero, as the GPU's cvt.rna; values on the grid stay
    t = torch.tensor([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 2 ** -9, 3.0], dtype=torch.float64)
    assert rounded(t, "tf32").tolist() == [1 + 2 ** -10, -(1 + 2 ** -10), 1 + 2 ** -9, 3.0]


def _error(model, exact, x, y):
    loss, grads = model.loss_and_grads(x, y)
    want_loss, want = exact.loss_and_grads(x, y)
    worst = abs(float(loss) - float(want_loss)) / abs(float(want_loss))
    for k in want:
        a, b = np.asarray(model.to_numpy(grads[k])), np.asarray(exact.to_numpy(want[k]))
        worst = max(worst, float(np.linalg.norm(a - b) / np.linalg.norm(b)))
    return worst


def test_rounded_operand_networks_move_by_about_u_where_nothing_flips():
    # digits-mlp: dense + tanh, no ReLU or pooling: errors stay of the order of u
    rng = np.random.default_rng(5)
    x = rng.standard_normal((33, 64)).astype(np.float32)
    y = rng.integers(0, 10, 33)
    exact = reference_impl.build("digits-mlp", "cpu", seed=1, dtype="float64")
    errs = {}
    for precision in ("tf32", "bf16"):
        m = reference_impl.build("digits-mlp", "cpu", seed=1, dtype="float64", operand_rounding=precision)
        assert m.operand_rounding == precision
        errs[precision] = _error(m, exact, x, y)
    u = {"tf32": 2.0 ** -11, "bf16": 2.0 ** -8}
    for precision, err in errs.items():
        # > 0.01 u: the rounding reached the products; < 4 u: a normwise error of rounded operands
        # (sqrt(2/3) u for a product sum of random data, harness/parity.py) with margin
        assert 0.01 * u[precision] < err < 4 * u[precision], (precision, err)
    assert errs["bf16"] > 4 * errs["tf32"]


def test_rounded_conv_network_and_bad_options():
    m = reference_impl.build("digits-cnn", "cpu", seed=0, dtype="float64", operand_rounding="tf32")
    exact = reference_impl.build("digits-cnn", "cpu", seed=0, dtype="float64")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 9)
    assert 0 < _error(m, exact, x, y) < 1
    assert exact.operand_rounding is None
    with pytest.raises(ValueError, match="dtype='float64'"):
        reference_impl.build("digits-cnn", "cpu", operand_rounding="tf32")          # float32: not an oracle
    with pytest.raises(ValueError, match="operand_rounding='fp16'"):
        reference_impl.build("digits-cnn", "cpu", dtype="float64", operand_rounding="fp16")
