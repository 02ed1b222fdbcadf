//! Memory over time: the background sampler, and the public face of what it and the run-finish
//! path record (a bounded timeline of samples, bounded job run events, each job's retention
//! trend).
//!
//! Where each part lives: the stores and the trend summaries in `series` (below the registry:
//! a finished run records its event and trend point there); what reports read of them — the
//! process's memory, the history with job names resolved, the chart — in `report::memory`;
//! this module only runs the sampler thread, which reads the counters through the report's
//! snapshot protocol, a bounded window of scope paths per sample (`sample`: at most
//! [`SAMPLE_PATHS`] paths per sample, per-job figures kept incrementally).
//!
//! * **Process memory**: RSS from `/proc/self/statm`, the allocator's free bytes (glibc
//!   `mallinfo2`), [`release_free_memory`](crate::release_free_memory) (glibc
//!   `malloc_trim(0)`). RSS is read at every report and sample; glibc's figures and the smaps split are refreshed at most once per
//!   100× their cost (`mallinfo2` walks every free chunk under every arena's lock), at least
//!   every second, and at once when RSS moved or memory was released (`StatsCache`).
//! * **The sampler** ([`start`], [`stop`], or `ALLOCSCOPE_TIMELINE=500ms|1s|1m`): one
//!   background thread, named `allocscope-timeline`, that runs with tracking suspended for its
//!   whole life (everything it allocates is tracker overhead) and takes a sample every
//!   interval: RSS, all tracked live bytes, the not-returned estimate, and the live bytes of
//!   the [`TOP_JOBS`] jobs holding the most. It needs no symbolization (the job figures come
//!   from the same path counters a report sums). [`stop`] wakes it and joins it. A forked
//!   child has no sampler (call [`start`] again in it).
//! * **The timeline is bounded** to [`MAX_SAMPLES`] samples however long the process runs:
//!   16 levels of 128 samples; level 0 holds the newest samples at the sampler's interval;
//!   when a level overflows, its two oldest samples become one sample of the next level
//!   (twice as coarse), keeping the one with the higher RSS, so spikes and cliffs survive.
//!   The newest 128 samples are at full resolution, the 128 before them at 2×, then 4×, …;
//!   128 × (2¹⁶ − 1) intervals (97 days at 1 s, 2.3 hours at 1 ms) fit before the oldest
//!   samples are dropped (counted in [`TimelineStats::samples_dropped`](crate::TimelineStats)).
//!   At most 2048 × 160 bytes = 320 KiB (a sample holds the RSS breakdown in KiB).
//! * **Run events are bounded** to [`MAX_RUN_EVENTS`]: every finished run is recorded by the
//!   run-finish path (not the allocation path) under one short lock, with no allocation after
//!   the first run: the most recent 2,048 runs (all runs of the last N minutes while the rate
//!   stays under 2,048 per N minutes), plus the 64 runs with the largest retained-at-finish
//!   bytes and the 64 with the largest peak since the process started (leaks and cliffs stay
//!   visible however old). Runs in none of these sets are counted in
//!   [`TimelineStats::run_events_dropped`](crate::TimelineStats). At most 2,176 × 96 bytes
//!   = 204 KiB (names shared with the job entries). Events are recorded whether or not the sampler runs.
//! * **Trends**: each job keeps a compact summary of its retained bytes after every run
//!   (1.3 KiB per job, for any number of runs). From it a report reads each job's
//!   [`Trend`](crate::Trend): growing, saturating, steady, or not enough runs (the first
//!   [`WARMUP_RUNS`] runs are warm-up; at least [`MIN_RUNS_CONSIDERED`] runs after them; a
//!   growth counts when it exceeds [`MIN_GROWTH_BYTES`] and three times its noise); from the
//!   retained-by-run ledger, leaking or replaced. Each verdict's rule is on
//!   [`TrendKind`](crate::TrendKind).
//! * **The chart** (feature `chart`): `Report::timeline_svg`, drawn with plotters.

mod above;
mod limit;
mod sample;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use parking_lot::{Condvar, Mutex};

pub use crate::config::MemoryLine;
pub use crate::series::{
    LEAK_AGE_RUNS, MAX_RUN_EVENTS, MAX_SAMPLES, MIN_GROWTH_BYTES, MIN_RUNS_CONSIDERED, SEGMENTS,
    TOP_JOBS, WARMUP_RUNS,
};
pub(crate) use above::{active_jobs, init_from_env as init_dump_above_from_env};
pub use above::{
    dump_above, set_dump_above, DumpAbove, DumpAboveStatus, DEFAULT_CHECK_EVERY, REARM_FRACTION,
};
pub use limit::{memory_limit, LimitSource, MemoryLimit};
#[doc(hidden)]
pub use sample::most_paths_read_per_sample;
use sample::Reader;
pub use sample::SAMPLE_PATHS;

use crate::fork::{self, AtFork};
use crate::report::process_memory_cached;
use crate::report::{rss_bytes, tracked_live, StatsCache};
use crate::series::{self, RawSample};
use crate::thread::untracked;

/// The shortest sampling interval; shorter ones are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    interval_ns: AtomicU64,
}

struct Sampler {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

static SAMPLER: Mutex<Option<Sampler>> = Mutex::new(None);

/// The sampler handle's lock around `fork()`; in the child, the sampler thread does not exist,
/// so its handle is forgotten (never joined) and the timeline reads as stopped.
struct SamplerAtFork;

impl AtFork for SamplerAtFork {
    fn prepare(&self) {
        SAMPLER.prepare();
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait.
        unsafe { SAMPLER.release(child) };
        if child {
            if let Some(s) = SAMPLER.lock().take() {
                core::mem::forget(s);
            }
            series::set_sampler_interval_ns(0);
            // The child's inherited servers are forgotten, not stopped: none keeps it.
            KEEPERS.store(0, Relaxed);
        }
    }
}

static SAMPLER_AT_FORK: SamplerAtFork = SamplerAtFork;
static REGISTERED: std::sync::Once = std::sync::Once::new();

/// Starts the background sampler, taking a sample every `interval` (at least
/// [`MIN_INTERVAL`]). If it is already running, its interval changes. The thread runs with
/// tracking suspended; [`stop`] ends it.
///
/// ```
/// allocscope::timeline::start(std::time::Duration::from_millis(100));
/// // ... run jobs ...
/// allocscope::timeline::stop();
/// ```
pub fn start(interval: Duration) {
    let ns = interval.max(MIN_INTERVAL).as_nanos().min(u64::MAX as u128) as u64;
    untracked(|| {
        REGISTERED.call_once(|| fork::register(&SAMPLER_AT_FORK));
        let mut sampler = SAMPLER.lock();
        WANTED.store(true, Relaxed);
        run_with(&mut sampler, ns);
    })
}

/// Starts the sampler at `ns`, or changes the running one's interval. Called under `SAMPLER`.
fn run_with(sampler: &mut Option<Sampler>, ns: u64) {
    if let Some(s) = sampler.as_ref() {
        s.shared.interval_ns.store(ns, Relaxed);
        series::set_sampler_interval_ns(ns);
        s.shared.wake.notify_all();
        return;
    }
    let shared = Arc::new(Shared {
        stop: Mutex::new(false),
        wake: Condvar::new(),
        interval_ns: AtomicU64::new(ns),
    });
    let s2 = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("allocscope-timeline".into())
        .spawn(move || untracked(|| run_sampler(&s2)));
    match spawned {
        Ok(thread) => {
            series::set_sampler_interval_ns(ns);
            *sampler = Some(Sampler { shared, thread });
        }
        Err(e) => eprintln!("allocscope: could not start the timeline sampler: {e}"),
    }
}

/// Stops the sampler and joins its thread (returns at once if it is not running). The samples
/// taken so far stay in later reports.
///
/// While a live endpoint serves (`ALLOCSCOPE_HTTP` or `http::serve`), the sampler keeps
/// running: its chart needs samples. It stops when the last server stops.
pub fn stop() {
    let sampler = untracked(|| {
        REGISTERED.call_once(|| fork::register(&SAMPLER_AT_FORK));
        let mut sampler = SAMPLER.lock();
        WANTED.store(false, Relaxed);
        if KEEPERS.load(Relaxed) > 0 {
            return None;
        }
        sampler.take()
    });
    join(sampler);
}

fn join(sampler: Option<Sampler>) {
    if let Some(s) = sampler {
        series::set_sampler_interval_ns(0);
        *s.shared.stop.lock() = true;
        s.shared.wake.notify_all();
        let _ = s.thread.join();
        untracked(|| drop(s.shared));
    }
}

/// The interval of the sampler a live endpoint starts when none runs.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the program asked for the sampler ([`start`] and no [`stop`] since).
static WANTED: AtomicBool = AtomicBool::new(false);
/// Live endpoints that keep the sampler running.
static KEEPERS: AtomicUsize = AtomicUsize::new(0);

/// Keeps the sampler running while it lives (held by each live endpoint): starts it at
/// [`LIVE_INTERVAL`] if it is not running; a running sampler keeps its interval.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
pub(crate) struct KeepSampling(());

impl core::fmt::Debug for KeepSampling {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeepSampling")
    }
}

#[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
pub(crate) fn keep_sampling() -> KeepSampling {
    let ns = LIVE_INTERVAL.as_nanos() as u64;
    untracked(|| {
        REGISTERED.call_once(|| fork::register(&SAMPLER_AT_FORK));
        let mut sampler = SAMPLER.lock();
        KEEPERS.fetch_add(1, Relaxed);
        if sampler.is_none() {
            run_with(&mut sampler, ns);
        }
    });
    KeepSampling(())
}

impl Drop for KeepSampling {
    fn drop(&mut self) {
        let sampler = untracked(|| {
            let mut sampler = SAMPLER.lock();
            let left = KEEPERS.fetch_sub(1, Relaxed).saturating_sub(1);
            if left == 0 && !WANTED.load(Relaxed) {
                sampler.take()
            } else {
                None
            }
        });
        join(sampler);
    }
}

/// The sampler's interval, `None` when it is not running.
pub fn interval() -> Option<Duration> {
    match series::sampler_interval_ns() {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

/// The sampler thread's loop: a sample, then a wait until the next tick (fixed rate: a slow
/// sample does not shift the following ones; ticks missed are skipped, not caught up).
fn run_sampler(shared: &Shared) {
    let mut next = Instant::now();
    let mut cache = StatsCache::default();
    let mut reader = Reader::default();
    let mut stop = shared.stop.lock();
    while !*stop {
        parking_lot::MutexGuard::unlocked(&mut stop, || sample_now(&mut reader, &mut cache));
        let interval = Duration::from_nanos(shared.interval_ns.load(Relaxed));
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
        while !*stop && !shared.wake.wait_until(&mut stop, next).timed_out() {
            // Woken early: a stop, or a new interval (which applies from the next tick).
            let interval = Duration::from_nanos(shared.interval_ns.load(Relaxed));
            next = next.min(Instant::now() + interval);
        }
    }
}

/// Takes one sample now and stores it. Runs with tracking suspended. RSS, all tracked live
/// bytes and the jobs holding the most come from `reader` (the snapshot's read protocol over
/// a bounded window of paths per sample, see `sample`); the allocator's statistics come
/// through `cache` (see `StatsCache`).
fn sample_now(reader: &mut Reader, cache: &mut StatsCache) {
    // RSS is read just before and just after the heap's snapshot and the sample keeps the
    // larger: the pages resident around the moment the heap was read, so a block freed (and
    // unmapped) between the two reads does not make the heap exceed the RSS. A sample whose
    // heap still exceeds its RSS is taken again, at most `COHERENT_TRIES` times in all; what
    // can remain is memory allocated but not yet written (Linux makes a page resident when it
    // is first written; a large zeroed block is not resident until then), at most the blocks
    // being allocated at that instant.
    for attempt in 1..=COHERENT_TRIES {
        let rss_before = rss_bytes().unwrap_or(0);
        let (r, top) = reader.read();
        let mut pm = process_memory_cached(tracked_live(&r), cache);
        pm.rss_bytes = pm.rss_bytes.max(rss_before);
        if pm.heap_live_bytes > pm.rss_bytes && pm.rss_bytes > 0 && attempt < COHERENT_TRIES {
            continue;
        }
        let n_top = top.iter().take_while(|t| t.1 > 0).count();
        let mut parts_kib = [0u32; 7];
        if let Some(b) = pm.breakdown {
            for (k, (_, bytes)) in parts_kib.iter_mut().zip(b.parts()) {
                *k = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
            }
        }
        series::record_sample(RawSample {
            unix_ms: crate::model::unix_ms(),
            rss: pm.rss_bytes,
            heap: pm.heap_live_bytes,
            not_returned: pm.not_returned_bytes,
            parts_kib,
            merged: 1,
            top,
            n_top: n_top as u8,
        });
        return;
    }
}

/// Reads a sample takes at most to have its heap within its RSS (see `sample_now`).
const COHERENT_TRIES: u32 = 3;

/// Bytes the timeline and run-event stores occupy now (for the bound tests).
#[doc(hidden)]
pub fn store_bytes() -> usize {
    untracked(series::store_bytes)
}

/// Applies `ALLOCSCOPE_TIMELINE` once (called by `startup` when the first scope begins): a valid
/// duration starts the sampler; an invalid one prints one line on stderr and leaves it off.
pub(crate) fn init_from_env() {
    static ENV: std::sync::Once = std::sync::Once::new();
    if ENV.is_completed() {
        return;
    }
    untracked(|| {
        ENV.call_once(|| {
            if let Some(d) = crate::config::timeline() {
                start(d);
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_interval;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval(" 1m ").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_interval("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_interval("2h").unwrap(), Duration::from_secs(7200));
        for bad in [
            "", "1", "ms", "-1s", "0s", "abc", "1 parsec", "nans", "+1s", "1e400s",
        ] {
            let e = parse_interval(bad).unwrap_err().to_string();
            assert!(e.contains("ALLOCSCOPE_TIMELINE"), "{bad}: {e}");
        }
    }
}
