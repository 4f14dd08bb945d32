"""Per layer row of a results.csv: ours, the reference, their ratio and the algorithm ours ran.

    python3 lab/common/ratios.py DIR/results.csv [--kind conv2d]

One line per (workload, phase, precision) where both sides were timed: our median ms, the fastest
reference variant's, reference / ours (> 1: ours faster), and the ``algorithm`` column; then the geomean
per precision. A quick look after a short GPU call, before the report is rendered.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--kind", default="conv2d")
    args = ap.parse_args(argv)
    try:
        with open(args.results, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == args.kind and r["median_ms"]]
    except FileNotFoundError:
        print(f"{args.results}: no such file (did the run write any row?)")
        return 1
    ours, ref = {}, {}
    for r in rows:
        key = (r["workload"], r["phase"], r["precision"])
        if r["impl"] == "custom":
            ours[key] = (float(r["median_ms"]), r.get("algorithm", ""))
        else:
            ref[key] = min(ref.get(key, math.inf), float(r["median_ms"]))
    logs = {}
    for key in sorted(k for k in ours if k in ref):
        ms, algo = ours[key]
        ratio = ref[key] / ms
        logs.setdefault(key[2], []).append(math.log(ratio))
        print(f"{key[0]:44s} {key[1]:17s} {key[2]:5s} ours {ms:9.4f} ref {ref[key]:9.4f} {ratio:7.3f}  {algo}")
    for precision, xs in logs.items():
        print(f"geomean {precision}: {math.exp(sum(xs) / len(xs)):.3f} over {len(xs)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
