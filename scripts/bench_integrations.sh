#!/usr/bin/env bash
# Costs of the integrations (BENCHMARKS.md, "Integrations: tracing, tower, rayon"):
#  1. examples/bench_integrations.rs built in this repository (frame pointers on, see
#     .cargo/config.toml), ROUNDS alternating rounds, medians;
#  2. the same source built as a user's crate would be: a separate crate outside this
#     repository (so without its rustflags) depending on allocscope by path;
#  3. instructions per span enter+exit under callgrind (deterministic whatever the load), if
#     valgrind is installed.
#
#   scripts/bench_integrations.sh [ROUNDS]     (default 11)
# Environment: USER_BENCH_DIR (default /tmp/allocscope-user-bench), the user crate's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-11}
REPO=$PWD
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --all-features --example bench_integrations
echo "== in-repo build (frame pointers on), $ROUNDS rounds"
"$TARGET/release/examples/bench_integrations" "$ROUNDS"

USER_DIR=${USER_BENCH_DIR:-/tmp/allocscope-user-bench}
case "$USER_DIR" in "$REPO"/*) echo "USER_BENCH_DIR must be outside the repository" >&2; exit 2 ;; esac
mkdir -p "$USER_DIR/src"
cp examples/bench_integrations.rs "$USER_DIR/src/main.rs"
cp Cargo.lock "$USER_DIR/Cargo.lock" # the versions this repository tested
cat >"$USER_DIR/Cargo.toml" <<EOF
[package]
name = "allocscope-user-bench"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
allocscope = { path = "$REPO", features = ["tracing", "tower", "rayon"] }
tokio = { version = "1", features = ["rt-multi-thread", "net", "time"] }
tracing = "0.1"
tracing-subscriber = { version = "0.3", default-features = false, features = ["registry", "std"] }
axum = { version = "0.8", default-features = false, features = ["tokio", "http1", "matched-path"] }
hyper-util = { version = "0.1", features = ["client-legacy", "http1", "tokio"] }
http = "1"
http-body-util = "0.1"
tower = { version = "0.5", default-features = false, features = ["util"] }
rayon = "1.10"

[profile.release]
debug = "line-tables-only"

[workspace]
EOF
(cd "$USER_DIR" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS cargo build --release --quiet)
echo "== user build (separate crate, no rustflags), $ROUNDS rounds"
"$USER_DIR/target/release/allocscope-user-bench" "$ROUNDS"

if command -v valgrind >/dev/null; then
    echo "== instructions per operation (callgrind, user build): (count(N2) - count(N1)) / (N2 - N1)"
    count() {
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            "$USER_DIR/target/release/allocscope-user-bench" count "$1" "$2" 2>&1 |
            awk '/Collected/ {print $4}'
    }
    while IFS='|' read -r name n1 n2; do
        a=$(count "$name" "$n1")
        b=$(count "$name" "$n2")
        printf '%-62s %8d\n' "$name" $(((b - a) / (n2 - n1)))
    done <<'CASES'
unselected enter+exit, registry only|1000|101000
unselected enter+exit, registry + no-op layer|1000|101000
unselected enter+exit, registry + ScopeLayer|1000|101000
selected enter+exit, registry + ScopeLayer|1000|101000
span create+close, registry + no-op layer|1000|21000
selected span create+close (one run), + ScopeLayer|1000|21000
request in process, no layer|1000|6000
request in process, ScopeLayer::by_route|1000|6000
one empty run (reference)|1000|21000
trivial call, plain|1000|101000
trivial call, wrapped|1000|101000
CASES
fi
