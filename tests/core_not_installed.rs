//! A library user who forgot `#[global_allocator]`: nothing crashes, reports are empty, and the
//! documented checks say so. (This file deliberately installs no allocator.)

use allocscope::{report, track_scope, FutureExt, Usage};

#[test]
fn track_scope_without_the_allocator_runs_the_job_and_reports_nothing() {
    assert!(!allocscope::is_installed());
    let v = track_scope("forgotten", || vec![1u8; 1000]);
    assert_eq!(v.len(), 1000);
    let (n, run) = allocscope::track_scope_run("forgotten", || 7);
    assert_eq!(n, 7);
    assert_eq!(run.allocated, Usage::default());
    let h = track_scope("forgotten", || allocscope::spawn(|| vec![0u8; 10]));
    assert_eq!(h.join().unwrap().len(), 10);
    let fut = async { 5 }.track_scope("forgotten_async");
    drop(fut);

    let r = report();
    assert!(!r.tracker.installed);
    let job = r.job("forgotten").unwrap();
    assert_eq!(job.runs, 3, "runs are still counted");
    assert_eq!(job.allocated, Usage::default());
    assert_eq!(job.retained, Usage::default());
    assert_eq!(r.totals.live, Usage::default());
    assert!(r
        .to_text()
        .contains("no allocation went through allocscope::TrackingAllocator"));
}
