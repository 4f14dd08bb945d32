"""modelspec: round trips, shape inference, parameter names/shapes, init, FLOP formulas, the zoo."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import modelspec
from modelspec import ModelSpec

EXAMPLE = {
    "name": "example", "input_shape": [3, 13, 17], "num_classes": 7, "loss": "softmax_cross_entropy",
    "layers": [
        {"type": "conv2d", "out_channels": 5, "kernel_size": [3, 5], "stride": 2, "padding": [1, 2]},  # 0
        {"type": "relu"},                                                                            # 1
        {"type": "maxpool2d", "kernel_size": 3, "stride": [2, 1]},                                   # 2
        {"type": "avgpool2d", "kernel_size": 2},                                                     # 3
        {"type": "flatten"},                                                                         # 4
        {"type": "dense", "units": 11, "bias": False},                                               # 5
        {"type": "sigmoid"},                                                                         # 6
        {"type": "dense", "units": 7},                                                               # 7
    ],
}


def toml_text(d: dict) -> str:
    """A minimal TOML writer for spec dicts (tomllib reads only): scalars, lists and [[layers]] tables."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(e) for e in v) + "]"
        return str(v)
    lines = [f"{k} = {val(v)}" for k, v in d.items() if k != "layers"]
    for layer in d["layers"]:
        lines.append("\n[[layers]]")
        lines += [f"{k} = {val(v)}" for k, v in layer.items()]
    return "\n".join(lines) + "\n"


def test_round_trip_dict():
    spec = ModelSpec.from_dict(EXAMPLE)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    d = spec.to_dict()
    assert d["layers"][0]["kernel_size"] == [3, 5] and d["layers"][0]["stride"] == [2, 2]  # normalised pairs
    assert d["layers"][2]["stride"] == [2, 1] and d["layers"][3]["stride"] == [2, 2]       # pool stride = kernel


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_round_trip_files(tmp_path, fmt):
    spec = ModelSpec.from_dict(EXAMPLE)
    path = tmp_path / f"example.{fmt}"
    path.write_text(toml_text(EXAMPLE) if fmt == "toml" else json.dumps(EXAMPLE))
    assert modelspec.load(path) == spec
    assert modelspec.load(str(path)) == spec
    path2 = tmp_path / f"again.{fmt}"
    path2.write_text(toml_text(spec.to_dict()) if fmt == "toml" else json.dumps(spec.to_dict()))
    assert modelspec.load(path2) == spec


def test_load_passes_through():
    spec = ModelSpec.from_dict(EXAMPLE)
    assert modelspec.load(spec) is spec
    assert modelspec.load(EXAMPLE) == spec


def test_shape_inference():
    spec = ModelSpec.from_dict(EXAMPLE)
    # conv: P = (13 + 2*1 - 3)//2 + 1 = 7, Q = (17 + 2*2 - 5)//2 + 1 = 9
    # maxpool 3, stride (2, 1): P = (7 - 3)//2 + 1 = 3, Q = (9 - 3)//1 + 1 = 7
    # avgpool 2 (stride 2): P = (3 - 2)//2 + 1 = 1, Q = (7 - 2)//2 + 1 = 3; flatten 5*1*3 = 15
    want = [(5, 7, 9), (5, 7, 9), (5, 3, 7), (5, 1, 3), (15,), (11,), (11,), (7,)]
    assert [layer.out_shape for layer in spec.layers] == want
    assert [layer.in_shape for layer in spec.layers] == [(3, 13, 17)] + want[:-1]
    assert spec.output_dim == 7
    layer = spec.layers[0]
    assert (layer.kernel_size, layer.stride, layer.padding, layer.bias) == ((3, 5), (2, 2), (1, 2), True)
    assert spec.layers[2].padding == (0, 0)


def test_param_names_and_shapes():
    spec = ModelSpec.from_dict(EXAMPLE)
    assert spec.param_shapes() == {"0.weight": (5, 3, 3, 5), "0.bias": (5,), "5.weight": (11, 15),
                                   "7.weight": (7, 11), "7.bias": (7,)}
    assert list(spec.param_shapes()) == ["0.weight", "0.bias", "5.weight", "7.weight", "7.bias"]  # ordered
    assert spec.num_params() == 5 * 3 * 3 * 5 + 5 + 11 * 15 + 7 * 11 + 7
    assert spec.layers[1].param_shapes() == {}


def test_init_params_deterministic_and_bounded():
    spec = ModelSpec.from_dict(EXAMPLE)
    a, b, c = spec.init_params(0), spec.init_params(0), spec.init_params(1)
    assert list(a) == list(spec.param_shapes())
    for name, shape in spec.param_shapes().items():
        assert a[name].shape == shape and a[name].dtype == np.float32
        assert np.array_equal(a[name], b[name])            # same seed: identical
        assert not np.array_equal(a[name], c[name])        # other seed: different
    # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
    for name, fan_in in {"0.weight": 3 * 3 * 5, "0.bias": 3 * 3 * 5, "5.weight": 15, "7.weight": 11,
                         "7.bias": 11}.items():
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(a[name]).max() <= bound
        if a[name].size >= 50:  # enough samples to see the whole interval used
            assert np.abs(a[name]).max() > 0.8 * bound
            assert abs(float(a[name].mean())) < 0.2 * bound


def test_init_matches_torch_scheme():
    """The bounds are those of torch.nn.Linear / Conv2d's reset_parameters (checked on torch's own draws)."""
    import torch
    torch.manual_seed(0)
    lin = torch.nn.Linear(15, 11)
    conv = torch.nn.Conv2d(3, 5, (3, 5))
    for w, fan_in in ((lin.weight, 15), (lin.bias, 15), (conv.weight, 45), (conv.bias, 45)):
        # torch's uniform draws lie strictly within the bound, and reach near it
        assert float(w.detach().abs().max()) <= 1 / math.sqrt(fan_in)
    assert float(lin.weight.detach().abs().max()) > 0.8 / math.sqrt(15)


def test_flops_hand_computed():
    spec = ModelSpec.from_dict(EXAMPLE)
    n = 3
    f = spec.layer_flops(n)
    # conv: out elems 3*5*7*9 = 945, fan_in 3*3*5 = 45: forward 2*945*45 + 945 (bias)
    assert f[0] == modelspec.Flops(forward=2 * 945 * 45 + 945, backward_data=2 * 945 * 45,
                                   backward_weights=2 * 945 * 45 + 945)
    assert f[1] == modelspec.Flops(forward=945, backward_data=945)                      # relu, per element
    assert f[2] == modelspec.Flops(forward=3 * 5 * 3 * 7 * 9, backward_data=3 * 5 * 3 * 7)  # max: window 9
    assert f[3] == modelspec.Flops(forward=3 * 5 * 1 * 3 * 4, backward_data=3 * 5 * 1 * 3 * 4)  # avg: window 4
    assert f[4] == modelspec.Flops()                                                    # flatten
    assert f[5] == modelspec.Flops(forward=2 * 3 * 11 * 15, backward_data=2 * 3 * 11 * 15,
                                   backward_weights=2 * 3 * 11 * 15)                    # no bias
    assert f[7] == modelspec.Flops(forward=2 * 3 * 7 * 11 + 21, backward_data=2 * 3 * 7 * 11,
                                   backward_weights=2 * 3 * 7 * 11 + 21)
    fwd = sum(x.forward for x in f)
    assert spec.flops(n, "forward") == fwd
    fb = fwd + sum(x.backward_weights for x in f) + sum(x.backward_data for x in f[1:]) + 5 * n * 7
    assert spec.flops(n, "forward_backward") == fb
    assert spec.flops(n, "train_step") == fb + 4 * spec.num_params()
    with pytest.raises(ValueError, match=r"unknown phase 'backward'"):
        spec.flops(n, "backward")


def test_flops_mlp_mnist_textbook():
    # 784-128-10 at batch 64: forward = 2*64*(784*128 + 128*10) + 64*(128 + 10) bias adds + 64*128 relu
    spec = modelspec.load("mlp-mnist")
    assert spec.flops(64) == 2 * 64 * (784 * 128 + 128 * 10) + 64 * (128 + 10) + 64 * 128


@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_model_loads(name):
    spec = modelspec.load(name)
    assert spec.name == name
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.layers[-1].type == "dense"
    assert spec.flops(1, "train_step") > spec.flops(1, "forward") > 0


def test_zoo_names():
    assert set(modelspec.zoo_names()) >= {"thesis-2-3-1", "mlp-mnist", "mlp-deep", "lenet-mnist", "cnn-cifar",
                                          "digits-mlp", "digits-cnn"}


def test_zoo_shapes():
    assert modelspec.load("lenet-mnist").layers[6].out_shape == (64 * 7 * 7,)
    assert modelspec.load("cnn-cifar").layers[9].out_shape == (128 * 4 * 4,)
    assert modelspec.load("mlp-deep").num_params() == 784 * 1024 + 1024 + 2 * (1024 * 1024 + 1024) + 10250
    spec = modelspec.load("thesis-2-3-1")
    assert spec.input_shape == (2,) and spec.output_dim == 1 and spec.num_classes == 2


def test_check_input_accepts_torch_and_numpy():
    import torch
    spec = modelspec.load("digits-mlp")
    spec.check_input(np.ones((2, 64), np.float32) * 0.5)
    spec.check_input(torch.full((2, 64), 0.5))
    with pytest.raises(ValueError, match=r"floating point"):
        spec.check_input(torch.ones((2, 64), dtype=torch.int32))
    y = spec.check_labels(np.array([1.0, 3.0]), 2)
    assert y.dtype == np.int64 and list(y) == [1, 3]
