"""The environment record (env.json): what machine, libraries and precision settings a run used.

``write`` replaces env.json atomically (a kill leaves the old record or the new one); ``read`` is the
strict reader (a JSON object, UTF-8), raising ``io.DamagedFile`` with the fix.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess

from .io import read_json_object, write_json

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


def collect(device: str | None = None) -> dict:
    """The environment record as a dict (JSON-ready). ``device`` None: record the GPU when there is one."""
    rec: dict = {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
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
    return rec


def write(path: str, rec: dict) -> None:
    """Write the record to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    write_json(path, rec)


def read(path: str) -> dict:
    """The record in ``path``; io.DamagedFile naming the file, the line and the fix when it is not one."""
    return read_json_object(path, "env.json", "delete it: `harness run` with the same --out writes it again "
                                              "(finished rows are kept)")
