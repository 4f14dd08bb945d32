"""The command line: ``python -m harness {run,report,compare,parity,env,targets,train}``.

Bad input (unknown suite, model or device, a malformed suite file, a results.csv that cannot be
resumed) prints ``harness: error: <what is wrong and how to fix it>`` on stderr and exits with code 2;
it never prints a traceback and never touches an existing results.csv.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

EXIT_USAGE = 2


class CliError(Exception):
    """A user error; the message names the problem and the fix."""


def _device(requested: str) -> str:
    """The device a command runs on: ``requested``, or for "auto" the GPU when CuPy can use one.

    "auto" on a machine with an NVIDIA GPU that CuPy cannot use (CuPy not installed, or built for
    another CUDA) is an error naming the install command, not a silent CPU run.
    """
    from . import env

    ok, why = env.gpu_available()
    if requested == "auto" and not ok:
        found = nvidia_gpu()
        if found is None:
            return "cpu"
        name, cuda = found
        raise CliError(f"this machine has an NVIDIA GPU ({name}{f', driver for CUDA {cuda}' if cuda else ''}) "
                       f"but CuPy cannot use it: {why}. {install_hint(cuda)}; or pass --device cpu to run on "
                       "the CPU instead")
    if requested == "gpu" and not ok:
        raise CliError(f"--device gpu: no usable GPU here ({why}); run on a machine with CuPy and an NVIDIA GPU, "
                       "or use --device cpu")
    if requested in ("auto", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {requested}: CuPy sees a GPU but torch {torch.__version__} sees no CUDA "
                           "device (a CPU build?); the reference needs a CUDA build of torch "
                           "(https://pytorch.org/get-started/locally/), or pass --device cpu")
        return "gpu"
    return requested


def nvidia_gpu() -> tuple[str, str | None] | None:
    """``(GPU name, the driver's CUDA version or None)`` when this machine has an NVIDIA GPU, else None.

    Read from ``nvidia-smi``; without it, from ``/proc/driver/nvidia/gpus`` (no CUDA version then).
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=30)
            if names.returncode == 0 and names.stdout.strip():
                header = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
                m = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", header)
                return names.stdout.strip().splitlines()[0].strip(), m.group(1) if m else None
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        if os.listdir("/proc/driver/nvidia/gpus"):
            return "NVIDIA GPU", None
    except OSError:
        pass
    return None


def install_hint(cuda: str | None) -> str:
    """The command that installs CuPy for a driver supporting CUDA ``cuda`` ("13.0"; None: unknown)."""
    major = int(cuda.split(".")[0]) if cuda else None
    if major is None:
        return ('install CuPy for the CUDA version that `nvidia-smi` shows: from the repository root, '
                'python3 -m pip install -e ".[gpu-cuda12]" (CUDA 12.x) or -e ".[gpu-cuda13]" (CUDA 13.x)')
    if major < 12:
        return (f"the NVIDIA driver supports CUDA {cuda} only and CuPy 13 needs CUDA 12 or newer: update the "
                'driver, then from the repository root run python3 -m pip install -e ".[gpu-cuda12]"')
    extra = "gpu-cuda13" if major >= 13 else "gpu-cuda12"
    return f'install CuPy for it: from the repository root, python3 -m pip install -e ".[{extra}]"'


def precompile_kernels(device: str, quiet: bool = False) -> float:
    """Compile every kernel module a GPU run can choose, in parallel, before anything is timed; returns
    the seconds it took (0 on the CPU). Modules already in CuPy's kernel cache load in a moment."""
    if device != "gpu":
        return 0.0
    from custom_impl.gpu import runtime

    start = time.monotonic()

    def progress(line: str) -> None:
        # the runtime's first line says what it compiles ("compiling 23 kernel modules in 16 processes"),
        # then one line per module done ("compiled 7/23 gemm 256x128x16_16x8 in 14.2 s")
        if line.startswith("compiled "):
            if not quiet:
                print(f"  {line}", file=sys.stderr, flush=True)
        else:
            print(f"harness: {line}{' ...' if line.startswith('compiling ') else ''}", file=sys.stderr, flush=True)

    try:
        runtime.precompile(progress=progress)
    except RuntimeError as err:
        raise CliError(f"compiling the GPU kernels failed: {err}") from None
    took = time.monotonic() - start
    print(f"harness: kernel modules ready after {took:.1f} s (not counted against any time limit)",
          file=sys.stderr, flush=True)
    return took


def _load_suite(name: str, models: str | None):
    from .suites import SuiteError, load_suite

    try:
        suite = load_suite(name)
    except SuiteError as err:
        raise CliError(str(err)) from None
    if models:
        import modelspec

        wanted = [m.strip() for m in models.split(",") if m.strip()]
        for m in wanted:
            try:
                modelspec.load(m)
            except (modelspec.SpecError, OSError) as err:
                raise CliError(f"--models: {err}") from None
        try:
            suite.select_models(wanted)
        except SuiteError as err:
            raise CliError(str(err)) from None
    return suite


def _set_precisions(suite, text: str, device: str) -> None:
    """``--precision fp32,bf16``: run the suite's model, dense and conv2d sections at these precisions."""
    from .suites import DEVICE_PRECISIONS, PRECISIONS, SuiteError

    wanted = [p.strip() for p in text.split(",") if p.strip()]
    if not wanted:
        raise CliError(f"--precision: give one or more of {', '.join(PRECISIONS)}, comma-separated")
    try:
        suite.set_precisions(wanted)
    except SuiteError as err:
        raise CliError(str(err)) from None
    other = [p for p in wanted if p not in DEVICE_PRECISIONS[device]]
    if other:
        raise CliError(f"--precision {','.join(other)}: needs the GPU's tensor cores; on the {device} only "
                       f"{', '.join(DEVICE_PRECISIONS[device])} runs: drop it, or run with --device gpu")


def _checked_numbers(args) -> None:
    """The CLI's numbers (--budget-s, --time-limit-s, --peak-tflops) checked as the suite settings are."""
    from .suites import SuiteError, check_peak_tflops, check_setting

    try:
        for key, flag in (("budget_s", "--budget-s"), ("time_limit_s", "--time-limit-s")):
            if getattr(args, key, None) is not None:
                check_setting(key, getattr(args, key), flag)
        check_peak_tflops(getattr(args, "peak_tflops", None))
    except SuiteError as err:
        raise CliError(str(err)) from None


def default_out(suite_name: str, device: str) -> str:
    """``reports/<suite>-<device name>``, or with ``-2``, ``-3``, ... when that folder holds another machine's run.

    A folder is this machine's when it has no env.json yet (a run interrupted before its end) or its
    env.json names this host; rerunning then resumes it. Results committed from another machine (the
    repository's own reports/, say) are never resumed into, which would skip every row.
    """
    from . import env

    base = os.path.join("reports", f"{suite_name}-{env.slug(env.device_name(device))}")
    path, i = base, 1
    while not _is_ours(path):
        i += 1
        path = f"{base}-{i}"
    return path


def _is_ours(folder: str) -> bool:
    import json
    import platform

    try:
        with open(os.path.join(folder, "env.json"), encoding="utf-8") as fh:
            return json.load(fh).get("hostname") == platform.node()
    except FileNotFoundError:
        return True
    except (OSError, ValueError, AttributeError):
        return False


def cmd_run(args) -> int:
    from . import env
    from .results import ResultsError
    from .runner import run_suite

    device = _device(args.device)
    suite_name = args.suite or ("gpu" if device == "gpu" else "cpu")
    suite = _load_suite(suite_name, args.models)
    if args.precision is not None:
        _set_precisions(suite, args.precision, device)
    out = args.out or default_out(suite.name, device)
    jobs = suite.jobs(device)
    train_runs = _train_runs_of_suite(suite, device, args.models)
    if not jobs and not train_runs:
        raise CliError(f"suite {suite.name!r} has nothing to run on {device} (every section is limited to other "
                       "devices); pick another --suite or --device")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise CliError(f"--out {out}: is a file, not a folder; choose another --out")
    _checked_numbers(args)
    os.makedirs(out, exist_ok=True)
    override = {}
    if args.cold_l2:
        override["cold_l2"] = True
    if args.budget_s is not None:
        override["budget_s"] = args.budget_s
    if args.time_limit_s is not None:
        override["time_limit_s"] = args.time_limit_s
    earlier = env.earlier_record(out)        # before this call adds rows: a resumed run's earlier calls
    rec = env.collect(device)
    rec["suite"] = {"name": suite.name, "path": suite.path, "settings": dict(suite.settings, **override)}
    rec["run_device"] = device
    rec["device_name"] = env.device_name(device)
    rec["peak_fp32_tflops"] = args.peak_tflops or (env.peak_fp32_tflops(rec["device_name"]) if device == "gpu" else None)
    try:
        import reference_impl

        rec["precision_flags"] = reference_impl.precision_flags()
        # the flags (and autocast) each precision of the run sets on the PyTorch side, read back
        rec["precision_modes"] = {p: reference_impl.precision_flags(p)
                                  for p in sorted({j.precision for j in jobs})}
    except Exception:
        pass
    print(f"harness: running suite {suite.name!r} ({len(jobs)} rows) on {device} ({rec['device_name']}) -> {out}",
          file=sys.stderr, flush=True)
    precompile_kernels(device, quiet=args.quiet)
    try:
        counts = run_suite(suite, device, os.path.join(out, "results.csv"), peak_tflops=rec["peak_fp32_tflops"],
                           jobs=jobs, settings_override=override, quiet=args.quiet)
    except ResultsError as err:
        raise CliError(str(err)) from None
    try:
        from .workloads import set_strict_fp32
        import reference_impl

        set_strict_fp32()
        rec["precision_flags"] = reference_impl.precision_flags()
    except Exception:
        pass
    env.write_run(out, rec, earlier)
    print("harness: rows " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), file=sys.stderr)
    if train_runs:
        _run_training(train_runs, out, device, args.quiet)
    if not args.no_report:
        from .report import render

        files = render([out], out_dir=out, peak_tflops=args.peak_tflops)
        print(f"harness: report written: {files.get('pdf')}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .report import ReportError, render

    _checked_numbers(args)
    try:
        files = render(args.dirs, out_dir=args.out, peak_tflops=args.peak_tflops)
    except ReportError as err:
        raise CliError(str(err)) from None
    for k, v in files.items():
        if isinstance(v, str):
            print(f"{k}: {v}")
    return 0


def cmd_compare(args) -> int:
    from .compare import CompareError, run_compare

    try:
        return run_compare(args.a, args.b, threshold=args.threshold, fail_on_regression=args.fail_on_regression,
                           out=args.out)
    except CompareError as err:
        raise CliError(str(err)) from None


def cmd_parity(args) -> int:
    from .parity_check import parity_table

    device = _device(args.device)
    precompile_kernels(device)
    ok, text = parity_table(device, models=args.models)
    print(text)
    return 0 if ok else 1


def cmd_env(args) -> int:
    from . import env

    device = None if args.device == "auto" else _device(args.device)
    print(json.dumps(env.collect(device), indent=2, sort_keys=True, default=str))
    return 0


def cmd_targets(args) -> int:
    from .results import ResultsError
    from .targets import run_targets

    if args.runs is not None:
        return _targets_runs(args)
    _checked_numbers(args)
    device = _device(args.device or "auto")
    out = args.out or default_out("targets", device)
    try:
        ok, text = run_targets(out, device, peak_tflops=args.peak_tflops, quiet=args.quiet,
                               before_gpu=lambda: precompile_kernels(device, quiet=args.quiet),
                               time_limit_s=args.time_limit_s)
    except ResultsError as err:
        raise CliError(str(err)) from None
    print(text)
    return 0


def _targets_runs(args) -> int:
    """``harness targets --runs DIR DIR ...``: combine saved runs (harness/targets_runs.py); measures nothing."""
    from .targets_runs import TargetsRunsError, combine

    given = [flag for flag, v in (("--device", args.device), ("--peak-tflops", args.peak_tflops)) if v is not None]
    if given:
        raise CliError(f"--runs combines saved runs and measures nothing: drop {' and '.join(given)}")
    try:
        md, files = combine(args.runs, args.out)
    except TargetsRunsError as err:
        raise CliError(str(err)) from None
    print(md, end="")
    print(f"harness: written {', '.join(files.values())}", file=sys.stderr)
    return 0


def _train_runs_of_suite(suite, device: str, models: str | None):
    """The runs of ``suite``'s [[train]] sections on ``device`` (``harness/train.py``)."""
    from .train import TrainError, plan_suite

    wanted = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        return plan_suite(suite, device, wanted)
    except TrainError as err:
        raise CliError(str(err)) from None


def _run_training(runs, out: str, device: str, quiet: bool) -> dict:
    from .train import TrainError, run_training

    print(f"harness: training {len(runs)} runs on {device} -> {os.path.join(out, 'train.csv')}", file=sys.stderr,
          flush=True)
    try:
        counts = run_training(runs, out, device, quiet=quiet)
    except TrainError as err:
        raise CliError(str(err)) from None
    print("harness: training runs " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return counts


def _csv_list(flag: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CliError(f"{flag}: empty list; give comma-separated values")
    return items


def cmd_train(args) -> int:
    from . import env
    from .train import MAX_EVALS_PER_EPOCH, TrainError, check_number, plan_runs, precision_default

    device = _device(args.device)
    try:
        numbers = {
            "epochs": None if args.epochs is None else check_number("--epochs", args.epochs, "int", 1, 100_000, "10"),
            "evals_per_epoch": None if args.evals_per_epoch is None else check_number(
                "--evals-per-epoch", args.evals_per_epoch, "int", 1, MAX_EVALS_PER_EPOCH, "4"),
            "lr": None if args.lr is None else check_number("--lr", args.lr, "float", 0, 3.4e38, "0.01", lo_open=True),
            "momentum": None if args.momentum is None else check_number("--momentum", args.momentum, "float", 0, 1,
                                                                        "0.9"),
            "target_acc": None if args.target_acc is None else check_number("--target-acc", args.target_acc, "float",
                                                                            0, 1, "0.95", lo_open=True),
        }
        batches = [check_number("--batch", b, "int", 1, 2**31 - 1, "64")
                   for b in _csv_list("--batch", args.batch) or []] or None
        seeds = [check_number("--seeds", v, "int", 0, 2**32 - 1, "0,1,2")
                 for v in _csv_list("--seeds", args.seeds) or []] or None
        variants = _csv_list("--variants", args.variants)
        models = _csv_list("--models", args.models)
        precision = getattr(args, "precision", None)
        if precision is not None and precision == precision_default():
            precision = None        # the default: build() is called without it
        if args.suite:
            if args.data:
                raise CliError("give --suite (its [[train]] sections) or --data, not both")
            suite = _load_suite(args.suite, None)
            runs = _train_runs_of_suite(suite, device, args.models)
            if not runs:
                raise CliError(f"suite {suite.name!r} has no [[train]] section for {device}"
                               f"{' and --models ' + args.models if args.models else ''}; pick another --suite or "
                               "give --data")
            overrides = {k: v for k, v in dict(numbers, batch=batches, seed=seeds).items() if v is not None}
            if overrides or variants or precision:
                raise CliError(f"--suite takes its settings from its [[train]] sections; drop "
                               f"{', '.join('--' + k.replace('_', '-') for k in overrides) or '--variants'} or use "
                               "--data instead of --suite")
            out = args.out or default_out(suite.name, device)
        else:
            datasets = _csv_list("--data", args.data) or ["digits"]
            runs = plan_runs(datasets=datasets, device=device, models=models, batches=batches, variants=variants,
                             seeds=seeds, precision=precision, **numbers)
            out = args.out or default_out("train", device)
    except TrainError as err:
        raise CliError(str(err)) from None
    if os.path.lexists(out) and not os.path.isdir(out):
        raise CliError(f"--out {out}: is a file, not a folder; choose another --out")
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "env.json")):
        rec = env.collect(device)
        rec.update(run_device=device, device_name=env.device_name(device), train_runs=len(runs))
        env.write(os.path.join(out, "env.json"), rec)
    precompile_kernels(device, quiet=args.quiet)
    _run_training(runs, out, device, args.quiet)
    if not args.no_report:
        from .report import render

        files = render([out], out_dir=out)
        print(f"harness: report written: {files.get('pdf')}", file=sys.stderr)
    return 0


DEVICE_HELP = {
    "run": "where to run: auto (default) is the GPU when CuPy and a CUDA build of torch see one, else the "
           "CPU, and an error naming the install command when the machine has an NVIDIA GPU that CuPy "
           "cannot use; cpu or gpu to choose",
    "parity": "where to compare: auto (default: the GPU when CuPy sees one, else the CPU), cpu or gpu",
    "env": "auto (default): include the GPU's details when CuPy sees one; cpu: leave them out; gpu: an error "
           "unless a GPU is usable",
    "targets": "auto (default: the GPU when CuPy sees one; the CPU target's rows always run on the CPU), cpu "
               "(the GPU targets are then written as not measured) or gpu",
}


def build_parser() -> argparse.ArgumentParser:
    from .suites import DEVICES, suite_names

    p = argparse.ArgumentParser(prog="harness", description=(
        "Benchmark our NumPy/CUDA implementation against PyTorch (CPU, cuBLAS/cuDNN), check parity, "
        "and write results.csv, env.json, plots, tables and a PDF report."),
        epilog="Run 'python -m harness COMMAND --help' for a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    devs = ("auto",) + DEVICES

    r = sub.add_parser("run", help="run a suite (no arguments: the default suite of this machine's device)",
                       description="Run a suite and write DIR/results.csv, DIR/env.json and the report. "
                                   "Rerunning the same command resumes: finished rows are skipped. On a GPU the "
                                   "kernel modules are compiled first, in parallel, with a line per module; "
                                   "that time is not counted against the suite's time limit.")
    r.add_argument("--suite", help=f"suite name ({', '.join(suite_names())}) or path to a .toml file; "
                                   "default: gpu on a GPU machine, cpu otherwise")
    r.add_argument("--device", default="auto", choices=devs, help=DEVICE_HELP["run"])
    r.add_argument("--out", metavar="DIR", help="output folder (default: reports/<suite>-<device name>)")
    r.add_argument("--models", help="comma-separated zoo models: run only these of the suite's model sections")
    r.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                   help="FP32 peak for the %% of peak column (default: known GPUs; none on CPUs)")
    r.add_argument("--cold-l2", action="store_true", help="flush L2 before every timed sample (GPU)")
    r.add_argument("--budget-s", type=float, metavar="S", help="override the suite's per-row timing budget "
                                                               "(seconds)")
    r.add_argument("--time-limit-s", type=float, metavar="S",
                   help="stop starting new rows after this many seconds of measuring (0: none; default: the "
                        "suite's); rerun the same command to resume")
    r.add_argument("--precision", metavar="P[,P...]",
                   help="run the suite's model, dense and conv2d sections at these precisions (fp32, tf32, bf16; "
                        "tf32 and bf16 on the GPU only) instead of each section's own 'precisions' list")
    r.add_argument("--no-report", action="store_true", help="write results only, no plots/PDF")
    r.add_argument("--quiet", action="store_true", help="no progress bar and no line per compiled kernel module")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="plots, tables and PDF from results folders (or pytest-benchmark JSON)",
                        description="Render the report from saved results only (nothing is run). Each DIR holds "
                                    "a results.csv (and env.json) or is a pytest-benchmark --benchmark-json file; "
                                    "several DIRs are compared side by side.")
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="a results folder or a pytest-benchmark JSON file")
    rp.add_argument("--out", metavar="DIR", help="where to write the report (default: the first DIR, or "
                                                 "reports/compare-... for several)")
    rp.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                    help="FP32 peak for the roofline's compute roof, instead of the one env.json records "
                         "(applies to the device each run was made for)")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="row by row: is run B faster, slower or the same as run A, beyond the noise",
                       description="Compare two runs row by row (results folders or pytest-benchmark JSON files): "
                                   "the time ratio B/A with its 95% bootstrap interval and a verdict (faster, "
                                   "slower, same: a change must exceed both runs' noise and --threshold, and its "
                                   "interval must exclude 1), geomeans per kind, rows in one run only; writes "
                                   "compare.md/.tex/.csv/.png/.pdf. Exit code 0: done; 1: with "
                                   "--fail-on-regression, a row of ours got slower; 2: bad input.")
    c.add_argument("a", metavar="A", help="the baseline: a results folder or a pytest-benchmark JSON file")
    c.add_argument("b", metavar="B", help="the run compared with it (same kinds of input)")
    c.add_argument("--threshold", type=float, default=0.05, metavar="FRAC",
                   help="smallest relative change reported as faster or slower (default 0.05 = 5%%)")
    c.add_argument("--fail-on-regression", action="store_true",
                   help="exit with code 1 when a row of ours is slower in B (to gate a change)")
    c.add_argument("--out", metavar="DIR", help="where to write the comparison (default: reports/compare-<A>-vs-<B>)")
    c.set_defaults(func=cmd_compare)

    pa = sub.add_parser("parity", help="parity table: every zoo model and layer kind, both impls vs float64",
                        description="Compare ours and PyTorch with the reference computed in float64 (same device, "
                                    "inputs, parameters) for every zoo model (inference, forward_backward, "
                                    "train_step) and every layer kind and phase; exit code 1 if any row fails.")
    pa.add_argument("--device", default="auto", choices=devs, help=DEVICE_HELP["parity"])
    pa.add_argument("--models", help="comma-separated zoo models (default: all)")
    pa.set_defaults(func=cmd_parity)

    e = sub.add_parser("env", help="print the environment record as JSON",
                       description="Print, as JSON, the record written to env.json beside every results.csv: "
                                   "host, CPU, GPU and driver, library versions and precision flags. Runs "
                                   "nothing.")
    e.add_argument("--device", default="auto", choices=devs, help=DEVICE_HELP["env"])
    e.set_defaults(func=cmd_env)

    t = sub.add_parser("targets", help="measure the performance targets and write DIR/targets.csv",
                       description="Run exactly the rows the performance targets need (the targets suite, then "
                                   "on the GPU the networks suite), write DIR/targets.csv (target, measured, goal, "
                                   "met), the rows in DIR/results.csv, and print the table. A run stopped by the "
                                   "suite's time limit resumes when run again. On a CPU-only machine the GPU "
                                   "targets are written as not measured. With --runs, nothing is measured: the "
                                   "targets of several saved runs of one card are evaluated from their rows and "
                                   "combined (median, min, max, spread; met when the median reaches the goal and "
                                   "every run measured the target with every row of ours ok and passing parity) "
                                   "into DIR/targets_runs.csv, .md and .tex, and the table is printed.")
    t.add_argument("--out", metavar="DIR", help="output folder (default: reports/targets-<device name>; with --runs "
                                                "reports/targets-runs-<device name>)")
    t.add_argument("--runs", nargs="+", metavar="RUN",
                   help="combine these run folders (two or more, written by `harness targets` on one card and "
                        "machine) instead of measuring; e.g. --runs reports/targets-x reports/targets-x-2 "
                        "reports/targets-x-3 --out reports/targets-x-runs")
    t.add_argument("--device", choices=devs, help=DEVICE_HELP["targets"])
    t.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                   help="FP32 peak for the %% of peak column (default: known GPUs; none on CPUs)")
    t.add_argument("--time-limit-s", type=float, metavar="S",
                   help="stop starting new rows after this many seconds of measuring, the CPU and GPU rows "
                        "together (0: none; default: the targets suite's); rerun the same command to resume. "
                        "Leave room under a machine's own limit for the row in progress and the report")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no line per compiled kernel module")
    t.set_defaults(func=cmd_targets)

    tr = sub.add_parser("train", help="train both implementations end to end: curves, time to accuracy, train.csv",
                        description="Train models x datasets x batch sizes x implementation variants x seeds with "
                                    "SGD and write DIR/train.csv (one row per run and evaluation: loss, test accuracy, "
                                    "wall time), plots, the time-to-accuracy table and report.pdf. Every variant of "
                                    "a seed starts from the same weights and sees the same batches. Rerunning the "
                                    "same command resumes: finished runs are skipped.")
    tr.add_argument("--data", metavar="LIST", help="comma-separated datasets (default digits): digits, mnist:DIR, "
                                                   "fashion-mnist:DIR, cifar10:DIR, synthetic-mnist[:N], "
                                                   "synthetic-cifar[:N] (N training samples, default 60000)")
    tr.add_argument("--models", metavar="LIST", help="comma-separated zoo models or spec files (default: the "
                                                     "dataset's: digits-mlp, digits-cnn for digits; mlp-mnist, "
                                                     "lenet-mnist for MNIST shapes; cnn-cifar for CIFAR shapes)")
    tr.add_argument("--variants", metavar="LIST", help="comma-separated variants (default: all but torch-compile): "
                                                       "numpy, torch-eager, torch-compile on the CPU; cuda, "
                                                       "cuda-graph, torch-eager, torch-graph, torch-compile on the GPU")
    tr.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, each a run (default 0,1,2): initial "
                                                    "weights and data order")
    tr.add_argument("--batch", metavar="LIST", help="comma-separated batch sizes (default: the dataset's, 32 for "
                                                    "digits, 64 otherwise)")
    tr.add_argument("--epochs", metavar="N", help="epochs per run (default: the dataset's, e.g. 20 for digits)")
    tr.add_argument("--evals-per-epoch", metavar="N",
                    help="evaluate the test accuracy N times per epoch (default 1: at the end of each), after N "
                         "nearly equal runs of steps, off the clock; train.csv gets a row per evaluation, and the "
                         "time to accuracy counts train time up to the first evaluation at the target (1 to the "
                         "steps of an epoch, at most 1000)")
    tr.add_argument("--lr", metavar="X", help="SGD learning rate (default: the dataset's, e.g. 0.05 for digits)")
    tr.add_argument("--momentum", metavar="X", help="SGD momentum (default 0.9)")
    tr.add_argument("--target-acc", metavar="X", help="test accuracy, as a fraction, for the time-to-accuracy "
                                                      "table (default: the dataset's, e.g. 0.95 for digits)")
    from .train import precision_default

    if precision_default() is not None:
        tr.add_argument("--precision", default=precision_default(),
                        help=f"the precision both implementations compute in (default {precision_default()})")
    tr.add_argument("--suite", help="run the [[train]] sections of this suite instead of --data/--models...")
    tr.add_argument("--device", default="auto", choices=devs, help=DEVICE_HELP["run"])
    tr.add_argument("--out", metavar="DIR", help="output folder (default: reports/train-<device name>, or "
                                                 "reports/<suite>-<device name> with --suite)")
    tr.add_argument("--no-report", action="store_true", help="write train.csv only, no plots/PDF")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_train)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "models", None) is not None and args.command == "parity":
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        return args.func(args)
    except CliError as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:
        # SpecError, SuiteError, ReportError and ResultsError-like input problems that a command did not wrap
        from .report import ReportError
        from .suites import SuiteError
        import modelspec

        if isinstance(err, (modelspec.SpecError, SuiteError, ReportError)):
            print(f"harness: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("harness: interrupted; rerun the same command to resume (finished rows are kept)", file=sys.stderr)
        return 130
