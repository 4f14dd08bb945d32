"""Bad specs and bad inputs: each gets its exception type and a message naming the problem.

Specs raise ``modelspec.SpecError`` (a ValueError); inputs, labels, learning rates and parameter dicts
raise ``ValueError``, in both implementations, and a rejected ``set_params`` leaves the model unchanged.
"""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

import modelspec
from helpers import build_model

IMPLS = ["custom", "reference"]


def good_spec() -> dict:
    """A valid 1x8x8 CNN that every bad spec below changes in one place."""
    return {
        "name": "err-cnn", "input_shape": [1, 8, 8], "num_classes": 10, "loss": "softmax_cross_entropy",
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},   # 0
            {"type": "relu"},                                                       # 1
            {"type": "maxpool2d", "kernel_size": 2},                                # 2
            {"type": "flatten"},                                                    # 3
            {"type": "dense", "units": 16},                                         # 4
            {"type": "tanh"},                                                       # 5
            {"type": "dense", "units": 10},                                         # 6
        ],
    }


def _set(path, value):
    """A mutation that sets d[path[0]][path[1]]... = value (or deletes it when value is DELETE)."""
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


DELETE = object()


def _layers(layers):
    return _set(["layers"], layers)


def _bce(d):
    d["loss"] = "sigmoid_binary_cross_entropy"
    d["num_classes"] = 2
    d["layers"][-1]["units"] = 1


def _bce_3_classes(d):
    _bce(d)
    d["num_classes"] = 3


def _typo_top(d):
    d["num_clases"] = d.pop("num_classes")


FLAT_IN = {"name": "flat", "input_shape": [64], "num_classes": 10, "loss": "softmax_cross_entropy"}

# (id, mutation of good_spec(), regex the SpecError message must match)
BAD_SPECS = [
    ("typo-top-key", _typo_top, r"unknown top-level key 'num_clases'.*did you mean 'num_classes'"),
    ("extra-top-key", _set(["optimizer"], "sgd"), r"unknown top-level key 'optimizer'"),
    ("missing-loss", _set(["loss"], DELETE), r"missing top-level key 'loss'"),
    ("missing-layers", _set(["layers"], DELETE), r"missing top-level key 'layers'"),
    ("empty-name", _set(["name"], " "), r"'name' must be a non-empty string"),
    ("unknown-loss", _set(["loss"], "softmax_crossentropy"),
     r"unknown loss 'softmax_crossentropy'.*did you mean 'softmax_cross_entropy'"),
    ("num-classes-1", _set(["num_classes"], 1), r"'num_classes' must be >= 2, got 1"),
    ("num-classes-float", _set(["num_classes"], 10.0), r"'num_classes' must be an integer"),
    ("input-shape-2d", _set(["input_shape"], [8, 8]), r"'input_shape' must be \[features\] or \[channels"),
    ("input-shape-zero", _set(["input_shape"], [1, 0, 8]), r"'input_shape' must hold positive integers"),
    ("input-shape-string", _set(["input_shape"], "1x8x8"), r"'input_shape' must be"),
    ("empty-layers", _layers([]), r"'layers' must be a non-empty list"),
    ("layers-not-list", _layers({"type": "dense"}), r"'layers' must be a non-empty list"),
    ("layer-not-table", _set(["layers", 1], "relu"), r"layer 1: each layer must be a table"),
    ("layer-missing-type", _set(["layers", 1, "type"], DELETE), r"layer 1: missing 'type'"),
    ("unknown-layer-type", _set(["layers", 4, "type"], "dens"), r"layer 4: unknown type 'dens'.*did you mean 'dense'"),
    ("unknown-layer-key", _set(["layers", 4, "unit"], 16), r"layer 4 \(dense\): unknown key 'unit'.*did you mean 'units'"),
    ("key-on-activation", _set(["layers", 1, "inplace"], True), r"layer 1 \(relu\): unknown key 'inplace'"),
    ("missing-units", _set(["layers", 4, "units"], DELETE), r"layer 4 \(dense\): missing required key 'units'"),
    ("missing-kernel", _set(["layers", 0, "kernel_size"], DELETE), r"layer 0 \(conv2d\): missing required key 'kernel_size'"),
    ("units-float", _set(["layers", 4, "units"], 16.5), r"layer 4 \(dense\): 'units' must be an integer >= 1, got 16.5"),
    ("units-zero", _set(["layers", 4, "units"], 0), r"layer 4 \(dense\): 'units' must be positive"),
    ("units-negative", _set(["layers", 4, "units"], -3), r"layer 4 \(dense\): 'units' must be positive \(>= 1\), got -3"),
    ("units-bool", _set(["layers", 4, "units"], True), r"layer 4 \(dense\): 'units' must be an integer.*got True"),
    ("channels-string", _set(["layers", 0, "out_channels"], "4"), r"layer 0 \(conv2d\): 'out_channels' must be an integer"),
    ("kernel-zero", _set(["layers", 0, "kernel_size"], 0), r"layer 0 \(conv2d\): 'kernel_size' must be positive"),
    ("kernel-triple", _set(["layers", 0, "kernel_size"], [3, 3, 3]), r"layer 0 \(conv2d\): 'kernel_size' must be an integer or a pair"),
    ("stride-zero", _set(["layers", 0, "stride"], 0), r"layer 0 \(conv2d\): 'stride' must be positive"),
    ("pool-stride-bool", _set(["layers", 2, "stride"], False), r"layer 2 \(maxpool2d\): 'stride' must be an integer"),
    ("negative-padding", _set(["layers", 0, "padding"], -1), r"layer 0 \(conv2d\): 'padding' must be non-negative \(>= 0\), got -1"),
    ("bias-not-bool", _set(["layers", 4, "bias"], "yes"), r"layer 4 \(dense\): 'bias' must be true or false"),
    ("kernel-larger-than-input", _set(["layers", 0, "kernel_size"], 11),
     r"layer 0 \(conv2d\): kernel 11x11 is larger than its padded input 10x10"),
    ("spatial-shrinks-to-zero", _layers([{"type": "conv2d", "out_channels": 2, "kernel_size": 5},
                                         {"type": "conv2d", "out_channels": 2, "kernel_size": 5},
                                         {"type": "flatten"}, {"type": "dense", "units": 10}]),
     r"layer 1 \(conv2d\): kernel 5x5 is larger than its padded input 4x4"),
    ("pool-larger-than-input", _set(["layers", 2, "kernel_size"], [2, 9]),
     r"layer 2 \(maxpool2d\): kernel 2x9 is larger than its padded input 8x8"),
    ("conv-on-flat-input", lambda d: d.update(FLAT_IN, layers=[{"type": "conv2d", "out_channels": 2, "kernel_size": 3},
                                                               {"type": "dense", "units": 10}]),
     r"layer 0 \(conv2d\): needs an image input \(C, H, W\) but gets the flat shape \(64,\)"),
    ("pool-after-flatten", lambda d: d["layers"].insert(4, {"type": "avgpool2d", "kernel_size": 2}),
     r"layer 4 \(avgpool2d\): needs an image input \(C, H, W\) but gets the flat shape \(64,\)"),
    ("dense-on-image", _set(["layers", 3], {"type": "tanh"}),
     r"layer 4 \(dense\): expects a flat input \(F,\) but gets \(4, 4, 4\); add \{type = \"flatten\"\}"),
    ("last-layer-wrong-units", _set(["layers", 6, "units"], 9),
     r"layer 6 \(dense\): the last dense layer must have 10 units.*got units = 9; set units = 10"),
    ("bce-last-layer-2-units", lambda d: (_bce(d), d["layers"][-1].update(units=2)),
     r"must have 1 units for loss 'sigmoid_binary_cross_entropy'"),
    ("bce-3-classes", _bce_3_classes, r"'sigmoid_binary_cross_entropy' is for two classes: set num_classes = 2 \(got 3\)"),
    ("trailing-activation", lambda d: d["layers"].append({"type": "relu"}),
     r"layer 7 \(relu\): the last layer must be dense.*remove trailing activations"),
]


@pytest.mark.parametrize("mutate,pattern", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec(mutate, pattern):
    d = good_spec()
    modelspec.ModelSpec.from_dict(copy.deepcopy(d))  # the base is valid: the error is the mutation's
    mutate(d)
    with pytest.raises(modelspec.SpecError, match=pattern):
        modelspec.ModelSpec.from_dict(d)


def test_spec_not_a_mapping():
    with pytest.raises(modelspec.SpecError, match=r"must be a mapping"):
        modelspec.ModelSpec.from_dict([("name", "x")])


@pytest.mark.parametrize("impl", IMPLS)
def test_build_rejects_bad_spec(impl):
    d = good_spec()
    d["layers"][4]["unit"] = d["layers"][4].pop("units")
    with pytest.raises(modelspec.SpecError, match=r"unknown key 'unit'"):
        build_model(impl, d)


# ------------------------------------------------------------------------------------------------ loading
def test_unknown_zoo_name():
    with pytest.raises(modelspec.SpecError, match=r"unknown model 'lenet-mnst'.*did you mean 'lenet-mnist'"):
        modelspec.load("lenet-mnst")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(modelspec.SpecError, match=r"spec file .*nope\.toml' does not exist"):
        modelspec.load(str(path))


def test_malformed_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ninput_shape = [1, 8\n')
    with pytest.raises(modelspec.SpecError, match=r"bad\.toml: not a valid TOML file"):
        modelspec.load(path)


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x", "input_shape": [64],}')
    with pytest.raises(modelspec.SpecError, match=r"bad\.json: not a valid JSON file"):
        modelspec.load(path)


def test_file_error_names_the_file(tmp_path):
    d = good_spec()
    d["layers"][0]["padding"] = -2
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(d))
    with pytest.raises(modelspec.SpecError, match=r"neg\.json: layer 0 \(conv2d\): 'padding' must be non-negative"):
        modelspec.load(path)


def test_load_wrong_type():
    with pytest.raises(modelspec.SpecError, match=r"cannot load a model spec from int"):
        modelspec.load(42)


# ------------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module", params=IMPLS)
def mlp(request):
    return build_model(request.param, "digits-mlp", seed=1)


@pytest.fixture(scope="module", params=IMPLS)
def cnn(request):
    return build_model(request.param, "digits-cnn", seed=1)


RNG = np.random.default_rng(5)
X_MLP = RNG.standard_normal((5, 64)).astype(np.float32)     # (N, 64)
Y_MLP = RNG.integers(0, 10, size=5)                           # (N,)

BAD_X = [
    ("wrong-features", RNG.standard_normal((5, 63)).astype(np.float32), r"input must have shape \(N, 64\), got \(5, 63\)"),
    ("no-batch-axis", RNG.standard_normal(64).astype(np.float32), r"input must have shape \(N, 64\), got \(64,\); for a single sample add a batch axis"),
    ("extra-axis", RNG.standard_normal((5, 1, 64)).astype(np.float32), r"input must have shape \(N, 64\)"),
    ("empty-batch", np.ones((0, 64), np.float32), r"empty batch \(N = 0\)"),
    ("integer-x", RNG.integers(0, 16, size=(5, 64)), r"input must be floating point \(float32\), got dtype int64"),
]


@pytest.mark.parametrize("x,pattern", [c[1:] for c in BAD_X], ids=[c[0] for c in BAD_X])
def test_bad_x(mlp, x, pattern):
    y = Y_MLP  # the input is checked before the labels
    for call in (lambda: mlp.forward(x), lambda: mlp.loss_and_grads(x, y), lambda: mlp.train_step(x, y, 0.1)):
        with pytest.raises(ValueError, match=pattern):
            call()


def test_bad_image_x(cnn):
    x = RNG.standard_normal((3, 8, 8, 1)).astype(np.float32)  # channels last: (N, H, W, C)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 1, 8, 8\), got \(3, 8, 8, 1\)"):
        cnn.forward(x)
    with pytest.raises(ValueError, match=r"for a single sample add a batch axis: x\[None\]"):
        cnn.forward(x[0].reshape(1, 8, 8))


BAD_Y = [
    ("label-too-large", np.array([0, 1, 10, 2, 3]), r"class labels must lie in \[0, 9\], got values in \[0, 10\]"),
    ("label-negative", np.array([0, -1, 5, 2, 3]), r"class labels must lie in \[0, 9\], got values in \[-1, 5\]"),
    ("too-few-labels", np.array([0, 1, 2, 3]), r"labels must have shape \(5,\) to match the batch, got \(4,\)"),
    ("labels-2d", np.zeros((5, 1), np.int64), r"labels must have shape \(5,\) to match the batch, got \(5, 1\)"),
    ("non-integer-labels", np.array([0.0, 1.5, 2.0, 3.0, 4.0]), r"labels must be integer class indices"),
    ("nan-labels", np.array([0.0, np.nan, 2.0, 3.0, 4.0]), r"labels must be integer class indices"),
    ("string-labels", np.array(["0", "1", "2", "3", "4"]), r"labels must be integer class indices, got dtype"),
]


@pytest.mark.parametrize("y,pattern", [c[1:] for c in BAD_Y], ids=[c[0] for c in BAD_Y])
def test_bad_labels(mlp, y, pattern):
    before = mlp.get_params()
    with pytest.raises(ValueError, match=pattern):
        mlp.loss_and_grads(X_MLP, y)
    with pytest.raises(ValueError, match=pattern):
        mlp.train_step(X_MLP, y, 0.1)
    _assert_unchanged(mlp, before, "a rejected train_step")


@pytest.mark.parametrize("impl", IMPLS)
def test_bce_labels_must_be_0_or_1(impl):
    model = build_model(impl, "thesis-2-3-1")
    x = RNG.standard_normal((4, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"0/1 labels must lie in \[0, 1\], got values in \[0, 2\]"):
        model.loss_and_grads(x, np.array([0, 1, 2, 1]))


BAD_LR = [
    ("negative-lr", dict(lr=-0.1), r"lr must be >= 0, got -0.1"),
    ("nan-lr", dict(lr=float("nan")), r"lr must be a finite number, got nan"),
    ("inf-lr", dict(lr=float("inf")), r"lr must be a finite number"),
    ("string-lr", dict(lr="0.1"), r"lr must be a finite number, got '0.1'"),
    ("negative-momentum", dict(lr=0.1, momentum=-0.5), r"momentum must be >= 0, got -0.5"),
    ("nan-momentum", dict(lr=0.1, momentum=float("nan")), r"momentum must be a finite number"),
]


@pytest.mark.parametrize("kwargs,pattern", [c[1:] for c in BAD_LR], ids=[c[0] for c in BAD_LR])
def test_bad_lr(mlp, kwargs, pattern):
    before = mlp.get_params()
    with pytest.raises(ValueError, match=pattern):
        mlp.train_step(X_MLP, Y_MLP, **kwargs)
    _assert_unchanged(mlp, before, "a rejected train_step")


# ------------------------------------------------------------------------------------------------ set_params
def _assert_unchanged(model, before, what):
    after = model.get_params()
    assert list(after) == list(before), f"{what} changed the parameter names"
    for k in before:
        assert np.array_equal(after[k], before[k]), f"{what} changed {k!r}"


def _good_params(model, seed=9):
    return {k: np.random.default_rng(seed).standard_normal(v.shape).astype(np.float32)
            for k, v in model.get_params().items()}


BAD_PARAMS = [
    ("typo-key", lambda p: p.update({"0.weigth": p.pop("0.weight")}), r"unknown parameter '0.weigth'.*did you mean '0.weight'"),
    ("extra-key", lambda p: p.update({"5.weight": np.ones((3, 3), np.float32)}), r"unknown parameter '5.weight'"),
    ("missing-key", lambda p: p.pop("2.bias"), r"missing parameter '2.bias' of shape \(10,\)"),
    ("wrong-shape", lambda p: p.update({"0.weight": p["0.weight"][:, :-1].copy()}),
     r"parameter '0.weight' must have shape \(64, 64\), got \(64, 63\)"),
    ("transposed", lambda p: p.update({"2.weight": p["2.weight"].T.copy()}),
     r"parameter '2.weight' must have shape \(10, 64\), got \(64, 10\)"),
    ("flat-bias", lambda p: p.update({"0.bias": p["0.bias"][None]}), r"parameter '0.bias' must have shape \(64,\), got \(1, 64\)"),
]


@pytest.mark.parametrize("mutate,pattern", [c[1:] for c in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS])
def test_bad_set_params_leaves_model_unchanged(mlp, mutate, pattern):
    before = mlp.get_params()
    params = _good_params(mlp)
    mutate(params)
    with pytest.raises(ValueError, match=pattern):
        mlp.set_params(params)
    _assert_unchanged(mlp, before, "a rejected set_params")
    logits = np.asarray(mlp.to_numpy(mlp.forward(X_MLP)))
    mlp.set_params(before)  # and the model still works with its own parameters
    assert np.array_equal(logits, np.asarray(mlp.to_numpy(mlp.forward(X_MLP))))


def test_messages_name_the_model(mlp):
    with pytest.raises(ValueError, match=re.escape("model 'digits-mlp'")):
        mlp.forward(X_MLP[:, :10])
