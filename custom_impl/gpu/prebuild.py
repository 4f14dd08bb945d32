"""Build the prebuilt cubins the package ships: ``python -m custom_impl.gpu.prebuild [--arch sm_90]``.

Every module of ``runtime.kernel_modules()`` is compiled with nvcc, using the options NVRTC gets at run
time, into ``custom_impl/kernels/prebuilt/<arch>/<family>-<digest>.cubin.xz`` (xz-compressed: a GEMM
tile module is ~1.2 MB as a cubin, ~60 KB packed). The runtime loads such a file instead of compiling
when the device's architecture and the module's digest match, so a fresh machine runs its first kernel
in milliseconds rather than after ~2 minutes of compiling. Cubins whose digest no longer matches a
module (an edited kernel) are removed, so the package never carries dead files.

Needs nvcc (not CuPy, not a GPU). ``--check`` builds nothing: it lists missing and stale cubins and exits
1 if there are any.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import runtime

DEFAULT_ARCHS = ("sm_90",)  # H100 and H200; other devices compile from source at first use


def planned(arch: str) -> dict:
    """{packed cubin path: (family, define key)} for every module the default path can choose."""
    out = {}
    for family, defines in runtime.kernel_modules():
        key = runtime.define_key(defines)
        out[runtime.prebuilt_path(family, key, arch)] = (family, key)
    return out


def stale(arch: str) -> list:
    """Files in the arch's prebuilt folder that match no current module."""
    folder = os.path.join(runtime.PREBUILT_DIR, arch)
    if not os.path.isdir(folder):
        return []
    wanted = set(planned(arch))
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if os.path.join(folder, n) not in wanted)


def missing(arch: str) -> list:
    return sorted(p for p in planned(arch) if not os.path.exists(p))


def _build(job: tuple) -> tuple:
    """nvcc one module into its packed cubin; returns (label, seconds, error or None)."""
    path, (family, key), arch, nvcc = job
    label = runtime.module_label(family, dict(key))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "module.cubin")
        cmd = runtime.nvcc_command(family, key, arch, cubin)
        cmd[0] = nvcc
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return label, time.perf_counter() - t0, (proc.stderr or proc.stdout).strip()[-2000:]
        with open(cubin, "rb") as fh:
            packed = lzma.compress(fh.read(), preset=9)
    fd, part = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(packed)
    os.replace(part, path)
    return label, time.perf_counter() - t0, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m custom_impl.gpu.prebuild",
        description="Build (or check) the cubins shipped in custom_impl/kernels/prebuilt/ with nvcc.")
    parser.add_argument("--arch", action="append", help="target architecture, e.g. sm_90 (repeatable; "
                        f"default {', '.join(DEFAULT_ARCHS)})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel nvcc processes")
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if any cubin is missing or stale")
    args = parser.parse_args(argv)
    archs = args.arch or list(DEFAULT_ARCHS)

    if args.check:
        bad = 0
        for arch in archs:
            for p in missing(arch):
                print(f"missing {os.path.relpath(p, runtime.KERNEL_DIR)}")
                bad += 1
            for p in stale(arch):
                print(f"stale   {os.path.relpath(p, runtime.KERNEL_DIR)}")
                bad += 1
        print(f"{bad} missing or stale cubin(s)" if bad else "prebuilt cubins are complete and current")
        return 1 if bad else 0

    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        print("error: nvcc not found (on PATH or /usr/local/cuda/bin); install the CUDA toolkit", file=sys.stderr)
        return 2
    failed = 0
    for arch in archs:
        os.makedirs(os.path.join(runtime.PREBUILT_DIR, arch), exist_ok=True)
        for p in stale(arch):
            os.remove(p)
            print(f"removed stale {os.path.basename(p)}")
        todo = [(p, planned(arch)[p], arch, nvcc) for p in missing(arch)]
        print(f"{arch}: building {len(todo)} of {len(planned(arch))} modules in {args.jobs} processes", flush=True)
        with cf.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for i, (label, secs, error) in enumerate(pool.map(_build, todo), 1):
                if error:
                    failed += 1
                    print(f"FAILED {label}: {error}", flush=True)
                else:
                    print(f"built {i}/{len(todo)} {label} in {secs:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
