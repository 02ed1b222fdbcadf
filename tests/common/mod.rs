//! Helpers shared by the integration tests, in one folder. `mod common;` in a test file gives
//! this file: exact stacks ([`every`]), test data paths and fixtures, golden-file comparison,
//! an HTTP GET ([`get_text`]), free loopback ports, and the rule for tests that need an external tool ([`require_tool`], [`missing_tool`]).
//! The larger helpers beside it are included by the tests that need them, each with
//! `#[path = "common/<file>.rs"] mod <file>;`:
//! * `chromium.rs` — headless Chromium over the DevTools pipe;
//! * `prometheus.rs` — a real prometheus scraping targets, queried over its API;
//! * `pprof.rs` — reading pprof profiles back (the crate's own prost messages);
//! * `distinct_stacks.rs` — many distinct stacks on demand;
//! * `reliability.rs` — the reliability tests' watchdog, RNG, RSS and mixed workload.
//!
//! Not every test binary uses every helper. Helpers whose frames a test asserts on (functions
//! that allocate, like `keep_boxes`) stay in their test file: their source file is part of
//! the expected output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use allocscope::{Report, StackMode};

/// Turns exact stacks on (`StackMode::Every`). The mode is process-wide: every test of a binary
/// that needs exact callsites calls this first, also after a test of the same binary chose
/// another mode.
pub fn every() {
    allocscope::set_stack_mode(StackMode::Every);
}

/// The path of test data file `name` in `tests/data/<dir>/`.
pub fn data(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
        .join(name)
}

/// The text of test data file `name` in `tests/data/<dir>/`.
pub fn read_data(dir: &str, name: &str) -> String {
    let path = data(dir, name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The export tests' fixture report, `tests/data/export/fixture.json`.
pub fn export_fixture() -> Report {
    let text = std::fs::read_to_string(data("export", "fixture.json")).expect("read fixture.json");
    Report::from_json(&text).expect("fixture.json is a valid report")
}

/// Whether golden files are being rewritten (`ALLOCSCOPE_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os("ALLOCSCOPE_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares `actual` with the golden file `tests/data/<dir>/<name>`, line by line.
///
/// With `ALLOCSCOPE_BLESS=1` the file is (re)written instead. Without it, a **missing** golden
/// file is a failure, not a silent write: a test that creates its own expectation cannot fail.
pub fn golden(dir: &str, name: &str, actual: &str) {
    let path = data(dir, name);
    if blessing() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {}: {e}; run with ALLOCSCOPE_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (if the change is intended, rerun with ALLOCSCOPE_BLESS=1)\n--- full output ---\n{actual}",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

/// Whether this is a CI run: `CI=true` (CI services set it; so does `.ci/run`). There, a test
/// whose external tool is missing fails instead of skipping, so a green CI means every check ran.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Says that a test cannot run because `what` is missing (`why`), and what installs it (Debian
/// package `package`, which `.ci/run` installs). Under CI ([`under_ci`]) this panics: the test
/// fails. Elsewhere it prints why the test skips; the caller then returns.
pub fn missing_tool(what: &str, why: &str, package: &str) {
    missing_tool_in(under_ci(), what, why, package)
}

/// [`missing_tool`] with the CI decision given (for the helper's own test).
pub fn missing_tool_in(ci: bool, what: &str, why: &str, package: &str) {
    let msg = format!("{what} is missing ({why}); .ci/run installs Debian's {package}");
    if ci {
        panic!("{msg}; under CI=true a test whose tool is missing fails");
    }
    eprintln!("skipped: {msg}");
}

/// Whether the external tool `cmd` runs (`cmd args` succeeds). When it does not: under CI the
/// test fails here; elsewhere this prints why the test skips and returns `false`. Use as
/// `if !common::require_tool("promtool", &["--version"], "prometheus") { return; }`.
pub fn require_tool(cmd: &str, args: &[&str], package: &str) -> bool {
    require_tool_in(under_ci(), cmd, args, package)
}

/// [`require_tool`] with the CI decision given (for the helper's own test).
pub fn require_tool_in(ci: bool, cmd: &str, args: &[&str], package: &str) -> bool {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let why = format!("`{cmd} {}` failed: {}", args.join(" "), out.status);
            missing_tool_in(ci, &format!("`{cmd}`"), &why, package);
            false
        }
        Err(e) => {
            missing_tool_in(ci, &format!("`{cmd}`"), &format!("not found: {e}"), package);
            false
        }
    }
}

/// The body of `GET url` as text (60 s timeout); panics naming the URL on an error status.
pub fn get_text(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// A loopback TCP port that was free a moment ago (for tools that need a port number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Peak memory of this process from here on: [`PeakRss::start`] resets the kernel's resident
/// high-water mark (`VmHWM`, through `/proc/self/clear_refs`) and notes the RSS then;
/// [`PeakRss::grown`] is how far the peak rose above it since. Linux only (`None` elsewhere,
/// or when the mark cannot be reset). Run it in a child process of its own: other tests'
/// threads would add to the peak.
pub struct PeakRss {
    start_kib: u64,
}

impl PeakRss {
    pub fn start() -> Option<PeakRss> {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        Some(PeakRss {
            start_kib: status_kib("VmRSS:")?,
        })
    }

    /// Bytes the resident peak rose above the RSS at [`PeakRss::start`].
    pub fn grown(&self) -> u64 {
        status_kib("VmHWM:")
            .unwrap_or(0)
            .saturating_sub(self.start_kib)
            * 1024
    }
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
