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
//!
//! (`ALLOCSCOPE_BLESS` is read by the crate's own tests only, to rewrite golden files.)

use std::path::PathBuf;

use crate::error::Error;
use crate::model::StackMode;

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

/// The timeline sampler's interval.
pub(crate) const TIMELINE: &str = "ALLOCSCOPE_TIMELINE";

/// Default [`AutoDump::threshold_bytes`](crate::AutoDump::threshold_bytes): a run that retained
/// at least 1 MiB is dumped.
pub const DEFAULT_DUMP_THRESHOLD: u64 = 1 << 20;
/// Default [`AutoDump::max_files`](crate::AutoDump::max_files): the 20 newest dumps are kept.
pub const DEFAULT_MAX_DUMPS: usize = 20;
/// Most dumps [`AutoDump::max_files`](crate::AutoDump::max_files) can keep; larger values are
/// clamped to it.
pub const MAX_DUMPS_LIMIT: usize = 10_000;

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
}
