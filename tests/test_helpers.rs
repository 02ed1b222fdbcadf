//! The shared test helpers' own rules (tests/common/mod.rs): a test whose external tool is
//! missing fails under CI and skips elsewhere; a golden file is never created silently.

mod common;

use std::panic::catch_unwind;

const NO_TOOL: &str = "allocscope-test-no-such-tool";

#[test]
fn a_missing_tool_fails_under_ci_and_skips_elsewhere() {
    let under_ci = catch_unwind(|| common::require_tool_in(true, NO_TOOL, &[], "none"));
    let message = *under_ci
        .expect_err("under CI a missing tool fails the test")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains(NO_TOOL) && message.contains("CI=true"),
        "{message}"
    );
    assert!(!common::require_tool_in(false, NO_TOOL, &[], "none"));
}

#[test]
fn a_tool_that_fails_counts_as_missing() {
    // `sh -c 'exit 3'` runs but fails: as good as missing.
    assert!(
        catch_unwind(|| common::require_tool_in(true, "sh", &["-c", "exit 3"], "dash")).is_err()
    );
    assert!(!common::require_tool_in(
        false,
        "sh",
        &["-c", "exit 3"],
        "dash"
    ));
}

#[test]
fn a_tool_that_runs_is_required_silently() {
    assert!(common::require_tool_in(
        true,
        "sh",
        &["-c", "exit 0"],
        "dash"
    ));
    assert!(common::require_tool("sh", &["-c", "exit 0"], "dash"));
}

#[test]
fn ci_is_read_from_the_environment() {
    // The suite itself runs with or without CI=true; the reading must agree with the variable.
    let set = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert_eq!(common::under_ci(), set);
}
