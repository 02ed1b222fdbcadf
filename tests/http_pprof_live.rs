//! `/debug/pprof/heap` and `/debug/pprof/allocs` are built from the snapshot's stacks without
//! building a report (`live_pprof`); they must be the same profile as `Report::to_pprof` of
//! the same moment: same samples in the same order, same labels, values and stacks (frame by
//! frame), same header fields. Unscoped samples are left out of the comparison: the test's
//! own HTTP client allocates unscoped memory between the two profiles.
#![cfg(feature = "http")]

mod common;

use std::hint::black_box;

use allocscope::{track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/pprof.rs"]
mod pprof;

use pprof::{check_well_formed, decode, get_body, header, job_rows, Row};

#[inline(never)]
fn live_keep_small(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| black_box(vec![i as u8; 40])).collect()
}

#[inline(never)]
fn live_keep_large(n: usize) -> Vec<Vec<u64>> {
    (0..n).map(|i| black_box(vec![i as u64; 100])).collect()
}

#[inline(never)]
fn live_churn(n: usize) -> usize {
    (0..n).map(|i| black_box(vec![0u8; 64 + i]).len()).sum()
}

#[test]
fn live_profile_is_the_report_profile() {
    common::every();
    let kept_a = track_scope("live_pprof_a", || {
        black_box(live_churn(50));
        live_keep_small(300)
    });
    let kept_b = track_scope("live_pprof_b", || {
        track_scope("live_pprof_inner", || live_keep_large(40))
    });
    track_scope("live_pprof_c", || black_box(live_churn(20)));

    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    for (path, default) in [
        ("/debug/pprof/heap", "inuse_space"),
        ("/debug/pprof/allocs", "alloc_space"),
    ] {
        let live = decode(&get_body(addr, path));
        let report = allocscope::report();
        let expected = decode(&report.to_pprof().unwrap());

        if default == "inuse_space" {
            check_well_formed(&live);
        }
        let (types, live_default, period, comments) = header(&live);
        let (e_types, e_default, e_period, e_comments) = header(&expected);
        assert_eq!(live_default, default, "{path}");
        assert_eq!(e_default, "inuse_space");
        assert_eq!((types, period, comments), (e_types, e_period, e_comments));
        assert!(live.time_nanos > 0);

        let rows = job_rows(&live);
        assert_eq!(rows, job_rows(&expected), "{path}: job samples differ");
        // The jobs are really there, with their stacks and exact figures.
        let a: Vec<&Row> = rows.iter().filter(|r| r.0 == "live_pprof_a").collect();
        // The 300 kept vectors of 40 bytes (beside the outer vector of their headers).
        assert!(
            a.iter()
                .any(|r| r.3.iter().any(|f| f.0.contains("live_keep_small"))
                    && (r.2[2], r.2[3]) == (300, 300 * 40)),
            "live_keep_small's 300 blocks: {a:?}"
        );
        assert!(a
            .iter()
            .any(|r| r.3.iter().any(|f| f.0.contains("live_churn")) && r.2[3] == 0));
        let inner = rows
            .iter()
            .find(|r| r.0 == "live_pprof_inner")
            .expect("nested job's sample");
        assert_eq!(inner.1, "live_pprof_b > live_pprof_inner");
        assert!(rows.iter().any(|r| r.0 == "live_pprof_c"));
        // Locations and functions are stored once even though many stacks share frames.
        assert!(live.location.len() < live.sample.iter().map(|x| x.location_id.len()).sum());
    }
    drop((kept_a, kept_b));
    server.shutdown();
}
