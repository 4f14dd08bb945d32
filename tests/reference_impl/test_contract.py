"""The model contract on both implementations (CPU): device_batch, forward_backward, gradients, build
options; and that harness/ uses only public names of custom_impl / reference_impl."""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import custom_impl
import reference_impl

IMPLS = {"custom": custom_impl.build, "reference": reference_impl.build}
MODELS = ["mlp-mnist", "lenet-mnist", "thesis-2-3-1"]


def _batch(spec, n=7, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, rng.integers(0, spec.num_classes, size=n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_leaves_the_gradients_of_loss_and_grads(impl, name):
    m = IMPLS[impl](name, device="cpu", seed=1)
    x, y = _batch(m.spec)
    loss_ref, grads_ref = m.loss_and_grads(x, y)
    xb, yb = m.device_batch(x, y)
    loss = m.forward_backward(xb, yb)
    assert m.to_numpy(loss).shape == ()
    grads = m.gradients()
    assert list(grads) == list(m.spec.param_shapes())
    # the same computation on the same data: equal up to float32 summation order (none expected; 1e-6)
    assert float(m.to_numpy(loss)) == pytest.approx(loss_ref, rel=1e-6, abs=1e-7)
    for k, shape in m.spec.param_shapes().items():
        g = np.asarray(m.to_numpy(grads[k]))
        assert g.shape == tuple(shape), k
        np.testing.assert_allclose(g, grads_ref[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("impl", IMPLS)
def test_device_batch(impl):
    m = IMPLS[impl]("mlp-mnist", device="cpu")
    x, y = _batch(m.spec, n=5)
    xb, yb = m.device_batch(x.astype(np.float64), list(y))
    assert tuple(xb.shape) == x.shape and tuple(yb.shape) == (5,)
    assert str(xb.dtype).endswith("float32") and str(yb.dtype).endswith("int64")
    np.testing.assert_array_equal(m.to_numpy(yb), y)
    with pytest.raises(ValueError, match="input must have shape"):
        m.device_batch(x[:, :10], y)
    with pytest.raises(ValueError, match="labels must have shape"):
        m.device_batch(x, y[:3])
    with pytest.raises(ValueError, match="must lie in"):
        m.device_batch(x, np.full(5, 10))
    float(m.to_numpy(m.train_step(xb, yb, 0.1, 0.9)))   # device_batch's arrays feed every phase
    m.forward(xb)


def test_build_options():
    with pytest.raises(ValueError, match="use_graph=False.*GPU options.*drop use_graph"):
        custom_impl.build("mlp-mnist", device="cpu", use_graph=False)
    with pytest.raises(ValueError, match="fuse_pool=False.*drop fuse_pool"):
        custom_impl.build("mlp-mnist", device="cpu", fuse_pool=False)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        custom_impl.build("mlp-mnist", device="tpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        reference_impl.build("mlp-mnist", dtype="float16")
    with pytest.raises(ValueError, match="unknown phase"):
        reference_impl.build("mlp-mnist").compiled("backward")


def test_float64_reference_is_the_same_network():
    m32, m64 = reference_impl.build("lenet-mnist", seed=2), reference_impl.build("lenet-mnist", seed=2, dtype="float64")
    x, y = _batch(m32.spec)
    l32, g32 = m32.loss_and_grads(x, y)
    l64, g64 = m64.loss_and_grads(x, y)
    assert g64["0.weight"].dtype == np.float64
    # float32 against float64 through a small CNN: ~1e-6 relative; 1e-4 leaves margin, a bug is order 1
    assert l32 == pytest.approx(l64, rel=1e-4)
    for k in g32:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-4 * np.abs(g64[k]).max(), err_msg=k)


# ------------------------------------------------------------------ harness/ uses only public names
PACKAGES = ("custom_impl", "reference_impl")


def private_uses(source: str) -> list[str]:
    """Private names of custom_impl / reference_impl that ``source`` uses: ``from custom_impl... import _x``,
    imports of a private module (``custom_impl.cpu._parallel``), ``custom_impl._x``, and ``._x`` on any
    object obtained from those packages (a model, a layer-ops module), followed through assignments."""
    tree = ast.parse(source)
    found, tainted = [], set()

    def from_pkg(mod):
        return mod is not None and mod.split(".")[0] in PACKAGES

    def private(name):
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and from_pkg(node.module):
            if any(private(part) for part in node.module.split(".")):
                found.append(f"from {node.module} import")
            for alias in node.names:
                if private(alias.name):
                    found.append(f"{node.module}.{alias.name}")
                tainted.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if from_pkg(alias.name):
                    if any(private(part) for part in alias.name.split(".")):
                        found.append(alias.name)
                    tainted.add((alias.asname or alias.name).split(".")[0])

    def is_tainted(expr) -> bool:
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Name) and sub.id in tainted:
                return True
        return False

    # names bound from an expression involving a package or a value obtained from one (a fixed point)
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            targets, value = [], None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.Return) and node.value is not None and is_tainted(node.value):
                fn = next((f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and node in ast.walk(f)), None)
                if fn is not None and fn.name not in tainted:
                    tainted.add(fn.name)
                    changed = True
                continue
            if value is None or not is_tainted(value):
                continue
            for t in targets:   # plain names only: ``self.x = model`` does not make ``self`` a model
                for sub in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]):
                    if isinstance(sub, ast.Name) and sub.id not in tainted:
                        tainted.add(sub.id)
                        changed = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and is_tainted(node.value):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_private_use_check_catches_private_names():
    snippet = '''
import custom_impl
from custom_impl.gpu import _compile
from custom_impl.cpu.conv import _buf
def make(spec):
    return custom_impl.build(spec)
m = make("x")
loss = m._loss(1, 2)
ops = custom_impl.layer_ops("cpu")
ops._pair(1)
'''
    found = private_uses(snippet)
    assert "custom_impl.gpu._compile" in found and "custom_impl.cpu.conv._buf" in found
    assert any("._loss" in f for f in found) and any("._pair" in f for f in found)
    assert private_uses("import custom_impl\nm = custom_impl.build('a')\nm.forward(1)\nx = object()\nx._y\n") == []


def test_harness_uses_only_public_names():
    harness = pathlib.Path(__file__).resolve().parents[2] / "harness"
    found = {p.name: private_uses(p.read_text()) for p in sorted(harness.glob("*.py"))}
    assert not any(found.values()), {k: v for k, v in found.items() if v}
