//! The worker example's jobs (`examples/worker.rs`), each with a test asserting its expected
//! retention and peak. Examples are not a library, so the job functions are copied here (same
//! code, smaller sizes so the tests stay fast with exact stacks).
//!
//! Every test sets `StackMode::Every` (process-wide: the same for all tests of this binary).

// Boxes in vectors on purpose: each box is one allocation, a block the checks count.
#![allow(clippy::vec_box)]

mod common;

use common::every;
use std::hint::black_box;
use std::sync::Mutex;

use allocscope::testing::{Limit, MemoryCheck};
use allocscope::{assert_no_leaks, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();
// --- The jobs, as in examples/worker.rs ------------------------------------------------------

/// The leak: a process-wide cache that nobody ever evicts.
static CUSTOMER_CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static KNOWN_CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Builds many strings to render a report, then drops them all (1,000,000 in the example).
#[inline(never)]
fn render_report(seed: u64, rows: usize) -> usize {
    let mut rng = Rng(seed);
    let lines: Vec<String> = (0..rows)
        .map(|i| format!("row {i}: value {}", rng.next() % 10_000))
        .collect();
    let total: usize = lines.iter().map(|l| l.len()).sum();
    black_box(total)
}

/// Syncs a batch of customers, and (the bug) remembers every one of them forever
/// (5,000 per run in the example; the cache is a parameter here so that tests running in
/// parallel each have their own).
#[inline(never)]
fn sync_customers(cache: &Mutex<Vec<String>>, batch: u64, customers: usize) -> usize {
    let mut rng = Rng(batch + 1);
    let mut synced = 0;
    for i in 0..customers {
        let record = format!("customer-{batch}-{i}:{:016x}", rng.next());
        synced += record.len();
        append_to_cache(cache, record);
    }
    synced
}

#[inline(never)]
fn append_to_cache(cache: &Mutex<Vec<String>>, record: String) {
    cache.lock().unwrap().push(record);
}

/// The fix: the records are only needed for this sync, so they live in the run.
#[inline(never)]
fn sync_customers_fixed(batch: u64, customers: usize) -> usize {
    let mut rng = Rng(batch + 1);
    let records: Vec<String> = (0..customers)
        .map(|i| format!("customer-{batch}-{i}:{:016x}", rng.next()))
        .collect();
    records.iter().map(String::len).sum()
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

/// Whether a failure message shows `function` as the first frame of a callsite (named
/// `testing_worker::function` in debug builds, just `function` when inlined in release).
fn shows(message: &str, function: &str) -> bool {
    message
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("at "))
        .map(|l| l.split(" (").next().unwrap_or(l))
        .any(|name| name == function || name.ends_with(&format!("::{function}")))
}

/// The memory a vector of strings holds: its buffer and each string's.
fn footprint(v: &[String], capacity: usize) -> Usage {
    let strings = v.iter().filter(|s| s.capacity() > 0);
    Usage::new(
        1 + strings.clone().count() as u64,
        (capacity * std::mem::size_of::<String>()) as u64
            + strings.map(|s| s.capacity() as u64).sum::<u64>(),
    )
}

// --- The tests ---------------------------------------------------------------------------------

#[test]
fn render_report_keeps_nothing() {
    every();
    let f = assert_no_leaks!("render_report", || render_report(1, 10_000));
    // It did allocate: the vector and every line, all live at once at the peak.
    assert_eq!(f.allocated.objects, 10_001);
    assert!(f.peak_bytes >= 10_000 * 24 + 10_000 * 15, "{f}");
    assert_eq!(f.retained, Usage::new(0, 0));
}

#[test]
fn sync_customers_leaks_into_the_cache_and_the_message_names_it() {
    every();
    let failure = MemoryCheck::new("sync_customers")
        .no_leaks()
        .run(|| sync_customers(&CUSTOMER_CACHE, 0, 500))
        .unwrap_err();
    let f = failure.figures().unwrap();
    // Exactly what the cache now holds: 500 records and the cache's buffer, which grew
    // during the run (a realloc is charged to the job that made it grow).
    let cache = CUSTOMER_CACHE.lock().unwrap();
    assert_eq!(cache.len(), 500);
    assert_eq!(f.retained, footprint(&cache, cache.capacity()));
    drop(cache);
    assert_eq!(
        failure
            .violations()
            .iter()
            .map(|v| v.limit)
            .collect::<Vec<_>>(),
        [Limit::RetainedObjects, Limit::RetainedBytes]
    );
    // The callsites: the records are formatted in sync_customers, the buffer grows in
    // append_to_cache.
    let message = failure.to_string();
    assert!(
        message.contains("retained objects: 501 measured, limit 0"),
        "{message}"
    );
    assert!(shows(&message, "append_to_cache"), "{message}");
    assert!(shows(&message, "sync_customers"), "{message}");
    assert!(message.contains("testing_worker.rs:"), "{message}");
    let top: Vec<&str> = f
        .holding
        .iter()
        .map(|h| h.callsite.top_function())
        .collect();
    assert!(
        top.iter().any(|t| t.ends_with("append_to_cache")),
        "{top:?}"
    );

    // Warm-up does not hide it: the cache grows on every run.
    let failure = MemoryCheck::new("sync_customers")
        .warmup(2)
        .no_leaks()
        .run(|| sync_customers(&CUSTOMER_CACHE, 1, 100))
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert!(f.retained.objects >= 100, "{f}");
    for w in &f.warmup {
        assert!(w.retained_at_finish.objects >= 100, "{w:?}");
    }
}

#[test]
fn sync_customers_fixed_passes() {
    every();
    let f = MemoryCheck::new("sync_customers_fixed")
        .no_leaks()
        .assert(|| sync_customers_fixed(0, 500));
    assert_eq!(f.retained, Usage::new(0, 0));
    // The vector and the records (format! may grow a record once: a realloc counts as one
    // more allocation).
    assert!(f.allocated.objects >= 501, "{f}");
}

#[test]
fn export_all_peaks_with_everything_and_batches_do_not() {
    every();
    let n = 20_000;
    // The expected peaks, from the same data built outside any check.
    let all = load_orders(0, n);
    let all_peak = footprint(&all, all.capacity()).bytes;
    let batch_peak = (0..n)
        .step_by(1_000)
        .map(|start| {
            let b = load_orders(start, 1_000);
            footprint(&b, b.capacity()).bytes
        })
        .max()
        .unwrap();
    drop(all);
    assert!(all_peak > 15 * batch_peak, "{all_peak} vs {batch_peak}");

    let limit = 2 * batch_peak;
    let failure = MemoryCheck::new("export_all")
        .no_leaks()
        .max_peak_bytes(limit)
        .run(|| export_all(n))
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.peak_bytes, all_peak);
    assert_eq!(f.retained, Usage::new(0, 0));
    assert_eq!(failure.violations().len(), 1);
    assert_eq!(failure.violations()[0].limit, Limit::PeakBytes);
    assert_eq!(failure.violations()[0].measured, all_peak);

    let f = MemoryCheck::new("export_batched")
        .no_leaks()
        .max_peak_bytes(limit)
        .assert(|| export_batched(n));
    assert_eq!(f.peak_bytes, batch_peak);
    assert_eq!(f.allocated.objects, n as u64 + 20);
}

#[test]
fn the_cache_can_be_declared_known() {
    every();
    // A test that accepts the cache (say, it is bounded elsewhere) ignores its callsites, and
    // still catches anything else the job keeps.
    static OTHER: Mutex<Vec<Box<u64>>> = Mutex::new(Vec::new());
    OTHER.lock().unwrap().reserve(4);
    let f = MemoryCheck::new("sync_customers_known_cache")
        .no_leaks()
        .ignore_callsites_matching("append_to_cache")
        .ignore_callsites_matching("sync_customers")
        .assert(|| sync_customers(&KNOWN_CACHE, 7, 50));
    assert_eq!(f.ignored, f.retained);
    assert!(f.retained.objects >= 50);

    let failure = MemoryCheck::new("sync_customers_known_cache")
        .no_leaks()
        .ignore_callsites_matching("append_to_cache")
        .ignore_callsites_matching("sync_customers")
        .run(|| {
            sync_customers(&KNOWN_CACHE, 8, 50);
            OTHER.lock().unwrap().push(black_box(Box::new(8)));
        })
        .unwrap_err();
    assert_eq!(
        failure.figures().unwrap().retained_checked(),
        Usage::new(1, 8)
    );
}
