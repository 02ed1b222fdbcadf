//! Runs one benchmark workload under the plain `System` allocator and prints how long each
//! repetition took, so that a profiler that attaches from outside the process (heaptrack, via
//! `LD_PRELOAD`) can be timed on exactly the code the Criterion benches measure.
//!
//! ```text
//! cargo run --release --example bench_workload -- churn 5
//! heaptrack -o /tmp/ht target/release/examples/bench_workload churn 5
//! ```
//!
//! Prints one line: `<workload> <median wall ms> <min> <max> <median process CPU ms>`. `scripts/bench.sh` runs it with
//! and without heaptrack and reports the ratio of the medians.

use std::alloc::System;

#[path = "../benches/workloads/mod.rs"]
mod workloads;

#[path = "bench_support/mod.rs"]
mod bench_support;

#[global_allocator]
static GLOBAL: System = System;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "churn".to_string());
    let reps: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let Some(case) = workloads::case(&name) else {
        eprintln!("unknown workload {name:?}; one of: churn, job, threads2, threads4, threads8, churn_small, job_small, threads2_small");
        std::process::exit(2);
    };
    println!(
        "{}",
        bench_support::timed_line(&name, reps, || (case.run)(workloads::std_spawn))
    );
}
