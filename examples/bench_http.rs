//! Cost of being scraped (BENCHMARKS.md, "Live endpoint"): time and peak extra RSS of the 10th
//! `/debug/pprof/heap` and `/metrics` request, and the slowdown of allocating threads while the
//! heap profile is scraped every 100 ms.
//!
//! ```text
//! cargo run --release --features http --example bench_http -- worker
//! cargo run --release --features http --example bench_http -- callsites 20000
//! cargo run --release --features http --example bench_http -- callsites 100000
//! BENCH_COLD=1 cargo run --release --features http --example bench_http -- callsites 100000
//! cargo run --release --features http --example bench_http -- slowdown [CALLSITES]
//! ```
//!
//! Peak extra RSS: the kernel's peak-RSS mark (`VmHWM`) is reset (`/proc/self/clear_refs` = 5)
//! before the request, then read after it, minus the RSS before it. Linux only; the client is
//! in-process (a socket read into a fixed buffer), so the figure is the server's.
// One heap block per object, on purpose: each is a callsite's allocation.
#![allow(clippy::vec_box)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::{track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One GET; returns (wall time, bytes received, peak extra RSS in KiB).
fn scrape(addr: SocketAddr, path: &str) -> (Duration, usize, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let took = started.elapsed();
    let peak = status_kib("VmHWM:");
    (took, got, peak.saturating_sub(rss_before))
}

/// Requests `path` `requests` times (at least 10); prints the 1st, the 10th, and the median
/// from the 10th on (the machine is shared: one request can be preempted), with the largest
/// peak extra RSS from the 10th on.
fn tenth(addr: SocketAddr, path: &str, requests: usize) {
    let mut runs = Vec::new();
    for _ in 0..requests.max(10) {
        runs.push(scrape(addr, path));
    }
    let mut steady: Vec<Duration> = runs[9..].iter().map(|r| r.0).collect();
    steady.sort();
    let peak = runs[9..].iter().map(|r| r.2).max().unwrap_or(0);
    println!(
        "{path:<18} 1st {:>8.2} ms (peak extra RSS {:>6.1} MiB)  10th {:>8.2} ms  \
         median from 10th {:>8.2} ms  {:>8} bytes  peak extra RSS {:>6.1} MiB",
        runs[0].0.as_secs_f64() * 1e3,
        runs[0].2 as f64 / 1024.0,
        runs[9].0.as_secs_f64() * 1e3,
        steady[steady.len() / 2].as_secs_f64() * 1e3,
        runs[9].1,
        peak as f64 / 1024.0
    );
}

// ---- the worker example's jobs (a smaller copy: the figures depend on their shapes) ----

static CACHE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[inline(never)]
fn render_report(seed: u64) -> usize {
    let lines: Vec<String> = (0..1_000_000)
        .map(|i| format!("row {i}: value {}", (seed + i) % 10_000))
        .collect();
    black_box(lines.iter().map(|l| l.len()).sum())
}

#[inline(never)]
fn sync_customers(batch: u64) -> usize {
    let mut c = CACHE.lock().unwrap();
    for i in 0..5_000 {
        c.push(format!("customer-{batch}-{i}"));
    }
    c.len()
}

#[inline(never)]
fn export(n: u64) -> u64 {
    let rows: Vec<(u64, String)> = (0..n).map(|i| (i, format!("{i}"))).collect();
    black_box(rows.iter().map(|r| r.0).sum())
}

fn worker_state() {
    for round in 0..4 {
        track_scope("render_report", || render_report(round));
        track_scope("sync_customers", || sync_customers(round));
        track_scope("export_all", || export(200_000));
    }
}

// ---- many distinct callsites: a binary tree of calls, one allocation per leaf path ----

#[inline(never)]
fn left(bits: u64, depth: u32, keep: &mut Vec<Box<[u8; 32]>>) {
    step(black_box(bits), depth, keep);
    black_box(1u32); // differs from `right`, so the compiler cannot merge the two
}

#[inline(never)]
fn right(bits: u64, depth: u32, keep: &mut Vec<Box<[u8; 32]>>) {
    step(black_box(bits), depth, keep);
    black_box(2u64);
}

#[inline(never)]
fn step(bits: u64, depth: u32, keep: &mut Vec<Box<[u8; 32]>>) {
    if depth == 0 {
        keep.push(black_box(Box::new([1u8; 32])));
        return;
    }
    if bits & 1 == 0 {
        left(bits >> 1, depth - 1, keep)
    } else {
        right(bits >> 1, depth - 1, keep)
    }
}

fn callsite_state(n: u64) -> Vec<Box<[u8; 32]>> {
    let depth = 64 - (n - 1).leading_zeros();
    allocscope::set_max_frames(2 * depth as usize + 16);
    let mut keep = Vec::with_capacity(n as usize);
    track_scope("many_callsites", || {
        for bits in 0..n {
            step(bits, depth, &mut keep);
        }
    });
    keep
}

fn slowdown(callsites: u64) {
    // 4 threads allocate and free in jobs for a fixed amount of work; timed without, then
    // with, a heap scrape every 100 ms. Alternating rounds; the median of each.
    worker_state();
    let _keep = if callsites > 0 {
        callsite_state(callsites)
    } else {
        Vec::new()
    };
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let work = || {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let started = Instant::now();
                    for i in 0..200u64 {
                        track_scope(&format!("alloc_{t}"), || {
                            let v: Vec<Vec<u8>> =
                                (0..2_000).map(|j| vec![(i + j) as u8; 64]).collect();
                            black_box(v.len())
                        });
                    }
                    started.elapsed()
                })
            })
            .collect();
        let mut total = Duration::ZERO;
        for t in threads {
            total += t.join().unwrap();
        }
        total / 4
    };
    let mut quiet = Vec::new();
    let mut scraped = Vec::new();
    let mut scrapes = 0u64;
    for _ in 0..5 {
        quiet.push(work());
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let scraper = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    scrape(addr, "/debug/pprof/heap");
                    count.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        scraped.push(work());
        stop.store(true, Ordering::Relaxed);
        scraper.join().unwrap();
        scrapes += count.load(Ordering::Relaxed);
    }
    quiet.sort();
    scraped.sort();
    let (q, s) = (quiet[2], scraped[2]);
    println!(
        "{callsites} extra callsites; allocating threads (4 × 200 runs × 2,000 blocks): {:.1} ms \
         quiet, {:.1} ms while /debug/pprof/heap is scraped every 100 ms ({scrapes} scrapes): \
         {:+.1}%",
        q.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        (s.as_secs_f64() / q.as_secs_f64() - 1.0) * 100.0
    );
    server.shutdown();
}

fn main() {
    allocscope::set_stack_mode(StackMode::Every);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("worker");
    if what == "slowdown" {
        slowdown(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0));
        return;
    }
    let _keep = match what {
        "worker" => {
            worker_state();
            Vec::new()
        }
        "callsites" => {
            let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
            callsite_state(n)
        }
        other => panic!("unknown mode {other}: worker, callsites N, slowdown"),
    };
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    if std::env::var_os("BENCH_COLD").is_some() {
        // No report before the scrapes: the 1st pprof scrape symbolizes every stack.
        println!(
            "{what}: cold (nothing symbolized yet); RSS {:.1} MiB",
            status_kib("VmRSS:") as f64 / 1024.0
        );
    } else {
        let r = allocscope::report();
        println!(
            "{what}: {} callsites, {} stacks; RSS {:.1} MiB",
            r.callsites.len(),
            r.tracker.stacks,
            status_kib("VmRSS:") as f64 / 1024.0
        );
    }
    if std::env::var_os("BENCH_SPLIT").is_some() {
        for _ in 0..3 {
            let t = Instant::now();
            let r = allocscope::report();
            let t1 = t.elapsed();
            let gz = r.to_pprof().unwrap();
            println!(
                "split: report() {:.1} ms, to_pprof {:.1} ms ({} bytes)",
                t1.as_secs_f64() * 1e3,
                (t.elapsed() - t1).as_secs_f64() * 1e3,
                gz.len()
            );
        }
    }
    let requests = if what == "worker" { 20 } else { 10 };
    tenth(server.local_addr(), "/metrics", 20);
    tenth(server.local_addr(), "/debug/pprof/heap", requests);
    server.shutdown();
}
