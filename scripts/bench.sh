#!/usr/bin/env bash
# Runs every benchmark binary (System, allocscope in each configuration, dhat-rs) and heaptrack
# on the same workloads, and prints the table of ratios to System (medians) that BENCHMARKS.md
# records.
#
#   scripts/bench.sh [ROUNDS] [CRITERION_FILTER]
#
# ROUNDS (default 1): the binaries run one after another, so on a busy machine System and the
#   tracker can see different load. With ROUNDS > 1 each round measures everything again and
#   each configuration keeps its lowest Criterion median over the rounds (load from other
#   processes only adds time); ratios are taken between those.
# CRITERION_FILTER: a regex passed to Criterion (e.g. '^churn') to run fewer workloads.
# Environment: CARGO_TARGET_DIR (default target), HEAPTRACK=0 to skip heaptrack,
#   HEAPTRACK_REPS (default 5) repetitions per heaptrack measurement, BENCH_CLOCK=cpu to
#   measure process CPU time instead of wall time (see benches/workloads/mod.rs `Clock`).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-1}
FILTER=${2:-}
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/allocscope-bench"
RESULTS="$OUT/results-${BENCH_CLOCK:-wall}.tsv"
mkdir -p "$OUT"
: >"$RESULTS"

cargo bench --bench system --bench allocscope --bench dhat --no-run
cargo build --release --example bench_workload
WORKLOAD="$TARGET/release/examples/bench_workload"

collect() { # round marker: medians of every estimate written since the marker
    find "$TARGET/criterion" -path '*/new/estimates.json' -newer "$2" | while read -r f; do
        dir=${f%/new/estimates.json}
        config=${dir##*/}
        group=${dir%/*}
        group=${group##*/}
        printf '%s\t%s\t%s\t%s\n' "$1" "$group" "$config" "$(jq '.median.point_estimate' "$f")"
    done >>"$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
    for bench in system allocscope dhat; do
        marker="$OUT/.marker"
        touch "$marker"
        sleep 1 # estimates written within the marker's mtime second still count as newer
        cargo bench --bench "$bench" -- ${FILTER:+"$FILTER"}
        collect "$round" "$marker"
    done
    if [ "${HEAPTRACK:-1}" != 0 ] && command -v heaptrack >/dev/null; then
        for w in churn job threads2; do
            if [ -n "$FILTER" ] && ! [[ $w =~ $FILTER ]]; then continue; fi
            reps=${HEAPTRACK_REPS:-5}
            if [ "${BENCH_CLOCK:-wall}" = cpu ]; then
                # heaptrack's unwinding runs in the traced process, its interpretation and
                # compression in heaptrack_interpret: count both (user + system CPU of the
                # whole command and its children), against the same for the plain run.
                # Per repetition (the untimed warm-up run counts as one more), in ms.
                cpu_of() { /usr/bin/time -f '%U %S' -o "$OUT/time" "$@" >/dev/null 2>&1
                    awk -v r="$reps" '{print ($1 + $2) * 1000 / (r + 1)}' "$OUT/time"; }
                plain=$(cpu_of "$WORKLOAD" "$w" "$reps")
                traced=$(cpu_of heaptrack -o "$OUT/heaptrack.$w" "$WORKLOAD" "$w" "$reps")
            else
                # In-process wall-time medians.
                plain=$("$WORKLOAD" "$w" "$reps" | awk '{print $2}')
                traced=$(heaptrack -o "$OUT/heaptrack.$w" "$WORKLOAD" "$w" "$reps" |
                    awk -v w="$w" '$1 == w {print $2}')
            fi
            rm -f "$OUT/heaptrack.$w".*
            # ms, converted to ns like Criterion's.
            printf '%s\t%s\tsystem_process\t%s\n' "$round" "$w" "$(awk -v t="$plain" 'BEGIN{print t*1e6}')" >>"$RESULTS"
            printf '%s\t%s\theaptrack\t%s\n' "$round" "$w" "$(awk -v t="$traced" 'BEGIN{print t*1e6}')" >>"$RESULTS"
        done
    fi
done

python3 - "$RESULTS" <<'PY'
import collections, statistics, sys

rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
t = collections.defaultdict(dict)  # (round, group) -> config -> ns
for rnd, group, config, ns in rows:
    t[(rnd, group)][config] = float(ns)
# Other processes on a shared machine only ever add time, so each configuration's figure is
# its lowest Criterion median over the rounds, and the ratio is taken between those.
best = collections.defaultdict(dict)  # group -> config -> lowest ns over rounds
for (rnd, group), by in t.items():
    for config, ns in by.items():
        best[group][config] = min(ns, best[group].get(config, float("inf")))
ratios, base_ms = {}, {}
for group, by in best.items():
    if "system" in by:
        base_ms[group] = [by["system"] / 1e6]
    for config, ns in by.items():
        base = by.get("system_process" if config == "heaptrack" else "system")
        if base and config not in ("system", "system_process"):
            ratios[(group, config)] = [ns / base]
configs = ["outside", "off", "sampled", "every", "every_dwarf", "every_dwarf16", "dhat",
           "heaptrack"]
groups = ["churn", "job", "threads2", "threads4", "threads8",
          "churn_small", "job_small", "threads2_small"]
groups = [g for g in groups if g in base_ms] + sorted(set(base_ms) - set(groups))
print()
print("| workload | System (ms) | " + " | ".join(configs) + " |")
print("|---|---:|" + "---:|" * len(configs))
for g in groups:
    cells = []
    for c in configs:
        r = ratios.get((g, c))
        cells.append(f"{statistics.median(r):.2f}×" if r else "–")
    print(f"| {g} | {statistics.median(base_ms[g]):.1f} | " + " | ".join(cells) + " |")
rounds = len({r for r, *_ in rows})
import os
clock = os.environ.get("BENCH_CLOCK", "wall")
print(f"\n{clock} time; lowest Criterion median over {rounds} round(s); "
      f"raw figures in {sys.argv[1]}")
PY
