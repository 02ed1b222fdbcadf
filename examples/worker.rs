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
//! * `nightly_batch`: 200,000 small records, of which it keeps 1 in 64 (an index) and frees
//!   the rest — the job holds 3 MiB, but glibc keeps ~200 MB of freed memory resident: the
//!   "memory bloat" that looks like a leak on a dashboard and is an allocator setting.
//! * `warm_cache`: fills a lookup cache on its first three runs, then only reads it — a trend
//!   that grows and flattens (saturating), not a leak.
//!
//! The timeline sampler runs every 20 ms, so the report has RSS and the live heap over time
//! with every run marked, and each job's trend (`growing`, `saturating`, `steady`).
//!
//! Run with `cargo run --release --example worker`. It prints a log line per
//! run, the job table, what `release_free_memory()` gave back, and writes under
//! `target/allocscope/`: `report.json`, `report.txt`, `retained.svg`, `retained_old.svg`
//! (what runs 2 or more runs ago still hold), `allocated.svg`, `memory.svg` (the timeline), and under `target/allocscope/runs/`
//! a report after each run that retained 256 KiB or more. `sync_customers` has a budget of
//! 64 KiB retained per run ([`allocscope::budget`]): its first breach prints one line on
//! stderr and writes its report under `target/allocscope/budgets/` (then at most once a
//! minute). Set `ALLOCSCOPE_STACKS` (`off`,
//! `every`, `sampled`, or a byte count) to try other stack modes; the demo defaults to `every`.
//!
//! Live: `ALLOCSCOPE_HTTP=127.0.0.1:6060 cargo run --release --features http --example worker`
//! serves `/metrics`, `/debug/pprof/heap` and the HTML report at `/` while it runs, prints the
//! URLs, and after its eight rounds keeps running one round every 2 s until stopped (Ctrl-C), so
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

/// The nightly batch's index: 1 record in 64 of the latest batch (replaced by every run).
/// Boxed on purpose: each record is its own 1 KiB block, as rows parsed one by one are.
#[allow(clippy::vec_box)]
static BATCH_INDEX: Mutex<Vec<Box<[u8; 1024]>>> = Mutex::new(Vec::new());

/// A lookup cache filled on demand: 3 regions, 1 MiB each, loaded by the first runs that
/// need them, then only read.
static REGION_CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

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

/// Processes 200,000 records of 1 KiB and keeps 1 in 64 as an index (replacing the previous
/// run's): little retained, but the freed records stay in glibc's free lists.
#[inline(never)]
fn nightly_batch(run: u64) -> usize {
    let records: Vec<Box<[u8; 1024]>> = (0..200_000u64)
        .map(|i| black_box(Box::new([(i + run) as u8; 1024])))
        .collect();
    let index: Vec<Box<[u8; 1024]>> = records.into_iter().step_by(64).collect();
    let kept = index.len();
    *BATCH_INDEX.lock().unwrap() = index;
    kept
}

/// Looks a key up in the region cache, loading the region on first use.
#[inline(never)]
fn warm_cache(run: u64) -> u64 {
    let region = run.min(2) as usize;
    let mut cache = REGION_CACHE.lock().unwrap();
    while cache.len() <= region {
        let n = cache.len() as u8;
        cache.push(vec![n; 1 << 20]);
    }
    let temp: Vec<u64> = black_box((0..1_000).collect()); // per-lookup scratch, freed
    u64::from(cache[region][run as usize % 1024]) + temp.len() as u64
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
    // RSS, live heap and the top jobs every 20 ms (or ALLOCSCOPE_TIMELINE=1s, no code).
    allocscope::timeline::start(std::time::Duration::from_millis(20));

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

    // A production budget: sync_customers may keep 64 KiB per run (it keeps ~190 KiB: the
    // leak). A breach logs one line on stderr and writes the job's report under
    // target/allocscope/budgets/, at most once a minute; /metrics counts every breach
    // (allocscope_job_budget_breaches_total). ALLOCSCOPE_BUDGETS, when set, is used instead.
    if std::env::var_os("ALLOCSCOPE_BUDGETS").is_none() {
        allocscope::budget::set_budget(
            "sync_customers",
            Some(allocscope::budget::Budget::new().max_retained_bytes(64 << 10)),
        );
        allocscope::budget::set_interval(std::time::Duration::from_secs(60));
    }
    allocscope::budget::set_dir(Some(dir.join("budgets")));

    // The queue: what a worker pulls from Redis, SQS, a database table...
    let queue = [
        "render_report",
        "sync_customers",
        "export_all",
        "export_batched",
        "nightly_batch",
        "warm_cache",
    ];
    let mut results: HashMap<&str, u64> = HashMap::new();
    let run_round = |round: u64, results: &mut HashMap<&str, u64>| {
        for &kind in &queue {
            let out = track_scope(kind, || match kind {
                "render_report" => render_report(round) as u64,
                "sync_customers" => sync_customers(round) as u64,
                "export_all" => export_all(200_000),
                "export_batched" => export_batched(200_000),
                "nightly_batch" => nightly_batch(round) as u64,
                "warm_cache" => warm_cache(round),
                _ => unreachable!(),
            });
            *results.entry(kind).or_default() += out;
        }
    };
    let mut live = false;
    for round in 0..8u64 {
        run_round(round, &mut results);
        if round == 0 {
            // The first scope applied the environment: ALLOCSCOPE_HTTP's server runs now.
            live = live_endpoint();
        }
    }
    assert_eq!(results["export_all"], results["export_batched"]);

    // Let the sampler see the process at rest after the last run.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let report = allocscope::report();
    println!("\n{}", report.to_text());

    // The freed-but-kept memory is the allocator's, not a job's: give it back.
    match allocscope::release_free_memory() {
        Some(freed) => {
            let after = allocscope::report();
            println!(
                "release_free_memory(): RSS down by {} ({} -> {}); not returned to the OS now \
                 ~{}\n",
                human_bytes(freed),
                human_bytes(report.process.rss_bytes),
                human_bytes(after.process.rss_bytes),
                human_bytes(after.process.not_returned_bytes),
            );
        }
        None => println!("release_free_memory(): this allocator offers no way to trim\n"),
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    allocscope::timeline::stop();

    std::fs::create_dir_all(dir)?;
    report.write_json(dir.join("report.json"))?;
    std::fs::write(dir.join("report.txt"), report.to_text())?;
    std::fs::write(
        dir.join("retained.svg"),
        report.flamegraph_svg(&FlameOptions::default())?,
    )?;
    // Only what runs 2 or more runs ago still hold, by job and stack: the leak and the
    // warm-up's cache, without the newest runs' results.
    std::fs::write(
        dir.join("retained_old.svg"),
        report.flamegraph_svg(&FlameOptions::default().min_age(2))?,
    )?;
    std::fs::write(
        dir.join("allocated.svg"),
        report.flamegraph_svg(&FlameOptions::default().metric(FlameMetric::AllocatedBytes))?,
    )?;

    // The timeline, with the trim's drop at the end (a report taken after it).
    #[cfg(feature = "chart")]
    std::fs::write(
        dir.join("memory.svg"),
        allocscope::report().timeline_svg(&Default::default())?,
    )?;
    #[cfg(not(feature = "chart"))]
    println!("(memory.svg needs the `chart` feature: --features chart)");

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
    // Which run holds it: every run of the leak still holds what it added; the latest
    // summary is held by the newest run only.
    for name in ["sync_customers", "render_report", "warm_cache"] {
        if let Some(j) = report.job(name) {
            let runs: Vec<String> = j
                .retained_by_run
                .iter()
                .map(|r| format!("#{} {}", r.run, human_bytes(r.retained.bytes)))
                .collect();
            writeln!(
                summary,
                "{name}: {} ({}) — held by runs: {}",
                j.trend.label(),
                j.age_label(),
                if runs.is_empty() {
                    "none".to_string()
                } else {
                    runs.join(", ")
                },
            )?;
        }
    }
    // The same split per callsite (exact stacks): which stacks hold memory of old runs — the
    // leak's — apart from what the newest runs hold.
    if let Some(j) = report.job("sync_customers") {
        writeln!(summary, "sync_customers by callsite, retained by runs ago:")?;
        for c in j.callsites.iter().filter(|c| c.has_ages()).take(3) {
            let ages: Vec<String> = allocscope::CallsiteReport::AGE_BUCKETS
                .iter()
                .zip(&c.retained_by_age)
                .filter(|(_, u)| u.bytes > 0)
                .map(|(age, u)| format!("{age}: {}", human_bytes(u.bytes)))
                .collect();
            writeln!(
                summary,
                "  {:>10}  {}  ({})",
                human_bytes(c.retained.bytes),
                c.top_function(),
                ages.join(", ")
            )?;
        }
    }
    print!("{summary}");
    if let Some(last) = allocscope::finish()? {
        println!("Final report: {}", last.display());
    }
    println!(
        "Wrote {0}/report.json, {0}/report.txt, {0}/retained.svg, {0}/retained_old.svg, \
         {0}/allocated.svg, {0}/memory.svg, and a report per leaking run under {0}/runs/",
        dir.display()
    );
    if live {
        println!("\nStill serving; one more round every 2 s (Ctrl-C to stop).");
        for round in 8.. {
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
