//! A million runs of a job: the tracker's own memory stays flat.

use std::hint::black_box;

use allocscope::{report, track_scope, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[test]
fn a_million_runs_keep_tracker_memory_flat() {
    // Past 65,535 runs every run slot has been used once and the queue of free slots has its
    // final size (bounded by the slot count), so growth after that would be per-run growth.
    const WARMUP: u64 = 100_000;
    const RUNS: u64 = 1_000_000;
    // Without stacks: symbolizing a first sampled stack maps the binary's debug info, which
    // shows in RSS once (file-backed pages) and would blur what this test measures.
    allocscope::set_stack_mode(allocscope::StackMode::Off);
    for i in 0..WARMUP {
        track_scope("million", || black_box(Box::new(i)));
    }
    // The first report symbolizes whatever stacks exist (parsing debug info, released again
    // afterwards; the resolved frames stay cached); take it before measuring.
    let _ = report();
    // Only its figures are kept: a report is not small (it carries up to 2,176 run events), and
    // keeping it alive would count it in the next report's tracker overhead.
    let before = report().tracker;
    let rss_before = rss_kib();
    for i in WARMUP..RUNS {
        track_scope("million", || black_box(Box::new(i)));
    }
    let after = report();
    let rss_after = rss_kib();
    let job = after.job("million").unwrap();
    assert_eq!(job.runs, RUNS);
    assert_eq!(job.allocated, Usage::new(RUNS, RUNS * 8));
    assert_eq!(job.retained, Usage::new(0, 0));
    assert_eq!(job.recent_runs.len(), allocscope::JobReport::RECENT_RUNS);
    assert_eq!(job.recent_runs.last().unwrap().run, RUNS);
    // The tracker's own live memory does not grow with the number of runs (the run-event
    // store reached its bound during the warm-up).
    let grown = after
        .tracker
        .overhead
        .bytes
        .saturating_sub(before.overhead.bytes);
    assert!(
        grown < 64 * 1024,
        "tracker overhead grew by {grown} bytes over {} runs ({:?} -> {:?})",
        RUNS - WARMUP,
        before.overhead,
        after.tracker.overhead
    );
    assert_eq!(after.tracker.runs_overflowed, 0);
    assert!(
        rss_after.saturating_sub(rss_before) < 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
