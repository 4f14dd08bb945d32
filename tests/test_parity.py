"""Custom vs reference on the CPU: logits, loss, every gradient, and all parameters after 20 momentum steps.

Every zoo model, then odd shapes (batch 1, 7, 33; sizes not multiples of 8; conv stride 2, padding 0/1/2,
kernels 1/3/5/7 and 3x5, 13x17 images, odd channel counts; both losses). Tolerances live in
tests/helpers.py with their reasons. The same cases run on the GPU (marker ``gpu``) in both pairings:
custom-gpu vs reference-gpu, and custom-gpu vs custom-cpu.
"""
from __future__ import annotations

import pytest

import modelspec
import helpers
from helpers import compare_models

# Batch per zoo model: the big ones (their CPU train step takes tens of ms) get a small odd batch so the
# 20 steps stay well under a few seconds; the small ones get 33, a batch that is no multiple of a tile.
ZOO_BATCH = {"cnn-cifar": 3, "lenet-mnist": 5, "mlp-deep": 7, "mlp-mnist": 33, "digits-cnn": 33,
             "digits-mlp": 33, "thesis-2-3-1": 33}


from odd_specs import ODD  # noqa: E402


@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_cpu(name):
    compare_models(name, batch=ZOO_BATCH.get(name, 7), device="cpu")


@pytest.mark.parametrize("spec,batch", ODD, ids=[s["name"] for s, _ in ODD])
def test_odd_shapes_cpu(spec, batch):
    compare_models(spec, batch=batch, device="cpu")


def test_no_momentum_and_other_seed_cpu():
    # momentum 0 is plain SGD (no velocity buffer to get wrong); another seed checks init is shared by seed
    compare_models("digits-cnn", batch=7, device="cpu", momentum=0.0, lr=0.05, seed=3)


class _OffByOne:
    """A model whose train step uses a learning rate 1% high or a momentum 0.01 low: the smallest SGD bugs
    the trajectory checks must still catch."""

    def __init__(self, model, lr_scale: float = 1.0, momentum_shift: float = 0.0):
        self._model, self._lr_scale, self._momentum_shift = model, lr_scale, momentum_shift

    def __getattr__(self, name):
        return getattr(self._model, name)

    def train_step(self, x, y, lr, momentum):
        return self._model.train_step(x, y, lr * self._lr_scale, momentum - self._momentum_shift)


@pytest.mark.parametrize("bug", [{"lr_scale": 1.01}, {"momentum_shift": 0.01}], ids=["lr+1%", "momentum-0.01"])
@pytest.mark.parametrize("name", ["mlp-deep", "lenet-mnist"])
def test_trajectory_checks_catch_small_sgd_bugs(monkeypatch, name, bug):
    """The loosest trajectory tolerances (ReLU and max-pool near-ties) still fail a 1% SGD bug."""
    real_build = helpers.build_model

    def build(impl, spec, device="cpu", seed=0):
        model = real_build(impl, spec, device, seed)
        return _OffByOne(model, **bug) if impl == "custom" else model

    monkeypatch.setattr(helpers, "build_model", build)
    with pytest.raises(AssertionError, match="after 20 steps|loss of train step"):
        compare_models(name, batch=ZOO_BATCH[name], device="cpu")


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_gpu_vs_reference_gpu(name):
    compare_models(name, batch=ZOO_BATCH.get(name, 7) * 4 + 1, device="gpu")


@pytest.mark.gpu
@pytest.mark.parametrize("spec,batch", ODD, ids=[s["name"] for s, _ in ODD])
def test_odd_shapes_gpu_vs_reference_gpu(spec, batch):
    compare_models(spec, batch=batch, device="gpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_custom_gpu_vs_custom_cpu(name):
    compare_models(name, batch=ZOO_BATCH.get(name, 7), a=("custom", "gpu"), b=("custom", "cpu"))
