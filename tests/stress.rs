//! The reliability stress set (RELIABILITY.md), run by CI in release mode:
//!
//! ```text
//! cargo test --release --features stress --test stress
//! ```
//!
//! Compiled only with the `stress` feature in an optimised build (`cargo test --all-features`
//! in debug mode leaves this binary empty). One test runs the phases in a fixed order: they
//! check process-wide figures, and the 100,000-callsite phase goes last because every later
//! report would carry its 100,000 callsites.
#![cfg(all(feature = "stress", not(debug_assertions)))]

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;

use allocscope::{report, track_scope, StackMode, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/distinct_stacks.rs"]
mod distinct_stacks;
use distinct_stacks::{free_blocks, rec_a};

const MIB: u64 = 1 << 20;

#[test]
fn stress() {
    exact_8_threads_x_1m_ops();
    million_runs_ten_thousand_names_stay_bounded();
    hundred_thousand_callsites_stay_bounded();
}

/// 8 threads × 1,000,000 mixed operations, every figure exact (see `reliability`).
fn exact_8_threads_x_1m_ops() {
    let t = std::time::Instant::now();
    reliability::exact_under_concurrency("stress", 8, 1_000_000, StackMode::Every);
    eprintln!(
        "exact_8_threads_x_1m_ops: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// 1,000,000 runs across 10,000 job names on 4 threads: tables do not grow with runs, the
/// tracker's own memory stays within its per-name bound, and nothing overflows.
fn million_runs_ten_thousand_names_stay_bounded() {
    let _wd = reliability::watchdog("million_runs", 600);
    allocscope::set_stack_mode(StackMode::default());
    const NAMES: usize = 10_000;
    const RUNS: usize = 1_000_000;
    const THREADS: usize = 4;
    let names: Vec<String> = (0..NAMES).map(|i| format!("bounded_job_{i:05}")).collect();
    let names = std::sync::Arc::new(names);
    let before = report().tracker;
    let rss_before = reliability::rss_bytes();
    let t = std::time::Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|th| {
            let names = names.clone();
            std::thread::spawn(move || {
                // Every 1000th run keeps a block past its end (freed below, late).
                let mut kept: Vec<Vec<u8>> = Vec::with_capacity(RUNS / THREADS / 1000 + 1);
                let mut rng = reliability::Rng::new(th as u64 + 100);
                for i in 0..RUNS / THREADS {
                    let name = &names[rng.below(NAMES as u64) as usize];
                    let keep = i % 1000 == 0;
                    let v = track_scope(name, || {
                        let tmp = black_box(vec![0u8; 1 + (i % 512)]);
                        let out = black_box(vec![1u8; 8]);
                        drop(tmp);
                        out
                    });
                    if keep {
                        kept.push(v);
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<Vec<Vec<u8>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = t.elapsed();
    let r = report();
    let rss_after = reliability::rss_bytes();
    let total_runs: u64 = names.iter().map(|n| r.job(n).map_or(0, |j| j.runs)).sum();
    assert_eq!(total_runs, RUNS as u64, "every run counted");
    let held: Usage = names
        .iter()
        .filter_map(|n| r.job(n))
        .fold(Usage::default(), |a, j| a + j.retained);
    let kept_count: usize = kept.iter().map(|k| k.len()).sum();
    assert_eq!(held, Usage::new(kept_count as u64, 8 * kept_count as u64));
    let s = r.tracker;
    assert!(s.jobs >= NAMES as u64);
    assert_eq!(s.jobs_overflowed, 0);
    assert_eq!(s.paths_overflowed, 0);
    assert_eq!(s.runs_overflowed, 0);
    // The tracker's own memory: job entries (name, counters, 16 recent runs, the trend
    // summary, the 64-run retained-by-run ledger of 3 KiB) and their index; it depends on the
    // number of names, not on the number of runs.
    let grown = s.overhead.bytes.saturating_sub(before.overhead.bytes);
    let per_name = grown / NAMES as u64;
    let rss_grown = rss_after.saturating_sub(rss_before);
    eprintln!(
        "million_runs: {RUNS} runs in {:.1} s; tracker overhead +{} bytes ({} per name, {} \
         objects); RSS {} -> {} MiB",
        elapsed.as_secs_f64(),
        grown,
        per_name,
        s.overhead.objects,
        rss_before / MIB,
        rss_after / MIB
    );
    assert!(
        per_name <= 8192,
        "tracker overhead per job name: {per_name} bytes"
    );
    assert!(
        rss_grown <= 128 * MIB,
        "RSS grew by {} MiB",
        rss_grown / MIB
    );
    drop(r);

    // The same 1,000,000 runs again: no new names, so the tracker does not grow at all.
    let before2 = report().tracker.overhead;
    for i in 0..RUNS {
        track_scope(&names[i % NAMES], || black_box(vec![0u8; 16]).len());
    }
    let after2 = report().tracker.overhead;
    assert!(
        after2.bytes <= before2.bytes + 64 * 1024,
        "tracker grew from {before2:?} to {after2:?} over 1M runs of known jobs"
    );
    drop(kept); // late frees, charged back
    let r = report();
    let held: Usage = names
        .iter()
        .filter_map(|n| r.job(n))
        .fold(Usage::default(), |a, j| a + j.retained);
    assert_eq!(held, Usage::default());
}

// 100,000 distinct callsites: a recursion that goes through one of two call sites per level,
// following the bits of a number, so each number gives its own stack.
const LEVELS: u32 = 17;

fn hundred_thousand_callsites_stay_bounded() {
    let _wd = reliability::watchdog("hundred_thousand_callsites", 600);
    const SITES: u32 = 100_000;
    common::every();
    let before = report().tracker;
    let rss_before = reliability::rss_bytes();
    let mut blocks: Vec<usize> = Vec::with_capacity(SITES as usize * 2);
    let t = std::time::Instant::now();
    track_scope("callsites_100k", || {
        for n in 0..SITES {
            // The second call repeats the first one's stack: no new site.
            // (`black_box`: an unrolled loop would make two call sites, so two stacks.)
            for _ in 0..black_box(2) {
                rec_a(LEVELS, n, 24, &mut blocks);
            }
        }
    });
    allocscope::set_stack_mode(StackMode::Off);
    let elapsed = t.elapsed();
    let rss_tables = reliability::rss_bytes();
    let r = report();
    let rss_report = reliability::rss_bytes();
    let s = r.tracker;
    let new_stacks = s.stacks - before.stacks;
    let new_sites = s.sites - before.sites;
    eprintln!(
        "callsites: {} allocations in {:.2} s; +{new_stacks} stacks, +{new_sites} sites, \
         dropped {}; tracker overhead {} bytes; RSS {} MiB before, {} MiB after recording, {} \
         MiB with the report",
        2 * SITES,
        elapsed.as_secs_f64(),
        s.stacks_dropped,
        s.overhead.bytes,
        rss_before / MIB,
        rss_tables / MIB,
        rss_report / MIB
    );
    assert!(new_stacks >= SITES as u64, "{new_stacks} stacks");
    assert!(new_sites >= SITES as u64, "{new_sites} sites");
    assert!(
        new_sites <= SITES as u64 + 16,
        "repeated stacks reuse their sites"
    );
    assert_eq!(s.stacks_dropped, 0);
    let j = r.job("callsites_100k").unwrap();
    assert_eq!(j.allocated, Usage::new(2 * SITES as u64, 48 * SITES as u64));
    assert!(j.callsites.len() >= SITES as usize);
    // Each distinct stack holds exactly its two blocks.
    assert!(j.callsites.iter().all(|c| c.retained == Usage::new(2, 48)));
    // Recording 100,000 stacks touches the static tables only as used: the bound is the
    // tables' size (RELIABILITY.md), not the number of allocations.
    let grown = rss_tables.saturating_sub(rss_before);
    assert!(grown <= 96 * MIB, "RSS grew by {} MiB", grown / MIB);
    drop(r);
    free_blocks(blocks, 24);
    assert_eq!(
        report().job("callsites_100k").unwrap().retained,
        Usage::default()
    );
}
