//! What is recorded over time, below the report layer: each job's retention trend summary, the
//! bounded store of run events, and the bounded multi-resolution store of timeline samples.
//!
//! Rules:
//! * a leaf above `model` and `fork` only: the registry (trend summaries live in each job's
//!   entry), `scope` (records finished runs), `timeline` (takes samples) and `report::memory`
//!   (reads both stores into a report) use it; it never reads the live tables itself;
//! * nothing here runs on the allocation path. A finished run is recorded by the run-finish
//!   path under one short lock and, once the stores' buffers exist, without allocating; the
//!   sampler thread records samples the same way;
//! * every store is bounded (the bounds are the constants below and in [`crate::timeline`]'s
//!   docs), and what it drops is counted, never silently lost;
//! * its locks are `fork` participants, registered before their first use.

mod store;
mod trend;

use std::sync::Once;

use parking_lot::Mutex;

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::fork::{self, AtFork};
use crate::model::{RunEvent, RunReport};
pub(crate) use store::RawSample;
use store::{Events, Samples, StoredEvent};
pub(crate) use trend::{ledger_verdict, RunHeld, TrendSummary};
pub use trend::{
    Trend, TrendKind, LEAK_AGE_RUNS, MIN_GROWTH_BYTES, MIN_RUNS_CONSIDERED, SEGMENTS, WARMUP_RUNS,
};

/// Live bytes of this many jobs are kept per timeline sample (the largest at that instant).
pub const TOP_JOBS: usize = 5;
/// The most samples the timeline keeps however long the process runs.
pub const MAX_SAMPLES: usize = store::LEVELS * store::LEVEL_SAMPLES;
/// The most run events a report carries.
pub const MAX_RUN_EVENTS: usize = store::RECENT_EVENTS + 2 * store::LARGEST_EVENTS;

/// The timeline sampler's interval in nanoseconds, 0 when it is not running (set by the
/// sampler, read by reports).
static SAMPLER_INTERVAL_NS: AtomicU64 = AtomicU64::new(0);

/// Records the sampler's interval (0: stopped).
pub(crate) fn set_sampler_interval_ns(ns: u64) {
    SAMPLER_INTERVAL_NS.store(ns, Relaxed);
}

/// The sampler's interval in nanoseconds, 0 when it is not running.
pub(crate) fn sampler_interval_ns() -> u64 {
    SAMPLER_INTERVAL_NS.load(Relaxed)
}

static SAMPLES: Mutex<Samples> = Mutex::new(Samples::new());
static EVENTS: Mutex<Events> = Mutex::new(Events::new());

/// Both stores' locks around `fork()`.
struct StoresAtFork;

impl AtFork for StoresAtFork {
    fn prepare(&self) {
        SAMPLES.prepare();
        EVENTS.prepare();
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait; released in reverse order of `prepare`.
        unsafe {
            EVENTS.release(child);
            SAMPLES.release(child);
        }
    }
}

static STORES_AT_FORK: StoresAtFork = StoresAtFork;
static REGISTERED: Once = Once::new();

/// Registers the stores with `fork` before their first lock.
#[inline]
fn registered() {
    REGISTERED.call_once(|| fork::register(&STORES_AT_FORK));
}

/// Records a finished run of job `job` (called by the run-finish path, tracking suspended).
pub(crate) fn record_run(job: u32, r: &RunReport) {
    let e = RunEvent::from(r);
    registered();
    EVENTS.lock().push((job, e));
}

/// Records a timeline sample (called by the sampler, tracking suspended).
pub(crate) fn record_sample(s: RawSample) {
    registered();
    SAMPLES.lock().push(s);
}

/// The kept run events (each once, by finish time, with its job's id) and the number
/// of runs ever recorded.
pub(crate) fn events() -> (Vec<StoredEvent>, u64) {
    registered();
    let ev = EVENTS.lock();
    (ev.kept(), ev.total)
}

/// The kept samples (oldest first), samples taken, samples dropped.
pub(crate) fn samples() -> (Vec<RawSample>, u64, u64) {
    registered();
    let s = SAMPLES.lock();
    (s.iter().copied().collect(), s.taken, s.dropped)
}

/// Bytes both stores occupy now.
pub(crate) fn store_bytes() -> usize {
    registered();
    let samples = SAMPLES.lock().capacity_bytes();
    let events = EVENTS.lock().capacity_bytes();
    samples + events
}
