//! A repeated `report()` with nothing new to symbolize does not symbolize
//! again (the stack table, `src/report/stacks.rs`), keeps the report's order, and the table
//! stays bounded by distinct stacks and frames. Timings are in BENCHMARKS.md
//! (`examples/report_cost.rs`), not here.

mod common;

use std::cmp::Ordering;

use allocscope::{report, track_scope, CallsiteReport, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/distinct_stacks.rs"]
mod distinct_stacks;
use distinct_stacks::{free_blocks, leaf, rec_a};

const LEVELS: u32 = 9;

#[inline(never)]
fn one_more(out: &mut Vec<usize>) {
    leaf(out, 64);
}

/// The order every report's callsite lists are in.
fn order(a: &CallsiteReport, b: &CallsiteReport) -> Ordering {
    b.retained
        .bytes
        .cmp(&a.retained.bytes)
        .then(b.allocated.bytes.cmp(&a.allocated.bytes))
        .then_with(|| a.scope.cmp(&b.scope))
        .then_with(|| a.frames.cmp(&b.frames))
}

fn assert_sorted(list: &[CallsiteReport], what: &str) {
    for w in list.windows(2) {
        assert_ne!(
            order(&w[0], &w[1]),
            Ordering::Greater,
            "{what} out of order:\n{:?}\n{:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn repeated_reports_do_not_symbolize_again() {
    common::every();
    let mut blocks = Vec::new();
    track_scope("cached", || {
        for n in 0..(1u32 << LEVELS) {
            rec_a(LEVELS, n, 8, &mut blocks);
        }
    });
    allocscope::set_stack_mode(StackMode::Off);
    let first = report();
    if !allocscope::is_installed() {
        return;
    }
    let t1 = first.tracker;
    let job = first.job("cached").unwrap();
    assert!(
        job.callsites.len() >= 1 << LEVELS,
        "{}",
        job.callsites.len()
    );
    assert!(t1.stacks_symbolized >= 1 << LEVELS, "{t1:?}");
    // Distinct frames are shared by all stacks: a few dozen, not stacks × depth.
    assert!(t1.frames_symbolized < 200, "{t1:?}");

    let second = report();
    let t2 = second.tracker;
    assert_eq!(
        t2.stacks_symbolized, t1.stacks_symbolized,
        "a repeated report symbolized again"
    );
    let job2 = second.job("cached").unwrap();
    assert_eq!(job2.callsites, job.callsites);
    // No frame text is copied: the second report's frames, its job
    // list's and the first report's all share one string per distinct frame.
    let ptr = |c: &CallsiteReport| c.frames[0].function.as_ptr();
    let shared = second.callsites[0].frames[0].function.as_str();
    assert!(shared.ends_with("distinct_stacks::leaf"), "{shared}");
    for c in [
        &first.callsites,
        &second.callsites,
        &job.callsites,
        &job2.callsites,
    ]
    .into_iter()
    .flatten()
    .filter(|c| c.frames[0].function == shared)
    {
        assert_eq!(ptr(c), shared.as_ptr(), "a frame's text was copied");
    }
    let copy = second.clone();
    assert_eq!(ptr(&copy.callsites[0]), shared.as_ptr());
    assert_sorted(&second.callsites, "report callsites");
    assert_sorted(&job2.callsites, "job callsites");

    // One new stack: symbolized once, and only it.
    common::every();
    track_scope("cached", || one_more(&mut blocks));
    allocscope::set_stack_mode(StackMode::Off);
    let third = report();
    let added = third.tracker.stacks_symbolized - t2.stacks_symbolized;
    assert!(
        (1..=8).contains(&added),
        "{added} stacks symbolized for one new"
    );
    assert!(third
        .job("cached")
        .unwrap()
        .callsites
        .iter()
        .any(|c| c.frames.iter().any(|f| f.function.contains("one_more"))));
    assert_eq!(
        report().tracker.stacks_symbolized,
        third.tracker.stacks_symbolized
    );

    // 8 bytes each, then 64 for `one_more`.
    let more = blocks.split_off(1 << LEVELS);
    free_blocks(blocks, 8);
    free_blocks(more, 64);
}
