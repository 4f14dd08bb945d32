#!/usr/bin/env bash
# Where the 4096^3 GEMM (dense forward layout, X @ W^T) loses issue slots, on the GPU machine:
#   bash lab/gemm/ncu_stalls.sh [CONFIG]      (default 256x128x16_16x8)
# KERNEL (default "gemm") is the regex of the kernel name ncu profiles; with a CONFIG given, ncu_one.py
# launches only the tiled GEMM kernel (one split, no autotuning), so the second launch (-s 1) is profiled.
# Writes to $OUT: the Nsight Compute report, its details page (stall reasons of the WarpStateStats
# section), the raw metrics, and the SASS of the kernel with per-instruction stall samples (source page).
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
cfg=${1:-256x128x16_16x8}
kernel=${KERNEL:-gemm}
which ncu cuobjdump nvdisasm 2>&1 | tee "$out/tools.txt"
ncu --version | tail -1 | tee -a "$out/tools.txt"
timeout 400 ncu -k "regex:$kernel" -s 1 -c 1 --set full --import-source no -f -o "$out/gemm4096" \
  python3 lab/gemm/ncu_one.py 4096 4096 4096 "$cfg" >"$out/ncu_run.log" 2>&1
echo "ncu exit: $?"; tail -5 "$out/ncu_run.log"
rep="$out/gemm4096.ncu-rep"
ncu -i "$rep" --page details --print-details all >"$out/details.txt" 2>&1
ncu -i "$rep" --page raw --csv >"$out/raw.csv" 2>&1
ncu -i "$rep" --page source --csv --print-source sass >"$out/source_sass.csv" 2>&1
echo "source page exit: $? ($(wc -l <"$out/source_sass.csv") lines)"
grep -iE "stall|eligible|issued|registers|Warp Cycles" "$out/details.txt" | head -60
