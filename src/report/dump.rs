//! Reports on disk: atomic writes, careful reads, and opt-in automatic dumps.
//!
//! * [`Report::write_json`] writes through the crate's one atomic writer (`atomic.rs`): a
//!   temporary file in the destination's folder, fsynced, renamed over the destination, the
//!   folder fsynced, so a crash or a kill at any point leaves either the previous file or the
//!   new one, never a torn one; only a regular file (or nothing) is ever replaced.
//! * [`Report::read_json`] reads a report back, and every way a file can be wrong (missing,
//!   empty, binary, truncated, not a report, a newer version, wrong types) is an
//!   [`Error`] naming the file and the problem, never a panic.
//! * Automatic dumps ([`AutoDump`], `ALLOCSCOPE_DIR`): after a run that retained at least a
//!   threshold, and at [`finish`], a report is written to a folder, keeping a bounded number of
//!   files. The check after each run is one atomic load when dumps are off.
//!
//! Everything here runs with tracking suspended: the memory it uses is tracker overhead, never
//! charged to a job.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Once;

use parking_lot::{Mutex, RwLock};

use super::atomic::write_atomic_with;
use super::wire;
use super::{Report, RunReport};
use crate::config;
use crate::error::Error;
use crate::model::Utc;
use crate::thread::untracked;

use crate::config::{DEFAULT_DUMP_THRESHOLD, DEFAULT_MAX_DUMPS, MAX_DUMPS_LIMIT};

/// Every dump file's name starts with this (and ends with `.json`); pruning touches only
/// such files.
const DUMP_PREFIX: &str = "allocscope-";

impl Report {
    /// Writes the report as JSON to `path`, atomically.
    ///
    /// The format is version 2's compact JSON: every distinct frame and stack is written
    /// once, in a table at the start, and each callsite names its stack by index (a report
    /// of 100,000 deep callsites is tens of times smaller than with frames inline; figures
    /// in BENCHMARKS.md). [`to_json`](Self::to_json) is the same, pretty-printed.
    ///
    /// The JSON is streamed to a temporary file in the same folder (named
    /// `.allocscope-*.tmp`), which is flushed to disk (`fsync`) and renamed over `path`; the
    /// folder is then synced too, so the rename itself survives a power loss. A reader, a
    /// crash or a `kill -9` at any moment sees either the previous file or the complete new
    /// one. An existing file's permissions are kept; a new file is readable by its owner only
    /// (reports name the program's functions and files).
    ///
    /// Only a regular file (or nothing) is replaced: a directory, FIFO, socket or device
    /// node at `path` is an [`Error::Io`] and is left untouched. A symbolic link is written
    /// through: the link stays and its target is replaced atomically (a dangling link is
    /// refused). The same writer is public as [`write_file_atomic`](crate::write_file_atomic).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("report.json");
    /// let report = allocscope::report();
    /// report.write_json(&path).unwrap();
    /// assert_eq!(allocscope::Report::read_json(&path).unwrap(), report);
    /// ```
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        untracked(|| {
            write_atomic_with(path, |w| {
                wire::write(self, &mut *w, false).map_err(std::io::Error::from)
            })
        })
    }

    /// Reads a report written by [`write_json`](Self::write_json) (or
    /// [`to_json`](Self::to_json)), checking that it is an allocscope report of a version this
    /// build reads.
    ///
    /// Errors name the file: `Error::Io` when it cannot be read, `Error::InvalidReport` when it
    /// is empty, binary, truncated, not JSON, or has missing fields or wrong types (with the
    /// line and column), `Error::UnsupportedVersion` for another format or a newer version.
    /// Reading stops early on what cannot be a report: NUL bytes in the first 64 KiB
    /// (`/dev/zero`, a core dump), gzip data, a first token that cannot start a report.
    ///
    /// Bounded: the file is parsed as it is read, through a 64 KiB buffer, straight into the
    /// report (no JSON tree, no copy of the text), so memory follows the report's content.
    /// Limits: a regular file over **4 GiB** is refused before reading (a pipe or device
    /// when it passes 4 GiB); nesting is bounded by the model (see `src/report/wire.rs`).
    /// Version-1 files (frames inline) and version 2 (stack table) are both read. A FIFO
    /// with no writer blocks, as `cat` does.
    pub fn read_json(path: impl AsRef<Path>) -> Result<Report, Error> {
        let path = path.as_ref();
        untracked(|| {
            let name = path.display().to_string();
            let invalid = |m: String| Error::InvalidReport(format!("{name}: {m}").into());
            let too_large = || {
                invalid(format!(
                    "larger than {} GiB, too large to be a report",
                    MAX_REPORT_BYTES >> 30
                ))
            };
            let io = |source: std::io::Error| Error::Io {
                path: name.clone(),
                source,
            };
            let file = fs::File::open(path).map_err(io)?;
            // A regular file's size is known: refuse before reading anything.
            if let Ok(meta) = file.metadata() {
                if meta.is_file() && meta.len() > MAX_REPORT_BYTES {
                    return Err(too_large());
                }
            }
            let mut head = Vec::with_capacity(HEAD_BYTES as usize);
            (&file)
                .take(HEAD_BYTES)
                .read_to_end(&mut head)
                .map_err(io)?;
            if head.starts_with(&[0x1f, 0x8b]) {
                return Err(invalid(
                    "gzip-compressed data (a pprof profile?), not a JSON report".into(),
                ));
            }
            if head.contains(&0) {
                return Err(invalid(
                    "binary data, not a JSON report (NUL bytes at the start)".into(),
                ));
            }
            if let Err(e) = std::str::from_utf8(&head) {
                // A character cut at the end of the head is not an error.
                if e.error_len().is_some() {
                    return Err(invalid(format!(
                        "binary data, not a JSON report (invalid UTF-8 at byte {})",
                        e.valid_up_to()
                    )));
                }
            }
            if (head.len() as u64) < HEAD_BYTES && head.iter().all(u8::is_ascii_whitespace) {
                return Err(invalid("the file is empty".into()));
            }
            // The rest streams through a 64 KiB buffer into the parser, which builds the
            // report as it reads (no JSON tree, no copy of the whole text).
            let limited = Limited {
                inner: std::io::Cursor::new(head).chain(&file),
                left: MAX_REPORT_BYTES,
                exceeded: false,
            };
            let mut reader = std::io::BufReader::with_capacity(HEAD_BYTES as usize, limited);
            let result = wire::read(serde_json::Deserializer::from_reader(&mut reader));
            if reader.get_ref().exceeded {
                return Err(too_large());
            }
            result.map_err(|e| match e {
                Error::InvalidReport(m) => Error::InvalidReport(m.prefixed(&format!("{name}: "))),
                Error::UnsupportedVersion(m) => Error::UnsupportedVersion(format!("{name}: {m}")),
                other => other,
            })
        })
    }
}

/// Bytes checked before parsing (gzip and NUL bytes, UTF-8, emptiness), and the read buffer.
const HEAD_BYTES: u64 = 64 << 10;

/// A reader that fails once more than `left` bytes were read (pipes and devices have no
/// size to check first).
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        wire::count_input(n);
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(std::io::Error::other("the report is too large"))
            }
        }
    }
}

/// Largest report file [`Report::read_json`] reads.
const MAX_REPORT_BYTES: u64 = 4 << 30;

// ---------------------------------------------------------------------------------------------
// Automatic dumps
// ---------------------------------------------------------------------------------------------

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
/// Each dump is a full [`Report`] (every job) written with [`Report::write_json`], named
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
/// Serializes writing and pruning within the process.
static WRITE_LOCK: Mutex<()> = Mutex::new(());
/// The time stamped on the last dump (written under `WRITE_LOCK`).
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);
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

/// Why a dump was written: the `reason` label of `/metrics`' `allocscope_dumps_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DumpReason {
    /// After a run that retained at least the threshold ([`AutoDump`]).
    Run,
    /// At [`finish`].
    Exit,
    /// The memory line of `timeline::set_dump_above` was crossed.
    MemoryAbove,
    /// A job exceeded its budget.
    Budget,
}

impl DumpReason {
    /// Every reason, in label order.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
    pub(crate) const ALL: [DumpReason; 4] = [
        DumpReason::Run,
        DumpReason::Exit,
        DumpReason::MemoryAbove,
        DumpReason::Budget,
    ];

    /// The label value: `run`, `exit`, `memory_above`, `budget`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DumpReason::Run => "run",
            DumpReason::Exit => "exit",
            DumpReason::MemoryAbove => "memory_above",
            DumpReason::Budget => "budget",
        }
    }
}

/// Dumps written so far, by [`DumpReason`] (index = position in `ALL`).
static DUMPS_WRITTEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn count_dump(reason: DumpReason) {
    DUMPS_WRITTEN[reason as usize].fetch_add(1, Relaxed);
}

/// Dumps written so far in this process, by reason.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
pub(crate) fn dumps_written() -> [(DumpReason, u64); 4] {
    DumpReason::ALL.map(|r| (r, DUMPS_WRITTEN[r as usize].load(Relaxed)))
}

/// A fresh time stamp for a dump file: strictly increasing within the process (a dump in the
/// same millisecond as the previous one is stamped 1 ms later), so that name order is age
/// order. Call under `WRITE_LOCK`.
fn next_stamp() -> String {
    let ms = crate::model::unix_ms().max(LAST_STAMP.load(Relaxed) + 1);
    LAST_STAMP.store(ms, Relaxed);
    utc_stamp(ms)
}

/// Writes a guardrail's dump of `report` to `dir` (created if missing): the JSON report as
/// `allocscope-<kind>-<UTC time>-p<pid><suffix>.json` and, with `profile_and_page`, the
/// gzipped pprof profile (`.pb.gz`, with the `pprof` feature) and the HTML page (`.html`) next
/// to it. Each file is written atomically, one after another, and each rendering is dropped
/// before the next is made, so the dump holds the report plus one rendering at a time.
/// Automatic dumps' pruning never removes these files. Must run untracked.
pub(crate) fn write_set(
    dir: &Path,
    kind: DumpReason,
    suffix: &str,
    report: &Report,
    profile_and_page: bool,
) -> Result<Vec<PathBuf>, Error> {
    let _g = WRITE_LOCK.lock();
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let kind_name = match kind {
        DumpReason::MemoryAbove => "memory",
        other => other.as_str(),
    };
    let stem = format!(
        "{DUMP_PREFIX}{kind_name}-{}-p{}{}",
        next_stamp(),
        std::process::id(),
        sanitize_suffix(suffix)
    );
    let mut files = Vec::with_capacity(3);
    let json = dir.join(format!("{stem}.json"));
    report.write_json(&json)?;
    files.push(json);
    if profile_and_page {
        #[cfg(feature = "pprof")]
        {
            let path = dir.join(format!("{stem}.pb.gz"));
            super::write_file_atomic(&path, &report.to_pprof()?)?;
            files.push(path);
        }
        let path = dir.join(format!("{stem}.html"));
        super::write_file_atomic(&path, report.to_html().as_bytes())?;
        files.push(path);
    }
    count_dump(kind);
    Ok(files)
}

/// `-<sanitized>` for a non-empty suffix.
fn sanitize_suffix(suffix: &str) -> String {
    if suffix.is_empty() {
        String::new()
    } else {
        format!("-{}", sanitize(suffix))
    }
}

/// Writes one dump and prunes old ones. Must run untracked.
fn write_dump(config: &AutoDump, run: Option<&RunReport>) -> Result<PathBuf, Error> {
    let report = crate::report();
    let _g = WRITE_LOCK.lock();
    fs::create_dir_all(&config.dir).map_err(|source| Error::Io {
        path: config.dir.display().to_string(),
        source,
    })?;
    let what = match run {
        Some(r) => format!("{}-run{}", sanitize(&r.job), r.run),
        None => "exit".to_string(),
    };
    let name = format!(
        "{DUMP_PREFIX}{}-p{}-{what}.json",
        next_stamp(),
        std::process::id()
    );
    let path = config.dir.join(name);
    report.write_json(&path)?;
    count_dump(if run.is_some() {
        DumpReason::Run
    } else {
        DumpReason::Exit
    });
    prune(&config.dir, config.max_files);
    Ok(path)
}

/// Removes the oldest dump files beyond `keep`. Best effort: a file that cannot be removed (or
/// was removed by another process meanwhile) is left alone.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut dumps: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Only automatic dumps (`allocscope-<time>-...`): guardrails' dumps
            // (`allocscope-memory-...`, `allocscope-budget-...`) are kept.
            let automatic = name
                .strip_prefix(DUMP_PREFIX)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            (automatic && name.ends_with(".json")).then(|| (name, e.path()))
        })
        .collect();
    if dumps.len() <= keep {
        return;
    }
    // Names start with a fixed-width UTC time: name order is age order.
    dumps.sort();
    let excess = dumps.len() - keep;
    for (_, path) in dumps.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}

/// A job name safe in a file name on any OS: letters, digits, `_`, `-`, `.`; at most 64.
fn sanitize(job: &str) -> String {
    let mut s: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC) for milliseconds since the Unix epoch.
fn utc_stamp(unix_ms: u64) -> String {
    let t = Utc::from_unix_ms(unix_ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

/// Applies the dump variables (parsed by [`config::dumps`]) once.
pub(crate) fn init_from_env() {
    if ENV_ONCE.is_completed() {
        return;
    }
    untracked(|| {
        ENV_ONCE.call_once(|| {
            crate::fork::register(&CONFIG);
            crate::fork::register(&WRITE_LOCK);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_fixed_width() {
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        // 2024-02-29 23:59:59.999 UTC (a leap day).
        assert_eq!(utc_stamp(1_709_251_199_999), "20240229T235959.999Z");
        assert_eq!(utc_stamp(1_709_251_200_000), "20240301T000000.000Z");
        // 2000-01-01 00:00:00 UTC.
        assert_eq!(utc_stamp(946_684_800_000), "20000101T000000.000Z");
    }

    #[test]
    fn job_names_become_safe_file_names() {
        assert_eq!(sanitize("import_users"), "import_users");
        assert_eq!(sanitize("a/b c:d*"), "a_b_c_d_");
        assert_eq!(sanitize("../etc"), "_.._etc");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("é"), "_");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 64);
    }
}
