#!/usr/bin/env bash
# The GPU run, in stages, each under a hard time limit so that the default run (every stage)
# fits one call of the GPU machine (10 minutes a call, 15 minutes of device time in all, the
# machine's start included, and at most 8 files brought back per call). Uses the machine's own
# torch and triton (the build uses --no-build-isolation: the machine has no network).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [STAGE ...]
#
# STAGE: build, tests, memcheck, racecheck, synccheck, bench; or test (build tests),
# sanitize (build memcheck racecheck synccheck), all (every stage; the default). The build is
# in place and incremental (setup.py build_ext --inplace, ninja), so a second call on a warm
# machine rebuilds nothing.
#
# Output goes to $OUT (the device runner's folder; benchmarks/results/gpu without one),
# written as the run goes, so a stage cut off by a time limit still brings back its log:
#   plan.log            versions, the GPU selection's size, each stage's expected time and limit
#   <stage>.log         build.log, tests.log, sanitizers.log, bench.log
#   tests-outcomes.tsv  one line per test as it ends: outcome, seconds, node id
#   results.tar.gz      (with $OUT) the benchmark JSON/CSV/plots, padkern/auto_table.json and
#                       the plan's test lists, packed after every stage
# The first failing test is printed in full the moment it fails; the run goes on.
#
# --dry-run (or PADKERN_GPU_DRY_RUN=1): everything but the GPU steps, on any machine: the
# extensions must load, the selection is collected as on a GPU (PADKERN_COLLECT_AS_GPU=1),
# sized and planned, each stage's command is printed and its tests collected, the bench plan
# printed, the results packed and delivered (to a fresh temporary folder without $OUT).
set -uo pipefail

if [ "${1:-}" = "__stage" ]; then  # one stage's body, run by the driver below under `timeout`
  stage_body=$2
else
  stage_body=
fi

cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PY="${PYTHON:-python3}"
export PADKERN_CUDA_ARCHS="${PADKERN_CUDA_ARCHS:-90}" MAX_JOBS="${MAX_JOBS:-16}"
# The run fails loudly if either extension fails to load (tests/conftest.py), instead of
# passing without the cases of the missing backend.
export PADKERN_REQUIRE_EXTENSIONS=1

# ----- stage bodies ------------------------------------------------------------------------------
pytest_base() { echo "-q -p no:cacheprovider -p benchmarks.gpu_pytest --tb=short -rfE"; }

body_build() {
  if [ "$DRY" = 1 ]; then
    echo "dry run: no build; the extensions built here must load"
  else
    local start=$SECONDS
    "$PY" setup.py -q build_ext --inplace || return 1
    echo "build took $((SECONDS - start)) s (sm_$PADKERN_CUDA_ARCHS, MAX_JOBS=$MAX_JOBS)"
  fi
  "$PY" -c "import padkern._extension as e; e.require_all(); print('padkern extensions: cpu ok | cuda ok')" || {
    echo "!!! an extension failed to load (the error above); the GPU run stops here"; return 2; }
  [ "$DRY" = 1 ] && return 0
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| capability', torch.cuda.get_device_capability())" || return 2
  # The isolated test worker (tests/isolated.py) drops its address-space cap where CUDA is
  # present; record whether CUDA could have started under it at all.
  if timeout 60 "$PY" -c "import resource; resource.setrlimit(resource.RLIMIT_AS, (16 << 30,) * 2); import torch; torch.ones(1, device='cuda')" 2>/dev/null; then
    echo "CUDA starts under a 16 GiB address-space cap: yes"
  else
    echo "CUDA starts under a 16 GiB address-space cap: no (the isolated worker watches resident memory instead)"
  fi
}

body_tests() {
  local args=( $(pytest_base) --gpu-ids "$WORK/selection.txt" --durations=15 )
  if [ "$DRY" = 1 ]; then
    echo "dry run: would run on the GPU: $PY -m pytest tests ${args[*]} $XDIST $TIMEOUT --gpu-outcomes $OUT/tests-outcomes.tsv"
    PADKERN_COLLECT_AS_GPU=1 "$PY" -m pytest tests "${args[@]}" --collect-only | tail -n 3
    return "${PIPESTATUS[0]}"
  fi
  # One Triton config per kernel (autotuning every test shape would cost minutes).
  PADKERN_TRITON_AUTOTUNE=0 "$PY" -m pytest tests "${args[@]}" $XDIST $TIMEOUT --gpu-outcomes "$OUT/tests-outcomes.tsv"
}

body_sanitizer() {  # memcheck | racecheck | synccheck
  local tool=$1 list ids
  list="$WORK/$([ "$tool" = memcheck ] && echo memcheck || echo racecheck).txt"
  mapfile -t ids < "$list"
  [ "${#ids[@]}" -gt 0 ] || { echo "no $tool cases were collected"; return 1; }
  if [ "$DRY" = 1 ]; then  # the plan has checked that every listed test was collected
    echo "dry run: would run: compute-sanitizer --tool $tool --error-exitcode 9 $PY -m pytest $(pytest_base) ${ids[*]}"
    return 0
  fi
  command -v compute-sanitizer >/dev/null || { echo "!!! compute-sanitizer not found"; return 1; }
  # memcheck: without the caching allocator an access past a tensor is past an allocation
  # (older torch reads the variable's presence, not its value: set it for memcheck alone).
  local uncached=()
  [ "$tool" = memcheck ] && uncached=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
  env "${uncached[@]}" PADKERN_TRITON_AUTOTUNE=0 \
    compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
    "$PY" -m pytest $(pytest_base) "${ids[@]}"
}

body_bench() {
  if [ "$DRY" = 1 ]; then
    "$PY" -m benchmarks.run --quick --plan --device cuda
    return
  fi
  # Autotuned Triton configs: what backend="auto" will run.
  PADKERN_TRITON_AUTOTUNE=1 "$PY" -m benchmarks.run --quick --device cuda --budget-s "$((LIMIT_bench - 15))" || return 1
  "$PY" -m benchmarks.auto_table && "$PY" -m benchmarks.summary
}

if [ -n "$stage_body" ]; then
  case "$stage_body" in
    build) body_build ;;
    tests) body_tests ;;
    memcheck|racecheck|synccheck) body_sanitizer "$stage_body" ;;
    bench) body_bench ;;
  esac
  exit $?
fi

# ----- the driver --------------------------------------------------------------------------------
DRY="${PADKERN_GPU_DRY_RUN:-0}"
requested=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    all) requested+=(build tests memcheck racecheck synccheck bench) ;;
    test) requested+=(build tests) ;;
    sanitize) requested+=(build memcheck racecheck synccheck) ;;
    bench) requested+=(build bench) ;;
    build|tests|memcheck|racecheck|synccheck) requested+=("$arg") ;;
    *) echo "unknown stage or option: $arg (see the top of $0)" >&2; exit 2 ;;
  esac
done
[ "${#requested[@]}" -gt 0 ] || requested=(build tests memcheck racecheck synccheck bench)
stages=()  # in the canonical order, once each
for s in build tests memcheck racecheck synccheck bench; do
  [[ " ${requested[*]} " == *" $s "* ]] && stages+=("$s")
done
export DRY

if [ -z "${OUT:-}" ]; then
  if [ "$DRY" = 1 ]; then OUT=$(mktemp -d); else OUT=$ROOT/benchmarks/results/gpu; PACK=0; fi
fi
export OUT
mkdir -p "$OUT"
export WORK; WORK=$(mktemp -d)
XDIST=; "$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
TIMEOUT=; "$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT="--timeout=120"
export XDIST TIMEOUT

# Stage limits (and the build's expected time) from benchmarks/gpu_plan.py.
eval "$("$PY" -m benchmarks.gpu_plan --env)"

log_of() { case "$1" in memcheck|racecheck|synccheck) echo sanitizers.log ;; *) echo "$1.log" ;; esac; }

pack() {  # the results in one archive (the runner brings back 8 files a call)
  [ "${PACK:-1}" = 1 ] || return 0
  local files=()
  for f in benchmarks/results/gpu/*.json benchmarks/results/gpu/*.csv benchmarks/results/gpu/*.png padkern/auto_table.json; do
    [ -e "$f" ] && files+=("$f")
  done
  mkdir -p "$WORK/plan" && cp "$WORK"/*.txt "$WORK/plan/" 2>/dev/null
  tar -czf "$OUT/results.tar.gz.part" "${files[@]}" -C "$WORK" plan && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
}

plan() {  # collect the tests, size the selection, print each stage's expected time
  local collect=( "$PY" -m pytest --collect-only -q -p no:cacheprovider tests )
  echo "=== plan $(date -u +%FT%TZ) ==="
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| triton', triton.__version__)"
  if [ "$DRY" = 1 ]; then PADKERN_COLLECT_AS_GPU=1 "${collect[@]}" > "$WORK/collected.txt" 2>&1; else "${collect[@]}" > "$WORK/collected.txt" 2>&1; fi
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "!!! collection failed (rc $rc):"; grep -v "::" "$WORK/collected.txt" | tail -n 40
  fi
  "$PY" -m benchmarks.gpu_plan "$WORK/collected.txt" --write "$WORK" --stages "$(IFS=,; echo "${stages[*]}")" \
    --workers "$([ -n "$XDIST" ] || [ "$DRY" = 1 ] && echo 8 || echo 1)" --env-out "$WORK/expected.env" || rc=1
  echo "xdist: ${XDIST:-absent, one process$([ "$DRY" = 1 ] && echo '; the plan assumes -n 8, as on the GPU machine')} | per-test timeout: ${TIMEOUT:-absent}"
  echo "output: $OUT | dry run: $DRY"
  return "$rc"
}

status=0
run_stage() {
  local name=$1 limit_var="LIMIT_$1" expected_var="EXPECTED_$1" log
  log=$(log_of "$name")
  local limit=${!limit_var} start=$SECONDS rc
  { echo; echo "=== $name: expected ${!expected_var:-?} s, limit $limit s, $(date -u +%T) ==="; } | tee -a "$OUT/$log"
  timeout -k 10 "$limit" bash "$ROOT/benchmarks/gpu_check.sh" __stage "$name" 2>&1 | tee -a "$OUT/$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "!!! $name: cut off at its $limit s limit" | tee -a "$OUT/$log"
  echo "=== $name: exit $rc after $((SECONDS - start)) s ===" | tee -a "$OUT/$log"
  pack
  return "$rc"
}

planned=0
for stage in "${stages[@]}"; do
  if [ "$stage" != build ] && [ "$planned" = 0 ]; then
    plan 2>&1 | tee -a "$OUT/plan.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    # shellcheck disable=SC1091
    source "$WORK/expected.env"
    planned=1
  fi
  run_stage "$stage"
  rc=$?
  if [ "$rc" != 0 ]; then
    status=1
    if [ "$stage" = build ]; then echo "!!! the build failed: nothing else can run"; break; fi
  fi
done
if [ "$planned" = 0 ]; then pack; fi
echo "gpu_check: stages ${stages[*]}: $([ "$status" = 0 ] && echo passed || echo FAILED); output in $OUT"
ls -l "$OUT"
rm -rf "$WORK"
exit "$status"
