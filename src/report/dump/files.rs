//! Reports as files: atomic writes, careful reads, and the dump folder's files.
//!
//! * [`Report::write_json`] writes through the crate's one atomic writer (`atomic.rs`): a
//!   temporary file in the destination's folder, fsynced, renamed over the destination, the
//!   folder fsynced, so a crash or a kill at any point leaves either the previous file or the
//!   new one, never a torn one; only a regular file (or nothing) is ever replaced.
//! * [`Report::read_json`] reads a report back, and every way a file can be wrong (missing,
//!   empty, binary, truncated, not a report, a newer version, wrong types) is an
//!   [`Error`] naming the file and the problem, never a panic.
//! * Dump files: every dump (automatic, memory line, budget) is named
//!   `allocscope-...-<UTC time>-p<pid>...` with a time stamp strictly increasing within the
//!   process, written under one lock, and counted by [`DumpReason`]; pruning removes only
//!   automatic dumps.
//!
//! Everything here runs with tracking suspended (the callers' rule for the dump writers).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::*};

use parking_lot::{Mutex, MutexGuard};

use super::super::atomic::write_atomic_with;
use super::super::wire;
use super::super::Report;
use crate::error::Error;
use crate::model::Utc;
use crate::thread::untracked;

/// Every dump file's name starts with this (and ends with `.json`); pruning touches only
/// such files.
const DUMP_PREFIX: &str = "allocscope-";

/// Serializes writing and pruning within the process.
pub(super) static WRITE_LOCK: Mutex<()> = Mutex::new(());
/// The time stamped on the last dump (written under `WRITE_LOCK`).
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

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

/// Why a dump was written: the `reason` label of `/metrics`' `allocscope_dumps_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DumpReason {
    /// After a run that retained at least the threshold ([`AutoDump`](super::AutoDump)).
    Run,
    /// At [`finish`](super::finish).
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

/// Takes the dump lock and creates `dir` if missing.
fn lock_dir(dir: &Path) -> Result<MutexGuard<'static, ()>, Error> {
    let guard = WRITE_LOCK.lock();
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(guard)
}

/// Writes an automatic dump of `report` to `dir` (created if missing) as
/// `allocscope-<UTC time>-p<pid>-<what>.json`, then removes the oldest automatic dumps beyond
/// `keep`. Must run untracked.
pub(super) fn write_automatic(
    dir: &Path,
    what: &str,
    keep: usize,
    report: &Report,
    reason: DumpReason,
) -> Result<PathBuf, Error> {
    let _g = lock_dir(dir)?;
    let name = format!(
        "{DUMP_PREFIX}{}-p{}-{what}.json",
        next_stamp(),
        std::process::id()
    );
    let path = dir.join(name);
    report.write_json(&path)?;
    count_dump(reason);
    prune(dir, keep);
    Ok(path)
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
    let _g = lock_dir(dir)?;
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
            super::super::write_file_atomic(&path, &report.to_pprof()?)?;
            files.push(path);
        }
        let path = dir.join(format!("{stem}.html"));
        super::super::write_file_atomic(&path, report.to_html().as_bytes())?;
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
pub(super) fn sanitize(job: &str) -> String {
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
