//! # allocscope — which job is holding our memory?
//!
//! allocscope is a tracking global allocator for long-lived worker processes. Wrap each unit of
//! work in [`track_scope`]; after each job, a [`Report`] says what that job allocated, its
//! peak, and what it **still holds** — objects and bytes, broken down by callsite — and renders
//! it as a text table, JSON, folded stacks or a flamegraph.
//!
//! ```
//! use allocscope::{track_scope, TrackingAllocator};
//!
//! #[global_allocator]
//! static ALLOC: TrackingAllocator = TrackingAllocator::system();
//!
//! static CACHE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
//!
//! fn main() {
//!     for i in 0..3 {
//!         track_scope("import_users", || {
//!             let rows: Vec<String> = (0..100).map(|n| n.to_string()).collect(); // temporary
//!             CACHE.lock().unwrap().push(format!("user-{i}")); // kept: a retained object
//!             rows.len()
//!         });
//!     }
//!     let report = allocscope::report();
//!     let import = report.job("import_users").unwrap();
//!     assert_eq!(import.runs, 3);
//!     println!("{report}");
//! }
//! ```
//!
//! ## What is counted, and how
//!
//! * A block belongs to the **innermost scope** active on the allocating thread. Nested scopes
//!   count inclusively: an inner job's allocations also count in every enclosing job's totals
//!   ([`JobReport::exclusive`] has the job's own figures).
//! * A **free** is charged back to the scope that owns the block, whichever thread frees it,
//!   and also after the scope has finished, so `retained` goes down on a late free.
//! * A **realloc** is a free of the old block plus an allocation of the new one, charged to the
//!   scope current at the realloc: a global cache that grows during job B shows up as held by
//!   job B. (Some profilers keep the original owner instead; we charge the job that made the
//!   memory grow, because that is the job to fix.)
//! * **Bytes** are what the program asked for, without the tracker's header (8 bytes
//!   per block for most, see `header`). Blocks
//!   allocated outside any scope are "unscoped"; the tracker's own allocations are reported as
//!   tracker overhead, never charged to a job.
//! * Per-job counts are **exact** in every [`StackMode`]; the mode only decides how callsites
//!   are recorded (none, sampled estimates, or exact).
//! * Scopes follow work across threads ([`spawn`], [`ScopeHandle::enter`]) and futures
//!   ([`FutureExt`]).
//!
//! If no `TrackingAllocator` is installed, everything still works but reports are empty;
//! [`is_installed`] tells (and [`TrackerStats::installed`] in a report).
//!
//! ## Module map
//!
//! Layers, bottom up; each imports only from its own layer and the layers below it
//! (`ARCHITECTURE.md`, checked for every module by `tests/layers.rs`):
//! 1. leaves everyone may use: `model` (plain data: [`Usage`], [`RunReport`], [`RunEvent`],
//!    [`Frame`], [`StackMode`], the counters), `config` (every `ALLOCSCOPE_*` variable), `fork`
//!    (the `pthread_atfork` handlers and every lock they cover), `error`;
//! 2. `series` — what is recorded over time: the bounded stores of timeline samples and run
//!    events, each job's trend summary;
//! 3. `alloc` — the `GlobalAlloc` wrapper, the hot path (its rules are at the top of the file);
//!    `header` — the per-block metadata in front of each block; `thread` — per-thread state and
//!    counters; `registry` — paths, jobs, runs; `callsite` — stack capture and interning;
//!    `sources` — what the scope sources (span layers) saw and selected, for the report's notes;
//!    `cmalloc` — the C `malloc` family (feature `malloc`), counting C blocks through `alloc`;
//! 4. `report` — the one snapshot path (`snapshot`), symbolization (`symbolize`, full names
//!    from the loaded objects' symbol tables: `symtab`) and the stack table that
//!    keeps each stack symbolized once (`stacks`), text, JSON and its wire format (`wire`),
//!    folded stacks and flamegraphs; the one encoding of job names and XML text for every
//!    output (`escape`); the one atomic file writer (`atomic`); automatic dumps (`dump`:
//!    after runs and at exit) and report files (`dump::files`: written and read, dump names
//!    and pruning), snapshot differences (`diff` computes, `diff::render`
//!    shows) and marks (`since`), pprof and DHAT exports
//!    (`export`); memory over time as reports read it — process memory, history, the chart
//!    (`memory`); the report's notes about lost figures (`diagnose`);
//! 5. outlets: [`timeline`] — the background sampler, and the memory line that dumps a report
//!    before an OOM kill ([`timeline::set_dump_above`], `ALLOCSCOPE_DUMP_ABOVE`); [`budget`] —
//!    per-job limits in production (`ALLOCSCOPE_BUDGETS`); `http` — the live endpoint (feature
//!    `http`);
//! 6. `startup` — start-up from the environment, wired in one place;
//! 7. `scope`, `future` — entering and leaving scopes, on threads and in futures (the first
//!    scope applies the environment through `startup`);
//! 8. `integrations` — scopes from `tracing` spans (module `tracing`, feature `tracing`), `tower`
//!    requests (`tower`, feature `tower`) and `rayon` tasks (`rayon`, feature `rayon`;
//!    [`ScopeHandle::wrap`] needs no feature), on top of `scope` and `future`; [`testing`] —
//!    memory assertions for tests (`assert_no_leaks!`, `assert_memory!`; `check` runs them,
//!    `held` reads what a run still holds, `figures` and `failure` are their results);
//! 9. `bin` (`src/bin/allocscope.rs`) — the command-line tool (feature `cli`), on the public
//!    API only.
//!
//! Guides beside the code: `README.md` (usage, semantics, CLI), `ARCHITECTURE.md` (layers, the
//! life of one allocation, where changes go), `RELIABILITY.md` (what is tested, limits),
//! `BENCHMARKS.md` (overhead against `System` and peers).

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod alloc;
pub mod budget;
mod callsite;
#[cfg(allocscope_cmalloc)]
mod cmalloc;
mod config;
mod error;
mod fork;
mod future;
mod header;
#[cfg(feature = "http")]
pub mod http;
mod integrations;
mod model;
mod registry;
mod report;
mod scope;
mod series;
mod sources;
mod startup;
pub mod testing;
mod thread;
pub mod timeline;

pub use alloc::{is_installed, TrackingAllocator};
pub use callsite::{
    set_max_frames, set_sampling_seed, set_stack_mode, set_unwinder, stack_mode, unwinder,
    StackMode, Unwinder, DEFAULT_SAMPLE_BYTES,
};
pub use error::{Detail, Error};
pub use future::{FutureExt, InScope, Tracked};
#[cfg(feature = "rayon")]
pub use integrations::rayon;
#[cfg(feature = "tower")]
pub use integrations::tower;
#[cfg(feature = "tracing")]
pub use integrations::tracing;
pub use model::{stored_job_name, SharedFrames, MAX_JOB_NAME_BYTES};
pub use report::text::{CallsiteOrder, SortBy, TextOptions};
#[cfg(feature = "chart")]
pub use report::TimelineOptions;
pub use report::{auto_dump, finish, set_auto_dump, set_dump_dir, AutoDump};
pub use report::{job_display_name, job_name_from_display};
pub use report::{mark, report_since, Marker};
pub use report::{
    release_free_memory, JobLive, ProcessMemory, RssBreakdown, RunEvent, TimelineSample,
    TimelineStats, Trend, TrendKind,
};
pub use report::{
    report, CallsiteReport, Diagnostic, Exclusive, FlameMetric, FlameOptions, Frame, JobReport,
    Report, RunReport, RunRetained, SharedStr, Totals, TrackerStats, Usage,
};
pub use report::{ActiveJob, DumpTrigger};
pub use report::{CallsiteDiff, Change, DiffTextOptions, JobDiff, ReportDiff};
pub use scope::{
    current_scope, on_run_finished, remove_hook, spawn, track_scope, track_scope_run, HookId,
    ScopeHandle,
};

/// The report's one size format (never `1024 KiB`), for log lines that read like the report.
/// A formatting helper, kept at the root because programs written against earlier versions
/// call `allocscope::human_bytes`.
pub use report::text::human_bytes;

/// The one atomic file writer (every file allocscope writes goes through it), for programs
/// that write their own renderings. Kept at the root because programs written against earlier
/// versions call `allocscope::write_file_atomic`.
pub use report::write_file_atomic;
