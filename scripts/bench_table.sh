#!/usr/bin/env bash
# The BENCHMARKS.md top table and the README performance table, from ONE run of the user-build
# harness (benches/user-build: a separate crate, release, no frame pointers):
#
#  1. CPU time ratios to System: `ub_run`, ROUNDS alternating shuffled rounds (default 5), every
#     workload under System, the two floors (`floor_header`: allocscope's header, no counting;
#     `floor_count`: per-thread counting, no header) and allocscope off / sampled / every.
#  2. Instruction counts (callgrind, deterministic: what decisions are made on when the
#     machine is loaded) of the 1/10-size workloads under the same binaries.
#
#   scripts/bench_table.sh [ROUNDS] [OUT]      # OUT defaults to benches/results/latest.md
#
# Takes about 6 minutes for 5 rounds on an idle 2-core machine (1: ~4 min, 2: ~2 min); about
# twice that on a loaded one. SKIP_CALLGRIND=1 skips part 2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
ROUNDS=${1:-5}
OUT=${2:-$ROOT/benches/results/latest.md}
BIN=$TARGET/user-build/nofp/release
START=$(date +%s)

(cd benches/user-build &&
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$TARGET/user-build/nofp" \
        cargo build --release --quiet)

{
    echo "# User-build harness, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
    echo
    echo "Machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Command: scripts/bench_table.sh $ROUNDS"
    "$BIN/ub_run" --nofp "$BIN" --rounds "$ROUNDS" --no-heaptrack \
        --configs floor_header,floor_count,off,sampled,every \
        --raw "$TARGET/user-build/results.tsv" 2>/dev/null
} >"$OUT.tmp"

if [ -z "${SKIP_CALLGRIND:-}" ] && command -v valgrind >/dev/null; then
    CG=$(mktemp -d)
    {
        echo
        echo "Instructions (callgrind, whole process, 1/10-size workloads), ratio to System:"
        echo
        echo "| workload | System | floor_header | floor_count | off | sampled |"
        echo "|---|---:|---:|---:|---:|---:|"
        for w in churn_small job_small threads_small serde_small serde_values_small \
            serde_pretty_small serde_typed_small serde_docs_small; do
            row="| $w |"
            base=
            for c in "ub_system system" "ub_header h8" "ub_count count" \
                "ub_allocscope off" "ub_allocscope sampled"; do
                set -- $c
                n=$(valgrind --tool=callgrind --callgrind-out-file="$CG/out" "$BIN/$1" "$w" "$2" 2>&1 |
                    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
                if [ -z "$base" ]; then
                    base=$n
                    row="$row $((n / 1000000)) M |"
                else
                    row="$row $(awk -v a="$n" -v b="$base" 'BEGIN { printf "%.3f×", a / b }') |"
                fi
            done
            echo "$row"
        done
    } >>"$OUT.tmp"
    rm -rf "$CG"
fi
echo >>"$OUT.tmp"
echo "Took $(( $(date +%s) - START )) s." >>"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
