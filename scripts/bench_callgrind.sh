#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of the benchmark workloads under System and
# under allocscope in each configuration: a reproducible measure of the hot path's cost that,
# unlike wall time, does not depend on what else the machine is doing.
#
#   scripts/bench_callgrind.sh [EXAMPLES_DIR] [WORKLOADS...]
#
# EXAMPLES_DIR defaults to $CARGO_TARGET_DIR/release/examples (build it first with
# `cargo build --release --example bench_workload --example bench_tracked`). Workloads default
# to the reduced sizes (churn_small job_small threads2_small). For single-threaded workloads only
# instructions executed inside the workload functions are counted (process start-up excluded);
# for `threads*` the whole process is counted (the thread bodies are inlined into std's thread
# start in some binaries, so a name filter would miss them). Prints
# `workload config instructions ratio-to-System`.
set -euo pipefail
DIR=${1:-${CARGO_TARGET_DIR:-target}/release/examples}
shift || true
WORKLOADS=${*:-churn_small job_small threads2_small}
CONFIGS=${CONFIGS:-outside off sampled every}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

count() { # workload out-file command...
    local toggle=(--toggle-collect='*workloads::*')
    [[ $1 == threads* ]] && toggle=()
    valgrind --tool=callgrind "${toggle[@]}" --callgrind-out-file="$2" "${@:3}" \
        2>&1 >/dev/null | awk '/Collected/ {print $NF}'
}

for w in $WORKLOADS; do
    base=$(count "$w" "$OUT/sys" "$DIR/bench_workload" "$w" 1)
    printf '%s\tsystem\t%s\t1.000\n' "$w" "$base"
    for c in $CONFIGS; do
        n=$(count "$w" "$OUT/$c" "$DIR/bench_tracked" "$c" "$w" 1)
        printf '%s\t%s\t%s\t%s\n' "$w" "$c" "$n" "$(awk -v a="$n" -v b="$base" 'BEGIN{printf "%.3f", a/b}')"
    done
done
