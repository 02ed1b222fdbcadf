//! Run tokens are not reused while a block may still name them.
//!
//! A block's header names its run by a 32-bit token (run slot << 16 | 16-bit generation). If a
//! thread finishing runs one after the other got the same slot back every time, the slot's
//! generation would come back to the same value after 65,536 runs, and a late free of a block
//! from the first run would be charged to an unrelated run 65,536 runs later. This binary holds
//! one test, so no other thread takes run slots meanwhile.

use std::hint::black_box;

use allocscope::{track_scope_run, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn a_late_free_is_not_charged_to_a_run_65536_runs_later() {
    let (kept, first) = track_scope_run("gen_first", || black_box(Box::new([7u8; 64])));
    assert_eq!(first.retained_at_finish, Usage::new(1, 64));
    // 65,535 more runs on this thread: the first run's slot, if recycled each time, would be
    // back at the first run's generation for the next run.
    for _ in 0..65_535 {
        track_scope_run("gen_filler", || ());
    }
    let (held, late) = track_scope_run("gen_late", || {
        let b = black_box(Box::new([1u8; 100]));
        drop(kept); // a block of the first run, freed during this one
        b
    });
    assert_eq!(late.allocated, Usage::new(1, 100));
    assert_eq!(
        late.retained_at_finish,
        Usage::new(1, 100),
        "the first run's late free was charged to a later run"
    );
    assert_eq!(late.peak_bytes, 100);
    drop(held);
}
