"""harness train: both implementations trained end to end (same weights, same batches), train.csv written
crash-safely, diverged runs recorded, the [[train]] suite sections, the training report, bad input refused.

CPU runs are kept small: digits-mlp on digits (ours ~0.1 s, PyTorch ~1 s for 20 epochs on 2 cores),
lenet-mnist on 3000 synthetic samples (ours ~7 s). GPU tests (marker ``gpu``) train every GPU variant.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from harness import cli, train_report
from harness import train as trainmod
from harness.data import parse_dataset
from harness.io import DamagedFile, FolderLock
from harness.suites import SuiteError, parse_suite
from harness.train import (LEGACY_TRAIN_COLUMNS, ROW_KEY, TRAIN_COLUMNS, TrainError, TrainRow, TrainWriter,
                           _epoch_batches, plan_runs, read_train, run_training, segment_bounds)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Per-epoch mean training loss, ours vs PyTorch, digits-mlp (no max pooling, so no near-tie flips; see
# tests/helpers.py): both run float32 from the same weights on the same batches, differing only in
# summation order (~1e-7 relative per op), which SGD carries along. Measured on this CPU: at most 1.0e-7
# absolute, 1.4e-6 relative over 20 epochs. 1e-4 relative (plus 1e-6 absolute) leaves ~70x margin for
# other BLAS builds and thread counts; a wrong gradient or momentum moves the loss by >1% within an epoch.
CURVE_RTOL, CURVE_ATOL = 1e-4, 1e-6


def _rows(folder) -> list[dict]:
    return read_train(os.path.join(folder, "train.csv")).rows


def _curves(rows, **match) -> dict:
    out = {}
    for r in rows:
        if all(r[k] == str(v) for k, v in match.items()):
            out.setdefault((r["impl"], r["variant"], r["seed"]), []).append(r)
    return {k: sorted(v, key=lambda r: float(r["epoch"])) for k, v in out.items()}


# ================================================================================ training on the CPU
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    runs = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], seeds=[0])
    counts = run_training(runs, str(out), "cpu", quiet=True)
    assert counts == {"skipped": 0, "ok": 2}
    return out


@pytest.mark.slow
def test_digits_both_implementations_reach_95_percent_on_the_same_curve(digits_run):
    curves = _curves(_rows(digits_run), model="digits-mlp")
    ours, ref = curves[("custom", "numpy", "0")], curves[("reference", "torch-eager", "0")]
    assert [int(r["epoch"]) for r in ours] == list(range(1, 21)) == [int(r["epoch"]) for r in ref]
    for o, r in zip(ours, ref):
        a, b = float(o["train_loss"]), float(r["train_loss"])
        assert abs(a - b) <= CURVE_ATOL + CURVE_RTOL * abs(b), f"epoch {o['epoch']}: loss {a} vs {b}"
    for side in (ours, ref):
        assert float(side[-1]["test_acc"]) >= 0.95
        assert float(side[-1]["train_loss"]) < 0.2 * float(side[0]["train_loss"])    # it learned
        assert all(r["status"] == "ok" for r in side)
        cum = [float(r["cum_train_s"]) for r in side]
        assert all(b > a for a, b in zip(cum, cum[1:])) and all(float(r["samples_per_s"]) > 0 for r in side)
        assert side[0]["steps"] == str(1347 // 32) and side[0]["n_train"] == "1347" and side[0]["n_test"] == "450"


@pytest.mark.slow
def test_rerun_resumes_and_report_renders(digits_run, capsys):
    before = (digits_run / "train.csv").read_bytes()
    runs = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], seeds=[0])
    assert run_training(runs, str(digits_run), "cpu", quiet=True) == {"skipped": 2}
    assert (digits_run / "train.csv").read_bytes() == before
    assert cli.main(["report", str(digits_run)]) == 0
    for name in ("report.pdf", "train_cpu_digits_b32.png", "train_cpu_digits_b32.pdf", "train_time_to_accuracy.md",
                 "train_time_to_accuracy.tex", "train_curve_gap.md"):
        assert (digits_run / name).stat().st_size > 0, name
    tta = (digits_run / "train_time_to_accuracy.md").read_text()
    assert "| cpu | digits | digits-mlp | 32 | 0.05 | ours numpy | 1/1 |" in tta
    tex = (digits_run / "train_time_to_accuracy.tex").read_text()
    assert "\\toprule" in tex and "\\caption{" in tex and "\\label{tab:train-time-to-accuracy}" in tex


def test_same_batches_for_every_array_library():
    """NumPy (ours on the CPU) and torch (PyTorch) cut the same epoch into the same batches."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, size=37)
    order = np.random.default_rng(0).permutation(37)[:3 * 11]
    a = _epoch_batches("numpy", x, y, order, 11, 3)
    b = _epoch_batches("torch", torch.from_numpy(x), torch.from_numpy(y), order, 11, 3)
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb.numpy()) and np.array_equal(ya, yb.numpy())
        assert xa.flags.c_contiguous and xb.is_contiguous()
    assert np.array_equal(a[1][0], x[order[11:22]])


@pytest.mark.slow
def test_synthetic_mnist_is_learnable_by_lenet(tmp_path):
    runs = plan_runs(datasets=["synthetic-mnist:3000"], device="cpu", models=["lenet-mnist"], variants=["numpy"],
                     seeds=[0], batches=[32], lr=0.01, epochs=2)
    assert run_training(runs, str(tmp_path), "cpu", quiet=True) == {"skipped": 0, "ok": 1}
    rows = _rows(tmp_path)
    # measured: 91.6% after one epoch, 95.2% after two (500 test samples)
    assert float(rows[-1]["test_acc"]) >= 0.90, rows
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])


def test_a_diverging_run_is_recorded_as_diverged_with_its_epoch(tmp_path, capsys):
    rc = cli.main(["train", "--device", "cpu", "--models", "digits-mlp", "--lr", "1e37", "--seeds", "0",
                   "--epochs", "3", "--out", str(tmp_path), "--no-report", "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "digits-mlp digits b32 custom/numpy seed 0: training diverged in epoch 1" in err
    assert "lower the learning rate (lr = 1e+37)" in err and "Traceback" not in err
    rows = _rows(tmp_path)
    assert [(r["impl"], r["epoch"], r["status"]) for r in rows] == [("custom", "1", "diverged"),
                                                                  ("reference", "1", "diverged")]
    assert all(r["train_loss"] == "nan" and r["test_acc"] == "" for r in rows)   # stopped: epochs 2-3 not run


# ================================================================================ train.csv
def _fake_rows(run_count: int, epochs: int = 2) -> list[dict]:
    rows = []
    for seed in range(run_count):
        for epoch in range(1, epochs + 1):
            r = {c: "" for c in TRAIN_COLUMNS}
            r.update(model="digits-mlp", dataset="digits", impl="custom", variant="numpy", device="cpu", batch="32",
                     seed=str(seed), precision="fp32", lr="0.05", momentum="0.9", epochs=str(epochs),
                     evals_per_epoch="1", epoch=str(epoch),
                     train_loss=f"{1.0 / epoch:.6g}", test_acc="0.9", train_s="0.5", cum_train_s=str(0.5 * epoch),
                     samples_per_s="100", steps="42", n_train="1347", n_test="450", target_acc="0.95",
                     status="ok", spec_hash="abc")
            rows.append(r)
    return rows


def _write(path, rows, header=TRAIN_COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(c, "") for c in header])


def test_torn_last_line_is_dropped_on_resume_only(tmp_path):
    path = tmp_path / "train.csv"
    _write(path, _fake_rows(2))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("digits-mlp,digits,custom,num")                       # a writer killed mid-line
    torn = path.read_bytes()
    tf = read_train(str(path))
    assert len(tf.rows) == 4 and tf.torn_line == 6
    assert path.read_bytes() == torn                                    # the reader never modifies
    with TrainWriter(str(path)) as w:
        assert len(w.finished) == 2
    assert path.read_bytes() == torn[:tf.keep_bytes] and read_train(str(path)).torn_line is None


@pytest.mark.parametrize("damage, needle", [
    (lambda rows: (rows, TRAIN_COLUMNS[:-1]), "not the header of a train.csv (missing: spec_hash"),
    (lambda rows: (rows + [rows[0]], TRAIN_COLUMNS), "the same run and epoch twice"),
    (lambda rows: ([dict(rows[0], status="fine")] + rows[1:], TRAIN_COLUMNS), "column 'status' must be one of ok"),
    (lambda rows: ([dict(rows[0], epoch="two")] + rows[1:], TRAIN_COLUMNS), "column 'epoch' must be a number of"),
    (lambda rows: ([dict(rows[0], epoch="-1")] + rows[1:], TRAIN_COLUMNS), "column 'epoch' must be a number of"),
    (lambda rows: ([dict(rows[0], evals_per_epoch="0")] + rows[1:], TRAIN_COLUMNS),
     "column 'evals_per_epoch' must be a whole number, 1 or more"),
])
def test_damaged_train_csv_is_refused_and_left_untouched(tmp_path, capsys, damage, needle):
    rows, header = damage(_fake_rows(2))
    path = tmp_path / "train.csv"
    _write(path, rows, header)
    before = path.read_bytes()
    with pytest.raises(DamagedFile, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_train(str(path))
    with pytest.raises(TrainError):
        TrainWriter(str(path))
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and str(path) in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_one_writer_per_folder(tmp_path):
    with FolderLock(str(tmp_path)):
        # the lock is re-entrant within a process, so the second writer is another process
        code = ("import sys; sys.path.insert(0, sys.argv[2]); from harness.train import TrainWriter, TrainError\n"
                "try:\n    TrainWriter(sys.argv[1] + '/train.csv')\nexcept TrainError as e:\n    print(e); sys.exit(3)")
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path), ROOT], capture_output=True, text=True)
        assert p.returncode == 3 and f"is being written by process {os.getpid()}" in p.stdout


def test_row_key_identifies_a_run_and_epoch():
    assert ROW_KEY[-1] == "epoch" and set(ROW_KEY) <= set(TRAIN_COLUMNS)
    assert {"model", "spec_hash", "dataset", "impl", "variant", "device", "batch", "seed", "lr",
            "evals_per_epoch"} <= set(ROW_KEY)
    assert TRAIN_COLUMNS[TRAIN_COLUMNS.index("epochs") + 1] == "evals_per_epoch"


# ================================================================================ the report's figures of merit
def _gpu_rows(ours_s: float, eager_s: float, graph_s: float, model="mlp-mnist", seeds=3) -> list[dict]:
    """Hand-made train.csv rows of a GPU run: the target is reached in epoch 2 by every variant; the
    training time of an epoch per variant is given."""
    rows = []
    for seed in range(seeds):
        for variant, impl, per_epoch in (("cuda-graph", "custom", ours_s), ("torch-eager", "reference", eager_s),
                                         ("torch-graph", "reference", graph_s)):
            for epoch, acc in ((1, 0.95), (2, 0.985), (3, 0.99)):
                r = _fake_rows(1)[0]
                t = per_epoch * (1 + 0.01 * seed)
                r.update(model=model, dataset="synthetic-mnist:60000", impl=impl, variant=variant, device="gpu",
                         batch="64", seed=str(seed), epochs="3", epoch=str(epoch), test_acc=str(acc),
                         train_loss=str(1.0 / epoch + (1e-6 if impl == "custom" else 0.0)), train_s=str(t),
                         cum_train_s=str(t * epoch), target_acc="0.98", device_name="NVIDIA H100 80GB HBM3",
                         samples_per_s=str(1000.0 / t))
                rows.append(r)
    return rows


def test_time_to_accuracy_speedup_and_goal_from_saved_rows(tmp_path):
    _write(tmp_path / "train.csv", _gpu_rows(0.10, 0.60, 0.16) + _gpu_rows(0.40, 1.20, 0.50, model="lenet-mnist"))
    files = train_report.render([str(tmp_path)])
    tta = train_report.time_to_accuracy(train_report.load([str(tmp_path)]))
    ours = tta[(tta["model"] == "mlp-mnist") & (tta["variant"] == "cuda-graph")].iloc[0]
    # every seed reaches 98% in epoch 2: ours 2 x 0.1 s x (1, 1.01, 1.02), fastest PyTorch (torch-graph) 0.16 s
    assert ours["reached"] == 3 and ours["epochs_mean"] == 2 and ours["best_ref"] == "torch-graph"
    assert ours["tta_mean"] == pytest.approx(0.202) and ours["speedup"] == pytest.approx(1.6)
    goal = (tmp_path / "train_goal.md").read_text()
    # same epochs to the target: the time ratio is the throughput ratio
    assert "| mlp-mnist | 98% | 0.202 | 0.323 (torch-graph) | 2 / 2 | 1.60x | 1.60x | >= 1.3x | met |" in goal
    assert "| lenet-mnist | 98% | 0.808 | 1.01 (torch-graph) | 2 / 2 | 1.25x | 1.25x | >= 1.3x | missed by 4% |" in goal
    gap = (tmp_path / "train_curve_gap.md").read_text()
    assert "| gpu | synthetic-mnist:60000 | mlp-mnist | 64 | cuda-graph | torch-eager | 3 | 3 | 1.00e-06 |" in gap
    assert os.path.basename(files["pdf"]) == "report.pdf" and "train_gpu_synthetic-mnist-60000_b64.png" in files


def test_a_variant_short_of_the_target_gets_no_ratio(tmp_path):
    rows = _gpu_rows(0.10, 0.60, 0.16)
    for r in rows:
        if r["variant"] == "cuda-graph" and r["seed"] == "2":
            r["test_acc"] = "0.9"                                     # this seed never reaches 98%
    _write(tmp_path / "train.csv", rows)
    tta = train_report.time_to_accuracy(train_report.load([str(tmp_path)]))
    ours = tta[tta["variant"] == "cuda-graph"].iloc[0]
    assert ours["reached"] == 2 and np.isnan(ours["speedup"])
    train_report.tables(train_report.load([str(tmp_path)]), str(tmp_path))
    assert "not met: ours reached the target in 2 of 3 seeds" in (tmp_path / "train_goal.md").read_text()


# ================================================================================ suites
def test_train_sections_parse_and_plan():
    s = parse_suite({"name": "t", "train": [{"datasets": ["digits"], "models": ["digits-mlp"], "seeds": [0, 4],
                                             "epochs": 2, "lr": 0.1, "devices": ["cpu"]}]})
    from harness.train import plan_suite

    runs = plan_suite(s, "cpu")
    assert [(r.variant, r.seed, r.epochs, r.lr) for r in runs] == [
        ("numpy", 0, 2, 0.1), ("torch-eager", 0, 2, 0.1), ("numpy", 4, 2, 0.1), ("torch-eager", 4, 2, 0.1)]
    assert plan_suite(s, "gpu") == []


@pytest.mark.parametrize("section, needle", [
    ({"models": ["digits-mlp"]}, "missing 'datasets'"),
    ({"datasets": ["digitz"]}, "unknown dataset 'digitz' (did you mean 'digits'?)"),
    ({"datasets": ["digits"], "epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"datasets": ["digits"], "lr": 0}, "'lr' must be a number above 0"),
    ({"datasets": ["digits"], "lr": float("nan")}, "'lr' must be a number"),
    ({"datasets": ["digits"], "epochs": 2.5}, "'epochs' must be a whole number"),
    ({"datasets": ["digits"], "target_acc": 95}, "'target_acc' must be a number above 0 up to 1"),
    ({"datasets": ["digits"], "variants": ["cuda-graf"]}, "unknown variant 'cuda-graf'"),
])
def test_bad_train_sections_are_refused(section, needle):
    with pytest.raises(SuiteError) as err:
        parse_suite({"name": "t", "train": [section]}, "s.toml")
    assert "s.toml: [[train]] #1: " in str(err.value) and needle in str(err.value)


def test_thesis_and_cpu_suites_train(tmp_path):
    from harness.suites import load_suite
    from harness.train import plan_suite

    thesis = plan_suite(load_suite("thesis"), "gpu")
    for model, dataset in (("mlp-mnist", "synthetic-mnist:60000"), ("lenet-mnist", "synthetic-mnist:60000"),
                           ("cnn-cifar", "synthetic-cifar:50000"), ("digits-mlp", "digits")):
        batches = {r.batch for r in thesis if r.model == model and r.dataset.name == dataset}
        assert batches >= ({64, 1024} if dataset != "digits" else {32}), (model, batches)
    assert {r.variant for r in thesis} >= {"cuda-graph", "torch-eager", "torch-graph"}
    cpu = plan_suite(load_suite("cpu"), "cpu")
    assert len(cpu) == 6 and {r.model for r in cpu} == {"digits-mlp"}    # 3 seeds x ours and PyTorch: seconds


TINY_SUITE = """
name = "tiny-train"
[settings]
warmup = 0
budget_s = 0.01
min_repeats = 1
max_repeats = 2
[[models]]
models = ["thesis-2-3-1"]
batches = [2]
phases = ["inference"]
variants = ["numpy"]
[[train]]
datasets = ["digits"]
models = ["digits-mlp"]
variants = ["numpy"]
seeds = [0, 1]
epochs = 3
"""


@pytest.mark.slow
def test_harness_run_trains_a_suites_train_sections_and_reports_them(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    assert cli.main(["run", "--suite", str(suite), "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert len(rows) == 2 * 3 and {r["seed"] for r in rows} == {"0", "1"}
    assert (out / "results.csv").exists() and (out / "train_cpu_digits_b32.png").exists()
    assert "ours numpy | 2/2" in (out / "train_time_to_accuracy.md").read_text() or \
        "ours numpy | 0/2" in (out / "train_time_to_accuracy.md").read_text()
    with_training = _pdf_pages(out / "report.pdf")
    os.rename(out / "train.csv", tmp_path / "kept.csv")
    assert cli.main(["report", str(out), "--out", str(tmp_path / "without")]) == 0
    # the training section adds its table pages and one page of curves
    assert with_training >= _pdf_pages(tmp_path / "without" / "report.pdf") + 2


def _pdf_pages(path) -> int:
    import re

    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


# ================================================================================ the command line
@pytest.mark.parametrize("argv, needle", [
    (["--data", "mnits"], "unknown dataset 'mnits' (did you mean 'mnist'?)"),
    (["--data", "mnist:/no/such/folder"], "dataset 'mnist:/no/such/folder': /no/such/folder: no such folder"),
    (["--data", "cifar10"], "write cifar10:DIR"),
    (["--epochs", "0"], "--epochs: must lie in [1, 100000], got 0"),
    (["--epochs", "2.5"], "--epochs: '2.5' is not a whole number"),
    (["--lr", "nan"], "--lr: must be a finite number, got nan"),
    (["--lr", "-1"], "--lr: must lie in (0, 3.4e+38], got -1.0"),
    (["--lr", "0"], "--lr: must lie in (0"),
    (["--momentum", "1.5"], "--momentum: must lie in [0, 1]"),
    (["--target-acc", "95"], "--target-acc: must lie in (0, 1]"),
    (["--seeds", "a,b"], "--seeds: 'a' is not a whole number"),
    (["--seeds", ","], "--seeds: empty list"),
    (["--batch", "0"], "--batch: must lie in [1"),
    (["--batch", "100", "--data", "synthetic-mnist:50"], "batch 100 is larger than the 50 training samples"),
    (["--models", "mlp-mnist"], "model 'mlp-mnist' takes inputs of shape (784,), digits has samples of shape (1, 8, 8)"),
    (["--models", "vgg-99"], "unknown model 'vgg-99'"),
    (["--variants", "cuda-graph"], "variant 'cuda-graph' does not exist on cpu; choose from numpy"),
    (["--suite", "thesis", "--data", "digits"], "give --suite (its [[train]] sections) or --data, not both"),
    (["--suite", "quick"], "suite 'quick' has no [[train]] section for cpu"),
    (["--suite", "cpu", "--epochs", "3"], "--suite takes its settings from its [[train]] sections; drop --epochs"),
])
def test_bad_input_is_a_clear_error_with_exit_code_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert cli.main(["train", "--device", "cpu", "--out", str(out), "--quiet", "--no-report"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and "Traceback" not in err
    assert needle in err, err
    assert not (out / "train.csv").exists()


def _mnist_folder(folder, n_train, n_test=5):
    """The four IDX files of an MNIST folder (magic 00 00 08 ndim, big-endian uint32 sizes, then bytes)."""
    import struct

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind, a in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", rng.integers(0, 10, n))):
            head = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
            (folder / f"{split}-{kind}-ubyte").write_bytes(head + a.astype(np.uint8).tobytes())


def test_batch_larger_than_a_folder_dataset_is_refused_after_loading(tmp_path, capsys):
    _mnist_folder(tmp_path / "m", n_train=9)
    rc = cli.main(["train", "--device", "cpu", "--data", f"mnist:{tmp_path / 'm'}", "--models", "mlp-mnist",
                   "--out", str(tmp_path / "out"), "--quiet", "--no-report"])
    assert rc == 2 and "batch 64 is larger than the 9 training samples of mnist" in capsys.readouterr().err


def test_a_damaged_dataset_file_is_named_at_the_command_line(tmp_path, capsys):
    _mnist_folder(tmp_path / "m", n_train=9)
    bad = tmp_path / "m" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-2])
    rc = cli.main(["train", "--device", "cpu", "--data", f"mnist:{tmp_path / 'm'}", "--models", "mlp-mnist",
                   "--batch", "4", "--out", str(tmp_path / "out"), "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "\nharness: error: dataset mnist: " in err and "Traceback" not in err
    assert f"{bad}: header says dims (5,) = 5 bytes of data, file has 3" in err


def test_train_help_describes_every_option():
    p = subprocess.run([sys.executable, "-m", "harness", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0
    for opt in ("--data", "--models", "--variants", "--seeds", "--batch", "--epochs", "--lr", "--momentum",
                "--target-acc", "--evals-per-epoch", "--suite", "--device", "--out", "--no-report", "--quiet",
                "synthetic-cifar"):
        assert opt in p.stdout, opt


# ================================================================================ evaluations within an epoch
@pytest.mark.parametrize("kw, needle", [
    (dict(evals_per_epoch=0), "evals_per_epoch: must lie in [1, 1000], got 0; e.g. evals_per_epoch 4"),
    (dict(evals_per_epoch=1001), "evals_per_epoch: must lie in [1, 1000], got 1001"),
    (dict(evals_per_epoch=2.5), "evals_per_epoch: must be a whole number, got 2.5"),
    (dict(datasets=["synthetic-mnist:200"], models=["mlp-mnist"], batches=[64], evals_per_epoch=4),
     "evals_per_epoch 4: an epoch of synthetic-mnist:200 at batch 64 has only 3 steps (200 training samples // 64), "
     "and each evaluation needs at least one; use --evals-per-epoch (evals_per_epoch in a suite) of at most 3, or a "
     "smaller batch"),
])
def test_evals_per_epoch_is_checked_when_planning(kw, needle):
    args = dict(dict(datasets=["digits"], device="cpu", models=["digits-mlp"], seeds=[0]), **kw)
    with pytest.raises(TrainError) as err:
        plan_runs(**args)
    assert needle in str(err.value)


@pytest.mark.parametrize("argv, needle", [
    (["--evals-per-epoch", "0"], "--evals-per-epoch: must lie in [1, 1000], got 0; e.g. --evals-per-epoch 4"),
    (["--evals-per-epoch", "four"], "--evals-per-epoch: 'four' is not a whole number"),
    (["--evals-per-epoch", "4", "--data", "synthetic-mnist:200", "--models", "mlp-mnist"],
     "evals_per_epoch 4: an epoch of synthetic-mnist:200 at batch 64 has only 3 steps"),
    (["--suite", "cpu", "--evals-per-epoch", "4"], "drop --evals-per-epoch"),
])
def test_bad_evals_per_epoch_is_a_clear_error(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert cli.main(["train", "--device", "cpu", "--out", str(out), "--quiet", "--no-report"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and "Traceback" not in err and needle in err, err
    assert not (out / "train.csv").exists()


def test_evals_per_epoch_beyond_the_steps_of_a_loaded_set_is_refused_before_training(tmp_path, capsys):
    # digits' size is known once it is loaded: 1347 // 32 = 42 steps per epoch
    rc = cli.main(["train", "--device", "cpu", "--models", "digits-mlp", "--seeds", "0", "--evals-per-epoch", "43",
                   "--out", str(tmp_path), "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert ("evals_per_epoch 43: an epoch of digits at batch 32 has only 42 steps (1347 training samples // 32)"
            in err), err
    assert read_train(str(tmp_path / "train.csv")).rows == []


def test_evals_per_epoch_in_train_sections():
    s = parse_suite({"name": "t", "train": [{"datasets": ["digits"], "models": ["digits-mlp"], "seeds": [0],
                                             "evals_per_epoch": 4}]})
    runs = trainmod.plan_suite(s, "cpu")
    assert [r.evals_per_epoch for r in runs] == [4, 4]
    with pytest.raises(SuiteError, match="'evals_per_epoch' must be a whole number from 1 to 1000, got 0"):
        parse_suite({"name": "t", "train": [{"datasets": ["digits"], "evals_per_epoch": 0}]}, "s.toml")
    s = parse_suite({"name": "t", "train": [{"datasets": ["synthetic-mnist:200"], "models": ["mlp-mnist"],
                                             "evals_per_epoch": 9}]}, "s.toml")
    with pytest.raises(TrainError, match=r"s.toml: \[\[train\]\] #1: evals_per_epoch 9: an epoch of "
                                         "synthetic-mnist:200 at batch 64 has only 3 steps"):
        trainmod.plan_suite(s, "cpu")


def test_segments_are_nearly_equal_and_cover_the_epoch():
    assert segment_bounds(42, 1) == [0, 42]
    assert segment_bounds(42, 3) == [0, 14, 28, 42]
    assert segment_bounds(42, 4) == [0, 10, 21, 32, 42]       # 10.5 and 31.5 rounded half to even
    for steps in (1, 2, 7, 33, 42, 937):
        for n in {1, 2, 3, 7, steps}:
            if n > steps:
                continue
            b = segment_bounds(steps, n)
            sizes = np.diff(b)
            assert b[0] == 0 and b[-1] == steps and len(sizes) == n
            assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1, (steps, n, b)


def test_three_evaluations_per_epoch_give_three_rows_per_epoch(tmp_path):
    runs = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], variants=["numpy"], seeds=[0],
                     epochs=2, evals_per_epoch=3)
    assert run_training(runs, str(tmp_path), "cpu", quiet=True) == {"skipped": 0, "ok": 1}
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["0.333333", "0.666667", "1", "1.333333", "1.666667", "2"]
    assert {r["evals_per_epoch"] for r in rows} == {"3"} and {r["steps"] for r in rows} == {"42"}
    assert all(r["status"] == "ok" and 0 <= float(r["test_acc"]) <= 1 for r in rows)
    # the epoch's input pipeline on its first row; every row's samples/s over its own 14 steps of 32
    assert [float(r["pipeline_s"]) > 0 for r in rows] == [True, False, False, True, False, False]
    for r in rows:
        assert float(r["samples_per_s"]) == pytest.approx(14 * 32 / float(r["train_s"]), rel=1e-5)   # 6 digits
    cum = [float(r["cum_train_s"]) for r in rows]
    assert all(b > a for a, b in zip(cum, cum[1:]))
    # 6 significant digits per cell in the file: the sum of six rounded train_s, relative 6 x 5e-6
    assert cum[-1] == pytest.approx(sum(float(r["train_s"]) for r in rows), rel=3e-5)
    # one evaluation per epoch is another run (evals_per_epoch is part of its key); resuming skips both
    once = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], variants=["numpy"], seeds=[0],
                     epochs=2)
    assert run_training(once, str(tmp_path), "cpu", quiet=True) == {"skipped": 0, "ok": 1}
    assert [r["epoch"] for r in _rows(tmp_path)][6:] == ["1", "2"]
    assert run_training(runs + once, str(tmp_path), "cpu", quiet=True) == {"skipped": 2}


@pytest.fixture(scope="module")
def digits_cpu():
    return trainmod._Data(parse_dataset("digits"), "cpu")


def _trained(monkeypatch, data, evals: int):
    """digits-mlp (NumPy, seed 0) trained for 2 epochs with ``evals`` evaluations per epoch: (its rows, the
    per-step losses read back after each segment, the final weights)."""
    built, read = [], []
    build, to_host = trainmod._build, trainmod._losses_to_host
    monkeypatch.setattr(trainmod, "_build", lambda run: built.append(build(run)) or built[-1])
    monkeypatch.setattr(trainmod, "_losses_to_host",
                        lambda lib, losses: read.append(to_host(lib, losses)) or read[-1])
    run, = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], variants=["numpy"], seeds=[0],
                     epochs=2, evals_per_epoch=evals)
    rows = trainmod.train_run(run, data)
    return rows, read, built[0].get_params()


def test_evaluating_within_epochs_changes_no_step(monkeypatch, digits_cpu):
    rows1, losses1, weights1 = _trained(monkeypatch, digits_cpu, 1)
    rows4, losses4, weights4 = _trained(monkeypatch, digits_cpu, 4)
    assert [r.epoch for r in rows1] == [1, 2]
    assert [r.epoch for r in rows4] == [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    assert all(r.status == "ok" for r in rows1 + rows4)
    sizes = np.diff(segment_bounds(42, 4))                   # 10, 11, 11, 10 steps
    for e in range(2):
        # the same steps on the same batches: every step's loss bit for bit
        assert np.array_equal(np.concatenate(losses4[4 * e:4 * e + 4]), losses1[e])
        seg = rows4[4 * e:4 * e + 4]
        # the segments' means weighted by their steps are the epoch's mean: float64 sums of the same 42
        # float32 losses in another grouping, ~42 x 1.1e-16 apart; 1e-12 relative leaves a wide margin
        weighted = sum(r.train_loss * n for r, n in zip(seg, sizes)) / sizes.sum()
        assert abs(weighted - rows1[e].train_loss) <= 1e-12 * abs(rows1[e].train_loss)
        assert seg[-1].test_acc == rows1[e].test_acc                 # the same weights at the epoch's end
        assert seg[0].pipeline_s > 0 and all(r.pipeline_s == 0 for r in seg[1:])
        for r, n in zip(seg, sizes):
            assert r.samples_per_s == pytest.approx(n * 32 / r.train_s, rel=1e-12)   # float64 division only
    assert np.all(np.diff([r.cum_train_s for r in rows4]) > 0)
    assert weights1.keys() == weights4.keys()
    for name in weights1:
        assert np.array_equal(weights1[name], weights4[name]), name


def test_a_train_csv_without_evals_per_epoch_is_read_and_upgraded_in_place(tmp_path, capsys):
    path = tmp_path / "train.csv"
    rows = _fake_rows(2)
    _write(path, rows, LEGACY_TRAIN_COLUMNS)
    assert path.read_text().splitlines()[0] == ",".join(c for c in TRAIN_COLUMNS if c != "evals_per_epoch")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("digits-mlp,digits,custom,num")                       # and a writer killed mid-line
    before = path.read_bytes()
    tf = read_train(str(path))
    assert tf.legacy and tf.torn_line == 6 and tf.rows == rows          # _fake_rows: evals_per_epoch "1"
    assert path.read_bytes() == before                                  # the reader never modifies
    with TrainWriter(str(path)) as w:
        assert len(w.finished) == 2
        run, = plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], variants=["numpy"], seeds=[0],
                         epochs=1, evals_per_epoch=2)
        w.write_run([TrainRow(run, 0.5, train_loss=1.5, test_acc=0.5),
                     TrainRow(run, 1, train_loss=1.0, test_acc=0.8)])
    err = capsys.readouterr().err
    assert "dropping the incomplete last line (line 6)" in err
    assert f"{path}: written before train.csv had an evals_per_epoch column; rewritten with it (4 rows kept" in err
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(TRAIN_COLUMNS) and len(lines) == 1 + 4 + 2
    after = read_train(str(path))
    assert not after.legacy and after.torn_line is None
    assert after.rows[:4] == rows and [r["epoch"] for r in after.rows[4:]] == ["0.5", "1"]
    assert sorted(os.listdir(tmp_path)) == [".lock", "train.csv"]      # no temporary file left behind


def _quarter_rows(variant: str, impl: str, first_hit: int, evals: int = 4, epoch_s: float = 0.4) -> list[dict]:
    """Hand-made rows of a GPU run of 2 epochs evaluating ``evals`` times per epoch; the test accuracy
    reaches 98% at evaluation ``first_hit`` (1-based), each evaluation interval trains epoch_s / evals s."""
    rows = []
    for seed in range(2):
        for j in range(1, 2 * evals + 1):
            r = _fake_rows(1)[0]
            r.update(model="mlp-mnist", dataset="synthetic-mnist:60000", impl=impl, variant=variant, device="gpu",
                     batch="64", seed=str(seed), epochs="2", evals_per_epoch=str(evals),
                     epoch=str(j // evals) if j % evals == 0 else f"{j / evals:g}",
                     test_acc="0.985" if j >= first_hit else "0.97", train_s=f"{epoch_s / evals:g}",
                     cum_train_s=f"{epoch_s / evals * j:g}", target_acc="0.98", device_name="NVIDIA H100 80GB HBM3",
                     train_loss=f"{1.0 / j + (1e-5 if impl == 'custom' and j == 3 else 0.0):.9g}")
            rows.append(r)
    return rows


def test_time_to_accuracy_from_fractional_epochs(tmp_path):
    _write(tmp_path / "train.csv", _quarter_rows("cuda-graph", "custom", 5)
           + _quarter_rows("torch-graph", "reference", 7) + _quarter_rows("cuda-graph", "custom", 2, evals=1))
    df = train_report.load([str(tmp_path)])
    assert df["epoch"].dtype == float and sorted(df["evals_per_epoch"].unique()) == [1, 4]
    tta = train_report.time_to_accuracy(df)
    q = tta[tta["evals_per_epoch"] == 4].set_index("variant")
    # 98% first at evaluation 5 of 4 per epoch (epoch 1.25), 5 x 0.1 s; PyTorch's at 7 (1.75), 0.7 s
    assert q.loc["cuda-graph", "epochs_mean"] == 1.25 and q.loc["cuda-graph", "tta_mean"] == pytest.approx(0.5)
    assert q.loc["torch-graph", "epochs_mean"] == 1.75 and q.loc["cuda-graph", "speedup"] == pytest.approx(1.4)
    # the run evaluating once per epoch is its own group: no PyTorch run to compare with
    once = tta[tta["evals_per_epoch"] == 1].iloc[0]
    assert once["epochs_mean"] == 2 and once["tta_mean"] == pytest.approx(0.8) and np.isnan(once["speedup"])
    per_run = train_report.runs(df)
    assert set(per_run[per_run["evals_per_epoch"] == 4]["epochs_done"]) == {2.0}
    files = train_report.render([str(tmp_path)])
    md = (tmp_path / "train_time_to_accuracy.md").read_text()
    assert "| mlp-mnist | 64 | 4 | 0.05 | ours cuda-graph | 2/2 | 0.500 | 0 | 1.25 |" in md
    assert "Test accuracy evaluated once or 4 times per epoch (column evals/epoch)" in md
    gap = (tmp_path / "train_curve_gap.md").read_text()
    assert "| 4 | cuda-graph | torch-graph | 2 | 8 | 1.00e-05 |" in gap and gap.rstrip().endswith("| 0.75 |")
    goal = (tmp_path / "train_goal.md").read_text()
    # the same step speed (throughput 1.00x): the whole ratio is ours reaching 98% half an epoch earlier
    assert "| mlp-mnist | 4 | 98% | 0.500 | 0.700 (torch-graph) | 1.25 / 1.75 | 1.40x | 1.00x | >= 1.3x | met |" in goal
    assert "train_gpu_synthetic-mnist-60000_b64_e4.png" in files and "train_gpu_synthetic-mnist-60000_b64.png" in files


# ================================================================================ on the GPU
@pytest.mark.gpu
def test_gpu_every_variant_same_curve_and_95_percent_on_digits(tmp_path):
    runs = plan_runs(datasets=["digits"], device="gpu", models=["digits-mlp"], seeds=[0],
                     variants=["cuda-graph", "cuda", "torch-eager", "torch-graph"])
    assert run_training(runs, str(tmp_path), "gpu", quiet=True) == {"skipped": 0, "ok": 4}
    curves = _curves(_rows(tmp_path))
    ref = curves[("reference", "torch-eager", "0")]
    # graphs on and off run the same kernels in the same order: bit-identical (docs/model-contract.md)
    assert [r["train_loss"] for r in curves[("custom", "cuda-graph", "0")]] == \
        [r["train_loss"] for r in curves[("custom", "cuda", "0")]]
    for key, rows in curves.items():
        assert float(rows[-1]["test_acc"]) >= 0.95, key
        for o, r in zip(rows, ref):
            a, b = float(o["train_loss"]), float(r["train_loss"])
            assert abs(a - b) <= CURVE_ATOL + CURVE_RTOL * abs(b), (key, o["epoch"], a, b)


@pytest.mark.gpu
def test_gpu_synthetic_set_is_drawn_on_the_device_deterministically():
    import cupy
    import torch

    from harness.data import synthetic_set

    x, y = synthetic_set("synthetic-cifar", 5000, seed=0, xp=cupy)
    assert isinstance(x, cupy.ndarray) and x.shape == (5000, 3, 32, 32) and x.dtype == np.float32
    x2, y2 = synthetic_set("synthetic-cifar", 5000, seed=0, xp=cupy)
    assert bool((x == x2).all()) and bool((y == y2).all())
    share = cupy.bincount(y, minlength=10).get() / 5000
    assert share.min() > 0.07 and share.max() < 0.13, share       # as on the CPU (test_data.py)
    t = torch.from_dlpack(x)                                      # what the reference trains on: no copy
    assert t.device.type == "cuda" and t.data_ptr() == x.data.ptr
