"""The fused train step of small MLPs (custom_impl/gpu/mlp_fused.py, kernels/mlp_fused.cu).

Without a GPU: which specs it takes (and why not the others), the module defines, the packed parameter
order against the model's flat offsets, the launch grid. On the GPU: the fused step against the per-layer
path of the same model (``fuse_mlp=False``) on losses, gradients and parameters over several steps, on the
thesis's 2-3-1 network and on a made-up network that takes every other code path of the kernel (three
layers, sigmoid and tanh, a layer without bias, softmax cross-entropy), at batches that leave partial
blocks; and that the fused step gives the same bits twice.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import modelspec
from custom_impl.gpu import mlp_fused
from helpers import random_batch

# every path of the kernel beyond the 2-3-1 network: 3 layers, sigmoid / tanh / none, no bias in layer 2,
# softmax cross-entropy over 4 classes, an odd input width (90 parameters)
WIDE = {"name": "fused-3-layer", "input_shape": [5], "num_classes": 4, "loss": "softmax_cross_entropy",
        "layers": [{"type": "dense", "units": 6}, {"type": "sigmoid"},
                   {"type": "dense", "units": 5, "bias": False}, {"type": "tanh"},
                   {"type": "dense", "units": 4}]}


def test_which_specs_are_fused():
    assert mlp_fused.fusable(modelspec.load("thesis-2-3-1")) is None
    assert mlp_fused.fusable(modelspec.load(WIDE)) is None
    reasons = {name: mlp_fused.fusable(modelspec.load(name)) for name in modelspec.zoo_names()}
    assert "width of 64" in reasons["digits-mlp"] and "not 1-D" in reasons["lenet-mnist"]
    assert "precision 'tf32'" in mlp_fused.fusable(modelspec.load("thesis-2-3-1"), "tf32")
    deep = dict(WIDE, layers=[{"type": "dense", "units": 3}, {"type": "relu"}] * 4 + [{"type": "dense", "units": 4}])
    assert "5 dense layers" in mlp_fused.fusable(modelspec.load(deep))
    big = dict(WIDE, layers=[{"type": "dense", "units": 16}, {"type": "relu"}, {"type": "dense", "units": 4}])
    assert "164 parameters" in mlp_fused.fusable(modelspec.load(big))


def test_defines_and_packed_order():
    spec = modelspec.load(WIDE)
    d = mlp_fused.defines(spec)
    assert d == {"MF_L": 3, "MF_F0": 5, "MF_LOSS": 0, "MF_F1": 6, "MF_A1": 2, "MF_B1": 1,
                 "MF_F2": 5, "MF_A2": 3, "MF_B2": 0, "MF_F3": 4, "MF_A3": 0, "MF_B3": 1}
    assert mlp_fused.param_count(spec) == 5 * 6 + 6 + 6 * 5 + 5 * 4 + 4
    # offsets as the model lays them out (each parameter rounded up to 64 elements)
    shapes = spec.param_shapes()
    offsets, total = {}, 0
    for name, shape in shapes.items():
        offsets[name] = total
        total += -(-math.prod(shape) // 64) * 64
    idx = mlp_fused.flat_indices(spec, offsets)
    assert len(idx) == mlp_fused.param_count(spec) == len(set(idx.tolist()))
    flat = np.zeros(total)
    for name, shape in shapes.items():   # each parameter's values numbered in packed order: W_1, b_1, W_2, ...
        flat[offsets[name]:offsets[name] + math.prod(shape)] = 1
    assert flat[idx].sum() == len(idx) and flat.sum() == len(idx)   # every parameter value exactly once
    assert list(idx[:36]) == list(range(offsets["0.weight"], offsets["0.weight"] + 30)) + \
        list(range(offsets["0.bias"], offsets["0.bias"] + 6))


@pytest.mark.parametrize("n", [1, 255, 256, 257, 8192, 70001])
def test_grid_covers_the_batch(n):
    nblocks, chunk = mlp_fused.grid(n)
    assert (nblocks - 1) * chunk < n <= nblocks * chunk and nblocks <= mlp_fused.MAX_BLOCKS


def _models(spec, **options):
    from custom_impl.gpu.model import build

    return build(spec, seed=0, fuse_mlp=True, **options), build(spec, seed=0, fuse_mlp=False, **options)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 37, 300, 8193])
@pytest.mark.parametrize("name", ["thesis-2-3-1", "fused-3-layer"])
@pytest.mark.parametrize("use_graph", [True, False])
def test_fused_step_matches_the_layer_path(name, batch, use_graph):
    spec = modelspec.load(WIDE if name == "fused-3-layer" else name)
    fused, plain = _models(spec, use_graph=use_graph)
    assert fused._fused is not None and plain._fused is None
    batches = [random_batch(spec, batch, seed=s) for s in range(3)]
    for step in range(6):
        x, y = batches[step % 3]
        lf, lp = float(fused.train_step(x, y, 0.1, 0.9)), float(plain.train_step(x, y, 0.1, 0.9))
        # both FP32 with other summation orders (per-thread and per-block sums over the batch here, GEMM
        # tiles and split-K there): the mean loss agrees to a few float32 ulps times the batch's depth
        assert lf == pytest.approx(lp, rel=1e-5, abs=1e-6), f"{name} N={batch} step {step}: loss"
        gf = {k: fused.to_numpy(v) for k, v in fused.gradients().items()}
        gp = {k: plain.to_numpy(v) for k, v in plain.gradients().items()}
        for k in gp:
            # gradients are sums over the batch of O(1) terms scaled by 1/N: float32 rounding of such
            # sums, in different orders, stays within ~1e-6 relative of the largest term; 1e-5 leaves
            # room for the parameters having moved apart by as much over the earlier steps
            scale = max(float(np.abs(gp[k]).max()), 1e-3)
            np.testing.assert_allclose(gf[k], gp[k], rtol=1e-4, atol=1e-5 * scale,
                                       err_msg=f"{name} N={batch} step {step}: gradient {k}")
    pf, pp = fused.get_params(), plain.get_params()
    for k in pp:
        np.testing.assert_allclose(pf[k], pp[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} N={batch}: {k} after 6 steps")


@pytest.mark.gpu
def test_fused_step_is_deterministic():
    spec = modelspec.load("thesis-2-3-1")
    batches = [random_batch(spec, 5000, seed=s) for s in range(2)]
    runs = []
    for _ in range(2):
        model = _models(spec)[0]
        losses = [float(model.train_step(*batches[i % 2], 0.05, 0.9)) for i in range(8)]
        runs.append((losses, model.get_params()))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k], err_msg=k)
