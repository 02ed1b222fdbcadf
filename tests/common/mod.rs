//! Helpers shared by the integration tests (`mod common;` in a test file): stack mode set up,
//! test data paths and fixtures, and golden-file comparison.
//!
//! Not every test binary uses every helper. Helpers whose frames a test asserts on (functions
//! that allocate, like `keep_boxes`) stay in their test file: their source file is part of
//! the expected output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Once;

use allocscope::{Report, StackMode};

/// Turns exact stacks on, once for the whole test binary (the mode is process-wide: every test
/// of a binary that needs it calls this first).
pub fn every() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| allocscope::set_stack_mode(StackMode::Every));
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

/// Whether the external tool `cmd` runs (`cmd args` succeeds). When it does not, prints why the
/// calling test skips (`.ci/run` installs `package`); tests skip only in that case.
pub fn have_tool(cmd: &str, args: &[&str], package: &str) -> bool {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "skipped: `{cmd} {}` failed ({}); .ci/run installs Debian's {package}",
                args.join(" "),
                out.status
            );
            false
        }
        Err(e) => {
            eprintln!("skipped: `{cmd}` not found ({e}); .ci/run installs Debian's {package}");
            false
        }
    }
}

/// A loopback TCP port that was free a moment ago (for tools that need a port number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
