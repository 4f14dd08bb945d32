"""End-to-end training: both implementations trained on one dataset, epoch by epoch, into ``train.csv``.

``python -m harness train`` (and the ``[[train]]`` sections of a suite) trains every model x dataset x
batch size x implementation/variant x seed, and writes one row per run and evaluation: the mean training
loss since the previous evaluation, the test accuracy, the train time and samples/s since then, and the
input pipeline's and evaluation's time apart. ``harness/train_report.py`` turns the rows into curves, the
time-to-accuracy table and the gap between our curve and PyTorch's.

A run evaluates the test accuracy at the end of every epoch, or E = ``evals_per_epoch`` times per epoch
(``--evals-per-epoch E``): the epoch's steps are cut into E nearly equal consecutive segments
(``segment_bounds``), and the row after segment i of epoch e has ``epoch`` = (e - 1) + i/E (0.25, 0.5,
0.75, 1, ... for E = 4). E moves only where the clock stops, never the steps: the batches, their order and
so the weights are those of E = 1, and time to accuracy is measured at the same interval for every
implementation.

What makes two runs comparable:

- **Same start**: every run of a seed is built from ``spec.init_params(seed)`` (the model contract).
- **Same data order**: each epoch's order is ``np.random.default_rng(seed)``'s next permutation, drawn on
  the host and uploaded once per epoch (N int64: 0.5 MB for 60,000 samples) to wherever the data lives.
  One host permutation is what guarantees the same order for NumPy, CuPy and torch on either device (the
  two libraries' device RNGs would give each implementation its own order). The last partial batch of an
  epoch is dropped, so every step has the same shape (one CUDA graph per run, for ours and PyTorch's).
- **Data on the device, pipeline off the clock**: the dataset is loaded (or, for a synthetic set,
  generated on the GPU) once per dataset and device; torch sees CuPy's arrays through DLPack, without a
  copy. Per epoch the permutation is applied by one gather on the device (CuPy for ours, torch for
  PyTorch) into a shuffled copy, whose contiguous slices are the batches. That pipeline time is
  synchronised and recorded as ``pipeline_s``; the timed epoch (``train_s``) is the train steps alone,
  from the first launch to a device synchronisation after the last.
- **Warm-up that changes nothing**: before the clock starts, each run takes three train steps with
  ``lr = 0`` and ``momentum = 0`` on its first batch (kernel compilation, cuDNN autotuning, torch.compile;
  SGD with lr 0 and no momentum leaves weights and velocity exactly as they were, which is checked). The
  capture of a run's own CUDA graph (ours and ``torch-graph``, keyed on lr and momentum) falls in its first
  timed epoch: it is part of what training with graphs costs.
- **Loss read-out**: each step's 0-d loss is kept on the device (``torch-graph`` returns a static tensor
  that the next replay overwrites, so it is cloned, one small copy per step, as our model's
  ``train_step`` copies its own); after each segment (the epoch, for E = 1) they are stacked and read back
  once (``eval_s`` holds that and the test-set evaluation).
- **Divergence**: a segment whose mean loss is NaN or infinite (one bad step suffices) ends the run; its
  row has status ``diverged``, the epoch, and the reason. Weights that are not finite after the last
  epoch mark the last row ``diverged`` too.
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import math
import os
import sys
import time
import traceback
from fractions import Fraction
from io import StringIO

import numpy as np

import modelspec

from . import data as datamod
from .io import (DamagedFile, LockedWriter, atomic_write, lock_folder_of, read_bytes, read_csv_records,
                 truncate_file)
from .suites import MAX_EVALS_PER_EPOCH, OPT_IN, VARIANTS

TRAIN_CSV = "train.csv"
TRAIN_STATUSES = ("ok", "diverged", "oom", "unsupported", "error")
WARMUP_STEPS = 3
EVAL_BATCH = 1000
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_MOMENTUM = 0.9
MAX_EPOCHS = 100_000

# Per dataset: the models that fit it, and settings that reach the target in the given epochs with
# momentum 0.9. Measured on the CPU: digits-mlp 97-98% and digits-cnn 96-98% after 20 epochs (3 seeds);
# on synthetic-mnist:60000 mlp-mnist 98.6% after one epoch (batch 64, lr 0.01) and 98.2% (batch 1024,
# lr 0.1); on synthetic-mnist:20000 lenet-mnist 97.0% / 97.7% after one / two epochs; cnn-cifar on
# synthetic-cifar:3000 95.6% after three epochs (batch 32, lr 0.02). The real MNIST / CIFAR-10 targets are
# the usual figures for these nets.
DATASET_DEFAULTS = {
    "digits": dict(models=("digits-mlp", "digits-cnn"), epochs=20, batch=32, lr=0.05, target=0.95),
    "mnist": dict(models=("mlp-mnist", "lenet-mnist"), epochs=5, batch=64, lr=0.02, target=0.97),
    "fashion-mnist": dict(models=("mlp-mnist", "lenet-mnist"), epochs=10, batch=64, lr=0.02, target=0.85),
    "cifar10": dict(models=("cnn-cifar",), epochs=10, batch=64, lr=0.01, target=0.60),
    "synthetic-mnist": dict(models=("mlp-mnist", "lenet-mnist"), epochs=5, batch=64, lr=0.01, target=0.98),
    "synthetic-cifar": dict(models=("cnn-cifar",), epochs=5, batch=64, lr=0.01, target=0.95),
}

TRAIN_COLUMNS = ("model", "dataset", "impl", "variant", "device", "batch", "seed", "precision", "lr", "momentum",
                 "epochs", "evals_per_epoch", "epoch", "train_loss", "test_acc", "train_s", "cum_train_s",
                 "samples_per_s", "pipeline_s", "eval_s", "load_s", "steps", "n_train", "n_test", "target_acc",
                 "status", "reason", "device_name", "spec_hash")
# The header of a train.csv written before runs could evaluate more than once per epoch: read as
# evals_per_epoch = 1, and rewritten with the column by ``TrainWriter`` before it appends.
LEGACY_TRAIN_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c != "evals_per_epoch")
RUN_KEY = ("model", "spec_hash", "dataset", "impl", "variant", "device", "batch", "seed", "precision", "lr",
           "momentum", "epochs", "evals_per_epoch")
ROW_KEY = RUN_KEY + ("epoch",)
_INT_COLUMNS = ("batch", "seed", "epochs", "evals_per_epoch", "steps", "n_train", "n_test")
_FLOAT_COLUMNS = ("lr", "momentum", "train_loss", "test_acc", "train_s", "cum_train_s", "samples_per_s",
                  "pipeline_s", "eval_s", "load_s", "target_acc")


class TrainError(ValueError):
    """A training request that cannot run (bad option, model that does not fit the data); the message says why."""


def _num(v) -> str:
    """How train.csv writes a number: ints as they are, floats in 6 significant digits, '' for None."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def epoch_at(evaluation: int, evals_per_epoch: int) -> int | float:
    """The epoch count at the ``evaluation``-th evaluation (1-based) of a run evaluating ``evals_per_epoch``
    times per epoch: an int when whole, else a float.

    >>> [epoch_at(j, 4) for j in (1, 2, 4, 5)]
    [0.25, 0.5, 1, 1.25]
    """
    whole, part = divmod(evaluation, evals_per_epoch)
    return whole if part == 0 else evaluation / evals_per_epoch


def _epoch_text(epoch) -> str:
    """How train.csv writes an epoch: a whole one as an int ("1"), a fraction with up to 6 decimals
    ("0.333333"): distinct for every evaluation of up to MAX_EVALS_PER_EPOCH per epoch and MAX_EPOCHS."""
    if isinstance(epoch, (int, np.integer)):
        return str(int(epoch))
    text = f"{float(epoch):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def segment_bounds(steps: int, evals_per_epoch: int) -> list[int]:
    """Where an epoch of ``steps`` steps is cut for E = ``evals_per_epoch`` evaluations: the E + 1
    boundaries round(steps * i / E), i = 0..E (exact: rounded as Fractions, half to even), so segment i
    holds steps bounds[i - 1] to bounds[i] - 1. Every segment holds at least one step when E <= steps.

    >>> segment_bounds(42, 4)
    [0, 10, 21, 32, 42]
    """
    return [round(Fraction(steps * i, evals_per_epoch)) for i in range(evals_per_epoch + 1)]


def check_evals_per_epoch(evals_per_epoch: int, steps: int, dataset: str, n_train: int, batch: int) -> None:
    """TrainError when an epoch (``steps`` = ``n_train // batch``) is too short to evaluate that often."""
    if evals_per_epoch > steps:
        raise TrainError(f"evals_per_epoch {evals_per_epoch}: an epoch of {dataset} at batch {batch} has only "
                         f"{steps} steps ({n_train} training samples // {batch}), and each evaluation needs at least "
                         f"one; use --evals-per-epoch (evals_per_epoch in a suite) of at most {steps}, or a smaller "
                         "batch")


# ================================================================================ what to run
@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One training run: a model trained from one seed on one dataset with one implementation variant."""

    model: str                 # zoo name or spec path, as given
    dataset: datamod.DatasetSpec
    batch: int
    impl: str                  # custom | reference
    variant: str               # numpy, cuda, cuda-graph, torch-eager, torch-graph, torch-compile
    seed: int
    epochs: int
    lr: float
    momentum: float
    target_acc: float
    device: str
    precision: str | None = None   # passed to build() only where both implementations take a precision
    evals_per_epoch: int = 1       # test-accuracy evaluations per epoch, at nearly equal step intervals

    @property
    def spec(self) -> modelspec.ModelSpec:
        return modelspec.load(self.model)

    @property
    def model_name(self) -> str:
        return self.spec.name if self.model.endswith((".toml", ".json")) else self.model

    def key(self) -> tuple:
        return (self.model_name, self.spec.digest(), self.dataset.name, self.impl, self.variant, self.device,
                _num(self.batch), _num(self.seed), self.precision or "fp32", _num(self.lr), _num(self.momentum),
                _num(self.epochs), _num(self.evals_per_epoch))

    def label(self) -> str:
        evals = f" {self.evals_per_epoch} evals/epoch" if self.evals_per_epoch != 1 else ""
        return (f"{self.model_name} {self.dataset.name} b{self.batch} {self.impl}/{self.variant} "
                f"seed {self.seed}{evals}")


def precision_default() -> str | None:
    """The default ``precision`` of the two build functions when both take one (the option ``--precision``
    exists only then), else None: the models then compute in strict FP32, which rows record as "fp32"."""
    import custom_impl

    defaults = []
    for name in ("custom_impl", "reference_impl"):
        # NOTE: reference_impl (torch: seconds to import) is looked at only when custom_impl takes a precision
        build = custom_impl.build if name == "custom_impl" else __import__("reference_impl").build
        p = inspect.signature(build).parameters.get("precision")
        if p is None or p.default is inspect.Parameter.empty:
            return None
        defaults.append(p.default)
    return str(defaults[0]) if defaults[0] == defaults[1] else None


def variants_of(device: str) -> tuple[list[str], list[str]]:
    """(every variant on ``device``, the default ones: all but the opt-in torch-compile)."""
    table = VARIANTS[("model", device)]
    every = [v for vs in table.values() for v in vs]
    return every, [v for v in every if v not in OPT_IN]


def _impl_of(variant: str, device: str) -> str:
    for impl, vs in VARIANTS[("model", device)].items():
        if variant in vs:
            return impl
    every, _ = variants_of(device)
    raise TrainError(f"variant {variant!r} does not exist on {device}; choose from {', '.join(every)}")


def model_fits(spec: modelspec.ModelSpec, dataset: datamod.DatasetSpec) -> str | None:
    """None when ``spec`` can be trained on ``dataset``, else why not (for an error message)."""
    shape = dataset.sample_shape
    if spec.loss != "softmax_cross_entropy" or spec.num_classes != datamod.NUM_CLASSES:
        return (f"model {spec.name!r} has {spec.num_classes} classes ({spec.loss}); {dataset.name} has "
                f"{datamod.NUM_CLASSES} (softmax cross-entropy)")
    want = tuple(spec.input_shape)
    if len(want) == 1 and want[0] == math.prod(shape):
        return None
    if want == shape:
        return None
    return (f"model {spec.name!r} takes inputs of shape {want}, {dataset.name} has samples of shape {shape} "
            f"({math.prod(shape)} values)")


def _fitting_models(dataset: datamod.DatasetSpec) -> str:
    return ", ".join(DATASET_DEFAULTS[dataset.kind]["models"])


def check_number(name: str, value, kind: str, lo: float, hi: float, example: str, lo_open: bool = False):
    """A CLI or suite number checked for type, finiteness and range; TrainError with the fix otherwise."""
    if isinstance(value, str):
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise TrainError(f"{name}: {value!r} is not {'a whole number' if kind == 'int' else 'a number'}; "
                             f"e.g. {name} {example}") from None
    is_num = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_num or not math.isfinite(value) or (kind == "int" and value != int(value)):
        raise TrainError(f"{name}: must be {'a whole number' if kind == 'int' else 'a finite number'}, got "
                         f"{value!r}; e.g. {name} {example}")
    if value < lo or value > hi or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise TrainError(f"{name}: must lie in {left}{lo:g}, {hi:g}], got {value!r}; e.g. {name} {example}")
    return int(value) if kind == "int" else float(value)


def plan_runs(*, datasets: list[str], device: str, models: list[str] | None = None,
              batches: list[int] | None = None, variants: list[str] | None = None,
              seeds: list[int] | None = None, epochs: int | None = None, lr: float | None = None,
              momentum: float | None = None, target_acc: float | None = None,
              precision: str | None = None, evals_per_epoch: int | None = None) -> list[TrainRun]:
    """Every run of models x datasets x batches x seeds x variants, defaults per dataset (DATASET_DEFAULTS).

    Ordered by dataset (each loaded once), model, batch and seed, with the variants of one seed next to
    each other (ours and PyTorch's run back to back on the same machine state). Raises TrainError for
    anything that cannot run: an unknown dataset, model or variant, a model that fits no dataset given,
    a batch larger than the training set, numbers out of range, more evaluations per epoch than steps
    (where the training set's size is known before loading it; ``run_training`` checks the others).
    """
    if not datasets:
        raise TrainError(f"no dataset given; use one of: {datamod.DATASET_FORMS}")
    specs = []
    for text in datasets:
        try:
            specs.append(datamod.parse_dataset(text))
        except ValueError as err:
            raise TrainError(str(err)) from None
    every, default_variants = variants_of(device)
    variants = list(variants or default_variants)
    for v in variants:
        _impl_of(v, device)
    if precision is not None:
        from .suites import DEVICE_PRECISIONS, PRECISIONS

        if precision not in PRECISIONS:
            raise TrainError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision not in DEVICE_PRECISIONS[device]:
            raise TrainError(f"precision {precision!r} needs the GPU's tensor cores; on the {device} only "
                             f"{', '.join(DEVICE_PRECISIONS[device])} runs")
    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    if not seeds:
        raise TrainError("no seed given; e.g. --seeds 0,1,2")
    for s in seeds:
        check_number("seed", s, "int", 0, 2**32 - 1, "0,1,2")
    evals = check_number("evals_per_epoch", 1 if evals_per_epoch is None else evals_per_epoch, "int", 1,
                         MAX_EVALS_PER_EPOCH, "4")
    if models:
        for m in models:
            try:
                modelspec.load(m)
            except (modelspec.SpecError, OSError) as err:
                raise TrainError(f"models: {err}") from None
    runs: list[TrainRun] = []
    used_models: set[str] = set()
    for ds in specs:
        d = DATASET_DEFAULTS[ds.kind]
        n_epochs = check_number("epochs", d["epochs"] if epochs is None else epochs, "int", 1, MAX_EPOCHS, "10")
        step = check_number("lr", d["lr"] if lr is None else lr, "float", 0, 3.4e38, "0.01", lo_open=True)
        mom = check_number("momentum", DEFAULT_MOMENTUM if momentum is None else momentum, "float", 0, 1, "0.9")
        target = check_number("target accuracy", d["target"] if target_acc is None else target_acc, "float", 0, 1,
                              "0.95", lo_open=True)
        names = list(models) if models else list(d["models"])
        for name in names:
            spec = modelspec.load(name)
            why = model_fits(spec, ds)
            if why is not None:
                if models and len(specs) > 1:
                    continue        # a model for another of the datasets given
                raise TrainError(f"{why}; models for {ds.name}: {_fitting_models(ds)}")
            used_models.add(name)
            for b in (batches or [d["batch"]]):
                b = check_number("batch", b, "int", 1, 2**31 - 1, "64")
                if ds.n is not None and b > ds.n:
                    raise TrainError(f"batch {b} is larger than the {ds.n} training samples of {ds.name}; "
                                     "use a smaller batch or more samples")
                if ds.n is not None:
                    check_evals_per_epoch(evals, ds.n // b, ds.name, ds.n, b)
                for seed in seeds:
                    for v in variants:
                        runs.append(TrainRun(name, ds, b, _impl_of(v, device), v, int(seed), n_epochs, step, mom,
                                             target, device, precision, evals))
    if models:
        unused = [m for m in models if m not in used_models]
        if unused:
            raise TrainError(f"models {', '.join(unused)}: fit none of the datasets given "
                             f"({', '.join(s.name for s in specs)}); models per dataset: "
                             + "; ".join(f"{s.name}: {_fitting_models(s)}" for s in specs))
    return runs


def plan_suite(suite, device: str, models: list[str] | None = None) -> list[TrainRun]:
    """The runs of ``suite``'s ``[[train]]`` sections on ``device`` (sections limited to other devices are
    skipped); ``models`` keeps only those models."""
    runs: list[TrainRun] = []
    seen = set()
    for i, sec in enumerate(getattr(suite, "train", [])):
        if device not in sec.get("devices", ("cpu", "gpu")):
            continue
        wanted = sec.get("models")
        if models:
            wanted = [m for m in (wanted or []) if m in models] if wanted else list(models)
            if not wanted:
                continue
        try:
            part = plan_runs(datasets=sec["datasets"], device=device, models=wanted, batches=sec.get("batches"),
                             variants=sec.get("variants"), seeds=sec.get("seeds"), epochs=sec.get("epochs"),
                             lr=sec.get("lr"), momentum=sec.get("momentum"), target_acc=sec.get("target_acc"),
                             evals_per_epoch=sec.get("evals_per_epoch"))
        except TrainError as err:
            raise TrainError(f"{suite.path}: [[train]] #{i + 1}: {err}") from None
        for r in part:
            if r.key() not in seen:
                seen.add(r.key())
                runs.append(r)
    return runs


# ================================================================================ the record
@dataclasses.dataclass
class TrainRow:
    """One evaluation of one run (the end of an epoch, or of a segment of one): a row of train.csv
    (columns documented in docs/harness.md). ``epoch``: the epoch count there, ``epoch_at``."""

    run: TrainRun
    epoch: int | float
    device_name: str = ""
    train_loss: float | None = None
    test_acc: float | None = None
    train_s: float | None = None
    cum_train_s: float | None = None
    samples_per_s: float | None = None
    pipeline_s: float | None = None
    eval_s: float | None = None
    load_s: float | None = None
    steps: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    status: str = "ok"
    reason: str = ""

    def to_csv(self) -> dict:
        r = self.run
        key = dict(zip(RUN_KEY, r.key()))
        out = dict(key, epoch=_epoch_text(self.epoch), target_acc=_num(r.target_acc), status=self.status,
                   reason=self.reason.replace("\n", " ")[:500], device_name=self.device_name)
        for c in ("train_loss", "test_acc", "train_s", "cum_train_s", "samples_per_s", "pipeline_s", "eval_s",
                  "load_s", "steps", "n_train", "n_test"):
            out[c] = _num(getattr(self, c))
        return {c: out[c] for c in TRAIN_COLUMNS}


@dataclasses.dataclass
class TrainFile:
    """train.csv as read by ``read_train``: rows as dicts of strings (every column of TRAIN_COLUMNS), and a
    torn last record (if any). ``legacy``: the file has the header LEGACY_TRAIN_COLUMNS (its rows were given
    evals_per_epoch "1")."""

    path: str
    rows: list[dict]
    torn_line: int | None
    keep_bytes: int
    legacy: bool = False


def _check_cell(column: str, value: str) -> str | None:
    if column == "status":
        return None if value in TRAIN_STATUSES else "one of " + ", ".join(TRAIN_STATUSES)
    if column == "epoch":
        try:
            ok = math.isfinite(float(value)) and float(value) >= 0
        except ValueError:
            ok = False
        return None if ok else "a number of epochs, 0 or more (1, 2, or 0.25 with --evals-per-epoch 4)"
    if column == "evals_per_epoch":
        return None if value.isdigit() and int(value) >= 1 else "a whole number, 1 or more"
    if column in _INT_COLUMNS:
        if value == "" and column in ("steps", "n_train", "n_test"):
            return None
        return None if value.lstrip("-").isdigit() else "a whole number"
    if column in _FLOAT_COLUMNS:
        if value == "":
            return None
        try:
            float(value)
        except ValueError:
            return "a number, nan, inf or empty"
    return None


def read_train(path: str) -> TrainFile:
    """Read and check a train.csv (exact header, typed cells, unique rows); raises io.DamagedFile naming the
    file, the line and the fix. A torn last record (a writer killed mid-write) is reported, not read. Never
    modifies the file. A file with the older header LEGACY_TRAIN_COLUMNS (no ``evals_per_epoch``: one
    evaluation per epoch) is read with evals_per_epoch "1" in every row, and ``legacy`` set."""
    data = read_bytes(path, "train.csv")
    if not data:
        return TrainFile(path, [], None, 0)
    parsed = read_csv_records(path, data)
    moved = "move the file away or choose another --out"
    if parsed.header is None:
        head = data.decode("utf-8", "replace")
        if parsed.torn_line == 1 and any(",".join(h).startswith(head) for h in (TRAIN_COLUMNS, LEGACY_TRAIN_COLUMNS)):
            return TrainFile(path, [], 1, 0)
        raise DamagedFile(f"{path}: holds no complete line (the first line is torn); {moved}")
    hline, header = parsed.header
    legacy = tuple(header) == LEGACY_TRAIN_COLUMNS
    if tuple(header) != TRAIN_COLUMNS and not legacy:
        missing = [c for c in TRAIN_COLUMNS if c not in header]
        unknown = [c for c in header if c not in TRAIN_COLUMNS]
        raise DamagedFile(f"{path}, line {hline}: not the header of a train.csv (missing: {', '.join(missing) or 'none'}; "
                          f"unknown: {', '.join(unknown) or 'none'}; or another order); the file is left untouched: "
                          f"{moved}")
    columns = LEGACY_TRAIN_COLUMNS if legacy else TRAIN_COLUMNS
    rows, seen = [], {}
    for line, fields in parsed.records:
        if len(fields) != len(columns):
            raise DamagedFile(f"{path}, line {line}: {len(fields)} fields, the header has {len(columns)}; "
                              f"fix or delete line {line}, or {moved}")
        d = dict(zip(columns, fields))
        if legacy:
            d = {c: d.get(c, "1") for c in TRAIN_COLUMNS}      # evals_per_epoch: one evaluation per epoch
        for c in TRAIN_COLUMNS:
            want = _check_cell(c, d[c])
            if want is not None:
                raise DamagedFile(f"{path}, line {line}: column {c!r} must be {want}, got {d[c]!r}; fix or delete "
                                  f"line {line}, or {moved}")
        k = tuple(d[c] for c in ROW_KEY)
        if k in seen:
            raise DamagedFile(f"{path}, lines {seen[k]} and {line}: the same run and epoch twice; delete line "
                              f"{line}, or {moved}")
        seen[k] = line
        rows.append(d)
    return TrainFile(path, rows, parsed.torn_line, parsed.keep_bytes, legacy)


class TrainWriter(LockedWriter):
    """Appends whole runs to ``train.csv``; the only writer of its folder while open (``io.FolderLock``).

    A run's rows are written together, in one write, and fsynced, so a kill loses at most the run in
    flight; reopening drops a torn last record and ``done(run)`` tells the runs already written. A file
    with the older header (no ``evals_per_epoch``) is first rewritten with the current one, every row
    kept with evals_per_epoch 1 (``io.atomic_write``: a temporary file beside it, fsynced, renamed over it;
    a kill leaves the old file or the new one).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = lock_folder_of(path, TrainError)
        try:
            self.finished = self._recover()
            fresh = not os.path.exists(path) or os.path.getsize(path) == 0
            self._fh = open(path, "a", newline="", encoding="utf-8")
            if fresh:
                self._fh.write(",".join(TRAIN_COLUMNS) + "\r\n")
                self._sync()
        except BaseException:
            self._lock.release()
            raise

    def _recover(self) -> set:
        if not os.path.lexists(self.path):
            return set()
        try:
            old = read_train(self.path)
        except DamagedFile as err:
            raise TrainError(str(err)) from None
        if old.torn_line is not None:
            # NOTE: safe: every record before the torn one parsed and checked; only the incomplete tail goes.
            print(f"harness: {self.path}: dropping the incomplete last line (line {old.torn_line}) left by a killed "
                  "run", file=sys.stderr)
            if not old.legacy:
                truncate_file(self.path, old.keep_bytes)
        if old.legacy:
            self._upgrade(old.rows)
        return {tuple(d[c] for c in RUN_KEY) for d in old.rows}

    def _upgrade(self, rows: list[dict]) -> None:
        with atomic_write(self.path, newline="") as fh:
            fh.write(",".join(TRAIN_COLUMNS) + "\r\n")
            csv.DictWriter(fh, fieldnames=TRAIN_COLUMNS).writerows(rows)
        print(f"harness: {self.path}: written before train.csv had an evals_per_epoch column; rewritten with it "
              f"({len(rows)} rows kept, each with evals_per_epoch 1: one evaluation per epoch)", file=sys.stderr)

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def done(self, run: TrainRun) -> bool:
        return run.key() in self.finished

    def write_run(self, rows: list[TrainRow]) -> None:
        buf = StringIO()
        w = csv.DictWriter(buf, fieldnames=TRAIN_COLUMNS)
        for r in rows:
            w.writerow(r.to_csv())
        self._fh.write(buf.getvalue())
        self._sync()
        self.finished.add(rows[0].run.key())

    def _files(self) -> tuple:
        return (self._fh,)


# ================================================================================ data on the device
class _Data:
    """One dataset on one device: x (N, *sample_shape) float32 and y (N,) int64 for train and test.

    Kept as NumPy (CPU) or CuPy (GPU) arrays; ``arrays("torch")`` views them as torch tensors without a
    copy (``torch.from_numpy`` / DLPack).
    """

    def __init__(self, spec: datamod.DatasetSpec, device: str):
        self.spec, self.device = spec, device
        start = time.perf_counter()
        if device == "gpu":
            import cupy

            xp = cupy
            arrays = datamod.load_dataset(spec, xp=cupy)
            arrays = tuple(cupy.ascontiguousarray(cupy.asarray(a)) for a in arrays)   # host sets: one upload
            cupy.cuda.Device().synchronize()
        else:
            xp = np
            arrays = tuple(np.ascontiguousarray(a) for a in datamod.load_dataset(spec, xp=np))
        self.load_s = time.perf_counter() - start
        self.xp = xp
        self.x_train, self.y_train, self.x_test, self.y_test = arrays
        self._torch = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def arrays(self, lib: str):
        if lib != "torch":
            return self.x_train, self.y_train, self.x_test, self.y_test
        if self._torch is None:
            import torch

            if self.device == "gpu":
                self._torch = tuple(torch.from_dlpack(a) for a in (self.x_train, self.y_train, self.x_test,
                                                                     self.y_test))
            else:
                self._torch = tuple(torch.from_numpy(a) for a in (self.x_train, self.y_train, self.x_test,
                                                                  self.y_test))
        return self._torch


def _lib(run: TrainRun) -> str:
    if run.impl == "reference":
        return "torch"
    return "cupy" if run.device == "gpu" else "numpy"


def _sync(lib: str, device: str) -> None:
    if device != "gpu":
        return
    if lib == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()
    else:
        import torch

        torch.cuda.synchronize()


def _reshaped(a, shape):
    return a.reshape((a.shape[0], *shape))


def _epoch_batches(lib: str, x, y, order: np.ndarray, batch: int, steps: int):
    """The epoch's batches: one gather of x and y by ``order`` on their device, cut into contiguous slices."""
    if lib == "numpy":
        xe, ye = x[order], y[order]
    elif lib == "cupy":
        import cupy

        idx = cupy.asarray(order)
        xe, ye = x[idx], y[idx]
    else:
        import torch

        idx = torch.from_numpy(order).to(x.device)
        xe, ye = x.index_select(0, idx), y.index_select(0, idx)
    return [(xe[i * batch:(i + 1) * batch], ye[i * batch:(i + 1) * batch]) for i in range(steps)]


def _losses_to_host(lib: str, losses) -> np.ndarray:
    if lib == "numpy":
        return np.array([float(v) for v in losses], dtype=np.float64)
    if lib == "cupy":
        import cupy

        return cupy.stack(losses).get().astype(np.float64)
    import torch

    return torch.stack(losses).detach().cpu().numpy().astype(np.float64)


def _accuracy(model, x, y) -> float:
    """Test accuracy in [0, 1]: argmax of the logits against the labels, counted on the device."""
    counts = []
    for start in range(0, int(x.shape[0]), EVAL_BATCH):
        logits = model.forward(x[start:start + EVAL_BATCH])
        counts.append((logits.argmax(1) == y[start:start + EVAL_BATCH]).sum())
    return sum(int(c) for c in counts) / int(x.shape[0])


def _build(run: TrainRun):
    kw = {}
    if run.precision is not None:
        kw["precision"] = run.precision
    if run.impl == "custom":
        import custom_impl

        if run.device == "gpu":
            kw["use_graph"] = run.variant == "cuda-graph"
        return custom_impl.build(run.model, device=run.device, seed=run.seed, **kw)
    import reference_impl

    return reference_impl.build(run.model, device=run.device, seed=run.seed, **kw)


def _step_fn(model, variant: str):
    """``step(xb, yb, lr, momentum) -> 0-d loss`` that later steps do not overwrite."""
    if variant == "torch-graph":
        def step(xb, yb, lr, momentum):
            return model.train_step_graphed(xb, yb, lr, momentum).clone()   # static tensor: copy it out
        return step
    if variant == "torch-compile":
        return model.compiled("train_step")
    return model.train_step


def _check_unchanged(model, run: TrainRun) -> None:
    init = run.spec.init_params(run.seed)
    for name, value in model.get_params().items():
        if not np.array_equal(value, init[name]):
            raise RuntimeError(f"warm-up steps with lr 0 and momentum 0 changed parameter {name!r}; the run "
                               "would not start from spec.init_params(seed)")


def train_run(run: TrainRun, data: _Data, device_name: str = "", quiet: bool = True) -> list[TrainRow]:
    """Train one run; returns its rows (one per evaluation: ``run.evals_per_epoch`` per epoch; a diverged
    or failed segment ends the list).

    With E = ``run.evals_per_epoch`` > 1, each epoch's steps are cut into E consecutive segments
    (``segment_bounds``); after segment i of epoch e: a device synchronisation, the segment's train time
    added to ``cum_train_s``, its losses read back, and the test accuracy evaluated off the clock, in a row
    with ``epoch`` = (e - 1) + i/E; the epoch's input pipeline time goes to its first row. The steps, and
    so the weights, are those of E = 1.

    Raises TrainError before training when an epoch has fewer steps than E evaluations (``run_training``
    checks every run first); otherwise never raises except KeyboardInterrupt: an exception becomes the
    status of the run's last row (``oom``, ``unsupported``, ``error``).
    """
    from tqdm import tqdm

    from .workloads import free_device_memory, is_oom

    lib = _lib(run)
    rows: list[TrainRow] = []
    steps = data.n_train // run.batch
    evals = run.evals_per_epoch
    check_evals_per_epoch(evals, steps, run.dataset.name, data.n_train, run.batch)
    bounds = segment_bounds(steps, evals)
    common = dict(device_name=device_name, load_s=data.load_s, steps=steps, n_train=data.n_train,
                  n_test=data.n_test)
    bar = tqdm(total=run.epochs, desc=run.label(), unit="epoch", disable=quiet, file=sys.stderr, leave=True,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    model = None
    import reference_impl

    try:
        spec = run.spec
        model = _build(run)
        x_train, y_train, x_test, y_test = data.arrays(lib)
        x_train, x_test = _reshaped(x_train, spec.input_shape), _reshaped(x_test, spec.input_shape)
        step = _step_fn(model, run.variant)
        # Warm-up (see the module docstring): lr 0 and momentum 0 leave weights and velocity unchanged.
        xb, yb = x_train[:run.batch], y_train[:run.batch]
        for _ in range(WARMUP_STEPS):
            step(xb, yb, 0.0, 0.0)
        _accuracy(model, x_test, y_test)
        _sync(lib, run.device)
        _check_unchanged(model, run)
        order_rng = np.random.default_rng(run.seed)
        cum = 0.0
        lr, momentum = float(run.lr), float(run.momentum)
        for epoch in range(1, run.epochs + 1):
            t0 = time.perf_counter()
            order = order_rng.permutation(data.n_train)[:steps * run.batch]
            batches = _epoch_batches(lib, x_train, y_train, order, run.batch, steps)
            _sync(lib, run.device)
            t1 = time.perf_counter()
            pipeline_s = t1 - t0
            for i in range(1, evals + 1):
                first, end = bounds[i - 1], bounds[i]
                with np.errstate(all="ignore"):   # NumPy's overflow warnings: a diverging run is reported below
                    losses = [step(xb, yb, lr, momentum) for xb, yb in batches[first:end]]
                _sync(lib, run.device)
                t2 = time.perf_counter()
                per_step = _losses_to_host(lib, losses)
                del losses
                with np.errstate(all="ignore"):
                    mean = float(per_step.mean())
                train_s = t2 - t1
                cum += train_s
                row = TrainRow(run, epoch_at((epoch - 1) * evals + i, evals), train_loss=mean, train_s=train_s,
                               cum_train_s=cum,
                               samples_per_s=(end - first) * run.batch / train_s if train_s > 0 else None,
                               pipeline_s=pipeline_s if i == 1 else 0.0, **common)
                if not math.isfinite(mean):
                    row.status, row.reason = "diverged", datamod.diverged_message(epoch, mean, run.lr, run.momentum)
                    row.eval_s = time.perf_counter() - t2
                    rows.append(row)
                    bar.close()
                    print(f"harness: {run.label()}: {row.reason}", file=sys.stderr)
                    return rows
                row.test_acc = _accuracy(model, x_test, y_test)
                _sync(lib, run.device)
                t3 = time.perf_counter()
                row.eval_s = t3 - t2
                rows.append(row)
                bar.set_postfix_str(f"loss {mean:.4f} acc {row.test_acc:.2%} {cum:.2f} s", refresh=False)
                # NOTE: the next segment's clock starts here: its train steps only, as the first one's
                t1 = t3
            del batches
            bar.update(1)
        bad = [n for n, p in model.get_params().items() if not np.all(np.isfinite(p))]
        if bad:
            last = rows[-1]
            last.status = "diverged"
            last.reason = (f"the weights ({', '.join(bad)}) are not finite after the last step of epoch {last.epoch} "
                           f"(the losses were finite until then); lower the learning rate (lr = {run.lr:g}) or the "
                           f"momentum (momentum = {run.momentum:g})")
            print(f"harness: {run.label()}: {last.reason}", file=sys.stderr)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a failing run must not stop the others
        started = len(rows)
        row = TrainRow(run, epoch_at(started + 1, evals) if started else 0, **common)
        text = str(err).splitlines()[0][:300] if str(err) else ""
        if is_oom(err):
            row.status, row.reason = "oom", f"{type(err).__name__}: {text}"
        elif isinstance(err, reference_impl.Unsupported) or run.variant == "torch-compile":
            row.status, row.reason = "unsupported", f"{type(err).__name__}: {text}"
        else:
            last = traceback.extract_tb(err.__traceback__)[-1]
            row.status = "error"
            row.reason = f"{type(err).__name__}: {text} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
        rows.append(row)
        print(f"harness: {run.label()}: {row.status}: {row.reason}", file=sys.stderr)
    finally:
        bar.close()
        del model
        if run.device == "gpu":
            free_device_memory(collect=True)
    return rows


def run_training(runs: list[TrainRun], out_dir: str, device: str, quiet: bool = False) -> dict:
    """Train every run not yet in ``out_dir/train.csv`` and append its rows; returns counts by status
    (plus ``skipped``: runs already there). Rerunning the same command resumes. Raises TrainError for a
    dataset that cannot be loaded, or, once it is loaded and before any of its runs trains, a batch larger
    than its training set or more evaluations per epoch than an epoch has steps."""
    from . import env as envmod
    from .workloads import free_device_memory

    dname = envmod.device_name(device)
    counts: dict[str, int] = {"skipped": 0}
    with TrainWriter(os.path.join(out_dir, TRAIN_CSV)) as writer:
        todo = [r for r in runs if not writer.done(r)]
        counts["skipped"] = len(runs) - len(todo)
        data: _Data | None = None
        for run in todo:
            if data is None or data.spec != run.dataset:
                data = None
                free_device_memory(collect=True)
                try:
                    data = _Data(run.dataset, device)
                except (OSError, ValueError) as err:
                    raise TrainError(f"dataset {run.dataset.name}: {err}") from None
                too_big = sorted({r.batch for r in todo if r.dataset == run.dataset and r.batch > data.n_train})
                if too_big:
                    raise TrainError(f"batch {too_big[0]} is larger than the {data.n_train} training samples of "
                                     f"{run.dataset.name}; use a smaller batch")
                for r in todo:
                    if r.dataset == run.dataset:
                        check_evals_per_epoch(r.evals_per_epoch, data.n_train // r.batch, r.dataset.name,
                                              data.n_train, r.batch)
                if not quiet:
                    print(f"harness: {run.dataset.name} on {device}: {data.n_train} training and {data.n_test} test "
                          f"samples ready after {data.load_s:.2f} s", file=sys.stderr)
            rows = train_run(run, data, dname, quiet=quiet)
            writer.write_run(rows)
            status = rows[-1].status
            counts[status] = counts.get(status, 0) + 1
        data = None
    free_device_memory(collect=True)
    return counts
