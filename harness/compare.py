"""``harness compare A B``: is run B faster, slower or the same as run A, row by row, beyond the noise?

A and B are results folders (results.csv, samples.csv, env.json) or pytest-benchmark JSON files
(``--benchmark-json``, or ``--benchmark-save`` with ``--benchmark-save-data``). Rows are matched on
their key (``results.ROW_KEY``; ``spec_hash`` only when both runs record it). For every row in both
runs, with ``ratio = median time in B / median time in A``:

- the ratio's 95% confidence interval comes from the bootstrap over both rows' samples (harness/stats.py);
- each run's noise is the robust relative standard deviation of its samples, IQR / (1.349 * median);
- the verdict is ``same`` when |ratio - 1| <= max(threshold, noise of A, noise of B), or when the
  confidence interval contains 1; otherwise ``slower`` (ratio > 1) or ``faster`` (ratio < 1).

nvbench's compare script calls a difference real when the relative difference of the means exceeds the
*smaller* of the two runs' relative standard deviations. The rule here is stricter in three ways: the
difference must exceed the *larger* noise, a minimum relative change (``--threshold``, default 5%), and
the bootstrap interval must exclude 1, so a change is reported only when it is beyond either run's noise,
large enough to matter, and not explained by the sampling of the medians. Rows without samples (results
written before samples.csv existed, pytest-benchmark files saved without their data) have no interval
and are decided by the first two conditions alone.

Rows whose status is not ok in either run (error, oom, unsupported, not measured) are listed as
``not timed``; rows in only one run are listed as ``only in A`` / ``only in B``; nothing is dropped. The
geomean of the ratios (with its bootstrap interval) is given per kind (model, dense, conv2d, pool) and
implementation.

Outputs (in ``--out DIR``, each written atomically): ``compare.md``, ``compare.tex`` (booktabs,
longtable, siunitx), ``compare.csv``, ``compare.png`` and ``compare.pdf`` (the plot). Exit codes (see
``run_compare``): 0 done; 1 with ``--fail-on-regression`` when a row of ours is ``slower``; 2 bad input.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import math
import os
import sys

import numpy as np

from . import stats
from .labels import side_label
from .latex import escape as _tex
from .io import DamagedFile, atomic_write, read_json_object, write_text
from .results import ROW_KEY, Row, read_results, row_id, samples_by_row

VERDICTS = ("faster", "slower", "same")
NOT_TIMED, ONLY_A, ONLY_B = "not timed", "only in A", "only in B"
TIMED = ("ok", "parity_fail")
KIND_ORDER = ("model", "dense", "conv2d", "pool")
# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); markers differ too.
STYLE = {"faster": ("#0072B2", "v"), "slower": ("#D55E00", "^"), "same": ("#7F7F7F", "o")}


class CompareError(ValueError):
    """An input that cannot be compared (the message names it and the fix)."""


@dataclasses.dataclass
class Run:
    """One side of a comparison: rows as dicts of results.csv strings, {row_id: samples in seconds}."""

    path: str
    label: str
    rows: list[dict]
    samples: dict
    describe: str = ""           # machine, commit and date, for the report header


# ============================================================================ reading
def _num(path: str, where: str, v, what: str, minimum: float = 0.0, integer: bool = False):
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= minimum
    if ok and integer and float(v) != int(v):
        ok = False
    if not ok:
        raise DamagedFile(f"{path}: {where}: {what} must be a {'whole' if integer else 'finite'} number >= "
                          f"{minimum:g}, got {v!r}; pass a pytest-benchmark --benchmark-json file")
    return int(v) if integer else float(v)


def read_benchmark_json(path: str):
    """Rows and samples of a pytest-benchmark JSON file, in the shapes the results readers give.

    Returns ``(rows, samples)``: ``rows`` a list of dicts with every results.csv column as a string
    (``results.read_results`` gives the same), times converted from seconds to ms; ``samples`` a pandas
    DataFrame laid out like ``results.read_samples`` (``ROW_KEY`` columns, ``row_id``, ``sample``,
    ``seconds``), empty for a benchmark saved without its data (``--benchmark-save`` needs
    ``--benchmark-save-data``; ``--benchmark-json`` always has it). A benchmark written by benchmarks/
    carries the row's key in ``extra_info``; any other is keyed by its full name (as ``workload``).
    Raises ``io.DamagedFile`` naming the file, the benchmark and the fix.
    """
    import pandas as pd

    fix = "pass a pytest-benchmark --benchmark-json file (or one --benchmark-save wrote)"
    data = read_json_object(path, "pytest-benchmark JSON", fix)
    benches = data.get("benchmarks")
    if not isinstance(benches, list):
        raise DamagedFile(f"{path}: no 'benchmarks' list; {fix}")
    rows, seen = [], {}
    sample_cols: dict[str, list] = {c: [] for c in (*ROW_KEY, "row_id", "sample", "seconds")}
    for i, b in enumerate(benches):
        where = f"benchmarks[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("stats"), dict) or not isinstance(
                b.get("extra_info", {}), dict):
            raise DamagedFile(f"{path}: {where} must be an object with a 'stats' object; {fix}")
        st, ex = b["stats"], b.get("extra_info", {})
        median = _num(path, where, st.get("median"), "stats.median", minimum=0.0)
        if median is None or median <= 0:
            raise DamagedFile(f"{path}: {where}: stats.median must be a time > 0 in seconds, got "
                              f"{st.get('median')!r}; {fix}")
        batch = ex.get("batch", 0)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise DamagedFile(f"{path}: {where}: extra_info.batch must be a whole number, got {batch!r}; {fix}")
        name = ex.get("workload") or b.get("fullname") or b.get("name")
        if not isinstance(name, str) or not name:
            raise DamagedFile(f"{path}: {where} has neither extra_info.workload nor a name; {fix}")
        row = Row(impl=str(ex.get("impl", "")), variant=str(ex.get("variant", "")), device=str(ex.get("device", "")),
                  workload=name, kind=str(ex.get("kind", "")), batch=batch, phase=str(ex.get("phase", "")),
                  precision=str(ex.get("precision", "")), shape=str(ex.get("shape", "")),
                  spec_hash=str(ex.get("spec_hash", "")), device_name=str(ex.get("device_name", "")),
                  status=str(ex.get("status", "ok")))
        row.median_ms = 1e3 * median
        iqr = _num(path, where, st.get("iqr"), "stats.iqr")
        lo = _num(path, where, st.get("min"), "stats.min")
        row.iqr_ms = None if iqr is None else 1e3 * iqr
        row.min_ms = None if lo is None else 1e3 * lo
        row.repeats = _num(path, where, st.get("rounds"), "stats.rounds", minimum=1, integer=True)
        row.inner_loops = _num(path, where, st.get("iterations"), "stats.iterations", minimum=1, integer=True)
        flops = _num(path, where, ex.get("flops"), "extra_info.flops", integer=True)
        row.flops = flops
        if flops:
            row.tflops = flops / median / 1e12
        if batch:
            row.samples_per_s = batch / median
        if isinstance(ex.get("parity_ok"), bool):
            row.parity_ok = ex["parity_ok"]
        err = ex.get("parity_rel_err")
        row.parity_rel_err = float(err) if isinstance(err, (int, float)) and not isinstance(err, bool) else None
        row.parity_against = str(ex.get("parity_against", ""))
        values = st.get("data")
        if values is not None:
            if not isinstance(values, list) or not values:
                raise DamagedFile(f"{path}: {where}: stats.data must be a list of times; {fix}")
            values = [_num(path, f"{where}.stats.data[{j}]", v, "a time") for j, v in enumerate(values)]
            if len(values) >= 2 and min(values) > 0:
                row.ci_low_s, row.ci_high_s = stats.median_ci(values)
        d = row.to_csv()
        k = tuple(d[c] for c in ROW_KEY)
        if k in seen:
            raise DamagedFile(f"{path}: benchmarks[{seen[k]}] and {where} are the same row ({', '.join(k[:7])}); "
                              "save each benchmark once per file")
        seen[k] = i
        rows.append(d)
        if values:
            rid = row_id(d)
            for c, v in zip(ROW_KEY, k):
                sample_cols[c].extend([v] * len(values))
            sample_cols["row_id"].extend([rid] * len(values))
            sample_cols["sample"].extend(range(len(values)))
            sample_cols["seconds"].extend(values)
    return rows, pd.DataFrame(sample_cols)


def _label(path: str) -> str:
    base = os.path.basename(os.path.normpath(path)) or path
    return base[:-5] if base.endswith(".json") else base


def read_run(path: str) -> Run:
    """A results folder or a pytest-benchmark JSON file as one side of a comparison; CompareError if unusable."""
    from . import env as envmod

    if not os.path.lexists(path):
        raise CompareError(f"{path}: no such file or folder; pass a results folder (written by `harness run`) "
                           "or a pytest-benchmark JSON file")
    try:
        if os.path.isdir(path):
            csv_path = os.path.join(path, "results.csv")
            if not os.path.lexists(csv_path):
                raise CompareError(f"{path}: no results.csv in this folder; pass a folder written by `harness run` "
                                   "or `harness targets`")
            res = read_results(csv_path)
            if res.empty or not res.rows:
                raise CompareError(f"{csv_path} holds no rows (a run killed before its first row?); finish the run "
                                   "with the same --out, or compare another folder")
            res.warn_torn()
            samples = samples_by_row(path)
            describe = ""
            env_path = os.path.join(path, "env.json")
            if os.path.lexists(env_path):
                e = envmod.read(env_path)
                commit = envmod.commit_text(e)
                describe = "; ".join(x for x in (
                    str(e.get("device_name") or e.get("cpu_model") or ""),
                    f"host {e.get('hostname')}" if e.get("hostname") else "",
                    f"machine {e['machine_id']}" if e.get("machine_id") else "",
                    f"commit {commit}" if commit else "", str(e.get("timestamp_utc") or "")) if x)
            return Run(path, _label(path), res.rows, samples, describe)
        if not path.endswith(".json"):
            raise CompareError(f"{path}: not a results folder nor a pytest-benchmark .json file")
        rows, sdf = read_benchmark_json(path)
        if not rows:
            raise CompareError(f"{path}: the 'benchmarks' list is empty; pass a file with at least one benchmark")
        samples = {rid: g["seconds"].to_numpy() for rid, g in sdf.groupby("row_id", sort=False)} if len(sdf) else {}
        meta = read_json_object(path, "pytest-benchmark JSON", "")
        mi = meta.get("machine_info") if isinstance(meta.get("machine_info"), dict) else {}
        ci = meta.get("commit_info") if isinstance(meta.get("commit_info"), dict) else {}
        cpu = mi.get("cpu") if isinstance(mi.get("cpu"), dict) else {}
        describe = "; ".join(str(x) for x in (
            cpu.get("brand_raw"), f"host {mi['node']}" if mi.get("node") else "",
            f"commit {str(ci.get('id') or '')[:10]}{' (uncommitted changes)' if ci.get('dirty') else ''}"
            if ci.get("id") else "", meta.get("datetime")) if x)
        return Run(path, _label(path), rows, samples, describe)
    except DamagedFile as err:
        raise CompareError(str(err)) from None


# ============================================================================ deciding
def noise_of(row: dict) -> float:
    """IQR / (1.349 * median) of a row (its robust relative standard deviation); NaN when unknown
    (no IQR, or a single sample, whose IQR of 0 says nothing about the noise)."""
    try:
        iqr, med = float(row.get("iqr_ms", "")), float(row.get("median_ms", ""))
    except ValueError:
        return math.nan
    if row.get("repeats", "") not in ("", None) and int(row["repeats"]) < 2:
        return math.nan
    return iqr / (stats.IQR_PER_SIGMA * med) if med > 0 else math.nan


def decide(ratio: float, low: float, high: float, noise_a: float, noise_b: float, threshold: float) -> str:
    """``faster`` / ``slower`` / ``same`` for a time ratio B/A (the rule in the module docstring).

    >>> decide(1.20, 1.17, 1.23, 0.02, 0.02, 0.05), decide(1.03, 1.01, 1.05, 0.01, 0.01, 0.05)
    ('slower', 'same')
    >>> decide(0.80, 0.70, 1.02, 0.02, 0.02, 0.05)     # the interval holds 1
    'same'
    """
    bar = max(threshold, *(n for n in (noise_a, noise_b) if not math.isnan(n)))
    if abs(ratio - 1.0) <= bar:
        return "same"
    if not (math.isnan(low) or math.isnan(high)) and low <= 1.0 <= high:
        return "same"
    return "slower" if ratio > 1.0 else "faster"


@dataclasses.dataclass
class Line:
    """One row of the comparison."""

    key: tuple
    a: dict | None
    b: dict | None
    verdict: str
    ratio: float = math.nan
    low: float = math.nan
    high: float = math.nan
    noise_a: float = math.nan
    noise_b: float = math.nan
    note: str = ""

    @property
    def row(self) -> dict:
        return self.a if self.a is not None else self.b


@dataclasses.dataclass
class Group:
    kind: str
    side: str        # whose code on which device (labels.side_label): ours GPU, PyTorch CPU, JAX GPU
    rows: int
    counts: dict
    geomean: float
    low: float
    high: float


def _median(row: dict) -> float:
    try:
        return float(row.get("median_ms", ""))
    except ValueError:
        return math.nan


def _samples(run: Run, row: dict):
    a = run.samples.get(row_id(row))
    if a is None or len(a) < 2 or float(np.min(a)) <= 0:
        return None
    return a


def compare_runs(a: Run, b: Run, threshold: float) -> tuple[list[Line], list[Group]]:
    """Every row of both runs with its verdict, and the geomean per (kind, side: whose code on which device)."""
    use_hash = any(r.get("spec_hash") for r in a.rows) and any(r.get("spec_hash") for r in b.rows)

    def index(run: Run) -> dict:
        out = {}
        for r in run.rows:
            k = tuple(r.get(c, "") if (c != "spec_hash" or use_hash) else "" for c in ROW_KEY)
            if k in out:
                raise CompareError(f"{run.path}: two rows match as one ({', '.join(k[:7])}): rows of two specs with "
                                   "one name, matched without spec_hash because the other run does not record it; "
                                   "compare runs that both record spec_hash")
            out[k] = r
        return out

    ia, ib = index(a), index(b)
    common = [k for k in ia if k in ib]
    if not common:
        raise CompareError(f"{a.path} ({len(ia)} rows) and {b.path} ({len(ib)} rows) have no row in common (matched on "
                           f"{', '.join(c for c in ROW_KEY if c != 'spec_hash' or use_hash)}); compare runs of the "
                           "same suite")
    lines = []
    for k in list(ia) + [k for k in ib if k not in ia]:
        ra, rb = ia.get(k), ib.get(k)
        if ra is None or rb is None:
            lines.append(Line(k, ra, rb, ONLY_B if ra is None else ONLY_A))
            continue
        ma, mb = _median(ra), _median(rb)
        if ra.get("status") not in TIMED or rb.get("status") not in TIMED or not (ma > 0 and mb > 0):
            why = "; ".join(f"{side}: {r.get('status')}{' (' + r['reason'][:60] + ')' if r.get('reason') else ''}"
                            for side, r in (("A", ra), ("B", rb)) if r.get("status") not in TIMED)
            lines.append(Line(k, ra, rb, NOT_TIMED, note=why or "no median"))
            continue
        sa, sb = _samples(a, ra), _samples(b, rb)
        ratio, low, high = mb / ma, math.nan, math.nan
        if sa is not None and sb is not None:
            _, low, high = stats.ratio_ci(sb, sa)
        line = Line(k, ra, rb, "", ratio, low, high, noise_of(ra), noise_of(rb))
        line.verdict = decide(ratio, low, high, line.noise_a, line.noise_b, threshold)
        notes = []
        if sa is None or sb is None:
            notes.append("no samples: no interval")
        for side, noise in (("A", line.noise_a), ("B", line.noise_b)):
            if math.isnan(noise):
                notes.append(f"noise of {side} unknown (one sample)")
        for side, r in (("A", ra), ("B", rb)):
            if r.get("throttled") == "True":
                notes.append(f"throttled in {side} ({r.get('throttle_reasons') or 'reason unknown'})")
            if r.get("status") == "parity_fail":
                notes.append(f"parity failed in {side}")
        line.note = "; ".join(notes)
        lines.append(line)
    lines.sort(key=_order)
    groups = []
    decided = [ln for ln in lines if ln.verdict in VERDICTS]
    for kind, side in sorted({(ln.row.get("kind", ""), _side(ln.row)) for ln in decided},
                             key=lambda ks: (_kind_rank(ks[0]), ks[1])):
        mine = [ln for ln in decided if (ln.row.get("kind", ""), _side(ln.row)) == (kind, side)]
        counts = {v: sum(ln.verdict == v for ln in mine) for v in VERDICTS}
        pairs = [(_samples(b, ln.b), _samples(a, ln.a)) for ln in mine]
        if all(p[0] is not None and p[1] is not None for p in pairs):
            g, low, high = stats.geomean_ci(pairs)
            g = stats.geomean(ln.ratio for ln in mine)     # the figure itself from the rows' medians
        else:
            g, low, high = stats.geomean(ln.ratio for ln in mine), math.nan, math.nan
        groups.append(Group(kind, side, len(mine), counts, g, low, high))
    return lines, groups


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _order(line: Line):
    r = line.row
    try:
        batch = int(r.get("batch", 0))
    except ValueError:
        batch = 0
    return (_kind_rank(r.get("kind", "")), r.get("device", ""), r.get("workload", ""), batch, r.get("phase", ""),
            r.get("impl", ""), r.get("variant", ""))


# ============================================================================ rendering
def _side(row: dict) -> str:
    return side_label(row.get("impl", ""), row.get("variant", ""), row.get("device", ""))


def row_label(row: dict) -> str:
    """A short readable name: the layer shape in words (or the model), batch, phase, variant."""
    what = row.get("shape") or row.get("workload", "")
    parts = [what]
    if row.get("kind") == "model" and row.get("batch") not in ("", "0"):
        parts.append(f"b={row['batch']}")
    if row.get("phase"):
        parts.append(row["phase"])
    if row.get("variant"):
        parts.append(row["variant"])
    return " ".join(parts)


def _f(v: float, digits: int = 4) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.{digits}g}"


def _pct(v: float) -> str:
    return "" if math.isnan(v) else f"{100 * v:.1f}"


def _ci_text(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"{low:.3f}-{high:.3f}"


def markdown(a: Run, b: Run, lines: list[Line], groups: list[Group], threshold: float) -> str:
    counts = {v: sum(ln.verdict == v for ln in lines) for v in (*VERDICTS, NOT_TIMED, ONLY_A, ONLY_B)}
    out = [f"# {b.label} compared with {a.label}", "",
           f"- A: `{a.path}`" + (f" ({a.describe})" if a.describe else ""),
           f"- B: `{b.path}`" + (f" ({b.describe})" if b.describe else ""),
           f"- ratio = median time in B / median time in A (> 1: B is slower); 95% bootstrap interval of the ratio; "
           f"noise = IQR / (1.349 median) of each run's samples",
           f"- verdict `same` when |ratio - 1| <= max({threshold:g}, noise A, noise B) or the interval holds 1",
           "- rows: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), "",
           "## Geomean of the ratio per kind", "",
           "| kind | side | rows | geomean B/A | 95% CI | faster | slower | same |",
           "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for g in groups:
        out.append(f"| {g.kind or '-'} | {g.side} | {g.rows} | {g.geomean:.4f} | "
                   f"{_ci_text(g.low, g.high)} | "
                   f"{g.counts['faster']} | {g.counts['slower']} | {g.counts['same']} |")
    out += ["", "## Rows", "",
            "| kind | side | row | A ms | B ms | B/A | 95% CI | noise A % | noise B % | verdict | note |",
            "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    for ln in lines:
        r = ln.row
        ma = _f(_median(ln.a)) if ln.a is not None else ""
        mb = _f(_median(ln.b)) if ln.b is not None else ""
        out.append(f"| {r.get('kind') or '-'} | {_side(r)} | {row_label(r).replace('|', '/')} | "
                   f"{ma} | {mb} | {_f(ln.ratio)} | {_ci_text(ln.low, ln.high)} | {_pct(ln.noise_a)} | "
                   f"{_pct(ln.noise_b)} | {ln.verdict} | {ln.note.replace('|', '/')} |")
    return "\n".join(out) + "\n"



def _texnum(v: float, digits: int = 4, max_decimals: int = 6) -> str:
    """A number for an siunitx S column: plain decimal, ``digits`` significant figures (at most
    ``max_decimals`` decimals); empty for NaN."""
    if v is None or math.isnan(v):
        return ""
    if v == 0:
        return "0"
    decimals = min(max_decimals, max(0, digits - 1 - int(math.floor(math.log10(abs(v))))))
    return f"{v:.{decimals}f}"


def _texfix(v: float, decimals: int) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.{decimals}f}"


def latex(a: Run, b: Run, lines: list[Line], groups: list[Group], threshold: float) -> str:
    """Two tables for ``\\input``: the geomeans per kind (a table), and every row (a longtable)."""
    cap_a, cap_b = _tex(a.label), _tex(b.label)
    out = ["% harness compare: needs \\usepackage{booktabs,longtable,siunitx,array}",
           "\\begin{table}[htbp]", "\\centering", "\\small", "\\setlength{\\tabcolsep}{4pt}",
           f"\\caption{{{cap_b} against {cap_a}: geometric mean of the time ratio B/A per kind (below 1: B is "
           "faster), its 95\\% bootstrap confidence interval, and how many rows are faster, slower or the same.}",
           "\\label{tab:compare-summary}",
           "\\begin{tabular}{llrS[table-format=2.4]S[table-format=2.4]S[table-format=2.4]rrr}", "\\toprule",
           "kind & side & rows & {geomean} & {CI low} & {CI high} & faster & slower & same \\\\", "\\midrule"]
    for g in groups:
        out.append(f"{_tex(g.kind or '-')} & {_tex(g.side)} & {g.rows} & {_texfix(g.geomean, 4)} & "
                   f"{_texfix(g.low, 4)} & {_texfix(g.high, 4)} & {g.counts['faster']} & {g.counts['slower']} & "
                   f"{g.counts['same']} \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    head = "row & {A (ms)} & {B (ms)} & {B/A} & 95\\% CI & verdict \\\\"
    out += ["{\\footnotesize\\setlength{\\tabcolsep}{4pt}",
            "\\begin{longtable}{>{\\raggedright\\arraybackslash}p{0.36\\linewidth} S[table-format=4.4] "
            "S[table-format=4.4] S[table-format=2.3] l l}",
            f"\\caption{{{cap_b} against {cap_a}, row by row: median times, their ratio B/A with its 95\\% "
            f"bootstrap confidence interval, and the verdict (same: within max({threshold:g}, either run's noise), "
            "or an interval holding 1).}\\label{tab:compare-rows}\\\\",
            "\\toprule", head, "\\midrule", "\\endfirsthead",
            "\\toprule", head, "\\midrule", "\\endhead",
            "\\bottomrule", "\\endlastfoot"]
    kind = None
    for ln in lines:
        r = ln.row
        if r.get("kind", "") != kind:
            kind = r.get("kind", "")
            out.append(f"\\multicolumn{{6}}{{l}}{{\\textit{{{_tex(kind or 'rows')}}}}} \\\\")
        ma = _median(ln.a) if ln.a is not None else math.nan
        mb = _median(ln.b) if ln.b is not None else math.nan
        ci = "" if math.isnan(ln.low) else f"{ln.low:.3f}--{ln.high:.3f}"
        out.append(f"{_tex(row_label(r))} & {_texnum(ma, 4, 4)} & {_texnum(mb, 4, 4)} & {_texfix(ln.ratio, 3)} & "
                   f"{ci} & {_tex(ln.verdict)} \\\\")
    out += ["\\end{longtable}", "}"]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("kind", "impl", "variant", "device", "workload", "batch", "phase", "precision", "spec_hash", "shape",
               "a_median_ms", "b_median_ms", "ratio", "ci_low", "ci_high", "noise_a", "noise_b", "verdict", "note")


def csv_text(lines: list[Line]) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for ln in lines:
        r = ln.row
        w.writerow([*(r.get(c, "") for c in ("kind", "impl", "variant", "device", "workload", "batch", "phase",
                                              "precision", "spec_hash", "shape")),
                    ln.a.get("median_ms", "") if ln.a else "", ln.b.get("median_ms", "") if ln.b else "",
                    _f(ln.ratio, 6), _f(ln.low, 6), _f(ln.high, 6), _f(ln.noise_a, 4), _f(ln.noise_b, 4), ln.verdict,
                    ln.note])
    return buf.getvalue()


RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0,
               3.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0)
FOREST_MAX_ROWS = 40    # up to this many rows: one labelled line per row; more: a sorted curve per kind


def _ratio_limits(lines: list, threshold: float) -> tuple[float, float, list[float]]:
    """Limits and ticks of a log axis of time ratios: the ratios and their intervals, the intervals cut at
    twice (half) the extreme ratio so one wide interval does not squash the rest; ticks at least 1/8 of
    the axis apart (in log)."""
    r = [ln.ratio for ln in lines if ln.ratio > 0 and math.isfinite(ln.ratio)] or [1.0]
    lows = [ln.low for ln in lines if ln.low > 0 and math.isfinite(ln.low)]
    highs = [ln.high for ln in lines if math.isfinite(ln.high)]
    lo = max(min([*r, *lows, 1 - threshold]), min(r) / 2) / 1.08
    hi = min(max([*r, *highs, 1 + threshold]), max(r) * 2) * 1.08
    gap = (math.log10(hi) - math.log10(lo)) / 8
    ticks = [1.0]
    for side in (sorted((t for t in RATIO_TICKS if t > 1 and t <= hi)),
                 sorted((t for t in RATIO_TICKS if t < 1 and t >= lo), reverse=True)):
        last = 1.0
        for t in side:
            if abs(math.log10(t) - math.log10(last)) >= gap:
                ticks.append(t)
                last = t
    return lo, hi, sorted(ticks)


def plot(a: Run, b: Run, lines: list[Line], groups: list[Group], threshold: float, out_dir: str) -> list[str]:
    """compare.png and compare.pdf: every row's time ratio B/A with its 95% interval, grouped by kind.

    Up to FOREST_MAX_ROWS rows: one labelled line per row (a forest plot). More: per kind, the rows
    sorted by ratio (no labels; the table names them).
    """
    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    decided = [ln for ln in lines if ln.verdict in VERDICTS]
    kinds = sorted({ln.row.get("kind", "") for ln in decided}, key=_kind_rank)
    by_kind = {k: sorted((ln for ln in decided if ln.row.get("kind", "") == k), key=lambda ln: ln.ratio) for k in kinds}
    forest = len(decided) <= FOREST_MAX_ROWS
    lo, hi, ticks = _ratio_limits(decided, threshold)

    def draw(ax, rows, pos, vertical):
        band = ax.axvspan if vertical else ax.axhspan
        ref = ax.axvline if vertical else ax.axhline
        band(1 - threshold, 1 + threshold, color="#E5E5E5", zorder=0)
        ref(1.0, color="black", linewidth=0.8, zorder=1)
        for i, ln in zip(pos, rows):
            colour, marker = STYLE[ln.verdict]
            ours = ln.row.get("impl", "") != "reference"
            if not math.isnan(ln.low):
                err = [[ln.ratio - ln.low], [ln.high - ln.ratio]]
                (ax.errorbar(ln.ratio, i, xerr=err, fmt="none", ecolor=colour, elinewidth=0.9, capsize=1.5, zorder=2)
                 if vertical else
                 ax.errorbar(i, ln.ratio, yerr=err, fmt="none", ecolor=colour, elinewidth=0.9, capsize=1.5, zorder=2))
            x, y = (ln.ratio, i) if vertical else (i, ln.ratio)
            ax.plot(x, y, linestyle="none", marker=marker, markersize=4.5, color=colour,
                    markerfacecolor=colour if ours else "white", zorder=3)
        set_scale, set_lim = (ax.set_xscale, ax.set_xlim) if vertical else (ax.set_yscale, ax.set_ylim)
        set_scale("log")
        set_lim(lo, hi)
        axis = ax.xaxis if vertical else ax.yaxis
        axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(axis="x" if vertical else "y", color="#CCCCCC", linewidth=0.5)

    def title(kind):
        parts = [f"{g.side} {g.geomean:.3f}" + (f" [{g.low:.3f}, {g.high:.3f}]" if not math.isnan(g.low)
                                                              else "") for g in groups if g.kind == kind]
        return f"{kind or 'rows'}, geomean B/A: " + "; ".join(parts)

    with matplotlib.rc_context({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
                                "ytick.labelsize": 8, "legend.fontsize": 8, "pdf.fonttype": 42}):
        n = max(1, len(kinds))
        if forest:
            heights = [max(1, len(by_kind[k])) * 0.2 + 0.45 for k in kinds] or [1.0]
            fig = Figure(figsize=(6.3, 1.2 + sum(heights)), layout="constrained")
            axes = fig.subplots(n, 1, squeeze=False, sharex=True, gridspec_kw={"height_ratios": heights})[:, 0]
            for ax, kind in zip(axes, kinds):
                rows = by_kind[kind][::-1]
                draw(ax, rows, range(len(rows)), vertical=True)
                ax.set_yticks(range(len(rows)), [f"{row_label(ln.row)[:44]}" for ln in rows])
                ax.set_ylim(-0.6, len(rows) - 0.4)
                ax.set_title(title(kind), loc="left")
            axes[-1].set_xlabel("time B / time A (log scale; < 1: B faster)")
        else:
            fig = Figure(figsize=(6.3, 1.2 + 2.0 * n), layout="constrained")
            axes = fig.subplots(n, 1, squeeze=False)[:, 0]
            for ax, kind in zip(axes, kinds):
                rows = by_kind[kind]
                draw(ax, rows, range(len(rows)), vertical=False)
                ax.set_xticks([])
                ax.set_xlim(-1, len(rows))
                ax.set_xlabel(f"{len(rows)} rows, sorted by time ratio")
                ax.set_ylabel("time B / time A")
                ax.set_title(title(kind), loc="left")
        handles = [Line2D([], [], linestyle="none", marker=STYLE[v][1], color=STYLE[v][0], markersize=5, label=v)
                   for v in VERDICTS]
        handles += [Line2D([], [], linestyle="none", marker="o", color="black", markersize=5, label="ours (filled)"),
                    Line2D([], [], linestyle="none", marker="o", color="black", markerfacecolor="white", markersize=5,
                           label="PyTorch (open)"),
                    Patch(color="#E5E5E5", label=f"within \u00b1{100 * threshold:g}%")]
        fig.legend(handles=handles, loc="outside lower center", ncols=6, frameon=False, handletextpad=0.3,
                   columnspacing=1.0)
        fig.suptitle(f"{b.label} (B) against {a.label} (A): median time ratio with 95% bootstrap interval",
                     fontsize=9)
        files = []
        for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
            path = os.path.join(out_dir, f"compare.{ext}")
            with atomic_write(path, binary=True) as fh:
                fig.savefig(fh, format=ext, dpi=200, metadata=meta)
            files.append(path)
    return files


# ============================================================================ the command
def default_out(a: Run, b: Run) -> str:
    from .env import slug

    return os.path.join("reports", f"compare-{slug(a.label)}-vs-{slug(b.label)}")


def run_compare(a_path: str, b_path: str, *, threshold: float = 0.05, fail_on_regression: bool = False,
                out: str | None = None) -> int:
    """Compare, write the outputs, print the summary; returns the exit code.

    0: done (no regression, or not asked to fail on one); 1: ``fail_on_regression`` and a row of ours
    (impl ``custom``, or a benchmark without the harness's metadata) is ``slower``. Bad input raises
    CompareError (the CLI prints it and exits with 2) before anything is written.
    """
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold < 1):
        raise CompareError(f"--threshold {threshold!r}: give the minimum relative change as a fraction from 0 to "
                           "below 1, e.g. 0.05 for 5%")
    a, b = read_run(a_path), read_run(b_path)
    if a.label == b.label:
        a.label, b.label = f"A: {a.label}", f"B: {b.label}"
    out = out or default_out(a, b)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise CompareError(f"--out {out}: is a file, not a folder; choose another --out")
    lines, groups = compare_runs(a, b, threshold)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise CompareError(f"--out {out}: cannot create it ({err.strerror}); choose another --out") from None
    md = markdown(a, b, lines, groups, threshold)
    write_text(os.path.join(out, "compare.md"), md)
    write_text(os.path.join(out, "compare.tex"), latex(a, b, lines, groups, threshold))
    with atomic_write(os.path.join(out, "compare.csv"), newline="") as fh:
        fh.write(csv_text(lines))
    plot(a, b, lines, groups, threshold, out)
    print(md.split("\n## Rows", 1)[0].rstrip())
    slower = [ln for ln in lines if ln.verdict == "slower" and ln.row.get("impl", "") in ("custom", "")]
    print(f"\nharness: comparison written to {out}/compare.md (.tex, .csv, .png, .pdf)", file=sys.stderr)
    if slower:
        print(f"harness: {len(slower)} row(s) of ours slower in B beyond the noise and the {threshold:g} threshold: "
              + "; ".join(f"{row_label(ln.row)} x{ln.ratio:.3f}" for ln in slower[:5]), file=sys.stderr)
    return 1 if (fail_on_regression and slower) else 0


__all__ = ["CompareError", "Run", "read_benchmark_json", "read_run", "compare_runs", "decide", "noise_of",
           "run_compare"]
