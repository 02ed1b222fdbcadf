//! The timeline sampler's cost per sample with many jobs: N jobs (each holding one block), the
//! sampler at 1 ms, the process otherwise idle for a few seconds; prints process CPU per sample
//! (all of it is the sampler's: the main thread sleeps).
//!
//! ```text
//! cargo run --release --example bench_sampler -- 10 1000 10000
//! ```
//!
//! Each job count runs in a child process of its own (jobs are never removed from the registry).

use std::time::Duration;

use allocscope::{report, track_scope, TrackingAllocator};

#[path = "../benches/workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: TrackingAllocator = TrackingAllocator::system();

/// Seconds the sampler runs per measurement.
const SECONDS: u64 = 3;

fn measure(jobs: usize) {
    let names: Vec<String> = (0..jobs).map(|i| format!("job_{i}")).collect();
    let kept: Vec<Box<[u8; 16]>> = names
        .iter()
        .map(|n| track_scope(n, || Box::new([0u8; 16])))
        .collect();
    allocscope::timeline::start(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(200)); // first samples, glibc probe
    let before = report().timeline_stats.samples_taken;
    let c0 = workloads::process_cpu_time();
    std::thread::sleep(Duration::from_secs(SECONDS));
    let c1 = workloads::process_cpu_time();
    let after = report().timeline_stats.samples_taken;
    allocscope::timeline::stop();
    let samples = after.saturating_sub(before).max(1);
    let cpu = (c1 - c0).as_secs_f64();
    println!(
        "{jobs:>6} jobs: {samples:>5} samples in {SECONDS} s, {:>8.1} us CPU per sample, {:>5.1}% of a core",
        cpu * 1e6 / samples as f64,
        cpu * 100.0 / SECONDS as f64
    );
    drop(kept);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [one] = args.as_slice() {
        if let Some(n) = one.strip_prefix("child=") {
            measure(n.parse().expect("a job count"));
            return;
        }
    }
    let counts: Vec<usize> = if args.is_empty() {
        vec![10, 1_000, 10_000]
    } else {
        args.iter()
            .map(|a| a.parse().expect("job counts"))
            .collect()
    };
    let exe = std::env::current_exe().expect("own path");
    for n in counts {
        let status = std::process::Command::new(&exe)
            .arg(format!("child={n}"))
            .status()
            .expect("child");
        assert!(status.success());
    }
}
