//! Bad input where it enters the library: report files given to `Report::from_json`, and the
//! `ALLOCSCOPE_STACKS` environment variable. Each gives a clear error (or one clear warning
//! line and the default), never a panic, a hang or a silent misreading.

use std::process::Command;

use allocscope::{report, Error, Report, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn valid_json() -> String {
    allocscope::track_scope("i_sample_job", || std::hint::black_box(vec![0u8; 10]).len());
    report().to_json()
}

fn invalid(text: &str) -> String {
    match Report::from_json(text) {
        Err(e @ (Error::InvalidReport(_) | Error::UnsupportedVersion(_))) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            msg
        }
        Err(other) => panic!("unexpected error kind for {:.60?}: {other:?}", text),
        Ok(_) => panic!("accepted invalid input {:.60?}", text),
    }
}

#[test]
fn a_valid_report_round_trips() {
    let json = valid_json();
    let r = Report::from_json(&json).expect("own output reads back");
    assert!(r.job("i_sample_job").is_some());
    assert_eq!(r.to_json(), json);
}

#[test]
fn empty_and_blank_input() {
    for text in ["", " ", "\n\n", "\u{feff}"] {
        let msg = invalid(text);
        assert!(msg.contains("not a valid allocscope report"), "{msg}");
    }
}

#[test]
fn binary_garbage() {
    // Deterministic pseudo-random bytes, made into a string the lossy way a tool reading an
    // arbitrary file would.
    let mut x = 0x1234_5678_9abc_def1u64;
    for len in [1usize, 7, 100, 4096, 100_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let msg = invalid(&text);
        assert!(
            msg.contains("not JSON") || msg.contains("not a valid"),
            "{msg}"
        );
    }
    invalid("\0\0\0\0");
    invalid("PK\u{3}\u{4}garbage");
}

#[test]
fn truncated_reports_say_truncated() {
    let json = valid_json();
    // Every prefix at a few hundred cut points, including mid-number and mid-string.
    let step = (json.len() / 300).max(1);
    for cut in (1..json.len()).step_by(step) {
        if !json.is_char_boundary(cut) {
            continue;
        }
        let msg = invalid(&json[..cut]);
        assert!(
            msg.contains("truncated") || msg.contains("not a valid"),
            "cut at {cut}: {msg}"
        );
    }
    let msg = invalid(&json[..json.len() / 2]);
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn wrong_format_version_and_types() {
    let json = valid_json();
    let version = format!("\"version\": {}", allocscope::report().format_version());
    assert!(json.contains(&version));
    let msg = invalid(&json.replacen("\"allocscope\"", "\"pprof\"", 1));
    assert!(msg.contains("pprof"), "{msg}");
    let msg = invalid(&json.replacen(&version, "\"version\": 99", 1));
    assert!(msg.contains("newer"), "{msg}");
    let msg = invalid(&json.replacen(&version, "\"version\": \"1\"", 1));
    assert!(msg.contains("version"), "{msg}");
    invalid(&json.replacen(&version, "\"version\": -1", 1));
    invalid(&json.replacen(&version, "\"version\": 1e400", 1));
    let msg = invalid("{\"version\": 1}");
    assert!(msg.contains("format"), "{msg}");
    invalid("[1, 2, 3]");
    invalid("\"allocscope\"");
    invalid("null");
    // Right header, wrong body.
    invalid("{\"format\": \"allocscope\", \"version\": 1}");
    invalid(&json.replacen("\"jobs\": [", "\"jobs\": {", 1));
}

#[test]
fn huge_numbers_are_errors_not_wraps() {
    let json = valid_json();
    let field = "\"timestamp_unix_ms\": ";
    let at = json.find(field).unwrap() + field.len();
    let end = at + json[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    for huge in [
        "18446744073709551616",             // u64::MAX + 1
        "99999999999999999999999999999999", // far beyond
        "-1",
        "1.5",
        "1e30",
    ] {
        let text = format!("{}{}{}", &json[..at], huge, &json[end..]);
        let msg = invalid(&text);
        assert!(
            msg.contains("timestamp") || msg.contains("invalid"),
            "{huge}: {msg}"
        );
    }
    // u64::MAX itself is a valid value and reads back exactly.
    let text = format!("{}{}{}", &json[..at], u64::MAX, &json[end..]);
    assert_eq!(
        Report::from_json(&text).unwrap().timestamp_unix_ms,
        u64::MAX
    );
    // A number with a million digits is rejected without hanging.
    let digits = "9".repeat(1_000_000);
    invalid(&format!("{}{}{}", &json[..at], digits, &json[end..]));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [100usize, 10_000, 1_000_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        invalid(&text);
        let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        invalid(&text);
        let json = valid_json();
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        invalid(&json.replacen("\"jobs\": [", &format!("\"jobs\": [{nested},"), 1));
    }
}

// ---------------------------------------------------------------------------------------------
// ALLOCSCOPE_STACKS: read once, at the first call into allocscope. The test runs this binary
// again as a child, with the variable set, selecting `child_prints_stack_mode`.
// ---------------------------------------------------------------------------------------------

const CHILD_MARKER: &str = "ALLOCSCOPE_RELIABILITY_CHILD";

/// Only does something in the child process started by the test below.
#[test]
fn child_prints_stack_mode() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    // Several API calls: the warning must still appear once.
    allocscope::track_scope("i_child", || std::hint::black_box(vec![1u8; 3]).len());
    let mode = allocscope::stack_mode();
    let _ = report();
    println!("CHILD-MODE={mode:?}");
}

fn run_child(value: impl AsRef<std::ffi::OsStr>) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_prints_stack_mode",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1")
        .env("ALLOCSCOPE_STACKS", value)
        .output()
        .expect("run the test binary");
    assert!(out.status.success(), "child failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_allocscope_stacks_warns_once_and_uses_the_default() {
    let default = format!("CHILD-MODE={:?}", StackMode::default());
    for bad in [
        "fast",
        "-5",
        "12q",
        "99999999999999999999999",
        "1.5",
        "every!",
        " ",
    ] {
        let (stdout, stderr) = run_child(bad);
        assert!(stdout.contains(&default), "{bad:?}: {stdout}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("ALLOCSCOPE_STACKS"))
            .collect();
        assert_eq!(lines.len(), 1, "{bad:?}: one warning line, got {stderr:?}");
        let line = lines[0];
        assert!(line.starts_with("allocscope: "), "{line}");
        assert!(line.contains("using the default"), "{line}");
    }
    // Not even UTF-8: the same one warning, not a silent default.
    {
        use std::os::unix::ffi::OsStrExt;
        let (stdout, stderr) = run_child(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        assert!(stdout.contains(&default), "{stdout}");
        let warnings = stderr
            .lines()
            .filter(|l| l.contains("ALLOCSCOPE_STACKS") && l.contains("using the default"))
            .count();
        assert_eq!(warnings, 1, "{stderr:?}");
    }
    // A valid value is used, silently.
    let (stdout, stderr) = run_child("every");
    assert!(
        stdout.contains(&format!("CHILD-MODE={:?}", StackMode::Every)),
        "{stdout}"
    );
    assert!(!stderr.contains("ALLOCSCOPE_STACKS"), "{stderr}");
    let (stdout, _) = run_child("64k");
    assert!(
        stdout.contains(&format!(
            "CHILD-MODE={:?}",
            StackMode::Sampled { mean_bytes: 65536 }
        )),
        "{stdout}"
    );
}
