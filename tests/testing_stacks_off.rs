//! `allocscope::testing` with stacks off (`StackMode::Off`, set by every test of this binary):
//! per-run figures stay exact, failure messages say how to see callsites, and callsite filters
//! refuse to guess.

// Boxes in vectors on purpose: each box is one allocation, a block the checks count.
#![allow(clippy::vec_box)]

use std::hint::black_box;
use std::sync::{Mutex, Once};

use allocscope::testing::{CheckFailure, MemoryCheck};
use allocscope::{StackMode, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn stacks_off() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| allocscope::set_stack_mode(StackMode::Off));
}

static KEPT: Mutex<Vec<Box<[u8; 24]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn keep_three() {
    let mut kept = KEPT.lock().unwrap();
    for i in 0..3 {
        kept.push(black_box(Box::new([i; 24])));
    }
}

#[test]
fn figures_are_exact_and_the_message_says_how_to_see_callsites() {
    stacks_off();
    KEPT.lock().unwrap().reserve(16);
    let failure = MemoryCheck::new("keep_three")
        .no_leaks()
        .run(keep_three)
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.retained, Usage::new(3, 72));
    assert_eq!(f.allocated, Usage::new(3, 72));
    assert_eq!(f.peak_bytes, 72);
    assert_eq!(f.stack_mode, StackMode::Off);
    assert!(f.holding.is_empty());
    let message = failure.to_string();
    for needle in [
        "memory check \"keep_three\" failed in test `figures_are_exact_and_the_message_says_how_to_see_callsites`",
        "retained objects: 3 measured, limit 0",
        "retained bytes: 72 B measured, limit 0 B",
        "stacks are off",
        "allocscope::set_stack_mode(allocscope::StackMode::Every)",
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
}

#[test]
fn callsite_filters_need_exact_stacks() {
    stacks_off();
    let mut ran = false;
    let failure = MemoryCheck::new("filtered")
        .no_leaks()
        .ignore_callsites_matching("known_cache")
        .run(|| ran = true)
        .unwrap_err();
    assert!(!ran, "the job is not run");
    assert!(
        matches!(&failure, CheckFailure::ExactStacksRequired { mode: StackMode::Off, filters, .. }
            if filters == &["matching \"known_cache\"".to_string()]),
        "{failure:?}"
    );
    let message = failure.to_string();
    for needle in [
        "ignores callsites (matching \"known_cache\"), which needs exact stacks, but the stack mode is Off",
        "allocscope::set_stack_mode(allocscope::StackMode::Every)",
        "ALLOCSCOPE_STACKS=every",
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
}

#[test]
fn a_peak_failure_does_not_ask_for_stacks() {
    stacks_off();
    let failure = MemoryCheck::new("big_buffer")
        .max_peak_bytes(4095)
        .run(|| black_box(vec![0u8; 4096]).len())
        .unwrap_err();
    let message = failure.to_string();
    assert!(
        message.contains("peak bytes: 4,096 B (4.0 KiB) measured, limit 4,095 B (4.0 KiB)"),
        "{message}"
    );
    assert!(!message.contains("stacks are off"), "{message}");
}
