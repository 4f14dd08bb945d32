#!/usr/bin/env bash
# One visit to the GPU machine, run from the repository root (nothing to install there):
#   bash lab/gpu_visit.sh tests [PATH...]  # the gpu-marked tests (all, or those files) + the parity table
#                                          # (all of them take several minutes: pass PATHs to split a visit)
#   bash lab/gpu_visit.sh run              # the default GPU suite and its report -> reports/gpu-<card>/
#   bash lab/gpu_visit.sh first-run        # the main job exactly as a new user runs it (`python3 -m harness
#                                          # run`, nothing compiled before): seconds to its first row and
#                                          # to completion, its log, and the folder it wrote
#   bash lab/gpu_visit.sh targets          # the performance targets -> reports/targets-<card>-<date>/ or $DIR (TL: the
#                                          # measuring limit, default 380 s; rerun to resume the same day)
#   bash lab/gpu_visit.sh train [SET]      # the committed GPU training runs, one set per call (resumable):
#                                          # mnist-64 (default), mnist-1024, cifar-64, cifar-1024, digits
#                                          # -> reports/train-<set>-<card>/ (FRESH=1: remove it first)
#   bash lab/gpu_visit.sh verify [FILE...] # GPU test files (default: the tensor-core GEMM and conv, the
#                                          # precision models, the fused MLP step, the conv tests), one at a
#                                          # time, each under TIMEOUT_S (default 200 s)
#   bash lab/gpu_visit.sh fft              # the "fft" algorithm: its GPU tests, then lab/conv/algo_probe.py fft
#                                          # (DeepSpeech 2's rows, every phase: fft and the implicit GEMM
#                                          # beside cuDNN)
#   bash lab/gpu_visit.sh gemm             # the FP32 GEMM: its GPU tests (the thin kernels included), the thin
#                                          # plans' probe (lab/gemm/thin_probe.py), the bias gradient three ways
#                                          # (lab/gemm/bias_grad_probe.py), then lab/gemm/variants.py at
#                                          # 4096^3 in each dense layout (the cp.async experiment beside the
#                                          # product kernel and cuBLAS), each under PROBE_S (default 120 s);
#                                          # LAYOUTS="nt" times one layout
#   bash lab/gpu_visit.sh queue            # what waits for a GPU, most needed first, each step under its own
#                                          # limit (at most 570 s in all, plus the precompile): the GEMM and
#                                          # dense GPU tests, the bias gradient and thin-GEMM probes, "fft" on
#                                          # the 5x5 rows (algo_probe.py five-fft), the fused F(5x5, 2x2) weight
#                                          # gradient (winograd_wgrad_fused_probe.py), variants.py nt (the
#                                          # cp.async GEMM), then ws_bench.py's TMA kernels (last: a hung copy
#                                          # loses the context)
#   bash lab/gpu_visit.sh cpu              # the host CPU: our NumPy step and PyTorch's, layer by layer, on 1, 4
#                                          # and all cores (lab/cpu/step_profile.py): which layers do not scale;
#                                          # then every GEMM of the step at 1, 2, 4, ... OpenBLAS threads beside
#                                          # torch.matmul (lab/cpu/blas_threads_probe.py)
#   bash lab/gpu_visit.sh five             # the 5x5 Winograd (F(2x2, 5x5)): its GPU tests and the 3x3 ones, then
#                                          # the 5x5 rows by algorithm beside cuDNN (lab/conv/algo_probe.py five)
#   bash lab/gpu_visit.sh wgmma            # the wgmma GEMM and conv: their GPU tests, then tc_bench at 4096^3
#                                          # (every tile config, mma.sync and wgmma, beside cuBLAS), then the
#                                          # warp-specialised experiment beside the product kernel (ws_bench)
#   bash lab/gpu_visit.sh rounded          # the "rounded" conv candidate's GPU tests, then the tensor-core
#                                          # suite's rows at TF32 for TL seconds (default 40) with the
#                                          # algorithm each ran -> $OUT/tc-rounded
#   bash lab/gpu_visit.sh tc               # the tensor-core layer rows (lab/conv/tc_suite.toml): TF32 / BF16
#                                          # dense 4096 and the conv suite, ours vs PyTorch -> reports/tc-<card>/
#   bash lab/gpu_visit.sh jax-flag         # the JAX rows (lab/step/jax_rows_suite.toml) without and with
#                                          # --xla_gpu_exclude_nondeterministic_ops, then harness compare
#                                          # -> reports/jax-flag-<card>/{a,b,compare}
#   bash lab/gpu_visit.sh breakdown [MODELS] [BATCHES]  # kernel by kernel, ours and PyTorch's train step
#                                          # (lab/step/kernel_breakdown.py; default lenet-mnist at 64)
#   bash lab/gpu_visit.sh perf [BENCH-ARGS...]  # kernel timings (lab/gemm/bench.py ...) and the
#                                          # per-layer train-step profile (lab/step/profile_step.py)
# Every mode but first-run first compiles the kernel modules in parallel into CuPy's on-disk cache
# (custom_impl.gpu.runtime.precompile), so no timed command pays for compiling.
# Logs and results go to $OUT (the device tool brings them back); a short summary is printed last.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-out}; mkdir -p "$out"
# the card's name as nvidia-smi prints it, and as a folder suffix: lower-case, spaces to '-'
# (reports/train-<set>-<card>, ...)
card_name() { nvidia-smi --query-gpu=name --format=csv,noheader | head -1; }
card_slug() { card_name | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-'; }
# step LIMIT NAME LOG CMD...: CMD under LIMIT seconds, its output to $out/LOG, then "NAME exit: CODE (last line)"
step() {
  local limit=$1 name=$2 log=$3
  shift 3
  timeout "$limit" "$@" >"$out/$log" 2>&1
  echo "$name exit: $? ($(tail -n 1 "$out/$log"))"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$out/nvidia_smi.txt"
if [ "${1:-tests}" != first-run ]; then
  python3 -c "from custom_impl.gpu import runtime; runtime.precompile(progress=print)" >"$out/precompile.log" 2>&1
  echo "precompile exit: $? ($(tail -1 "$out/precompile.log"))"
fi
case "${1:-tests}" in
  first-run)
    t0=$(date +%s%N)
    timeout "${TIMEOUT_S:-560}" python3 -m harness run >"$out/first_run.log" 2>&1 &
    pid=$!
    first=""
    while kill -0 "$pid" 2>/dev/null; do
      if [ -z "$first" ]; then
        for f in reports/*/results.csv; do
          if [ -f "$f" ] && [ "$(wc -l <"$f")" -ge 2 ] && [ "$f" -nt "$out/nvidia_smi.txt" ]; then
            first=$(( ($(date +%s%N) - t0) / 1000000 )); echo "first row after ${first} ms ($f)"; break
          fi
        done
      fi
      sleep 0.5
    done
    wait "$pid"; rc=$?
    echo "harness run exit: $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    tar czf "$out/first_run.tgz" $(ls -d reports/*/ | grep -v targets) 2>/dev/null
    grep -v "it/s\]" "$out/first_run.log" | head -12
    tail -5 "$out/first_run.log"
    ;;
  tests)
    shift
    timeout "${TIMEOUT_S:-540}" python3 -m pytest -m gpu -q -p no:cacheprovider --junitxml="$out/gpu_junit.xml" "$@" \
      >"$out/gpu_tests.log" 2>&1
    echo "pytest exit: $?"
    [ "$#" -gt 0 ] || timeout 120 python3 -m harness parity --device gpu >"$out/parity_gpu.md" 2>&1
    echo "parity exit: $?"
    grep -E "FAILED|ERROR" "$out/gpu_tests.log" | head -30
    tail -3 "$out/gpu_tests.log"
    ;;
  perf)
    shift
    timeout "${TIMEOUT_S:-300}" python3 lab/gemm/bench.py --no-tests --out "$out/bench" "$@" >"$out/bench.log" 2>&1
    echo "bench exit: $?"
    timeout 150 python3 lab/step/profile_step.py --out "$out/profile" >"$out/profile.log" 2>&1
    echo "profile exit: $?"
    tail -60 "$out/profile.log"
    grep -A40 "=== summary" "$out/bench.log"
    ;;
  train)
    card=$(card_slug)
    set=${2:-mnist-64}
    variants=cuda-graph,torch-graph,torch-eager
    case "$set" in
      # 5 seeds, 8 evaluations per epoch: the time to 98% is a threshold crossing, which one seed and a
      # quarter-epoch step move by a whole evaluation interval
      mnist-64)   args="--data synthetic-mnist:60000 --models mlp-mnist,lenet-mnist --batch 64 --lr 0.01 --epochs 4 --evals-per-epoch 8 --seeds 0,1,2,3,4" ;;
      mnist-1024) args="--data synthetic-mnist:60000 --models mlp-mnist,lenet-mnist --batch 1024 --lr 0.05 --epochs 8" ;;
      cifar-64)   args="--data synthetic-cifar:50000 --models cnn-cifar --batch 64 --lr 0.01 --epochs 4 --evals-per-epoch 4" ;;
      # cnn-cifar at batch 1024 (CPU check, 8000 samples, seed 0): lr 0.05 and 0.02 oscillate, 0.01 is stable
      cifar-1024) args="--data synthetic-cifar:50000 --models cnn-cifar --batch 1024 --lr 0.01 --epochs 12" ;;
      digits)     args="--data digits" ;;
      *) echo "unknown training set '$set': mnist-64, mnist-1024, cifar-64, cifar-1024 or digits"; exit 2 ;;
    esac
    out_dir="reports/train-$set-$card"
    [ "${FRESH:-0}" = 1 ] && rm -rf "$out_dir"   # FRESH=1: start over (a resumed folder keeps its runs)
    # shellcheck disable=SC2086
    timeout "${TIMEOUT_S:-480}" python3 -m harness train $args --variants $variants --device gpu --quiet \
      --out "$out_dir" >"$out/train.log" 2>&1
    echo "train exit: $?"
    tar czf "$out/train.tgz" "$out_dir"
    tail -30 "$out/train.log"
    ;;
  breakdown)
    timeout "${TIMEOUT_S:-240}" python3 lab/step/kernel_breakdown.py --models "${2:-lenet-mnist}" \
      --batches "${3:-64}" --sequence --out "$out/breakdown" >"$out/breakdown.log" 2>&1
    echo "breakdown exit: $?"
    grep -E "^==|kernel time per step" "$out/breakdown.log"
    ;;
  verify)
    shift
    files=${*:-test_conv_tc.py test_gemm_tc.py test_precision_models.py test_mlp_fused.py test_conv.py}
    for f in $files; do
      name=$(basename "$f" .py)
      timeout "${TIMEOUT_S:-200}" python3 -m pytest -q -p no:cacheprovider --junitxml="$out/$name.xml" \
        "tests/custom_impl/gpu/$f" >"$out/$name.log" 2>&1
      echo "$name exit: $? ($(tail -1 "$out/$name.log"))"
      grep -E "^FAILED|^ERROR" "$out/$name.log" | head -8
    done
    ;;
  fft)
    timeout "${TIMEOUT_S:-200}" python3 -m pytest -q -p no:cacheprovider --junitxml="$out/fft_junit.xml" \
      tests/custom_impl/gpu/test_conv_fft.py >"$out/fft_tests.log" 2>&1
    echo "pytest exit: $? ($(tail -1 "$out/fft_tests.log"))"
    grep -E "^FAILED|^ERROR" "$out/fft_tests.log" | head -8
    timeout "${PROBE_S:-240}" python3 lab/conv/algo_probe.py fft >"$out/fft_probe.md" 2>&1
    echo "fft probe exit: $?"
    cat "$out/fft_probe.md"
    ;;
  gemm)
    step "${TIMEOUT_S:-200}" pytest gemm_tests.log python3 -m pytest -q -p no:cacheprovider \
      --junitxml="$out/gemm_junit.xml" tests/custom_impl/gpu/test_gemm.py tests/custom_impl/gpu/test_prebuilt.py
    grep -E "^FAILED|^ERROR" "$out/gemm_tests.log" | head -8
    step "${PROBE_S:-120}" "thin probe" thin_probe.txt python3 lab/gemm/thin_probe.py
    step "${PROBE_S:-120}" "bias_grad probe" bias_grad_probe.txt python3 lab/gemm/bias_grad_probe.py
    for layout in ${LAYOUTS:-nt nn tn}; do
      step "${PROBE_S:-120}" "variants $layout" "variants_$layout.txt" python3 lab/gemm/variants.py --layout "$layout" --rounds 5
      grep -E "FAIL|Error" "$out/variants_$layout.txt" | head -4
      sed -n '/^=== /,$p' "$out/variants_$layout.txt"
    done
    cat "$out/thin_probe.txt" "$out/bias_grad_probe.txt"
    ;;
  queue)
    step 140 pytest gemm_tests.log python3 -m pytest -q -p no:cacheprovider --junitxml="$out/gemm_junit.xml" \
      tests/custom_impl/gpu/test_gemm.py tests/custom_impl/gpu/test_prebuilt.py tests/custom_impl/gpu/test_conv.py \
      -k "not test_conv.py or rejections"
    grep -E "^FAILED|^ERROR" "$out/gemm_tests.log" | head -8
    step 50 "bias_grad probe" bias_grad_probe.txt python3 lab/gemm/bias_grad_probe.py
    step 40 "thin probe" thin_probe.txt python3 lab/gemm/thin_probe.py
    step 60 "five-fft probe" five_fft.md python3 lab/conv/algo_probe.py five-fft
    step 90 "fused wgrad probe" fused_wgrad.md python3 lab/conv/winograd_wgrad_fused_probe.py
    step 90 "variants nt" variants_nt.txt python3 lab/gemm/variants.py --layout nt --rounds 5
    step 100 ws_bench ws_bench.log python3 lab/gemm/ws_bench.py --shapes 4096x4096x4096 --stages 4
    cat "$out/bias_grad_probe.txt" "$out/five_fft.md" "$out/fused_wgrad.md"
    sed -n '/^=== /,$p' "$out/variants_nt.txt"
    tail -n 6 "$out/thin_probe.txt" "$out/ws_bench.log"
    ;;
  cpu)
    cores=$(nproc)
    timeout "${TIMEOUT_S:-330}" python3 lab/cpu/step_profile.py --models lenet-mnist,cnn-cifar,mlp-deep --batches 64 \
      --settings "1,1;4,4;$cores,$cores" --steps 7 >"$out/cpu_scaling.txt" 2>&1
    echo "step_profile exit: $?"
    timeout "${PROBE_S:-200}" python3 lab/cpu/blas_threads_probe.py --reps 5 >"$out/blas_threads.txt" 2>&1
    echo "blas_threads_probe exit: $?"
    cat "$out/cpu_scaling.txt"
    grep -E "^==|^per step" "$out/blas_threads.txt"
    ;;
  five)
    for f in test_conv_winograd_5x5.py test_conv_winograd.py; do
      timeout "${TIMEOUT_S:-200}" python3 -m pytest -q -p no:cacheprovider "tests/custom_impl/gpu/$f" \
        >"$out/$f.log" 2>&1
      echo "$f exit: $? ($(tail -1 "$out/$f.log"))"
      grep -E "^FAILED|^ERROR" "$out/$f.log" | head -6
    done
    timeout "${PROBE_S:-150}" python3 lab/conv/algo_probe.py five >"$out/five_probe.md" 2>&1
    echo "five probe exit: $?"
    cat "$out/five_probe.md"
    ;;
  wgmma)
    timeout "${TIMEOUT_S:-200}" python3 -m pytest -q -p no:cacheprovider -k wgmma --junitxml="$out/wgmma_junit.xml" \
      tests/custom_impl/gpu/test_gemm_tc.py tests/custom_impl/gpu/test_conv_tc.py >"$out/wgmma_tests.log" 2>&1
    echo "pytest exit: $?"
    grep -E "FAILED|ERROR" "$out/wgmma_tests.log" | head -20
    tail -2 "$out/wgmma_tests.log"
    timeout 120 python3 lab/gemm/tc_bench.py --shapes 4096x4096x4096,8192x8192x8192 >"$out/tc_bench.log" 2>&1
    echo "tc_bench exit: $?"
    cat "$out/tc_bench.log"
    # NOTE: NVRTC builds its experiments cold for sm_90a; a 100 s limit once ended it before its first
    # result line. Each variant's line is now printed as soon as it is measured, with its build time
    timeout "${WS_TIMEOUT_S:-300}" python3 lab/gemm/ws_bench.py >"$out/ws_bench.log" 2>&1
    echo "ws_bench exit: $?"
    cat "$out/ws_bench.log"
    ;;
  rounded)
    timeout "${TIMEOUT_S:-90}" python3 -m pytest -q -p no:cacheprovider -k rounded --junitxml="$out/rounded.xml" \
      tests/custom_impl/gpu/test_conv_tc.py >"$out/rounded_tests.log" 2>&1
    echo "pytest exit: $? ($(tail -1 "$out/rounded_tests.log"))"
    grep -E "^FAILED|^ERROR" "$out/rounded_tests.log" | head -8
    timeout 150 python3 -m harness run --suite lab/conv/tc_suite.toml --device gpu --quiet --precision tf32 \
      --time-limit-s "${TL:-40}" --no-report --out "$out/tc-rounded" >"$out/tc_rounded.log" 2>&1
    echo "tc rows exit: $?"
    python3 lab/common/ratios.py "$out/tc-rounded/results.csv"
    ;;
  tc)
    card=$(card_slug)
    rm -rf "reports/tc-$card"
    timeout "${TIMEOUT_S:-450}" python3 -m harness run --suite lab/conv/tc_suite.toml --device gpu --quiet \
      --out "reports/tc-$card" >"$out/tc.log" 2>&1
    echo "tc exit: $?"
    tar czf "$out/tc.tgz" "reports/tc-$card"
    cat "reports/tc-$card/headline.md" 2>/dev/null | tail -12
    ;;
  jax-flag)
    card=$(card_slug)
    dir="reports/jax-flag-$card"
    for run in a:false b:true; do
      name=${run%%:*}; flag=${run##*:}
      XLA_FLAGS=--xla_gpu_exclude_nondeterministic_ops=$flag timeout "${TIMEOUT_S:-240}" python3 -m harness run \
        --suite lab/step/jax_rows_suite.toml --device gpu --quiet --out "$dir/$name" >"$out/jax-$name.log" 2>&1
      echo "run $name (flag $flag) exit: $? ($(tail -1 "$out/jax-$name.log"))"
    done
    python3 -m harness compare "$dir/a" "$dir/b" --out "$dir/compare" >"$out/jax-compare.log" 2>&1
    echo "compare exit: $?"
    tar czf "$out/jax-flag.tgz" "$dir"
    grep -i -A8 "geomean" "$dir/compare/compare.md" | head -12
    ;;
  run|targets)
    if [ "$1" = run ]; then
      dir="reports/gpu-$(card_name | tr ' ' '-' | tr -cd 'A-Za-z0-9-')"
      timeout "${TIMEOUT_S:-480}" python3 -m harness run --device gpu --quiet --out "$dir" >"$out/$1.log" 2>&1
    else
      # a dated folder (the committed ones are other runs: resuming into one would skip its rows); a rerun
      # the same day resumes it. The harness stops starting rows after TL seconds, under the call's limit.
      # DIR=... names another folder (a second run the same day). Each call starts from the working tree
      # sent with it: to resume, unpack the previous call's $OUT/targets.tgz into the tree first.
      dir="${DIR:-reports/targets-$(card_slug)-$(date +%F)}"
      timeout "${TIMEOUT_S:-540}" python3 -m harness targets --device gpu --quiet --time-limit-s "${TL:-380}" \
        --out "$dir" >"$out/$1.log" 2>&1
    fi
    echo "$1 exit: $?"
    tar czf "$out/$1.tgz" "$dir"
    tail -30 "$out/$1.log"
    ;;
esac
