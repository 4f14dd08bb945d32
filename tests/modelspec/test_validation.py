"""modelspec validation: content digests, size limits, float32 learning rates, parameter dtypes, names."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import modelspec
from modelspec import ModelSpec, SpecError
from modelspec import spec as spec_module

MLP = {"name": "mlp", "input_shape": [7], "num_classes": 3, "loss": "softmax_cross_entropy",
       "layers": [{"type": "dense", "units": 5}, {"type": "relu"}, {"type": "dense", "units": 3}]}


def with_units(units, name="mlp"):
    d = copy.deepcopy(MLP)
    d["name"], d["layers"][0]["units"] = name, units
    return d


def test_digest_follows_content_not_name():
    a = ModelSpec.from_dict(with_units(5))
    assert a.digest() == ModelSpec.from_dict(with_units(5)).digest()
    assert a.digest() != ModelSpec.from_dict(with_units(6)).digest()       # same name, other layers
    assert len(a.digest()) == 12 and int(a.digest(), 16) >= 0
    assert modelspec.load("mlp-mnist").digest() == modelspec.load("mlp-mnist").digest()


def test_units_beyond_the_limit_refused_with_the_size_needed():
    with pytest.raises(SpecError, match=r"parameters need .*GiB .*more than the limit of 8 GiB"):
        ModelSpec.from_dict(with_units(10**12))


def test_size_limit_is_configurable(monkeypatch):
    # 7*5 + 5 + 5*3 + 3 = 58 parameters = 232 bytes
    monkeypatch.setattr(spec_module, "MAX_PARAM_BYTES", 200)
    with pytest.raises(SpecError, match=r"232 bytes"):
        ModelSpec.from_dict(MLP)
    monkeypatch.setenv("MODELSPEC_MAX_PARAM_BYTES", "232")
    assert ModelSpec.from_dict(MLP).num_params() == 58
    monkeypatch.setenv("MODELSPEC_MAX_PARAM_BYTES", "lots")
    with pytest.raises(SpecError, match="MODELSPEC_MAX_PARAM_BYTES"):
        ModelSpec.from_dict(MLP)


@pytest.mark.parametrize("lr,momentum,needle", [
    (1e300, 0.9, "does not fit in float32"), (0.1, 1e39, "does not fit in float32"),
    (1e-50, 0.0, "rounds to 0 in float32"), (float("nan"), 0.0, "finite"), (0.1, float("inf"), "finite"),
    (-0.1, 0.0, ">= 0"), (True, 0.0, "finite number"),
])
def test_check_lr_refuses_values_float32_cannot_hold(lr, momentum, needle):
    with pytest.raises(ValueError, match=needle):
        ModelSpec.check_lr(lr, momentum)


def test_check_lr_accepts_usual_values():
    for lr, m in ((0.01, 0.9), (0, 0), (3e38, 1.0), (np.float32(0.5), np.float64(0.0))):
        ModelSpec.check_lr(lr, m)


@pytest.mark.parametrize("dtype,needle", [(np.complex64, "complex"), (object, "object"), (np.bool_, "boolean")])
def test_check_params_refuses_non_real_arrays_naming_the_key(dtype, needle):
    spec = ModelSpec.from_dict(MLP)
    params = spec.init_params()
    params["2.bias"] = params["2.bias"].astype(dtype)
    with pytest.raises(ValueError, match=rf"'2.bias' has {needle} dtype"):
        spec.check_params(params)
    spec.check_params(spec.init_params())                                   # float32: fine
    spec.check_params({k: v.astype(np.float64) for k, v in spec.init_params().items()})


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\x07"])
def test_names_must_be_printable(name):
    with pytest.raises(SpecError, match="printable"):
        ModelSpec.from_dict(with_units(5, name=name))
