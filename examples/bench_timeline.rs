//! The cost of the timeline: an allocating workload under `TrackingAllocator`, with
//! the sampler off, at 1 s and at 10 ms, measured alternately in the same process (rounds in
//! rotating order, medians), and the cost of finishing a run (which records its event and its
//! trend point).
//!
//! ```text
//! cargo run --release --example bench_timeline -- 9
//! ```
//!
//! Prints, per workload and sampler setting, the median wall and process CPU time in ms and
//! the ratio to "sampler off"; then ns per empty `track_scope` run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use allocscope::{track_scope, StackMode, TrackingAllocator};

#[path = "../benches/workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: TrackingAllocator = TrackingAllocator::system();

fn scoped_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> std::thread::JoinHandle<u64> {
    allocscope::spawn(f)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(9)
        .max(1);
    allocscope::set_stack_mode(StackMode::default());
    let settings: [(&str, Option<Duration>); 3] = [
        ("off", None),
        ("1s", Some(Duration::from_secs(1))),
        ("10ms", Some(Duration::from_millis(10))),
    ];
    println!("workload  sampler  wall ms  cpu ms  wall/off  cpu/off  ({rounds} rounds, medians)");
    for name in ["churn", "threads4"] {
        let case = workloads::case(name).expect("workload");
        let run = || track_scope("bench", || (case.run)(scoped_spawn));
        black_box(run()); // warm-up
        let mut wall = vec![Vec::new(); settings.len()];
        let mut cpu = vec![Vec::new(); settings.len()];
        for round in 0..rounds {
            for k in 0..settings.len() {
                let i = (round + k) % settings.len();
                match settings[i].1 {
                    Some(d) => allocscope::timeline::start(d),
                    None => allocscope::timeline::stop(),
                }
                let (t0, c0) = (Instant::now(), workloads::process_cpu_time());
                black_box(run());
                wall[i].push(t0.elapsed().as_secs_f64() * 1e3);
                cpu[i].push((workloads::process_cpu_time() - c0).as_secs_f64() * 1e3);
            }
        }
        allocscope::timeline::stop();
        let meds: Vec<(f64, f64)> = (0..settings.len())
            .map(|i| (median(&mut wall[i]), median(&mut cpu[i])))
            .collect();
        for (i, (w, c)) in meds.iter().enumerate() {
            println!(
                "{name:<9} {:<8} {w:>8.1} {c:>7.1} {:>9.3} {:>8.3}",
                settings[i].0,
                w / meds[0].0,
                c / meds[0].1
            );
        }
    }
    // The sampler's own cost: CPU per sample while the process is otherwise idle.
    let before = allocscope::report().timeline_stats.samples_taken;
    let c0 = workloads::process_cpu_time();
    allocscope::timeline::start(Duration::from_millis(1));
    std::thread::sleep(Duration::from_secs(3));
    allocscope::timeline::stop();
    let cpu = (workloads::process_cpu_time() - c0).as_secs_f64();
    let r = allocscope::report();
    let taken = r.timeline_stats.samples_taken - before;
    println!(
        "sampler: {taken} samples in 3 s at 1 ms, {:.0} µs of CPU per sample ({} paths, {} jobs)",
        cpu * 1e6 / taken.max(1) as f64,
        r.tracker.paths,
        r.tracker.jobs
    );
    // Finishing a run: the run slot, the job's recent runs and trend point, the event store.
    let n = 1_000_000u32;
    let mut per_run = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..n {
            track_scope("tiny", || black_box(i));
        }
        per_run.push(t0.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    println!(
        "empty track_scope run: {:.0} ns (median of 5 × 1,000,000)",
        median(&mut per_run)
    );
    // Concurrent finishes on 4 threads (the event store's lock is shared).
    let mut per_run4 = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..n / 4 {
                        track_scope("tiny4", || black_box(i));
                    }
                });
            }
        });
        per_run4.push(t0.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    println!(
        "empty track_scope run, 4 threads: {:.0} ns wall per run (median of 5 × 1,000,000)",
        median(&mut per_run4)
    );
}
