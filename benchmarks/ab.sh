#!/usr/bin/env bash
# Same-run A/B of the performance guard: this work tree against a commit (default HEAD~1).
#
#   bash benchmarks/ab.sh [commit] [rounds] [guard arguments: --only TEXT, --wall]
#
# Builds each side's CPU extension in its own temporary clone (the work tree's uncommitted
# changes copied into the "new" one), then runs benchmarks.guard on old and new in turn,
# `rounds` times (default 2), so both see the same host and the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-HEAD~1}"
rounds="${2:-2}"
shift $(( $# < 2 ? $# : 2 ))
PY="$PWD/.venv/bin/python"
work="$(mktemp -d /tmp/padkern-ab.XXXXXX)"
git clone -q . "$work/old" && git -C "$work/old" checkout -q "$(git rev-parse "$base")"
# Both sides are timed by the work tree's guard: its cases and floors, not the old commit's.
rm -rf "$work/old/benchmarks" && cp -r benchmarks "$work/old/benchmarks"
git clone -q . "$work/new"
git ls-files -z --modified --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$work/new"
for side in old new; do
  (cd "$work/$side" && PADKERN_NO_CUDA=1 "$PY" setup.py -q build_ext --inplace >"$work/$side.build.log" 2>&1) \
    || { echo "building $side failed: $work/$side.build.log"; exit 1; }
done
for round in $(seq "$rounds"); do
  for side in old new; do
    echo "== $side ($([ $side = old ] && git rev-parse --short "$base" || echo 'work tree')), round $round"
    (cd "$work/$side" && PYTHONPATH="$work/$side" "$PY" -m benchmarks.guard --cpu-only "$@") || true
  done
done
rm -rf "$work"
