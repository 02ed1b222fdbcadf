//! `/debug/pprof/heap` of a process that records no stacks (`StackMode::Off` from the start):
//! the live profile takes the per-job fallback, one sample per job with its exclusive
//! figures under a `[job] NAME` pseudo-frame, the same as `Report::to_pprof` of the same
//! moment. (Its own process: the stack mode is global, and `tests/http_pprof_live.rs` needs
//! stacks on.)
#![cfg(feature = "http")]

use std::hint::black_box;

use allocscope::{track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/pprof.rs"]
mod pprof;

use pprof::{check_well_formed, decode, get_body, header, job_rows};

#[test]
fn live_profile_without_stacks_is_one_sample_per_job() {
    allocscope::set_stack_mode(StackMode::Off);
    let kept = track_scope("off_keeper", || {
        (0..50)
            .map(|i| black_box(vec![i as u8; 100]))
            .collect::<Vec<_>>()
    });
    track_scope("off_churn", || black_box(vec![0u8; 4096]).len());

    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let live = decode(&get_body(server.local_addr(), "/debug/pprof/heap"));
    let report = allocscope::report();
    assert!(report.callsites.is_empty(), "stacks are off");
    let expected = decode(&report.to_pprof().unwrap());
    check_well_formed(&live);
    assert_eq!(header(&live), header(&expected));

    let rows = job_rows(&live);
    assert_eq!(rows, job_rows(&expected));
    let keeper = rows
        .iter()
        .find(|r| r.0 == "off_keeper")
        .expect("off_keeper's sample");
    assert_eq!(keeper.3.len(), 1, "one pseudo-frame");
    assert_eq!(keeper.3[0].0, "[job] off_keeper");
    // Exclusive figures: 50 kept vectors of 100 bytes (and the outer vector of their headers).
    assert!(keeper.2[2] >= 50 && keeper.2[3] >= 50 * 100, "{keeper:?}");
    let churn = rows.iter().find(|r| r.0 == "off_churn").unwrap();
    assert_eq!((churn.2[0], churn.2[1], churn.2[3]), (1, 4096, 0));
    drop(kept);
    server.shutdown();
}
