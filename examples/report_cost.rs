//! The cost of building reports with many callsites (figures in
//! BENCHMARKS.md): records N distinct stacks (N from the command line, default 20,000; the
//! stress test builds 100,000), then times `report()` several times (the first symbolizes
//! every stack; later ones have nothing new to symbolize), `write_json`, `read_json`, and
//! reports the JSON size and the process's peak RSS.
//!
//! ```sh
//! cargo run --release --example report_cost -- 100000
//! ```

use std::time::Instant;

use allocscope::{report, track_scope, Report, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "../tests/common/distinct_stacks.rs"]
mod distinct_stacks;
use distinct_stacks::{free_blocks, rec_a};

/// Levels of the recursion: 2^17 > 100,000 distinct paths.
const LEVELS: u32 = 17;

// A recursion through one of two call sites per level, following the bits of a number: each
// number gives its own stack.
/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The report once more (for the inline comparison, after the measured read).
fn back_again(path: &std::path::Path) -> Report {
    Report::read_json(path).unwrap()
}

/// Resets the peak-RSS mark (Linux `clear_refs`), so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    allocscope::set_stack_mode(StackMode::Every);
    let mut blocks: Vec<usize> = Vec::with_capacity(n as usize);
    track_scope("callsites", || {
        for i in 0..n {
            rec_a(LEVELS, i, 24, &mut blocks);
        }
    });
    allocscope::set_stack_mode(StackMode::Off);
    println!(
        "callsites: {n}; peak RSS after recording: {} MiB",
        peak_rss_mib()
    );
    let mut last = None;
    for i in 1..=4 {
        reset_peak();
        let t = Instant::now();
        let r = report();
        let s = t.elapsed().as_secs_f64();
        println!(
            "report() #{i}: {s:.3} s ({} callsites), peak RSS {} MiB",
            r.callsites.len(),
            peak_rss_mib()
        );
        last = Some(r);
    }
    let r = last.unwrap();
    // The floor of any report: copying its data (every callsite's frames, twice: in the
    // report's list and in its job's).
    let t = Instant::now();
    let copy = r.clone();
    println!("Report::clone: {:.3} s", t.elapsed().as_secs_f64());
    drop(copy);
    let dir = std::env::temp_dir().join(format!("allocscope-report-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    reset_peak();
    let t = Instant::now();
    r.write_json(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "write_json: {:.3} s, {:.1} MB, peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        size as f64 / 1e6,
        peak_rss_mib()
    );
    drop(r);
    reset_peak();
    let t = Instant::now();
    let back = Report::read_json(&path).unwrap();
    println!(
        "read_json: {:.3} s ({} callsites), peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        back.callsites.len(),
        peak_rss_mib()
    );
    drop(back);
    let r = back_again(&path);
    // The same report with every callsite's frames inline (the version-1 layout), as plain
    // serde writes it, for comparison.
    let inline = dir.join("inline.json");
    let t = Instant::now();
    serde_json::to_writer_pretty(
        std::io::BufWriter::new(std::fs::File::create(&inline).unwrap()),
        &r,
    )
    .unwrap();
    let inline_size = std::fs::metadata(&inline).unwrap().len();
    println!(
        "inline frames (version-1 layout, pretty): {:.3} s, {:.1} MB ({:.0}x the table format)",
        t.elapsed().as_secs_f64(),
        inline_size as f64 / 1e6,
        inline_size as f64 / size as f64
    );
    drop(r);
    reset_peak();
    let t = Instant::now();
    let back = Report::read_json(&inline).unwrap();
    println!(
        "read_json of the inline file: {:.3} s ({} callsites), peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        back.callsites.len(),
        peak_rss_mib()
    );
    drop(back);
    if std::env::var_os("KEEP").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        println!("kept {}", path.display());
    }
    free_blocks(blocks, 24);
}
