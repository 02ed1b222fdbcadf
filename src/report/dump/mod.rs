//! Automatic dumps ([`AutoDump`], `ALLOCSCOPE_DIR`): after a run that retained at least a
//! threshold, and at [`finish`], a report is written to a folder, keeping a bounded number of
//! files. The check after each run is one atomic load when dumps are off.
//!
//! The files themselves (reports written and read, dump names, pruning, the dumps of the
//! guardrails: `budget`, the memory line) are `files`' job.
//!
//! Everything here runs with tracking suspended: the memory it uses is tracker overhead, never
//! charged to a job.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Once;

use parking_lot::RwLock;

use super::RunReport;
use crate::config;
use crate::error::Error;
use crate::thread::untracked;

use crate::config::{DEFAULT_DUMP_THRESHOLD, DEFAULT_MAX_DUMPS, MAX_DUMPS_LIMIT};

mod files;

#[cfg(feature = "http")]
pub(crate) use files::dumps_written;
pub(crate) use files::{write_set, DumpReason};

/// Settings for automatic dumps: where, from which size on, and how many files to keep.
///
/// Enable with [`set_auto_dump`] (or [`set_dump_dir`] for the defaults), or without touching
/// code through the environment, read once at the first scope, report or dump call:
///
/// | variable | meaning | default |
/// | --- | --- | --- |
/// | `ALLOCSCOPE_DIR` | folder to write dumps to (created if missing); unset, empty or an existing non-folder: off | off |
/// | `ALLOCSCOPE_DUMP_THRESHOLD` | bytes a run must retain to be dumped (`k`/`m`/`g` suffixes) | 1 MiB |
/// | `ALLOCSCOPE_DUMP_KEEP` | dumps kept in the folder, oldest removed first | 20 |
///
/// An invalid value is reported once on stderr and its default is used. Settings made in code
/// take precedence over the environment.
///
/// A dump is written synchronously on the thread that finished the run, after the run's
/// hooks (for a tracked future: inside the poll that completed it), and takes as long as
/// [`report()`](crate::report()) plus the write: pick a threshold that only leaking runs
/// reach. A dump that fails (folder not writable, disk full) is reported on stderr the first
/// time only; [`finish`] returns its error.
///
/// Each dump is a full [`Report`](super::Report) (every job) written with [`Report::write_json`](super::Report::write_json), named
/// `allocscope-<UTC time>-p<pid>-<job>-run<N>.json` after a run and
/// `allocscope-<UTC time>-p<pid>-exit.json` by [`finish`], with the time as
/// `20261122T214402.123Z`, so names sort oldest first (within a process, two dumps in the
/// same millisecond are stamped 1 ms apart). Job names are reduced to letters,
/// digits, `_`, `-` and `.` (others become `_`), 64 characters at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoDump {
    /// The folder dumps are written to (created if missing).
    pub dir: PathBuf,
    /// A finished run is dumped when it still held at least this many bytes when it finished
    /// ([`RunReport::retained_at_finish`]). 0 dumps after every run.
    pub threshold_bytes: u64,
    /// Dumps kept in the folder (1 to [`MAX_DUMPS_LIMIT`](Self::MAX_DUMPS_LIMIT)); after each
    /// dump, the oldest
    /// `allocscope-*.json` files beyond it are removed.
    pub max_files: usize,
}

impl AutoDump {
    /// The default [`threshold_bytes`](Self::threshold_bytes): 1 MiB.
    pub const DEFAULT_THRESHOLD: u64 = DEFAULT_DUMP_THRESHOLD;
    /// The default [`max_files`](Self::max_files): the 20 newest dumps are kept.
    pub const DEFAULT_MAX_DUMPS: usize = DEFAULT_MAX_DUMPS;
    /// The most dumps a folder may keep (`max_files` and `ALLOCSCOPE_DUMP_KEEP` are clamped
    /// to it).
    pub const MAX_DUMPS_LIMIT: usize = MAX_DUMPS_LIMIT;

    /// Dumps to `dir`, with the default threshold (1 MiB) and the 20 newest files kept.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AutoDump {
            dir: dir.into(),
            threshold_bytes: DEFAULT_DUMP_THRESHOLD,
            max_files: DEFAULT_MAX_DUMPS,
        }
    }

    /// The same settings with another threshold, in bytes.
    pub fn threshold_bytes(mut self, bytes: u64) -> Self {
        self.threshold_bytes = bytes;
        self
    }

    /// The same settings keeping `files` dumps (clamped to
    /// 1..=[`MAX_DUMPS_LIMIT`](Self::MAX_DUMPS_LIMIT)).
    pub fn max_files(mut self, files: usize) -> Self {
        self.max_files = files;
        self
    }

    fn normalized(mut self) -> Self {
        self.max_files = self.max_files.clamp(1, MAX_DUMPS_LIMIT);
        self
    }
}

/// Current settings; `ENABLED` mirrors `CONFIG.is_some()` for the check after every run.
static CONFIG: RwLock<Option<AutoDump>> = RwLock::new(None);
static ENABLED: AtomicBool = AtomicBool::new(false);
static ENV_ONCE: Once = Once::new();
/// Failed automatic dumps (only the first is reported on stderr).
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Enables automatic dumps with `config`, or disables them with `None`. Overrides
/// `ALLOCSCOPE_DIR` and the other variables of [`AutoDump`].
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use allocscope::AutoDump;
/// allocscope::set_auto_dump(Some(AutoDump::new(dir.path()).threshold_bytes(64 << 20).max_files(5)));
/// # allocscope::set_auto_dump(None);
/// ```
pub fn set_auto_dump(config: Option<AutoDump>) {
    init_from_env();
    untracked(|| {
        let config = config.map(AutoDump::normalized);
        let mut c = CONFIG.write();
        ENABLED.store(config.is_some(), Relaxed);
        *c = config;
    });
}

/// Enables automatic dumps to `dir` with the default threshold and file count, or disables
/// them with `None`. Shorthand for [`set_auto_dump`] with [`AutoDump::new`].
pub fn set_dump_dir(dir: Option<PathBuf>) {
    set_auto_dump(dir.map(AutoDump::new));
}

/// The automatic dump settings in effect (from code or the environment), `None` when off.
pub fn auto_dump() -> Option<AutoDump> {
    init_from_env();
    untracked(|| CONFIG.read().clone())
}

/// The exit dump of automatic dumps: writes one last report
/// (`allocscope-<time>-p<pid>-exit.json`) to the dump folder when automatic dumps are on
/// ([`set_auto_dump`], `ALLOCSCOPE_DIR`); call it at the end of `main`.
///
/// Returns the file written, or `None` when dumps are off. Unlike the dumps after each run,
/// this one is written whatever the threshold. It changes no setting and stops nothing (the
/// sampler, the live endpoint and later dumps go on); it may be called more than once.
pub fn finish() -> Result<Option<PathBuf>, Error> {
    let Some(config) = auto_dump() else {
        return Ok(None);
    };
    untracked(|| write_dump(&config, None)).map(Some)
}

/// The after-run hook automatic dumps install in the registry (on its thread, after its
/// scope closed and its hooks ran). Installed by [`init_from_env`], which every way of
/// enabling dumps runs first; one atomic load when dumps are off.
#[inline]
fn after_run(run: &RunReport) {
    if ENABLED.load(Relaxed) {
        dump_run(run);
    }
}

#[cold]
fn dump_run(run: &RunReport) {
    untracked(|| {
        let Some(config) = CONFIG.read().clone() else {
            return;
        };
        // An unmeasured run (no run slot) has no figures of its own: judge it by what its job
        // holds now, rather than by zeros that would never reach the threshold.
        let retained = if run.unmeasured {
            super::build::job_counters_now(&run.job).map_or(0, |c| c.retained().bytes)
        } else {
            run.retained_at_finish.bytes
        };
        if retained < config.threshold_bytes {
            return;
        }
        if let Err(e) = write_dump(&config, Some(run)) {
            if FAILURES.fetch_add(1, Relaxed) == 0 {
                eprintln!(
                    "allocscope: automatic dump after {} run {} failed: {e} \
                     (further dump failures are not reported)",
                    run.job, run.run
                );
            }
        }
    });
}

/// Writes one dump and prunes old ones. Must run untracked.
fn write_dump(config: &AutoDump, run: Option<&RunReport>) -> Result<PathBuf, Error> {
    let report = crate::report();
    let (what, reason) = match run {
        Some(r) => (
            format!("{}-run{}", files::sanitize(&r.job), r.run),
            DumpReason::Run,
        ),
        None => ("exit".to_string(), DumpReason::Exit),
    };
    files::write_automatic(&config.dir, &what, config.max_files, &report, reason)
}

/// Applies the dump variables (parsed by [`config::dumps`]) once.
pub(crate) fn init_from_env() {
    if ENV_ONCE.is_completed() {
        return;
    }
    untracked(|| {
        ENV_ONCE.call_once(|| {
            crate::fork::register(&CONFIG);
            crate::fork::register(&files::WRITE_LOCK);
            crate::registry::set_after_run(after_run);
            let Some(env) = config::dumps() else {
                return;
            };
            let config = AutoDump {
                dir: env.dir,
                threshold_bytes: env.threshold_bytes,
                max_files: env.max_files,
            };
            // Code that already chose settings wins (it ran `init_from_env` first, so this
            // cannot happen before it; kept for clarity).
            let mut c = CONFIG.write();
            if c.is_none() {
                *c = Some(config);
                ENABLED.store(true, Relaxed);
            }
        });
    });
}
