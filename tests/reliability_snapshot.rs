//! Snapshots agree with themselves while 64 threads run jobs: a job's figures include every
//! allocation of every run the snapshot counts as finished (report, mark, report_since), the
//! guarantee of the one snapshot path (`report::snapshot`, RELIABILITY.md).

#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Barrier};

use allocscope::{mark, report, report_since, track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Objects each run allocates, exactly.
const PER_RUN: u64 = 7;

/// One run: exactly `PER_RUN` allocations, all freed.
fn seven(name: &str) {
    track_scope(name, || {
        for i in 0..PER_RUN as usize {
            black_box(Box::new([i as u8; 24]));
        }
    });
}

/// `threads` workers running `jobs` job names until stopped.
fn workers(
    prefix: &'static str,
    threads: usize,
    jobs: usize,
    stop: &Arc<AtomicBool>,
    start: &Arc<Barrier>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let names: Vec<String> = (0..jobs).map(|j| format!("{prefix}_{j}")).collect();
                start.wait();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    seven(&names[(t + n as usize) % jobs]);
                    n += 1;
                }
                n
            })
        })
        .collect()
}

#[test]
fn no_snapshot_has_fewer_allocations_than_its_finished_runs_imply() {
    let _wd = reliability::watchdog("consistent snapshots", 300);
    allocscope::set_stack_mode(StackMode::Off);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(65));
    let handles = workers("snap", 64, 8, &stop, &start);
    start.wait();
    let mut bad = Vec::new();
    let snapshots = 400;
    for i in 0..snapshots {
        let r = report();
        for j in r.jobs.iter().filter(|j| j.name.starts_with("snap_")) {
            if j.allocated.objects < PER_RUN * j.runs {
                bad.push(format!(
                    "snapshot {i}: {} runs {} but allocated {} objects",
                    j.name, j.runs, j.allocated.objects
                ));
            }
        }
    }
    stop.store(true, Relaxed);
    let runs: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(runs > 0);
    assert!(
        bad.is_empty(),
        "{} of {snapshots} snapshots contradict themselves, e.g.:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // And once quiet, exact.
    let r = report();
    let total: u64 = r
        .jobs
        .iter()
        .filter(|j| j.name.starts_with("snap_"))
        .map(|j| j.runs)
        .sum();
    assert_eq!(total, runs);
    for j in r.jobs.iter().filter(|j| j.name.starts_with("snap_")) {
        assert_eq!(j.allocated.objects, PER_RUN * j.runs, "{}", j.name);
    }
}

#[test]
fn a_mark_never_leaves_out_allocations_of_runs_it_counts_as_finished() {
    // A mark that read the shared counters, then the threads' pending ones, then the run
    // counts would count a run that finished in between without its allocations, so
    // `report_since` would show them as new. With every worker stopped before
    // `report_since`, each run since the mark finished, so its allocations since the mark are
    // at most PER_RUN per run it counts.
    let _wd = reliability::watchdog("consistent marks", 300);
    allocscope::set_stack_mode(StackMode::Off);
    let mut bad = Vec::new();
    let rounds = 150;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(9));
        let handles = workers("mark", 8, 2, &stop, &start);
        start.wait();
        std::thread::yield_now();
        let m = mark();
        stop.store(true, Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        let since = report_since(&m);
        for j in since.jobs.iter().filter(|j| j.name.starts_with("mark_")) {
            if j.allocated.objects > PER_RUN * j.runs {
                bad.push(format!(
                    "round {round}: {} has {} runs since the mark but {} objects",
                    j.name, j.runs, j.allocated.objects
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {rounds} marks missed finished runs' allocations, e.g.:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}
