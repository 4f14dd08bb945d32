"""The measurement record: one plain dataclass per row of ``results.csv``, and the CSV writer.

Measuring (``timer``), the record (this module) and rendering (``report``) are kept apart: a row is
written once, flushed, and everything downstream reads the saved CSV.

The writer holds the folder's lock (one writer per results folder), appends row by row and fsyncs after
each, so a crash or Ctrl-C loses at most the row in flight. Re-running the same command opens the file
again, drops a torn last record if the process died mid-write (only when every record before it is
valid), and skips every row whose key (``ROW_KEY``) is already there.

``read_results`` is the one strict reader of results.csv (run's resume, report, targets): exact header,
known columns and types, unique keys, UTF-8. A damaged file is refused with the file, the line and the
fix, and is never modified.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import sys
from typing import Iterable

from .io import DamagedFile, FolderBusy, FolderLock, atomic_write, read_bytes, read_csv_records

STATUSES = ("ok", "parity_fail", "diverged", "oom", "unsupported", "error", "not_measured")


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
    spec_hash: str = ""          # model rows: ModelSpec.digest() of the spec measured (its content, not its name)

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
ROW_KEY = ("impl", "variant", "device", "workload", "kind", "batch", "phase", "precision", "spec_hash")
# results.csv files written before spec_hash existed: readable (spec_hash empty), not resumable.
LEGACY_COLUMNS = tuple(c for c in COLUMNS if c != "spec_hash")
_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Row)}


class ResultsError(RuntimeError):
    """An existing results file that cannot be resumed or read (the message says what to do)."""


def key_of(d: dict) -> tuple:
    return tuple(str(d.get(f, "")) for f in ROW_KEY)


# ============================================================================ the strict reader
_INT = re.compile(r"-?[0-9]+\Z")


def _check_value(column: str, value: str) -> str | None:
    """None when ``value`` is a valid cell of ``column``, else what the column expects."""
    t = _TYPES[column]
    optional = "None" in t
    if column == "status" and value not in STATUSES:
        return "one of " + ", ".join(STATUSES)
    if value == "" and (optional or t == "str"):
        return None
    if t.startswith("int"):
        return None if _INT.match(value) else "an integer" + (" or empty" if optional else "")
    if t.startswith("float"):
        try:
            float(value)
        except ValueError:
            return "a number" + (" or empty" if optional else "")
        return None
    if t.startswith("bool"):
        return None if value in ("True", "False") else "True or False" + (" or empty" if optional else "")
    return None


@dataclasses.dataclass
class ResultsFile:
    """A results.csv as read by ``read_results``: rows as dicts of strings (every column of COLUMNS)."""

    path: str
    rows: list[dict]
    lines: list[int]             # the line each row starts on
    torn_line: int | None        # an incomplete last record starts here (None: the file ends cleanly)
    keep_bytes: int              # the file's length without that torn record
    legacy: bool                 # written without the spec_hash column
    empty: bool                  # no bytes at all


def read_results(path: str) -> ResultsFile:
    """Read and check a results.csv; raises DamagedFile naming the file, the line and the fix.

    A torn last record (a writer killed mid-row) is not a row: it is reported in ``torn_line`` and left
    in the file (only ``ResultsWriter`` removes it, when resuming). Never modifies the file.
    """
    data = read_bytes(path, "results.csv")
    if not data:
        return ResultsFile(path, [], [], None, 0, False, True)
    parsed = read_csv_records(path, data)
    moved = "move the file away or choose another --out"
    if parsed.header is None:
        if parsed.torn_line == 1 and ",".join(COLUMNS).startswith(data.decode("utf-8", "replace")):
            # a writer killed while writing the header: nothing was measured yet
            return ResultsFile(path, [], [], 1, 0, False, False)
        raise DamagedFile(f"{path}: holds no complete line (the first line is torn); {moved}")
    hline, header = parsed.header
    header = tuple(header)
    legacy = header == LEGACY_COLUMNS
    if header != COLUMNS and not legacy:
        if header and header[0] in ("custom", "reference"):
            raise DamagedFile(f"{path}, line {hline}: is a row, not the header: the header line is missing. Put "
                              f"this line first: {','.join(COLUMNS)} (or {moved}); the file is left untouched")
        missing = [c for c in COLUMNS if c not in header and c != "spec_hash"]
        unknown = [c for c in header if c not in COLUMNS]
        raise DamagedFile(f"{path} was written with other columns (missing: {', '.join(missing) or 'none'}; "
                          f"unknown: {', '.join(unknown) or 'none'}; or a different order); it is left untouched. "
                          "Pass another --out DIR, or move the old file away")
    rows, lines, seen = [], [], {}
    for line, fields in parsed.records:
        if len(fields) != len(header):
            raise DamagedFile(f"{path}, line {line}: {len(fields)} fields, the header has {len(header)}; the line "
                              f"was changed by hand or by another program: fix or delete line {line}, or {moved}")
        d = dict(zip(header, fields))
        if legacy:
            d["spec_hash"] = ""
        for column in header:
            want = _check_value(column, d[column])
            if want is not None:
                raise DamagedFile(f"{path}, line {line}: column {column!r} must be {want}, got {d[column]!r}; "
                                  f"fix or delete line {line}, or {moved}")
        k = key_of(d)
        if k in seen:
            raise DamagedFile(f"{path}, lines {seen[k]} and {line}: the same row twice ({', '.join(k[:7])}); "
                              f"delete line {line} (two writers shared this folder?), or {moved}")
        seen[k] = line
        rows.append(d)
        lines.append(line)
    return ResultsFile(path, rows, lines, parsed.torn_line, parsed.keep_bytes, legacy, False)


# ============================================================================ the writer
class ResultsWriter:
    """Append-only writer of results.csv with resume; the only writer of its folder while open.

    >>> with ResultsWriter("/tmp/x/results.csv") as w:   # doctest: +SKIP
    ...     if not w.done(row): w.write(row)
    """

    def __init__(self, path: str):
        self.path = path
        self.finished: set[tuple] = set()
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ResultsError(f"{folder} is a file, not a folder; choose another --out") from None
        try:
            self._lock = FolderLock(folder).acquire()
        except FolderBusy as err:
            raise ResultsError(str(err)) from None
        except OSError as err:
            raise ResultsError(f"{folder}: cannot write there ({err.strerror}); choose another --out") from None
        try:
            fresh = self._recover()
            self._fh = open(path, "a", newline="", encoding="utf-8")
        except BaseException:
            self._lock.release()
            raise
        self._csv = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        if fresh:
            self._csv.writeheader()
            self._sync()

    def _recover(self) -> bool:
        """Check an existing file and drop a torn last record; True when the header must be written."""
        if not os.path.lexists(self.path):
            return True
        try:
            old = read_results(self.path)
        except DamagedFile as err:
            raise ResultsError(str(err)) from None
        if old.empty:
            return True
        if old.legacy:
            raise ResultsError(f"{self.path} was written without the spec_hash column, so its rows cannot be matched "
                               "to the specs measured now; it is left untouched. Pass another --out DIR, or move "
                               "the old file away")
        if old.torn_line is not None:
            # NOTE: safe: every record before the torn one parsed and checked above; only the incomplete
            # tail (no line end, or inside an open quote) is cut.
            print(f"harness: {self.path}: dropping the incomplete last row (line {old.torn_line}) left by a "
                  "killed run", file=sys.stderr)
            with open(self.path, "r+b") as fh:
                fh.truncate(old.keep_bytes)
                os.fsync(fh.fileno())
        self.finished = {key_of(d) for d in old.rows}
        return old.keep_bytes == 0

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def done(self, row: Row) -> bool:
        return row.key() in self.finished

    def write(self, row: Row) -> None:
        if row.key() in self.finished:
            raise ResultsError(f"{self.path}: row {row.key()} is already written; a row is measured once")
        self._csv.writerow(row.to_csv())
        self._sync()
        self.finished.add(row.key())

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_rows(path: str) -> list[dict]:
    """Rows of a results.csv as dicts of strings, checked by ``read_results`` (a torn last row is left out).

    Raises ResultsError naming the file, the line and the fix when the file is damaged.
    """
    try:
        return read_results(path).rows
    except DamagedFile as err:
        raise ResultsError(str(err)) from None


def write_all(path: str, rows: Iterable[Row]) -> None:
    """Write ``rows`` to a fresh CSV, atomically (used for targets.csv's companion rows and tests)."""
    with atomic_write(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r.to_csv())
