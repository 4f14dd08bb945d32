"""The installed package carries every file the product opens at run time.

Builds a wheel from a copy of the source tree (``pip wheel --no-deps --no-build-isolation``: setuptools
from this environment, nothing downloaded), installs it with ``pip install --no-deps --target`` into a
folder outside the checkout, and checks there that:

- every kernel source ``custom_impl/kernels/*.cu`` of the checkout is installed, and every header those
  files ``#include "..."`` (followed through headers that include headers) is installed beside them;
- the zoo specs and the harness suites are installed (``modelspec.load`` and ``harness.suites`` open them);
- ``custom_impl.gpu.runtime`` imported from the installed copy has its ``KERNEL_DIR`` inside it, and finds a
  prebuilt sm_90 cubin there for every module the default path can choose;
- where nvcc is present, the smallest kernel file that includes a header compiles with nvcc from the
  installed location, with ``-I`` pointing at the installed kernels folder only.

Runs on a CPU-only machine (no CuPy needed) in a few seconds.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "custom_impl", "kernels")
PACKAGES = ("modelspec", "custom_impl", "reference_impl", "harness")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)

pytestmark = pytest.mark.slow


def local_includes(path: str) -> set[str]:
    """Names of the files ``path`` includes with ``#include "..."`` (looked up beside it, as ``-I`` to the
    kernels folder does), followed through headers that include headers."""
    folder = os.path.dirname(path)
    found: set[str] = set()
    todo = [path]
    while todo:
        with open(todo.pop(), encoding="utf-8") as fh:
            names = INCLUDE.findall(fh.read())
        for name in names:
            if name not in found:
                found.add(name)
                nested = os.path.join(folder, name)
                if os.path.isfile(nested):
                    todo.append(nested)
    return found


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    return "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """The folder the wheel was installed into (its packages at the top level)."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    # NOTE: built from a copy, so that setuptools' build/ and *.egg-info never land in the checkout.
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(os.path.join(ROOT, name), src / name)
    for pkg in PACKAGES:
        shutil.copytree(os.path.join(ROOT, pkg), src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    proc = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (wheel,) = glob.glob(str(wheels / "*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert not [n for n in zf.namelist() if n.startswith(("tests/", "lab/", "dev/", "benchmarks/"))], \
            "the wheel holds files outside the product packages"
    target = base / "site"
    proc = subprocess.run(pip + ["install", "--no-deps", "--no-index", "-q", "--target", str(target), wheel],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install --target failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return str(target)


def _run_installed(target: str, code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports the product from ``target`` (cwd outside the checkout)."""
    prelude = f"import sys; sys.path.insert(0, {target!r})\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], cwd=target, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_include_parser_follows_nested_headers(tmp_path):
    (tmp_path / "a.cuh").write_text('#include "b.cuh"\n')
    (tmp_path / "b.cuh").write_text("// leaf\n")
    (tmp_path / "k.cu").write_text('#include <cstdint>\n  # include "a.cuh"\n')
    assert local_includes(str(tmp_path / "k.cu")) == {"a.cuh", "b.cuh"}


def test_every_kernel_file_and_included_header_is_installed(installed):
    sources = sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
    assert sources, f"no kernel files in {KERNELS}"
    wanted = {os.path.basename(p) for p in sources}
    for path in sources:
        wanted |= local_includes(path)
    got = os.path.join(installed, "custom_impl", "kernels")
    missing = sorted(n for n in wanted if not os.path.isfile(os.path.join(got, n)))
    assert not missing, (f"not in the installed package (add them to [tool.setuptools.package-data] in "
                         f"pyproject.toml): {', '.join(missing)}")
    for name in wanted:   # the installed copy is the checkout's file, byte for byte
        with open(os.path.join(KERNELS, name), "rb") as a, open(os.path.join(got, name), "rb") as b:
            assert a.read() == b.read(), f"{name}: the installed copy differs from the checkout's"


def _names(folder: str) -> list[str]:
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, folder, "*.toml")))


def test_zoo_and_suites_are_installed_and_load(installed):
    zoo, suites = _names("modelspec/zoo"), _names("harness/suites")
    out = _run_installed(installed, (
        "import modelspec, harness.suites as s\n"
        f"for name in {zoo!r}:\n"
        "    modelspec.load(name)\n"
        f"for name in {suites!r}:\n"
        "    s.load_suite(name).jobs('cpu')\n"
        "print(modelspec.__file__, s.__file__, ','.join(s.suite_names()))\n"))
    spec_file, suites_file, names = out.split()
    for where in (spec_file, suites_file):
        assert where.startswith(installed), f"{where}: imported from the checkout, not from the installed copy"
    assert names.split(",") == suites


def test_runtime_kernel_dir_points_inside_the_installed_package(installed):
    out = _run_installed(installed, (
        "import os, custom_impl.gpu.runtime as rt\n"
        "print(os.path.realpath(rt.KERNEL_DIR))\n"))
    kernel_dir = out.strip()
    assert kernel_dir == os.path.realpath(os.path.join(installed, "custom_impl", "kernels")), kernel_dir
    assert sorted(os.listdir(kernel_dir)) == sorted(os.listdir(os.path.join(installed, "custom_impl", "kernels")))


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (on PATH or /usr/local/cuda/bin)")
def test_kernels_compile_with_nvcc_from_the_installed_copy(installed, tmp_path):
    """Every installed kernel file preprocesses with ``-I`` to the installed kernels folder only (each
    ``#include`` resolves there), and the installed headers compile to a cubin from there.

    NOTE: the kernel files themselves are not compiled here: the files that include a header are the
    GEMM and conv files (2-20 s each with nvcc, minutes on a loaded 2-core machine); every kernel file
    is compiled from the checkout by tests/custom_impl/gpu/test_nvcc.py, and installed byte for byte
    (test_every_kernel_file_and_included_header_is_installed).
    """
    got = os.path.join(installed, "custom_impl", "kernels")
    sources = sorted(glob.glob(os.path.join(got, "*.cu")))
    headers = sorted({h for p in sources for h in local_includes(p)})
    assert headers, "no installed kernel file includes a header"
    for path in sources:
        cmd = [_nvcc(), "-E", "-std=c++17", f"-I{got}", "-o", os.devnull, path]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"nvcc -E failed on the installed {os.path.basename(path)}:\n{proc.stderr[-3000:]}"
    stub = tmp_path / "headers.cu"
    stub.write_text("".join(f'#include "{h}"\n' for h in headers))
    cmd = [_nvcc(), "-arch=sm_90", "-std=c++17", "-cubin", f"-I{got}", "-o", str(tmp_path / "h.cubin"), str(stub)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the installed headers {headers} do not compile:\n{proc.stderr[-3000:]}"


def test_prebuilt_cubins_are_installed_for_every_default_module(installed):
    """The wheel carries a prebuilt sm_90 cubin for every module the default path can choose, found by the
    installed runtime (digests are of file contents, so they hold wherever the package lives)."""
    out = _run_installed(installed, (
        "import custom_impl.gpu.prebuild as pb\n"
        "print(len(pb.planned('sm_90')), len(pb.missing('sm_90')), pb.__file__)\n"))
    planned, missing, where = out.split()
    assert where.startswith(installed), f"{where}: imported from the checkout, not from the installed copy"
    assert int(planned) > 0 and int(missing) == 0, f"{missing} of {planned} prebuilt cubins are not installed"
