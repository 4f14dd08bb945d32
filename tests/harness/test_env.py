"""The environment record (harness/env.py) and the per-row GPU readings (harness/nvml.py).

NVML is replaced by a fake ``pynvml`` module (the same functions, answering from a script of readings),
so the logic that turns readings into a row's columns is checked on any machine; without the module,
everything is recorded as unavailable with the install command, never an error.
"""
from __future__ import annotations

import sys
import types

import pytest

from harness import env, nvml


def fake_pynvml(readings, bus="00000000:3B:00.0", energy_step_mj=300.0):
    """A pynvml stand-in with one GPU; ``readings``: [(sm MHz, mem MHz, reason mask)], one per read."""
    m = types.ModuleType("pynvml")
    state = {"i": -1, "energy": 1e6}
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: "h0"
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=bus.encode())

    def clock(h, kind):
        if kind == m.NVML_CLOCK_SM:        # the SM clock is read first in every reading: advance the script
            state["i"] = min(state["i"] + 1, len(readings) - 1)
            state["energy"] += energy_step_mj
        return readings[state["i"]][0 if kind == m.NVML_CLOCK_SM else 1]

    m.nvmlDeviceGetClockInfo = clock
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: readings[state["i"]][2]
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: state["energy"]
    m.nvmlDeviceGetPowerUsage = lambda h: 350_000
    m.nvmlDeviceGetName = lambda h: b"Fake H100"
    m.nvmlSystemGetDriverVersion = lambda: "580.1"
    m.nvmlDeviceGetMaxClockInfo = lambda h, k: 1980
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    m.nvmlDeviceGetTemperature = lambda h, k: 41
    return m


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(nvml, "_cuda_bus_id", lambda: None)   # one NVML device: it is the one


def test_monitor_turns_readings_into_row_columns(monkeypatch, no_cupy):
    sw_power_cap, idle = nvml.REASON_BITS["sw_power_cap"], nvml.REASON_BITS["gpu_idle"]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(1980, 2619, 0), (1755, 2619, sw_power_cap),
                                                            (1980, 2619, idle)]))
    mon = nvml.GpuMonitor()
    assert mon.available, mon.reason
    mon.start_row()
    mon.sample(force=True)
    mon.sample(force=True)
    cols = mon.finish_row()           # a third reading, forced at the end of the row
    assert cols["sm_clock_mhz"] == 1980.0 and cols["mem_clock_mhz"] == 2619.0     # medians
    assert cols["throttled"] is True and cols["throttle_reasons"] == "sw_power_cap"
    assert cols["power_w"] > 0        # 300 mJ per reading over the time between the first and the last
    mon.start_row()
    cols = mon.finish_row()           # idle only: not throttling
    assert cols["throttled"] is False and cols["throttle_reasons"] == ""
    mon.close()


def test_monitor_matches_cuda_device_by_bus_id(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(1, 1, 0)], bus="00000000:3B:00.0"))
    monkeypatch.setattr(nvml, "_cuda_bus_id", lambda: "0000:3b:00.0")
    assert nvml.GpuMonitor().available
    monkeypatch.setattr(nvml, "_cuda_bus_id", lambda: "0000:5e:00.0")
    mon = nvml.GpuMonitor()
    assert not mon.available and "PCI bus id" in mon.reason
    assert mon.finish_row() == {"sm_clock_mhz": None, "mem_clock_mhz": None, "power_w": None, "throttled": None,
                                "throttle_reasons": ""}


def test_without_pynvml_everything_is_unavailable_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)      # import fails
    mon = nvml.GpuMonitor()
    assert not mon.available and "nvidia-ml-py" in mon.reason
    mon.start_row()
    mon.sample()
    assert mon.finish_row()["throttled"] is None
    snap = nvml.snapshot()
    assert snap["available"] is False and "nvidia-ml-py" in snap["reason"]


def test_snapshot_with_nvml(monkeypatch, no_cupy):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(345, 1593, nvml.REASON_BITS["gpu_idle"])]))
    snap = nvml.snapshot()
    assert snap["available"] and snap["name"] == "Fake H100" and snap["power_limit_w"] == 700.0
    assert snap["clock_reasons_now"] == ["gpu_idle"] and snap["max_sm_clock_mhz"] == 1980


def test_env_record_fields_and_machine_id():
    rec = env.collect("cpu")
    for key in ("git", "packages", "threads", "cpu", "machine_id", "hostname", "cpu_model", "cpu_cores"):
        assert key in rec, key
    assert "nvml" not in rec                          # a CPU record says nothing of a GPU
    git = rec["git"]
    assert (git["available"] and len(git["commit"]) == 40 and isinstance(git["dirty"], bool)) or git["reason"]
    cpu = rec["cpu"]
    assert cpu["logical_cores"] >= cpu["usable_cores"] >= 1 and cpu["governor"]
    assert rec["threads"]["custom_cpu_threads"] >= 1 and "OMP_NUM_THREADS" in rec["threads"]["env"]
    assert rec["packages"]["numpy"] and rec["packages"]["scipy"]
    # two hosts with one CPU name are different machines; the same host is the same machine
    assert env.machine_id("host-a", cpu) != env.machine_id("host-b", cpu)
    assert env.machine_id("host-a", cpu) == env.machine_id("host-a", dict(cpu))
    assert env.machine_id("host-a", cpu) != env.machine_id("host-a", dict(cpu, logical_cores=64))


def test_git_outside_a_checkout(tmp_path):
    info = env.git_info(str(tmp_path))
    assert info["available"] is False and info["reason"]
