"""The one comparison helper of the test suite: two implementations (or devices) of one spec, side by side.

``compare_models(spec, batch)`` builds two models of the contract in docs/DESIGN.md from the same seed,
feeds both the same random batch (standard normal inputs, never zeros; valid random labels) and compares

    logits, loss, every parameter gradient            (one forward/backward)
    the loss of every step and every parameter        (after ``steps`` SGD steps with momentum)

with ``|a - b| <= atol + rtol * |b|`` elementwise, ``b`` being the side taken as the truth (the reference
by default). ``atol`` is given as a fraction of the tensor's scale ``max|b|``: a float32 dot product of K
terms is accurate to about eps * sqrt(K) * sum|terms| (eps = 6e-8), i.e. to a fraction of the *tensor's*
magnitude, not of each entry; entries that cancel to near zero carry the same absolute error and would
fail any purely relative test.

By default ``custom`` is compared with ``reference`` on ``device``; the GPU tests pass
``a=("custom", "gpu"), b=("custom", "cpu")`` (say) to compare devices of one implementation.

Example::

    compare_models("digits-mlp", batch=7)                                  # custom vs reference, CPU
    compare_models(spec, 33, a=("custom", "gpu"), b=("reference", "gpu"))  # on the GPU
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import numpy as np

import modelspec

# ---------------------------------------------------------------------------------------------- tolerances
# (rtol, atol as a fraction of max|b|) per compared quantity, for float32 on both sides.
#
# logits / loss: each float32 op adds ~6e-8 relative error; a dense/conv output sums K = fan_in terms in an
#   order that differs between NumPy's BLAS and PyTorch's kernels, so its error grows with sqrt(K)
#   (K <= 3136 in the zoo: sqrt ~ 56 -> ~3e-6), and a few layers in a row multiply that. 3e-5 of the scale
#   leaves a ~10x margin over what the zoo shows; rtol 1e-4 covers entries near the scale.
FORWARD_TOL = (1e-4, 3e-5)
# gradients: a backward pass chains twice as many reductions as the forward (data and weight gradients,
#   the weight gradient also summing over the batch N*P*Q terms), and relu/softmax gradients cancel,
#   so the error relative to the gradient's scale is larger: allow 3e-4 of the scale.
GRAD_TOL = (1e-3, 3e-4)
# parameters after 20 momentum steps: each step adds lr * (a velocity that sums all earlier gradients), so
#   gradient differences accumulate over the steps and feed back through the changed weights; the
#   parameters themselves stay close to their initial scale, so the same relative figure as the gradients
#   applies to the *update*; relative to the parameter scale it is far smaller. A ReLU near-tie (below)
#   that switches one hidden unit in one step moves that unit's row and column of the neighbouring weights
#   by up to lr/(1-momentum) * |dy * x|: measured on an H100, JAX vs PyTorch, mlp-deep N=29 after 20 steps,
#   24 of 1,048,576 entries of '2.weight' differed by up to 2.2e-4 of the scale (7.3e-6 of 0.0324), every
#   other entry by < 1e-4. 5e-4 of the scale keeps a 2x margin over that; the update-norm check below
#   (1e-3 of the whole update) stays the tight test of the optimizer.
PARAM_TOL = (1e-4, 5e-4)
# the loss returned by each training step: it is computed from the drifting parameters above: 1e-4.
STEP_LOSS_TOL = (1e-4, 1e-4)

# Trajectories through max pooling: a window whose two largest entries lie within float32 rounding of each
#   other (~1e-7 relative) sends its gradient to a different entry in each implementation. With 1e4-1e5
#   windows per step such a near-tie is *expected* about once in 20 steps of lenet-mnist (measured: one
#   gradient entry moves to its neighbour, 5% of that tensor's gradient scale, once). Its effect on the
#   weights is local and bounded by lr/(1-momentum) * |dy * x|: measured up to 7e-3 of a weight tensor's
#   scale and 1.6e-2 of its update norm, against ~1e-6 without a flip. So for specs with a maxpool2d the
#   trajectory gets 2e-2 of the scale elementwise, and the update p - p0 must also agree in norm to 5e-2
#   (UPDATE_NORM_RTOL): a real SGD/momentum bug changes the whole update by O(1) and still fails.
MAXPOOL_TRAJECTORY_TOL = {"params": (1e-2, 2e-2), "step_loss": (1e-3, 1e-3)}
# Without max pooling the update norm is held to 1e-3: ReLU has near-ties too. A hidden pre-activation
#   within float32 rounding of 0 switches its unit's gradient on in one implementation and off in another;
#   mlp-deep at batch 29 has ~89k hidden pre-activations per step, the smallest |z| of the first step is
#   7e-7. Measured on the CPU against a float64 run of the same 20 steps (same data): the FP32 updates of
#   ours, PyTorch and JAX are off by 2.1e-4, 3.3e-4 and 2.1e-4 of the update's norm; on an H100, JAX vs
#   PyTorch differed by 1.9e-4. Two FP32 runs may differ by the sum of their errors (~5e-4): 1e-3 keeps a 2x
#   margin, and a real SGD/momentum bug (a wrong lr, momentum or sign) still changes the update by >= 1e-2.
UPDATE_NORM_RTOL = {"default": 1e-3, "maxpool": 5e-2}

# cuDNN's own error: with cudnn.benchmark on (the reference runs with it) cuDNN times several algorithms and may
# pick, for the weight gradient, one that is far less accurate than a direct float32 sum (FFT / Winograd
# style). Measured on an H100 against float64 (dev/gpu_check.py --truth): lenet-mnist conv weight
# gradients off by 1.1e-3 to 2.2e-3 of their scale for cuDNN, 2.5e-7 to 3.7e-7 for ours; the algorithm is
# chosen by timing, so it changes from run to run. Comparisons against the reference on the GPU therefore
# give gradients of specs with a conv2d 5e-3 of the scale (2x the worst cuDNN error seen);
# tests/test_gpu_model.py::test_gradients_vs_float64 holds OUR gradients to 1e-5 of the scale.
CUDNN_WGRAD_TOL = {"grads": (1e-3, 5e-3)}

DEFAULT_TOL = {"logits": FORWARD_TOL, "loss": FORWARD_TOL, "grads": GRAD_TOL, "params": PARAM_TOL,
               "step_loss": STEP_LOSS_TOL}


# ---------------------------------------------------------------------------------------------- building
def build_model(impl: str, spec, device: str = "cpu", seed: int = 0):
    """``custom_impl.build`` or ``reference_impl.build`` (imported only when asked for); impl "jax" is the
    reference in JAX (``reference_impl.build(..., framework="jax")``)."""
    if impl not in ("custom", "reference", "jax"):
        raise ValueError(f"impl must be 'custom', 'reference' or 'jax', got {impl!r}")
    if impl == "jax":
        return importlib.import_module("reference_impl").build(spec, device=device, seed=seed, framework="jax")
    module = importlib.import_module(f"{impl}_impl")
    return module.build(spec, device=device, seed=seed)


def random_batch(spec: modelspec.ModelSpec, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs x ~ N(0, 1) float32 (batch, *input_shape) and valid int64 labels (batch,).

    Labels are class indices in [0, num_classes) (0/1 for binary cross-entropy, where num_classes = 2).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)  # (N, *input_shape)
    y = rng.integers(0, spec.num_classes, size=batch).astype(np.int64)      # (N,)
    return x, y


# ---------------------------------------------------------------------------------------------- comparing
def close_report(a, b, rtol: float, atol: float) -> tuple[bool, str]:
    """Whether ``|a - b| <= atol + rtol*|b|`` holds everywhere, and a one-line summary of the errors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False, f"shapes differ: {a.shape} vs {b.shape}"
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False, f"non-finite values: {int(np.sum(~np.isfinite(a)))} in a, {int(np.sum(~np.isfinite(b)))} in b"
    err = np.abs(a - b)
    bound = atol + rtol * np.abs(b)
    bad = err > bound
    max_abs = float(err.max()) if err.size else 0.0
    rel = err / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    max_rel = float(rel.max()) if rel.size else 0.0
    msg = (f"max abs err {max_abs:.3g}, max rel err {max_rel:.3g}, scale max|b| "
           f"{float(np.abs(b).max()) if b.size else 0.0:.3g}, rtol {rtol:.1g}, atol {atol:.3g}")
    if bad.any():
        idx = np.unravel_index(int(np.argmax(err - bound)), err.shape)
        msg += (f"; {int(bad.sum())}/{bad.size} elements out of tolerance, worst at {tuple(int(i) for i in idx)}: "
                f"a={a[idx]:.8g} b={b[idx]:.8g}")
    return not bad.any(), msg


def assert_close(a, b, rtol: float, atol: float, what: str) -> None:
    """Assert ``|a - b| <= atol + rtol*|b|`` elementwise; the message names ``what`` and the errors."""
    ok, msg = close_report(a, b, rtol, atol)
    assert ok, f"{what}: {msg}"


def _assert_scaled(a, b, tol: tuple[float, float], what: str) -> None:
    rtol, atol_frac = tol
    scale = float(np.max(np.abs(np.asarray(b, dtype=np.float64)))) if np.size(b) else 0.0
    # NOTE: the 1e-30 floor keeps an all-zero tensor (which random data should never give) comparable.
    assert_close(a, b, rtol, atol_frac * scale + 1e-30, what)


@dataclasses.dataclass
class Side:
    """One side of a comparison: an implementation on a device."""

    impl: str
    device: str

    def __str__(self) -> str:
        return f"{self.impl}-{self.device}"


def compare_models(spec, batch: int, device: str = "cpu", steps: int = 20, lr: float = 0.01,
                   momentum: float = 0.9, seed: int = 0, a: tuple[str, str | None] = ("custom", None),
                   b: tuple[str, str | None] = ("reference", None),
                   tol: Mapping[str, tuple[float, float]] | None = None, data_seed: int | None = None) -> dict[str, Any]:
    """Build ``a`` and ``b`` from one seed and assert they compute the same function and training run.

    spec: a ModelSpec, dict, zoo name or path. batch: N. device: the device of both sides unless ``a``/``b``
    name their own, e.g. ``a=("custom", "gpu"), b=("custom", "cpu")``. ``b`` is taken as the truth.
    tol: overrides of DEFAULT_TOL, ``{"grads": (rtol, atol_fraction_of_scale), ...}``, and
    ``"update_norm"``: the allowed ||update_a - update_b|| / ||update_b|| of the parameters after the steps.

    Checks: identical initial parameters; logits (N, output_dim); loss; every gradient (names and shapes
    of spec.param_shapes()); then ``steps`` train steps (SGD with momentum, cycling over 3 random batches):
    each step's loss, and every parameter at the end. Returns the largest scaled errors seen, for logs.
    """
    spec = modelspec.load(spec)
    has_maxpool = any(layer.type == "maxpool2d" for layer in spec.layers)
    tols = dict(DEFAULT_TOL)
    if has_maxpool:
        tols.update(MAXPOOL_TRAJECTORY_TOL)
    # NOTE: JAX on the GPU reaches cuDNN through XLA, which also picks convolution algorithms by timing them
    sides = ((a[0], a[1] or device), (b[0], b[1] or device))
    if any(side in (("reference", "gpu"), ("jax", "gpu")) for side in sides) \
            and any(layer.type == "conv2d" for layer in spec.layers):
        tols.update(CUDNN_WGRAD_TOL)
    tols.update(tol or {})
    update_rtol = tols.get("update_norm", UPDATE_NORM_RTOL["maxpool" if has_maxpool else "default"])
    side_a = Side(a[0], a[1] or device)
    side_b = Side(b[0], b[1] or device)
    tag = f"{spec.name} N={batch} [{side_a} vs {side_b}]"

    ma = build_model(side_a.impl, spec, side_a.device, seed)
    mb = build_model(side_b.impl, spec, side_b.device, seed)
    pa, pb = ma.get_params(), mb.get_params()
    shapes = spec.param_shapes()
    assert list(pa) == list(shapes) and list(pb) == list(shapes), f"{tag}: parameter names differ from the spec"
    for name in shapes:
        # both start from spec.init_params(seed): bit-identical, no tolerance
        assert np.array_equal(pa[name], pb[name]), f"{tag}: initial parameter {name!r} differs"

    ds = seed if data_seed is None else data_seed
    batches = [random_batch(spec, batch, seed=1000 * ds + i) for i in range(3)]
    x, y = batches[0]

    la_logits = np.asarray(ma.to_numpy(ma.forward(x)))
    lb_logits = np.asarray(mb.to_numpy(mb.forward(x)))
    assert la_logits.shape == (batch, spec.output_dim), f"{tag}: {side_a} logits shape {la_logits.shape}"
    assert lb_logits.shape == (batch, spec.output_dim), f"{tag}: {side_b} logits shape {lb_logits.shape}"
    _assert_scaled(la_logits, lb_logits, tols["logits"], f"{tag}: logits")

    loss_a, grads_a = ma.loss_and_grads(x, y)
    loss_b, grads_b = mb.loss_and_grads(x, y)
    _assert_scaled(float(loss_a), float(loss_b), tols["loss"], f"{tag}: loss")
    assert set(grads_a) == set(shapes), f"{tag}: {side_a} gradient names {sorted(grads_a)} != {sorted(shapes)}"
    assert set(grads_b) == set(shapes), f"{tag}: {side_b} gradient names {sorted(grads_b)} != {sorted(shapes)}"
    for name, shape in shapes.items():
        ga, gb = np.asarray(grads_a[name]), np.asarray(grads_b[name])
        assert ga.shape == shape, f"{tag}: {side_a} gradient {name!r} has shape {ga.shape}, spec says {shape}"
        _assert_scaled(ga, gb, tols["grads"], f"{tag}: gradient {name!r}")

    for step in range(steps):
        xs, ys = batches[step % len(batches)]
        sa = float(ma.train_step(xs, ys, lr, momentum))
        sb = float(mb.train_step(xs, ys, lr, momentum))
        _assert_scaled(sa, sb, tols["step_loss"], f"{tag}: loss of train step {step} (lr={lr}, momentum={momentum})")
    init = spec.init_params(seed)
    pa, pb = ma.get_params(), mb.get_params()
    for name in shapes:
        if steps:
            assert not np.array_equal(pb[name], init[name]), f"{tag}: {side_b} did not update {name!r}"
        _assert_scaled(pa[name], pb[name], tols["params"], f"{tag}: parameter {name!r} after {steps} steps")
        ua = pa[name].astype(np.float64) - init[name]   # the update of all steps together
        ub = pb[name].astype(np.float64) - init[name]
        rel = float(np.linalg.norm(ua - ub) / max(np.linalg.norm(ub), 1e-30))
        assert rel <= update_rtol, (f"{tag}: update of {name!r} over {steps} steps: ||a - b|| / ||b|| = "
                                    f"{rel:.3g} > {update_rtol}")
    return {"loss_a": float(loss_a), "loss_b": float(loss_b)}
