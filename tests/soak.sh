#!/usr/bin/env bash
# Runs the whole suite N times in a row, each time from a fresh clone of HEAD, and prints one
# line per run and a summary: a suite that fails one run in ten is found here, not in CI.
#   tests/soak.sh [N] [PYTEST_ARGS...]   (default 10; extra arguments go to run.sh, i.e. pytest)
# Each run is a new `git clone` (no leftovers from the work tree); the runs share one cargo
# target directory so only the first one compiles everything (its tmp/ is emptied between runs).
# Logs stay in $SOAK_DIR (default: a new directory under /tmp), one file per run.
set -uo pipefail
n=${1:-10}
shift || true
case $n in '' | *[!0-9]*) echo "usage: tests/soak.sh [N]" >&2; exit 2 ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${SOAK_DIR:-$(mktemp -d /tmp/sealgate-soak.XXXXXX)}
mkdir -p "$dir"
export CARGO_TARGET_DIR="$dir/target"
head=$(git -C "$repo" rev-parse --short HEAD)
echo "soak: $n runs of tests/run.sh at $head, logs in $dir"
passed=0
for i in $(seq 1 "$n"); do
    clone="$dir/clone-$i"
    rm -rf "$clone" "$CARGO_TARGET_DIR/tmp"
    git clone -q "$repo" "$clone"
    start=$(date +%s)
    if (cd "$clone" && ./tests/run.sh "$@") >"$dir/run-$i.log" 2>&1; then
        result=passed
        passed=$((passed + 1))
    else
        result=FAILED
    fi
    summary=$(grep -E '^(test result:|[0-9]+ (passed|failed)|=+ .*(passed|failed))' "$dir/run-$i.log" \
        | grep -E 'passed|failed' | tail -1)
    echo "soak: run $i/$n $result in $(($(date +%s) - start)) s  ${summary}"
    [ "$result" = passed ] && rm -rf "$clone"
done
echo "soak: $passed/$n runs passed"
[ "$passed" = "$n" ]
