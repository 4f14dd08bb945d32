"""The GPU's clocks, power and throttling through NVML (``nvidia-ml-py``, imported as ``pynvml``).

Two uses:
- ``snapshot()``: the GPU part of env.json (driver, clocks now and at most, power limits, temperature,
  performance state, persistence mode, the clock limits active now). Taken when the record is written,
  usually with the GPU idle, so its clocks say little about the rows: those are read per row.
- ``GpuMonitor``: per-row readings while a row is timed. ``sample()`` runs after each timed sample
  (outside the timed region; at most one NVML read per ``MIN_INTERVAL_S``) and reads the SM and memory
  clocks, the active clock-limit reasons and the energy counter; ``finish_row()`` turns them into the
  row's ``sm_clock_mhz``, ``mem_clock_mhz`` (medians), ``power_w`` (energy used / time between the first
  and the last reading; the instantaneous reading when there is only one) and ``throttled``.

A row is ``throttled`` when any reading shows a power or thermal limit holding the clocks down
(``THROTTLE_REASONS``: software power cap, hardware slowdown, software or hardware thermal slowdown,
power brake). Idle, application-clock settings, sync boost and display clocks are not throttling.

Without ``pynvml``, without an NVIDIA driver, or when NVML cannot match the CUDA device, everything here
says why in ``reason`` and the columns stay empty; it never raises.
"""
from __future__ import annotations

import time

MIN_INTERVAL_S = 0.01   # an NVML read costs tens of microseconds of host time; 100 reads per second at most

# NVML's clocks-event (throttle) reason bits (nvml.h, nvmlClocksEventReason*), by the names used here.
REASON_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal": 0x20,
    "hw_thermal": 0x40,
    "hw_power_brake": 0x80,
    "display_clock_setting": 0x100,
}
THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake")
_THROTTLE_MASK = sum(REASON_BITS[n] for n in THROTTLE_REASONS)
INSTALL_HINT = ("install nvidia-ml-py (import name pynvml), e.g. with the GPU extra: python3 -m pip install -e "
                "\".[gpu-cuda12]\" (or \".[gpu-cuda13]\")")


def reason_names(mask: int) -> list[str]:
    """The names of the reason bits set in ``mask``, in ``REASON_BITS`` order."""
    return [name for name, bit in REASON_BITS.items() if mask & bit]


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _norm_bus_id(bus: str) -> str:
    """'00000000:3B:00.0' and '0000:3b:00.0' -> '3b:00.0' (the domain's width differs between APIs)."""
    bus = _text(bus).strip().lower()
    parts = bus.split(":")
    if len(parts) == 3:
        domain = parts[0].lstrip("0") or "0"
        return f"{domain}:{parts[1]}:{parts[2]}"
    return bus


def _cuda_bus_id() -> str | None:
    try:
        import cupy

        return _text(cupy.cuda.Device().pci_bus_id)
    except Exception:
        return None


class _Nvml:
    """pynvml, initialised, with the handle of the GPU CUDA uses; ``error`` says why not when it is None."""

    def __init__(self):
        self.nv = self.handle = None
        self.error = ""
        try:
            import pynvml
        except Exception as err:
            self.error = f"pynvml cannot be imported ({type(err).__name__}: {err}); {INSTALL_HINT}"
            return
        try:
            pynvml.nvmlInit()
        except Exception as err:
            self.error = f"NVML does not initialise ({type(err).__name__}: {err}); is an NVIDIA driver loaded?"
            return
        self.nv = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            bus = _cuda_bus_id()
            if bus is not None:
                want = _norm_bus_id(bus)
                match = [h for h in handles if _norm_bus_id(pynvml.nvmlDeviceGetPciInfo(h).busId) == want]
                self.handle = match[0] if match else None
                if self.handle is None:
                    self.error = f"no NVML device has the PCI bus id of CUDA's device ({bus})"
            elif count == 1:
                self.handle = handles[0]
            else:
                self.error = f"CuPy names no device and NVML sees {count}; cannot tell which one runs the rows"
        except Exception as err:
            self.error = f"NVML device query failed ({type(err).__name__}: {err})"
        if self.handle is None:
            self.close()

    def call(self, name: str, *args):
        """``pynvml.<name>(handle, *args)``, or None when this driver or GPU does not support it."""
        fn = getattr(self.nv, name, None)
        if fn is None:
            return None
        try:
            return fn(self.handle, *args)
        except Exception:
            return None

    def reasons(self):
        """The active clocks-event reason bitmask (the call was renamed in NVML 12.2)."""
        got = self.call("nvmlDeviceGetCurrentClocksEventReasons")
        return got if got is not None else self.call("nvmlDeviceGetCurrentClocksThrottleReasons")

    def close(self) -> None:
        if self.nv is not None:
            try:
                self.nv.nvmlShutdown()
            except Exception:
                pass
        self.nv = self.handle = None


def snapshot() -> dict:
    """The GPU as NVML sees it now: {"available": True, ...} or {"available": False, "reason": ...}."""
    n = _Nvml()
    if n.handle is None:
        return {"available": False, "reason": n.error}
    try:
        nv = n.nv
        sm, mem = nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM
        mw = lambda v: None if v is None else v / 1000.0   # noqa: E731 - NVML reports milliwatts
        reasons = n.reasons()
        pci = n.call("nvmlDeviceGetPciInfo")
        out = {
            "available": True,
            "note": "read when env.json was written (the GPU usually idle); per-row clocks, power and throttling "
                    "are in results.csv",
            "name": _text(n.call("nvmlDeviceGetName") or ""),
            "pci_bus_id": _text(pci.busId) if pci is not None else None,
            "driver_version": _text(nv.nvmlSystemGetDriverVersion()),
            "nvml_version": _text(nv.nvmlSystemGetNVMLVersion()) if hasattr(nv, "nvmlSystemGetNVMLVersion") else None,
            "sm_clock_mhz": n.call("nvmlDeviceGetClockInfo", sm),
            "mem_clock_mhz": n.call("nvmlDeviceGetClockInfo", mem),
            "max_sm_clock_mhz": n.call("nvmlDeviceGetMaxClockInfo", sm),
            "max_mem_clock_mhz": n.call("nvmlDeviceGetMaxClockInfo", mem),
            "applications_sm_clock_mhz": n.call("nvmlDeviceGetApplicationsClock", sm),
            "applications_mem_clock_mhz": n.call("nvmlDeviceGetApplicationsClock", mem),
            "power_w": mw(n.call("nvmlDeviceGetPowerUsage")),
            "power_limit_w": mw(n.call("nvmlDeviceGetEnforcedPowerLimit")),
            "default_power_limit_w": mw(n.call("nvmlDeviceGetPowerManagementDefaultLimit")),
            "temperature_c": n.call("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU),
            "performance_state": n.call("nvmlDeviceGetPerformanceState"),
            "persistence_mode": n.call("nvmlDeviceGetPersistenceMode"),
            "clock_reasons_now": None if reasons is None else reason_names(reasons),
        }
        return out
    except Exception as err:
        return {"available": False, "reason": f"NVML query failed ({type(err).__name__}: {err})"}
    finally:
        n.close()


class GpuMonitor:
    """Per-row NVML readings of the GPU that runs the rows (see the module docstring).

    >>> mon = GpuMonitor()                    # doctest: +SKIP
    >>> mon.start_row(); measure(fn, "cupy", on_sample=mon.sample); cols = mon.finish_row()   # doctest: +SKIP
    >>> cols["throttled"], cols["sm_clock_mhz"]    # doctest: +SKIP
    (False, 1980.0)
    """

    def __init__(self):
        self._n = _Nvml()
        self.available = self._n.handle is not None
        self.reason = self._n.error
        self._readings: list[tuple] = []
        self._last = -1.0

    def start_row(self) -> None:
        self._readings = []
        self._last = -1.0

    def sample(self, force: bool = False) -> None:
        """Read clocks, reasons, energy and power now (at most once per MIN_INTERVAL_S unless ``force``)."""
        if not self.available:
            return
        now = time.perf_counter()
        if not force and self._last >= 0 and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        n = self._n
        self._readings.append((now, n.call("nvmlDeviceGetClockInfo", n.nv.NVML_CLOCK_SM),
                               n.call("nvmlDeviceGetClockInfo", n.nv.NVML_CLOCK_MEM), n.reasons(),
                               n.call("nvmlDeviceGetTotalEnergyConsumption"), n.call("nvmlDeviceGetPowerUsage")))

    def finish_row(self) -> dict:
        """The row's columns: sm_clock_mhz, mem_clock_mhz, power_w, throttled, throttle_reasons."""
        empty = {"sm_clock_mhz": None, "mem_clock_mhz": None, "power_w": None, "throttled": None,
                 "throttle_reasons": ""}
        if not self.available:
            return empty
        self.sample(force=True)
        r = self._readings
        out = dict(empty)
        for i, col in ((1, "sm_clock_mhz"), (2, "mem_clock_mhz")):
            vals = sorted(x[i] for x in r if x[i] is not None)
            if vals:
                mid = len(vals) // 2
                out[col] = float(vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2)
        masks = [x[3] for x in r if x[3] is not None]
        if masks:
            seen = 0
            for m in masks:
                seen |= int(m) & _THROTTLE_MASK
            out["throttled"] = bool(seen)
            out["throttle_reasons"] = ";".join(reason_names(seen))
        energy = [(x[0], x[4]) for x in r if x[4] is not None]
        if len(energy) >= 2 and energy[-1][0] > energy[0][0] and energy[-1][1] >= energy[0][1]:
            # NVML's energy counter is in millijoules since the driver loaded
            out["power_w"] = (energy[-1][1] - energy[0][1]) / 1e3 / (energy[-1][0] - energy[0][0])
        elif r and r[-1][5] is not None:
            out["power_w"] = r[-1][5] / 1e3
        return out

    def close(self) -> None:
        self._n.close()
        self.available = False
