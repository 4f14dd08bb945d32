"""Words for what the report shows: readable names of workloads, variants, phases and machines.

The results keep machine-friendly ids (``conv_N16_C128_H16_W16_K128_R3_S3_st1_pad1``, ``custom/numpy``);
tables and plots show these instead:

>>> workload_label("conv_N16_C128_H16_W16_K128_R3_S3_st1_pad1")
'conv 3x3 128->128, 16x16, N=16'
>>> variant_label("custom", "numpy")
'ours (NumPy)'
>>> phase_label("backward_weights")
'backward (weights)'
>>> workload_label("dense_M64_N128_K784 [bf16]")
'dense 784->128, M=64 [bf16]'

A machine is identified by more than its marketing name: two hosts both called "Intel(R) Xeon(R)
Processor" are two machines (``machine_key``).
"""
from __future__ import annotations

import re

# ============================================================================ workloads
_DENSE = re.compile(r"dense_M(\d+)_N(\d+)_K(\d+)\Z")
# a conv's stride and padding are one number when both axes agree, "HxW" when they differ (st2x1_pad10x5)
_CONV = re.compile(r"conv_N(\d+)_C(\d+)_H(\d+)_W(\d+)_K(\d+)_R(\d+)_S(\d+)_st(\d+)(?:x(\d+))?_pad(\d+)(?:x(\d+))?\Z")
_POOL = re.compile(r"(max|avg)pool_N(\d+)_C(\d+)_H(\d+)_W(\d+)_R(\d+)_S(\d+)_st(\d+)\Z")
# The report names rows of another precision than strict FP32 "<workload> [tf32]" / "<workload> [bf16]"
_PRECISION_TAG = re.compile(r"(.+) \[(tf32|bf16)\]\Z")


def split_precision(workload: str) -> tuple[str, str]:
    """(workload id, precision) of a report workload name: "mlp-mnist [bf16]" -> ("mlp-mnist", "bf16");
    an untagged name is strict FP32.

    >>> split_precision("mlp-mnist [bf16]"), split_precision("mlp-mnist")
    (('mlp-mnist', 'bf16'), ('mlp-mnist', 'fp32'))
    """
    m = _PRECISION_TAG.match(workload)
    return (m.group(1), m.group(2)) if m else (workload, "fp32")


def pair_text(pair: tuple[int, int]) -> str:
    """A conv's (height, width) stride or padding as workload ids and labels write it: one number when
    both axes agree.

    >>> pair_text((2, 2)), pair_text((10, 5))
    ('2', '10x5')
    """
    a, b = pair
    return str(a) if a == b else f"{a}x{b}"


def parse_workload(workload: str) -> dict | None:
    """The layer shape behind a layer workload id, or None (a model name, or an id of another form). A
    conv's stride and padding come back as (height, width) pairs.

    >>> parse_workload("dense_M64_N128_K784")
    {'kind': 'dense', 'M': 64, 'N': 128, 'K': 784}
    >>> parse_workload("conv_N16_C1_H161_W700_K32_R41_S11_st2_pad20x5")["padding"]
    (20, 5)
    """
    m = _DENSE.match(workload)
    if m:
        return {"kind": "dense", **dict(zip("MNK", map(int, m.groups())))}
    m = _CONV.match(workload)
    if m:
        g = m.groups()
        d = dict(zip(("N", "C", "H", "W", "K", "R", "S"), map(int, g[:7])))
        sh, sw, ph, pw = (int(v) if v is not None else None for v in g[7:])
        return {"kind": "conv2d", **d, "stride": (sh, sh if sw is None else sw),
                "padding": (ph, ph if pw is None else pw)}
    m = _POOL.match(workload)
    if m:
        keys = ("N", "C", "H", "W", "R", "S", "stride")
        return {"kind": "pool", "mode": m.group(1), **dict(zip(keys, map(int, m.groups()[1:])))}
    return None


def workload_label(workload: str, with_batch: bool = True) -> str:
    """A layer id in words (kernel, channels in -> out, spatial size, batch); model names are kept; a
    precision tag (" [bf16]") stays at the end."""
    base, precision = split_precision(workload)
    if precision != "fp32":
        return f"{workload_label(base, with_batch)} [{precision}]"
    p = parse_workload(workload)
    if p is None:
        return workload
    if p["kind"] == "dense":
        text = f"dense {p['K']}->{p['N']}"
        return text + (f", M={p['M']}" if with_batch else "")
    if p["kind"] == "conv2d":
        kernel = f"{p['R']}x{p['S']}" + (f"/{pair_text(p['stride'])}" if p["stride"] != (1, 1) else "")
        text = f"conv {kernel} {p['C']}->{p['K']}, {p['H']}x{p['W']}"
        if p["padding"] != (p["R"] // 2, p["S"] // 2):
            text += f" pad {pair_text(p['padding'])}"
        return text + (f", N={p['N']}" if with_batch else "")
    window = f"{p['R']}x{p['S']}" + (f"/{p['stride']}" if p["stride"] != p["R"] else "")
    text = f"{p['mode']}pool {window}, {p['C']}ch {p['H']}x{p['W']}"
    return text + (f", N={p['N']}" if with_batch else "")


# ============================================================================ variants and phases
_VARIANTS = {
    ("custom", "numpy"): "ours (NumPy)",
    ("custom", "cuda"): "ours (CUDA, eager)",
    ("custom", "cuda-graph"): "ours (CUDA graph)",
    ("reference", "torch-eager"): "PyTorch eager",
    ("reference", "torch-graph"): "PyTorch CUDA graph",
    ("reference", "torch-compile"): "PyTorch compile",
    ("reference", "torch"): "PyTorch",
    ("reference", "jax-jit"): "JAX jit",
}
_PHASES = {
    "inference": "inference",
    "forward_backward": "forward+backward",
    "train_step": "train step",
    "forward": "forward",
    "backward_data": "backward (data)",
    "backward_weights": "backward (weights)",
}
PHASE_ORDER = tuple(_PHASES)
KIND_LABELS = {"model": "models", "dense": "dense layers", "conv2d": "conv2d layers", "pool": "pooling layers"}


def variant_label(impl: str, variant: str, device: str = "") -> str:
    """``custom/numpy`` -> ``ours (NumPy)``; an unknown reference variant keeps its name (``tf-xla``)."""
    if (impl, variant) == ("reference", "torch"):
        return {"gpu": "PyTorch (cuBLAS/cuDNN)", "cpu": "PyTorch CPU"}.get(device, "PyTorch")
    if (impl, variant) in _VARIANTS:
        return _VARIANTS[(impl, variant)]
    if impl == "custom":
        return f"ours ({variant})"
    return variant if impl in ("reference", "") else f"{impl} {variant}"


def side_label(impl: str, variant: str = "", device: str = "") -> str:
    """Whose code a row times, and where: ``ours GPU``, ``PyTorch CPU``, ``JAX GPU``.

    >>> side_label("reference", "jax-jit", "gpu")
    'JAX GPU'
    """
    if impl == "custom":
        who = "ours"
    elif impl == "reference":
        who = "JAX" if variant.startswith("jax") else "PyTorch"
    else:
        who = impl or "-"
    return f"{who} {device_label(device)}".strip()


def phase_label(phase: str) -> str:
    return _PHASES.get(phase, phase.replace("_", " "))


def device_label(device: str) -> str:
    return {"gpu": "GPU", "cpu": "CPU"}.get(device, device)


# ============================================================================ machines
def machine_key(env: dict | None, device: str, device_name: str = "") -> str:
    """What identifies the machine a row ran on: env.json's ``machine_id`` when it has one, else its
    (device name, host, core count); never the marketing name alone when more is known.

    >>> machine_key({"cpu_model": "Xeon", "hostname": "a", "cpu_cores": 16}, "cpu")
    'cpu|Xeon|a|16'
    """
    env = env or {}
    if env.get("machine_id"):
        return f"{device}|{env['machine_id']}"
    name = device_name or _device_name(env, device)
    return "|".join(str(x) for x in (device, name, env.get("hostname", ""), env.get("cpu_cores", "")))


def _device_name(env: dict, device: str) -> str:
    if device == "gpu":
        gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
        return str(gpu.get("name") or env.get("device_name") or "GPU")
    return str(env.get("cpu_model") or env.get("device_name") or "CPU")


def machine_label(env: dict | None, device: str, device_name: str = "") -> str:
    """A short readable name: ``NVIDIA H100 80GB HBM3`` or ``AMD EPYC, 2 cores`` (+ the host when known);
    "" when nothing about the machine was recorded."""
    env = env or {}
    if not env and not device_name:
        return ""                   # a pytest-benchmark file without env.json: nothing recorded
    name = device_name or _device_name(env, device)
    name = re.sub(r"\((R|TM)\)", "", name).replace("  ", " ").strip()
    parts = [name]
    if device == "cpu" and env.get("cpu_cores"):
        parts.append(f"{env['cpu_cores']} cores")
    if env.get("hostname"):
        parts.append(f"host {env['hostname']}")
    return ", ".join(parts)
