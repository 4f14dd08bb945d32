"""The reference in JAX (``reference_impl.build(..., framework="jax")``) against PyTorch and ours.

For every zoo model and a few random small architectures, the JAX model is compared by
``helpers.compare_models`` with the PyTorch reference and with our implementation: identical initial
parameters, logits, loss, every gradient, then 20 SGD steps with momentum 0.9 (each step's loss and every
parameter at the end). The tolerances are the float32 ones of tests/helpers.py, whose reasons apply here
unchanged: XLA, PyTorch and NumPy sum the same float32 products in different orders (~6e-8 relative per
term, growing with sqrt(fan-in)), gradients chain twice as many reductions, and a max-pooling window
whose two largest entries lie within rounding of each other may route its gradient to different entries
(MAXPOOL_TRAJECTORY_TOL there).

Bad inputs raise the same errors, with the same messages, as in the PyTorch reference (the cases of
tests/test_errors.py). JAX's jit compilation dominates the time (each spec compiles three phases once;
the compiled executables are shared by every model of the spec), so the random architectures are few
and small. GPU tests (marker ``gpu``) compare JAX on the GPU with PyTorch and ours there, and check that
JAX shares the card (no preallocation).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import modelspec
import reference_impl
from helpers import compare_models, random_batch
from odd_specs import FLAT, RELU, _conv, _spec
from test_errors import BAD_LR, BAD_PARAMS, BAD_X, BAD_Y, X_MLP, Y_MLP, _good_params

# NOTE: through reference_impl.jax_model, which sets how JAX shares the GPU before any JAX backend starts
pytest.importorskip("reference_impl.jax_model",
                    reason="JAX is not installed: pip install -e \".[jax]\" (the test extra installs it)")

# Batch per zoo model, as in tests/test_parity.py: small odd batches for the big models, 33 for the rest.
ZOO_BATCH = {"cnn-cifar": 3, "lenet-mnist": 5, "mlp-deep": 7, "mlp-mnist": 33, "digits-cnn": 33,
             "digits-mlp": 33, "thesis-2-3-1": 33}
ACTS = ({"type": "relu"}, {"type": "tanh"}, {"type": "sigmoid"})


def random_architecture(seed: int, kind: str) -> dict:
    """A small random valid spec: ``kind`` "cnn" (1-2 convolutions with random kernels, strides and
    paddings, a random activation, a max or avg pool, a hidden dense layer) or "mlp" (1-3 dense layers);
    random bias flags; softmax cross-entropy or (for odd seeds) sigmoid binary cross-entropy."""
    rng = np.random.default_rng(seed)
    bce = seed % 2 == 1
    classes = 2 if bce else int(rng.integers(3, 8))
    last = {"type": "dense", "units": 1 if bce else classes}
    for _ in range(100):
        layers = []
        if kind == "cnn":
            shape = [int(rng.integers(1, 4)), int(rng.integers(9, 18)), int(rng.integers(9, 18))]
            for _ in range(int(rng.integers(1, 3))):
                layers += [_conv(int(rng.integers(2, 8)), [int(v) for v in rng.integers(1, 6, size=2)],
                                 stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 3)),
                                 bias=bool(rng.integers(0, 2))), dict(ACTS[int(rng.integers(0, 3))])]
            pool = "maxpool2d" if rng.integers(0, 2) else "avgpool2d"
            layers += [{"type": pool, "kernel_size": int(rng.integers(2, 4)), "stride": int(rng.integers(1, 3))},
                       FLAT, {"type": "dense", "units": int(rng.integers(3, 20))}, RELU]
        else:
            shape = [int(rng.integers(3, 60))]
            for _ in range(int(rng.integers(1, 4))):
                layers += [{"type": "dense", "units": int(rng.integers(2, 40)), "bias": bool(rng.integers(0, 2))},
                           dict(ACTS[int(rng.integers(0, 3))])]
        d = _spec(f"random-{kind}-{seed}", shape, layers + [last], num_classes=classes,
                  loss="sigmoid_binary_cross_entropy" if bce else "softmax_cross_entropy")
        try:
            modelspec.ModelSpec.from_dict(d)
        except modelspec.SpecError:   # a kernel larger than its input: draw again
            continue
        return d
    raise AssertionError(f"no valid random {kind} spec for seed {seed}")


# NOTE: batch 1 goes with a softmax spec: the tolerances are fractions of a tensor's largest entry, and a
# binary-loss spec at batch 1 has one logit, which may cancel to near zero (measured: 1.7e-4 from terms
# of ~0.1, where float32 summation order alone moves it by 2.6e-4 of itself).
RANDOM = [(random_architecture(seed, kind), batch) for seed, kind, batch in
          ((0, "cnn", 7), (1, "cnn", 5), (2, "mlp", 1), (3, "mlp", 33))]


def jax_model(spec="digits-mlp", seed=1):
    return reference_impl.build(spec, device="cpu", seed=seed, framework="jax")


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_jax_matches_pytorch_and_ours(name):
    batch = ZOO_BATCH.get(name, 7)
    compare_models(name, batch, a=("jax", "cpu"), b=("reference", "cpu"))
    compare_models(name, batch, a=("jax", "cpu"), b=("custom", "cpu"))


@pytest.mark.parametrize("spec,batch", RANDOM, ids=[s["name"] for s, _ in RANDOM])
def test_random_architectures_jax_matches_pytorch_and_ours(spec, batch):
    compare_models(spec, batch, a=("jax", "cpu"), b=("reference", "cpu"))
    compare_models(spec, batch, a=("jax", "cpu"), b=("custom", "cpu"), data_seed=1)


def test_random_architectures_cover_the_layer_kinds():
    # the random specs above exercise what the zoo lacks: both pools, both losses, no-bias layers, stride 2
    layers = [layer for s, _ in RANDOM for layer in s["layers"]]
    types = {layer["type"] for layer in layers}
    assert {"maxpool2d", "avgpool2d", "conv2d", "dense", "relu", "tanh", "sigmoid"} <= types, types
    assert {s["loss"] for s, _ in RANDOM} == {"softmax_cross_entropy", "sigmoid_binary_cross_entropy"}
    assert any(layer.get("bias") is False for layer in layers)
    assert any(layer.get("stride") == 2 for layer in layers if layer["type"] == "conv2d")


def test_sgd_momentum_switching_and_set_params_match_pytorch():
    """torch.optim.SGD keeps the velocity through momentum-0 steps and through set_params; lr and
    momentum change from step to step without recompiling the step."""
    spec = modelspec.load("digits-mlp")
    mj, mt = jax_model(spec), reference_impl.build(spec, seed=1)
    x, y = random_batch(spec, 9, seed=4)
    schedule = [(0.05, 0.9), (0.05, 0.0), (0.02, 0.5), (0.1, 0.0), (0.01, 0.9), (0.03, 0.9)]
    for i, (lr, momentum) in enumerate(schedule):
        if i == 3:
            new = _good_params(mt, seed=11)
            new = {k: 0.1 * v for k, v in new.items()}
            mj.set_params(new)
            mt.set_params(new)
        lj, lt = float(mj.train_step(x, y, lr, momentum)), float(mt.train_step(x, y, lr, momentum))
        # a few float32 steps of a small MLP: 1e-5 relative (each step ~1e-6; a wrong velocity is order 1)
        assert lj == pytest.approx(lt, rel=1e-5), (i, lr, momentum)
        if i == 0:
            step_exe = mj.executable("train_step", 9)
    pj, pt = mj.get_params(), mt.get_params()
    for k in pt:
        scale = np.abs(pt[k]).max()
        np.testing.assert_allclose(pj[k], pt[k], rtol=1e-5, atol=1e-5 * scale, err_msg=k)
    assert mj.executable("train_step", 9) is step_exe       # one executable for every lr and momentum


def test_train_step_is_one_compiled_function_with_donated_params_and_velocity():
    m = jax_model("lenet-mnist")
    x, y = random_batch(m.spec, 3)
    assert m.compile_seconds("train_step", 3) is None and m.executable("train_step", 3) is None
    m.train_step(x, y, 0.01, 0.9)
    ex = m.executable("train_step", 3)
    assert m.compile_seconds("train_step", 3) > 0
    # donated parameters and velocity: XLA aliases exactly their bytes (2 float32 copies of the parameters)
    assert ex.memory_analysis().alias_size_in_bytes == 2 * 4 * m.spec.num_params()
    # strict FP32: the lowered program asks for HIGHEST precision on every dot and convolution
    hlo = ex.as_text()
    ops = [line for line in hlo.splitlines() if " dot(" in line or " convolution(" in line]
    assert ops and all("operand_precision={highest,highest}" in line for line in ops), ops[:3]
    assert 0 < m.memory_bytes("train_step", 3) < 10 * 4 * m.spec.num_params() + 10**8


def test_contract_methods():
    m = jax_model("digits-cnn")
    assert (m.impl, m.device, m.framework) == ("reference", "cpu", "jax")
    x, y = random_batch(m.spec, 7, seed=2)
    with pytest.raises(RuntimeError, match="no gradients yet"):
        m.gradients()
    loss_ref, grads_ref = m.loss_and_grads(x, y)
    xb, yb = m.device_batch(x.astype(np.float64), list(y))
    assert str(xb.dtype) == "float32" and str(yb.dtype) == "int32" and tuple(yb.shape) == (7,)
    loss = m.forward_backward(xb, yb)
    assert m.to_numpy(loss).shape == ()
    grads = m.gradients()
    assert list(grads) == list(m.spec.param_shapes())
    for k, g in grads.items():   # the same compiled computation on the same data: bit-identical
        np.testing.assert_array_equal(m.to_numpy(g), grads_ref[k], err_msg=k)
    assert float(m.to_numpy(loss)) == loss_ref
    assert tuple(m.forward(xb).shape) == (7, 10)
    fns = {phase: m.compiled(phase) for phase in ("inference", "forward_backward", "train_step")}
    np.testing.assert_array_equal(m.to_numpy(fns["inference"](xb)), m.to_numpy(m.forward(x)))
    assert float(fns["forward_backward"](xb, yb)) == loss_ref
    before = m.get_params()
    # another compiled program (fused with the SGD update), same float32 loss up to summation order: 1e-6
    assert float(fns["train_step"](xb, yb, 0.1, 0.9)) == pytest.approx(loss_ref, rel=1e-6)
    assert not np.array_equal(m.get_params()["0.weight"], before["0.weight"])
    with pytest.raises(ValueError, match="unknown phase"):
        m.compiled("backward")


def test_labels_as_jax_arrays_are_range_checked_on_the_cpu():
    import jax.numpy as jnp

    m = jax_model()
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 9\], got values in \[0, 10\]"):
        m.train_step(X_MLP, jnp.asarray([0, 1, 10, 2, 3]), 0.1)
    loss = m.train_step(jnp.asarray(X_MLP), jnp.asarray(Y_MLP), 0.1)
    assert np.isfinite(float(loss))


# ------------------------------------------------------------------------------------------------ errors
def _same_error(call_jax, call_torch, pattern):
    with pytest.raises(ValueError, match=pattern) as got:
        call_jax()
    with pytest.raises(ValueError) as want:
        call_torch()
    assert str(got.value) == str(want.value)


@pytest.fixture(scope="module")
def pair():
    return jax_model(), reference_impl.build("digits-mlp", seed=1)


@pytest.mark.parametrize("x,pattern", [c[1:] for c in BAD_X], ids=[c[0] for c in BAD_X])
def test_bad_x_same_error_as_pytorch(pair, x, pattern):
    mj, mt = pair
    _same_error(lambda: mj.forward(x), lambda: mt.forward(x), pattern)
    _same_error(lambda: mj.train_step(x, Y_MLP, 0.1), lambda: mt.train_step(x, Y_MLP, 0.1), pattern)
    _same_error(lambda: mj.device_batch(x, Y_MLP), lambda: mt.device_batch(x, Y_MLP), pattern)


@pytest.mark.parametrize("y,pattern", [c[1:] for c in BAD_Y], ids=[c[0] for c in BAD_Y])
def test_bad_labels_same_error_as_pytorch(pair, y, pattern):
    mj, mt = pair
    before = mj.get_params()
    _same_error(lambda: mj.loss_and_grads(X_MLP, y), lambda: mt.loss_and_grads(X_MLP, y), pattern)
    _same_error(lambda: mj.train_step(X_MLP, y, 0.1), lambda: mt.train_step(X_MLP, y, 0.1), pattern)
    assert all(np.array_equal(v, mj.get_params()[k]) for k, v in before.items())


@pytest.mark.parametrize("kwargs,pattern", [c[1:] for c in BAD_LR], ids=[c[0] for c in BAD_LR])
def test_bad_lr_same_error_as_pytorch(pair, kwargs, pattern):
    mj, mt = pair
    before = mj.get_params()
    _same_error(lambda: mj.train_step(X_MLP, Y_MLP, **kwargs), lambda: mt.train_step(X_MLP, Y_MLP, **kwargs),
                pattern)
    assert all(np.array_equal(v, mj.get_params()[k]) for k, v in before.items())


@pytest.mark.parametrize("mutate,pattern", [c[1:] for c in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS])
def test_bad_set_params_same_error_and_model_unchanged(pair, mutate, pattern):
    mj, mt = pair
    before = mj.get_params()
    params = _good_params(mj)
    mutate(params)
    _same_error(lambda: mj.set_params(params), lambda: mt.set_params(params), pattern)
    after = mj.get_params()
    assert list(after) == list(before) and all(np.array_equal(after[k], before[k]) for k in before)
    nan = _good_params(mj)
    nan["0.bias"][3] = np.nan
    _same_error(lambda: mj.set_params(nan), lambda: mt.set_params(nan), "holds NaN or infinite values")


def test_build_errors():
    import custom_impl

    with pytest.raises(ValueError, match=r"unknown framework 'tensorflow'; choose one of 'torch', 'jax'"):
        reference_impl.build("mlp-mnist", framework="tensorflow")
    with pytest.raises(ValueError, match=r"framework 'jax' computes in float32 only.*dtype='float64'"):
        reference_impl.build("mlp-mnist", framework="jax", dtype="float64")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        reference_impl.build("mlp-mnist", device="tpu", framework="jax")
    d = {"name": "x", "input_shape": [4], "num_classes": 3, "loss": "softmax_cross_entropy",
         "layers": [{"type": "dense", "unit": 3}]}
    for build in (lambda: reference_impl.build(d, framework="jax"), lambda: custom_impl.build(d)):
        with pytest.raises(modelspec.SpecError, match=r"unknown key 'unit'"):
            build()


def test_without_jax_build_names_the_install_command(monkeypatch):
    # JAX not importable (as on a machine without it): a RuntimeError naming `pip install -e ".[jax]"`
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "reference_impl.jax_model", raising=False)
    monkeypatch.delattr(reference_impl, "jax_model", raising=False)
    with pytest.raises(RuntimeError, match=r"JAX is not installed.*pip install -e \"\.\[jax\]\""):
        reference_impl.build("mlp-mnist", framework="jax")
    assert "pip install -e \".[jax]\"" in reference_impl.jax_unavailable("cpu")
    assert reference_impl.build("mlp-mnist").framework == "torch"      # the default is unaffected


def test_precision_flags_record_jax():
    jax_model()
    flags = reference_impl.precision_flags()
    assert flags["jax: jax.lax.Precision of every dot_general / conv_general_dilated"] == "HIGHEST"
    assert flags["jax: jax_enable_x64"] is False          # float32 defaults left alone
    # the model sets it (to "false") unless the environment chose a value; the record says what is in effect
    assert flags["jax: XLA_PYTHON_CLIENT_PREALLOCATE"] == os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] != ""
    assert flags["jax: jax"] and flags["jax: jaxlib"]


def _python_child(code: str, xla_flags: str | None, timeout: int) -> str:
    """stdout of ``python -c code`` in a fresh process at the repository root, with ``XLA_FLAGS`` set to
    ``xla_flags`` (None: unset); XLA reads its flags once per process."""
    import subprocess

    child = dict(os.environ)
    child.pop("XLA_FLAGS", None)
    if xla_flags is not None:
        child["XLA_FLAGS"] = xla_flags
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=child, cwd=root, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("env,want", [(None, ""),
                                      ("--xla_gpu_exclude_nondeterministic_ops=true",
                                       "--xla_gpu_exclude_nondeterministic_ops=true")])
def test_xla_algorithm_choice_left_to_xla_and_a_user_flag_recorded(env, want):
    """Importing the JAX model adds nothing to XLA_FLAGS (XLA's autotuner chooses as for any JAX user); a
    user's own flags are kept, and the record names what is in effect. In a fresh process: XLA reads its
    flags once."""
    code = ("import reference_impl.jax_model as jm, jax.numpy as jnp; float(jnp.ones(3).sum()); "
            "print(repr(jm.precision_flags()['XLA_FLAGS']))")
    assert _python_child(code, env, timeout=120).strip() == repr(want)


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_jax_gpu_lenet_conv2_weight_gradient_exact_under_the_deterministic_flag():
    """LeNet's 5x5 conv, 32 -> 64 channels at 14x14, batch 256: XLA's default autotuning chose cuDNN's
    non-fused Winograd weight gradient here (max-norm error 7.4e-3 against float64 on the H100). The remedy
    the docs give, ``XLA_FLAGS=--xla_gpu_exclude_nondeterministic_ops=true``, must give an exact FP32
    algorithm. 1e-5: a float32 reduction over N*P*Q = 50,176 terms in any order stays within ~1e-6 of
    float64 in this max-norm measure (2e-7 measured); a Winograd or TF32 path is >= 1e-3. In a fresh
    process: XLA reads its flags once."""
    pytest.importorskip("torch")
    code = """
import jax, numpy as np, torch
from harness.workloads import rel_err
from reference_impl import jax_model as jm
rng = np.random.default_rng(11)
x = rng.standard_normal((256, 32, 14, 14), dtype=np.float32)
w = (rng.standard_normal((64, 32, 5, 5)) / np.sqrt(800)).astype(np.float32)
dy = rng.standard_normal((256, 64, 14, 14), dtype=np.float32)
dev = jm.device_of("gpu")
xj, wj, dyj = (jax.device_put(a, dev) for a in (x, w, dy))
grad = jax.jit(lambda dy_, w_: jax.vjp(lambda w2: jm.conv2d(xj, w2, None, (1, 1), (2, 2)), w_)[1](dy_)[0])
got = np.asarray(grad(dyj, wj))
want = torch.nn.grad.conv2d_weight(torch.from_numpy(x).double(), w.shape, torch.from_numpy(dy).double(),
                                   padding=2).numpy()
print(rel_err([got], [want]))
"""
    out = _python_child(code, "--xla_gpu_exclude_nondeterministic_ops=true", timeout=300)
    assert float(out.strip().splitlines()[-1]) < 1e-5     # the harness's parity measure (max-norm)


@pytest.mark.gpu
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_jax_gpu_matches_pytorch_gpu_and_ours(name):
    batch = ZOO_BATCH.get(name, 7) * 4 + 1
    compare_models(name, batch, a=("jax", "gpu"), b=("reference", "gpu"))
    compare_models(name, batch, a=("jax", "gpu"), b=("custom", "gpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("spec,batch", RANDOM, ids=[s["name"] for s, _ in RANDOM])
def test_random_architectures_jax_gpu_matches_pytorch_gpu(spec, batch):
    compare_models(spec, batch, a=("jax", "gpu"), b=("reference", "gpu"))


@pytest.mark.gpu
def test_jax_shares_the_gpu_with_cupy_and_pytorch():
    """JAX does not reserve most of the card: built after CuPy and PyTorch have the GPU, and run, it leaves
    most memory free, and all three train the same model in one process."""
    import cupy

    import custom_impl

    ours = custom_impl.build("lenet-mnist", device="gpu", seed=0)
    torch_model = reference_impl.build("lenet-mnist", device="gpu", seed=0)
    free_before, total = cupy.cuda.runtime.memGetInfo()
    mj = reference_impl.build("lenet-mnist", device="gpu", seed=0, framework="jax")
    x, y = random_batch(mj.spec, 64)
    losses = [float(m.train_step(x, y, 0.01, 0.9)) for m in (ours, torch_model, mj)]
    free_after, _ = cupy.cuda.runtime.memGetInfo()
    # lenet at batch 64 needs a few MB; XLA's default preallocation would take 75% of the card
    assert free_before - free_after < 0.10 * total, (free_before, free_after, total)
    assert reference_impl.precision_flags()["jax: XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    # the same first step on the same data: float32 accumulation orders differ (~1e-6); 1e-4 relative
    assert losses[2] == pytest.approx(losses[1], rel=1e-4) and losses[2] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.gpu
def test_jax_gpu_labels_on_the_device_are_shape_checked_only():
    import jax

    mj = reference_impl.build("digits-mlp", device="gpu", seed=0, framework="jax")
    assert mj.jax_device.platform == "gpu"
    xb, yb = mj.device_batch(X_MLP, Y_MLP)
    assert list(xb.devices())[0].platform == "gpu"
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        mj.train_step(xb, jax.device_put(np.zeros(4, np.int32), mj.jax_device), 0.1)
    with pytest.raises(ValueError, match="labels on the GPU must be an integer array"):
        mj.train_step(xb, jax.device_put(np.zeros(5, np.float32), mj.jax_device), 0.1)
    assert np.isfinite(float(mj.train_step(xb, yb, 0.1, 0.9)))
