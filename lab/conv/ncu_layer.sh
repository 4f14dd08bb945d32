#!/usr/bin/env bash
# Nsight Compute on one kernel of one conv layer call (lab/conv/ncu_layer.py), on the GPU machine:
#   bash lab/conv/ncu_layer.sh KERNEL_REGEX [ncu_layer.py ARGS...]
#   e.g. bash lab/conv/ncu_layer.sh conv_patch_backward_weights --layer 64,32,14,14,64,5,5,2 --algo patch
# Writes to $OUT/ncu/<KERNEL_REGEX, other characters as _>/: the report, its details page (throughput,
# occupancy, stall reasons) and the SASS with per-instruction stall samples; prints the details' key lines.
set -uo pipefail
out=${OUT:-out}/ncu/$(printf %s "$1" | tr -c "A-Za-z0-9_" "_"); mkdir -p "$out"
kernel=$1; shift
timeout 300 ncu -k "regex:$kernel" -s 1 -c 1 --set full --import-source no -f -o "$out/layer" \
  python3 lab/conv/ncu_layer.py "$@" >"$out/ncu_run.log" 2>&1
echo "ncu exit: $?"; tail -3 "$out/ncu_run.log"
ncu -i "$out/layer.ncu-rep" --page details --print-details all >"$out/details.txt" 2>&1
ncu -i "$out/layer.ncu-rep" --page source --csv --print-source sass >"$out/source_sass.csv" 2>&1
grep -iE "duration|throughput|occupancy|registers|eligible|issued warp|stall|bank|warp cycles" "$out/details.txt" | head -70
