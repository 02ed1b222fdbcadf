//! `/debug/pprof/heap` and `/debug/pprof/allocs` are built from the snapshot's stacks without
//! building a report (`live_pprof`); they must be the same profile as `Report::to_pprof` of
//! the same moment: same samples in the same order, same labels, values and stacks (frame by
//! frame), same header fields. Unscoped samples are left out of the comparison: the test's
//! own HTTP client allocates unscoped memory between the two profiles.
#![cfg(feature = "http")]

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use allocscope::{track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "support/pprof.rs"]
mod pprof;

use pprof::proto::Profile;
use pprof::{check_well_formed, decode, label, s, stack};

/// The body of `GET path` (HTTP/1.0: the server closes after the response).
fn get_body(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    out[end + 4..].to_vec()
}

/// A sample as text: (job, scope, values, stack), for comparing two profiles whose tables
/// number things differently.
type Row = (String, String, Vec<i64>, Vec<(String, String, i64)>);

/// The samples of jobs (not unscoped memory), in profile order.
fn job_rows(p: &Profile) -> Vec<Row> {
    p.sample
        .iter()
        .filter(|x| label(p, x, "job") != Some("(unscoped)"))
        .map(|x| {
            (
                label(p, x, "job").unwrap().to_string(),
                label(p, x, "scope").unwrap().to_string(),
                x.value.clone(),
                stack(p, x),
            )
        })
        .collect()
}

fn header(p: &Profile) -> (Vec<String>, String, i64, Vec<String>) {
    (
        p.sample_type
            .iter()
            .map(|t| format!("{}/{}", s(p, t.r#type), s(p, t.unit)))
            .collect(),
        s(p, p.default_sample_type).to_string(),
        p.period,
        p.comment.iter().map(|&c| s(p, c).to_string()).collect(),
    )
}

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
    allocscope::set_stack_mode(StackMode::Every);
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
