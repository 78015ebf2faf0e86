#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each and prints, per target,
# executions per second, CPU time and crashes. Exits non-zero if any target crashed (or hung,
# or ran out of memory), or if the build failed.
#
#   tests/fuzz.sh SECONDS [TARGET...]       e.g. tests/fuzz.sh 60, tests/fuzz.sh 600 session
#
# Builds with the nightly toolchain and cargo-fuzz (installed from crates.io when missing), with
# debug assertions (integer overflow is a finding) and without a sanitizer (the code is safe
# Rust: coverage-guided search is what matters, and it runs several times faster).
# Each target starts from its committed seeds (fuzz/seeds/TARGET) plus what earlier runs found
# (fuzz/corpus/TARGET, not committed). Crashing inputs are written to fuzz/artifacts/TARGET/;
# reproduce one with fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE.
# Environment: FUZZ_JOBS (targets run at once, default 1), FUZZ_NICE (nice level, default 0),
# FUZZ_RSS_MB (memory limit per target, default 2048), FUZZ_TIMEOUT (seconds one input may
# take before it counts as a hang, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
    echo "usage: tests/fuzz.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1; shift
jobs=${FUZZ_JOBS:-1}
nice_level=${FUZZ_NICE:-0}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout_s=${FUZZ_TIMEOUT:-10}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
echo "fuzz.sh: building ${#targets[@]} target(s)"
build_start=$SECONDS
build() { nice -n "$nice_level" cargo +nightly fuzz build --fuzz-dir fuzz -s none -a "$@" 2>>"$logs/build.log"; }
built=0
if [ $# -eq 0 ]; then
    build || built=$?
else
    for t in "${targets[@]}"; do build "$t" || built=$?; done
fi
if [ "$built" != 0 ]; then
    tail -40 "$logs/build.log" >&2
    echo "fuzz.sh: build failed" >&2
    exit 1
fi
echo "fuzz.sh: built in $((SECONDS - build_start)) s"

# cargo fuzz builds into CARGO_TARGET_DIR when it is set (tests/soak.sh shares one), else fuzz/target.
bin_dir=${CARGO_TARGET_DIR:-fuzz/target}/x86_64-unknown-linux-gnu/release

# One target: runs it, then writes "target execs exec/s cpu_s crashes corpus" to $logs/T.result.
run_one() {
    local t=$1 log=$logs/$1.log
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local before
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    local TIMEFORMAT='%U %S' rc times
    times=$( { time { nice -n "$nice_level" "$bin_dir/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout="$timeout_s" \
        -rss_limit_mb="$rss_mb" -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; \
        echo $? >"$logs/$t.rc"; }; } 2>&1 )
    rc=$(cat "$logs/$t.rc")
    local after execs rate cpu corpus crashes
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cpu=$(echo "$times" | tail -1 | awk '{printf "%.0f", $1 + $2}')
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi
    echo "$t ${execs:-?} ${rate:-?} ${cpu:-?} $crashes $corpus" >"$logs/$t.result"
    if [ "$crashes" != 0 ]; then
        echo "fuzz.sh: $t FAILED (exit $rc); last lines of its log:" >&2
        grep -v '^#' "$log" | tail -30 >&2
    fi
}

running=0
for t in "${targets[@]}"; do
    if [ ! -x "$bin_dir/$t" ]; then
        echo "fuzz.sh: no such target: $t" >&2
        echo "$t - - - 1 -" >"$logs/$t.result"
        continue
    fi
    echo "fuzz.sh: $t for ${seconds} s"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

failed=0
printf '%-16s %12s %10s %8s %8s %8s\n' target execs 'execs/s' 'cpu s' crashes corpus
for t in "${targets[@]}"; do
    read -r name execs rate cpu crashes corpus <"$logs/$t.result"
    printf '%-16s %12s %10s %8s %8s %8s\n' "$name" "$execs" "$rate" "$cpu" "$crashes" "$corpus"
    if [ "$crashes" != 0 ]; then failed=1; fi
done
if [ "$failed" != 0 ]; then
    echo "fuzz.sh: at least one target failed; inputs are in fuzz/artifacts/" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} target(s), ${seconds} s each"
