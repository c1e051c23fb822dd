#!/usr/bin/env bash
# The GPU run, in stages of at most about 5 minutes each on an H100, so a second call
# after a fix starts at the stage that failed. Uses the machine's own torch (build with
# --no-build-isolation --no-deps: the machine has no network).
#
#   bash benchmarks/gpu_check.sh test    build for sm_90, kernel resources, GPU tests, sanitizers
#   bash benchmarks/gpu_check.sh bench   GPU benchmarks, the auto table, the summary (after `test`)
#   bash benchmarks/gpu_check.sh         both
#
# Each stage writes its log to benchmarks/results/gpu/<stage>.log; the benchmarks write
# their JSON/CSV there too, and `bench` rewrites padkern/auto_table.json from them. Where
# $OUT is set (the device runner), all of it is copied there as well.
set -uo pipefail
stage="${1:-all}"
cd "$(dirname "$0")/.."
export PADKERN_CUDA_ARCHS="${PADKERN_CUDA_ARCHS:-90}"
export MAX_JOBS="${MAX_JOBS:-16}"
PY="${PYTHON:-python3}"
RESULTS=benchmarks/results/gpu
mkdir -p "$RESULTS"
status=0
step() { echo; echo "=== $* ==="; }

deliver() {
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/gpu"
    cp -r "$RESULTS"/. "$OUT/gpu/"
    cp padkern/auto_table.json "$OUT/gpu/auto_table.json" 2>/dev/null || true
  fi
}

run_tests() {
step build
"$PY" -m pip install -q --no-build-isolation --no-deps -e . || return 1
"$PY" -c "import torch, triton, padkern._extension as e; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name(), '| cuda ext:', e.CUDA_MISSING or 'ok')"

step "kernel resources (ptxas, sm_90)"
"$PY" tests/cuda_resources.py --arch 90 || status=1

# Tests: one Triton config per kernel (autotuning every test shape would cost minutes).
export PADKERN_TRITON_AUTOTUNE=0

step "GPU tests"
"$PY" -m pytest -q --maxfail=20 tests -k "cuda or gpu or half" -p no:cacheprovider || status=1

step "compute-sanitizer memcheck (cuda kernels)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
  "$PY" -m pytest -q -x tests/test_padding.py tests/test_rnn_ops.py tests/test_linear.py tests/test_segment.py \
  tests/test_gpu.py tests/test_gpu_matmul.py tests/test_gpu_persistent_rnn.py \
  -k "cuda-cuda or stream or in_bounds or clamp or (any_k_n and tf32_on and None and (7-9 or 72-200)) or alignment or empty_sequences or past_the_tokens or (float64_within and lstm-64 and bfloat16)" \
  -p no:cacheprovider || status=1

step "compute-sanitizer racecheck and synccheck (shared-memory kernels, a few cases)"
for tool in racecheck synccheck; do
  timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    "$PY" -m pytest -q -x tests/test_rnn_ops.py tests/test_linear.py tests/test_gpu_matmul.py tests/test_gpu_persistent_rnn.py \
    -k "(cuda-cuda and (mixed_unsorted or ragged_bmm_and_outer)) or (any_k_n and tf32_on and gelu and 72-200 and (bfloat16 or float32)) or empty_sequences" \
    -p no:cacheprovider || status=1
done
return $status
}

run_bench() {
[ "$stage" = "bench" ] && { "$PY" -m pip install -q --no-build-isolation --no-deps -e . || return 1; }
step benchmarks
export PADKERN_TRITON_AUTOTUNE=1
"$PY" -m benchmarks.run --rounds 20 --quick || status=1

step "auto table (padkern/auto_table.json)"
"$PY" -m benchmarks.auto_table || status=1

step summary
"$PY" -m benchmarks.summary
return $status
}

if [ "$stage" = "all" ] || [ "$stage" = "test" ]; then
  run_tests 2>&1 | tee "$RESULTS/test.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  deliver
fi
if [ "$stage" = "all" ] || [ "$stage" = "bench" ]; then
  run_bench 2>&1 | tee "$RESULTS/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  deliver
fi
exit $status
