//! Configuration from the environment: every `ALLOCSCOPE_*` variable, parsed in one place.
//!
//! Rules:
//! * every variable the library reads is named here (the constants below) and parsed here;
//!   the modules that apply a setting ask this module for the parsed value;
//! * each variable is read once, with tracking suspended where reading may allocate; an invalid
//!   value is reported once on stderr (a one-line [`Error::InvalidConfig`]) and its default is
//!   used — never a panic;
//! * settings made in code take precedence over the environment (the module applying a setting
//!   reads the environment before it stores a value from code);
//! * this is a leaf: it imports only the model and the error type, so every layer may use it.
//!
//! | variable | read by | meaning |
//! | --- | --- | --- |
//! | `ALLOCSCOPE_STACKS` | `callsite` | [`StackMode`]: `off`, `every`, `sampled`, or a mean in bytes |
//! | `ALLOCSCOPE_DIR` | `report::dump` | folder for automatic dumps |
//! | `ALLOCSCOPE_DUMP_THRESHOLD` | `report::dump` | bytes a run must retain to be dumped |
//! | `ALLOCSCOPE_DUMP_KEEP` | `report::dump` | dumps kept in the folder |
//! | `ALLOCSCOPE_HTTP` | `http` (feature `http`) | address of the live endpoint, started at the first call |
//! | `ALLOCSCOPE_TIMELINE` | `timeline` | sampler interval ([`parse_interval`]: `500ms`, `1s`, `1m`); `off` or unset: no sampler |
//! | `ALLOCSCOPE_DUMP_ABOVE` | `timeline::above` | [`MemoryLine`]: `80%` of the memory limit or `2GiB`; dumps to `ALLOCSCOPE_DIR` when memory crosses it |
//! | `ALLOCSCOPE_BUDGETS` | `budget` | per-job limits ([`parse_budgets`]: `import_users: retained=10MiB peak=200MiB; *: objects=1000000; interval=5m`) |
//!
//! (`ALLOCSCOPE_BLESS` is read by the crate's own tests only, to rewrite golden files.)

use std::path::PathBuf;

use crate::error::Error;
use crate::model::{Limit, Limits, StackMode};

/// Which allocations record a stack ([`StackMode::parse`] syntax).
pub(crate) const STACKS: &str = "ALLOCSCOPE_STACKS";
/// Folder for automatic dumps.
pub(crate) const DIR: &str = "ALLOCSCOPE_DIR";
/// Bytes a run must retain to be dumped ([`parse_bytes`] syntax).
pub(crate) const DUMP_THRESHOLD: &str = "ALLOCSCOPE_DUMP_THRESHOLD";
/// Dumps kept in the folder.
pub(crate) const DUMP_KEEP: &str = "ALLOCSCOPE_DUMP_KEEP";
/// Address of the live endpoint (feature `http`), e.g. `127.0.0.1:6060`.
#[cfg(feature = "http")]
pub(crate) const HTTP: &str = "ALLOCSCOPE_HTTP";

/// The address in `ALLOCSCOPE_HTTP`, trimmed; `None` when unset or empty. Resolved (and an
/// invalid one reported) by the server when it binds.
#[cfg(feature = "http")]
pub(crate) fn http_addr() -> Option<String> {
    let raw = std::env::var_os(HTTP)?;
    let addr = raw.to_string_lossy().trim().to_string();
    (!addr.is_empty()).then_some(addr)
}

/// Longest part of a variable's value a message shows (in characters, before escaping).
#[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
pub(crate) const SHOWN_CHARS: usize = 64;

/// A variable's value as an error message shows it: control characters, quotes and
/// backslashes escaped as in Rust strings (`\n`, `\u{1b}`), cut after [`SHOWN_CHARS`]
/// characters with the full length said (`…(100000 bytes)`), so a hostile value can neither
/// flood stderr nor drive the terminal.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // used by the live endpoint only
pub(crate) fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str(&format!("…({} bytes)", value.len()));
    }
    out
}

/// The timeline sampler's interval.
pub(crate) const TIMELINE: &str = "ALLOCSCOPE_TIMELINE";
/// The memory line above which a report is dumped ([`MemoryLine::parse`] syntax).
pub(crate) const DUMP_ABOVE: &str = "ALLOCSCOPE_DUMP_ABOVE";
/// Per-job budgets ([`parse_budgets`] syntax).
pub(crate) const BUDGETS: &str = "ALLOCSCOPE_BUDGETS";

/// A memory line: a share of the process's memory limit, or an absolute size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryLine {
    /// A percentage (above 0, at most 100) of the memory limit: the cgroup's (v2
    /// `memory.max`, v1 `memory.limit_in_bytes`) or else physical memory.
    PercentOfLimit(f64),
    /// An absolute size in bytes.
    Bytes(u64),
}

impl MemoryLine {
    /// Parses `80%` (a percentage of the memory limit, decimals allowed, above 0 and at most
    /// 100) or a byte count with an optional binary suffix (`2GiB`, `512m`, `200MiB`,
    /// `1073741824`; at least 1 MiB). Errors name `ALLOCSCOPE_DUMP_ABOVE` and the syntax.
    pub fn parse(text: &str) -> Result<MemoryLine, Error> {
        let t = text.trim();
        let err = || {
            Error::InvalidConfig(format!(
                "{DUMP_ABOVE}={text:?} is not a share of the memory limit such as 80% or a \
                 size of at least 1 MiB such as 2GiB or 512m"
            ))
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| err())?;
            return if v.is_finite() && v > 0.0 && v <= 100.0 && !p.trim().starts_with('+') {
                Ok(MemoryLine::PercentOfLimit(v))
            } else {
                Err(err())
            };
        }
        match parse_bytes(t) {
            Some(b) if b >= 1 << 20 => Ok(MemoryLine::Bytes(b)),
            _ => Err(err()),
        }
    }

    /// The line in bytes, given the memory limit (needed for a percentage).
    pub fn bytes(&self, limit_bytes: Option<u64>) -> Option<u64> {
        match *self {
            MemoryLine::Bytes(b) => Some(b),
            MemoryLine::PercentOfLimit(p) => {
                limit_bytes.map(|l| ((l as f64) * p / 100.0).min(u64::MAX as f64) as u64)
            }
        }
    }
}

impl std::fmt::Display for MemoryLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryLine::PercentOfLimit(p) => write!(f, "{p}%"),
            MemoryLine::Bytes(b) if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            MemoryLine::Bytes(b) if b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            MemoryLine::Bytes(b) => write!(f, "{b}"),
        }
    }
}

/// `ALLOCSCOPE_DUMP_ABOVE`, parsed: `None` when unset or empty, or invalid (then reported on
/// stderr in one line: the line stays off). Call once; may allocate, so call it untracked.
pub(crate) fn dump_above() -> Option<MemoryLine> {
    let raw = std::env::var_os(DUMP_ABOVE)?;
    let v = raw.to_string_lossy();
    if v.trim().is_empty() {
        return None;
    }
    match MemoryLine::parse(&v) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("allocscope: {e}; memory-line dumps off");
            None
        }
    }
}

/// Budgets from `ALLOCSCOPE_BUDGETS`: each job's limits, and the interval between two
/// reports of one job's breaches.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BudgetEnv {
    pub jobs: Vec<(String, Limits)>,
    pub interval: Option<std::time::Duration>,
}

/// Parses the `ALLOCSCOPE_BUDGETS` syntax: entries separated by `;`, each either
/// `JOB: LIMIT=VALUE ...` (limits separated by spaces or commas; the job name is everything
/// before the entry's last `:`, trimmed; `*` is every job without a budget of its own) or
/// `interval=DURATION` (at most one report per job per interval, [`parse_interval`] syntax).
/// Limits: `retained` (or `retained_bytes`), `retained_objects`, `peak` (`peak_bytes`),
/// `allocated` (`allocated_bytes`), `objects` (`allocated_objects`); bytes take
/// [`parse_bytes`] suffixes, objects are whole numbers (`_` allowed between digits).
pub(crate) fn parse_budgets(text: &str) -> Result<BudgetEnv, Error> {
    let err = |what: String| Error::InvalidConfig(format!("{BUDGETS}={text:?}: {what}"));
    let mut env = BudgetEnv::default();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((job, limits)) = entry.rsplit_once(':') else {
            let interval = entry
                .strip_prefix("interval")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .ok_or_else(|| {
                    err(format!(
                        "{entry:?} is neither `JOB: LIMIT=VALUE ...` nor `interval=DURATION`"
                    ))
                })?;
            env.interval = Some(parse_interval(interval).map_err(|_| {
                err(format!(
                    "interval {interval:?} is not a duration such as 5m"
                ))
            })?);
            continue;
        };
        let job = job.trim();
        if job.is_empty() {
            return Err(err(format!("{entry:?} names no job before `:`")));
        }
        let mut l = Limits::default();
        for item in limits.split([' ', ',', '\t']).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| err(format!("{item:?} is not LIMIT=VALUE")))?;
            let limit = match key.trim() {
                "retained" | "retained_bytes" => Limit::RetainedBytes,
                "retained_objects" => Limit::RetainedObjects,
                "peak" | "peak_bytes" => Limit::PeakBytes,
                "allocated" | "allocated_bytes" => Limit::AllocatedBytes,
                "objects" | "allocated_objects" => Limit::AllocatedObjects,
                other => {
                    return Err(err(format!(
                        "unknown limit {other:?} (retained, retained_objects, peak, allocated, \
                         objects)"
                    )))
                }
            };
            let v = if limit.is_bytes() {
                parse_bytes(value)
            } else {
                let digits = value.trim().replace('_', "");
                digits
                    .parse::<u64>()
                    .ok()
                    .filter(|_| !digits.starts_with('+'))
            }
            .ok_or_else(|| err(format!("{value:?} is not a valid value for {key}")))?;
            l.set(limit, v);
        }
        if l.is_empty() {
            return Err(err(format!("job {job:?} has no limit")));
        }
        env.jobs.push((job.to_string(), l));
    }
    Ok(env)
}

/// `ALLOCSCOPE_BUDGETS`, parsed: `None` when unset, empty or invalid (then reported on
/// stderr in one line: no budget from the environment). Call once; may allocate.
pub(crate) fn budgets() -> Option<BudgetEnv> {
    let raw = std::env::var_os(BUDGETS)?;
    let v = raw.to_string_lossy();
    if v.trim().is_empty() {
        return None;
    }
    match parse_budgets(&v) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("allocscope: {e}; no budgets from the environment");
            None
        }
    }
}

/// Default [`AutoDump::threshold_bytes`](crate::AutoDump::threshold_bytes): a run that retained
/// at least 1 MiB is dumped.
pub(crate) const DEFAULT_DUMP_THRESHOLD: u64 = 1 << 20;
/// Default [`AutoDump::max_files`](crate::AutoDump::max_files): the 20 newest dumps are kept.
pub(crate) const DEFAULT_MAX_DUMPS: usize = 20;
/// Most dumps [`AutoDump::max_files`](crate::AutoDump::max_files) can keep; larger values are
/// clamped to it.
pub(crate) const MAX_DUMPS_LIMIT: usize = 10_000;

/// A byte count with an optional `k`/`m`/`g` (or `kib`/`mib`/`gib`) suffix, any case, binary
/// units (`1k` = 1024). `None` for anything else, negative numbers and overflow.
/// Does not allocate (the allocator's first call parses `ALLOCSCOPE_STACKS` with it).
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    let s = text.trim();
    let (digits, shift) = [
        ("kib", 10),
        ("mib", 20),
        ("gib", 30),
        ("k", 10),
        ("m", 20),
        ("g", 30),
    ]
    .iter()
    .find_map(|&(suffix, shift)| strip_suffix_ignore_case(s, suffix).map(|d| (d, shift)))
    .unwrap_or((s, 0));
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// `s` without `suffix` (ASCII, any case), if it ends with it.
fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// The `ALLOCSCOPE_STACKS` syntax without allocating: `None` when invalid.
fn parse_stacks(text: &str) -> Option<StackMode> {
    let s = text.trim();
    let is = |names: &[&str]| names.iter().any(|n| s.eq_ignore_ascii_case(n));
    if is(&["off", "none"]) {
        return Some(StackMode::Off);
    }
    if is(&["every", "all", "exact"]) {
        return Some(StackMode::Every);
    }
    if is(&["sampled", "sample", "default"]) {
        return Some(StackMode::default());
    }
    match parse_bytes(s)? {
        0 => Some(StackMode::Off),
        1 => Some(StackMode::Every),
        mean_bytes => Some(StackMode::Sampled { mean_bytes }),
    }
}

/// `ALLOCSCOPE_STACKS` read **without allocating and without any lock**, for the allocator's
/// very first allocation (before `main`, before any call into allocscope): `libc::getenv`
/// returns a pointer into the environment block. `None` when unset, not UTF-8 or invalid
/// (the invalid value is reported on stderr later, by [`stacks`], at the first API call).
pub(crate) fn stacks_early() -> Option<StackMode> {
    // SAFETY: the name is a NUL-terminated literal; getenv returns null or a pointer to a
    // NUL-terminated string in the environment block, read at once. (A concurrent `setenv`
    // could invalidate it, as for any getenv caller; programs set this variable before
    // starting, not while allocating on other threads.)
    let bytes = unsafe {
        let p = libc::getenv(c"ALLOCSCOPE_STACKS".as_ptr());
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_bytes()
    };
    parse_stacks(std::str::from_utf8(bytes).ok()?)
}

impl StackMode {
    /// Parses the `ALLOCSCOPE_STACKS` syntax: `off` (or `none`), `every` (or `all`, `exact`),
    /// `sampled` (the default mean), or a mean in bytes, with an optional binary suffix
    /// `k`/`m`/`g` or `kib`/`mib`/`gib` (any case): sampled with that mean. The rule of
    /// [`StackMode::Sampled::mean_bytes`](StackMode::Sampled) holds here too: a mean of `0`
    /// (in any spelling, e.g. `0k`) is off, `1` is every allocation.
    pub fn parse(text: &str) -> Result<StackMode, Error> {
        parse_stacks(text).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "ALLOCSCOPE_STACKS={text:?} is not one of off, every, sampled, or a byte count \
                 such as 524288 or 512k"
            ))
        })
    }
}

/// A duration as `ALLOCSCOPE_TIMELINE` takes it: a whole or decimal number followed by `ms`,
/// `s`, `m` or `h` (`500ms`, `1s`, `1.5s`, `1m`).
pub(crate) fn parse_interval(text: &str) -> Result<std::time::Duration, Error> {
    let t = text.trim();
    let err = || {
        Error::InvalidConfig(format!(
            "{TIMELINE}={text:?}: expected a duration such as 500ms, 1s or 1m"
        ))
    };
    let (num, unit_ns) = [("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        .iter()
        .find_map(|&(u, ns)| t.strip_suffix(u).map(|n| (n.trim(), ns)))
        .ok_or_else(err)?;
    let v: f64 = num.parse().map_err(|_| err())?;
    if !v.is_finite() || v <= 0.0 || num.starts_with('+') {
        return Err(err());
    }
    let ns = v * unit_ns;
    if ns < 1.0 || ns > u64::MAX as f64 {
        return Err(err());
    }
    Ok(std::time::Duration::from_nanos(ns as u64))
}

/// `ALLOCSCOPE_TIMELINE`, parsed: `None` when unset, `off`, or invalid (then reported on
/// stderr in one line: the timeline stays off). Call once; may allocate, so call it untracked.
pub(crate) fn timeline() -> Option<std::time::Duration> {
    let raw = std::env::var_os(TIMELINE)?;
    let v = raw.to_string_lossy();
    if v.trim().is_empty() || v.trim() == "off" {
        return None;
    }
    match parse_interval(&v) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("allocscope: {e}; timeline off");
            None
        }
    }
}

/// `ALLOCSCOPE_STACKS`, parsed: `None` when unset or invalid (then reported on stderr). Call
/// once (the caller keeps the result); may allocate, so call it untracked.
pub(crate) fn stacks() -> Option<StackMode> {
    let raw = std::env::var_os(STACKS)?;
    match StackMode::parse(&raw.to_string_lossy()) {
        Ok(mode) => Some(mode),
        Err(e) => {
            eprintln!("allocscope: {e}; using the default (sampled, 512 KiB)");
            None
        }
    }
}

/// Automatic dump settings from the environment.
#[derive(Debug)]
pub(crate) struct DumpEnv {
    pub(crate) dir: PathBuf,
    pub(crate) threshold_bytes: u64,
    pub(crate) max_files: usize,
}

/// `ALLOCSCOPE_DIR` and its companions, parsed: `None` when dumps are off (unset, empty, or
/// not a folder). Invalid companions are reported on stderr and their defaults used. Call
/// once; may allocate, so call it untracked.
pub(crate) fn dumps() -> Option<DumpEnv> {
    let dir = match std::env::var_os(DIR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => return None,
    };
    if dir.exists() && !dir.is_dir() {
        eprintln!(
            "allocscope: {}; automatic dumps are off",
            Error::InvalidConfig(format!(
                "ALLOCSCOPE_DIR={:?} is not a folder",
                dir.display().to_string()
            ))
        );
        return None;
    }
    let mut config = DumpEnv {
        dir,
        threshold_bytes: DEFAULT_DUMP_THRESHOLD,
        max_files: DEFAULT_MAX_DUMPS,
    };
    if let Ok(v) = std::env::var(DUMP_THRESHOLD) {
        match parse_bytes(&v) {
            Some(n) => config.threshold_bytes = n,
            None => eprintln!(
                "allocscope: {}; using the default (1 MiB)",
                Error::InvalidConfig(format!(
                    "ALLOCSCOPE_DUMP_THRESHOLD={v:?} is not a byte count such as \
                     1048576, 512k or 1m"
                ))
            ),
        }
    }
    if let Ok(v) = std::env::var(DUMP_KEEP) {
        match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_DUMPS_LIMIT).contains(&n) => config.max_files = n,
            _ => eprintln!(
                "allocscope: {}; using the default ({DEFAULT_MAX_DUMPS})",
                Error::InvalidConfig(format!(
                    "ALLOCSCOPE_DUMP_KEEP={v:?} is not a number of files from 1 to \
                     {MAX_DUMPS_LIMIT}"
                ))
            ),
        }
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_bytes(" 1MiB "), Some(1 << 20));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999999999g"), None);
    }

    #[test]
    fn parse_accepts_documented_values() {
        assert_eq!(StackMode::parse("off").unwrap(), StackMode::Off);
        assert_eq!(StackMode::parse("EVERY").unwrap(), StackMode::Every);
        assert_eq!(StackMode::parse("sampled").unwrap(), StackMode::default());
        assert_eq!(
            StackMode::parse("4096").unwrap(),
            StackMode::Sampled { mean_bytes: 4096 }
        );
        assert_eq!(
            StackMode::parse("512k").unwrap(),
            StackMode::Sampled {
                mean_bytes: 512 * 1024
            }
        );
        assert_eq!(
            StackMode::parse("2MiB").unwrap(),
            StackMode::Sampled {
                mean_bytes: 2 << 20
            }
        );
    }

    #[test]
    fn zero_is_off_and_one_is_every_in_every_spelling() {
        for off in ["0", "0k", "0MiB", " 0 "] {
            assert_eq!(StackMode::parse(off).unwrap(), StackMode::Off, "{off}");
        }
        assert_eq!(StackMode::parse("1").unwrap(), StackMode::Every);
        assert_eq!(
            StackMode::parse("1g").unwrap(),
            StackMode::Sampled {
                mean_bytes: 1 << 30
            }
        );
        assert_eq!(
            StackMode::parse("2GiB").unwrap(),
            StackMode::Sampled {
                mean_bytes: 2 << 30
            }
        );
    }

    #[test]
    fn parse_rejects_garbage_with_a_message() {
        for bad in ["", "fast", "-5", "12q", "99999999999999999999999", "1.5"] {
            let err = StackMode::parse(bad).unwrap_err().to_string();
            assert!(err.contains("ALLOCSCOPE_STACKS"), "{bad}: {err}");
        }
    }

    #[test]
    fn memory_lines_parse() {
        assert_eq!(
            MemoryLine::parse("80%").unwrap(),
            MemoryLine::PercentOfLimit(80.0)
        );
        assert_eq!(
            MemoryLine::parse(" 12.5 % ").unwrap(),
            MemoryLine::PercentOfLimit(12.5)
        );
        assert_eq!(
            MemoryLine::parse("2GiB").unwrap(),
            MemoryLine::Bytes(2 << 30)
        );
        assert_eq!(
            MemoryLine::parse("200MiB").unwrap(),
            MemoryLine::Bytes(200 << 20)
        );
        assert_eq!(
            MemoryLine::parse("512m").unwrap(),
            MemoryLine::Bytes(512 << 20)
        );
        for bad in [
            "", "0%", "101%", "-5%", "+5%", "nan%", "abc", "1k", "2GB", "80",
        ] {
            let e = MemoryLine::parse(bad).unwrap_err().to_string();
            assert!(e.contains("ALLOCSCOPE_DUMP_ABOVE"), "{bad}: {e}");
        }
        assert_eq!(
            MemoryLine::PercentOfLimit(50.0).bytes(Some(1000)),
            Some(500)
        );
        assert_eq!(MemoryLine::PercentOfLimit(50.0).bytes(None), None);
        assert_eq!(MemoryLine::Bytes(200 << 20).to_string(), "200MiB");
        assert_eq!(MemoryLine::PercentOfLimit(80.0).to_string(), "80%");
    }

    #[test]
    fn budgets_parse() {
        let b = parse_budgets(
            "import_users: retained=10MiB peak=200MiB; GET /users/:id: objects=1_000_000, \
             retained_objects=5; *: allocated=1g; interval=30s",
        )
        .unwrap();
        assert_eq!(b.interval, Some(std::time::Duration::from_secs(30)));
        assert_eq!(b.jobs.len(), 3);
        assert_eq!(b.jobs[0].0, "import_users");
        assert_eq!(b.jobs[0].1.get(Limit::RetainedBytes), Some(10 << 20));
        assert_eq!(b.jobs[0].1.get(Limit::PeakBytes), Some(200 << 20));
        assert_eq!(b.jobs[1].0, "GET /users/:id");
        assert_eq!(b.jobs[1].1.get(Limit::AllocatedObjects), Some(1_000_000));
        assert_eq!(b.jobs[1].1.get(Limit::RetainedObjects), Some(5));
        assert_eq!(b.jobs[2].0, "*");
        assert_eq!(b.jobs[2].1.get(Limit::AllocatedBytes), Some(1 << 30));
        for bad in [
            "job: retained",
            "job: size=1",
            "job:",
            ": peak=1",
            "job: objects=1k",
            "interval=soon",
            "nonsense",
        ] {
            let e = parse_budgets(bad).unwrap_err().to_string();
            assert!(e.contains("ALLOCSCOPE_BUDGETS"), "{bad}: {e}");
        }
    }
}
