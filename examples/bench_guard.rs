//! Costs of the production guardrails (BENCHMARKS.md, "Guardrails"), in one process:
//!
//! 1. **The memory-line check** below the line: the watcher thread checking every 1 ms for
//!    `SECONDS` seconds, its own CPU time (from `/proc/self/task/<tid>/stat`) per check (a
//!    lower bound: the checks are counted as one per millisecond), then its CPU share at the
//!    default interval (25 ms), measured the same way (clock ticks: 10 ms resolution).
//! 2. **A memory-line dump** of a process with `CALLSITES` distinct retained callsites (exact
//!    stacks): the dump is triggered by a line below the current RSS; its time, the files'
//!    sizes, and its peak memory: allocscope's own bytes at their highest (the tracker's peak,
//!    which nothing before the dump raised) less what it held before, and the process's
//!    `VmHWM` (peak RSS) growth.
//!
//! `cargo run --release --features pprof --example bench_guard -- [CALLSITES] [SECONDS]`
//! (default 8192 callsites, 3 s). Prints `key value` lines.

#[path = "../tests/common/distinct_stacks.rs"]
mod distinct_stacks;

use std::time::{Duration, Instant};

use allocscope::timeline::{dump_above, set_dump_above, DumpAbove, MemoryLine};
use allocscope::{track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) of the thread named `name`, in seconds.
fn thread_cpu(name: &str) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the state.
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        return Some((utime + stime) / ticks);
    }
    None
}

fn main() {
    let mut args = std::env::args().skip(1);
    let callsites: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8192);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    allocscope::set_stack_mode(StackMode::Every);
    let dir = tempfile::tempdir().unwrap();

    // 1. The check below the line: a line far above RSS, checked every millisecond.
    track_scope("setup", || ());
    set_dump_above(Some(
        DumpAbove::new(MemoryLine::Bytes(1 << 40))
            .dir(dir.path())
            .check_every(Duration::from_millis(1)),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let cpu0 = thread_cpu("allocscope-memw").unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = thread_cpu("allocscope-memw").unwrap_or(0.0);
    let wall = t0.elapsed().as_secs_f64();
    // At most one check per millisecond (fewer when the thread wakes late).
    let checks = wall * 1000.0;
    let per_check_us = (cpu1 - cpu0) / checks * 1e6;
    println!("check_interval_ms 1");
    println!("check_cpu_seconds {:.4}", cpu1 - cpu0);
    println!("check_cpu_us_per_check {per_check_us:.2}");
    println!(
        "check_cpu_share_at_25ms_percent {:.4}",
        per_check_us / 25_000.0 * 100.0
    );
    // The same at the default interval: the CPU share it really takes.
    set_dump_above(Some(
        DumpAbove::new(MemoryLine::Bytes(1 << 40)).dir(dir.path()),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let cpu0 = thread_cpu("allocscope-memw").unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = thread_cpu("allocscope-memw").unwrap_or(0.0);
    println!(
        "check_cpu_share_measured_at_25ms_percent {:.4}",
        (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0
    );
    set_dump_above(None).unwrap();

    // 2. The dump of a process with many callsites.
    let mut blocks = Vec::with_capacity(callsites as usize);
    track_scope("many_callsites", || {
        for bits in 0..callsites {
            distinct_stacks::rec_a(callsites.ilog2().max(1), bits, 64, &mut blocks);
        }
    });
    // 2a. One report(), built and dropped: the baseline the dump adds its renderings to.
    let hwm0 = status_bytes("VmHWM");
    let rss0 = status_bytes("VmRSS");
    let t = Instant::now();
    let figures = allocscope::report();
    let report_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("callsites {}", figures.callsites.len());
    println!("rss_before_bytes {rss0}");
    println!("report_ms {report_ms:.1}");
    println!(
        "report_tracker_peak_bytes {}",
        figures.tracker.overhead_peak_bytes
    );
    drop(figures);
    let hwm1 = status_bytes("VmHWM");
    println!("report_vmhwm_growth_bytes {}", hwm1.saturating_sub(hwm0));

    // 2b. The dump (a line below RSS: the next check crosses it).
    let started = Instant::now();
    set_dump_above(Some(
        DumpAbove::new(MemoryLine::Bytes(1 << 20))
            .dir(dir.path())
            .check_every(Duration::from_millis(1)),
    ))
    .unwrap();
    while dump_above().map_or(true, |s| s.dumps_written == 0 && s.last_error.is_none()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = started.elapsed();
    let hwm2 = status_bytes("VmHWM");
    let status = dump_above().unwrap();
    set_dump_above(None).unwrap();
    assert!(status.last_error.is_none(), "{status:?}");
    println!("dump_ms {:.1}", took.as_secs_f64() * 1e3);
    for f in &status.last_files {
        let name = f.to_string_lossy();
        let ext = if name.ends_with(".pb.gz") {
            "pprof"
        } else if name.ends_with(".html") {
            "html"
        } else {
            "json"
        };
        println!("file_{ext}_bytes {}", std::fs::metadata(f).unwrap().len());
    }
    println!(
        "dump_vmhwm_growth_beyond_report_bytes {}",
        hwm2.saturating_sub(hwm1)
    );
    let after = allocscope::report();
    println!(
        "tracker_peak_after_dump_bytes {}",
        after.tracker.overhead_peak_bytes
    );
    distinct_stacks::free_blocks(blocks, 64);
}
