//! The `allocscope` binary on fixture reports: golden outputs, exit codes, and one clear line
//! on stderr for bad input.
//!
//! Goldens live in `tests/data/cli/`; `ALLOCSCOPE_BLESS=1 cargo test --features cli --test
//! cli_commands` rewrites them after an intended change.
#![cfg(feature = "cli")]

mod common;

/// A file of `tests/data/cli/`.
fn data(name: &str) -> PathBuf {
    common::data("cli", name)
}

/// Compares `actual` with the golden file `tests/data/cli/<name>` (see `common::golden`).
fn golden(name: &str, actual: &str) {
    common::golden("cli", name, actual)
}

use std::path::PathBuf;
use std::process::{Command, Output};

#[global_allocator]
static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
/// Runs the binary from the crate root, so fixture paths in outputs are relative and stable.
fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run allocscope")
}

fn ok(args: &[&str]) -> Output {
    let out = cli(args);
    assert!(
        out.status.success(),
        "allocscope {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

const OLD: &str = "tests/data/cli/worker_old.json";
const NEW: &str = "tests/data/cli/worker_new.json";

#[test]
fn show() {
    golden("show.txt", &stdout(&ok(&["show", NEW])));
    golden(
        "show_job.txt",
        &stdout(&ok(&[
            "show",
            NEW,
            "--job",
            "render_invoice",
            "--callsites",
            "10",
        ])),
    );
    let top = stdout(&ok(&["show", NEW, "--top", "1", "--callsites", "0"]));
    golden("show_top.txt", &top);
    assert!(top.contains("import_users") && !top.contains("send_email"));
}

#[test]
fn diff() {
    let text = stdout(&ok(&["diff", OLD, NEW]));
    golden("diff.txt", &text);
    let first_job = text
        .lines()
        .skip_while(|l| !l.starts_with("JOB"))
        .nth(1)
        .unwrap();
    assert!(
        first_job.starts_with("import_users"),
        "the leaking job is on top:\n{text}"
    );
    golden("diff.json", &stdout(&ok(&["diff", OLD, NEW, "--json"])));
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("growth.svg");
    ok(&[
        "diff",
        OLD,
        NEW,
        "--flamegraph",
        svg.to_str().unwrap(),
        "--top",
        "1",
    ]);
    golden(
        "diff_flamegraph.svg",
        &std::fs::read_to_string(&svg).unwrap(),
    );
}

#[test]
fn flamegraph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.svg");
    let o = out.to_str().unwrap();
    ok(&["flamegraph", NEW, "-o", o]);
    golden("flamegraph.svg", &std::fs::read_to_string(&out).unwrap());
    let to_stdout = stdout(&ok(&[
        "flamegraph",
        NEW,
        "--job",
        "render_invoice",
        "--metric",
        "allocated-objects",
        "-o",
        "-",
    ]));
    golden("flamegraph_invoice_allocated_objects.svg", &to_stdout);
    assert!(to_stdout.contains("render_invoice: allocated objects"));
}

#[test]
fn export() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&["export", NEW, "--format", "folded", "-o", &path("r.folded")]);
    golden(
        "folded.txt",
        &std::fs::read_to_string(path("r.folded")).unwrap(),
    );
    let alloc = stdout(&ok(&[
        "export",
        NEW,
        "--format",
        "folded",
        "--job",
        "import_users",
        "--metric",
        "allocated-bytes",
        "-o",
        "-",
    ]));
    golden("folded_import_allocated_bytes.txt", &alloc);

    ok(&["export", NEW, "--format", "pprof", "-o", &path("r.pb.gz")]);
    let pprof = std::fs::read(path("r.pb.gz")).unwrap();
    assert_eq!(&pprof[..2], &[0x1f, 0x8b], "pprof files are gzipped");
    assert!(pprof.len() > 100);

    ok(&["export", NEW, "--format", "dhat", "-o", &path("dhat.json")]);
    let dhat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("dhat.json")).unwrap()).unwrap();
    assert!(dhat.get("dhatFileVersion").is_some(), "{dhat}");
}

/// Runs a command that must fail on bad input: exit code 1, one line on stderr naming `file`.
fn bad_input(args: &[&str], file: &str, problem: &str) {
    let out = cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "allocscope {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("allocscope: error: "), "{stderr}");
    assert!(stderr.contains(file), "names {file}: {stderr}");
    assert!(stderr.contains(problem), "says {problem:?}: {stderr}");
    assert!(out.stdout.is_empty(), "no output on failure");
}

#[test]
fn bad_input_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = std::fs::read_to_string(data("worker_old.json")).unwrap();
    let empty = write("empty.json", b"");
    let cut = write("cut.json", &good.as_bytes()[..good.len() / 2]);
    let future = write(
        "future.json",
        good.replacen("\"version\": 1", "\"version\": 7", 1)
            .as_bytes(),
    );
    let other = write("other.json", br#"{"format": "speedscope", "version": 1}"#);
    let garbage = write("garbage.bin", &[0xde, 0xad, 0xbe, 0xef, 0xff, 0x00]);
    let types = write(
        "types.json",
        good.replacen("\"runs\": 10,", "\"runs\": [],", 1)
            .as_bytes(),
    );

    bad_input(&["show", "missing.json"], "missing.json", "No such file");
    bad_input(&["show", &empty], "empty.json", "the file is empty");
    bad_input(&["show", &cut], "cut.json", "truncated JSON");
    bad_input(
        &["flamegraph", &future, "-o", "-"],
        "future.json",
        "newer than this allocscope",
    );
    bad_input(
        &["export", &other, "--format", "dhat", "-o", "-"],
        "other.json",
        "speedscope",
    );
    bad_input(&["show", &garbage], "garbage.bin", "binary data");
    bad_input(
        &["show", &types],
        "types.json",
        "invalid type: sequence, expected u64",
    );
    bad_input(&["diff", OLD, &cut], "cut.json", "truncated JSON");
    bad_input(
        &["show", NEW, "--job", "nope"],
        "worker_new.json",
        "no job named \"nope\"",
    );
    bad_input(
        &["diff", OLD, NEW, "--job", "nope"],
        "worker_old.json",
        "in either report",
    );
    let blocked = dir.path().join("no/such/dir/out.svg");
    let blocked = blocked.to_str().unwrap();
    bad_input(
        &["flamegraph", NEW, "-o", blocked],
        "no/such/dir/out.svg",
        "No such file",
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["show"],
        &["frobnicate", NEW],
        &["flamegraph", NEW],
        &["flamegraph", NEW, "-o", "x.svg", "--metric", "heat"],
        &["export", NEW, "-o", "x"],
        &["export", NEW, "--format", "xml", "-o", "x"],
        &["show", NEW, "--top", "many"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "allocscope {args:?}");
        assert!(!out.stderr.is_empty());
    }
    let help = ok(&["--help"]);
    for cmd in ["show", "flamegraph", "diff", "export"] {
        assert!(stdout(&help).contains(cmd));
    }
}

const V2: &str = "tests/data/cli/worker_v2.json";

#[test]
fn show_version_2_sorted_by_trend() {
    // The fixture is a version-2 report with process memory, trends, a timeline and run
    // events (hand-made from worker_new.json; see the test below for the chart).
    golden(
        "show_v2_trend.txt",
        &stdout(&ok(&[
            "show",
            V2,
            "--sort",
            "trend",
            "--callsites",
            "0",
            "--flag-objects-per-run",
            "500",
        ])),
    );
    let out = cli(&["show", V2, "--sort", "sideways"]);
    assert_eq!(out.status.code(), Some(2), "a bad --sort is a usage error");
}

#[test]
fn timeline_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("memory.svg");
    ok(&["timeline", V2, "-o", svg_path.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    golden("timeline.svg", &svg);
    // Well-formed, one hover title per run event, hostile job names escaped.
    let mut reader = quick_xml::Reader::from_str(&svg);
    // (Text with entities comes in several events: each title's text is collected between
    // its start and end tags.)
    let (mut titles, mut in_title) = (Vec::<String>::new(), false);
    loop {
        match reader.read_event().expect("well-formed SVG") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"title" => {
                in_title = true;
                titles.push(String::new());
            }
            quick_xml::events::Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
            quick_xml::events::Event::Text(t) if in_title => {
                titles.last_mut().unwrap().push_str(&t.decode().unwrap())
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(titles.len(), 22);
    assert!(titles.iter().any(|t| t.starts_with("render_invoice #80: ")));
    assert!(svg.contains("&lt;script&gt;&amp;&quot;job&quot; #1"));
    // A version-1 report has no timeline: one line, exit 1.
    let out = cli(&["timeline", OLD, "-o", svg_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("worker_old.json") && err.contains("ALLOCSCOPE_TIMELINE"),
        "{err}"
    );
}

#[test]
fn diff_shows_the_rss_change() {
    let text = stdout(&ok(&["diff", OLD, V2]));
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("memory: RSS unavailable in one report"),
        "{text}"
    );
    let text = stdout(&ok(&["diff", V2, V2]));
    assert_eq!(
        text.lines().nth(1).unwrap(),
        "memory: RSS 240 MiB -> 240 MiB (0 B); not returned to the OS 228 MiB -> 228 MiB (0 B)"
    );
}
