"""The environment record (env.json): what machine, libraries and precision settings a run used.

Besides the versions and precision flags: the git commit of the code and whether it had uncommitted
changes (``git``), every relevant package's version (``packages``), the thread settings that move CPU
times 1.5-2x (``threads``: environment variables, threadpoolctl's view of the BLAS/OpenMP pools,
torch's pools, our own ``CUSTOM_CPU_THREADS``), the CPU in detail (``cpu``: model, cores, SIMD flags,
frequency governor) and ``machine_id``, which tells apart two hosts sold under one CPU name; on a GPU
the NVML snapshot (``nvml``; per-row clocks are in results.csv).

``write`` replaces env.json atomically (a kill leaves the old record or the new one); ``read`` is the
strict reader (a JSON object, UTF-8), raising ``io.DamagedFile`` with the fix. A run resumed over several
calls keeps one record: ``earlier_record`` reads the earlier calls' record before a call adds rows, and
``write_run`` folds it into the new one (``carry_over``).
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import os
import platform
import re
import subprocess
import sys

from .io import DamagedFile, read_json_object, write_json

# Dense FP32 (FFMA) peaks in TFLOP/s by device-name substring, from the datasheets. The first match wins.
PEAK_FP32_TFLOPS = (
    ("H200", 66.9),
    ("H100 PCIe", 51.2),
    ("H100", 66.9),      # SXM
    ("A100", 19.5),
    ("L40S", 91.6),
    ("A10G", 31.2),
    ("V100", 15.7),
    ("T4", 8.1),
)


def peak_fp32_tflops(device_name: str) -> float | None:
    """Datasheet FP32 peak of a known GPU, or None (CPUs: none is assumed; pass --peak-tflops)."""
    for sub, peak in PEAK_FP32_TFLOPS:
        if sub.lower() in (device_name or "").lower():
            return peak
    return None


def gpu_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a CUDA device, else (False, why not)."""
    try:
        import cupy
    except Exception as err:
        return False, f"CuPy cannot be imported ({type(err).__name__}: {err})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"CuPy finds no CUDA device ({type(err).__name__}: {err})"
    if n < 1:
        return False, "no CUDA device visible"
    return True, ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return ""


def device_name(device: str) -> str:
    return gpu_name() if device == "gpu" else cpu_model()


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "unknown"


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception:
        return None


def jax_versions() -> dict:
    """Versions of JAX, jaxlib and JAX's CUDA plugin where installed, read from the package metadata
    (importing JAX would take a second and could start its GPU backend): ``{"jax": "0.11.2", ...}``."""
    import importlib.metadata as md

    out = {}
    for dist in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _nvidia_smi() -> dict:
    q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    vals = [v.strip() for v in out.stdout.splitlines()[0].split(",")]
    return dict(zip(q.split(","), vals))


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Distributions whose versions are recorded (those installed).
PACKAGES = ("cudnn-parity", "numpy", "scipy", "pandas", "matplotlib", "scikit-learn", "torch", "cupy-cuda12x",
            "cupy-cuda13x", "cupy", "nvidia-ml-py", "pynvml", "threadpoolctl", "tqdm", "pytest",
            "pytest-benchmark")
# Environment variables that set thread counts or how idle threads behave (and OpenBLAS's kernel set).
THREAD_VARS = ("CUSTOM_CPU_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
               "OPENBLAS_CORETYPE",
               "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES",
               "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_AFFINITY")
# CPU flags worth naming in the summary (SIMD widths and matrix units that decide BLAS kernels).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def _run(args: list[str]) -> tuple[int, str]:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as err:
        return -1, f"{type(err).__name__}: {err}"
    return out.returncode, (out.stdout if out.returncode == 0 else out.stderr.strip())


def git_info(root: str = REPO_ROOT) -> dict:
    """{"commit", "branch", "dirty", "changed_files"} of the checkout the harness runs from, or why not.

    ``dirty``: tracked files differ from the commit (untracked files do not count).
    """
    rc, commit = _run(["git", "-C", root, "rev-parse", "HEAD"])
    commit = commit.strip()
    if rc != 0:
        return {"available": False,
                "reason": f"not a git checkout, or git is missing ({commit.splitlines()[-1][:200] if commit else rc})"}
    top = _run(["git", "-C", root, "rev-parse", "--show-toplevel"])[1].strip()
    if os.path.realpath(top) != os.path.realpath(root):
        # e.g. an installed copy inside a virtual environment that sits in some other repository
        return {"available": False, "reason": f"{root} is not the top of a git checkout (the harness is installed, "
                                              "not run from the repository)"}
    branch = _run(["git", "-C", root, "rev-parse", "--abbrev-ref", "HEAD"])[1].strip()
    rc, status = _run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    changed = [line[3:] for line in status.splitlines() if line.strip()] if rc == 0 else None
    return {"available": True, "commit": commit, "branch": branch, "dirty": None if changed is None else bool(changed),
            "changed_files": None if changed is None else changed[:50]}


def package_versions() -> dict:
    """{distribution: version} of the installed ones among ``PACKAGES`` (read from metadata, nothing imported)."""
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:
            continue
    return out


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:     # not on Linux
        return os.cpu_count() or 1


def thread_settings() -> dict:
    """Thread counts: the environment variables, our own CPU threads, torch's pools, threadpoolctl's view."""
    env = {k: os.environ.get(k) for k in THREAD_VARS}
    raw = (env["CUSTOM_CPU_THREADS"] or "").strip()
    rec: dict = {"env": env, "usable_cores": usable_cores(),
                 "custom_cpu_threads": int(raw) if raw.isdigit() and int(raw) > 0 else usable_cores()}
    try:
        import torch

        rec["torch_intra_op"] = torch.get_num_threads()
        rec["torch_inter_op"] = torch.get_num_interop_threads()
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_info

        rec["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "prefix",
                                                     "threading_layer", "architecture") if p.get(k) is not None}
                              for p in threadpool_info()]
    except Exception as err:
        rec["threadpools"] = f"unavailable ({type(err).__name__}: {err})"
    return rec


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """The CPU: model, logical / usable / physical cores, sockets, SIMD flags, governor and memory."""
    flags: list[str] = []
    physical, sockets = set(), set()
    cur = {}
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines() + [""]:
        if not line.strip():
            if "physical id" in cur or "core id" in cur:
                physical.add((cur.get("physical id"), cur.get("core id")))
                sockets.add(cur.get("physical id"))
            cur = {}
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        cur[key] = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = value.split()
    governors = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")):
        g = _read(path)
        if g:
            governors[g] = governors.get(g, 0) + 1
    governor = (next(iter(governors)) if len(governors) == 1 else
                ", ".join(f"{g} on {n} cpus" for g, n in governors.items()) if governors else
                "unavailable (no /sys/devices/system/cpu/*/cpufreq: a virtual machine, or no cpufreq driver)")
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo") or "")
    return {
        "model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "physical_cores": len(physical) or None,
        "sockets": len(sockets) or None,
        "simd_flags": [f for f in SIMD_FLAGS if f in flags],
        "flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16] if flags else None,
        "governor": governor,
        "scaling_driver": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver"),
        "max_mhz": int(max_khz) / 1000 if max_khz and max_khz.isdigit() else None,
        "turbo": (no_turbo == "0") if no_turbo in ("0", "1") else (boost == "1") if boost in ("0", "1") else None,
        "memory_bytes": int(mem.group(1)) * 1024 if mem else None,
    }


def machine_id(hostname: str, cpu: dict) -> str:
    """12 hex digits naming this machine: host name, CPU model, logical cores and the full CPU flag list.

    Two hosts whose CPUs share a marketing name differ in host name (and often in cores or flags), so
    their rows are never drawn as one machine.
    """
    text = "\x1f".join(str(v) for v in (hostname, cpu.get("model"), cpu.get("logical_cores"), cpu.get("flags_sha256")))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def collect(device: str | None = None) -> dict:
    """The environment record as a dict (JSON-ready). ``device`` None: record the GPU when there is one."""
    cpu = cpu_info()
    rec: dict = {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "machine_id": machine_id(platform.node(), cpu),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu": cpu,
        "git": git_info(),
        "packages": package_versions(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "cupy": _version("cupy"),
        "pandas": _version("pandas"),
        "matplotlib": _version("matplotlib"),
    }
    # JAX's settings (precision, memory sharing) join precision_flags when a run used it (reference_impl)
    rec["jax_versions"] = jax_versions()
    ok, why = gpu_available()
    rec["gpu_available"] = ok
    if not ok:
        rec["gpu_unavailable_reason"] = why
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else None
        if cfg:
            rec["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    except Exception:
        pass
    try:
        import torch

        rec["torch_threads"] = torch.get_num_threads()
        rec["torch_cuda"] = torch.version.cuda
        rec["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        rec["precision_flags"] = {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch.backends.cudnn.benchmark": torch.backends.cudnn.benchmark,
            "CUPY_TF32": os.environ.get("CUPY_TF32", "0"),
            "CUSTOM_GPU_GRAPH": os.environ.get("CUSTOM_GPU_GRAPH", "1"),
        }
    except Exception:
        pass
    if ok and device != "cpu":
        try:
            import cupy

            dev = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(dev.id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            rec["gpu"] = {
                "name": name,
                "compute_capability": f"{props['major']}.{props['minor']}",
                "sms": props["multiProcessorCount"],
                "memory_bytes": props["totalGlobalMem"],
                "l2_bytes": props.get("l2CacheSize"),
                "clock_khz": props.get("clockRate"),
                "memory_clock_khz": props.get("memoryClockRate"),
                "peak_fp32_tflops": peak_fp32_tflops(name),
            }
            rec["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            rec["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception as err:
            rec["gpu_error"] = f"{type(err).__name__}: {err}"
        smi = _nvidia_smi()
        if smi:
            rec["nvidia_smi"] = smi
        from .nvml import snapshot

        rec["nvml"] = snapshot()
    # NOTE: last: threadpoolctl sees the thread pools of the libraries loaded by now (NumPy's BLAS, torch's)
    rec["threads"] = thread_settings()
    return rec


def write(path: str, rec: dict) -> None:
    """Write the record to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    write_json(path, rec)


def write_run(folder: str, rec: dict, earlier: dict | None) -> None:
    """Write a run's ``folder/env.json``: ``rec`` with a resumed run's ``earlier`` record folded in
    (``carry_over``), its warnings printed on stderr."""
    for warning in carry_over(rec, earlier):
        print(f"harness: warning: {warning}", file=sys.stderr)
    write(os.path.join(folder, "env.json"), rec)


def earlier_record(folder: str) -> dict | None:
    """The env.json a resumed run finds in ``folder`` (written by its earlier calls), or None: when the
    folder has no results.csv rows yet (a fresh run, whatever env.json lies there), no env.json, or one
    that cannot be read (a warning says so; the new record then stands alone)."""
    results, path = os.path.join(folder, "results.csv"), os.path.join(folder, "env.json")
    try:
        with open(results, "rb") as fh:
            fh.readline()
            if not fh.readline().strip():       # header only: nothing was measured before
                return None
    except OSError:
        return None
    if not os.path.exists(path):
        return None
    try:
        return read(path)
    except DamagedFile as err:
        print(f"harness: warning: {err}; the record of this call replaces it", file=sys.stderr)
        return None


def carry_over(rec: dict, earlier: dict | None) -> list[str]:
    """Fold a resumed run's earlier record into this call's ``rec`` (in place); returns warnings to print.

    A run resumed over several calls is one run: its env.json must still name what the earlier calls used.
    ``precision_flags`` keeps the earlier calls' keys that this call did not set (JAX's settings are read
    only once a JAX model was built in the process, which a call that resumes past the JAX rows never
    does); a key whose value changed between calls is kept as this call's value and listed under
    ``precision_flags_changed`` (key -> [earlier, now]); ``earlier_calls`` lists when, on which host and at
    which commit each earlier call ran.
    """
    if not earlier:
        return []
    warnings = []
    old_flags = earlier.get("precision_flags") if isinstance(earlier.get("precision_flags"), dict) else {}
    new_flags = rec.get("precision_flags") if isinstance(rec.get("precision_flags"), dict) else {}
    changed = dict(earlier["precision_flags_changed"]) if isinstance(earlier.get("precision_flags_changed"), dict) \
        else {}
    for key, value in old_flags.items():
        if key not in new_flags:
            new_flags[key] = value
        elif new_flags[key] != value:
            changed[key] = [value, new_flags[key]]
    if new_flags:
        rec["precision_flags"] = new_flags
    if changed:
        rec["precision_flags_changed"] = changed
        warnings.append("the precision settings changed between the calls of this resumed run ("
                        + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
                        + "); env.json lists them under precision_flags_changed")
    calls = list(earlier["earlier_calls"]) if isinstance(earlier.get("earlier_calls"), list) else []
    calls.append({"timestamp_utc": earlier.get("timestamp_utc"), "hostname": earlier.get("hostname"),
                  "machine_id": earlier.get("machine_id"), "commit": commit_text(earlier)})
    rec["earlier_calls"] = calls
    if commit_text(earlier) and commit_text(earlier) != commit_text(rec):
        warnings.append(f"this resumed run's earlier rows were measured at commit {commit_text(earlier)}, "
                        f"these at {commit_text(rec) or 'an unknown commit'}; env.json lists each call "
                        "under earlier_calls")
    return warnings


def read(path: str) -> dict:
    """The record in ``path``; io.DamagedFile naming the file, the line and the fix when it is not one."""
    return read_json_object(path, "env.json", "delete it: `harness run` with the same --out writes it again "
                                              "(finished rows are kept)")


def commit_text(rec: dict) -> str:
    """The record's git commit, shortened, as reports name it: "1a2b3c4d5e", "1a2b3c4d5e (uncommitted
    changes)" when the tree was dirty, or "" when none is recorded."""
    git = rec.get("git") if isinstance(rec.get("git"), dict) else {}
    commit = str(git.get("commit") or "")[:10]
    return commit + (" (uncommitted changes)" if commit and git.get("dirty") else "")
