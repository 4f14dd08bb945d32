"""harness.data: the digits split, IDX and CIFAR-10 readers and folders (files written in tmp_path), dataset names,
the synthetic sets, train/accuracy and divergence."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from harness.data import (SYNTHETIC_SHAPES, DatasetSpec, Diverged, accuracy, load_cifar10_batch, load_cifar10_folder,
                          load_dataset, load_digits_split, load_mnist_folder, load_mnist_idx, mnist_files, parse_dataset,
                          predict, synthetic_set, synthetic_teacher, synthetic_test_size, train)


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


# --- dataset folders: MNIST / Fashion-MNIST (IDX) and CIFAR-10 (binary batches) ------------------------

def _mnist_folder(folder, n_train=9, n_test=5, compress=False, size=28, seed=5):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        ext = ".gz" if compress else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", labels, compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_folder_round_trip(tmp_path, compress):
    arrays = _mnist_folder(tmp_path / "m", compress=compress)
    xtr, ytr, xte, yte = load_mnist_folder(tmp_path / "m")
    assert xtr.shape == (9, 1, 28, 28) and xte.shape == (5, 1, 28, 28)
    assert np.array_equal(ytr, arrays["train"][1]) and np.array_equal(yte, arrays["t10k"][1])
    assert np.array_equal(xte[:, 0], arrays["t10k"][0].astype(np.float32) / 255.0)


def test_mnist_folder_names_what_is_missing_or_wrong(tmp_path):
    _mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_mnist_folder(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=r"no such folder"):
        mnist_files(tmp_path / "nope")
    _mnist_folder(tmp_path / "small", size=20)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: images are 20x20, expected 28x28"):
        load_mnist_folder(tmp_path / "small")
    _mnist_folder(tmp_path / "bad")
    path = tmp_path / "bad" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])                       # a truncated file
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: header says dims \(9, 28, 28\)"):
        load_mnist_folder(tmp_path / "bad")


def _cifar_folder(folder, per_batch=2):
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        data, y, _ = _cifar_bytes(per_batch + (i == 5), seed=10 + i)
        (folder / name).write_bytes(data)
        labels.append(y)
    return labels


def test_cifar10_folder_and_its_subfolder(tmp_path):
    labels = _cifar_folder(tmp_path / "c" / "cifar-10-batches-bin")
    for where in (tmp_path / "c", tmp_path / "c" / "cifar-10-batches-bin"):
        xtr, ytr, xte, yte = load_cifar10_folder(where)
        assert xtr.shape == (10, 3, 32, 32) and xte.shape == (3, 3, 32, 32)
        assert np.array_equal(ytr, np.concatenate(labels[:5])) and np.array_equal(yte, labels[5])
    (tmp_path / "c" / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*data_batch_3\.bin"):
        load_cifar10_folder(tmp_path / "c")


def test_cifar10_folder_with_a_damaged_batch_names_the_file(tmp_path):
    _cifar_folder(tmp_path / "c")
    path = tmp_path / "c" / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"data_batch_2\.bin: size 6145 bytes is not a positive multiple"):
        load_cifar10_folder(tmp_path / "c")


# --- dataset names ----------------------------------------------------------------------------------------

def test_parse_dataset_forms(tmp_path):
    _mnist_folder(tmp_path / "m")
    assert parse_dataset("digits") == DatasetSpec("digits")
    assert parse_dataset(f"fashion-mnist:{tmp_path / 'm'}").folder == str(tmp_path / "m")
    assert parse_dataset(f"mnist:{tmp_path / 'm'}").name == "mnist"       # results never carry the path
    assert parse_dataset("synthetic-cifar").n == 60_000
    assert parse_dataset("synthetic-mnist:1_000").name == "synthetic-mnist:1000"
    assert parse_dataset("synthetic-cifar:7").sample_shape == (3, 32, 32)


@pytest.mark.parametrize("text, needle", [
    ("mnits", "unknown dataset 'mnits' (did you mean 'mnist'?)"),
    ("mnist", "write mnist:DIR"),
    ("digits:5", "digits takes no argument"),
    ("synthetic-mnist:0", "N (training samples) must be a whole number from 1"),
    ("synthetic-mnist:1e5", "must be a whole number"),
    ("cifar10:/no/such/folder", "no such folder"),
    ("", "non-empty name"),
])
def test_parse_dataset_refuses_clearly(text, needle):
    with pytest.raises(ValueError) as err:
        parse_dataset(text)
    assert needle in str(err.value)


# --- the synthetic sets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["synthetic-mnist", "synthetic-cifar"])
def test_synthetic_set_is_deterministic_by_seed_and_balanced(kind):
    x, y = synthetic_set(kind, 3000, seed=0)
    again_x, again_y = synthetic_set(kind, 3000, seed=0)
    assert np.array_equal(x, again_x) and np.array_equal(y, again_y)          # the same seed: the same bits
    other_x, other_y = synthetic_set(kind, 3000, seed=1)
    assert not np.array_equal(x, other_x) and not np.array_equal(y, other_y)
    assert x.shape == (3000, *SYNTHETIC_SHAPES[kind]) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0 and 0.4 < x.mean() < 0.6 and x.std() > 0.2
    share = np.bincount(y, minlength=10) / len(y)
    # balanced by the teacher's offsets to within a few percent; 3000 draws add a binomial sd of 0.55
    # points per class: every class holds 7-13% of the samples
    assert share.min() > 0.07 and share.max() < 0.13, share
    # odd sizes across chunk boundaries: the first samples do not depend on how many are drawn after them
    small_x, small_y = synthetic_set(kind, 7, seed=0)
    assert small_x.shape[0] == 7 and np.array_equal(small_y, y[:7]) and np.array_equal(small_x, x[:7])


def test_synthetic_labels_follow_the_teacher():
    """The label of every sample is the teacher's class of its (recovered) latent code: a least-squares
    read-out of z from the pixels, pushed through the teacher, gives back almost every label."""
    x, y = synthetic_set("synthetic-mnist", 2000, seed=0)
    t = synthetic_teacher(SYNTHETIC_SHAPES["synthetic-mnist"], 0)
    u = (x.reshape(len(x), -1) - 0.5) / 0.3                        # z @ basis + noise, where not clipped
    z, *_ = np.linalg.lstsq(t.basis.T.astype(np.float64), u.T.astype(np.float64), rcond=None)
    labels = (np.tanh(z.T @ t.w1 + t.b1) @ t.w2 - t.offsets).argmax(axis=1)
    # clipping (7% of pixels) and pixel noise blur the read-out a little; the margin keeps codes off the
    # decision boundaries, so nearly all labels come back (measured 99.6%)
    assert np.mean(labels == y) > 0.97


def test_load_dataset_synthetic_splits_train_and_test():
    xtr, ytr, xte, yte = load_dataset(parse_dataset("synthetic-mnist:1200"))
    assert xtr.shape == (1200, 1, 28, 28) and xte.shape == (synthetic_test_size(1200), 1, 28, 28) == (500, 1, 28, 28)
    assert len(ytr) == 1200 and len(yte) == 500


# --- divergence -----------------------------------------------------------------------------------------------

class _Exploding(_Counter):
    """Its loss is finite for ``good`` steps, then NaN (weights gone)."""

    def __init__(self, good):
        super().__init__()
        self.good = good

    def train_step(self, x, y, lr, momentum=0.0):
        super().train_step(x, y, lr, momentum)
        return np.float32(1.0) if len(self.seen) <= self.good else np.float32("nan")


def test_train_stops_at_the_epoch_whose_loss_is_not_finite():
    x = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    m = _Exploding(good=7)                            # 3 steps an epoch: epochs 1-2 fine, step 8 of epoch 3 NaN
    with pytest.raises(Diverged, match=r"training diverged in epoch 3: the mean training loss is nan \(not finite\).*\(lr = 50\)"):
        train(m, x, y, epochs=5, batch_size=8, lr=50, momentum=0.9)
    assert len(m.seen) == 9                           # the run stopped at the end of epoch 3
