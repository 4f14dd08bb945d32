"""The measurement record: one plain dataclass per row of ``results.csv``, and the CSV writer.

Measuring (``timer``), the record (this module) and rendering (``report``) are kept apart: a row is
written once, flushed, and everything downstream reads the saved CSV.

The writer holds the folder's lock (one writer per results folder), appends row by row and fsyncs after
each, so a crash or Ctrl-C loses at most the row in flight. Re-running the same command opens the file
again, drops a torn last record if the process died mid-write (only when every record before it is
valid), and skips every row whose key (``ROW_KEY``) is already there.

``read_results`` is the one strict reader of results.csv (run's resume, report, targets): exact header,
known columns and types, unique keys, UTF-8. A damaged file is refused with the file, the line and the
fix, and is never modified. Files written by earlier versions of the harness are read too (``LAYOUTS``):
the columns they lack are empty in every row; they cannot be resumed.

Every timed sample of every row is kept in ``samples.csv`` beside results.csv (``SAMPLE_COLUMNS``: the
row's ``row_id``, the sample's index, its time in seconds per call). The writer appends a row's samples
and fsyncs them *before* the row itself, so a killed run can leave samples without their row (at the
end of samples.csv, the row in flight), never a row without its samples; resuming cuts those trailing
samples together with any torn last line. ``read_samples(folder)`` returns them as a DataFrame, joined
with the rows' key columns.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
import re
import sys
from typing import Iterable

from .io import DamagedFile, LockedWriter, atomic_write, lock_folder_of, read_bytes, read_csv_records, truncate_file

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
    ci_low_s: float | None = None    # bootstrap 95% confidence interval of the median, seconds per call
    ci_high_s: float | None = None   # (harness/stats.py; empty under two samples)
    sm_clock_mhz: float | None = None   # GPU rows: median SM clock read through NVML while the row was timed
    mem_clock_mhz: float | None = None  # GPU rows: median memory clock, likewise
    power_w: float | None = None        # GPU rows: mean board power while the row was timed
    throttled: bool | None = None       # GPU rows: a power or thermal clock limit was active (empty: unknown)
    throttle_reasons: str = ""          # which ones, e.g. "sw_power_cap;hw_thermal"
    algorithm: str = ""          # conv rows of ours: the algorithm that ran (on the GPU the one "auto" chose)

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
# Earlier layouts of results.csv: readable (the columns they lack are empty), not resumable.
# "no-algorithm": written before the algorithm column existed;
# "no-samples": written before samples.csv, the confidence interval and the NVML columns existed;
# "no-spec-hash": written before spec_hash existed as well.
PRE_ALGORITHM_COLUMNS = COLUMNS[:COLUMNS.index("algorithm")]
PRE_SAMPLES_COLUMNS = COLUMNS[:COLUMNS.index("spec_hash") + 1]
LEGACY_COLUMNS = tuple(c for c in PRE_SAMPLES_COLUMNS if c != "spec_hash")
LAYOUTS = {COLUMNS: "current", PRE_ALGORITHM_COLUMNS: "no-algorithm", PRE_SAMPLES_COLUMNS: "no-samples",
           LEGACY_COLUMNS: "no-spec-hash"}
SAMPLE_COLUMNS = ("row_id", "sample", "seconds")
_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Row)}


class ResultsError(RuntimeError):
    """An existing results file that cannot be resumed or read (the message says what to do)."""


def key_of(d: dict) -> tuple:
    return tuple(str(d.get(f, "")) for f in ROW_KEY)


def row_id(row) -> str:
    """The id of a row in samples.csv: 16 hex digits of the SHA-256 of its key (``ROW_KEY``).

    ``row``: a Row, a dict of results.csv columns, or a key tuple.
    """
    key = row.key() if isinstance(row, Row) else tuple(row) if isinstance(row, tuple) else key_of(row)
    return hashlib.sha256("\x1f".join(key).encode("utf-8")).hexdigest()[:16]


def samples_path(results_path: str) -> str:
    """samples.csv beside ``results.csv`` (``<stem>.samples.csv`` beside a results file of another name)."""
    folder, name = os.path.split(results_path)
    return os.path.join(folder, "samples.csv" if name == "results.csv" else os.path.splitext(name)[0] + ".samples.csv")


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
    layout: str = "current"      # LAYOUTS: which header it has ("current", "no-samples", "no-spec-hash")

    def warn_torn(self, then: str = "") -> None:
        """Say on stderr that an incomplete last row was left out, if there is one (``then``: a sentence
        more, such as how a rerun treats it)."""
        if self.torn_line is not None:
            print(f"harness: {self.path}: line {self.torn_line} is an incomplete last row (a run still writing, or "
                  f"killed); it is left out{'. ' + then if then else ''}", file=sys.stderr)


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
    if header not in LAYOUTS:
        if header and header[0] in ("custom", "reference"):
            raise DamagedFile(f"{path}, line {hline}: is a row, not the header: the header line is missing. Put "
                              f"this line first: {','.join(COLUMNS)} (or {moved}); the file is left untouched")
        newer = any(c in header for c in COLUMNS[len(PRE_SAMPLES_COLUMNS):])
        missing = [c for c in (COLUMNS if newer else PRE_SAMPLES_COLUMNS) if c not in header and c != "spec_hash"]
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
        for column in COLUMNS[len(header):] if header != COLUMNS else ():
            d[column] = ""
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
    return ResultsFile(path, rows, lines, parsed.torn_line, parsed.keep_bytes, legacy, False, LAYOUTS[header])


# ============================================================================ samples.csv
_ROW_ID = re.compile(r"[0-9a-f]{16}\Z")
_SAMPLE_INDEX = re.compile(r"[0-9]+\Z")
_SAMPLES_HEADER = ",".join(SAMPLE_COLUMNS) + "\n"


@dataclasses.dataclass
class SamplesFile:
    """A samples.csv as read by ``read_samples_file``.

    blocks: [(row_id, first line, byte offset of that line, [seconds, ...])], one per row, in file order;
    torn_line / keep_bytes: an incomplete last line (None: the file ends cleanly) and the length without it.
    """

    path: str
    blocks: list
    torn_line: int | None
    keep_bytes: int
    empty: bool


def read_samples_file(path: str) -> SamplesFile:
    """Read and check a samples.csv line by line; DamagedFile naming the file, the line and the fix.

    Each row's samples must be one run of lines with indices 0, 1, 2, ...; a last line without its line
    end is reported as torn (a writer killed mid-line), not parsed. Never modifies the file.
    """
    data = read_bytes(path, "samples.csv")
    if not data:
        return SamplesFile(path, [], None, 0, True)
    moved = "move samples.csv away (the rows in results.csv are kept; their confidence intervals stay)"
    cut = data.rfind(b"\n") + 1
    torn = None
    if cut < len(data):
        torn = data[:cut].count(b"\n") + 1
    try:
        text = data[:cut].decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DamagedFile(f"{path}, line {line}: not UTF-8; {moved}") from None
    lines = text.split("\n")[:-1] if text else []
    if not lines:
        if _SAMPLES_HEADER.startswith(data.decode("utf-8", "replace")):
            return SamplesFile(path, [], 1, 0, False)    # killed while writing the header
        raise DamagedFile(f"{path}: holds no complete line; {moved}")
    if lines[0].rstrip("\r") != _SAMPLES_HEADER.rstrip("\n"):
        raise DamagedFile(f"{path}, line 1: the header must be {_SAMPLES_HEADER.strip()!r}, got {lines[0][:80]!r}; "
                          f"{moved}")
    blocks: list = []
    seen: dict[str, int] = {}
    offset = len(lines[0]) + 1
    for number, line in enumerate(lines[1:], start=2):
        start, offset = offset, offset + len(line.encode("utf-8")) + 1
        fields = line.rstrip("\r").split(",")
        if len(fields) != 3:
            raise DamagedFile(f"{path}, line {number}: {len(fields)} fields, expected 3 (row_id,sample,seconds); "
                              f"{moved}")
        rid, index, value = fields
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not _ROW_ID.match(rid) or not _SAMPLE_INDEX.match(index) or not (math.isfinite(seconds) and seconds >= 0):
            raise DamagedFile(f"{path}, line {number}: expected a 16-hex-digit row_id, a sample index and a time "
                              f">= 0 in seconds, got {line[:80]!r}; {moved}")
        if blocks and blocks[-1][0] == rid:
            block = blocks[-1]
        else:
            if rid in seen:
                raise DamagedFile(f"{path}, lines {seen[rid]} and {number}: the samples of one row twice (two "
                                  f"writers shared this folder?); {moved}")
            seen[rid] = number
            block = (rid, number, start, [])
            blocks.append(block)
        if int(index) != len(block[3]):
            raise DamagedFile(f"{path}, line {number}: sample index {index} where {len(block[3])} was due; {moved}")
        block[3].append(seconds)
    return SamplesFile(path, blocks, torn, cut, False)


def _check_counts(sf: SamplesFile, rows: list[dict]) -> None:
    """Every row's samples, where kept, are as many as its ``repeats``."""
    repeats = {row_id(d): d.get("repeats", "") for d in rows}
    for rid, line, _, values in sf.blocks:
        want = repeats.get(rid)
        if want not in (None, "") and int(want) != len(values):
            raise DamagedFile(f"{sf.path}, line {line}: {len(values)} samples of a row whose repeats is {want}; "
                              "move samples.csv away (the rows in results.csv are kept)")


def read_samples(folder: str):
    """The timed samples of every row of ``folder``'s results.csv, as a pandas DataFrame.

    Columns: the row's key (``ROW_KEY``), ``row_id``, ``sample`` (0, 1, ... in the order taken) and
    ``seconds`` (seconds per call: a sample is the mean over its ``inner_loops`` calls). Samples of a row
    not in results.csv (the row a killed run was measuring) are left out. A folder without samples.csv
    (written before samples were kept) gives an empty DataFrame with these columns. A damaged file raises
    ``io.DamagedFile`` naming the file, the line and the fix.

    >>> df = read_samples("reports/quick-amd-epyc")                 # doctest: +SKIP
    >>> df.groupby(["workload", "phase", "variant"])["seconds"].median()  # doctest: +SKIP
    """
    import pandas as pd

    columns = list(ROW_KEY) + list(SAMPLE_COLUMNS)
    res = read_results(os.path.join(folder, "results.csv"))
    path = samples_path(os.path.join(folder, "results.csv"))
    if not os.path.lexists(path):
        return pd.DataFrame({c: pd.Series(dtype=(float if c == "seconds" else int if c == "sample" else str))
                             for c in columns})
    sf = read_samples_file(path)
    _check_counts(sf, res.rows)
    keys = {row_id(d): key_of(d) for d in res.rows}
    data: dict[str, list] = {c: [] for c in columns}
    for rid, _, _, values in sf.blocks:
        key = keys.get(rid)
        if key is None:
            continue
        for c, v in zip(ROW_KEY, key):
            data[c].extend([v] * len(values))
        data["row_id"].extend([rid] * len(values))
        data["sample"].extend(range(len(values)))
        data["seconds"].extend(values)
    df = pd.DataFrame(data, columns=columns)
    df["sample"] = df["sample"].astype(int)
    df["seconds"] = df["seconds"].astype(float)
    return df


def samples_by_row(folder: str) -> dict[str, "np.ndarray"]:
    """{row_id: the row's samples in seconds (a NumPy array)} for ``folder``; {} without samples.csv."""
    import numpy as np

    path = samples_path(os.path.join(folder, "results.csv"))
    if not os.path.lexists(path):
        return {}
    res = read_results(os.path.join(folder, "results.csv"))
    sf = read_samples_file(path)
    _check_counts(sf, res.rows)
    ids = {row_id(d) for d in res.rows}
    return {rid: np.asarray(values) for rid, _, _, values in sf.blocks if rid in ids}


# ============================================================================ the writer
class ResultsWriter(LockedWriter):
    """Append-only writer of results.csv and samples.csv with resume; the only writer of its folder while open.

    >>> with ResultsWriter("/tmp/x/results.csv") as w:   # doctest: +SKIP
    ...     if not w.done(row): w.write(row, samples_s)
    """

    def __init__(self, path: str):
        self.path = path
        self.samples_path = samples_path(path)
        self.finished: set[tuple] = set()
        self._lock = lock_folder_of(path, ResultsError)
        self._fh = self._sfh = None
        try:
            fresh, fresh_samples = self._recover()
            # NOTE: samples.csv first: its header exists before results.csv's, as its lines come before
            # their row's line.
            self._sfh = open(self.samples_path, "a", newline="", encoding="utf-8")
            if fresh_samples:
                self._sfh.write(_SAMPLES_HEADER)
                self._sync(self._sfh)
            self._fh = open(path, "a", newline="", encoding="utf-8")
        except BaseException:
            for fh in (self._sfh, self._fh):
                if fh is not None:
                    fh.close()
            self._lock.release()
            raise
        self._csv = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        if fresh:
            self._csv.writeheader()
            self._sync(self._fh)

    def _recover(self) -> tuple[bool, bool]:
        """Check the existing files, then drop what a killed run left unfinished.

        Returns (results.csv needs its header, samples.csv needs its header). Both files are checked
        before either is touched, so a damaged one leaves both as they were.
        """
        rows, old = [], None
        if os.path.lexists(self.path):
            try:
                old = read_results(self.path)
            except DamagedFile as err:
                raise ResultsError(str(err)) from None
            if not old.empty and old.layout == "no-algorithm":
                # NOTE: lossless: every finished row keeps its values (the strings read), the new column is
                # empty in them; written atomically, so a crash leaves the old file or the new one
                with atomic_write(self.path, newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=COLUMNS)
                    w.writeheader()
                    w.writerows(old.rows)
                print(f"harness: {self.path}: added the algorithm column (empty in the {len(old.rows)} rows "
                      "written before it) to resume the run", file=sys.stderr)
                old = read_results(self.path)
            if not old.empty and old.layout != "current":
                what = ("without the spec_hash column, so its rows cannot be matched to the specs measured now"
                        if old.legacy else "by an earlier version of the harness (no samples.csv, confidence "
                        "interval or GPU clock columns), so new rows cannot be appended to it")
                raise ResultsError(f"{self.path} was written {what}; it is left untouched (`harness report` and "
                                   "`harness compare` still read it). Pass another --out DIR, or move the old "
                                   "file away")
            rows = old.rows
        ids = {row_id(d) for d in rows}
        sf, cut = None, None
        if os.path.lexists(self.samples_path):
            try:
                sf = read_samples_file(self.samples_path)
                _check_counts(sf, rows)
            except DamagedFile as err:
                raise ResultsError(str(err)) from None
            cut = sf.keep_bytes if sf.torn_line is not None else None
            orphans = [b for b in sf.blocks if b[0] not in ids]
            if orphans:
                first = sf.blocks.index(orphans[0])
                later = [b for b in sf.blocks[first:] if b[0] in ids]
                if later:
                    raise ResultsError(f"{self.samples_path}, line {later[0][1]}: samples of a finished row after "
                                       f"those of a row results.csv does not have (line {orphans[0][1]}); the "
                                       "file was changed by another program. Move samples.csv away (the rows "
                                       "in results.csv are kept) or choose another --out")
                cut = orphans[0][2]
        if old is not None and old.torn_line is not None:
            # NOTE: safe: every record before the torn one parsed and checked above; only the incomplete
            # tail (no line end, or inside an open quote) is cut.
            print(f"harness: {self.path}: dropping the incomplete last row (line {old.torn_line}) left by a "
                  "killed run", file=sys.stderr)
            truncate_file(self.path, old.keep_bytes)
        if cut is not None:
            print(f"harness: {self.samples_path}: dropping the samples of the row a killed run was measuring",
                  file=sys.stderr)
            truncate_file(self.samples_path, cut)
        if sf is None and rows:
            print(f"harness: {self.samples_path} is missing: the {len(rows)} rows already in results.csv keep "
                  "their confidence intervals but have no samples; new rows get theirs", file=sys.stderr)
        self.finished = {key_of(d) for d in rows}
        fresh = old is None or old.keep_bytes == 0
        fresh_samples = sf is None or sf.empty or (cut is not None and cut == 0)
        return fresh, fresh_samples

    @staticmethod
    def _sync(fh) -> None:
        fh.flush()
        os.fsync(fh.fileno())

    def done(self, row: Row) -> bool:
        return row.key() in self.finished

    def write(self, row: Row, samples_s: Iterable[float] = ()) -> None:
        """Append ``row`` and its timed samples (seconds per call); both are on disk when this returns."""
        if row.key() in self.finished:
            raise ResultsError(f"{self.path}: row {row.key()} is already written; a row is measured once")
        samples_s = [float(v) for v in samples_s]
        if samples_s:
            if row.repeats is not None and row.repeats != len(samples_s):
                raise ResultsError(f"{self.path}: row {row.key()} has repeats={row.repeats} but "
                                   f"{len(samples_s)} samples")
            rid = row_id(row)
            self._sfh.write("".join(f"{rid},{i},{v:.6g}\n" for i, v in enumerate(samples_s)))
            self._sync(self._sfh)
        self._csv.writerow(row.to_csv())
        self._sync(self._fh)
        self.finished.add(row.key())

    def _files(self) -> tuple:
        return (self._sfh, self._fh)


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
