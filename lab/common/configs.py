"""Tile configs by name, including ones the product no longer offers.

    from lab.common.configs import tile_config
    cfg = tile_config("128x256x16_8x16")   # BMxBNxBK_TMxTN

The product's ``tiles.CONFIG_BY_NAME`` holds the configs its planner can choose; a lab script timing one
that was dropped builds it from its name: e.g. 128x256x16_8x16, 3208 us against 3146 us for 256x128x16_16x8 on
the 4096^3 X @ W^T GEMM (NVIDIA H100 80GB HBM3, 2026-11-27, ``python3 lab/gemm/bench.py --only gemm4096``,
then under dev/gemm; the log is in git history: ``git log -- dev/gemm/results``). ``gemm(..., config=cfg)`` and ``runtime.kernel(..., defines=cfg.defines)`` take either.
"""
from __future__ import annotations

import re


def tile_config(name: str):
    """The product's TileConfig called ``name``, or one built from the name (rate 1.0: not for planning)."""
    from custom_impl.gpu import tiles

    if name in tiles.CONFIG_BY_NAME:
        return tiles.CONFIG_BY_NAME[name]
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)_(\d+)x(\d+)", name)
    if not m:
        raise ValueError(f"tile config {name!r}: expected BMxBNxBK_TMxTN, e.g. 256x128x16_16x8")
    bm, bn, bk, tm, tn = (int(v) for v in m.groups())
    return tiles.TileConfig(bm, bn, bk, tm, tn, 1.0)
