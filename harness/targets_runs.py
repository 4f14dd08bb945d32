"""``harness targets --runs DIR DIR [DIR ...]``: several runs of the targets on one card, combined.

The goal rule: three runs of the targets on one card; a goal counts as met when it holds in the median of
the three, and the spread is committed with them. Nothing is measured here. Each run folder (written by
``harness targets``: ``results.csv``, ``env.json``, ``samples.csv`` when there is one) is read with the
strict readers, and every target is evaluated afresh from its rows with the current definitions
(``targets.evaluate``; the folder's own ``targets.csv`` is not read), so runs measured before a target
changed count by today's rule. ``OUTDIR/targets_runs.csv`` has one line per target:

    target, goal, <one column per run, named by its folder>, median, min, max, spread, met, runs, note

- a run's column: the figure that run gives (as in its targets.csv); empty when the run did not measure
  the target (a ``--device cpu`` run, rows missing or none ok);
- ``median``, ``min``, ``max``: over the runs that measured it (the median of an even count is the mean of
  the middle two); ``spread`` = max / min - 1 (0.015: the runs lie within 1.5%), empty under two runs;
- ``met`` is ``True`` when the median reaches the goal **and** in every run the target was measured with
  no row behind it left out: every row of ours measured, status ok and passing parity, and the reference
  row beside it timed (the per-run rule of targets.csv, less its goal; a reference row timed but failing
  parity still counts, as there). One run short of that (a row of ours failing parity, a row missing, no
  GPU) makes it ``False`` whatever the median; empty when no run measured the target;
- ``runs``: how many runs measured it; ``note``: which run lacks it and why, the rows of ours left out in
  a run, runs that straddle the goal, and runs whose 95% confidence intervals (from samples.csv) do not
  overlap (the run-to-run spread is then more than each run's own noise).

A run column is named by the folder's last path component (the paths as given when two share one).
``targets_runs.md`` and ``targets_runs.tex`` hold the same as a table whose caption names each run's
folder, card, date and commit. The runs must come from one card model (env.json ``device_name``);
runs of that card on different hosts (a leased GPU is rarely the same machine twice) are combined, and
the caption names each run's machine (``machine_id``) when they differ. Every input is checked before anything is written, and each file is replaced
atomically, so a bad input leaves OUTDIR as it was.

>>> combine(["reports/targets-h100", "reports/targets-h100-2", "reports/targets-h100-3"],
...         "reports/targets-h100-runs")          # doctest: +SKIP
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
import os
import statistics
from typing import NoReturn

from . import env as envmod
from .io import DamagedFile, write_text
from .targets import TARGETS, evaluate, networks_workloads

OUT_FILES = ("targets_runs.csv", "targets_runs.md", "targets_runs.tex")
HEAD_COLUMNS = ("target", "goal")
TAIL_COLUMNS = ("median", "min", "max", "spread", "met", "runs", "note")


class TargetsRunsError(ValueError):
    """A run folder or an OUTDIR that cannot be used; the message names it and the fix."""


@dataclasses.dataclass
class Run:
    """One run folder, its targets evaluated: ``lines`` as targets.csv has them, ``left_out`` {target: rows of
    ours (or references) left out}, and from env.json the device, machine, date and commit."""

    path: str
    label: str
    lines: dict[str, dict]
    left_out: dict[str, list[str]]
    device: str
    machine: str
    date: str
    commit: str


def _fail(msg: str) -> NoReturn:
    raise TargetsRunsError(msg)


def _env_facts(env: dict) -> tuple[str, str, str, str, str | None]:
    """(device, machine, date, commit, gpu_reason) from an env.json record."""
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    device = str(env.get("device_name") or gpu.get("name") or env.get("cpu_model") or "an unknown device")
    stamp = str(env.get("timestamp_utc") or "")
    try:
        date = datetime.datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        date = stamp or "no date"
    commit = envmod.commit_text(env)
    run_device = env.get("run_device")
    if run_device == "gpu" or (run_device is None and gpu):
        reason = None
    else:
        reason = "this run is --device cpu" if run_device == "cpu" else "env.json records no GPU"
    return device, str(env.get("machine_id") or ""), date, commit, reason


def read_run(path: str, label: str, networks: set[str]) -> Run:
    """Read a run folder with the strict readers and evaluate every target from its rows."""
    from .results import ResultsError, read_results, samples_by_row

    how = "pass folders written by `harness targets --out DIR`"
    if not os.path.lexists(path):
        _fail(f"--runs {path}: no such folder; {how}")
    if not os.path.isdir(path):
        _fail(f"--runs {path}: is a file, not a run folder; {how}")
    results = os.path.join(path, "results.csv")
    if not os.path.lexists(results):
        _fail(f"--runs {path}: no results.csv in this folder; {how}")
    env_path = os.path.join(path, "env.json")
    if not os.path.lexists(env_path):
        _fail(f"--runs {path}: no env.json (a run not finished yet: `harness targets` writes it after its last "
              f"row); finish it with `python -m harness targets --out {path}`, or leave it out")
    try:
        res = read_results(results)
        env = envmod.read(env_path)
        samples = samples_by_row(path)
    except (DamagedFile, ResultsError) as err:
        raise TargetsRunsError(str(err)) from None
    if not res.rows:
        _fail(f"--runs {path}: {results} holds no rows (a run killed before its first row?); finish the run with "
              f"`python -m harness targets --out {path}`, or leave it out")
    res.warn_torn()
    device, machine, date, commit, gpu_reason = _env_facts(env)
    left_out: dict[str, list[str]] = {}
    lines = evaluate(res.rows, gpu_reason, samples, networks=networks, left_out=left_out)
    return Run(path, label, {line["target"]: line for line in lines}, left_out, device, machine, date, commit)


def _labels(paths: list[str]) -> list[str]:
    """Column names for the runs: the folders' last path components, or the paths as given when two share
    one (or one is a fixed column's name)."""
    fixed = set(HEAD_COLUMNS + TAIL_COLUMNS)
    base = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    if len(set(base)) == len(base) and not fixed & set(base):
        return base
    full = [os.path.normpath(p) for p in paths]
    return [f"./{p}" if p in fixed else p for p in full]


def _check_same_card(runs: list[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        if r.device != first.device:
            _fail(f"--runs: {first.path} was measured on {first.device} but {r.path} on {r.device}; the goal rule "
                  "takes runs of one card: pass runs measured on the same card")


def _num(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def _runs_text(missing: dict[str, list[str]]) -> str:
    """"r1, r3 (no rows); r2 (...)": the runs that lack a target, grouped by the reason."""
    return "; ".join(f"{', '.join(labels)} ({why})" for why, labels in missing.items())


def combine_lines(runs: list[Run]) -> list[dict]:
    """targets_runs.csv lines (HEAD_COLUMNS, one column per run label, TAIL_COLUMNS) from evaluated runs."""
    out = []
    for t in TARGETS:
        line = {"target": t.name, "goal": f"{t.goal:g}"}
        values, notes, short = {}, [], []
        missing: dict[str, list[str]] = {}      # why -> the runs that lack the target for that reason
        for r in runs:
            run_line = r.lines[t.name]
            v = _num(run_line.get("measured", ""))
            line[r.label] = "" if v is None else run_line["measured"]
            if v is None:
                why = _short(run_line.get("note", "").removeprefix("not measured: "), 80)
                missing.setdefault(why, []).append(r.label)
                continue
            values[r.label] = v
            if r.left_out.get(t.name):
                bad = r.left_out[t.name]
                short.append(f"{r.label}: {len(bad)} row(s) left out (not ok or parity failed), e.g. {_short(bad[0])}")
        xs = list(values.values())
        line.update(median="", min="", max="", spread="", met="", runs=str(len(xs)))
        if xs:
            median = statistics.median(xs)
            line.update(median=f"{median:.4g}", min=f"{min(xs):.4g}", max=f"{max(xs):.4g}")
            if len(xs) >= 2:
                line["spread"] = f"{max(xs) / min(xs) - 1:.4g}"
            line["met"] = str(median >= t.goal and not missing and not short)
            if missing:
                notes.append(f"not measured in {_runs_text(missing)}: the median is over the {len(xs)} run(s) that "
                             "measured it, and the target is not met")
            notes += short
            reached = sum(x >= t.goal for x in xs)
            if 0 < reached < len(xs):
                notes.append(f"the runs straddle the goal ({reached} of {len(xs)} reach it)")
            if median < t.goal:
                notes.append(f"median short of the goal by {100 * (1 - median / t.goal):.1f}%")
            cis = [(_num(r.lines[t.name].get("ci_low", "")), _num(r.lines[t.name].get("ci_high", "")))
                   for r in runs if r.label in values]
            if len(cis) >= 2 and all(lo is not None and hi is not None for lo, hi in cis):
                if max(lo for lo, _ in cis) > min(hi for _, hi in cis):
                    notes.append("the runs' 95% confidence intervals do not overlap: the spread between runs is "
                                 "more than each run's own noise")
        else:
            notes.append(f"not measured in any run: {_runs_text(missing)}")
        line["note"] = "; ".join(notes)
        out.append(line)
    return out


def csv_text(runs: list[Run], lines: list[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=[*HEAD_COLUMNS, *(r.label for r in runs), *TAIL_COLUMNS], lineterminator="\n")
    w.writeheader()
    w.writerows(lines)
    return buf.getvalue()


def caption(runs: list[Run]) -> str:
    one_machine = len({r.machine for r in runs}) == 1
    machine = f" (machine {runs[0].machine})" if one_machine and runs[0].machine else ""
    each = "; ".join(r.label + (f" ({r.path})" if r.label != r.path else "") + f": {r.date}"
                     + ("" if one_machine or not r.machine else f", machine {r.machine}")
                     + (f", commit {r.commit}" if r.commit else "") for r in runs)
    return (f"Performance targets over {len(runs)} runs on {runs[0].device}{machine}, each a ratio reference time / "
            f"our time (> 1: ours faster), evaluated from the runs' rows with the current target definitions. "
            f"{each}. Median, min and max over the runs that measured the target; spread = max / min - 1. met: "
            "the median reaches the goal and every run measured it with every row of ours behind it ok and "
            "passing parity.")


def table(runs: list[Run], lines: list[dict]):
    """The combined targets as a ``tables.Table``: one column per run, headed by its label (the folder's
    name), its path, date and commit in the caption."""
    from .tables import Col, Table, drop_constant

    rows = []
    for line in lines:
        row = {"target": line["target"], "goal": _num(line["goal"]), "median": _num(line["median"]),
               "min": _num(line["min"]), "max": _num(line["max"]), "runs": line["runs"], "note": line["note"],
               "spread": f"{100 * float(line['spread']):.1f}%" if line["spread"] else "",
               "met": {"True": "yes", "False": "no"}.get(line["met"], "not measured")}
        row.update({f"run{i}": _num(line[r.label]) for i, r in enumerate(runs, start=1)})
        rows.append(row)
    cols = ([Col("target", "target"), Col("goal", "goal", "num")]
            + [Col(f"run{i}", r.label, "num") for i, r in enumerate(runs, start=1)]
            + [Col("median", "median", "num"), Col("min", "min", "num"), Col("max", "max", "num"),
               Col("spread", "spread"), Col("met", "met"), Col("runs", "runs", "int"),
               Col("note", "note", "para", width_cm=5.0)])
    return drop_constant(Table("targets-runs", "targets_runs", f"Performance targets over {len(runs)} runs",
                               caption(runs), cols, rows))


def default_out(runs: list[Run]) -> str:
    from .env import slug

    return os.path.join("reports", f"targets-runs-{slug(runs[0].device)}")


def combine(paths: list[str], out: str | None = None) -> tuple[str, dict[str, str]]:
    """Evaluate the targets of every run folder in ``paths``, write targets_runs.csv/.md/.tex into ``out``
    (default ``reports/targets-runs-<device>``); returns (the Markdown table, {file name: path}).

    Raises TargetsRunsError, before anything is written, for fewer than two runs, a folder given twice, a
    missing or damaged folder, results.csv or env.json, runs of different cards, or an ``out``
    that is a file or holds a folder under one of the output names.
    """
    from . import latex
    from .tables import markdown

    if len(paths) < 2:
        _fail(f"--runs: {len(paths)} run folder given; give two or more (the goal rule takes three runs of one "
              "card), e.g. --runs reports/targets-x reports/targets-x-2 reports/targets-x-3")
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            _fail(f"--runs: {seen[real]} and {p} are the same folder; give each run once")
        seen[real] = p
    networks = networks_workloads()
    runs = [read_run(p, label, networks) for p, label in zip(paths, _labels(paths))]
    _check_same_card(runs)
    out = out or default_out(runs)
    if os.path.lexists(out) and not os.path.isdir(out):
        _fail(f"--out {out}: is a file, not a folder; choose another --out")
    for name in OUT_FILES:
        if os.path.isdir(os.path.join(out, name)):
            _fail(f"--out {out}: {name} there is a folder; move it away or choose another --out")
    lines = combine_lines(runs)
    t = table(runs, lines)
    md = markdown(t)
    # NOTE: one column per run leaves the note column less than its 3 cm: the table is scaled to the line
    # width when it is wider (a no-op otherwise)
    tex = (f"% generated by `python -m harness targets --runs`; needs \\usepackage{{{latex.PACKAGES}}}\n"
           + latex.shrink_to_fit(latex.to_latex(t)))
    texts = {"targets_runs.csv": csv_text(runs, lines), "targets_runs.md": f"# {t.title}\n\n{md}",
             "targets_runs.tex": tex}
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        _fail(f"--out {out}: cannot create it ({err.strerror}); choose another --out")
    if not os.access(out, os.W_OK | os.X_OK):
        _fail(f"--out {out}: cannot write there (permission denied); choose another --out")
    files = {}
    for name in OUT_FILES:
        path = os.path.join(out, name)
        try:
            write_text(path, texts[name])
        except OSError as err:
            _fail(f"--out {out}: writing {name} failed ({err.strerror}); free the space or fix the permissions, "
                  "then run the command again")
        files[name] = path
    return md, files
