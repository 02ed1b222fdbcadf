//! Relative reports: `mark()` then `report_since()` shows what was allocated after the mark
//! and is still live, exactly when no block from before the mark is freed after it.

// Boxes on purpose: each is one counted block of a known size.
#![allow(clippy::vec_box)]

mod common;

use std::hint::black_box;

use allocscope::{mark, report_since, track_scope, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[inline(never)]
fn before_mark() -> Vec<Box<[u8; 100]>> {
    (0..3)
        .map(|i| black_box(Box::new([i as u8; 100])))
        .collect()
}

#[inline(never)]
fn after_mark() -> Vec<Box<[u8; 64]>> {
    let mut kept = Vec::with_capacity(4); // 1 block of 4 * 8 bytes
    for i in 0..10u8 {
        let b = black_box(Box::new([i; 64]));
        if i % 3 == 0 {
            kept.push(b); // i = 0, 3, 6, 9
        }
    }
    kept
}

#[test]
fn exact_when_nothing_from_before_is_freed() {
    common::every();
    let old = track_scope("since_exact", before_mark);
    let quiet = track_scope("since_only_before", before_mark);
    let m = mark();
    let new = track_scope("since_exact", after_mark);
    let churn = track_scope("since_churn", || {
        (0..5)
            .map(|i| black_box(vec![i as u8; 20]).len())
            .sum::<usize>()
    });
    assert_eq!(churn, 100);
    let r = report_since(&m);

    let j = r.job("since_exact").unwrap();
    assert_eq!(j.runs, 1, "runs since the mark");
    assert_eq!(j.allocated, Usage::new(11, 10 * 64 + 32));
    assert_eq!(j.retained, Usage::new(5, 4 * 64 + 32));
    assert_eq!(j.exclusive.retained, j.retained);
    assert_eq!(j.recent_runs.len(), 1);
    assert_eq!(j.recent_runs[0].run, 2);
    assert_eq!(j.peak_bytes, j.recent_runs[0].peak_bytes);
    // Its callsites are those of after_mark only.
    assert!(j
        .callsites
        .iter()
        .all(|c| c.frames.iter().all(|f| !f.function.contains("before_mark"))));
    let sites_bytes: u64 = j.callsites.iter().map(|c| c.retained.bytes).sum();
    assert_eq!(sites_bytes, 4 * 64 + 32, "{:#?}", j.callsites);
    let boxes = j
        .callsites
        .iter()
        .find(|c| c.retained == Usage::new(4, 256))
        .expect("the kept boxes' callsite");
    assert_eq!(boxes.allocated, Usage::new(10, 640));

    let c = r.job("since_churn").unwrap();
    assert_eq!(c.allocated, Usage::new(5, 100));
    assert_eq!(c.retained, Usage::new(0, 0));
    assert!(
        r.job("since_only_before").is_none(),
        "nothing since the mark"
    );
    assert!(r.totals.allocated.objects >= 16);

    drop((old, new, quiet));
}

#[test]
fn frees_of_older_blocks_make_a_lower_bound() {
    // (The same mode as the other test: the mode is process-wide.)
    common::every();
    let old = track_scope("since_bound", || black_box(vec![0u8; 100]));
    let m = mark();
    let new = track_scope("since_bound", || black_box(vec![0u8; 300]));
    drop(old); // allocated before the mark, freed after it
    let j = report_since(&m).job("since_bound").cloned().unwrap();
    assert_eq!(j.allocated, Usage::new(1, 300), "allocated since is exact");
    // 300 bytes were added and are still live; the free of 100 older bytes hides 100 of them.
    assert_eq!(j.retained, Usage::new(0, 200));
    drop(new);
    let j = report_since(&m).job("since_bound").cloned().unwrap();
    assert_eq!(
        j.retained,
        Usage::new(0, 0),
        "clamped at zero, never negative"
    );
}
