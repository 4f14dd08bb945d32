"""Every kernel file compiles for sm_90 with nvcc (CPU only; skipped only when nvcc is absent); the files
of the architecture-specific families (runtime.ARCH_SPECIFIC: wgmma) for sm_90a, as the runtime builds them.

Fails on a compile error. Per kernel, ptxas's registers, shared memory and spills are recorded, not
printed: shown with ``-s``, in a failure's output, and in the test report through ``record_property``
(``--junitxml``). A spill is not a failure: it is a performance matter, not a wrong result.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KERNEL_FILES = sorted(glob.glob(os.path.join(ROOT, "custom_impl", "kernels", "*.cu")))


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for path in ("/usr/local/cuda/bin/nvcc",):
        if os.path.exists(path):
            return path
    return None


def parse_ptxas(text: str) -> list[dict]:
    """ptxas -v output -> [{kernel, registers, smem, stack, spill_stores, spill_loads}] per function."""
    rows, current = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line) or re.search(r"Function properties for (\S+)", line)
        if m:
            name = m.group(1)
            if current is None or current["kernel"] != name:
                current = {"kernel": name, "registers": None, "smem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0}
                rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current["stack"], current["spill_stores"], current["spill_loads"] = (int(g) for g in m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s.group(1)) if s else 0
    return [r for r in rows if r["registers"] is not None]


def test_there_are_kernel_files():
    assert KERNEL_FILES, "custom_impl/kernels/*.cu: no kernel files found"


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (on PATH or /usr/local/cuda/bin)")
@pytest.mark.parametrize("path", KERNEL_FILES, ids=[os.path.basename(p) for p in KERNEL_FILES])
def test_kernel_file_compiles_for_sm90(path, tmp_path, record_property):
    from custom_impl.gpu.runtime import ARCH_SPECIFIC

    cubin = tmp_path / "out.cubin"
    family = os.path.basename(path)[: -len(".cu")]
    target = "-gencode=arch=compute_90a,code=sm_90a" if family in ARCH_SPECIFIC else "-arch=sm_90"
    cmd = [_nvcc(), target, "-std=c++17", "-cubin", "-Xptxas", "-v", "-o", str(cubin), path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed on {os.path.basename(path)}:\n{out}"
    rows = parse_ptxas(out)
    assert rows, f"{os.path.basename(path)}: no kernels reported by ptxas:\n{out}"
    table = "\n".join(f"  {r['kernel'][:60]:60s} regs {r['registers']:3d}  smem {r['smem']:6d} B  "
                      f"stack {r['stack']:4d} B  spills {r['spill_stores']}/{r['spill_loads']} B" for r in rows)
    print(f"\n{os.path.basename(path)}:\n{table}")
    record_property("ptxas", table)
    spills = [r["kernel"] for r in rows if r["spill_stores"] or r["spill_loads"]]
    record_property("spills", ", ".join(spills))
