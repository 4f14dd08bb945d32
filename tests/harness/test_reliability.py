"""Results that cannot be silently wrong: every damaged input, unsafe setting and interruption, through the CLI.

Each case of CASES builds a folder, runs ``python -m harness ...`` in a subprocess (cwd: the repository
root) and checks the exit code, the message (``harness: error: ...``, never a traceback) and that no file
of the folder was changed or lost (SHA-256 of every file before and after). The cases run concurrently
(one module fixture) to keep the file fast on 2 cores.

Then: two runs into one --out at once (zero duplicate keys), SIGKILL of ``harness run`` at several moments
followed by a resume (every finished row kept, no duplicates, the uninterrupted row count, every row's
samples in samples.csv and no others), and SIGKILL of ``harness report`` (each artefact valid or absent,
inputs unchanged).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.io import FolderLock
from harness.results import (COLUMNS, PRE_SAMPLES_COLUMNS, ROW_KEY, key_of, read_results, read_samples,
                             read_samples_file, row_id)
from harness.suites import SuiteError, load_suite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Rows of a few tens of ms each, so that kills land between rows and inside them.
TINY = """
name = "tiny"
[settings]
warmup = 0
budget_s = 0.02
min_repeats = 1
max_repeats = 3
min_sample_ms = 0
[[models]]
models = ["thesis-2-3-1"]
batches = [1, 3]
phases = ["inference", "train_step"]
[[dense]]
shapes = [[5, 3, 7], [2, 3, 4]]
phases = ["forward"]
"""
SPEC = """name = "{name}"
input_shape = [2]
num_classes = 2
loss = "softmax_cross_entropy"
[[layers]]
type = "dense"
units = {units}
[[layers]]
type = "relu"
[[layers]]
type = "dense"
units = 2
"""


def harness(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def popen(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_args(suite, out, *extra):
    return ["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet", "--no-report", *extra]


def snapshot(folder) -> dict:
    """{relative path: sha256} of every file under ``folder`` (folders listed as 'dir').

    The writer's lock file (.lock, holding the PID of the last writer) is left out: a refused run may
    take the lock before it reads results.csv.
    """
    out = {}
    for base, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(base, d), folder)] = "dir"
        for f in files:
            if f == ".lock":
                continue
            p = os.path.join(base, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def keys(rows) -> list[tuple]:
    return [key_of(r) for r in rows]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny suite file and one uninterrupted run of it (the reference every other check compares with)."""
    d = tmp_path_factory.mktemp("reliability")
    suite = d / "tiny.toml"
    suite.write_text(TINY)
    base = d / "baseline"
    proc = harness(*run_args(suite, base))
    assert proc.returncode == 0, proc.stderr
    rows = read_results(str(base / "results.csv")).rows
    assert len(rows) == len(load_suite(str(suite)).jobs("cpu"))
    return {"dir": d, "suite": suite, "base": base, "rows": rows}


# ============================================================================ the table
def _copy(w, d):
    shutil.copytree(w["base"], d)
    return d


def _edit_lines(path, fn):
    lines = open(path, "rb").read().split(b"\n")
    open(path, "wb").write(b"\n".join(fn(lines)))


def _suite_with(w, d, settings="", name="tiny", models='["thesis-2-3-1"]'):
    given = {line.split("=")[0].strip() for line in settings.splitlines() if "=" in line}
    text = "\n".join(line for line in TINY.splitlines() if line.split("=")[0].strip() not in given)
    text = text.replace('name = "tiny"', f'name = "{name}"').replace("[settings]\n", f"[settings]\n{settings}\n")
    text = text.replace('models = ["thesis-2-3-1"]', f"models = {models}")
    p = d / "suite.toml"
    p.write_text(text)
    return p


def case_lock_held(w, d):
    """One writer per folder: a live process (this test) holds the lock."""
    out = _copy(w, d / "out")
    lock = FolderLock(str(out)).acquire()
    return run_args(w["suite"], out), out, lock


def case_header_lost_column(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: [ls[0].replace(b",reason", b"")] + ls[1:])
    return ["report", str(out)], out


def case_no_header(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: ls[1:])
    return ["report", str(out)], out


def case_env_garbage(w, d):
    out = _copy(w, d / "out")
    (out / "env.json").write_bytes(b"{not json\n")
    return ["report", str(out)], out


def case_env_empty(w, d):
    out = _copy(w, d / "out")
    (out / "env.json").write_bytes(b"")
    return ["report", str(out)], out


def case_results_empty(w, d):
    out = _copy(w, d / "out")
    (out / "results.csv").write_bytes(b"")
    return ["report", str(out)], out


def case_extra_field(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: ls[:2] + [ls[2].replace(b"\r", b",extra\r")] + ls[3:])
    return ["report", str(out)], out


def case_not_utf8(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: ls[:3] + [b"\xff\xfe" + ls[3]] + ls[4:])
    return ["report", str(out)], out


def case_not_utf8_run(w, d):
    args, out = case_not_utf8(w, d)
    return run_args(w["suite"], out), out


def case_older_layout_run(w, d):
    """A results.csv written before samples.csv and the confidence interval: read, never appended to."""
    out = _copy(w, d / "out")
    os.remove(out / "samples.csv")
    old = [line.split(b",")[:len(PRE_SAMPLES_COLUMNS)] for line in (out / "results.csv").read_bytes().split(b"\r\n")]
    (out / "results.csv").write_bytes(b"\r\n".join(b",".join(f) for f in old[:3]) + b"\r\n")
    return run_args(w["suite"], out), out


def case_samples_damaged_run(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "samples.csv", lambda ls: ls[:3] + [ls[3].replace(b",", b";", 1)] + ls[4:])
    return run_args(w["suite"], out), out


def case_samples_orphan_in_the_middle(w, d):
    """Samples of a row results.csv lacks, followed by a finished row's: not what a kill leaves."""
    out = _copy(w, d / "out")

    def insert(ls):
        k = next(i for i in range(2, len(ls)) if ls[i].split(b",")[0] != ls[1].split(b",")[0])  # after row 1
        return ls[:k] + [b"0123456789abcdef,0,0.001"] + ls[k:]

    _edit_lines(out / "samples.csv", insert)
    return run_args(w["suite"], out), out


def case_bad_type(w, d):
    out = _copy(w, d / "out")
    i = COLUMNS.index("median_ms")
    _edit_lines(out / "results.csv",
                lambda ls: ls[:2] + [b",".join(v if j != i else b"fast" for j, v in enumerate(ls[2].split(b",")))] + ls[3:])
    return ["report", str(out)], out


def case_duplicate_rows(w, d):
    """What two writers without a lock left behind: every row twice."""
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: ls[:-1] + ls[1:])
    return ["report", str(out)], out


def case_report_out_is_file(w, d):
    out = _copy(w, d / "out")
    (d / "afile").write_text("keep me\n")
    return ["report", str(out), "--out", str(d / "afile")], d


def case_results_is_folder(w, d):
    out = d / "out"
    (out / "results.csv").mkdir(parents=True)
    return ["report", str(out)], out


def case_results_is_folder_run(w, d):
    args, out = case_results_is_folder(w, d)
    return run_args(w["suite"], out), out


def case_header_damaged_and_torn(w, d):
    out = _copy(w, d / "out")
    _edit_lines(out / "results.csv", lambda ls: [ls[0].replace(b",reason", b"")] + ls[1:])
    with open(out / "results.csv", "ab") as fh:
        fh.write(b"custom,numpy,cpu,thesis-2-3-1,mo")
    return run_args(w["suite"], out), out


def case_suite_name_escapes(w, d):
    return ["run", "--suite", str(_suite_with(w, d, name="../../../x")), "--device", "cpu", "--quiet",
            "--no-report"], d


def case_same_spec_name(w, d):
    (d / "a.toml").write_text(SPEC.format(name="twin", units=3))
    (d / "b.toml").write_text(SPEC.format(name="twin", units=4))
    return run_args(_suite_with(w, d, models=f'["{d / "a.toml"}", "{d / "b.toml"}"]'), d / "out"), d


def case_spec_too_big(w, d):
    (d / "big.toml").write_text(SPEC.format(name="big", units=10**12))
    return run_args(_suite_with(w, d, models=f'["{d / "big.toml"}"]'), d / "out"), d


def case_spec_name_newline(w, d):
    (d / "nl.toml").write_text(SPEC.format(name="two\\nlines", units=3))
    return run_args(_suite_with(w, d, models=f'["{d / "nl.toml"}"]'), d / "out"), d


def _setting(text):
    def build(w, d):
        return run_args(_suite_with(w, d, settings=text), d / "out"), d
    return build


def case_models_no_match(w, d):
    return run_args(w["suite"], d / "out", "--models", "mlp-deep"), d


def case_out_is_file(w, d):
    (d / "afile").write_text("keep me\n")
    return run_args(w["suite"], d / "afile"), d


# Cases the command line must check itself (harness/cli.py): expected failures until it does; they pass then.
NEEDS_CLI = "harness/cli.py must refuse this (Suite.select_models for --models; --out that is a file)"

# id, build, exit code, text the message must hold ({pid}: this test's process id), xfail reason or None
CASES = [
    ("lock_held", case_lock_held, 2, "is being written by process {pid}; wait for it or choose another --out", None),
    ("header_lost_column_report", case_header_lost_column, 2, "other columns (missing: reason", None),
    ("no_header", case_no_header, 2, "the header line is missing", None),
    ("env_garbage", case_env_garbage, 2, "env.json, line 1: not valid JSON", None),
    ("env_empty", case_env_empty, 2, "env.json is empty", None),
    ("results_empty", case_results_empty, 2, "results.csv is empty", None),
    ("extra_field", case_extra_field, 2, f"results.csv, line 3: {len(COLUMNS) + 1} fields, the header has "
                                         f"{len(COLUMNS)}", None),
    ("older_layout_run", case_older_layout_run, 2, "written by an earlier version of the harness", None),
    ("samples_damaged_run", case_samples_damaged_run, 2, "samples.csv, line 4: 2 fields", None),
    ("samples_orphan_in_the_middle", case_samples_orphan_in_the_middle, 2,
     "samples of a finished row after those of a row results.csv does not have", None),
    ("not_utf8_report", case_not_utf8, 2, "results.csv, line 4: not UTF-8", None),
    ("not_utf8_run", case_not_utf8_run, 2, "results.csv, line 4: not UTF-8", None),
    ("bad_type", case_bad_type, 2, "line 3: column 'median_ms' must be a number", None),
    ("duplicate_rows", case_duplicate_rows, 2, "the same row twice", None),
    ("report_out_is_file", case_report_out_is_file, 2, "is a file, not a folder", None),
    ("results_is_folder_report", case_results_is_folder, 2, "results.csv is a folder", None),
    ("results_is_folder_run", case_results_is_folder_run, 2, "results.csv is a folder", None),
    ("header_damaged_and_torn", case_header_damaged_and_torn, 2, "left untouched", None),
    ("suite_name_escapes", case_suite_name_escapes, 2, "'name' '../../../x' must be letters", None),
    ("same_spec_name", case_same_spec_name, 2, "two different specs named 'twin'", None),
    ("spec_too_big", case_spec_too_big, 2, "GiB", None),
    ("spec_name_newline", case_spec_name_newline, 2, "printable text on one line", None),
    ("warmup_inf", _setting("warmup = inf"), 2, "'warmup'", None),
    ("budget_nan", _setting("budget_s = nan"), 2, "'budget_s'", None),
    ("budget_negative", _setting("budget_s = -1"), 2, "'budget_s'", None),
    ("time_limit_negative", _setting("time_limit_s = -5"), 2, "'time_limit_s'", None),
    ("repeats_crossed", _setting("min_repeats = 9\nmax_repeats = 4"), 2, "min_repeats (9) is larger than max_repeats (4)",
     None),
    ("lr_not_float32", _setting("lr = 1e300"), 2, "'lr'", None),
    ("models_no_match", case_models_no_match, 2, "mlp-deep", NEEDS_CLI),
    ("run_out_is_file", case_out_is_file, 2, "not a folder", NEEDS_CLI),
]


@pytest.fixture(scope="module")
def table(work):
    """Build every case, run them all at once, and keep {id: (proc, before, after)}."""
    built = {}
    for cid, build, *_ in CASES:
        d = work["dir"] / "cases" / cid
        d.mkdir(parents=True)
        got = build(work, d)
        args, folder = got[0], got[1]
        built[cid] = (args, folder, got[2] if len(got) > 2 else None, snapshot(folder))

    def go(cid):
        return cid, harness(*built[cid][0], timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(pool.map(go, list(built)))
    out = {}
    for cid, (args, folder, lock, before) in built.items():
        if lock is not None:
            lock.release()
        out[cid] = (done[cid], before, snapshot(folder))
    return out


@pytest.mark.parametrize("cid,code,needle,needs", [(c[0], c[2], c[3], c[4]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_damaged_inputs_and_bad_settings_exit_2_and_change_nothing(table, cid, code, needle, needs):
    proc, before, after = table[cid]
    needle = needle.format(pid=os.getpid())
    if needs and (proc.returncode != code or needle not in proc.stderr):
        pytest.xfail(f"{needs}; today: exit {proc.returncode}, {proc.stderr.strip().splitlines()[-1:]}")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("harness: error: ") or "\nharness: error: " in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert after == before   # nothing written, changed or lost (the lock file exists before in lock_held)


# ============================================================================ repairs that are safe
def test_torn_last_row_is_left_by_report_and_dropped_by_run(work, tmp_path):
    out = shutil.copytree(work["base"], tmp_path / "out")
    original = (out / "results.csv").read_bytes()
    # a torn row that stops inside a quoted field just after a newline (a spec name holding a newline)
    (out / "results.csv").write_bytes(original + b'custom,numpy,cpu,"two\nli')
    torn = (out / "results.csv").read_bytes()
    rep = harness("report", str(out), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    assert "incomplete last row" in rep.stderr
    assert (out / "results.csv").read_bytes() == torn           # report never repairs
    res = harness(*run_args(work["suite"], out))
    assert res.returncode == 0, res.stderr
    assert (out / "results.csv").read_bytes() == original       # exactly the torn record cut, nothing re-measured


def test_lr_and_parameters_checked_on_our_models():
    import custom_impl
    import modelspec

    spec = modelspec.load("thesis-2-3-1")
    model = custom_impl.build(spec)
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    y = np.array([0, 1, 1])
    before = model.get_params()
    with pytest.raises(ValueError, match="does not fit in float32"):
        model.train_step(x, y, lr=1e300)
    bad = dict(before, **{"0.weight": before["0.weight"].astype(np.complex64) + 1j})
    with pytest.raises(ValueError, match="'0.weight' has complex dtype"):
        model.set_params(bad)
    assert all(np.array_equal(before[k], v) for k, v in model.get_params().items())   # nothing changed


@pytest.mark.parametrize("key,value,needle", [
    ("budget_s", -1.0, "must be from 0"), ("budget_s", float("nan"), "must be a number"),
    ("time_limit_s", -5.0, "must be from 0"), ("warmup", float("inf"), "must be a whole number"),
    ("min_repeats", 2.5, "whole number"), ("cold_l2", 1, "true or false"), ("lr", 1e300, "must be from 0"),
])
def test_settings_checked_for_the_command_line(key, value, needle):
    """What cli.py's --budget-s / --time-limit-s must go through (check_setting) and --peak-tflops."""
    from harness.suites import check_peak_tflops, check_setting

    with pytest.raises(SuiteError, match=needle):
        check_setting(key, value, f"--{key.replace('_', '-')}")
    for bad in (-3.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(SuiteError, match="positive number of TFLOP/s"):
            check_peak_tflops(bad)
    assert check_peak_tflops(None) is None and check_peak_tflops(66.9) == 66.9


def test_select_models_matching_nothing_is_an_error(work):
    suite = load_suite(str(work["suite"]))
    with pytest.raises(SuiteError, match="--models mlp-deep: not in suite 'tiny'"):
        suite.select_models(["mlp-deep"])
    suite.select_models(["thesis-2-3-1"])
    assert {j.workload for j in suite.jobs("cpu") if j.kind == "model"} == {"thesis-2-3-1"}


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    """The CLI may hold the folder's lock while the results writer takes it again in the same process."""
    from harness.results import ResultsWriter, Row

    with FolderLock(str(tmp_path)):
        with ResultsWriter(str(tmp_path / "results.csv")) as w:
            w.write(Row(impl="custom", variant="numpy", device="cpu", workload="w", kind="dense", batch=1,
                        phase="forward"))
    code = f"from harness.io import FolderLock; FolderLock({str(tmp_path)!r}).acquire(); print('free')"
    free = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert free.stdout.strip() == "free", free.stderr
    assert len(read_results(str(tmp_path / "results.csv")).rows) == 1


# ============================================================================ concurrency and kills
def test_two_runs_into_one_folder_leave_no_duplicates(work, tmp_path):
    out = tmp_path / "both"
    procs = [popen(*run_args(work["suite"], out)) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc in (0, 2), err
        if rc == 2:
            # NOTE: the holder writes its pid into the lock file just after locking it, so a loser that reads
            # the file in between names "another process" instead of "process <pid>"
            assert re.search(r"is being written by (process \d+|another process)", err) and \
                "choose another --out" in err, err
    assert any(rc == 0 for rc, _ in results)
    rows = read_results(str(out / "results.csv")).rows
    assert len(rows) == len(work["rows"]) and len(set(keys(rows))) == len(rows)


def _count_rows(path) -> int:
    try:
        return max(0, open(path, "rb").read().count(b"\r\n") - 1)
    except OSError:
        return -1


def _valid_or_absent(folder):
    """Every artefact in ``folder`` is complete (or absent): results.csv parses, the rest is whole."""
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        data = open(p, "rb").read()
        if name == "results.csv":
            read_results(p)
        elif name == "samples.csv":
            read_samples_file(p)
        elif name == "env.json":
            import json

            json.loads(data)
        elif name.endswith(".pdf"):
            assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF"), name
        elif name.endswith(".png"):
            assert data.startswith(b"\x89PNG") and data[-12:-4] == b"\x00\x00\x00\x00IEND", name
        elif name.endswith((".md", ".tex")):
            assert data.endswith(b"\n"), name


def test_kill_run_at_several_moments_then_resume(work, tmp_path):
    out = tmp_path / "killed"
    csv_path = out / "results.csv"
    total = len(work["rows"])
    kept: dict[tuple, dict] = {}
    rng = random.Random(15)
    mid_run = 0
    # kill: once the header is written, after 5 rows, and at a random moment
    for k in (0, 5, None):
        proc = popen(*run_args(work["suite"], out))
        start = time.monotonic()
        at = rng.uniform(0.5, 4.0) if k is None else None
        while proc.poll() is None:
            n = _count_rows(csv_path)
            if (k is not None and n >= k) or (at is not None and time.monotonic() - start >= at):
                break
            time.sleep(0.002)
        mid_run += proc.poll() is None and _count_rows(csv_path) < total
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        if csv_path.exists():
            _valid_or_absent(out)
            rows = read_results(str(csv_path)).rows
            assert len(set(keys(rows))) == len(rows)
            for r in rows:
                assert kept.setdefault(key_of(r), r) == r      # a finished row is never changed
            assert set(kept) <= set(keys(rows))               # ... nor lost
            _samples_match_rows(out, rows, killed=True)
    assert mid_run >= 1   # at least one kill landed while rows were still being measured
    proc = harness(*run_args(work["suite"], out))
    assert proc.returncode == 0, proc.stderr
    rows = read_results(str(csv_path)).rows
    assert len(rows) == total and len(set(keys(rows))) == total
    assert set(keys(rows)) == set(keys(work["rows"]))
    assert all(kept[key_of(r)] == r for r in rows if key_of(r) in kept)
    assert set(ROW_KEY) <= set(COLUMNS)
    _samples_match_rows(out, rows, killed=False)


def _samples_match_rows(folder, rows, killed):
    """Every timed row has exactly its ``repeats`` samples; samples of rows not in results.csv are only the
    row a kill interrupted (the last block, and only right after a kill)."""
    sf = read_samples_file(str(folder / "samples.csv"))
    blocks = {rid: values for rid, _, _, values in sf.blocks}
    ids = {row_id(r) for r in rows}
    for r in rows:
        if r["status"] in ("ok", "parity_fail"):
            assert len(blocks.get(row_id(r), [])) == int(r["repeats"]), r
    orphans = [i for i, b in enumerate(sf.blocks) if b[0] not in ids]
    assert orphans in ([], [len(sf.blocks) - 1]) if killed else orphans == []
    df = read_samples(str(folder))
    assert len(df) == sum(int(r["repeats"]) for r in rows if r["repeats"])


def test_resume_cuts_the_samples_of_the_killed_row(work, tmp_path):
    out = shutil.copytree(work["base"], tmp_path / "out")
    results, samples = (out / "results.csv").read_bytes(), (out / "samples.csv").read_bytes()
    lines = results.split(b"\r\n")
    # the last row was in flight: its samples are written, its results line is not (and one sample is torn)
    last = dict(zip(COLUMNS, lines[-2].decode().split(",")))
    (out / "results.csv").write_bytes(b"\r\n".join(lines[:-2]) + b"\r\n")
    rid = row_id(last).encode()
    kept = b"".join(line + b"\n" for line in samples.split(b"\n") if line and not line.startswith(rid))
    assert samples.startswith(kept) and len(kept) < len(samples)    # that row's samples are the last lines
    (out / "samples.csv").write_bytes(samples + rid + b",99,0.00")
    proc = subprocess.run([sys.executable, "-m", "harness", *run_args(work["suite"], out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dropping the samples of the row a killed run was measuring" in proc.stderr
    rows = read_results(str(out / "results.csv")).rows
    assert (out / "results.csv").read_bytes().startswith(b"\r\n".join(lines[:-2]))
    assert (out / "samples.csv").read_bytes().startswith(kept)           # finished rows' samples untouched
    assert len(rows) == len(work["rows"])
    _samples_match_rows(out, rows, killed=False)


def test_kill_report_leaves_whole_artefacts(work, tmp_path):
    out = shutil.copytree(work["base"], tmp_path / "rep")
    before = {n: snapshot(out)[n] for n in ("results.csv", "env.json")}
    for delay in (1.0, 2.5):
        proc = popen("report", str(out))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        _valid_or_absent(out)
        assert {n: snapshot(out)[n] for n in before} == before
    proc = harness("report", str(out))
    assert proc.returncode == 0, proc.stderr
    _valid_or_absent(out)
    assert os.path.isfile(out / "report.pdf")


def test_a_train_step_row_whose_parameters_blow_up_is_diverged_not_ok(work, tmp_path):
    """lr 3e38 is a valid float32 learning rate, but the timed momentum steps of thesis-2-3-1 overflow its
    weights: the row is 'diverged' with the lr in its reason, not 'ok'; the inference rows stay 'ok'."""
    suite = _suite_with(work, tmp_path, settings="lr = 3e38\nmomentum = 0.9")
    out = tmp_path / "out"
    proc = harness(*run_args(suite, out))
    assert proc.returncode == 0, proc.stderr
    rows = read_results(str(out / "results.csv")).rows
    steps = [r for r in rows if r["kind"] == "model" and r["phase"] == "train_step"]
    assert steps and all(r["status"] == "diverged" for r in steps), [(r["impl"], r["status"]) for r in steps]
    assert all("lr=3e+38" in r["reason"] for r in steps), steps[0]["reason"]
    assert all(r["status"] == "ok" for r in rows if r["phase"] == "inference")


# ============================================================================ env.json over a resumed run
def test_resumed_run_keeps_what_its_earlier_calls_recorded(work, tmp_path):
    """A run finished over two calls: the second call's env.json keeps the first call's settings that it
    never read itself (JAX's, read only once a JAX model was built), lists the first call (time, host,
    commit) under earlier_calls, and warns that the commit changed."""
    import json

    out = _copy(work, tmp_path / "out")
    env_path = out / "env.json"
    first = json.loads(env_path.read_text())
    first["precision_flags"]["jax: XLA_FLAGS"] = "--xla_gpu_exclude_nondeterministic_ops=true"
    first["timestamp_utc"] = "2026-01-02T03:04:05+00:00"
    first["git"] = {"commit": "0123456789abcdef", "dirty": False}
    env_path.write_text(json.dumps(first))
    proc = harness(*run_args(work["suite"], out))
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(env_path.read_text())
    assert rec["precision_flags"]["jax: XLA_FLAGS"] == "--xla_gpu_exclude_nondeterministic_ops=true"
    assert rec["earlier_calls"][-1]["timestamp_utc"] == "2026-01-02T03:04:05+00:00"
    assert rec["earlier_calls"][-1]["commit"] == "0123456789"
    assert rec["timestamp_utc"] != "2026-01-02T03:04:05+00:00"
    assert "measured at commit 0123456789" in proc.stderr
    assert len(read_results(str(out / "results.csv")).rows) == len(work["rows"])   # nothing re-measured


def test_fresh_run_ignores_a_stale_env_json(tmp_path):
    """An env.json without results rows (a run killed before its first row, or results.csv deleted) is no
    earlier call of this run."""
    from harness import env

    (tmp_path / "env.json").write_text('{"timestamp_utc": "x", "precision_flags": {"a": 1}}')
    assert env.earlier_record(str(tmp_path)) is None
    (tmp_path / "results.csv").write_text("impl,variant\n")
    assert env.earlier_record(str(tmp_path)) is None


def test_carry_over_lists_changed_settings_and_a_damaged_record_is_replaced(tmp_path, capsys):
    from harness import env

    earlier = {"timestamp_utc": "t0", "hostname": "h", "machine_id": "m", "git": {"commit": "abcdef1234567"},
               "precision_flags": {"torch.backends.cudnn.benchmark": True, "jax: XLA_FLAGS": "a"}}
    rec = {"git": {"commit": "abcdef1234567"}, "precision_flags": {"torch.backends.cudnn.benchmark": False}}
    warnings = env.carry_over(rec, earlier)
    assert rec["precision_flags"] == {"torch.backends.cudnn.benchmark": False, "jax: XLA_FLAGS": "a"}
    assert rec["precision_flags_changed"] == {"torch.backends.cudnn.benchmark": [True, False]}
    assert len(warnings) == 1 and "torch.backends.cudnn.benchmark: True -> False" in warnings[0]
    assert rec["earlier_calls"] == [{"timestamp_utc": "t0", "hostname": "h", "machine_id": "m",
                                     "commit": "abcdef1234"}]
    assert env.carry_over(rec, None) == []
    (tmp_path / "results.csv").write_text("impl,variant\ncustom,numpy\n")
    (tmp_path / "env.json").write_text("{not json")
    assert env.earlier_record(str(tmp_path)) is None
    assert "env.json" in capsys.readouterr().err
