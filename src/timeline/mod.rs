//! Memory over time: the process's RSS next to the live heap, a bounded timeline of samples,
//! bounded job run events, and each job's retention trend.
//!
//! (Being filled in: see issue 10. The sampler, the stores and the trend rule are documented
//! here as they land.)

mod process;

use std::time::Duration;

pub(crate) use process::process_memory;
pub use process::release_free_memory;

/// Live bytes of this many jobs are kept per timeline sample (the largest at that instant).
pub const TOP_JOBS: usize = 5;
/// The most samples the timeline keeps however long the process runs.
pub const MAX_SAMPLES: usize = 2048;

/// Starts the background sampler (one thread, tracking suspended), taking a sample every
/// `interval` (at least 1 ms). A second call changes the interval.
pub fn start(interval: Duration) {
    let _ = interval;
}

/// Stops the sampler and joins its thread; the samples taken so far stay in later reports.
pub fn stop() {}
