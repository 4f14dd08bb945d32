"""Loading specs from the zoo (package data) or from .toml / .json files."""
from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from typing import Any, Mapping

from .spec import ModelSpec, SpecError, _suggest


def zoo_names() -> list[str]:
    """Names of the models shipped in ``modelspec/zoo/``."""
    files = resources.files(__package__).joinpath("zoo")
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".toml"))


def _read_file(path: str) -> dict:
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise SpecError(f"{path}: not a valid {'TOML' if path.endswith('.toml') else 'JSON'} file: {err}") from None


def load(x: "str | os.PathLike | Mapping[str, Any] | ModelSpec") -> ModelSpec:
    """A spec from a zoo name, a .toml / .json path, a dict, or a ModelSpec (returned as is).

    >>> load("thesis-2-3-1").input_shape
    (2,)
    """
    if isinstance(x, ModelSpec):
        return x
    if isinstance(x, Mapping):
        return ModelSpec.from_dict(x)
    if not isinstance(x, (str, os.PathLike)):
        raise SpecError(f"cannot load a model spec from {type(x).__name__}; pass a zoo name, a path or a dict")
    s = os.fspath(x)
    if s.endswith((".toml", ".json")):
        if not os.path.isfile(s):
            raise SpecError(f"spec file {s!r} does not exist")
        try:
            return ModelSpec.from_dict(_read_file(s))
        except SpecError as err:
            if str(err).startswith(s):
                raise
            raise SpecError(f"{s}: {err}") from None
    names = zoo_names()
    if s not in names:
        raise SpecError(f"unknown model {s!r}{_suggest(s, names)}; zoo models: {', '.join(names)}; "
                        "or pass a path ending in .toml or .json")
    data = resources.files(__package__).joinpath("zoo", f"{s}.toml").read_bytes()
    return ModelSpec.from_dict(tomllib.loads(data.decode("utf-8")))
