#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU: build padkern, run the GPU tests (the
# kernel tests again under compute-sanitizer memcheck with the caching allocator
# off, so out-of-bounds accesses surface), run the GPU benchmarks, print a short
# table last. Uses the machine's own torch.
#
#   bash benchmarks/gpu_check.sh test    build, GPU tests, sanitizers (about 5 minutes)
#   bash benchmarks/gpu_check.sh bench   GPU benchmarks and the summary table (after `test`)
#   bash benchmarks/gpu_check.sh         both
set -uo pipefail
stage="${1:-all}"
cd "$(dirname "$0")/.."
export PADKERN_CUDA_ARCHS="${PADKERN_CUDA_ARCHS:-90}"
export MAX_JOBS="${MAX_JOBS:-16}"
PY="${PYTHON:-python3}"
status=0
step() { echo; echo "=== $* ==="; }

if [ "$stage" = "all" ] || [ "$stage" = "test" ]; then
step build
"$PY" -m pip install -q --no-build-isolation --no-deps -e . || exit 1
"$PY" -c "import torch, padkern._extension as e; print(torch.__version__, torch.cuda.get_device_name(), 'cuda ext:', e.CUDA_MISSING or 'ok')"

# Tests: one Triton config per kernel (autotuning every test shape would cost minutes).
export PADKERN_TRITON_AUTOTUNE=0

step "GPU tests"
"$PY" -m pytest -q --maxfail=20 tests -k "cuda or gpu or half" -p no:cacheprovider || status=1

step "compute-sanitizer memcheck (cuda kernels)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
  "$PY" -m pytest -q -x tests/test_padding.py tests/test_rnn_ops.py tests/test_linear.py tests/test_segment.py \
  tests/test_gpu.py -k "cuda-cuda or stream or in_bounds or clamp" \
  -p no:cacheprovider || status=1

step "compute-sanitizer racecheck and synccheck (shared-memory kernels, a few cases)"
for tool in racecheck synccheck; do
  timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    "$PY" -m pytest -q -x tests/test_rnn_ops.py tests/test_linear.py \
    -k "cuda-cuda and (mixed_unsorted or ragged_bmm_and_outer)" -p no:cacheprovider || status=1
done

fi

if [ "$stage" = "all" ] || [ "$stage" = "bench" ]; then
[ "$stage" = "bench" ] && "$PY" -m pip install -q --no-build-isolation --no-deps -e .
step benchmarks
export PADKERN_TRITON_AUTOTUNE=1
"$PY" -m benchmarks.run --rounds 20 --quick || status=1

step summary
"$PY" -m benchmarks.summary
fi
exit $status
