//! Runs that cannot be measured say so. A `.track_scope()` future that is
//! forgotten keeps its run slot for good; after 65,535 of them every later run found no slot
//! and reported zeros, so `MemoryCheck::no_leaks()` passed on a leaking job, `track_scope_run`
//! returned zeros and a run keeping 2 MiB wrote no automatic dump. Now: a check measures its
//! run's allocated and retained figures exactly all the same (from its own job) and fails with
//! the cause named when it has a peak limit; the `RunReport` is flagged `unmeasured`; the text
//! report warns; the dump is decided by what the job holds. One test: the exhausted table is
//! process-wide state.

#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::sync::Mutex;

use allocscope::testing::{CheckFailure, MemoryCheck};
use allocscope::{
    report, track_scope, track_scope_run, AutoDump, FutureExt, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

// One allocation per box is the point: each is the leaked object.
#[allow(clippy::vec_box)]
static KEPT: Mutex<Vec<Box<[u8; 64]>>> = Mutex::new(Vec::new());

#[test]
fn forgotten_futures_never_make_later_runs_report_zeros() {
    let _wd = reliability::watchdog("unmeasured runs", 300);
    let dir = tempfile::tempdir().unwrap();
    allocscope::set_auto_dump(Some(AutoDump::new(dir.path()).threshold_bytes(1 << 20)));
    KEPT.lock().unwrap().reserve(16);

    // Before: measured, flag absent from JSON.
    let (_, run) = track_scope_run("u_before", || black_box(vec![0u8; 100]));
    assert!(!run.unmeasured);
    assert!(!serde_json::to_string(&run).unwrap().contains("unmeasured"));

    // 65,535 futures forgotten: every run slot is held for good.
    for _ in 0..65_535 {
        std::mem::forget(async {}.track_scope("u_forgotten"));
    }

    // The leak check finds the leak (it passed on zeros): exact figures from the check's job.
    let result = MemoryCheck::new("u_leak")
        .no_leaks()
        .run(|| KEPT.lock().unwrap().push(Box::new([1u8; 64])));
    match result {
        Err(CheckFailure::Exceeded { figures, .. }) => {
            assert!(figures.run.unmeasured);
            assert_eq!(figures.retained, Usage::new(1, 64));
            assert_eq!(figures.allocated, Usage::new(1, 64));
            assert!(
                figures.notes.iter().any(|n| n.contains("run slot")),
                "{:?}",
                figures.notes
            );
        }
        other => panic!("expected the leak to be found, got {other:?}"),
    }
    // A clean job passes, with exact figures.
    let figures = MemoryCheck::new("u_clean")
        .no_leaks()
        .max_allocated_objects(2)
        .run(|| black_box(vec![0u8; 300]).len())
        .unwrap();
    assert_eq!(figures.allocated, Usage::new(1, 300));
    assert_eq!(figures.retained, Usage::default());
    // A peak limit cannot be checked: the check fails, naming the cause.
    let result = MemoryCheck::new("u_peak")
        .max_peak_bytes(1 << 20)
        .run(|| black_box(vec![0u8; 300]).len());
    match result {
        Err(e @ CheckFailure::Unmeasured { .. }) => {
            let text = e.to_string();
            assert!(text.contains("run slots"), "{text}");
            assert!(text.contains("std::mem::forget"), "{text}");
        }
        other => panic!("expected CheckFailure::Unmeasured, got {other:?}"),
    }

    // track_scope_run flags its report.
    let (_, run) = track_scope_run("u_run", || black_box(vec![0u8; 100]));
    assert!(run.unmeasured, "{run:?}");
    assert!(serde_json::to_string(&run)
        .unwrap()
        .contains("\"unmeasured\":true"));
    // The job's own figures stay exact all the same.
    let r = report();
    assert_eq!(r.job("u_run").unwrap().allocated.objects, 1);
    assert!(r.tracker.runs_overflowed >= 2);
    // The text report says so.
    let text = r.to_text();
    assert!(text.contains("were not measured"), "{text}");

    // A run keeping 2 MiB is dumped: judged by what its job holds.
    let big = track_scope("u_big", || black_box(vec![3u8; 2 << 20]));
    let dumps: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        dumps.iter().any(|n| n.contains("u_big-run1")),
        "no dump for the 2 MiB run: {dumps:?}"
    );
    // A run keeping nothing is not.
    track_scope("u_small", || black_box(vec![0u8; 10]).len());
    let after = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(after, dumps.len());
    allocscope::set_auto_dump(None);
    drop(big);
}
