"""The CPU layers' thread pool (custom_impl/cpu/_parallel.py): threads change nothing but the time.

Every comparison here is bitwise (np.array_equal, no tolerance): the threaded code only splits copies and
the same elementwise adds over disjoint slices, so each output element is computed by the same float
operations in the same order whatever the thread count.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import custom_impl
from custom_impl.cpu import _parallel, conv, pool, sgd


@pytest.fixture
def submissions(monkeypatch):
    """Counts the chunks handed to pool workers, to prove the threaded path really ran."""
    count = {"n": 0}
    real = _parallel._executor

    class Counting:
        def __init__(self, pool):
            self.pool = pool

        def submit(self, fn, *args):
            count["n"] += 1
            return self.pool.submit(fn, *args)

    monkeypatch.setattr(_parallel, "_executor", lambda n: Counting(real(n)))
    return count


def _with_threads(monkeypatch, threads, fn):
    monkeypatch.setenv(_parallel.ENV_VAR, str(threads))
    return fn()


def _conv_all(x, W, b, stride, padding):
    """Forward (y, cols) and backward (dx, dW, db) of one conv layer, dy fixed by a seed."""
    y, cols = conv.conv2d_forward_cols(x, W, b, stride, padding)
    dy = np.random.default_rng(7).normal(size=y.shape).astype(np.float32)
    dx, dW, db = conv.conv2d_backward_cols(dy, cols, x.shape, W, stride, padding)
    return {"y": y, "cols": cols, "dx": dx, "dW": dW, "db": db}


def _assert_bitwise(serial: dict, threaded: dict, what: str):
    for key in serial:
        assert serial[key].shape == threaded[key].shape, f"{what} {key}: shape"
        assert np.array_equal(serial[key], threaded[key]), (
            f"{what} {key}: threaded result differs from serial, max |diff| = "
            f"{np.abs(serial[key].astype(np.float64) - threaded[key]).max():.3g}")


@pytest.mark.parametrize("n,c,hw,k,kernel,stride,padding", [
    (64, 32, (14, 14), 64, (5, 5), (1, 1), (0, 0)),    # lenet conv2: (p, q, n) columns, no padding
    (64, 1, (28, 28), 32, (5, 5), (1, 1), (2, 2)),     # lenet conv1: C = 1, (n, p, q) columns
    (32, 3, (32, 32), 32, (3, 3), (1, 1), (1, 1)),     # cnn-cifar conv1
    (32, 3, (32, 32), 32, (3, 3), (2, 2), (1, 1)),     # ... stride 2
    (32, 3, (33, 31), 16, (3, 3), (2, 2), (1, 0)),     # ... odd image, uneven padding
    (33, 13, (29, 27), 9, (3, 5), (2, 1), (1, 2)),     # odd everything, overlapping windows
    (7, 5, (40, 37), 11, (4, 3), (1, 2), (0, 0)),      # P*Q >= 512 without padding: col2im returns dxp
])
def test_conv_threads_bitwise(monkeypatch, submissions, n, c, hw, k, kernel, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, c, *hw)).astype(np.float32)
    W = rng.normal(size=(k, c, *kernel)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32)
    # small shapes would stay serial: make every op split, into uneven chunks
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)
    for bias in (b, None):
        submissions["n"] = 0
        serial = _with_threads(monkeypatch, 1, lambda: _conv_all(x, W, bias, stride, padding))
        assert submissions["n"] == 0
        threaded = _with_threads(monkeypatch, 4, lambda: _conv_all(x, W, bias, stride, padding))
        assert submissions["n"] > 0, "the threaded path never ran"
        _assert_bitwise(serial, threaded, f"conv bias={bias is not None}")


def test_conv_default_threshold_splits_lenet(monkeypatch, submissions):
    """At the real threshold a lenet conv2 batch of 64 is big enough to split."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 32, 14, 14)).astype(np.float32)
    W = rng.normal(size=(64, 32, 5, 5)).astype(np.float32)
    b = rng.normal(size=64).astype(np.float32)
    serial = _with_threads(monkeypatch, 1, lambda: _conv_all(x, W, b, (1, 1), (0, 0)))
    threaded = _with_threads(monkeypatch, 4, lambda: _conv_all(x, W, b, (1, 1), (0, 0)))
    assert submissions["n"] > 0
    _assert_bitwise(serial, threaded, "lenet conv2")


@pytest.mark.parametrize("shape,kernel,stride", [((33, 7, 16, 16), (2, 2), (2, 2)),     # tiled: written once
                                                 ((33, 7, 17, 15), (3, 3), (2, 2))])   # overlapping, ragged
def test_maxpool_threads_bitwise(monkeypatch, submissions, shape, kernel, stride):
    rng = np.random.default_rng(3)
    # rounded values make ties (several maxima in a window), so the first-maximum rule is exercised
    x = np.round(rng.normal(size=shape), 1).astype(np.float32)
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)

    def run():
        y = pool.maxpool2d_values(x, kernel, stride)
        dy = np.random.default_rng(4).normal(size=y.shape).astype(np.float32)
        return {"y": y, "dx": pool.maxpool2d_backward_by_compare(dy, x, y, kernel, stride)}

    serial = _with_threads(monkeypatch, 1, run)
    threaded = _with_threads(monkeypatch, 4, run)
    assert submissions["n"] > 0
    _assert_bitwise(serial, threaded, "maxpool")


def test_lenet_train_steps_bitwise(monkeypatch):
    """Whole train steps (conv, pool, dense, SGD) give the same parameters with 1 and 4 copy threads."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=64)

    def train():
        model = custom_impl.build("lenet-mnist", device="cpu", seed=0)
        for _ in range(2):
            model.train_step(x, y, 0.05, 0.9)
        return model.get_params()

    _assert_bitwise(_with_threads(monkeypatch, 1, train), _with_threads(monkeypatch, 4, train), "lenet params")


@pytest.mark.parametrize("value", ["0", "-3", "four", "1.5"])
def test_threads_env_var_validated(monkeypatch, value):
    monkeypatch.setenv(_parallel.ENV_VAR, value)
    with pytest.raises(ValueError, match=f"{_parallel.ENV_VAR}=.*positive integer.*unset it"):
        _parallel.threads()


def test_threads_env_var_and_default(monkeypatch):
    monkeypatch.setenv(_parallel.ENV_VAR, " 3 ")
    assert _parallel.threads() == 3
    monkeypatch.delenv(_parallel.ENV_VAR)
    assert _parallel.threads() >= 1


def test_chunks_cover_range_once(monkeypatch):
    monkeypatch.setenv(_parallel.ENV_VAR, "4")
    seen, lock = [], threading.Lock()

    def record(start, stop):
        with lock:
            seen.append((start, stop))

    _parallel.parallel_chunks(10, record)
    assert sorted(seen) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    seen.clear()
    _parallel.parallel_chunks(10, record, min_items_per_chunk=6)     # too little work for two chunks
    assert seen == [(0, 10)]


def test_chunk_exception_propagates_after_all_chunks(monkeypatch):
    monkeypatch.setenv(_parallel.ENV_VAR, "4")
    done, lock = [], threading.Lock()

    def work(start, stop):
        if start == 50:
            raise RuntimeError("chunk at 50 failed")
        with lock:
            done.append(start)

    with pytest.raises(RuntimeError, match="chunk at 50 failed"):
        _parallel.parallel_chunks(100, work)
    assert sorted(done) == [0, 25, 75], "every other chunk ran to the end before the error was raised"


# ---------------------------------------------------------------------------------------------------------
# Paths added for many-core machines: layer inputs in any memory order, kept buffers, the fused ReLU +
# max pooling and the flat threaded SGD. Every comparison is bitwise again: these paths only copy, select
# and do the same elementwise float operations per element.

def _in_order(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """The same values as a, as a view whose memory holds the axes in ``order`` (outermost first)."""
    return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))


LAYOUTS = {"NCHW": (0, 1, 2, 3), "CNHW": (1, 0, 2, 3), "CHWN": (1, 2, 3, 0)}


@pytest.mark.parametrize("n,c,hw,k,kernel,stride,padding", [
    (33, 13, (11, 9), 9, (3, 5), (2, 1), (1, 2)),      # (p, q, n) columns, overlapping windows
    (7, 5, (40, 37), 11, (4, 3), (1, 2), (0, 0)),      # (n, p, q) columns, no padding: x used in place
    (5, 3, (26, 25), 6, (3, 3), (1, 1), (1, 1)),       # (n, p, q) columns, padded, few channels (split on N)
    (33, 1, (20, 18), 4, (3, 3), (1, 1), (0, 0)),      # (p, q, n), one channel, no padding (split on P)
])
def test_conv_any_input_layout_and_kept_buffers_bitwise(monkeypatch, n, c, hw, k, kernel, stride, padding):
    """x and dy in any memory order, threaded or not, with kept buffers reused over two different inputs:
    the same y, cols, dW, db, dx as a contiguous NCHW call on one thread without buffers."""
    rng = np.random.default_rng(11)
    W = rng.normal(size=(k, c, *kernel)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32)
    xs = [rng.normal(size=(n, c, *hw)).astype(np.float32) for _ in range(2)]
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)

    def run(x, dy_order, buffers, seed):
        y, cols = conv.conv2d_forward_cols(x, W, b, stride, padding, buffers)
        out = {"y": np.array(y), "cols": np.array(cols)}
        dy = _in_order(np.random.default_rng(seed).normal(size=y.shape).astype(np.float32), dy_order)
        dx, dW, db = conv.conv2d_backward_cols(dy, cols, x.shape, W, stride, padding, True, buffers)
        out.update(dx=np.array(dx), dW=np.array(dW), db=np.array(db))
        return out

    expected = [_with_threads(monkeypatch, 1, lambda: run(x, LAYOUTS["NCHW"], None, i)) for i, x in enumerate(xs)]
    for threads in (1, 4):
        for x_name, x_order in LAYOUTS.items():
            for dy_name, dy_order in LAYOUTS.items():
                buffers = {}
                for i, x in enumerate(xs):
                    got = _with_threads(monkeypatch, threads,
                                        lambda: run(_in_order(x, x_order), dy_order, buffers, i))
                    _assert_bitwise(expected[i], got, f"conv x {x_name} dy {dy_name} threads {threads} input {i}")


@pytest.mark.parametrize("shape,kernel,stride", [((33, 7, 16, 16), (2, 2), (2, 2)),    # tiled
                                                 ((13, 9, 17, 15), (3, 3), (2, 2)),    # overlapping, ragged
                                                 ((5, 6, 40, 38), (3, 2), (2, 2))])    # partly covering: row 39 dropped
def test_maxpool_relu_fused_layouts_threads_bitwise(monkeypatch, submissions, shape, kernel, stride):
    """The fused ReLU + max pooling equals ReLU then max pooling (values and routed gradients, ties
    included), for inputs and gradients in any memory order, threaded or not."""
    rng = np.random.default_rng(12)
    # rounded values make ties, among positive values and (after the ReLU) among zeros
    x = np.round(rng.normal(size=shape), 1).astype(np.float32)
    y_shape = pool.maxpool2d_values(x, kernel, stride).shape
    dy = rng.normal(size=y_shape).astype(np.float32)
    # unfused reference: relu, pool, pool backward, relu backward (one thread, contiguous)
    monkeypatch.setenv(_parallel.ENV_VAR, "1")
    xr = np.maximum(x, 0)
    y_ref = pool.maxpool2d_values(xr, kernel, stride)
    dx_ref = pool.maxpool2d_backward_by_compare(dy, xr, y_ref, kernel, stride) * (xr > 0)
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)
    for threads in (1, 4):
        for x_name, x_order in LAYOUTS.items():
            for dy_name, dy_order in LAYOUTS.items():
                submissions["n"] = 0

                def run():
                    xv = _in_order(x, x_order)
                    y = pool.maxpool2d_values(xv, kernel, stride, relu=True)
                    dx = pool.maxpool2d_backward_by_compare(_in_order(dy, dy_order), xv, y, kernel, stride, relu=True)
                    return {"y": np.array(y), "dx": np.array(dx)}

                got = _with_threads(monkeypatch, threads, run)
                assert (submissions["n"] > 0) == (threads > 1)
                # array_equal: the unfused order may leave -0.0 where the fused one leaves 0.0 (equal values)
                _assert_bitwise({"y": y_ref, "dx": dx_ref}, got, f"maxpool+relu x {x_name} dy {dy_name} t {threads}")


@pytest.mark.parametrize("name,batch", [("cnn-cifar", 33), ("digits-cnn", 7), ("mlp-deep", 5)])
def test_zoo_train_steps_threads_bitwise(monkeypatch, name, batch):
    """Whole train steps with every copy, pooling and SGD call split (tiny chunk threshold) give the same
    parameters and losses on 1 and 4 threads."""
    rng = np.random.default_rng(13)
    spec = custom_impl.build(name, device="cpu").spec
    x = rng.normal(size=(batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=batch)
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)

    def train():
        model = custom_impl.build(name, device="cpu", seed=0)
        losses = [model.train_step(x, y, 0.05, m) for m in (0.0, 0.9, 0.9)]
        return {**model.get_params(), **{f"loss{i}": np.array(v) for i, v in enumerate(losses)}}

    _assert_bitwise(_with_threads(monkeypatch, 1, train), _with_threads(monkeypatch, 4, train), f"{name} params")


def test_flat_sgd_threads_bitwise_and_per_parameter(monkeypatch):
    """FlatSGD over one buffer (split over threads and blocks) = sgd_step on each parameter on its own,
    with momentum changing between steps (0 first: no velocity yet; then 0.9; back to 0; 0.5)."""
    rng = np.random.default_rng(14)
    sizes = [1, 30_001, 7, 71_993]                       # odd parameter sizes, not multiples of anything
    total = sum(sizes)
    w0 = rng.normal(size=total).astype(np.float32)
    grads = [rng.normal(size=total).astype(np.float32) for _ in range(5)]
    momenta = [0.0, 0.9, 0.9, 0.0, 0.5]
    monkeypatch.setattr(_parallel, "MIN_CHUNK_BYTES", 4096)
    monkeypatch.setattr(sgd, "BLOCK", 1000)             # several blocks per thread, a ragged last one

    def flat():
        w, opt = w0.copy(), sgd.FlatSGD()
        for g, m in zip(grads, momenta):
            opt.step(w, g, 0.05, m)
        return {"w": w, "v": opt.velocity}

    bounds = np.cumsum([0] + sizes)
    ref_w, ref_v = w0.copy(), [None] * len(sizes)
    for g, m in zip(grads, momenta):
        for i in range(len(sizes)):
            a, b = bounds[i], bounds[i + 1]
            ref_v[i] = sgd.sgd_step(ref_w[a:b], g[a:b], ref_v[i], 0.05, m)
    ref = {"w": ref_w, "v": np.concatenate(ref_v)}
    _assert_bitwise(ref, _with_threads(monkeypatch, 1, flat), "flat sgd, 1 thread")
    _assert_bitwise(ref, _with_threads(monkeypatch, 4, flat), "flat sgd, 4 threads")


def test_flat_sgd_momentum_zero_keeps_no_velocity():
    w, g = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    opt = sgd.FlatSGD()
    opt.step(w, g, 0.5, 0.0)
    assert opt.velocity is None and w.tolist() == [0.0, 0.0, 0.0]
