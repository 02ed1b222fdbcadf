//! Cumulative figures never go back: runs, allocated objects and allocated bytes, per job
//! (inclusive and exclusive, so per scope path too) and for the process, compared between
//! consecutive snapshots while writer threads run short nested jobs — through `report()` and
//! through `/metrics`.
//!
//! In the release stress set (`cargo test --release --features stress --test
//! hostile_monotonic`, run by `.ci/run`): 100,000 reports and 10,000 scrapes. In the normal
//! (debug) suite the same tests run 2,000 reports and 300 scrapes.

#[path = "common/reliability.rs"]
mod reliability;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Barrier};

use allocscope::{report, track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const WRITERS: usize = 6;

/// `report()` calls compared pairwise.
const REPORTS: usize = if STRESS { 100_000 } else { 2_000 };
/// `/metrics` scrapes compared pairwise.
#[cfg(feature = "http")]
const SCRAPES: usize = if STRESS { 10_000 } else { 300 };
/// The release stress set.
const STRESS: bool = cfg!(all(feature = "stress", not(debug_assertions)));

/// One round of a writer: a root job with a nested one, and a second root job. Each job has a
/// single scope path (`<p>_outer`, `<p>_outer/<p>_inner`, `<p>_solo`), so a job's exclusive
/// figures are its path's.
fn round(prefix: &str, i: usize) {
    track_scope(&format!("{prefix}_outer"), || {
        black_box(vec![i as u8; 40 + i % 7]);
        track_scope(&format!("{prefix}_inner"), || {
            black_box(Box::new([i as u8; 24]));
        });
    });
    track_scope(&format!("{prefix}_solo"), || {
        let v: Vec<Vec<u8>> = (0..3).map(|k| vec![k as u8; 16]).collect();
        black_box(v);
    });
}

/// Starts `WRITERS` threads running `round` until `stop`.
fn writers(prefix: &'static str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let handles = (0..WRITERS)
        .map(|t| {
            let stop = stop.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    round(prefix, t + n as usize);
                    n += 1;
                }
                n
            })
        })
        .collect();
    start.wait();
    handles
}

/// Remembers the last value of each named counter; fails at the first decrease.
#[derive(Default)]
struct Monotonic {
    last: HashMap<String, u64>,
    compared: u64,
}

impl Monotonic {
    fn see(&mut self, at: usize, name: String, value: u64) {
        if let Some(prev) = self.last.get(&name) {
            self.compared += 1;
            assert!(
                value >= *prev,
                "sample #{at}: {name} went back from {prev} to {value}"
            );
        }
        self.last.insert(name, value);
    }

    fn check(self, what: &str, samples: usize) {
        assert!(self.compared > 0, "{what}: nothing compared");
        eprintln!(
            "{what}: {samples} samples, {} comparisons, no decrease",
            self.compared
        );
    }
}

#[test]
fn report_counters_never_go_back_under_concurrent_flushes() {
    let _wd = reliability::watchdog("monotonic reports", 600);
    allocscope::set_stack_mode(StackMode::Off);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers("mono", &stop);
    let mut m = Monotonic::default();
    for i in 0..REPORTS {
        let r = report();
        for j in r.jobs.iter().filter(|j| j.name.starts_with("mono_")) {
            m.see(i, format!("{} runs", j.name), j.runs);
            m.see(
                i,
                format!("{} allocated.objects", j.name),
                j.allocated.objects,
            );
            m.see(i, format!("{} allocated.bytes", j.name), j.allocated.bytes);
            let ex = j.exclusive.allocated;
            m.see(i, format!("{} path allocated.objects", j.name), ex.objects);
            m.see(i, format!("{} path allocated.bytes", j.name), ex.bytes);
        }
        m.see(
            i,
            "process allocated.objects".into(),
            r.totals.allocated.objects,
        );
        m.see(
            i,
            "process allocated.bytes".into(),
            r.totals.allocated.bytes,
        );
    }
    stop.store(true, Relaxed);
    let rounds: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(rounds > 0);
    m.check("report()", REPORTS);
}

#[cfg(feature = "http")]
#[test]
fn metrics_counters_never_go_back_over_sequential_scrapes() {
    use std::io::{Read, Write};

    let _wd = reliability::watchdog("monotonic scrapes", 600);
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers("scrape", &stop);
    let mut m = Monotonic::default();
    // One keep-alive connection, reopened if the server closes it.
    let mut conn: Option<std::net::TcpStream> = None;
    let mut buf = Vec::new();
    for i in 0..SCRAPES {
        let body = loop {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(std::net::TcpStream::connect(addr).unwrap()),
            };
            let sent = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            match sent.and_then(|()| read_response(c, &mut buf)) {
                Ok(Some(body)) => break body,
                _ => conn = None,
            }
        };
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let counter = line.starts_with("allocscope_job_runs_total")
                || line.starts_with("allocscope_job_allocated_bytes_total")
                || line.starts_with("allocscope_job_allocated_objects_total");
            // Only this test's jobs: `(other)` sums are documented as not monotonic.
            if !counter || !line.contains("job=\"scrape_") {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            m.see(i, name.to_string(), value.parse().unwrap());
        }
    }
    stop.store(true, Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    m.check("/metrics", SCRAPES);

    /// Reads one `200` response with a `Content-Length` body; `None` if the server closed.
    fn read_response(
        c: &mut std::net::TcpStream,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<Option<String>> {
        buf.clear();
        let mut chunk = [0u8; 64 * 1024];
        let (head_end, len) = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .expect("content-length");
                break (p + 4, len);
            }
            let n = c.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_end + len {
            let n = c.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(Some(
            String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap(),
        ))
    }
}
