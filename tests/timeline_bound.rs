//! Memory bound of the timeline and run events: many runs on 4 threads with the
//! sampler at 1 ms keep the timeline within `MAX_SAMPLES`, the events within `MAX_RUN_EVENTS`
//! (every other run counted as dropped), the stores within their documented bytes, and the
//! tracker's memory flat.
//!
//! The default build runs 100,000 runs for 2 s; in release with `--features stress` (CI:
//! `cargo test --release --features stress --test timeline_bound`) 1,000,000 runs over a
//! minute, which also coarsens the timeline (up to 60,000 samples).

use std::hint::black_box;
use std::time::{Duration, Instant};

use allocscope::timeline::{MAX_RUN_EVENTS, MAX_SAMPLES};
use allocscope::{report, track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[cfg(all(feature = "stress", not(debug_assertions)))]
const RUNS: u64 = 1_000_000;
#[cfg(all(feature = "stress", not(debug_assertions)))]
const SECONDS: u64 = 60;
#[cfg(not(all(feature = "stress", not(debug_assertions))))]
const RUNS: u64 = 100_000;
#[cfg(not(all(feature = "stress", not(debug_assertions))))]
const SECONDS: u64 = 2;

/// Documented bounds: 16 levels × 129 samples × 160 B, and 2,176 events × 112 B (+ slack for
/// the deque headers).
const STORE_BOUND: usize = 16 * 129 * 160 + 2176 * 112 + 4096;

#[test]
fn runs_and_samples_stay_within_the_bound() {
    allocscope::set_stack_mode(allocscope::StackMode::Off);
    allocscope::timeline::start(Duration::from_millis(1));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(SECONDS);
    let mut mid_overhead = None;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let per_thread = RUNS / 4;
                for i in 0..per_thread {
                    let name = ["bound_a", "bound_b", "bound_c", "bound_d"][((i + t) % 4) as usize];
                    track_scope(name, || black_box(vec![0u8; 64 + (i % 512) as usize]).len());
                    // Spread the runs over the whole duration.
                    let due =
                        start + Duration::from_secs(SECONDS).mul_f64(i as f64 / per_thread as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        if i % 64 == 0 {
                            std::thread::sleep(wait);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(SECONDS) / 2);
        mid_overhead = Some(report().tracker.overhead.bytes);
    });
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    allocscope::timeline::stop();
    let r = report();
    let st = &r.timeline_stats;
    println!(
        "{} runs, {} samples taken, {} kept, {} events kept, {} dropped, stores {} B, overhead {} -> {} B",
        st.run_events_total,
        st.samples_taken,
        r.timeline.len(),
        r.run_events.len(),
        st.run_events_dropped,
        allocscope::timeline::store_bytes(),
        mid_overhead.unwrap(),
        r.tracker.overhead.bytes
    );
    assert_eq!(st.run_events_total, RUNS);
    assert!(r.run_events.len() <= MAX_RUN_EVENTS);
    assert!(r.run_events.len() >= 2048, "at least the recent ring");
    assert_eq!(st.run_events_dropped, RUNS - r.run_events.len() as u64);
    assert!(r.timeline.len() <= MAX_SAMPLES);
    let covered: u64 = r.timeline.iter().map(|s| s.merged).sum();
    assert_eq!(covered + st.samples_dropped, st.samples_taken);
    assert!(
        st.samples_taken >= SECONDS * 1000 / 4,
        "the sampler kept up at least a quarter of the ticks on a loaded machine: {}",
        st.samples_taken
    );
    if st.samples_taken > MAX_SAMPLES as u64 {
        assert!(
            r.timeline.iter().any(|s| s.merged > 1),
            "older samples were coarsened"
        );
    }
    assert!(allocscope::timeline::store_bytes() <= STORE_BOUND);
    // The tracker's own memory does not grow with runs or samples (what it holds beyond the
    // stores: job tables, the last report).
    let mid = mid_overhead.unwrap();
    assert!(
        r.tracker.overhead.bytes <= mid + 256 * 1024,
        "tracker overhead grew from {mid} to {}",
        r.tracker.overhead.bytes
    );
}
