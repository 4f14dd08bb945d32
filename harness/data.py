"""Datasets and a plain training loop for models of the contract (docs/model-contract.md).

Loaders return float32 inputs scaled to [0, 1] and int64 labels:

    load_digits_split(...)   scikit-learn's bundled 8x8 digits: (N, 64) or (N, 1, 8, 8), fixed split
    load_mnist_idx(...)      MNIST IDX files (gzip or raw): (N, 1, 28, 28)  (any rows x cols, in fact)
    load_cifar10_batch(...)  a CIFAR-10 binary batch file: (N, 3, 32, 32)
    load_mnist_folder(...)   the four MNIST / Fashion-MNIST files of a folder: train and test sets
    load_cifar10_folder(...) the six CIFAR-10 binary batches of a folder: train and test sets
    synthetic_set(...)       a synthetic set of MNIST or CIFAR shape, labelled by a fixed random teacher,
                             of any size, drawn with NumPy or (on the GPU) CuPy from a seed

``parse_dataset`` turns the names the command line takes (``digits``, ``mnist:DIR``, ``fashion-mnist:DIR``,
``cifar10:DIR``, ``synthetic-mnist[:N]``, ``synthetic-cifar[:N]``) into a ``DatasetSpec``; ``load_dataset``
loads one. ``train`` and ``accuracy`` take the model as an argument; nothing here imports an
implementation.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import math
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


# ================================================================================ datasets of a folder
MNIST_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
               "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SUBFOLDER = "cifar-10-batches-bin"     # what the CIFAR-10 binary archive unpacks to


def mnist_files(folder) -> dict[str, str]:
    """The four MNIST (or Fashion-MNIST: same names) files of ``folder``, each raw or ``.gz``.

    Returns ``{"x_train": path, "y_train": path, "x_test": path, "y_test": path}``; raises
    FileNotFoundError naming the folder and every missing file.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder; pass the folder that holds "
                                f"{', '.join(MNIST_FILES.values())} (each raw or .gz)")
    found, missing = {}, []
    for key, name in MNIST_FILES.items():
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(f'{m}[.gz]' for m in missing)}; an MNIST or "
                                f"Fashion-MNIST folder holds {', '.join(MNIST_FILES.values())} (each raw or .gz, "
                                "as downloaded)")
    return found


def load_mnist_folder(folder, rows: int = 28, cols: int = 28):
    """MNIST or Fashion-MNIST from the four files of ``folder`` (``mnist_files``).

    Returns ``(x_train, y_train, x_test, y_test)``: x float32 (N, 1, rows, cols) in [0, 1], y int64 (N,).
    Images of another size than rows x cols are refused naming the file.
    """
    paths = mnist_files(folder)
    out = []
    for split in ("train", "test"):
        x, y = load_mnist_idx(paths[f"x_{split}"], paths[f"y_{split}"])
        if x.shape[2:] != (rows, cols):
            raise ValueError(f"{paths[f'x_{split}']}: images are {x.shape[2]}x{x.shape[3]}, expected "
                             f"{rows}x{cols} for an MNIST-shaped set")
        out += [x, y]
    return tuple(out)


def cifar10_files(folder) -> tuple[list[str], str]:
    """The five training batches and the test batch of CIFAR-10's binary version in ``folder`` (or in its
    ``cifar-10-batches-bin`` subfolder); FileNotFoundError naming what is missing."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder; pass the folder that holds the CIFAR-10 binary "
                                f"batches ({', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE})")
    names = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    for base in (folder, os.path.join(folder, CIFAR10_SUBFOLDER)):
        if all(os.path.isfile(os.path.join(base, n)) for n in names):
            return [os.path.join(base, n) for n in CIFAR10_TRAIN_FILES], os.path.join(base, CIFAR10_TEST_FILE)
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (also looked in {CIFAR10_SUBFOLDER}/); a "
                            f"CIFAR-10 folder holds the binary version's {', '.join(names)} (the Python-pickle "
                            "version is not read)")


def load_cifar10_folder(folder):
    """CIFAR-10's binary version from ``folder``: 50,000 training and 10,000 test images (fewer if the
    batch files hold fewer). Returns ``(x_train, y_train, x_test, y_test)``, x float32 (N, 3, 32, 32)."""
    train_paths, test_path = cifar10_files(folder)
    parts = [load_cifar10_batch(p) for p in train_paths]
    x_test, y_test = load_cifar10_batch(test_path)
    return (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]), x_test, y_test)


# ================================================================================ the synthetic sets
# A sample: a latent code z ~ N(0, I_L) is rendered as an image x = clip(0.5 + CONTRAST * (z @ B + NOISE * e),
# 0, 1), where the basis B (L, C*H*W) holds one smooth random pattern per latent dimension (a random
# (C, H/4, W/4) grid, bilinearly upsampled; every pixel of z @ B has unit variance) and e ~ N(0, 1) is pixel
# noise. The label is the class the teacher network gives z: argmax(tanh(z @ W1 + b1) @ W2 - offsets).
# Only codes whose two best teacher logits differ by at least MARGIN (a fraction of the logits' spread)
# are kept, so that no sample sits on a decision boundary (without that margin, measured on the CPU,
# mlp-mnist stalled near 85% test accuracy; with it, 95% after one epoch of 20,000 samples). The offsets
# balance the classes among the kept codes. The teacher and the basis are small and drawn on the host;
# the samples are drawn where they will be used (NumPy, or CuPy's cuRAND on the GPU), in chunks.
SYNTHETIC_SHAPES = {"synthetic-mnist": (1, 28, 28), "synthetic-cifar": (3, 32, 32)}
SYNTHETIC_DEFAULT_N = 60_000          # training samples when no size is given (MNIST's count)
SYNTHETIC_MAX_N = 50_000_000
SYNTHETIC_LATENT = 8                  # L: latent dimensions
SYNTHETIC_HIDDEN = 32                 # the teacher's hidden units
SYNTHETIC_TEACHER_GAIN = 0.6          # scale of W1: tanh stays mildly non-linear
SYNTHETIC_MARGIN = 0.3                # kept codes: best logit - second best >= this x the logits' std
SYNTHETIC_CONTRAST = 0.3
SYNTHETIC_NOISE = 0.3
SYNTHETIC_CHUNK = 16_384              # codes drawn per chunk (bounds the temporary memory)
NUM_CLASSES = 10


def synthetic_test_size(n_train: int) -> int:
    """Test samples drawn after ``n_train`` training samples: a sixth of them (MNIST's ratio), 500..10,000."""
    return max(500, min(10_000, n_train // 6))


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear interpolation (n_out, n_in) with aligned corners: row i mixes the two nearest inputs."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    t = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - t)
    np.add.at(m, (np.arange(n_out), hi), t)
    return m


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """The fixed parts of a synthetic set (host float32 arrays): basis (L, D), w1 (L, H), b1 (H,),
    w2 (H, K), offsets (K,), and the logit margin a kept code must have."""

    basis: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    offsets: np.ndarray
    margin: float


@functools.lru_cache(maxsize=8)
def synthetic_teacher(shape: tuple[int, int, int], seed: int = 0) -> Teacher:
    """The teacher and rendering basis of a synthetic set of sample ``shape`` (C, H, W), from ``seed``."""
    c, h, w = shape
    rng = np.random.default_rng([seed, 0x7EAC])   # its own stream: the samples use ``seed`` alone
    coarse = rng.standard_normal((SYNTHETIC_LATENT, c, max(2, h // 4), max(2, w // 4)))
    uh, uw = _upsample_matrix(h, coarse.shape[2]), _upsample_matrix(w, coarse.shape[3])
    basis = np.einsum("hi,lcij,wj->lchw", uh, coarse, uw).reshape(SYNTHETIC_LATENT, -1)   # (L, D)
    basis /= np.sqrt((basis ** 2).sum(axis=0, keepdims=True))                            # unit pixel variance
    w1 = rng.standard_normal((SYNTHETIC_LATENT, SYNTHETIC_HIDDEN)) * (SYNTHETIC_TEACHER_GAIN / math.sqrt(SYNTHETIC_LATENT))
    b1 = rng.standard_normal(SYNTHETIC_HIDDEN) * 0.5
    w2 = rng.standard_normal((SYNTHETIC_HIDDEN, NUM_CLASSES)) / math.sqrt(SYNTHETIC_HIDDEN)
    # Balance the classes among kept codes on a calibration sample (host, fixed by the seed): raise the
    # offset of a class that wins too often, lower it for one that wins too rarely.
    logits = np.tanh(rng.standard_normal((40_000, SYNTHETIC_LATENT)) @ w1 + b1) @ w2   # (M, K)
    margin = SYNTHETIC_MARGIN * float(logits.std())
    offsets = np.zeros(NUM_CLASSES)
    for _ in range(150):
        shifted = logits - offsets
        top2 = np.partition(shifted, NUM_CLASSES - 2, axis=1)[:, -2:]      # second best, best
        kept = shifted[top2[:, 1] - top2[:, 0] >= margin]
        share = np.bincount(kept.argmax(axis=1), minlength=NUM_CLASSES) / max(1, len(kept))
        offsets += 0.1 * (share - 1.0 / NUM_CLASSES) / max(margin, 1e-6)
    f32 = np.float32
    return Teacher(basis.astype(f32), w1.astype(f32), b1.astype(f32), w2.astype(f32), offsets.astype(f32), margin)


def synthetic_set(kind: str, n: int, seed: int = 0, xp=np):
    """``n`` samples of the synthetic set ``kind`` ("synthetic-mnist" or "synthetic-cifar"), drawn from
    ``seed`` with the array module ``xp`` (NumPy; or CuPy, which draws them on the GPU: nothing crosses
    from the host but the teacher's few kilobytes).

    Returns x float32 (n, C, H, W) in [0, 1] and y int64 (n,) in 0..9, classes balanced to within a few
    percent. The same (kind, n, seed, xp) gives the same arrays; NumPy and CuPy draw different (identically
    distributed) samples. See the comment above ``SYNTHETIC_SHAPES`` for how a sample is made.

    >>> x, y = synthetic_set("synthetic-mnist", 5, seed=1)
    >>> x.shape, y.shape, x.dtype, y.dtype
    ((5, 1, 28, 28), (5,), dtype('float32'), dtype('int64'))
    """
    if kind not in SYNTHETIC_SHAPES:
        raise ValueError(f"unknown synthetic set {kind!r}; choose one of {', '.join(SYNTHETIC_SHAPES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= SYNTHETIC_MAX_N:
        raise ValueError(f"{kind}: the number of samples must be a whole number from 1 to {SYNTHETIC_MAX_N:,}, got {n!r}")
    shape = SYNTHETIC_SHAPES[kind]
    t = synthetic_teacher(shape, seed)
    basis, w1, b1, w2, offsets = (xp.asarray(a) for a in (t.basis, t.w1, t.b1, t.w2, t.offsets))
    # NumPy's Generator, or CuPy's RandomState (cuRAND): both draw float32 normals with standard_normal
    rng = np.random.default_rng(seed) if xp is np else xp.random.RandomState(seed)
    d = basis.shape[1]
    x = xp.empty((n, d), dtype=np.float32)      # (N, C*H*W)
    y = xp.empty((n,), dtype=np.int64)          # (N,)
    filled = 0
    while filled < n:
        z = rng.standard_normal((SYNTHETIC_CHUNK, SYNTHETIC_LATENT), dtype=np.float32)   # (M, L) codes
        logits = xp.tanh(z @ w1 + b1) @ w2 - offsets                              # (M, K)
        top2 = xp.sort(logits, axis=1)[:, -2:]                                       # second best, best
        keep = xp.nonzero(top2[:, 1] - top2[:, 0] >= t.margin)[0]                # kept rows, in order
        if int(keep.shape[0]) == 0:
            continue
        # NOTE: every kept row of the chunk is drawn and projected, also where fewer are needed: a BLAS
        # product's rounding may depend on its row count, and a sample must not depend on how many follow
        z = z[keep]
        u = z @ basis + SYNTHETIC_NOISE * rng.standard_normal((int(keep.shape[0]), d), dtype=np.float32)
        k = min(int(keep.shape[0]), n - filled)
        x[filled:filled + k] = xp.clip(0.5 + SYNTHETIC_CONTRAST * u[:k], 0.0, 1.0)
        y[filled:filled + k] = logits[keep[:k]].argmax(axis=1)
        filled += k
    return x.reshape((n, *shape)), y


# ================================================================================ datasets by name
DATASET_KINDS = ("digits", "mnist", "fashion-mnist", "cifar10", "synthetic-mnist", "synthetic-cifar")
SAMPLE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                 **SYNTHETIC_SHAPES}
_FOLDER_KINDS = ("mnist", "fashion-mnist", "cifar10")
DATASET_FORMS = ("digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, synthetic-mnist[:N], synthetic-cifar[:N] "
                 "(N training samples, default 60000)")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset by name: ``kind`` (one of DATASET_KINDS), the ``folder`` of a file-based set, the number
    ``n`` of training samples of a synthetic set. ``name`` is how results name it: ``digits``, ``mnist``,
    ``synthetic-mnist:60000`` (a folder's path is left out: results compare across machines)."""

    kind: str
    folder: str | None = None
    n: int | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.n}" if self.n is not None else self.kind

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return SAMPLE_SHAPES[self.kind]


def parse_dataset(text: str) -> DatasetSpec:
    """``digits``, ``mnist:DIR``, ``fashion-mnist:DIR``, ``cifar10:DIR``, ``synthetic-mnist[:N]`` or
    ``synthetic-cifar[:N]`` as a DatasetSpec; ValueError naming the problem and the fix. A folder must exist
    and hold the set's files (checked here, before anything runs).

    >>> parse_dataset("synthetic-cifar:5000").name
    'synthetic-cifar:5000'
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a dataset must be a non-empty name, got {text!r}; use one of: {DATASET_FORMS}")
    kind, sep, arg = text.strip().partition(":")
    if kind not in DATASET_KINDS:
        import difflib

        close = difflib.get_close_matches(kind, DATASET_KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {text!r}{hint}; use one of: {DATASET_FORMS}")
    if kind == "digits":
        if sep:
            raise ValueError(f"dataset {text!r}: digits takes no argument (it is bundled with scikit-learn); "
                             "write just digits")
        return DatasetSpec(kind)
    if kind in _FOLDER_KINDS:
        if not arg:
            raise ValueError(f"dataset {text!r}: {kind} is read from files you already have: write {kind}:DIR, "
                             f"DIR being the folder that holds them")
        folder = os.path.expanduser(arg)
        try:
            cifar10_files(folder) if kind == "cifar10" else mnist_files(folder)
        except FileNotFoundError as err:
            raise ValueError(f"dataset {text!r}: {err}") from None
        return DatasetSpec(kind, folder=folder)
    n = SYNTHETIC_DEFAULT_N
    if sep:
        digits = arg.replace("_", "")
        if not digits.isdigit() or not 1 <= int(digits) <= SYNTHETIC_MAX_N:
            raise ValueError(f"dataset {text!r}: N (training samples) must be a whole number from 1 to "
                             f"{SYNTHETIC_MAX_N:,}, got {arg!r}; e.g. {kind}:60000")
        n = int(digits)
    return DatasetSpec(kind, n=n)


def load_dataset(spec: DatasetSpec, xp=np, seed: int = 0):
    """``(x_train, y_train, x_test, y_test)`` of ``spec``: x float32 (N, *spec.sample_shape), y int64 (N,).

    Digits and file-based sets are read on the host (NumPy arrays, whatever ``xp``); a synthetic set is
    drawn with ``xp`` from ``seed`` (training samples first, then ``synthetic_test_size`` test samples).
    """
    if spec.kind == "digits":
        return load_digits_split(seed=0, image=True)
    if spec.kind in ("mnist", "fashion-mnist"):
        return load_mnist_folder(spec.folder)
    if spec.kind == "cifar10":
        return load_cifar10_folder(spec.folder)
    n_test = synthetic_test_size(spec.n)
    x, y = synthetic_set(spec.kind, spec.n + n_test, seed=seed, xp=xp)
    return x[:spec.n], y[:spec.n], x[spec.n:], y[spec.n:]


class Diverged(ArithmeticError):
    """Training produced a non-finite loss (NaN or infinity): the weights are lost, the run stops.

    ``epoch`` is the 1-based epoch whose mean training loss was ``loss``; the message says what to change.
    """

    def __init__(self, epoch: int, loss: float, lr: float, momentum: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(diverged_message(epoch, loss, lr, momentum))


def diverged_message(epoch: int, loss: float, lr: float, momentum: float) -> str:
    """The one wording of a diverged run, for ``train``'s exception and the harness's ``diverged`` rows."""
    return (f"training diverged in epoch {epoch}: the mean training loss is {loss} (not finite), so the weights "
            f"are NaN or infinite from here on and the run stops; lower the learning rate (lr = {lr:g}) or the "
            f"momentum (momentum = {momentum:g})")


def train(model, x, y, epochs: int, batch_size: int, lr: float, momentum: float = 0.0, seed: int = 0) -> list[float]:
    """Minibatch SGD: each epoch visits the samples in a fresh random order (fixed by ``seed``).

    model: anything with ``train_step(x, y, lr, momentum)`` (the model contract). The last batch of an
    epoch may be smaller. Returns the mean training loss of each epoch (one host sync per epoch).
    Raises ``Diverged`` at the end of the first epoch whose mean loss is not finite (one step's NaN or
    infinity makes the mean non-finite, so the check costs nothing beyond the mean already computed).
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
        with np.errstate(all="ignore"):       # inf and NaN losses are what this check is for
            mean = float(np.mean([float(v) for v in losses]))
        if not math.isfinite(mean):
            raise Diverged(len(history) + 1, mean, lr, momentum)
        history.append(mean)
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
