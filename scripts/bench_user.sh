#!/usr/bin/env bash
# The user-build harness (benches/user-build/): builds allocscope as a dependency of a separate
# crate twice — without frame pointers (a user's default) and with `-C force-frame-pointers=yes`
# — and runs System, allocscope (outside / off / sampled / every, and libgcc DWARF), dhat-rs and
# heaptrack on the same workloads in alternating shuffled rounds. Prints the tables that
# BENCHMARKS.md records (median per-round ratio to System and its range; CPU, wall, peak RSS).
#
#   scripts/bench_user.sh [ROUNDS] [ub_run options...]
#
# ROUNDS defaults to 5. Options go to ub_run (see benches/user-build/src/bin/ub_run.rs), e.g.
#   scripts/bench_user.sh 7 --workloads churn,job --no-heaptrack
#   scripts/bench_user.sh 3 --mem            # the memory table (10 million live blocks)
#   scripts/bench_user.sh 5 --configs off,sampled
# Environment: CARGO_TARGET_DIR (default target); the builds go to $CARGO_TARGET_DIR/user-build/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
ROUNDS=${1:-5}
shift || true

cd benches/user-build
# No frame pointers: benches/user-build/.cargo/config.toml restores the compiler's default.
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$TARGET/user-build/nofp" \
    cargo build --release --quiet
# Frame pointers everywhere, as the repository's own builds (RUSTFLAGS overrides all config).
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR="$TARGET/user-build/fp" \
    cargo build --release --quiet --bin ub_system --bin ub_allocscope
cd "$ROOT"

"$TARGET/user-build/nofp/release/ub_run" \
    --nofp "$TARGET/user-build/nofp/release" --fp "$TARGET/user-build/fp/release" \
    --rounds "$ROUNDS" --raw "$TARGET/user-build/results.tsv" "$@"
echo
echo "raw figures: $TARGET/user-build/results.tsv"
