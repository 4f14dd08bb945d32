"""Every kernel the GPU Python asks for exists in its family's .cu file, and no kernel name has a version
number (CPU only: the product sources are parsed, nothing is compiled or launched).

A kernel is asked for as ``runtime.kernel(family, name, ...)``. The family and the name are resolved from
the source: string constants, module-level names (read off the imported module: a string, or the values
of a dict / tuple of strings), local names assigned those, function parameters (what the callers pass:
in the module, or as ``<module>.<function>(...)`` elsewhere in the product), and f-strings over those.
A part of an f-string the source does not fix (a public function's argument) matches any name part, so
such a name must match at least one kernel; the formats the product builds names with are also
enumerated explicitly below (gemm_nn..gemm_tt, activation, pool's _i32 entry points).
"""
from __future__ import annotations

import ast
import glob
import importlib
import itertools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GPU_DIR = os.path.join(ROOT, "custom_impl", "gpu")
KERNEL_DIR = os.path.join(ROOT, "custom_impl", "kernels")
PY_FILES = sorted(glob.glob(os.path.join(GPU_DIR, "**", "*.py"), recursive=True))
VERSIONED = re.compile(r"_v[0-9]+_|_v[0-9]+\b")


def kernels_of(family: str) -> set:
    """The ``extern "C" __global__`` entry points of ``kernels/<family>.cu`` (macro-made ones included:
    a name passed as the first argument of a macro whose body declares the entry point)."""
    with open(os.path.join(KERNEL_DIR, f"{family}.cu"), encoding="utf-8") as fh:
        code = fh.read()
    code = re.sub(r"\\\n", " ", code)  # join macro continuation lines
    names = set(re.findall(r'extern\s+"C"\s+__global__\s+(?:void\s+)?(?:__launch_bounds__\([^)]*\)\s*)?(?:void\s+)?'
                           r"(\w+)\s*\(", code))
    for macro, params, body in re.findall(r"#define\s+(\w+)\(([^)]*)\)(.*)", code):
        first = params.split(",")[0].strip()
        if 'extern "C"' in body and re.search(rf"\b{first}\s*\(", body):
            names.discard(first)
            names |= set(re.findall(rf"\b{macro}\(\s*(\w+)\s*,", code))
    return names


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


WILD = "[a-z0-9_]+"  # an f-string part the source does not fix


class _Resolver:
    """Resolves an expression of one module to the set of regexes the strings it can take match (a
    constant is its escaped self; None: not fixed at all)."""

    cache: dict = {}

    @classmethod
    def of(cls, path):
        if path not in cls.cache:
            cls.cache[path] = cls(path)
        return cls.cache[path]

    def __init__(self, path):
        with open(path, encoding="utf-8") as fh:
            self.tree = ast.parse(fh.read(), path)
        self.module = importlib.import_module(_module_name(path))
        self.parents = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def enclosing(self, node):
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef):
                return node
        return None

    def values(self, node, scope, depth=0):
        if depth > 12:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {re.escape(node.value)}
        if isinstance(node, ast.IfExp):
            a, b = self.values(node.body, scope, depth + 1), self.values(node.orelse, scope, depth + 1)
            return None if a is None or b is None else a | b
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            return _strings(getattr(self.module, node.value.id, None), values_of_dict=True)
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append({re.escape(v.value)})
                else:
                    parts.append(self.values(v.value, scope, depth + 1) or {WILD})
            return {"".join(p) for p in itertools.product(*parts)}
        if isinstance(node, ast.Name):
            return self.name_values(node.id, scope, depth)
        return None

    def name_values(self, name, scope, depth):
        if scope is not None:
            assigned = [n.value for n in ast.walk(scope) if isinstance(n, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]
            if assigned:
                sets = [self.values(v, scope, depth + 1) for v in assigned]
                return None if any(s is None for s in sets) else set().union(*sets)
            params = [a.arg for a in scope.args.args]
            if name in params:
                return self.param_values(scope, params.index(name), depth)
        return _strings(getattr(self.module, name, None), values_of_dict=True)

    def param_values(self, fn, index, depth):
        """What a function's parameter gets from its callers: calls by name in this module, and calls of
        ``<module>.<name>`` in the other product modules."""
        out, found = set(), False
        for path in PY_FILES:
            if path != self.path_of() and fn.name.startswith("_"):
                continue
            other = self if path == self.path_of() else _Resolver.of(path)
            for call in ast.walk(other.tree):
                if not isinstance(call, ast.Call):
                    continue
                f = call.func
                local = other is self and isinstance(f, ast.Name) and f.id == fn.name
                remote = (other is not self and isinstance(f, ast.Attribute) and f.attr == fn.name
                          and isinstance(f.value, ast.Name) and f.value.id != "runtime"
                          and f.value.id == self.module.__name__.rsplit(".", 1)[-1])
                if not (local or remote) or index >= len(call.args):
                    continue
                found = True
                got = other.values(call.args[index], other.enclosing(call), depth + 1)
                if got is None:
                    return None
                out |= got
        return out if found else None

    def path_of(self):
        return self.module.__file__


def _strings(found, values_of_dict=False):
    """A module-level value as a set of escaped strings: a string, a dict's values, a tuple of strings."""
    if isinstance(found, str):
        return {re.escape(found)}
    if values_of_dict and isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
        return {re.escape(v) for v in found.values()}
    if isinstance(found, (tuple, list)) and found and all(isinstance(v, str) for v in found):
        return {re.escape(v) for v in found}
    return None


def kernel_requests():
    """[(file:line, family regexes or None, name regexes or None)] of every runtime.kernel call."""
    found = []
    for path in PY_FILES:
        if os.path.basename(path) == "runtime.py":
            continue
        resolver = _Resolver.of(path)
        for node in ast.walk(resolver.tree):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            f = node.func
            if not (isinstance(f, ast.Attribute) and f.attr == "kernel" and isinstance(f.value, ast.Name)
                    and f.value.id == "runtime"):
                continue
            scope = resolver.enclosing(node)
            where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
            found.append((where, resolver.values(node.args[0], scope), resolver.values(node.args[1], scope)))
    return found


def test_the_product_asks_for_kernels():
    assert len(kernel_requests()) >= 10


def test_every_requested_kernel_exists_in_its_family_file():
    missing, unresolved = [], []
    for where, families, names in kernel_requests():
        if families is None or any(WILD in f for f in families):
            unresolved.append(f"{where}: family")
            continue
        if names is None:
            unresolved.append(f"{where}: kernel name")
            continue
        for family in families:
            have = kernels_of(re.sub(r"\\(.)", r"\1", family))
            for name in sorted(names):
                if not any(re.fullmatch(name, k) for k in have):
                    missing.append(f"{where}: {family}.cu has no kernel matching {name!r}")
    assert not missing, "\n".join(missing)
    assert not unresolved, ("these kernel requests cannot be resolved from the source; use constants or "
                            "enumerate the format in this test:\n" + "\n".join(unresolved))


def test_names_built_by_formatting_exist():
    """The formats the product builds kernel names with, enumerated: gemm's transposes, activation's
    kinds and directions, pool's 32-bit-index entry points."""
    from custom_impl.gpu import activation, gemm

    assert sorted(gemm.KERNELS.values()) == ["gemm_nn", "gemm_nt", "gemm_tn", "gemm_tt"]
    assert set(gemm.KERNELS.values()) <= kernels_of("gemm")
    assert {"gemm_splitk_reduce"} <= kernels_of("gemm")
    want = {f"{act}_{way}" for act in activation.ACTIVATIONS for way in ("forward", "backward")}
    assert want <= kernels_of("activation")
    pool = {f"{kind}pool2d_{op}" for kind in ("max", "avg")
            for op in ("forward", "backward", "backward_tiled")}
    assert pool | {f"{n}_i32" for n in pool} <= kernels_of("pool")
    assert {"gpu_sleep"} <= kernels_of("runtime")


def _product_sources(*exts):
    for ext in exts:
        yield from sorted(glob.glob(os.path.join(ROOT, "custom_impl", "**", f"*.{ext}"), recursive=True))


@pytest.mark.parametrize("path", list(_product_sources("cu", "cuh", "py")),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_no_versioned_kernel_names_or_version_switch(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    bad = [f"line {i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
           if VERSIONED.search(line) or (path.endswith(".py") and re.search(r"\bversion\s*=", line))]
    assert not bad, f"{os.path.relpath(path, ROOT)} names a kernel version or has a version= switch:\n" + "\n".join(bad)
