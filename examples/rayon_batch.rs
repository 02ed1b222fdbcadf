//! Two batch jobs share one rayon pool: `ScopeHandle::wrap` keeps each item charged to its own
//! job, whichever worker runs it (and whatever that worker was doing).
//!
//! Run with `cargo run --release --example rayon_batch --features rayon`.

use allocscope::{current_scope, track_scope, TrackingAllocator};
use rayon::prelude::*;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn parse(line: &str) -> Vec<String> {
    line.split(',').map(str::to_owned).collect()
}

fn main() {
    // Start the pool outside any job: rayon creates its global pool (threads, queues) on first
    // use, and that memory would otherwise be charged to whichever job used it first.
    rayon::ThreadPoolBuilder::new()
        .build_global()
        .expect("the global pool is not started yet");
    let lines: Vec<String> = (0..10_000)
        .map(|i| format!("{i},name-{i},{}", i * 7))
        .collect();
    let numbers: Vec<u64> = (0..10_000).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            track_scope("parse_csv", || {
                let h = current_scope().expect("in a scope");
                let fields: usize = lines
                    .par_iter()
                    .map(h.wrap(|line: &String| parse(line)))
                    .map(|f| f.len())
                    .sum();
                assert_eq!(fields, 30_000);
            })
        });
        s.spawn(|| {
            track_scope("render_numbers", || {
                let h = current_scope().expect("in a scope");
                let text: Vec<String> = numbers
                    .par_iter()
                    .map(h.wrap(|n: &u64| n.to_string()))
                    .collect();
                assert_eq!(text.len(), 10_000);
            })
        });
    });
    let report = allocscope::report();
    println!("{}", report.to_text());
    for name in ["parse_csv", "render_numbers"] {
        let j = report.job(name).expect("ran");
        println!(
            "{name}: {} objects allocated, {} bytes",
            j.allocated.objects, j.allocated.bytes
        );
    }
}
