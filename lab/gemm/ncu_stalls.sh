#!/usr/bin/env bash
# Where the 4096^3 GEMM (dense forward layout, X @ W^T) loses issue slots, on the GPU machine:
#   bash dev/gemm/ncu_stalls.sh [CONFIG]      (default 256x128x16_16x8)
# Writes to $OUT: the Nsight Compute report, its details page (stall reasons of the WarpStateStats
# section), the raw metrics, and the SASS of the kernel with per-instruction stall samples (source page).
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
cfg=${1:-256x128x16_16x8}
which ncu cuobjdump nvdisasm 2>&1 | tee "$out/tools.txt"
ncu --version | tail -1 | tee -a "$out/tools.txt"
timeout 400 ncu -k regex:gemm_v2_nt -s 1 -c 1 --set full --import-source no -f -o "$out/gemm4096" \
  python3 dev/gemm/ncu_one.py 4096 4096 4096 "$cfg" >"$out/ncu_run.log" 2>&1
echo "ncu exit: $?"; tail -5 "$out/ncu_run.log"
rep="$out/gemm4096.ncu-rep"
ncu -i "$rep" --page details --print-details all >"$out/details.txt" 2>&1
ncu -i "$rep" --page raw --csv >"$out/raw.csv" 2>&1
ncu -i "$rep" --page source --csv --print-source sass >"$out/source_sass.csv" 2>&1
echo "source page exit: $? ($(wc -l <"$out/source_sass.csv") lines)"
grep -iE "stall|eligible|issued|registers|Warp Cycles" "$out/details.txt" | head -60
