//! Reports: the model (plain data, serde), and its renderings.
//!
//! A [`Report`] is a snapshot built by [`report()`](crate::report()) without stopping other
//! threads. Everything in it is plain data: it can be saved as JSON, read back on another
//! machine, and rendered there as text, folded stacks or a flamegraph.

mod atomic;
pub(crate) mod build;
mod diagnose;
mod diff;
pub(crate) mod dump;
pub(crate) mod escape;
mod export;
mod flame;
pub(crate) mod html;
mod labels;
mod memory;
mod since;
pub(crate) mod snapshot;
mod stacks;
pub(crate) mod symbolize;
pub(crate) mod symtab;
pub(crate) mod text;
mod trigger;
mod wire;

pub use atomic::write_file_atomic;
pub use build::report;
#[cfg(feature = "http")]
pub(crate) use build::report_figures;
pub(crate) use build::{job_counters_now, job_snapshot};
pub use diagnose::Diagnostic;
pub use diff::{CallsiteDiff, Change, DiffTextOptions, JobDiff, ReportDiff};
pub use dump::{auto_dump, finish, set_auto_dump, set_dump_dir, AutoDump};
pub use escape::{job_display_name, job_name_from_display};
#[cfg(feature = "http")]
pub(crate) use export::{live_pprof, PprofDefault};
pub use flame::{FlameMetric, FlameOptions};
#[cfg(feature = "chart")]
pub use memory::TimelineOptions;
pub(crate) use memory::{process_memory_cached, read_raw, rss_bytes, tracked_live, StatsCache};
pub use memory::{
    release_free_memory, JobLive, ProcessMemory, RssBreakdown, RunEvent, TimelineSample,
    TimelineStats, Trend, TrendKind,
};
pub use since::{mark, report_since, Marker};
pub use trigger::{ActiveJob, DumpTrigger};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::SharedFrames;
use crate::model::StackMode;
pub use crate::model::{Frame, RunReport, SharedStr, Usage};

/// The value of the top-level `"format"` field of every report.
pub(crate) const FORMAT: &str = "allocscope";
/// The report format version this build writes (and the newest it reads). Version 2 added the
/// process memory, the timeline, run events and trends; version-1 files still read (those
/// fields take their defaults: zeros, empty lists, trends "not enough runs").
pub(crate) const VERSION: u32 = 2;
/// The oldest report format version this build reads.
pub(crate) const OLDEST_VERSION: u32 = 1;

/// Memory attributed to one stack in one scope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallsiteReport {
    /// The scope the stack allocated in: job names, outermost first (empty: unscoped).
    #[serde(deserialize_with = "crate::model::read_job_names")]
    pub scope: Vec<String>,
    /// The stack, innermost (the code that asked for memory) first. Shared: the callsites of
    /// one stack (in [`Report::callsites`], in each job's list, in a report read from a file)
    /// hold one copy; it derefs to `[Frame]` (`.iter()`, `.len()`, indexing), and
    /// `vec.into()` makes one. In the JSON of [`Report::to_json`] / [`Report::write_json`],
    /// an index into the report's stack table.
    #[serde(
        serialize_with = "wire::serialize_frames",
        deserialize_with = "wire::deserialize_frames"
    )]
    pub frames: SharedFrames,
    /// What this callsite allocated.
    pub allocated: Usage,
    /// What this callsite allocated that is still live.
    pub retained: Usage,
    /// Highest live bytes of this callsite since the process started, seen at its
    /// allocations (an estimate when sampled; when several stacks fold into one callsite,
    /// the sum of their peaks, an upper bound). 0 in reports written before it was recorded.
    #[serde(default)]
    pub peak_bytes: u64,
    /// `true` when the figures are estimates from sampled stacks, `false` when exact.
    pub estimated: bool,
    /// What this callsite retains by age of the run of its job that allocated it, in the
    /// buckets of [`AGE_BUCKETS`](Self::AGE_BUCKETS) (runs since: 0, 1, 2–3, 4–7, 8–15, 16+): age 0 is
    /// the job's newest finished run and its runs in progress, 16+ also holds blocks of no run
    /// (a scope entered after its run finished). The six sum to `retained` exactly. The job is
    /// the innermost one of [`scope`](Self::scope). All zero for unscoped callsites, when
    /// stacks are off, and in files written before the field existed (left out of the JSON
    /// then).
    #[serde(default, skip_serializing_if = "ages_unknown")]
    pub retained_by_age: [Usage; 6],
}

/// Age buckets of [`CallsiteReport::retained_by_age`], in runs since the run that allocated a
/// block (0 = the job's newest finished run, or one in progress).
pub(crate) const CALLSITE_AGE_BUCKETS: [&str; 6] = ["0", "1", "2-3", "4-7", "8-15", "16+"];
/// The youngest age (in runs) of each of [`CALLSITE_AGE_BUCKETS`].
pub(crate) const CALLSITE_AGE_STARTS: [u64; 6] = [0, 1, 2, 4, 8, 16];
/// Where the text and HTML reports call a callsite's memory old: allocated 2 or more runs ago,
/// so it outlived at least one whole later run (the runs in progress, the newest finished one
/// and the one before are the working set and the latest results).
pub(crate) const OLD_AGE: u64 = 2;

fn ages_unknown(ages: &[Usage; 6]) -> bool {
    ages.iter().all(Usage::is_zero)
}

impl CallsiteReport {
    /// Age buckets of [`retained_by_age`](Self::retained_by_age), in runs since the run that
    /// allocated a block (0 = the job's newest finished run, or one in progress).
    pub const AGE_BUCKETS: [&'static str; 6] = CALLSITE_AGE_BUCKETS;
    /// The youngest age (in runs) of each of [`AGE_BUCKETS`](Self::AGE_BUCKETS).
    pub const AGE_STARTS: [u64; 6] = CALLSITE_AGE_STARTS;

    /// The first frame's function name, or `"?"`.
    pub fn top_function(&self) -> &str {
        self.frames.first().map_or("?", |f| f.function.as_str())
    }

    /// The bucket of [`AGE_BUCKETS`](Self::AGE_BUCKETS) that an age of `runs` falls in.
    pub fn age_bucket(runs: u64) -> usize {
        CALLSITE_AGE_STARTS
            .iter()
            .rposition(|&start| runs >= start)
            .unwrap_or(0)
    }

    /// What this callsite retains from runs at least `min_age` runs old: the buckets whose
    /// every age is `min_age` or more (an age between bucket starts rounds up to the next
    /// start: 3 means 4 or more). `retained` for 0; zero when the ages are unknown.
    pub fn retained_aged(&self, min_age: u64) -> Usage {
        if min_age == 0 {
            return self.retained;
        }
        CALLSITE_AGE_STARTS
            .iter()
            .zip(&self.retained_by_age)
            .filter(|(&start, _)| start >= min_age)
            .fold(Usage::default(), |a, (_, &u)| {
                Usage::new(
                    a.objects.saturating_add(u.objects),
                    a.bytes.saturating_add(u.bytes),
                )
            })
    }

    /// Whether this callsite's figures are split by age ([`retained_by_age`](Self::retained_by_age)).
    pub fn has_ages(&self) -> bool {
        !ages_unknown(&self.retained_by_age)
    }
}

/// Everything known about one job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobReport {
    /// The job's name (as stored: see [`MAX_JOB_NAME_BYTES`](crate::MAX_JOB_NAME_BYTES)).
    #[serde(deserialize_with = "crate::model::read_job_name")]
    pub name: String,
    /// Finished runs.
    pub runs: u64,
    /// Runs in progress when the report was taken.
    pub active_runs: u64,
    /// Finished runs that ended by a panic.
    pub panicked_runs: u64,
    /// Everything its runs allocated (inclusive of nested jobs).
    pub allocated: Usage,
    /// What its runs allocated that is still live now (inclusive of nested jobs).
    pub retained: Usage,
    /// Highest live bytes of any single finished run while it ran.
    pub peak_bytes: u64,
    /// The job's own figures, excluding what nested jobs allocated.
    pub exclusive: Exclusive,
    /// The most recent finished runs, oldest first (at most
    /// [`RECENT_RUNS`](Self::RECENT_RUNS)).
    pub recent_runs: Vec<RunReport>,
    /// Callsites of its allocations (inclusive of nested jobs), by retained bytes, largest
    /// first. Empty when stacks are off.
    pub callsites: Vec<CallsiteReport>,
    /// How the job's retained bytes move from run to run, over all its runs (version 2;
    /// "not enough runs" in version-1 files).
    #[serde(default)]
    pub trend: Trend,
    /// What the job retains, split by the run that allocated it: one entry per finished run
    /// among its last [`LEDGER_RUNS`](Self::LEDGER_RUNS) (64) that still holds something,
    /// oldest first (newest last). A run's blocks freed at any later time, on any thread, are
    /// taken off its entry. Empty in files written before these fields existed.
    #[serde(default)]
    pub retained_by_run: Vec<RunRetained>,
    /// What the job retains from runs older than that window, and from blocks of no finished
    /// run (runs still in progress, a scope entered after its run finished, runs beyond the
    /// run table's capacity). `retained_by_run` plus `retained_older` equals `retained`.
    #[serde(default)]
    pub retained_older: Usage,
}

/// Age buckets of [`JobReport::retained_by_age`], in runs since the job's newest finished run:
/// the newest run, the one before, 2–3, 4–7, and 8 or more (with `retained_older`). These are
/// the `age` label values of `/metrics`' `allocscope_job_retained_bytes`.
pub(crate) const AGE_BUCKETS: [&str; 5] = ["0", "1", "2-3", "4-7", "8+"];

impl JobReport {
    /// Finished runs kept in [`recent_runs`](Self::recent_runs): the last 16.
    pub const RECENT_RUNS: usize = crate::registry::RECENT_RUNS;
    /// Finished runs whose retained figures each job keeps apart
    /// ([`retained_by_run`](Self::retained_by_run)): the last 64.
    pub const LEDGER_RUNS: usize = crate::registry::LEDGER_RUNS;
    /// The labels of [`retained_by_age`](Self::retained_by_age)'s buckets, in runs since the
    /// job's newest finished run (`0`, `1`, `2-3`, `4-7`, `8+`): the `age` label values of
    /// `/metrics`' `allocscope_job_retained_bytes`.
    pub const AGE_BUCKETS: [&'static str; 5] = AGE_BUCKETS;
    /// The job new job names are charged to once the job table is full: `(other jobs)`
    /// (counted in [`TrackerStats::jobs_overflowed`]).
    pub const OTHER_JOBS_NAME: &'static str = crate::registry::OTHER_JOBS_NAME;

    /// Which runs hold what the job retains, in words, as the text table's AGE column prints
    /// it: `only the latest run`, `runs 1–3`, `27 runs hold 120 KiB each`, `+ older` when runs
    /// beyond the window hold some too, `-` when nothing is held.
    pub fn age_label(&self) -> String {
        text::age_text(self)
    }

    /// What the job retains by age of the run that allocated it, in the buckets of
    /// [`AGE_BUCKETS`](Self::AGE_BUCKETS); the last one includes `retained_older`. The five sum to `retained`.
    pub fn retained_by_age(&self) -> [Usage; 5] {
        let mut out = [Usage::default(); 5];
        let add = |u: &mut Usage, r: Usage| {
            *u = Usage::new(
                u.objects.saturating_add(r.objects),
                u.bytes.saturating_add(r.bytes),
            )
        };
        for r in &self.retained_by_run {
            let bucket = match self.runs.saturating_sub(r.run) {
                0 => 0,
                1 => 1,
                2..=3 => 2,
                4..=7 => 3,
                _ => 4,
            };
            add(&mut out[bucket], r.retained);
        }
        add(&mut out[4], self.retained_older);
        out
    }
}

/// What the blocks one run of a job allocated still hold (see
/// [`JobReport::retained_by_run`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRetained {
    /// The job's run number, counted from 1 (as [`RunReport::run`](crate::RunReport)).
    pub run: u64,
    /// Its still-live blocks (inclusive of jobs nested in the run).
    pub retained: Usage,
}

/// A job's own figures, without nested jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Exclusive {
    /// Allocated directly in this job's scope.
    pub allocated: Usage,
    /// Of that, still live.
    pub retained: Usage,
}

/// Process-wide figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// Every block live now (the tracker's own excluded).
    pub live: Usage,
    /// Every block allocated so far (the tracker's own excluded).
    pub allocated: Usage,
    /// Blocks allocated outside any scope that are still live.
    pub unscoped_live: Usage,
    /// Blocks allocated outside any scope.
    pub unscoped_allocated: Usage,
}

/// The tracker's own state: its memory and whether any limit was hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrackerStats {
    /// Whether a `TrackingAllocator` is the global allocator (if not, all figures are zero).
    pub installed: bool,
    /// Live blocks the tracker allocated for itself (reports, tables, symbol caches).
    pub overhead: Usage,
    /// Every block the tracker allocated for itself so far, freed or not (building reports
    /// allocates much more than it keeps).
    #[serde(default)]
    pub overhead_allocated: Usage,
    /// The most bytes the tracker's own blocks ever held at once (e.g. while a large report
    /// was built).
    #[serde(default)]
    pub overhead_peak_bytes: u64,
    /// Distinct job names.
    pub jobs: u64,
    /// Distinct scope paths (nestings of jobs).
    pub paths: u64,
    /// Distinct stacks recorded.
    pub stacks: u64,
    /// Distinct (scope, stack) sites recorded.
    pub sites: u64,
    /// Scope entries (runs) whose new job name was charged to `(other jobs)` because the job
    /// table was full; each such run counts once.
    pub jobs_overflowed: u64,
    /// Scopes merged into the overflow path because the path table was full.
    pub paths_overflowed: u64,
    /// Runs that found every run slot busy (counted per job, without per-run figures).
    pub runs_overflowed: u64,
    /// Sampled allocations whose stack was not stored because a stack table was full.
    pub stacks_dropped: u64,
    /// Hooks that panicked.
    pub hook_panics: u64,
    /// Threads that found every per-thread counter slot taken (1,024 live threads): they
    /// count through shared atomics — exact, slower. Each such thread counts once.
    #[serde(default)]
    pub threads_without_slot: u64,
    /// Instruction pointers stored in the stack tables' frame arena (capacity 8,388,608);
    /// when it is full, new stacks are dropped (`stacks_dropped`).
    #[serde(default)]
    pub frames_stored: u64,
    /// Stacks that the chosen unwinder (frame pointers or the caching unwinder) could not
    /// take and libgcc's DWARF unwinder took instead: a signal's alternate stack, a thread
    /// without a counter slot, an unsupported target.
    #[serde(default)]
    pub unwinder_fallbacks: u64,
    /// Stacks symbolized so far, each once in the process's life: reports look known stacks
    /// up in the stack table instead of resolving and trimming them again.
    #[serde(default)]
    pub stacks_symbolized: u64,
    /// Distinct frames (function, file, line) in the stack table, shared by all its stacks.
    #[serde(default)]
    pub frames_symbolized: u64,
}

/// A snapshot of what every job allocated and still holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Always `"allocscope"` (the wire format's name; written by `wire`).
    #[serde(skip_serializing_if = "wire::writing")]
    pub(crate) format: String,
    /// The wire-format version the report was read from, [`VERSION`] for reports taken in
    /// this process ([`format_version`](Self::format_version)).
    #[serde(skip_serializing_if = "wire::writing")]
    pub(crate) version: u32,
    /// When the report was taken, in milliseconds since the Unix epoch.
    pub timestamp_unix_ms: u64,
    /// The stack mode in effect when the report was taken.
    pub stack_mode: StackMode,
    /// Process-wide figures.
    pub totals: Totals,
    /// Jobs by retained bytes, largest first.
    pub jobs: Vec<JobReport>,
    /// Every callsite of every scope (and unscoped), by retained bytes, largest first.
    pub callsites: Vec<CallsiteReport>,
    /// The tracker's own figures.
    pub tracker: TrackerStats,
    /// The process's memory: RSS, live heap, memory freed but not returned to the OS
    /// (version 2; zeros in version-1 files).
    #[serde(default)]
    pub process: ProcessMemory,
    /// Memory over time, oldest first, when the sampler ran
    /// ([`timeline::start`](crate::timeline::start)); bounded, see [`crate::timeline`].
    #[serde(default)]
    pub timeline: Vec<TimelineSample>,
    /// Finished job runs, by finish time: the bounded subset described in
    /// [`crate::timeline`] (recent runs plus the largest ones).
    #[serde(default)]
    pub run_events: Vec<RunEvent>,
    /// What the timeline and run-event stores kept and dropped.
    #[serde(default)]
    pub timeline_stats: TimelineStats,
    /// Notes about the report's own figures: memory likely charged to no job, jobs likely
    /// missing (a tracing layer that selected no span), with causes and fixes. Empty when
    /// nothing looks lost. Printed by the text and HTML reports.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// Why a guardrail wrote this report (a memory line crossed, a budget exceeded), with the
    /// jobs running at that moment; `None` (and absent from the JSON) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<DumpTrigger>,
}

impl Default for Report {
    /// An empty report (no jobs, no callsites, zero figures, the default stack mode), of the
    /// current format version: a starting point for building one by hand (its fields are
    /// public; the struct grows, so it has no literal syntax outside this crate).
    fn default() -> Self {
        Report {
            format: FORMAT.to_string(),
            version: VERSION,
            timestamp_unix_ms: 0,
            stack_mode: StackMode::default(),
            totals: Totals::default(),
            jobs: Vec::new(),
            callsites: Vec::new(),
            tracker: TrackerStats::default(),
            process: ProcessMemory::default(),
            timeline: Vec::new(),
            run_events: Vec::new(),
            timeline_stats: TimelineStats::default(),
            diagnostics: Vec::new(),
            trigger: None,
        }
    }
}

impl Report {
    /// The version of the JSON format this report was read from: 2 for reports taken by this
    /// build (and files it wrote), 1 for files of the first format (whose memory-over-time
    /// fields read as zeros and empty lists).
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// The job called `name`, if it ran. A name longer than
    /// [`MAX_JOB_NAME_BYTES`](crate::MAX_JOB_NAME_BYTES) finds the job stored under its cut
    /// form ([`stored_job_name`](crate::stored_job_name)).
    pub fn job(&self, name: &str) -> Option<&JobReport> {
        let name = &*crate::model::stored_job_name(name);
        self.jobs.iter().find(|j| j.name == name)
    }

    /// All jobs, by retained bytes, largest first.
    pub fn jobs(&self) -> &[JobReport] {
        &self.jobs
    }

    /// The report as pretty-printed JSON, in the wire format of version 2 (see
    /// [`write_json`](Self::write_json)): a stack table first, each callsite naming its
    /// stack by index.
    pub fn to_json(&self) -> String {
        crate::thread::untracked(|| {
            let mut out = Vec::new();
            wire::write(self, &mut out, true).expect("allocscope: a report always serializes");
            String::from_utf8(out).expect("allocscope: serde_json writes UTF-8")
        })
    }

    /// Reads a report written by [`to_json`](Self::to_json) or
    /// [`write_json`](Self::write_json) (version 2, or version 1), checking its format and
    /// version.
    ///
    /// Streaming: in the order allocscope writes it, the text is parsed straight into the
    /// report, without an intermediate JSON tree. Keys may come in any order (fields before
    /// the header and stack table are kept as JSON values until they are known); a key no
    /// report has before `"format"` is refused at once; nesting deeper than 128 levels is an
    /// error. Memory stays within a small multiple of the text's size: each stack of the
    /// table is materialised once and shared by the callsites that name it.
    pub fn from_json(text: &str) -> Result<Report, Error> {
        crate::thread::untracked(|| {
            if text.trim().is_empty() {
                return Err(Error::InvalidReport("empty input, no JSON at all".into()));
            }
            wire::read(serde_json::Deserializer::from_str(text))
        })
    }
}
