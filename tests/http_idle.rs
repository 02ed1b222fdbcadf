//! The live endpoint under idle and slow clients: 1,000 idle connections and 100 slow senders
//! (one header byte per second) do not keep a scrape out; the server stays one thread; the
//! memory an idle connection costs is measured and bounded. And the short case: 20 idle
//! clients plus a half-sent request, then a scrape gets 200.
//!
//! Latency figures are printed (BENCHMARKS.md, "Idle clients"); the test's deadline is
//! generous on purpose (the machine may be loaded), not a performance claim.
#![cfg(feature = "http")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::http::serve;
use allocscope::TrackingAllocator;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// The tests of this file run one at a time: they count threads and the tracker's bytes.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the soft limit on open files to `want` (or the hard limit, if lower); returns the
/// soft limit now in effect.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-parameter for getrlimit/setrlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

/// The server's threads now (`allocscope-http`; the sampler is `allocscope-timeline`).
fn server_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "allocscope-http")
        .count()
}

/// One `/metrics` scrape on a fresh connection; its status line and how long it took.
fn scrape(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        text.contains("allocscope_heap_live_bytes") || !text.starts_with("HTTP/1.1 200"),
        "a full body"
    );
    (text.lines().next().unwrap_or("").to_string(), took)
}

fn tracker_bytes() -> u64 {
    allocscope::report().tracker.overhead.bytes
}

fn rss_bytes() -> u64 {
    allocscope::report().process.rss_bytes
}

#[test]
fn idle_and_slow_clients_do_not_block_a_scrape() {
    let _serial = serial();
    const IDLE: usize = 1000;
    const SLOW: usize = 100;
    let limit = raise_open_files(4096);
    assert!(
        limit >= 2 * (IDLE + SLOW) as u64 + 64,
        "needs {} open files (both ends of each connection), the hard limit is {limit}",
        2 * (IDLE + SLOW) + 64
    );
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let (status, took) = scrape(addr);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    println!("scrape, no other client: {took:?}");
    // Warm the report's caches, then measure what the idle connections add.
    let _ = tracker_bytes();
    let heap_before = tracker_bytes();
    let rss_before = rss_bytes();

    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A scrape behind 1,000 idle connections (each accepted before it, all still open).
    let (status, took_idle) = scrape(addr);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    std::thread::sleep(Duration::from_millis(300));
    let heap_idle = tracker_bytes().saturating_sub(heap_before);
    let rss_idle = rss_bytes().saturating_sub(rss_before);
    let per_conn = heap_idle / IDLE as u64;
    println!(
        "{IDLE} idle connections: scrape {took_idle:?}; heap {heap_idle} B ({per_conn} B per \
         connection), RSS +{rss_idle} B"
    );
    // Bounded: a connection that has sent nothing is a parked task, its socket's registration
    // and its timer; hyper's buffers come with the first byte.
    assert!(
        per_conn <= 4 * 1024,
        "an idle connection costs {per_conn} B of heap"
    );

    // 100 slow clients, one header byte per second each, from one thread.
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nx-slow: yyyyyyyyyyyyyyy";
            let mut sent = 0;
            // Bounded: at most the head's length in seconds.
            while !stop.load(Ordering::Relaxed) && sent < head.len() {
                for s in &mut slow {
                    let _ = s.write_all(&head[sent..sent + 1]);
                }
                sent += 1;
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            slow
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    let heap_slow = tracker_bytes().saturating_sub(heap_before + heap_idle);
    println!(
        "{SLOW} slow clients (a few header bytes sent each): heap {heap_slow} B ({} B per \
         connection)",
        heap_slow / SLOW as u64
    );
    // Bounded: hyper's read buffer (8 KiB, `max_header_bytes` at most) and the parser's state.
    assert!(
        heap_slow / (SLOW as u64) <= 32 * 1024,
        "a slow connection costs {} B of heap",
        heap_slow / SLOW as u64
    );
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (status, took) = scrape(addr);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        worst = worst.max(took);
    }
    println!("{IDLE} idle + {SLOW} slow clients: slowest of 5 scrapes {worst:?}");
    // Generous: the figure itself is in BENCHMARKS.md.
    assert!(worst < Duration::from_secs(10), "scrape took {worst:?}");
    assert_eq!(
        server_threads(),
        1,
        "one server thread, whatever the clients"
    );

    stop.store(true, Ordering::Relaxed);
    let slow = trickler.join().unwrap();
    drop(slow);
    drop(idle);
    server.shutdown();
    assert_eq!(server_threads(), 0, "the server's thread is joined");
}

#[test]
fn twenty_idle_clients_and_a_half_sent_request_then_a_scrape() {
    let _serial = serial();
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nhost: loc")
        .unwrap();
    let (status, took) = scrape(addr);
    println!("20 idle + 1 half-sent: scrape {took:?}");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    drop((idle, half));
    server.shutdown();
}
