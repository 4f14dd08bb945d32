"""Suites: TOML files that list what to measure, parsed and validated into a flat list of jobs.

A suite file (``harness/suites/<name>.toml``, or any path) has::

    name = "quick"
    description = "what it is for"
    [settings]                      # timing knobs, all optional (defaults in DEFAULT_SETTINGS)
    budget_s = 0.1
    [[models]]                      # zoo models x batch sizes x phases
    models = ["mlp-mnist"]
    batches = [1, 64]
    phases = ["inference", "forward_backward", "train_step"]
    variants = ["numpy", "torch-eager"]   # optional; default: every variant of the device but OPT_IN's
    devices = ["cpu"]                     # optional; the section is skipped on other devices
    precisions = ["fp32", "bf16"]         # optional, default ["fp32"]; tf32 / bf16 rows exist on the GPU only
    [[dense]]                       # DeepBench-style GEMM shapes [M, N, K]: x (M, K), W (N, K) -> y (M, N)
    shapes = [[64, 128, 784]]
    batches = [16, 64]              # optional: every shape at these batch sizes (M here, N in conv / pool)
    zoo_models = ["mlp-mnist"]      # plus every dense layer of these models ...
    zoo_batches = [64, 1024]        # ... at these batch sizes
    [[conv2d]]                      # [N, C, H, W, K, R, S, stride, padding], or with a stride / padding
    shapes = [[64, 3, 32, 32, 32, 3, 3, 1, 1],   # per axis [N, C, H, W, K, R, S, stride_h, stride_w,
              [16, 1, 161, 700, 32, 41, 11, 2, 2, 20, 5]]   # padding_h, padding_w]
    [[pool]]                        # [N, C, H, W, R, S, stride]
    mode = "max"                    # max | avg
    shapes = [[64, 32, 32, 32, 2, 2, 2]]
    [[train]]                       # end-to-end training (``harness train``; ``harness run`` runs it last)
    datasets = ["digits"]           # digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, synthetic-mnist[:N], ...
    models = ["digits-mlp"]         # optional: default, the dataset's models; the rest optional too:
    batches = [32]                  # batches, variants, seeds, epochs, lr, momentum, target_acc, devices

Anything unknown or malformed raises ``SuiteError`` naming the file, the section, the field and the fix:
every setting is checked for type, finiteness and range (``check_setting``, also for command-line
overrides; ``check_peak_tflops``), the suite name must be a plain folder name (it names the output
folder), and two different specs with one name in a suite are refused. ``Suite.select_models`` keeps
the models a ``--models`` option names and refuses names the suite does not list.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from importlib import resources
from typing import Any

import modelspec

from .labels import pair_text

DEVICES = ("cpu", "gpu")
# custom_impl.PRECISIONS / reference_impl.PRECISIONS (a test keeps them equal); on the CPU only fp32 runs
PRECISIONS = ("fp32", "tf32", "bf16")
DEVICE_PRECISIONS = {"cpu": ("fp32",), "gpu": PRECISIONS}
MODEL_PHASES = ("inference", "forward_backward", "train_step")
LAYER_PHASES = ("forward", "backward_data", "backward_weights")
POOL_PHASES = ("forward", "backward_data")
SECTIONS = ("models", "dense", "conv2d", "pool")

# (kind, device) -> {impl: variants}. Graph variants exist for some phases only (GRAPH_PHASES).
# jax-jit: the reference in JAX (XLA), every phase one jitted function (reference_impl.build(framework="jax")).
VARIANTS = {
    ("model", "cpu"): {"custom": ("numpy",), "reference": ("torch-eager", "torch-compile", "jax-jit")},
    ("model", "gpu"): {"custom": ("cuda", "cuda-graph"),
                       "reference": ("torch-eager", "torch-graph", "torch-compile", "jax-jit")},
    ("layer", "cpu"): {"custom": ("numpy",), "reference": ("torch", "jax-jit")},
    ("layer", "gpu"): {"custom": ("cuda",), "reference": ("torch", "jax-jit")},
}
# Graph variants: PyTorch's CUDA-graph helper covers the train step; ours graphs the train step and the
# inference forward (forward_backward is timed through the eager hooks, so it has no graph variant).
GRAPH_PHASES = {"cuda-graph": ("inference", "train_step"), "torch-graph": ("train_step",)}
# Only when a suite names them: torch.compile takes tens of seconds per row; jax-jit needs JAX installed
# and compiles each row for a second or so (its rows are "unsupported", with the install command, without JAX).
OPT_IN = ("torch-compile", "jax-jit")
RUN_LAST = ("torch-compile",)   # see Suite.jobs
# Variants that compute in strict FP32 only: at tf32 / bf16 they make no rows (JAX runs Precision.HIGHEST).
FP32_ONLY = ("jax-jit",)
ALL_VARIANTS = sorted({v for d in VARIANTS.values() for vs in d.values() for v in vs})

DEFAULT_SETTINGS: dict[str, Any] = {
    "warmup": 2,              # untimed calls per row (compilation, autotuning, graph capture)
    "budget_s": 0.3,          # time spent taking samples per row
    "min_repeats": 5,
    "max_repeats": 200,
    "min_sample_ms": 1.0,     # calls per sample are chosen so a sample lasts at least this long
    "noise_threshold": 0.10,  # iqr/median above this marks the row noisy
    "cold_l2": False,         # overwrite a buffer larger than L2 before every sample (GPU only)
    "time_limit_s": 0,        # stop starting new rows after this long (0: no limit); rerun to resume
    "seed": 0,
    "lr": 0.01,
    "momentum": 0.9,
}

SECTION_KEYS = {
    "models": {"models", "batches", "phases", "variants", "devices", "precisions"},
    "dense": {"shapes", "batches", "zoo_models", "zoo_batches", "phases", "variants", "devices", "precisions"},
    "conv2d": {"shapes", "batches", "zoo_models", "zoo_batches", "phases", "variants", "devices", "precisions"},
    "pool": {"shapes", "batches", "zoo_models", "zoo_batches", "phases", "variants", "devices", "mode"},
}
SHAPE_FIELDS = {
    "dense": ("M", "N", "K"),
    "conv2d": ("N", "C", "H", "W", "K", "R", "S", "stride", "padding"),
    "pool": ("N", "C", "H", "W", "R", "S", "stride"),
}
# the 11-number form of a conv2d shape, for a stride or padding that differs between height and width
CONV_PAIR_FIELDS = ("N", "C", "H", "W", "K", "R", "S", "stride_h", "stride_w", "padding_h", "padding_w")


class SuiteError(ValueError):
    """A suite that cannot be run; the message names the file, the place and the fix."""


# What each setting accepts: (type, minimum, maximum, what it means). Numbers must be finite.
SETTING_RULES: dict[str, tuple[str, float, float, str]] = {
    "warmup": ("int", 0, 10**6, "untimed calls per row"),
    "budget_s": ("float", 0, 86400, "seconds of sampling per row"),
    "min_repeats": ("int", 1, 10**6, "timed samples at least"),
    "max_repeats": ("int", 1, 10**6, "timed samples at most"),
    "min_sample_ms": ("float", 0, 3.6e6, "milliseconds a sample lasts at least"),
    "noise_threshold": ("float", 0, 1e6, "iqr/median above which a row is noisy"),
    "cold_l2": ("bool", 0, 0, "flush L2 before every sample"),
    "time_limit_s": ("float", 0, 1e9, "seconds before no new row is started (0: no limit)"),
    "seed": ("int", 0, 2**32 - 1, "the random seed"),
    "lr": ("float", 0, 3.4e38, "the SGD learning rate (float32)"),
    "momentum": ("float", 0, 1, "the SGD momentum"),
}
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def check_setting(key: str, value, where: str) -> Any:
    """``value`` checked for ``key`` (type, finiteness, range); SuiteError with the fix otherwise.

    ``where`` names what the user wrote, e.g. "suites/x.toml: [settings]" or "--budget-s".
    >>> check_setting("budget_s", 0.5, "--budget-s")
    0.5
    """
    kind, lo, hi, meaning = SETTING_RULES[key]
    example = str(DEFAULT_SETTINGS[key]).lower()
    if kind == "bool":
        if not isinstance(value, bool):
            raise SuiteError(f"{where}: {key!r} ({meaning}) must be true or false, got {value!r}; e.g. {key} = {example}")
        return value
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        ok = is_num and (isinstance(value, int) or (math.isfinite(value) and value == int(value)))
        what = "a whole number"
    else:
        ok = is_num
        what = "a number"
    if not ok or not math.isfinite(value):
        raise SuiteError(f"{where}: {key!r} ({meaning}) must be {what} from {lo:g} to {hi:g}, got {value!r}; "
                         f"e.g. {key} = {example}")
    if not lo <= value <= hi:
        raise SuiteError(f"{where}: {key!r} ({meaning}) must be from {lo:g} to {hi:g}, got {value!r}; "
                         f"e.g. {key} = {example}")
    return int(value) if kind == "int" else value


def check_settings(settings: dict, where: str) -> dict:
    """Every setting checked (``check_setting``) and min_repeats <= max_repeats; returns the checked dict."""
    out = {k: check_setting(k, v, where) if k in SETTING_RULES else v for k, v in settings.items()}
    lo, hi = out.get("min_repeats", 1), out.get("max_repeats", 1)
    if lo > hi:
        raise SuiteError(f"{where}: min_repeats ({lo}) is larger than max_repeats ({hi}); raise max_repeats or "
                         "lower min_repeats")
    return out


def check_peak_tflops(value, where: str = "--peak-tflops"):
    """A device's FP32 peak: None, or a finite number > 0 (TFLOP/s)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SuiteError(f"{where}: the FP32 peak must be a positive number of TFLOP/s, got {value!r}; e.g. "
                         f"{where} 66.9 (H100 SXM), or leave it out")
    return float(value)


def _suggest(word, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class Job:
    """One row to measure (before it is measured). Model jobs carry ("spec", name or path) and
    ("spec_hash", ModelSpec.digest()) in ``params``."""

    kind: str          # model | dense | conv2d | pool
    workload: str      # model name or shape name
    batch: int
    phase: str
    impl: str
    variant: str
    device: str
    params: tuple = ()  # the layer shape as (field, value) pairs, or () for models
    precision: str = "fp32"   # fp32 | tf32 | bf16 (PRECISIONS)

    def p(self) -> dict:
        return dict(self.params)

    @property
    def spec_hash(self) -> str:
        """The digest of the model spec measured (results.csv's spec_hash); "" for layer rows."""
        return str(dict(self.params).get("spec_hash", ""))


@dataclasses.dataclass
class Suite:
    name: str
    description: str
    path: str
    settings: dict
    sections: list[tuple[str, dict]]
    train: list[dict] = dataclasses.field(default_factory=list)   # [[train]] sections (harness/train.py)

    def jobs(self, device: str) -> list[Job]:
        """Every row of the suite on ``device``, in file order (models first within a section)."""
        out: list[Job] = []
        seen = set()
        for kind, sec in self.sections:
            if device not in sec.get("devices", DEVICES):
                continue
            for job in _expand(kind, sec, device):
                k = (job.kind, job.workload, job.batch, job.phase, job.impl, job.variant, job.precision)
                if k not in seen:
                    seen.add(k)
                    out.append(job)
        # NOTE: torch.compile rows (tens of seconds of compilation each) go last, so that a time limit cuts
        # them rather than the rows the targets and the report rely on. jax-jit rows stay beside the other
        # rows of their model and batch, which share the data and the float64 parity baseline.
        return sorted(out, key=lambda j: j.variant in RUN_LAST)

    def set_precisions(self, precisions: list[str], where: str = "--precision") -> None:
        """Run every section that takes precisions (models, dense, conv2d) at ``precisions`` instead of its
        own list (pool sections are FP32 only); SuiteError for an unknown name."""
        checked = _str_list(where, "precisions", list(precisions), PRECISIONS)
        self.sections = [(kind, dict(sec, precisions=checked) if kind != "pool" else sec)
                         for kind, sec in self.sections]

    def model_names(self) -> list[str]:
        """Every entry of the suite's [[models]] sections (zoo names or spec paths), in file order."""
        return list(dict.fromkeys(m for kind, sec in self.sections if kind == "models" for m in sec["models"]))

    def select_models(self, names: list[str]) -> None:
        """Keep only ``names`` (zoo names, spec paths or spec names) in the [[models]] sections.

        Sections left without a model are dropped; layer sections stay. Raises SuiteError when a name
        matches no model of the suite (nothing would be measured for it).
        """
        have = self.model_names()
        spec_names = {m: (modelspec.load(m).name if m.endswith((".toml", ".json")) else m) for m in have}
        missing = [n for n in names if n not in have and n not in spec_names.values()]
        if missing:
            raise SuiteError(f"--models {','.join(missing)}: not in suite {self.name!r}, whose [[models]] sections "
                             f"list {', '.join(have) or 'no models'}; pick from those, or use a suite that lists "
                             "them (e.g. --suite cpu)")
        kept = []
        for kind, sec in self.sections:
            if kind == "models":
                sec = dict(sec, models=[m for m in sec["models"] if m in names or spec_names[m] in names])
                if not sec["models"]:
                    continue
            kept.append((kind, sec))
        self.sections = kept


def suite_names() -> list[str]:
    files = resources.files("harness").joinpath("suites")
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".toml"))


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (``harness/suites/<name>.toml``) or by path to a .toml file."""
    s = os.fspath(name_or_path)
    if s.endswith(".toml") or os.sep in s:
        if not os.path.isfile(s):
            raise SuiteError(f"suite file {s!r} does not exist; pass a path to a .toml file or one of the "
                             f"suite names: {', '.join(suite_names())}")
        path = s
        with open(path, "rb") as fh:
            raw = fh.read()
    else:
        names = suite_names()
        if s not in names:
            raise SuiteError(f"unknown suite {s!r}{_suggest(s, names)}; suites: {', '.join(names)}; "
                             "or pass a path to a .toml file")
        ref = resources.files("harness").joinpath("suites", f"{s}.toml")
        path = str(ref)
        raw = ref.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: not a valid TOML file: {err}; fix the syntax at that line") from None
    return parse_suite(data, path)


def parse_suite(data: dict, path: str = "<suite>") -> Suite:
    """Validate a suite dict (as read from TOML); raises SuiteError."""
    allowed_top = {"name", "description", "settings", "train", *SECTIONS}
    for key in data:
        if key not in allowed_top:
            raise SuiteError(f"{path}: unknown top-level key {key!r}{_suggest(key, allowed_top)}; "
                             f"allowed: {', '.join(sorted(allowed_top))}")
    default_name = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(path).removesuffix(".toml")).strip(".-")
    name = data.get("name", default_name or "suite")
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{path}: 'name' must be a non-empty string, got {name!r}")
    if not SUITE_NAME.match(name) or ".." in name:
        # NOTE: the name becomes a folder under reports/; a path in it could write anywhere.
        raise SuiteError(f"{path}: 'name' {name!r} must be letters, digits, '.', '_' or '-' (no '/', no '..', not "
                         "starting with '.'): it names the output folder reports/<name>-<device>; e.g. name = "
                         "\"my-suite\"")
    desc = data.get("description", "")
    settings = dict(DEFAULT_SETTINGS)
    given = data.get("settings", {})
    if not isinstance(given, dict):
        raise SuiteError(f"{path}: [settings] must be a table, got {given!r}")
    for key, value in given.items():
        if key not in DEFAULT_SETTINGS:
            raise SuiteError(f"{path}: [settings]: unknown key {key!r}{_suggest(key, DEFAULT_SETTINGS)}; "
                             f"allowed: {', '.join(DEFAULT_SETTINGS)}")
        settings[key] = value
    settings = check_settings(settings, f"{path}: [settings]")
    sections = []
    count = 0
    for kind in SECTIONS:
        entries = data.get(kind, [])
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            raise SuiteError(f"{path}: '{kind}' must be a list of tables written [[{kind}]], got {entries!r}")
        for i, sec in enumerate(entries):
            where = f"{path}: [[{kind}]] #{i + 1}"
            sections.append((kind, _check_section(kind, sec, where)))
            count += 1
    train = data.get("train", [])
    if isinstance(train, dict):
        train = [train]
    if not isinstance(train, list):
        raise SuiteError(f"{path}: 'train' must be a list of tables written [[train]], got {train!r}")
    train = [_check_train_section(sec, f"{path}: [[train]] #{i + 1}") for i, sec in enumerate(train)]
    if count == 0 and not train:
        raise SuiteError(f"{path}: the suite measures nothing; add at least one [[models]], [[dense]], "
                         "[[conv2d]], [[pool]] or [[train]] section")
    _check_spec_names(path, sections)
    return Suite(name=name, description=str(desc), path=path, settings=settings, sections=sections, train=train)


def _int_list(where: str, field: str, value, minimum: int = 1) -> list[int]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        raise SuiteError(f"{where}: {field!r} must be a non-empty list of integers >= {minimum}, got {value!r}; "
                         f"e.g. {field} = [1, 64]")
    return list(value)


def _str_list(where: str, field: str, value, choices) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{where}: {field!r} must be a non-empty list of strings, got {value!r}")
    for v in value:
        if v not in choices:
            raise SuiteError(f"{where}: unknown {field[:-1] if field.endswith('s') else field} {v!r}"
                             f"{_suggest(v, choices)}; choose from {', '.join(choices)}")
    return list(value)


def _check_models(where: str, names) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SuiteError(f"{where}: 'models' must be a non-empty list of zoo names or spec paths, got {names!r}")
    for n in names:
        try:
            modelspec.load(n)
        except (modelspec.SpecError, OSError) as err:
            raise SuiteError(f"{where}: {err}") from None
    return names


def _check_spec_names(path: str, sections) -> None:
    """Two different specs with one name would share result rows and a row of every table: refuse them."""
    by_name: dict[str, tuple[str, str]] = {}
    for kind, sec in sections:
        if kind != "models":
            continue
        for entry in sec["models"]:
            spec = modelspec.load(entry)
            digest = spec.digest()
            other = by_name.setdefault(spec.name, (entry, digest))
            if other[1] != digest:
                raise SuiteError(f"{path}: {other[0]!r} and {entry!r} are two different specs named {spec.name!r}; "
                                 "their rows and table lines would be confused: give one of them another 'name'")


def _check_section(kind: str, sec, where: str) -> dict:
    if not isinstance(sec, dict):
        raise SuiteError(f"{where}: must be a table, got {sec!r}")
    allowed = SECTION_KEYS[kind]
    for key in sec:
        if key not in allowed:
            raise SuiteError(f"{where}: unknown key {key!r}{_suggest(key, allowed)}; allowed: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    if "devices" in sec:
        out["devices"] = _str_list(where, "devices", sec["devices"], DEVICES)
    if "variants" in sec:
        out["variants"] = _str_list(where, "variants", sec["variants"], ALL_VARIANTS)
    if kind != "pool":
        out["precisions"] = _str_list(where, "precisions", sec.get("precisions", ["fp32"]), PRECISIONS)
    if kind == "models":
        for req in ("models", "batches"):
            if req not in sec:
                raise SuiteError(f"{where}: missing {req!r}; e.g. models = [\"mlp-mnist\"], batches = [1, 64]")
        out["models"] = _check_models(where, sec["models"])
        out["batches"] = _int_list(where, "batches", sec["batches"])
        out["phases"] = _str_list(where, "phases", sec.get("phases", list(MODEL_PHASES)), MODEL_PHASES)
        return out
    phases = POOL_PHASES if kind == "pool" else LAYER_PHASES
    out["phases"] = _str_list(where, "phases", sec.get("phases", list(phases)), phases)
    if kind == "pool":
        mode = sec.get("mode", "max")
        if mode not in ("max", "avg"):
            raise SuiteError(f"{where}: 'mode' must be \"max\" or \"avg\", got {mode!r}")
        out["mode"] = mode
    fields = SHAPE_FIELDS[kind]
    shapes = sec.get("shapes", [])
    if not isinstance(shapes, list):
        raise SuiteError(f"{where}: 'shapes' must be a list of [{', '.join(fields)}] lists, got {shapes!r}")
    checked = [_check_shape(kind, s, f"{where}: shape #{j + 1} {s!r}") for j, s in enumerate(shapes)]
    if "batches" in sec:
        # every shape at each of these batch sizes: N of a conv / pool shape, M of a dense one
        first = "M" if kind == "dense" else "N"
        batches = _int_list(where, "batches", sec["batches"])
        checked = list({tuple(sorted({**d, first: b}.items())): {**d, first: b}
                        for b in batches for d in checked}.values())
    out["shapes"] = checked
    if "zoo_models" in sec or "zoo_batches" in sec:
        if "zoo_models" not in sec or "zoo_batches" not in sec:
            raise SuiteError(f"{where}: 'zoo_models' and 'zoo_batches' go together; give both")
        out["zoo_models"] = _check_models(where, sec["zoo_models"])
        out["zoo_batches"] = _int_list(where, "zoo_batches", sec["zoo_batches"])
        for d in zoo_layer_shapes(kind, out["zoo_models"], out["zoo_batches"], out.get("mode")):
            if d not in checked:
                checked.append(d)
    if not checked:
        raise SuiteError(f"{where}: no shapes; give shapes = [[{', '.join(fields)}], ...] or zoo_models + zoo_batches")
    return out


TRAIN_KEYS = ("datasets", "models", "batches", "variants", "seeds", "epochs", "evals_per_epoch", "lr", "momentum",
              "target_acc", "devices")
MAX_EVALS_PER_EPOCH = 1000   # test-accuracy evaluations per epoch of a training run, at most
# number keys of a [[train]] section: (type, lowest, highest, lowest excluded, example); the highest
# evals_per_epoch is also bound by the steps of an epoch, checked where the training set's size is known
_TRAIN_NUMBERS = {"epochs": ("int", 1, 100_000, False, "10"),
                  "evals_per_epoch": ("int", 1, MAX_EVALS_PER_EPOCH, False, "4"),
                  "lr": ("float", 0, 3.4e38, True, "0.01"), "momentum": ("float", 0, 1, False, "0.9"),
                  "target_acc": ("float", 0, 1, True, "0.95")}


def _check_train_section(sec, where: str) -> dict:
    """A [[train]] section: datasets (required), models, batches, variants, seeds, devices, and the numbers
    epochs, evals_per_epoch, lr, momentum, target_acc; what is left out takes the dataset's defaults
    (harness/train.py; one evaluation per epoch)."""
    from . import data as datamod

    if not isinstance(sec, dict):
        raise SuiteError(f"{where}: must be a table, got {sec!r}")
    for key in sec:
        if key not in TRAIN_KEYS:
            raise SuiteError(f"{where}: unknown key {key!r}{_suggest(key, TRAIN_KEYS)}; allowed: {', '.join(TRAIN_KEYS)}")
    if "datasets" not in sec:
        raise SuiteError(f"{where}: missing 'datasets'; e.g. datasets = [\"digits\", \"synthetic-mnist:60000\"]")
    names = sec["datasets"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SuiteError(f"{where}: 'datasets' must be a non-empty list of dataset names, got {sec['datasets']!r}")
    for n in names:
        try:
            datamod.parse_dataset(n)
        except ValueError as err:
            raise SuiteError(f"{where}: {err}") from None
    out: dict[str, Any] = {"datasets": list(names)}
    if "models" in sec:
        out["models"] = _check_models(where, sec["models"])
    if "batches" in sec:
        out["batches"] = _int_list(where, "batches", sec["batches"])
    if "seeds" in sec:
        out["seeds"] = _int_list(where, "seeds", sec["seeds"], minimum=0)
    if "variants" in sec:
        out["variants"] = _str_list(where, "variants", sec["variants"], ALL_VARIANTS)
    if "devices" in sec:
        out["devices"] = _str_list(where, "devices", sec["devices"], DEVICES)
    for key, (kind, lo, hi, lo_open, example) in _TRAIN_NUMBERS.items():
        if key not in sec:
            continue
        v = sec[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (kind == "float" or float(v).is_integer()) and lo <= v <= hi and not (lo_open and v == lo)
        if not ok:
            bound = f"{'above' if lo_open else 'from'} {lo:g} {'up ' if lo_open else ''}to {hi:g}"
            raise SuiteError(f"{where}: {key!r} must be {'a whole number' if kind == 'int' else 'a number'} {bound}, "
                             f"got {v!r}; e.g. {key} = {example}")
        out[key] = int(v) if kind == "int" else float(v)
    return out


def zoo_layer_shapes(kind: str, models: list[str], batches: list[int], mode: str | None = None) -> list[dict]:
    """The dense / conv2d / pool layer shapes of zoo models at the given batch sizes."""
    out = []
    for name in models:
        spec = modelspec.load(name)
        for b in batches:
            for layer in spec.layers:
                if kind == "dense" and layer.type == "dense":
                    d = {"M": b, "N": layer.units, "K": layer.in_shape[0]}
                elif kind == "conv2d" and layer.type == "conv2d":
                    c, h, w = layer.in_shape
                    d = {"N": b, "C": c, "H": h, "W": w, "K": layer.out_channels, "R": layer.kernel_size[0],
                         "S": layer.kernel_size[1], "stride": tuple(layer.stride), "padding": tuple(layer.padding)}
                elif kind == "pool" and layer.type == f"{mode}pool2d" and layer.stride[0] == layer.stride[1]:
                    c, h, w = layer.in_shape
                    d = {"N": b, "C": c, "H": h, "W": w, "R": layer.kernel_size[0], "S": layer.kernel_size[1],
                         "stride": layer.stride[0]}
                else:
                    continue
                if d not in out:
                    out.append(d)
    return out


def shape_name(kind: str, d: dict, mode: str | None = None) -> str:
    if kind == "dense":
        return f"dense_M{d['M']}_N{d['N']}_K{d['K']}"
    if kind == "conv2d":
        return (f"conv_N{d['N']}_C{d['C']}_H{d['H']}_W{d['W']}_K{d['K']}_R{d['R']}_S{d['S']}"
                f"_st{pair_text(d['stride'])}_pad{pair_text(d['padding'])}")
    return f"{mode}pool_N{d['N']}_C{d['C']}_H{d['H']}_W{d['W']}_R{d['R']}_S{d['S']}_st{d['stride']}"


def _check_shape(kind: str, s, where: str) -> dict:
    """One entry of a layer section's ``shapes`` as a dict of SHAPE_FIELDS; a conv's stride and padding as
    (height, width) pairs, from the 9-number form (one stride, one padding) or the 11-number form
    (CONV_PAIR_FIELDS)."""
    fields = SHAPE_FIELDS[kind]
    lengths = (len(fields), len(CONV_PAIR_FIELDS)) if kind == "conv2d" else (len(fields),)
    if (not isinstance(s, list) or len(s) not in lengths
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in s)):
        forms = " or ".join(f"[{', '.join(f)}]" for f in ((fields, CONV_PAIR_FIELDS) if kind == "conv2d" else (fields,)))
        raise SuiteError(f"{where} must be a list of {' or '.join(map(str, lengths))} integers {forms}")
    names = CONV_PAIR_FIELDS if len(s) == len(CONV_PAIR_FIELDS) else fields
    for f, v in zip(names, s):
        if v < (0 if f.startswith("padding") else 1):
            raise SuiteError(f"{where}: {f} must be {'>= 0' if f.startswith('padding') else '>= 1'}, got {v}")
    if kind == "conv2d":
        d = dict(zip(fields[:7], s[:7]))
        d["stride"], d["padding"] = ((s[7], s[8]), (s[9], s[10])) if len(s) == 11 else ((s[7],) * 2, (s[8],) * 2)
        if d["R"] > d["H"] + 2 * d["padding"][0] or d["S"] > d["W"] + 2 * d["padding"][1]:
            raise SuiteError(f"{where}: kernel {d['R']}x{d['S']} is larger than the padded input; use a smaller "
                             "kernel or more padding")
        return d
    d = dict(zip(fields, s))
    if kind == "pool" and (d["R"] > d["H"] or d["S"] > d["W"]):
        raise SuiteError(f"{where}: window {d['R']}x{d['S']} is larger than the input")
    return d


def variants_for(kind: str, device: str, phase: str, wanted: list[str] | None,
                 precision: str = "fp32") -> list[tuple[str, str]]:
    """(impl, variant) pairs measured for a row of this kind/device/phase/precision."""
    table = VARIANTS[("model" if kind == "model" else "layer", device)]
    out = []
    for impl, vs in table.items():
        for v in vs:
            if wanted is None and v in OPT_IN:
                continue
            if wanted is not None and v not in wanted:
                continue
            if v in GRAPH_PHASES and phase not in GRAPH_PHASES[v]:
                continue
            if v in FP32_ONLY and precision != "fp32":
                continue
            out.append((impl, v))
    return out


def _expand(kind: str, sec: dict, device: str):
    wanted = sec.get("variants")
    # NOTE: tf32 / bf16 need the GPU's tensor cores: on the CPU a section's other precisions make no rows
    precisions = [p for p in sec.get("precisions", ["fp32"]) if p in DEVICE_PRECISIONS[device]]
    if kind == "models":
        for name in sec["models"]:
            spec = modelspec.load(name)
            workload = spec.name if name.endswith((".toml", ".json")) else name
            params = (("spec", name), ("spec_hash", spec.digest()))
            for prec in precisions:
                for b in sec["batches"]:
                    for phase in sec["phases"]:
                        for impl, v in variants_for("model", device, phase, wanted, prec):
                            yield Job("model", workload, b, phase, impl, v, device, params, prec)
        return
    for d in sec["shapes"]:
        params = dict(d)
        if kind == "pool":
            params["mode"] = sec["mode"]
        name = shape_name(kind, d, sec.get("mode"))
        batch = d["M"] if kind == "dense" else d["N"]
        for prec in precisions:
            for phase in sec["phases"]:
                for impl, v in variants_for(kind, device, phase, wanted, prec):
                    yield Job(kind, name, batch, phase, impl, v, device, tuple(sorted(params.items())), prec)
