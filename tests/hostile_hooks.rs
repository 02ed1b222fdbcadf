//! A hook that runs a job: the run it starts finishes inside the hook, on the same thread,
//! and must not call the hooks again (else each hook's run would call them again, until the
//! stack overflows).

use std::sync::atomic::{AtomicU64, Ordering::*};

use allocscope::{report, track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn a_hook_that_runs_a_job_is_not_called_for_that_job() {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let id = allocscope::on_run_finished(|r| {
        CALLS.fetch_add(1, Relaxed);
        // A plain hook that runs a job, as a logging hook would.
        let line = track_scope("hook_log", || format!("{} done", r.job));
        std::hint::black_box(line);
    });
    for i in 0..100 {
        track_scope("hook_work", || std::hint::black_box(vec![i as u8; 64]));
    }
    allocscope::remove_hook(id);
    // Once per `hook_work` run; the `hook_log` runs (inside the hook) call no hook.
    assert_eq!(CALLS.load(Relaxed), 100);
    let r = report();
    assert_eq!(r.job("hook_work").unwrap().runs, 100);
    // The hook's own job is counted like any other.
    let log = r.job("hook_log").unwrap();
    assert_eq!(log.runs, 100);
    assert!(log.allocated.objects >= 100);
    // Hooks work again after a hook returned (the guard is per call, not sticky).
    let after = allocscope::on_run_finished(|_| {
        CALLS.fetch_add(1000, Relaxed);
    });
    track_scope("hook_work", || ());
    allocscope::remove_hook(after);
    assert_eq!(CALLS.load(Relaxed), 1100);
}
