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
from custom_impl.cpu import _parallel, conv, pool


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
    y, cols = conv.conv2d_forward(x, W, b, stride, padding)
    dy = np.random.default_rng(7).normal(size=y.shape).astype(np.float32)
    dx, dW, db = conv.conv2d_backward(dy, cols, x.shape, W, stride, padding)
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
        y = pool.maxpool2d_forward(x, kernel, stride)
        dy = np.random.default_rng(4).normal(size=y.shape).astype(np.float32)
        return {"y": y, "dx": pool.maxpool2d_backward(dy, x, y, kernel, stride)}

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
