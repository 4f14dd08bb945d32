"""harness.data: the digits split, IDX and CIFAR-10 readers (files written in tmp_path), train/accuracy."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from harness.data import accuracy, load_cifar10_batch, load_digits_split, load_mnist_idx, predict, train


def write_idx(path, array: np.ndarray, compress: bool = False, magic: bytes | None = None) -> None:
    """Write a uint8 array as an IDX file: magic 00 00 08 ndim, big-endian uint32 dims, then the bytes."""
    head = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    data = head + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as fh:
        fh.write(data)


@pytest.fixture
def mnist_arrays():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)   # (N, 28, 28), odd N
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)               # (N,)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_round_trip(tmp_path, mnist_arrays, compress):
    images, labels = mnist_arrays
    ip, lp = tmp_path / "img.idx", tmp_path / "lab.idx"
    write_idx(ip, images, compress)
    write_idx(lp, labels, compress)
    x, y = load_mnist_idx(ip, lp)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64 and np.array_equal(y, labels)
    assert np.array_equal(x[:, 0], images.astype(np.float32) / 255.0)  # exact: one division per byte
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_mnist_bad_magic(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write_idx(tmp_path / "i", images, magic=b"\x00\x00\x0d\x03")  # float data type, not ubyte
    write_idx(tmp_path / "l", labels)
    with pytest.raises(ValueError, match=r"bad IDX magic number 0x00000d03; expected 0x00000803"):
        load_mnist_idx(tmp_path / "i", tmp_path / "l")


def test_mnist_swapped_files(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    with pytest.raises(ValueError, match=r"has 3 dimension\(s\), this one has 1.*swapped"):
        load_mnist_idx(tmp_path / "l", tmp_path / "i")


def test_mnist_truncated(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    data = (tmp_path / "i").read_bytes()
    (tmp_path / "i").write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"header says dims \(7, 28, 28\) = 5488 bytes of data, file has 5388"):
        load_mnist_idx(tmp_path / "i", tmp_path / "l")
    (tmp_path / "i").write_bytes(data[:10])
    with pytest.raises(ValueError, match=r"truncated IDX header"):
        load_mnist_idx(tmp_path / "i", tmp_path / "l")


def test_mnist_corrupt_gzip(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write_idx(tmp_path / "i.gz", images, compress=True)
    write_idx(tmp_path / "l", labels)
    data = (tmp_path / "i.gz").read_bytes()
    (tmp_path / "i.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read the gzip stream"):
        load_mnist_idx(tmp_path / "i.gz", tmp_path / "l")


def test_mnist_count_mismatch_and_missing(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels[:5])
    with pytest.raises(ValueError, match=r"holds 7 images but .* holds 5 labels"):
        load_mnist_idx(tmp_path / "i", tmp_path / "l")
    with pytest.raises(FileNotFoundError, match=r"nope: no such file"):
        load_mnist_idx(tmp_path / "nope", tmp_path / "l")


def test_mnist_label_out_of_range(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    labels = labels.copy()
    labels[2] = 12
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    with pytest.raises(ValueError, match=r"MNIST labels are 0..9, found 12"):
        load_mnist_idx(tmp_path / "i", tmp_path / "l")


def _cifar_bytes(n, seed=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)     # (N, 3, 32, 32) channel-major
    rec = np.concatenate([labels[:, None], pixels.reshape(n, -1)], axis=1)  # (N, 3073)
    return rec.tobytes(), labels, pixels


def test_cifar_round_trip(tmp_path):
    data, labels, pixels = _cifar_bytes(5)
    (tmp_path / "b.bin").write_bytes(data)
    x, y = load_cifar10_batch(tmp_path / "b.bin")
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(y, labels)
    assert np.array_equal(x, pixels.astype(np.float32) / 255.0)
    # channel-major layout: the red plane of record 0 is bytes 1..1024, row-major
    assert x[0, 0, 0, 1] == data[2] / 255.0 and x[0, 1, 0, 0] == np.float32(data[1 + 1024] / 255.0)


def test_cifar_bad_size(tmp_path):
    data, _, _ = _cifar_bytes(3)
    (tmp_path / "b.bin").write_bytes(data[:-7])
    with pytest.raises(ValueError, match=r"size 9212 bytes is not a positive multiple of the CIFAR-10 record size 3073"):
        load_cifar10_batch(tmp_path / "b.bin")
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"size 0 bytes"):
        load_cifar10_batch(tmp_path / "e.bin")


def test_cifar_bad_label(tmp_path):
    data, _, _ = _cifar_bytes(3)
    data = bytearray(data)
    data[3073] = 200  # label byte of record 1
    (tmp_path / "b.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"record 1 has label 200"):
        load_cifar10_batch(tmp_path / "b.bin")


def test_digits_split():
    xtr, ytr, xte, yte = load_digits_split(seed=0, test_size=0.25)
    assert xtr.shape == (1347, 64) and xte.shape == (450, 64)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0 and xtr.max() == 1.0
    assert set(np.unique(yte)) == set(range(10))
    again = load_digits_split(seed=0, test_size=0.25)
    assert all(np.array_equal(a, b) for a, b in zip((xtr, ytr, xte, yte), again))  # fixed split
    itr, _, ite, _ = load_digits_split(seed=0, image=True)
    assert itr.shape == (1347, 1, 8, 8) and np.array_equal(itr.reshape(-1, 64), xtr)
    with pytest.raises(ValueError, match=r"test_size must lie in \(0, 1\)"):
        load_digits_split(test_size=1.5)


class _Counter:
    """A stand-in model of the contract: records the batches it sees, predicts x[:, 0] > 0.5 as class."""

    def __init__(self, binary=False):
        self.seen, self.binary = [], binary

    def train_step(self, x, y, lr, momentum=0.0):
        self.seen.append((x.shape[0], lr, momentum))
        return np.float32(len(self.seen))

    def forward(self, x):
        s = x[:, 0] - 0.5
        return s[:, None] if self.binary else np.stack([-s, s], axis=1)

    def to_numpy(self, a):
        return a


def test_train_and_accuracy_with_any_model():
    x = np.random.default_rng(0).random((37, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    m = _Counter()
    hist = train(m, x, y, epochs=2, batch_size=8, lr=0.1, momentum=0.9, seed=1)
    assert [n for n, _, _ in m.seen] == [8, 8, 8, 8, 5] * 2 and len(hist) == 2
    assert all(lr == 0.1 and mom == 0.9 for _, lr, mom in m.seen)
    assert accuracy(m, x, y, batch_size=5) == 1.0
    assert accuracy(_Counter(binary=True), x, 1 - y) == 0.0
    assert np.array_equal(predict(_Counter(binary=True), x), y)
    with pytest.raises(ValueError, match=r"same, non-zero number of samples"):
        train(m, x, y[:-1], 1, 8, 0.1)
