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
use std::hint::black_box;
use std::time::Instant;

#[path = "../benches/workloads/mod.rs"]
mod workloads;

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
    // One untimed warm-up, as Criterion does.
    black_box((case.run)(workloads::std_spawn));
    let mut wall = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (start, cpu_start) = (Instant::now(), workloads::process_cpu_time());
        black_box((case.run)(workloads::std_spawn));
        wall.push(start.elapsed().as_secs_f64() * 1e3);
        cpu.push((workloads::process_cpu_time() - cpu_start).as_secs_f64() * 1e3);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "{name} {:.3} {:.3} {:.3} {:.3}",
        wall[reps / 2],
        wall[0],
        wall[reps - 1],
        cpu[reps / 2]
    );
}
