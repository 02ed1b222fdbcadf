//! The sampler with many jobs: 10,000 jobs, each holding one block, and five larger ones made
//! last (so their paths are in the last window of a rotation). A sample reads at most
//! `SAMPLE_PATHS` scope paths however many there are (the bound is structural: paths read per
//! sample, not time), and within a few rotations the samples still name the jobs holding the
//! most, with their exact bytes, and the whole heap.
//!
//! Its own binary: the job count is the test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use allocscope::timeline::{most_paths_read_per_sample, SAMPLE_PATHS};
use allocscope::{report, track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const JOBS: usize = 10_000;
const BIG: usize = 5;
const BIG_BYTES: usize = 1 << 20;
// Enough paths for a rotation of 3 windows.
const _: () = assert!(JOBS > 2 * SAMPLE_PATHS);

#[test]
fn a_sample_reads_a_bounded_window_of_paths_and_still_finds_the_largest_jobs() {
    allocscope::set_stack_mode(allocscope::StackMode::Off);
    let names: Vec<String> = (0..JOBS).map(|i| format!("many_{i}")).collect();
    let small: Vec<Box<[u8; 16]>> = names
        .iter()
        .map(|n| track_scope(n, || black_box(Box::new([1u8; 16]))))
        .collect();
    let big: Vec<Vec<u8>> = (0..BIG)
        .map(|i| track_scope(&format!("big_{i}"), || black_box(vec![1u8; BIG_BYTES + i])))
        .collect();

    allocscope::timeline::start(Duration::from_millis(1));
    // Enough samples for several rotations (3 samples each); bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let taken = report().timeline_stats.samples_taken;
        if taken >= 12 || Instant::now() > deadline {
            break;
        }
    }
    allocscope::timeline::stop();

    let most = most_paths_read_per_sample();
    assert!(
        most <= SAMPLE_PATHS,
        "a sample read {most} paths, the bound is {SAMPLE_PATHS}"
    );
    assert_eq!(most, SAMPLE_PATHS, "with {JOBS} paths a window is full");

    let r = report();
    assert!(
        r.timeline_stats.samples_taken >= 12,
        "{:?}",
        r.timeline_stats
    );
    let last = r.timeline.last().expect("samples");
    let top: Vec<(&str, u64)> = last
        .top_jobs
        .iter()
        .map(|j| (j.job.as_str(), j.live_bytes))
        .collect();
    let expected: Vec<(String, u64)> = (0..BIG)
        .rev()
        .map(|i| (format!("big_{i}"), (BIG_BYTES + i) as u64))
        .collect();
    let expected: Vec<(&str, u64)> = expected.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    assert_eq!(top, expected, "the largest jobs, exact, largest first");
    let held = (JOBS * 16 + BIG * BIG_BYTES) as u64;
    assert!(
        last.heap_live_bytes >= held,
        "the heap {} includes every job's block ({held})",
        last.heap_live_bytes
    );
    drop((small, big));
}
