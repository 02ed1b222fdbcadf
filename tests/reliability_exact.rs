//! Exactness under concurrency (the fast version; `tests/stress.rs` runs 8 × 1,000,000 ops).
//!
//! 8 threads run mixed alloc / alloc_zeroed / realloc / free with sizes 1 B..64 KiB and
//! alignments 1..4096, in runs of four root jobs and one nested job, handing blocks to each
//! other through a shared table so they are freed (or reallocated) on other threads, in other
//! jobs' scopes. The test keeps its own ledger and asserts allocscope's figures equal it
//! exactly: each run's allocations, each job's allocated and retained, and the process live
//! totals back to their starting value once every block is freed.
//!
//! The whole-process check needs a quiet process, so this binary holds exactly one test.

#[path = "common/reliability.rs"]
mod reliability;

use allocscope::{StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn eight_threads_mixed_ops_are_exact() {
    reliability::exact_under_concurrency("exact", 8, 25_000, StackMode::Every);
    // Sampled stacks (weighted callsites): job figures are exact all the same, and every
    // callsite's estimate returns to zero when its blocks are freed.
    reliability::exact_under_concurrency(
        "sampled",
        8,
        25_000,
        StackMode::Sampled { mean_bytes: 4096 },
    );
}
