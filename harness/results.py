"""The measurement record: one plain dataclass per row of ``results.csv``, and the CSV writer.

Measuring (``timer``), the record (this module) and rendering (``report``) are kept apart: a row is
written once, flushed, and everything downstream reads the saved CSV.

The writer appends row by row and flushes after each, so a crash or Ctrl-C loses at most the row in
flight. Re-running the same command opens the file again, drops a torn last line if the process died
mid-write, and skips every row whose key (``ROW_KEY``) is already there.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Iterable

STATUSES = ("ok", "parity_fail", "oom", "unsupported", "error", "not_measured")


@dataclasses.dataclass
class Row:
    """One measurement; every field is a column of results.csv (documented in docs/harness.md)."""

    impl: str = ""               # custom | reference
    variant: str = ""            # numpy, cuda, cuda-graph, torch, torch-eager, torch-graph, torch-compile
    device: str = ""             # cpu | gpu
    workload: str = ""           # zoo model name, or a layer shape such as dense_M64_N128_K784
    kind: str = ""               # model | dense | conv2d | pool
    batch: int = 0               # samples per call (the N of a layer shape, the M of a dense shape)
    phase: str = ""              # inference | forward_backward | train_step | forward | backward_data | backward_weights
    precision: str = "fp32"      # fp32: strict FP32 on both sides (TF32 off)
    shape: str = ""              # layer shape in words, e.g. "M=64 N=128 K=784"
    median_ms: float | None = None
    iqr_ms: float | None = None
    min_ms: float | None = None
    repeats: int | None = None   # timed samples behind the median
    inner_loops: int | None = None  # calls per timed sample (the sample is their mean)
    samples_per_s: float | None = None
    flops: int | None = None     # per call, from the spec (a multiply-add counts 2)
    tflops: float | None = None  # flops / median
    pct_peak: float | None = None  # tflops / the device's FP32 peak, in percent; empty when no peak is known
    peak_mem_bytes: int | None = None
    noisy: bool | None = None    # iqr/median above the suite's noise threshold
    parity_against: str = ""     # what the output was compared with: float64 (the reference computation in float64)
    parity_rel_err: float | None = None
    parity_tol: float | None = None   # the bar parity_rel_err must stay under (see docs/harness.md)
    parity_ok: bool | None = None
    cold_l2: bool = False
    device_name: str = ""
    status: str = "ok"           # see STATUSES
    reason: str = ""             # why a row is not ok (unsupported, oom, error text)

    def key(self) -> tuple:
        return tuple(str(getattr(self, f)) for f in ROW_KEY)

    def to_csv(self) -> dict:
        out = {}
        for f in COLUMNS:
            v = getattr(self, f)
            if v is None:
                out[f] = ""
            elif isinstance(v, float):
                out[f] = "" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")
            else:
                out[f] = str(v)
        return out


COLUMNS = tuple(f.name for f in dataclasses.fields(Row))
ROW_KEY = ("impl", "variant", "device", "workload", "kind", "batch", "phase", "precision")


class ResultsError(RuntimeError):
    """An existing results file that cannot be resumed (the message says what to do)."""


def key_of(d: dict) -> tuple:
    return tuple(str(d.get(f, "")) for f in ROW_KEY)


class ResultsWriter:
    """Append-only writer of results.csv with resume.

    >>> w = ResultsWriter("/tmp/x/results.csv")          # doctest: +SKIP
    >>> if not w.done(row): w.write(row)                  # doctest: +SKIP
    """

    def __init__(self, path: str):
        self.path = path
        self.finished: set[tuple] = set()
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        if os.path.exists(path) and os.path.getsize(path) > 0:
            self._recover()
            fresh = False
        else:
            fresh = True
        self._fh = open(path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        if fresh:
            self._csv.writeheader()
            self._fh.flush()

    def _recover(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        if not data.endswith(b"\n"):
            # NOTE: the process died mid-row; drop the torn line so the file stays valid CSV.
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        text = data.decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))
        header = tuple(reader.fieldnames or ())
        if header != COLUMNS:
            missing = [c for c in COLUMNS if c not in header]
            raise ResultsError(
                f"{self.path} was written with other columns (missing: {', '.join(missing) or 'none'}; "
                f"or a different order); it is left untouched. Pass another --out DIR, or move the old file away")
        for d in reader:
            self.finished.add(key_of(d))

    def done(self, row: Row) -> bool:
        return row.key() in self.finished

    def write(self, row: Row) -> None:
        self._csv.writerow(row.to_csv())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.finished.add(row.key())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_rows(path: str) -> list[dict]:
    """Rows of a results.csv as dicts of strings (the report converts types with pandas)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_all(path: str, rows: Iterable[Row]) -> None:
    """Write ``rows`` to a fresh CSV (used for targets.csv's companion rows and tests)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r.to_csv())
