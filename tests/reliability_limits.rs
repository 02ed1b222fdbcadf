//! Every fixed-capacity table, when full, is reported in `TrackerStats` — never a silent drop —
//! and counts stay exact through the overflow entries. One test, phases in order, because a
//! full table is process-wide state.
//!
//! Limits (RELIABILITY.md): 16,384 job names (later names → `(other jobs)`), 65,536 scope
//! paths (later → the overflow path), 65,535 concurrent runs (later runs have no per-run
//! figures). (The stack and site tables, 2^18 entries each, report `stacks_dropped`; filling
//! them takes 250,000+ distinct stacks, and a report of that many callsites is too large for
//! this suite: see RELIABILITY.md.)

#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;

use allocscope::{report, track_scope, FutureExt, StackMode, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn full_tables_are_reported_and_counts_stay_exact() {
    let _wd = reliability::watchdog("table limits", 300);
    allocscope::set_stack_mode(StackMode::Off);

    // --- Concurrent runs: 65,535 run slots. Futures start their run when created.
    let futures: Vec<_> = (0..65_600)
        .map(|_| async {}.track_scope("l_concurrent"))
        .collect();
    let r = report();
    assert_eq!(
        r.tracker.runs_overflowed,
        65_600 - 65_535,
        "runs beyond the table"
    );
    assert_eq!(r.job("l_concurrent").unwrap().active_runs, 65_600);
    drop(futures); // each dropped future finishes its run
    let r = report();
    let j = r.job("l_concurrent").unwrap();
    assert_eq!(
        (j.runs, j.active_runs),
        (65_600, 0),
        "overflowed runs still counted"
    );
    // Slots are free again.
    let (_, run) = allocscope::track_scope_run("l_after_runs", || black_box(Box::new(5u32)));
    assert_eq!(run.allocated, Usage::new(1, 4));
    assert_eq!(report().tracker.runs_overflowed, 65);

    // --- Paths: 65,536 (nestings of job names). 300 × 300 nested pairs exceed it.
    let names: Vec<String> = (0..300).map(|i| format!("l_path_{i}")).collect();
    let mut blocks = Vec::with_capacity(300 * 300);
    'outer: for (i, a) in names.iter().enumerate() {
        for (k, b) in names.iter().enumerate() {
            track_scope(a, || {
                track_scope(b, || blocks.push(black_box(Box::new(0u64))))
            });
            if i * 300 + k > 66_000 {
                break 'outer;
            }
        }
    }
    let r = report();
    assert!(
        r.tracker.paths_overflowed > 0,
        "path table never reported full"
    );
    assert!(r.tracker.paths >= 65_000, "paths {}", r.tracker.paths);
    // Counts stay exact through the overflow path: every job of the test still adds up.
    let total: u64 = names
        .iter()
        .filter_map(|n| r.job(n))
        .map(|j| j.exclusive.allocated.objects)
        .sum::<u64>()
        + r.job(allocscope::JobReport::OTHER_JOBS_NAME)
            .map_or(0, |j| j.exclusive.allocated.objects);
    assert_eq!(total, blocks.len() as u64, "no allocation lost in overflow");
    drop(blocks);

    // --- Job names: 16,384. Names beyond are merged into "(other jobs)", and say so.
    let before = r.tracker.jobs;
    assert_eq!(r.tracker.jobs_overflowed, 0);
    for n in 0..16_384 {
        track_scope(&format!("l_name_{n}"), || black_box(Box::new(1u8)));
    }
    let r = report();
    assert!(
        r.tracker.jobs_overflowed > 0,
        "job table never reported full"
    );
    assert_eq!(r.tracker.jobs, 16_383, "named jobs, (other jobs) excluded");
    assert!(before < 16_383);
    let other_before = r.job(allocscope::JobReport::OTHER_JOBS_NAME).unwrap().runs;
    for i in 0..100 {
        track_scope(&format!("l_late_name_{i}"), || black_box(Box::new(2u16)));
    }
    let r = report();
    assert!(
        r.job("l_late_name_5").is_none(),
        "no entry beyond the limit"
    );
    let other = r.job(allocscope::JobReport::OTHER_JOBS_NAME).unwrap();
    assert_eq!(
        other.runs - other_before,
        100,
        "late names' runs go to (other jobs)"
    );
    assert!(r.tracker.jobs_overflowed >= 100);
    assert!(r.to_text().contains(allocscope::JobReport::OTHER_JOBS_NAME));
    drop(r);
}
