//! What is recorded over time, below the report layer: each job's retention trend summary, the
//! bounded store of run events, and the bounded multi-resolution store of timeline samples.
//!
//! Rules:
//! * a leaf above `model` and `fork` only: the registry (trend summaries live in each job's
//!   entry), `scope` (records finished runs) and `timeline` (takes samples, builds the report's
//!   view) use it; it never reads the live tables itself;
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

use crate::fork::{self, AtFork};
use crate::model::RunReport;
use store::{Events, Samples};
pub(crate) use store::{RawEvent, RawSample};
pub(crate) use trend::TrendSummary;
pub use trend::{Trend, TrendKind, MIN_GROWTH_BYTES, MIN_RUNS_CONSIDERED, SEGMENTS, WARMUP_RUNS};

/// Live bytes of this many jobs are kept per timeline sample (the largest at that instant).
pub const TOP_JOBS: usize = 5;
/// The most samples the timeline keeps however long the process runs.
pub const MAX_SAMPLES: usize = store::LEVELS * store::LEVEL_SAMPLES;
/// The most run events a report carries.
pub const MAX_RUN_EVENTS: usize = store::RECENT_EVENTS + 2 * store::LARGEST_EVENTS;

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
    let duration_ms = r.duration_ns / 1_000_000;
    let e = RawEvent {
        job,
        run: r.run,
        start_unix_ms: r.finished_unix_ms.saturating_sub(duration_ms),
        finish_unix_ms: r.finished_unix_ms,
        duration_ns: r.duration_ns,
        allocated: r.allocated,
        peak_bytes: r.peak_bytes,
        retained: r.retained_at_finish,
        panicked: r.panicked,
    };
    registered();
    EVENTS.lock().push(e);
}

/// Records a timeline sample (called by the sampler, tracking suspended).
pub(crate) fn record_sample(s: RawSample) {
    registered();
    SAMPLES.lock().push(s);
}

/// The kept run events (each once, by finish time) and the number of runs ever recorded.
pub(crate) fn events() -> (Vec<RawEvent>, u64) {
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
