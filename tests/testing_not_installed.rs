//! `allocscope::testing` in a test binary that did NOT install `TrackingAllocator`: every check
//! fails loudly with the one thing to do, instead of passing whatever the job does.
//!
//! (This file deliberately has no `#[global_allocator]`.)

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use allocscope::testing::{CheckFailure, MemoryCheck};
use allocscope::{assert_memory, assert_no_leaks};

static LEAKED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

#[test]
fn a_check_fails_with_the_explanation_and_does_not_run_the_job() {
    assert!(!allocscope::is_installed());
    let runs = AtomicUsize::new(0);
    let failure = MemoryCheck::new("leaky")
        .no_leaks()
        .run(|| {
            runs.fetch_add(1, Relaxed);
            LEAKED.lock().unwrap().push(vec![0; 1000]);
        })
        .unwrap_err();
    assert!(
        matches!(&failure, CheckFailure::NotInstalled { check, test }
            if check == "leaky" && test == "a_check_fails_with_the_explanation_and_does_not_run_the_job"),
        "{failure:?}"
    );
    assert_eq!(runs.load(Relaxed), 0, "the job is not run");
    assert!(failure.figures().is_none());
    assert!(failure.violations().is_empty());
    let message = failure.to_string();
    for needle in [
        "memory check \"leaky\" in test `a_check_fails_with_the_explanation_and_does_not_run_the_job`",
        "allocscope::TrackingAllocator is not this program's global allocator",
        "would pass whatever the job does",
        "#[global_allocator]",
        "static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();",
        "tests/common/mod.rs",
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
}

#[test]
fn a_check_without_limits_fails_too() {
    // Even a check that only measures must not return zeros as if they were figures.
    let failure = MemoryCheck::new("measure")
        .run(|| vec![1u8; 10])
        .unwrap_err();
    assert!(matches!(failure, CheckFailure::NotInstalled { .. }));
}

#[test]
#[should_panic(expected = "allocscope::TrackingAllocator is not this program's global allocator")]
fn assert_no_leaks_panics_with_the_explanation() {
    assert_no_leaks!("leaky_macro", || LEAKED.lock().unwrap().push(vec![0; 10]));
}

#[test]
#[should_panic(expected = "#[global_allocator]")]
fn assert_memory_panics_with_the_explanation() {
    assert_memory!("peak_macro", || vec![0u8; 10], max_peak_bytes = 1 << 20);
}
