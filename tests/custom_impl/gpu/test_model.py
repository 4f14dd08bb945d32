"""Our GPU model end to end: parity with the reference on the GPU and with our CPU model, CUDA graphs.

tests/test_parity.py already runs every zoo model and every odd shape custom-gpu vs reference-gpu, and
the zoo custom-gpu vs custom-cpu. This file adds what that leaves out, through the same helper
(tests/helpers.py, with its tolerances and their reasons):
- the odd shapes (tests/odd_specs.py) custom-gpu vs custom-cpu;
- every zoo model at batch 1 and 33 against the reference on the GPU;
- the CUDA-graph train step: replay equals eager steps, changing lr / batch size re-captures, the
  switch (``use_graph=False``, ``CUSTOM_GPU_GRAPH=0``), device (CuPy) inputs and labels, and results
  that later calls must not overwrite.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelspec
from helpers import compare_models, random_batch
from odd_specs import ODD

pytestmark = pytest.mark.gpu


def _gpu_model(spec, **options):
    from custom_impl.gpu.model import build

    return build(modelspec.load(spec), seed=0, **options)


@pytest.mark.parametrize("spec,batch", ODD, ids=[s["name"] for s, _ in ODD])
def test_odd_shapes_custom_gpu_vs_custom_cpu(spec, batch):
    compare_models(spec, batch=batch, a=("custom", "gpu"), b=("custom", "cpu"))


@pytest.mark.parametrize("batch", [1, 33])
@pytest.mark.parametrize("name", modelspec.zoo_names())
def test_zoo_batches_custom_gpu_vs_reference_gpu(name, batch):
    compare_models(name, batch=batch, device="gpu", steps=5)  # CUDNN_WGRAD_TOL applies (helpers.py)


def _float64_grads(spec, x, y):
    """Loss gradients in float64: the reference's torch modules on the CPU, converted to double."""
    import torch
    import torch.nn.functional as F

    import reference_impl

    ref = reference_impl.build(spec, device="cpu", seed=0)
    net = ref.net.double()
    z = net(torch.from_numpy(x.astype(np.float64)))
    if spec.loss == "softmax_cross_entropy":
        loss = F.cross_entropy(z, torch.from_numpy(y))
    else:
        loss = F.binary_cross_entropy_with_logits(z, torch.from_numpy(y.astype(np.float64)).reshape(-1, 1))
    loss.backward()
    return {name: p.grad.numpy() for name, p in net.named_parameters()}


@pytest.mark.parametrize("name,batch", [("lenet-mnist", 33), ("cnn-cifar", 9), ("digits-cnn", 33),
                                        ("mlp-deep", 7)])
def test_gradients_vs_float64(name, batch):
    import custom_impl

    spec = modelspec.load(name)
    x, y = random_batch(spec, batch)
    _, grads = custom_impl.build(spec, device="gpu", seed=0).loss_and_grads(x, y)
    truth = _float64_grads(spec, x, y)
    for k, g64 in truth.items():
        scale = float(np.abs(g64).max())
        err = float(np.abs(grads[k].astype(np.float64) - g64).max()) / scale
        # float32 sums of up to N*P*Q ~ 6500 terms: ~eps*sqrt(K) ~ 5e-6 of the scale at worst; measured
        # <= 5e-7 on an H100. 1e-5 of the scale still fails any real indexing or routing error.
        assert err <= 1e-5, f"{name} N={batch}: gradient {k!r} is {err:.2e} of its scale away from float64"


def test_custom_impl_build_gives_our_gpu_model():
    import custom_impl
    from custom_impl.gpu.model import GPUModel

    m = custom_impl.build("mlp-mnist", device="gpu", seed=0)
    assert isinstance(m, GPUModel) and m.device == "gpu" and m.impl == "custom"


# ---------------------------------------------------------------------------------------------- graphs
def _steps(model, batches, lrs, momentum=0.9):
    losses = []
    for i, lr in enumerate(lrs):
        x, y = batches[i % len(batches)]
        losses.append(model.train_step(x, y, lr, momentum))
    return [float(v) for v in losses]


@pytest.mark.parametrize("name", ["digits-cnn", "mlp-mnist", "thesis-2-3-1"])
def test_graph_replay_equals_eager(name):
    spec = modelspec.load(name)
    batches = [random_batch(spec, 17, seed=s) for s in range(3)]
    graphed, eager = _gpu_model(spec, use_graph=True), _gpu_model(spec, use_graph=False)
    lrs = [0.05] * 20
    lg, le = _steps(graphed, batches, lrs), _steps(eager, batches, lrs)
    assert len(graphed._graphs) == 1 and not eager._graphs
    pg, pe = graphed.get_params(), eager.get_params()
    # the same kernels on the same data in the same order: bitwise equal (our kernels use no atomics)
    np.testing.assert_array_equal(np.array(lg), np.array(le))
    for k in pg:
        np.testing.assert_array_equal(pg[k], pe[k], err_msg=f"{name}: {k} after 20 steps, graph vs eager")


@pytest.mark.parametrize("name", ["lenet-mnist", "digits-cnn"])
def test_fused_relu_maxpool_equals_unfused(name):
    spec = modelspec.load(name)
    batches = [random_batch(spec, 13, seed=s) for s in range(3)]
    fused, plain = _gpu_model(spec, fuse_pool=True), _gpu_model(spec, fuse_pool=False)
    assert len(fused.steps) < len(plain.steps)
    lrs = [0.05] * 10
    # relu(max x) == max(relu x) exactly, and both route dy to the same pixel or to none: bitwise equal
    np.testing.assert_array_equal(_steps(fused, batches, lrs), _steps(plain, batches, lrs))
    pf, pp = fused.get_params(), plain.get_params()
    for k in pf:
        np.testing.assert_array_equal(pf[k], pp[k], err_msg=f"{name}: {k}, fused vs unfused relu+maxpool")


def test_graph_recaptures_for_new_lr_momentum_and_batch():
    spec = modelspec.load("digits-mlp")
    small = [random_batch(spec, 7, seed=s) for s in range(2)]
    big = [random_batch(spec, 33, seed=10 + s) for s in range(2)]
    graphed, eager = _gpu_model(spec, use_graph=True), _gpu_model(spec, use_graph=False)
    plan = [(small, 0.1, 0.9)] * 3 + [(small, 0.02, 0.9)] * 3 + [(big, 0.02, 0.9)] * 3 + [(small, 0.1, 0.0)] * 3 \
        + [(small, 0.1, 0.9)] * 3
    for i, (batches, lr, m) in enumerate(plan):
        x, y = batches[i % 2]
        a, b = float(graphed.train_step(x, y, lr, m)), float(eager.train_step(x, y, lr, m))
        assert a == b, f"step {i} (N={len(y)}, lr={lr}, momentum={m}): graph loss {a} != eager loss {b}"
    assert len(graphed._graphs) == 4  # (7, .1, .9), (7, .02, .9), (33, .02, .9), (7, .1, 0)
    pg, pe = graphed.get_params(), eager.get_params()
    for k in pg:
        np.testing.assert_array_equal(pg[k], pe[k], err_msg=k)


def test_clear_cache_then_train_on():
    spec = modelspec.load("digits-mlp")
    batches = [random_batch(spec, 11, seed=s) for s in range(2)]
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    for i in range(8):
        if i == 4:
            m.clear_cache()
            assert not m._graphs and not m._plans
        x, y = batches[i % 2]
        assert float(m.train_step(x, y, 0.1, 0.9)) == float(twin.train_step(x, y, 0.1, 0.9)), f"step {i}"


def test_graph_switch_env_var(monkeypatch):
    monkeypatch.setenv("CUSTOM_GPU_GRAPH", "0")
    m = _gpu_model("digits-mlp")
    assert m.use_graph is False
    x, y = random_batch(m.spec, 5)
    for _ in range(3):
        m.train_step(x, y, 0.1, 0.9)
    assert not m._graphs
    monkeypatch.setenv("CUSTOM_GPU_GRAPH", "1")
    assert _gpu_model("digits-mlp").use_graph is True
    assert _gpu_model("digits-mlp", use_graph=False).use_graph is False


def test_returned_arrays_are_not_overwritten_later():
    import cupy

    m = _gpu_model("digits-cnn")
    batches = [random_batch(m.spec, 9, seed=s) for s in range(4)]
    losses = [m.train_step(x, y, 0.1, 0.9) for x, y in batches]  # eager, capture+replay, replay, replay
    values = [float(v) for v in losses]
    assert all(isinstance(v, cupy.ndarray) and v.shape == () for v in losses)
    assert len(set(values)) == len(values), f"each step's loss must be its own array, got {values}"
    # recompute the same losses with an eager twin: the returned arrays still hold their own step's value
    twin = _gpu_model("digits-cnn", use_graph=False)
    np.testing.assert_array_equal(values, [float(twin.train_step(x, y, 0.1, 0.9)) for x, y in batches])
    l1 = m.forward(batches[0][0])          # eager
    keep = cupy.asnumpy(l1)
    l2 = m.forward(batches[1][0])          # captured, then launched
    assert isinstance(l1, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(l1), keep)
    l3 = m.forward(batches[0][0])          # replayed: the same kernels on the same data, bitwise equal
    np.testing.assert_array_equal(cupy.asnumpy(l3), keep)
    np.testing.assert_array_equal(cupy.asnumpy(l2), cupy.asnumpy(twin.forward(batches[1][0])))


def test_device_inputs_equal_host_inputs():
    import cupy

    spec = modelspec.load("lenet-mnist")
    batches = [random_batch(spec, 6, seed=s) for s in range(2)]
    host, dev = _gpu_model(spec), _gpu_model(spec)
    for i in range(6):
        x, y = batches[i % 2]
        a = float(host.train_step(x, y, 0.05, 0.9))
        b = float(dev.train_step(cupy.asarray(x), cupy.asarray(y.astype(np.int32)), 0.05, 0.9))
        assert a == b, f"step {i}: host inputs give loss {a}, device inputs {b}"
    ph, pd = host.get_params(), dev.get_params()
    for k in ph:
        np.testing.assert_array_equal(ph[k], pd[k], err_msg=k)


def test_errors_name_the_problem():
    import cupy

    m = _gpu_model("digits-mlp")
    x, y = random_batch(m.spec, 4)
    with pytest.raises(ValueError, match="input must have shape"):
        m.train_step(x[:, :10], y, 0.1)
    with pytest.raises(ValueError, match="labels must have shape"):
        m.train_step(x, cupy.asarray(y[:3]), 0.1)
    with pytest.raises(ValueError, match="lr"):
        m.train_step(x, y, -0.1)
    with pytest.raises(ValueError, match="must lie in"):
        m.train_step(x, y + 10, 0.1)


# ---------------------------------------------------------------------------------------------- fast path
def _count_checked(model) -> list:
    """Count the calls that take the checked (slow) path of ``train_step``; returns the list appended to."""
    calls = []
    checked = model._train_step_checked

    def counting(*args):
        calls.append(args[2:])  # (lr, momentum)
        return checked(*args)

    model._train_step_checked = counting
    return calls


def _device_batches(spec, batch, seeds):
    import cupy

    return [tuple(cupy.asarray(a) for a in random_batch(spec, batch, seed=s)) for s in seeds]


def test_fast_path_sees_every_new_batch():
    """Replays through the fast path train on each call's own data: new arrays, and new values written
    into the same array (same address), give bitwise the losses and weights of an eager twin."""
    import cupy

    spec = modelspec.load("digits-mlp")
    batches = _device_batches(spec, 16, range(3))
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    calls = _count_checked(m)
    for i in range(9):
        x, y = batches[i % 3]
        a, b = float(m.train_step(x, y, 0.05, 0.9)), float(twin.train_step(x, y, 0.05, 0.9))
        assert a == b, f"step {i}: fast path loss {a} != eager loss {b}"
    assert len(calls) == 2, f"only the eager and the capturing step take the checked path, got {len(calls)}"
    assert m._replay is not None
    x, y = cupy.array(batches[0][0]), cupy.array(batches[0][1])
    for s in range(5):  # one array, refilled in place: the fast path must copy its current contents
        nx, ny = random_batch(spec, 16, seed=100 + s)
        x.set(nx)
        y.set(ny)
        a, b = float(m.train_step(x, y, 0.05, 0.9)), float(twin.train_step(nx, ny, 0.05, 0.9))
        assert a == b, f"refilled batch {s}: fast path loss {a} != eager loss {b}"
    assert len(calls) == 2
    pm, pt = m.get_params(), twin.get_params()
    for k in pm:
        np.testing.assert_array_equal(pm[k], pt[k], err_msg=k)


def test_fast_path_left_for_every_change():
    """Each change of batch size, lr, momentum, their types, the inputs' dtype, memory order or array kind
    goes through the checked path (which re-arms for its key); every step equals the eager twin."""
    import cupy

    spec = modelspec.load("thesis-2-3-1")
    small = _device_batches(spec, 5, range(2))
    big = _device_batches(spec, 33, range(2, 4))
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    calls = _count_checked(m)
    host = tuple(cupy.asnumpy(a) for a in small[0])
    fortran_x = cupy.asfortranarray(cupy.asarray(random_batch(spec, 5, seed=7)[0]))
    assert not fortran_x.flags.c_contiguous
    # (x, y, lr, momentum, takes the checked path)
    plan = [
        (*small[0], 0.1, 0.9, True), (*small[1], 0.1, 0.9, True), (*small[0], 0.1, 0.9, False),
        (*big[0], 0.1, 0.9, True), (*big[1], 0.1, 0.9, True), (*big[0], 0.1, 0.9, False),
        (*small[1], 0.1, 0.9, True),                     # back to N=5: its graph exists, the key changed
        (*small[0], 0.1, 0.9, False),
        (*small[0], 0.2, 0.9, True), (*small[1], 0.2, 0.9, True), (*small[0], 0.2, 0.9, False),
        (*small[0], 0.2, 0.0, True), (*small[1], 0.2, 0.0, True), (*small[0], 0.2, 0.0, False),
        (*small[1], 0.2, 0, True),                       # int momentum: same graph, another type
        (*small[0], 0.2, 0, False),
        (*small[0], np.float64(0.2), 0, True), (*small[1], np.float64(0.2), 0, False),
        (small[0][0], small[0][1].astype(cupy.int32), np.float64(0.2), 0, True),
        (small[0][0].astype(cupy.float64), small[0][1], np.float64(0.2), 0, True),
        (fortran_x, small[0][1], np.float64(0.2), 0, True),
        (*host, np.float64(0.2), 0, True),
        (host[0], small[1][1], np.float64(0.2), 0, True),
        (small[1][0], host[1], np.float64(0.2), 0, True),
        (*small[1], np.float64(0.2), 0, False),
    ]
    for i, (x, y, lr, mom, slow) in enumerate(plan):
        before = len(calls)
        a, b = float(m.train_step(x, y, lr, mom)), float(twin.train_step(x, y, lr, mom))
        assert a == b, f"step {i}: graphed loss {a} != eager loss {b}"
        assert (len(calls) > before) == slow, f"step {i}: expected the {'checked' if slow else 'fast'} path"
    pm, pt = m.get_params(), twin.get_params()
    for k in pm:
        np.testing.assert_array_equal(pm[k], pt[k], err_msg=k)


def test_fast_path_disarmed_by_capture_clear_cache_and_graph_switch():
    spec = modelspec.load("mlp-mnist")
    (x, y), (x2, y2) = _device_batches(spec, 7, range(2))
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    calls = _count_checked(m)

    def step(xb, yb):
        a, b = float(m.train_step(xb, yb, 0.05, 0.9)), float(twin.train_step(xb, yb, 0.05, 0.9))
        assert a == b

    for _ in range(3):
        step(x, y)
    assert len(calls) == 2 and m._replay is not None
    m.forward(x)                       # eager: nothing captured, the fast path stays
    assert m._replay is not None
    m.forward(x2)                      # captures the forward graph: the fast path is dropped
    assert m._replay is None
    step(x2, y2)                       # checked: replays the existing graph and re-arms
    step(x, y)                         # fast
    assert len(calls) == 3
    m.clear_cache()
    assert m._replay is None
    for _ in range(3):                 # eager, capture, fast
        step(x, y)
    assert len(calls) == 5
    m.use_graph = False
    step(x2, y2)                       # checked and eager
    assert len(calls) == 6 and m._replay is None
    m.use_graph = True
    step(x, y)                         # its graph is kept: checked, replayed, re-armed
    step(x2, y2)                       # fast
    assert len(calls) == 7


def test_fast_path_losses_are_never_overwritten(monkeypatch):
    """Returned losses are fresh 0-d arrays across loss-block refills (blocks of 3 slots here)."""
    import cupy

    from custom_impl.gpu import model as gpu_model

    monkeypatch.setattr(gpu_model, "LOSS_SLOTS", 3)
    spec = modelspec.load("digits-mlp")
    batches = _device_batches(spec, 1, range(4))
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    losses = [m.train_step(*batches[i % 4], 0.1, 0.9) for i in range(11)]
    want = [float(twin.train_step(*batches[i % 4], 0.1, 0.9)) for i in range(11)]
    assert all(isinstance(v, cupy.ndarray) and v.shape == () and v.dtype == np.float32 for v in losses)
    assert len({v.data.ptr for v in losses}) == len(losses), "two steps returned the same memory"
    np.testing.assert_array_equal([float(v) for v in losses], want)
    kept = losses[4]
    kept += 1.0                        # writing a returned loss touches no other step's loss
    np.testing.assert_array_equal([float(v) for v in losses[:4] + losses[5:]], want[:4] + want[5:])


def test_fast_path_bad_input_raises_the_checked_errors():
    import cupy

    spec = modelspec.load("digits-mlp")
    (x, y), (x2, y2) = _device_batches(spec, 4, range(2))
    m, twin = _gpu_model(spec), _gpu_model(spec, use_graph=False)
    for _ in range(3):
        assert float(m.train_step(x, y, 0.1, 0.9)) == float(twin.train_step(x, y, 0.1, 0.9))
    assert m._replay is not None
    with pytest.raises(ValueError, match="input must have shape"):
        m.train_step(x[:, :10], y, 0.1, 0.9)
    with pytest.raises(ValueError, match="input must have shape"):
        m.train_step(x[0], y, 0.1, 0.9)
    with pytest.raises(ValueError, match="empty batch"):
        m.train_step(x[:0], y[:0], 0.1, 0.9)
    with pytest.raises(ValueError, match="labels must have shape"):
        m.train_step(x, y[:3], 0.1, 0.9)
    with pytest.raises(ValueError, match="labels must have shape"):
        m.train_step(x, y.reshape(2, 2), 0.1, 0.9)
    with pytest.raises(ValueError, match="integer class indices"):
        m.train_step(x, y.astype(cupy.float32), 0.1, 0.9)
    with pytest.raises(ValueError, match="floating point"):
        m.train_step(x.astype(cupy.int64), y, 0.1, 0.9)
    with pytest.raises(ValueError, match="lr must be"):
        m.train_step(x, y, float("nan"), 0.9)
    with pytest.raises(ValueError, match="lr must be"):
        m.train_step(x, y, -0.1, 0.9)
    with pytest.raises(ValueError, match="momentum must be"):
        m.train_step(x, y, 0.1, True)
    with pytest.raises(ValueError, match="must lie in"):
        m.train_step(x, cupy.asnumpy(y) + 10, 0.1, 0.9)
    # nothing above ran a step: training goes on exactly as on the twin
    for xb, yb in [(x2, y2), (x, y), (x2, y2)]:
        assert float(m.train_step(xb, yb, 0.1, 0.9)) == float(twin.train_step(xb, yb, 0.1, 0.9))
