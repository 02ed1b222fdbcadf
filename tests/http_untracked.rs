//! The server's allocations are tracker overhead, never a job's or unscoped: many large
//! responses later, the process's tracked allocations (tracker excluded) have barely moved,
//! while the tracker's own allocations grew by at least what it sent. Alone in its binary so
//! that no other test allocates meanwhile.
#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use allocscope::{track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn server_allocations_are_tracker_overhead() {
    common::every();
    let kept: Vec<Vec<u8>> = (0..200)
        .map(|i| track_scope(&format!("untracked_job_{}", i % 20), || vec![0u8; 100 + i]))
        .collect();
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let before = allocscope::report();
    // Read with a fixed buffer: the client side allocates (almost) nothing.
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0usize;
    let mut sockets = Vec::with_capacity(40);
    for i in 0..40 {
        let path = ["/report.json", "/", "/debug/pprof/heap", "/metrics"][i % 4];
        sockets.push(TcpStream::connect(addr).unwrap());
        let s = sockets.last_mut().unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n,
            }
        }
    }
    let after = allocscope::report();
    assert!(sent > 200_000, "the server sent {sent} bytes");
    let grew = after.totals.allocated.bytes - before.totals.allocated.bytes;
    // The client's sockets vector and the reports' own bookkeeping are all that is allowed.
    assert!(
        grew < 16 * 1024,
        "tracked (non-tracker) allocations grew by {grew} bytes while serving {sent}"
    );
    for j in &after.jobs {
        let b = before.job(&j.name).unwrap();
        assert_eq!(j.allocated, b.allocated, "job {} was charged", j.name);
    }
    let tracker_grew =
        after.tracker.overhead_allocated.bytes - before.tracker.overhead_allocated.bytes;
    assert!(
        tracker_grew as usize > sent,
        "the tracker's allocations ({tracker_grew}) include what the server built ({sent})"
    );
    server.shutdown();
    drop(kept);
}
