"""Datasets and a plain training loop for models of the contract (docs/DESIGN.md).

Loaders return float32 inputs scaled to [0, 1] and int64 labels:

    load_digits_split(...)   scikit-learn's bundled 8x8 digits: (N, 64) or (N, 1, 8, 8), fixed split
    load_mnist_idx(...)      MNIST IDX files (gzip or raw): (N, 1, 28, 28)  (any rows x cols, in fact)
    load_cifar10_batch(...)  a CIFAR-10 binary batch file: (N, 3, 32, 32)

``train`` and ``accuracy`` take the model as an argument; nothing here imports an implementation.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

IDX_UBYTE = 0x08          # IDX data type code for unsigned bytes (the only one MNIST uses)
CIFAR_RECORD = 1 + 3 * 32 * 32


def load_digits_split(seed: int = 0, test_size: float = 0.25, image: bool = False):
    """The 1797 8x8 digits of ``sklearn.datasets.load_digits``, split into train and test.

    Pixel values 0..16 are divided by 16 (-> [0, 1]). The split is stratified and fixed by ``seed``.
    Returns ``(x_train, y_train, x_test, y_test)``: x float32 (N, 64), or (N, 1, 8, 8) when ``image``;
    y int64 (N,) in 0..9.

    >>> xtr, ytr, xte, yte = load_digits_split()
    >>> xtr.shape, xte.shape
    ((1347, 64), (450, 64))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)          # (N, 64)
    y = d.target.astype(np.int64)                   # (N,)
    if image:
        x = x.reshape(-1, 1, 8, 8)                  # (N, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return (np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte)


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open  # gzip magic, whatever the file is called
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read the gzip stream ({err}); the file is truncated or corrupt") from None


def _parse_idx(path, data: bytes, ndim: int, what: str) -> np.ndarray:
    """An IDX array: magic 0x0000 | type 0x08 | ndim, then ndim big-endian uint32 sizes, then the bytes."""
    if len(data) < 4:
        raise ValueError(f"{path}: too short ({len(data)} bytes) to be an IDX file")
    zero, dtype, got_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != IDX_UBYTE:
        raise ValueError(f"{path}: bad IDX magic number 0x{data[:4].hex()}; expected 0x000008{ndim:02x} "
                         f"for an MNIST {what} file")
    if got_ndim != ndim:
        raise ValueError(f"{path}: an MNIST {what} file has {ndim} dimension(s), this one has {got_ndim} "
                         f"(magic 0x{data[:4].hex()}); are images and labels swapped?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    want = int(np.prod(dims, dtype=np.int64))
    have = len(data) - header
    if have != want:
        raise ValueError(f"{path}: header says dims {dims} = {want} bytes of data, file has {have}; "
                         "the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_idx(images_path, labels_path):
    """MNIST from IDX files (``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``).

    Checks the magic numbers (0x00000803 images, 0x00000801 labels), the dimensions and that both files
    hold the same number of samples. Returns x float32 (N, 1, rows, cols) = bytes / 255 and y int64 (N,).
    """
    images = _parse_idx(images_path, _read_bytes(images_path), 3, "images")    # (N, rows, cols) uint8
    labels = _parse_idx(labels_path, _read_bytes(labels_path), 1, "labels")    # (N,) uint8
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{os.fspath(images_path)} holds {images.shape[0]} images but {os.fspath(labels_path)} "
                         f"holds {labels.shape[0]} labels; they must come from the same set")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{os.fspath(labels_path)}: MNIST labels are 0..9, found {int(labels.max())}")
    x = (images.astype(np.float32) / 255.0)[:, None]                            # (N, 1, rows, cols)
    return x, labels.astype(np.int64)


def load_cifar10_batch(path):
    """One CIFAR-10 binary batch (``data_batch_1.bin`` ...): records of 1 label byte + 3072 pixel bytes.

    Pixels are stored channel-major (1024 red, 1024 green, 1024 blue, each row-major 32x32). Returns
    x float32 (N, 3, 32, 32) = bytes / 255 and y int64 (N,) in 0..9.
    """
    data = _read_bytes(path)
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise ValueError(f"{os.fspath(path)}: size {len(data)} bytes is not a positive multiple of the "
                         f"CIFAR-10 record size {CIFAR_RECORD} (1 label byte + 3*32*32 pixel bytes); "
                         "is this the binary version of the batch file?")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)      # (N, 3073)
    y = rec[:, 0].astype(np.int64)                                          # (N,)
    if y.max() > 9:
        bad = int(np.argmax(y > 9))
        raise ValueError(f"{os.fspath(path)}: record {bad} has label {int(y[bad])}; CIFAR-10 labels are 0..9")
    x = (rec[:, 1:].astype(np.float32) / 255.0).reshape(-1, 3, 32, 32)      # (N, 3, 32, 32)
    return x, y


def train(model, x, y, epochs: int, batch_size: int, lr: float, momentum: float = 0.0, seed: int = 0) -> list[float]:
    """Minibatch SGD: each epoch visits the samples in a fresh random order (fixed by ``seed``).

    model: anything with ``train_step(x, y, lr, momentum)`` (the model contract). The last batch of an
    epoch may be smaller. Returns the mean training loss of each epoch (one host sync per epoch).
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of samples, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            losses.append(model.train_step(np.ascontiguousarray(x[idx]), y[idx], lr, momentum))
        history.append(float(np.mean([float(v) for v in losses])))
    return history


def predict(model, x, batch_size: int = 1024) -> np.ndarray:
    """Predicted classes (N,): argmax of the logits, or logit > 0 for a one-logit (binary) model."""
    out = []
    for start in range(0, len(x), batch_size):
        logits = np.asarray(model.to_numpy(model.forward(np.ascontiguousarray(x[start:start + batch_size]))))
        out.append((logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(axis=1))
    return np.concatenate(out)


def accuracy(model, x, y, batch_size: int = 1024) -> float:
    """Fraction of samples whose predicted class equals the label, in [0, 1]."""
    return float(np.mean(predict(model, x, batch_size) == np.asarray(y)))
