"""The command line as a user meets it, on a CPU-only machine with faked GPU environments:

- ``--device auto`` on a machine with an NVIDIA GPU that CuPy cannot use stops with the exact install
  command instead of silently running the CPU suite; ``--device cpu`` still runs there;
- on a GPU the kernel modules are compiled (with a line per module) before anything is timed, and that
  time is not counted against a suite's time limit;
- every verb's help exits 0, describes every option it has, and speaks of the software only;
- the test run's own summary: GPU skips in one line, every other skip with its reason.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import types

import pytest

from harness import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERBS = ("run", "report", "compare", "parity", "env", "targets", "train")
NO_CUPY = (False, "CuPy cannot be imported (ModuleNotFoundError: No module named 'cupy')")


@pytest.fixture
def gpu_without_cupy(monkeypatch, tmp_path):
    """A machine whose nvidia-smi shows an H100 with a CUDA 13.0 driver, and no CuPy."""
    from harness import env

    monkeypatch.setattr(env, "gpu_available", lambda: NO_CUPY)
    monkeypatch.setattr(cli, "nvidia_gpu", lambda: ("NVIDIA H100 80GB HBM3", "13.0"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- --device auto on a GPU machine without CuPy -------------------------------------------------------

@pytest.mark.parametrize("verb", ["run", "targets", "parity"])
def test_auto_with_a_gpu_but_no_cupy_names_the_install_command(gpu_without_cupy, capsys, verb):
    assert cli.main([verb]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and "Traceback" not in err
    assert 'python3 -m pip install -e ".[gpu-cuda13]"' in err
    assert "NVIDIA H100 80GB HBM3" in err and "--device cpu" in err
    assert not os.path.exists(gpu_without_cupy / "reports"), "nothing may be written before the error"


@pytest.mark.parametrize("cuda, extra", [("13.0", "gpu-cuda13"), ("13.1", "gpu-cuda13"), ("12.4", "gpu-cuda12")])
def test_install_command_follows_the_drivers_cuda_version(cuda, extra):
    assert f'python3 -m pip install -e ".[{extra}]"' in cli.install_hint(cuda)


def test_install_hint_for_an_unknown_or_too_old_driver():
    unknown = cli.install_hint(None)
    assert ".[gpu-cuda12]" in unknown and ".[gpu-cuda13]" in unknown and "nvidia-smi" in unknown
    assert "update the driver" in cli.install_hint("11.8")


def test_device_cpu_still_runs_on_a_gpu_machine_without_cupy(gpu_without_cupy):
    assert cli._device("cpu") == "cpu"
    out = gpu_without_cupy / "out"
    suite = gpu_without_cupy / "one.toml"
    suite.write_text('name = "one"\n[settings]\nbudget_s = 0.002\nmin_repeats = 2\nmax_repeats = 3\n'
                     '[[dense]]\nshapes = [[5, 3, 7]]\nphases = ["forward"]\n')
    assert cli.main(["run", "--device", "cpu", "--suite", str(suite), "--out", str(out), "--quiet",
                     "--no-report"]) == 0
    assert (out / "results.csv").exists()


def test_auto_without_any_gpu_is_the_cpu(monkeypatch):
    from harness import env

    monkeypatch.setattr(env, "gpu_available", lambda: NO_CUPY)
    monkeypatch.setattr(cli, "nvidia_gpu", lambda: None)
    assert cli._device("auto") == "cpu"


def _fake_smi(monkeypatch, names: str, header: str, rc: int = 0):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        out = names if any(a.startswith("--query-gpu") for a in cmd) else header
        return subprocess.CompletedProcess(cmd, rc, stdout=out, stderr="")

    monkeypatch.setattr(cli.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(cli.subprocess, "run", run)
    return calls


def test_nvidia_gpu_reads_name_and_cuda_version_from_nvidia_smi(monkeypatch):
    header = ("| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |\n"
              "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:00:07.0 Off |                    0 |\n")
    _fake_smi(monkeypatch, "NVIDIA H100 80GB HBM3\n", header)
    assert cli.nvidia_gpu() == ("NVIDIA H100 80GB HBM3", "13.0")


def test_nvidia_smi_that_finds_no_device_is_no_gpu(monkeypatch):
    _fake_smi(monkeypatch, "", "No devices were found\n", rc=6)
    monkeypatch.setattr(cli.os, "listdir", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    assert cli.nvidia_gpu() is None


# --- compiling before timing ---------------------------------------------------------------------------

@pytest.fixture
def fake_runtime(monkeypatch):
    """custom_impl.gpu.runtime with three modules that 'compile' in 0.2 s; records the calls in order."""
    import custom_impl.gpu

    calls: list[str] = []
    mod = types.ModuleType("custom_impl.gpu.runtime")
    mod.kernel_modules = lambda: [("gemm", {"BM": 256}), ("conv_implicit_gemm", {}), ("pool", {})]

    def precompile(jobs=None, progress=None):
        calls.append(f"precompile jobs={jobs}")
        progress("compiling 3 kernel modules in 3 processes")
        time.sleep(0.2)
        for i, (family, _) in enumerate(mod.kernel_modules(), 1):
            progress(f"compiled {i}/3 {family} in 0.1 s")
        return []

    mod.precompile = precompile
    monkeypatch.setitem(sys.modules, "custom_impl.gpu.runtime", mod)
    monkeypatch.setattr(custom_impl.gpu, "runtime", mod, raising=False)
    return calls


@pytest.fixture
def fake_gpu_run(monkeypatch, fake_runtime, tmp_path):
    """cmd_run on a 'GPU': the environment record and the suite runner are fakes that record calls."""
    from harness import env, runner

    monkeypatch.setattr(cli, "_device", lambda requested: "gpu")
    monkeypatch.setattr(env, "collect", lambda device=None: {})
    monkeypatch.setattr(env, "device_name", lambda device: "Fake GPU")

    def run_suite(suite, device, path, **kw):
        fake_runtime.append(f"run_suite {device} time_limit_s={kw['settings_override'].get('time_limit_s')}")
        return {"ok": len(kw["jobs"])}

    monkeypatch.setattr(runner, "run_suite", run_suite)
    monkeypatch.chdir(tmp_path)
    return fake_runtime


def test_run_on_gpu_compiles_every_module_first_with_a_line_each(fake_gpu_run, capsys, tmp_path):
    assert cli.main(["run", "--suite", "quick", "--out", str(tmp_path / "o"), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert fake_gpu_run[0].startswith("precompile jobs=") and fake_gpu_run[1].startswith("run_suite gpu")
    assert "harness: compiling 3 kernel modules in 3 processes ..." in err
    assert "  compiled 2/3 conv_implicit_gemm in 0.1 s" in err
    assert re.search(r"kernel modules ready after 0\.[2-9]\d* s \(not counted against any time limit\)", err), err
    assert err.index("compiling 3 kernel modules") < err.index("harness: rows ok=")


def test_quiet_run_keeps_the_compile_summary_but_not_the_module_lines(fake_gpu_run, capsys, tmp_path):
    assert cli.main(["run", "--suite", "quick", "--out", str(tmp_path / "o"), "--no-report", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "compiling 3 kernel modules" in err and "compiled 1/3" not in err


def test_compile_failure_is_a_clear_error(fake_gpu_run, capsys, tmp_path):
    def broken(jobs=None, progress=None):
        raise RuntimeError("gemm 256x128x16: nvrtc error: identifier 'x' is undefined")

    sys.modules["custom_impl.gpu.runtime"].precompile = broken
    assert cli.main(["run", "--suite", "quick", "--out", str(tmp_path / "o"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "harness: error: compiling the GPU kernels failed: gemm 256x128x16" in err and "Traceback" not in err


def _fake_targets_suites(monkeypatch, fake_runtime) -> list:
    """``run_targets`` without measuring: no environment record, no rows; each suite it starts is logged in
    ``fake_runtime`` and its (device, time limit override) appended to the list returned."""
    from harness import env, results, runner

    monkeypatch.setattr(env, "collect", lambda device=None: {})
    monkeypatch.setattr(env, "device_name", lambda device: "Fake device")
    monkeypatch.setattr(results, "read_rows", lambda path: [])
    seen = []

    def run_suite(suite, device, path, **kw):
        seen.append((device, kw["settings_override"].get("time_limit_s")))
        fake_runtime.append(f"run_suite {device}")
        return {}

    monkeypatch.setattr(runner, "run_suite", run_suite)
    return seen


def test_targets_compile_between_cpu_and_gpu_rows_outside_the_time_limit(monkeypatch, fake_runtime, tmp_path):
    from harness import targets
    from harness.suites import load_suite

    seen = _fake_targets_suites(monkeypatch, fake_runtime)
    limit = float(load_suite("targets").settings.get("time_limit_s") or 0)
    targets.run_targets(str(tmp_path), "gpu", quiet=True,
                        before_gpu=lambda: cli.precompile_kernels("gpu", quiet=True))
    # the targets suite on the CPU, the compile, then the targets and the networks suites on the GPU
    assert [c.split(" jobs=")[0] for c in fake_runtime] == ["run_suite cpu", "precompile", "run_suite gpu", "run_suite gpu"]
    if limit:
        gpu_limit = seen[1][1]
        assert gpu_limit > limit - 0.15, f"the 0.2 s of compiling was counted: {gpu_limit} of {limit}"


def test_targets_time_limit_overrides_the_suite(monkeypatch, fake_runtime, tmp_path, capsys):
    """--time-limit-s replaces the targets suite's limit for the CPU and GPU rows together; a negative one is
    refused before anything runs, naming the option."""
    from harness import targets

    seen = _fake_targets_suites(monkeypatch, fake_runtime)
    targets.run_targets(str(tmp_path), "gpu", quiet=True, time_limit_s=37.5)
    assert [d for d, _ in seen] == ["cpu", "gpu", "gpu"]
    assert 37.0 < seen[0][1] <= 37.5 and all(limit <= seen[0][1] for _, limit in seen[1:])
    seen.clear()
    targets.run_targets(str(tmp_path), "gpu", quiet=True, time_limit_s=0)
    assert [limit for _, limit in seen] == [0, 0, 0]              # 0: no limit, not the suite's
    assert cli.main(["targets", "--device", "cpu", "--time-limit-s", "-5", "--out", str(tmp_path / "t")]) == 2
    assert "--time-limit-s" in capsys.readouterr().err and not (tmp_path / "t").exists()


# --- help texts ----------------------------------------------------------------------------------------

DEV_WORDING = re.compile(r"issue|session|run [0-9]", re.IGNORECASE)


def _help(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_exits_0_and_speaks_of_the_software_only(verb, capsys):
    text = _help([verb] if verb else [], capsys)
    assert text.strip()
    found = DEV_WORDING.search(text)
    assert found is None, f"'{found.group(0)}' in the help of {verb or 'harness'}:\n{text}"


def test_every_verb_has_a_description_and_every_option_a_help_text():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == set(VERBS)
    for verb, p in sub.choices.items():
        assert p.description, f"harness {verb} --help has no description"
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"harness {verb}: {'/'.join(action.option_strings) or action.dest} has no help"
    for verb in ("run", "parity", "env", "targets"):
        (device,) = [a for a in sub.choices[verb]._actions if a.dest == "device"]
        assert "auto" in device.help and "cpu" in device.help


def test_suite_help_lists_the_installed_suites(capsys):
    from harness.suites import suite_names

    text = " ".join(_help(["run"], capsys).split())
    assert all(name in text for name in suite_names())


# --- the test run's own summary (tests/conftest.py) ----------------------------------------------------

def _conftest():
    spec = importlib.util.spec_from_file_location("conftest_under_test", os.path.join(ROOT, "tests", "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _skip(nodeid: str, reason: str):
    return types.SimpleNamespace(nodeid=nodeid, longrepr=("tests/x.py", 3, f"Skipped: {reason}"))


def test_skip_summary_collapses_gpu_skips_and_names_every_other_skip():
    conf = _conftest()
    why = "CuPy cannot be imported (ModuleNotFoundError: No module named 'cupy')"
    reports = [_skip(f"tests/a.py::test_{i}", f"gpu test: {why}") for i in range(743)]
    reports.append(_skip("tests/b.py::test_nvcc[gemm.cu]", "nvcc not found (on PATH or /usr/local/cuda/bin)"))
    lines = conf.skip_summary(reports)
    assert lines == [f"743 gpu tests skipped: {why}",
                     "SKIPPED tests/b.py::test_nvcc[gemm.cu]: nvcc not found (on PATH or /usr/local/cuda/bin)"]
    assert conf.skip_summary([]) == []


def test_pytest_prints_one_gpu_line_and_every_other_skip(tmp_path):
    import shutil

    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "@pytest.mark.gpu\n"
        "@pytest.mark.parametrize('i', range(5))\n"
        "def test_on_gpu(i):\n    pass\n"
        "def test_plain():\n    pytest.skip('no network here')\n"
        "def test_ok():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "SKIPPED" in out and "test_plain: no network here" in out
    gpu_lines = [line for line in out.splitlines() if "gpu test" in line]
    if _conftest().gpu_unavailable_reason() is not None:
        assert len(gpu_lines) == 1 and gpu_lines[0].startswith("5 gpu tests skipped: "), out
    else:
        assert not gpu_lines, out
