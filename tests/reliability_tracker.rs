//! The tracker's own limits and memory are reported in `TrackerStats`, never invisible:
//! threads beyond the counter-slot table, the frame arena's use, and the tracker's total and
//! peak memory (a report allocates far more than it keeps).

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::sync::{Arc, Barrier};

use allocscope::{report, track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn threads_beyond_the_slot_table_are_counted() {
    let _wd = reliability::watchdog("1,100 live threads", 300);
    // 1,024 counter slots; 1,100 threads alive at once, each allocating (claiming a slot).
    let n = 1_100;
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let kept = track_scope("t_many_threads", || black_box(Box::new(i)));
                    b.wait(); // all alive at once
                    b.wait(); // until the report below was taken
                    drop(kept);
                })
                .expect("spawn")
        })
        .collect();
    barrier.wait();
    let r = report();
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        r.tracker.threads_without_slot >= (n - 1024) as u64,
        "threads without a slot: {}",
        r.tracker.threads_without_slot
    );
    // Exact all the same (shared atomics).
    let job = r.job("t_many_threads").unwrap();
    assert_eq!(job.runs, n as u64);
    assert_eq!(job.allocated.objects, n as u64);
}

#[test]
fn the_frame_arena_use_and_the_trackers_total_and_peak_are_reported() {
    common::every();
    let kept = track_scope("t_frames", || black_box(vec![1u8; 64]));
    let before = report().tracker;
    assert!(before.frames_stored >= before.stacks, "{before:?}");
    assert!(before.frames_stored > 0, "{before:?}");
    // The tracker's transient memory: a JSON text it allocates and frees again.
    let json = report().to_json();
    let len = json.len() as u64;
    drop(json);
    let after = report().tracker;
    assert!(
        after.overhead_allocated.bytes >= before.overhead_allocated.bytes + len,
        "{before:?} -> {after:?} ({len} B of JSON)"
    );
    assert!(after.overhead_allocated.objects > after.overhead.objects);
    assert!(after.overhead_peak_bytes >= len, "{after:?}");
    assert!(after.overhead_peak_bytes >= after.overhead.bytes);
    drop(kept);
}
