//! The main demo: a worker process running jobs one after another, the way background-job
//! runners and queue consumers do — and allocscope saying which job holds the memory.
//!
//! Job kinds, each modelled on a real incident:
//! * `render_report`: builds a million strings, then drops them — a big peak, and only a small
//!   summary of the latest run retained.
//! * `sync_customers`: appends to a global cache on every run — retention growing run by run
//!   (the leak this tool exists to find).
//! * `export_all` vs `export_batched`: the same export, loading everything at once or in
//!   batches of 1,000 — the same result, very different peaks.
//!
//! Run with `cargo run --release --example worker`. It prints a log line per run, the job
//! table, and writes under `target/allocscope/`: `report.json`, `report.txt`, `retained.svg`
//! and `allocated.svg` (open the SVGs in a browser), and under `target/allocscope/runs/` a
//! report after each run that retained 256 KiB or more. Set `ALLOCSCOPE_STACKS` (`off`, `every`,
//! `sampled`, or a byte count) to try other stack modes; the demo defaults to `every`.
//!
//! Live: `ALLOCSCOPE_HTTP=127.0.0.1:6060 cargo run --release --features http --example worker`
//! serves `/metrics`, `/debug/pprof/heap` and the HTML report at `/` while it runs, prints the
//! URLs, and after its four rounds keeps running one round every 2 s until stopped (Ctrl-C), so
//! Prometheus, `go tool pprof` and a browser have a live process to read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;

use allocscope::{
    human_bytes, on_run_finished, track_scope, FlameMetric, FlameOptions, StackMode,
    TrackingAllocator,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// The leak: a process-wide cache that nobody ever evicts.
static CUSTOMER_CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The latest report's first rows, replaced by every run: bounded retention, not a leak
/// (each run frees the previous run's copy — a late free charged back to that run's job).
static LAST_SUMMARY: Mutex<Option<String>> = Mutex::new(None);

/// Deterministic pseudo-random numbers, so every run of the demo shows the same figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Builds a million strings to render a report, then drops them all.
#[inline(never)]
fn render_report(seed: u64) -> usize {
    let mut rng = Rng(seed);
    let lines: Vec<String> = (0..1_000_000)
        .map(|i| format!("row {i}: value {}", rng.next() % 10_000))
        .collect();
    let total: usize = lines.iter().map(|l| l.len()).sum();
    keep_summary(&lines[..1_000]);
    black_box(total)
}

#[inline(never)]
fn keep_summary(rows: &[String]) {
    *LAST_SUMMARY.lock().unwrap() = Some(rows.join("\n"));
}

/// Syncs a batch of customers, and (the bug) remembers every one of them forever.
#[inline(never)]
fn sync_customers(batch: u64) -> usize {
    let mut rng = Rng(batch + 1);
    let mut synced = 0;
    for i in 0..5_000 {
        let record = format!("customer-{batch}-{i}:{:016x}", rng.next());
        synced += record.len();
        append_to_cache(&record);
    }
    synced
}

/// Remembers a copy of the record "to avoid refetching it" — forever.
#[inline(never)]
fn append_to_cache(record: &str) {
    CUSTOMER_CACHE.lock().unwrap().push(record.to_owned());
}

/// Exports orders by loading all of them into memory first.
#[inline(never)]
fn export_all(n: usize) -> u64 {
    let orders = load_orders(0, n);
    orders.iter().map(|o| checksum(o)).sum()
}

/// Exports the same orders in batches of 1,000.
#[inline(never)]
fn export_batched(n: usize) -> u64 {
    let mut sum = 0;
    for start in (0..n).step_by(1_000) {
        let batch = load_orders(start, 1_000.min(n - start));
        sum += batch.iter().map(|o| checksum(o)).sum::<u64>();
    }
    sum
}

#[inline(never)]
fn load_orders(start: usize, n: usize) -> Vec<String> {
    (start..start + n)
        .map(|i| format!("order-{i:08}|sku-{:05}|qty-{}", i % 99_991, i % 7))
        .collect()
}

fn checksum(s: &str) -> u64 {
    s.bytes().map(u64::from).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("ALLOCSCOPE_STACKS").is_none() {
        allocscope::set_stack_mode(StackMode::Every);
    }
    println!(
        "allocscope worker demo — stacks: {:?}\n",
        allocscope::stack_mode()
    );
    let live = live_endpoint();

    // One log line per finished run, the way APM tools show jobs.
    on_run_finished(|run| {
        println!(
            "  {:<16} #{:<3} {:>8.1} ms  allocated {:>9} objs  peak {:>10}  retained {:>10}",
            run.job,
            run.run,
            run.duration().as_secs_f64() * 1e3,
            run.allocated.objects,
            human_bytes(run.peak_bytes),
            human_bytes(run.retained_at_finish.bytes),
        );
    });

    // A full report on disk after every run that still holds 256 KiB or more when it finishes
    // (the leaking job's runs), the newest 20 kept — what you would leave on in production,
    // and read later with `allocscope show` or `allocscope diff`.
    let dir = Path::new("target/allocscope");
    allocscope::set_auto_dump(Some(
        allocscope::AutoDump::new(dir.join("runs"))
            .threshold_bytes(256 << 10)
            .max_files(20),
    ));

    // The queue: what a worker pulls from Redis, SQS, a database table...
    let queue = [
        "render_report",
        "sync_customers",
        "export_all",
        "export_batched",
    ];
    let mut results: HashMap<&str, u64> = HashMap::new();
    let run_round = |round: u64, results: &mut HashMap<&str, u64>| {
        for &kind in &queue {
            let out = track_scope(kind, || match kind {
                "render_report" => render_report(round) as u64,
                "sync_customers" => sync_customers(round) as u64,
                "export_all" => export_all(200_000),
                "export_batched" => export_batched(200_000),
                _ => unreachable!(),
            });
            *results.entry(kind).or_default() += out;
        }
    };
    for round in 0..4u64 {
        run_round(round, &mut results);
    }
    assert_eq!(results["export_all"], results["export_batched"]);

    let report = allocscope::report();
    println!("\n{}", report.to_text());

    std::fs::create_dir_all(dir)?;
    report.write_json(dir.join("report.json"))?;
    std::fs::write(dir.join("report.txt"), report.to_text())?;
    std::fs::write(
        dir.join("retained.svg"),
        report.flamegraph_svg(&FlameOptions::default())?,
    )?;
    std::fs::write(
        dir.join("allocated.svg"),
        report.flamegraph_svg(&FlameOptions::default().metric(FlameMetric::AllocatedBytes))?,
    )?;

    let leak = report.job("sync_customers").expect("the leaking job ran");
    let mut summary = String::new();
    writeln!(
        summary,
        "Still held by sync_customers after {} runs: {} objects, {}.",
        leak.runs,
        leak.retained.objects,
        human_bytes(leak.retained.bytes)
    )?;
    if let Some(top) = leak.callsites.first() {
        writeln!(summary, "Top callsite: {}", top.top_function())?;
    }
    print!("{summary}");
    if let Some(last) = allocscope::finish()? {
        println!("Final report: {}", last.display());
    }
    println!(
        "Wrote {0}/report.json, {0}/report.txt, {0}/retained.svg, {0}/allocated.svg, and a \
         report per leaking run under {0}/runs/",
        dir.display()
    );
    if live {
        println!("\nStill serving; one more round every 2 s (Ctrl-C to stop).");
        for round in 4.. {
            std::thread::sleep(std::time::Duration::from_secs(2));
            run_round(round, &mut results);
        }
    }
    Ok(())
}

/// Prints the live endpoint's URLs when `ALLOCSCOPE_HTTP` started it (the first call into
/// allocscope above did); whether it is serving.
#[cfg(feature = "http")]
fn live_endpoint() -> bool {
    let Some(addr) = allocscope::http::env_server_addr() else {
        return false;
    };
    println!("Live endpoint (ALLOCSCOPE_HTTP):");
    println!("  http://{addr}/                  the HTML report, live");
    println!("  http://{addr}/metrics           Prometheus");
    println!("  http://{addr}/debug/pprof/heap  go tool pprof -top -sample_index=inuse_space URL");
    println!("  http://{addr}/debug/pprof/allocs");
    println!("  http://{addr}/report.json, /report.txt, /flamegraph.svg?job=sync_customers\n");
    true
}

#[cfg(not(feature = "http"))]
fn live_endpoint() -> bool {
    if std::env::var_os("ALLOCSCOPE_HTTP").is_some() {
        println!(
            "ALLOCSCOPE_HTTP is set, but this build has no live endpoint: add --features http\n"
        );
    }
    false
}
