"""The rounded-operand oracle's error per zoo model: what exact sums of operands rounded to TF32 / BF16 show
against float64 (reference_impl.build(..., dtype="float64", operand_rounding=...)), in the harness's model
parity measure, and in units of u sqrt(L) (the scale of harness/parity.py's model bar).

    python3 lab/common/tf32_model_error.py [--batch 33] [--precision tf32] [--phase forward_backward] [MODEL ...]
"""
from __future__ import annotations

import argparse
import math

import modelspec
from harness import workloads
from harness.parity import UNIT_ROUNDOFF
from harness.suites import Job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=modelspec.zoo_names())
    ap.add_argument("--batch", type=int, default=33)
    ap.add_argument("--precision", default="tf32", choices=["tf32", "bf16"])
    ap.add_argument("--phase", default="forward_backward")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    u = UNIT_ROUNDOFF[args.precision]
    print(f"| model | {args.precision} oracle error ({args.phase}, batch {args.batch}) | in u sqrt(L) |")
    print("| --- | ---: | ---: |")
    for name in args.models:
        case = workloads.ModelCase(name, args.batch, args.device, {"seed": 0, "lr": 0.01, "momentum": 0.9})
        job = Job("model", name, args.batch, args.phase, "custom", "cuda", args.device, (), args.precision)
        err = case.rounding_error(job)
        layers = sum(1 for layer in case.spec.layers if layer.has_params)
        print(f"| {name} | {err:.3g} | {err / (u * math.sqrt(layers)):.1f} |")


if __name__ == "__main__":
    main()
