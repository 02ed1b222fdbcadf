//! Runs one benchmark workload under `allocscope::TrackingAllocator` in one configuration and
//! prints how long each repetition took: the counterpart of `bench_workload` (plain `System`)
//! for profiling the hot path with tools that want a single plain process (callgrind, perf).
//!
//! ```text
//! cargo build --release --example bench_tracked
//! valgrind --tool=callgrind target/release/examples/bench_tracked off churn_small 1
//! ```
//!
//! Configurations: `outside`, `off`, `sampled`, `every`, `every_dwarf` (as in
//! `benches/allocscope.rs`). Prints `<workload> <median wall ms> <min> <max> <median process CPU ms>`.

use std::thread::JoinHandle;

use allocscope::{StackMode, TrackingAllocator, Unwinder};

#[path = "../benches/workloads/mod.rs"]
mod workloads;

#[path = "bench_support/mod.rs"]
mod bench_support;

#[global_allocator]
static GLOBAL: TrackingAllocator = TrackingAllocator::system();

fn scoped_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64> {
    allocscope::spawn(f)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = args.first().map_or("off", String::as_str);
    let name = args.get(1).map_or("churn", String::as_str);
    let reps: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let Some(case) = workloads::case(name) else {
        eprintln!("unknown workload {name:?}");
        std::process::exit(2);
    };
    let (mode, unwinder, scoped) = match config {
        "outside" => (StackMode::default(), Unwinder::FramePointers, false),
        "off" => (StackMode::Off, Unwinder::FramePointers, true),
        "sampled" => (StackMode::default(), Unwinder::FramePointers, true),
        "every" => (StackMode::Every, Unwinder::FramePointers, true),
        "every_dwarf" => (StackMode::Every, Unwinder::Dwarf, true),
        other => {
            eprintln!("unknown configuration {other:?}: outside, off, sampled, every, every_dwarf");
            std::process::exit(2);
        }
    };
    allocscope::set_stack_mode(mode);
    allocscope::set_unwinder(unwinder);
    let run = || {
        if scoped {
            allocscope::track_scope("bench", || (case.run)(scoped_spawn))
        } else {
            (case.run)(workloads::std_spawn)
        }
    };
    println!("{}", bench_support::timed_line(name, reps, run));
}
