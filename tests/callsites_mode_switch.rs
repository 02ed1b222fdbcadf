//! A new sampled mean applies at once to the thread that sets it; another thread first uses up
//! the gap it drew with the previous mean (`set_stack_mode`'s documented rule).

use std::hint::black_box;
use std::sync::mpsc;

use allocscope::{report, track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// `n` separately allocated 64-byte blocks (one allocation each, kept).
#[allow(clippy::vec_box)]
fn keep(n: usize) -> Vec<Box<[u8; 64]>> {
    (0..n).map(|_| black_box(Box::new([1u8; 64]))).collect()
}

#[test]
fn only_the_calling_thread_redraws_its_gap() {
    // A mean of 1 TiB: a gap drawn with it is not used up by this test.
    allocscope::set_stack_mode(StackMode::Sampled {
        mean_bytes: 1 << 40,
    });
    let _warm = keep(4); // this thread draws its gap with the huge mean
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let warm = keep(4); // the other thread draws its gap with the huge mean too
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let kept = track_scope("switch_other_thread", || keep(100));
        (warm, kept)
    });
    ready_rx.recv().unwrap();
    // A small mean: from now on nearly every 64-byte block of the calling thread is sampled.
    allocscope::set_stack_mode(StackMode::Sampled { mean_bytes: 64 });
    let here = track_scope("switch_calling_thread", || keep(100));
    go_tx.send(()).unwrap();
    let there = other.join().unwrap();
    let r = report();
    let calling = r.job("switch_calling_thread").unwrap();
    let other = r.job("switch_other_thread").unwrap();
    // Counts are exact either way; only the callsites differ.
    // 100 boxes and the vector holding them, on each thread.
    assert_eq!(calling.retained.bytes, 100 * 64 + 100 * 8);
    assert_eq!(other.retained.bytes, 100 * 64 + 100 * 8);
    assert!(
        !calling.callsites.is_empty(),
        "the calling thread samples with the new mean at once"
    );
    assert!(
        other.callsites.is_empty(),
        "the other thread still uses the gap it drew with the previous mean: {:?}",
        other.callsites.len()
    );
    drop((here, there));
}
