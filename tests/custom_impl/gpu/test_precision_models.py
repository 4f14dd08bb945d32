"""Every zoo model built in tf32 and bf16 on the GPU: ours and PyTorch at the same precision, both against
the float64 oracle, with the harness's own parity rules (harness/parity.py, reasons there):

- each side's error must stay under the precision's bar (``precision_tolerance``: the FP32 tolerance plus
  48 u sqrt(L) for a model with L layers with parameters), and
- ours must also stay within 2x max(PyTorch's error, the rounded-operand oracle's error, u) (``judge``), u
  the unit roundoff of the precision.

And training: the digits models reach >= 95% test accuracy in every precision, ours and PyTorch's
(the settings of tests/test_digits.py).
"""
from __future__ import annotations

import pytest

import modelspec

pytestmark = pytest.mark.gpu

BATCH = 33   # odd: no tile or vector width divides it
SETTINGS = {"seed": 0, "lr": 0.01, "momentum": 0.9}
PRECISIONS = ("tf32", "bf16")


def _job(name, phase, impl, variant, precision):
    from harness.suites import Job

    spec = modelspec.load(name)
    return Job("model", name, BATCH, phase, impl, variant, "gpu", (("spec", name), ("spec_hash", spec.digest())),
               precision)


@pytest.fixture(scope="module")
def cases():
    from harness.workloads import ModelCase, set_strict_fp32

    set_strict_fp32()
    return {name: ModelCase(name, BATCH, "gpu", SETTINGS) for name in modelspec.zoo_names()}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("phase", ["inference", "forward_backward", "train_step"])
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_model_against_float64_and_pytorch(cases, name, phase, precision):
    from harness.parity import judge

    case = cases[name]
    variant = "cuda" if phase == "forward_backward" else "cuda-graph"
    ours = _job(name, phase, "custom", variant, precision)
    _, err, tol = case.parity(ours)
    torch_err = case.torch_error(ours)
    assert torch_err is not None and torch_err <= tol, (
        f"{name} {phase} {precision}: PyTorch's error {torch_err:.3g} is over the bar {tol:.3g} itself")
    ok, bar, why = judge(err, tol, precision, torch_err, case.rounding_error(ours))
    assert ok, f"{name} {phase} {precision}: ours {why} (PyTorch {torch_err:.3g}, bar {tol:.3g})"
    # the precision really changed what ran: a model with dense layers is no longer FP32-exact
    has_dense = any(layer.type == "dense" for layer in case.spec.layers)
    if has_dense and phase == "inference":
        fp32 = case.parity(_job(name, phase, "custom", variant, "fp32"))[1]
        assert err > fp32, f"{name}: {precision} error {err:.3g} is not above the FP32 error {fp32:.3g}"


def test_model_precision_attribute_and_reference_flags():
    import torch

    import custom_impl
    import reference_impl

    for p in ("fp32",) + PRECISIONS:
        assert custom_impl.build("mlp-mnist", device="gpu", precision=p).precision == p
        ref = reference_impl.build("mlp-mnist", device="gpu", precision=p)
        assert ref.precision == p
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    seen = []
    ref = reference_impl.build("mlp-mnist", device="gpu", precision="tf32")
    ref.net[0].register_forward_hook(lambda *a: seen.append(torch.backends.cuda.matmul.allow_tf32))
    ref.forward(torch.randn(3, 784).numpy())
    assert seen == [True] and (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


DIGITS = {   # name -> (image input?, epochs, batch size, lr), momentum 0.9 (tests/test_digits.py)
    "digits-mlp": (False, 20, 32, 0.05),
    "digits-cnn": (True, 30, 16, 0.05),
}


@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_train_in_every_precision(name, precision, impl):
    import custom_impl
    import reference_impl
    from harness.data import accuracy, load_digits_split, train

    image, epochs, batch, lr = DIGITS[name]
    xtr, ytr, xte, yte = load_digits_split(seed=0, image=image)
    build = custom_impl.build if impl == "custom" else reference_impl.build
    model = build(name, device="gpu", seed=0, precision=precision)
    losses = train(model, xtr, ytr, epochs=epochs, batch_size=batch, lr=lr, momentum=0.9, seed=0)
    assert losses[-1] < losses[0], f"{impl} {name} {precision}: the loss did not fall"
    acc = accuracy(model, xte, yte)
    assert acc >= 0.95, f"{impl} {name} {precision}: test accuracy {acc:.2%} < 95%"
