"""The command line and the CSV of the one-layer conv probes (lab/conv/small_batch_probe.py,
lab/conv/patch_wgrad_sweep.py): a layer as N,C,H,W,K,R,S,padding, a list of batch sizes, an output folder.
"""
from __future__ import annotations

import argparse
import csv
import os

LENET_CONV2 = "0,32,14,14,64,5,5,2"   # LeNet's conv2: 32 -> 64 channels, 14x14, 5x5, padding 2


def parse(doc: str, batches: str, out: str, argv=None) -> tuple[tuple, list[int], str]:
    """(layer (N, C, H, W, K, R, S, padding), batch sizes, output folder (created)) from ``argv``; ``doc``
    is the script's docstring (its first paragraph the description), ``batches`` / ``out`` the defaults."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--layer", default=LENET_CONV2, help="N,C,H,W,K,R,S,padding (N ignored)")
    ap.add_argument("--batches", default=batches)
    ap.add_argument("--out", default=out)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return (tuple(int(v) for v in args.layer.split(",")), [int(v) for v in args.batches.split(",")], args.out)


def write_csv(path: str, header: list[str], rows: list) -> None:
    """``rows`` under ``header`` into the CSV file ``path``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
