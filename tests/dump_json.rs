//! Reports on disk: JSON round trips, a clear error for every kind of bad file, and writes
//! that a concurrent reader never sees half-done.

mod common;

/// A report fixture of `tests/data/cli/`, as text.
fn fixture(name: &str) -> String {
    common::read_data("cli", name)
}

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use allocscope::{report, track_scope, Error, Report, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

// Boxes on purpose: each is one counted block.
#[allow(clippy::vec_box)]
static KEPT: Mutex<Vec<Box<[u8; 300]>>> = Mutex::new(Vec::new());

/// A real report with at least one job holding memory, with callsites.
fn sample_report() -> Report {
    common::every();
    track_scope("dump_json_sample", || {
        let mut kept = KEPT.lock().unwrap();
        kept.reserve(8);
        for _ in 0..3 {
            kept.push(black_box(Box::new([7u8; 300])));
        }
    });
    let r = report();
    assert!(r.job("dump_json_sample").unwrap().retained.bytes >= 900);
    r
}
fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = sample_report();
    let path = dir.path().join("r.json");
    r.write_json(&path).unwrap();
    let back = Report::read_json(&path).unwrap();
    assert_eq!(back, r);
    assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
    assert!(!back.callsites.is_empty(), "callsites survive the trip");
    // Only the report is left in the folder: no temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["r.json"]);
}

#[test]
fn fixture_reports_load() {
    let r = Report::from_json(&fixture("worker_new.json")).unwrap();
    assert_eq!(r.jobs[0].name, "import_users");
    assert_eq!(
        r.job("import_users").unwrap().retained,
        Usage::new(10_000, 2_560_000)
    );
}

/// Reads `bytes` from a file and returns the error, checking that it names the file.
fn read_err(bytes: impl AsRef<[u8]>) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad-report.json", bytes);
    let err = Report::read_json(&path).expect_err("a bad file must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("bad-report.json"),
        "error does not name the file: {msg}"
    );
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    err
}

fn assert_invalid(err: Error, needle: &str) {
    match &err {
        Error::InvalidReport(m) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected InvalidReport containing {needle:?}, got {other:?}"),
    }
}

fn assert_unsupported(err: Error, needle: &str) {
    match &err {
        Error::UnsupportedVersion(m) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected UnsupportedVersion containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn missing_file_and_folder_are_io_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    match Report::read_json(&missing) {
        Err(Error::Io { path, source }) => {
            assert!(path.ends_with("nope.json"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    match Report::read_json(dir.path()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, dir.path().display().to_string()),
        other => panic!("expected Io for a folder, got {other:?}"),
    }
}

#[test]
fn empty_files() {
    assert_invalid(read_err(""), "the file is empty");
    assert_invalid(read_err(" \n\t\n"), "the file is empty");
    assert_invalid(Report::from_json("").unwrap_err(), "empty input");
}

#[test]
fn truncated_files() {
    let text = fixture("worker_old.json");
    for cut in [1, text.len() / 3, text.len() / 2, text.len() - 2] {
        assert_invalid(read_err(&text[..cut]), "truncated JSON");
    }
    // Every prefix is an error (and none panics); only the whole text loads.
    for cut in (0..text.len())
        .step_by(7)
        .chain(text.len() - 64..text.len())
    {
        assert!(
            Report::from_json(&text[..cut]).is_err(),
            "prefix of {cut} bytes loaded"
        );
    }
    assert!(Report::from_json(&text).is_ok());
}

#[test]
fn wrong_format_and_versions() {
    assert_unsupported(
        read_err(r#"{"format": "heaptrack", "version": 1}"#),
        r#"format is "heaptrack""#,
    );
    let future = fixture("worker_old.json").replacen(r#""version": 1"#, r#""version": 3"#, 1);
    let err = read_err(future);
    assert_unsupported(
        err,
        "version 3 is newer than this allocscope reads (2); upgrade",
    );
    let old = fixture("worker_old.json").replacen(r#""version": 1"#, r#""version": 0"#, 1);
    assert_unsupported(read_err(old), "version 0 is not supported");
    let text = fixture("worker_old.json").replacen(r#""version": 1"#, r#""version": "1""#, 1);
    assert_invalid(read_err(text), "non-integer \"version\"");
}

#[test]
fn json_that_is_not_a_report() {
    assert_invalid(
        read_err(r#"{"hello": "world"}"#),
        "this is not an allocscope report",
    );
    assert_invalid(read_err("[1, 2, 3]"), "the top level is not a JSON object");
    assert_invalid(read_err("42"), "the top level is not a JSON object");
    assert_invalid(read_err("version: 1\nformat: allocscope\n"), "not JSON");
}

#[test]
fn wrong_types_and_missing_fields_say_where() {
    let text = fixture("worker_old.json");
    let bad = text.replacen(r#""runs": 10,"#, r#""runs": "10","#, 1);
    assert_ne!(bad, text);
    let err = read_err(bad);
    assert_invalid(err, r#"invalid type: string "10", expected u64 at line"#);

    let bad = text.replacen(r#""jobs":"#, r#""jobz":"#, 1);
    assert_invalid(read_err(bad), "missing field `jobs`");

    let bad = text.replacen(r#""mode": "every""#, r#""mode": "weekly""#, 1);
    assert_invalid(read_err(bad), "unknown variant `weekly`");
}

#[test]
fn binary_garbage() {
    assert_invalid(
        read_err([0xffu8, 0xfe, 0x00, 0x12, 0x80, 0x7f]),
        "binary data",
    );
    assert_invalid(
        read_err(b"{\"format\": \"\xff\xfe\"}"),
        "invalid UTF-8 at byte 12",
    );
    #[cfg(target_os = "linux")]
    match Report::read_json("/dev/zero") {
        // Stops at the first block instead of reading forever.
        Err(Error::InvalidReport(m)) => assert!(m.contains("/dev/zero: binary data"), "{m}"),
        other => panic!("expected InvalidReport, got {other:?}"),
    }
    assert_invalid(
        read_err([0x1fu8, 0x8b, 0x08, 0x00, 1, 2, 3]),
        "gzip-compressed",
    );
    let mut pseudo = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            pseudo ^= pseudo << 13;
            pseudo ^= pseudo >> 7;
            pseudo ^= pseudo << 17;
            pseudo as u8
        })
        .collect();
    let _ = read_err(noise);
}

#[test]
fn huge_and_negative_numbers() {
    let text = fixture("worker_old.json");
    for bad in [
        "1e400",
        "99999999999999999999999",
        "-5",
        "1.5",
        "18446744073709551616",
    ] {
        let t = text.replacen(r#""runs": 10,"#, &format!(r#""runs": {bad},"#), 1);
        let err = Report::from_json(&t).expect_err(bad);
        assert!(matches!(err, Error::InvalidReport(_)), "{bad}: {err:?}");
    }
    // The largest u64 is a valid count.
    let t = text.replacen(r#""runs": 10,"#, &format!(r#""runs": {},"#, u64::MAX), 1);
    assert_eq!(
        Report::from_json(&t)
            .unwrap()
            .job("import_users")
            .unwrap()
            .runs,
        u64::MAX
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        // Where the model expects a job, the first nested list is already wrong.
        let nested = format!(
            r#"{{"format": "allocscope", "version": 1, "jobs": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_invalid(read_err(nested), "invalid type: sequence");
        // In a header field, serde_json's nesting limit (128).
        let nested = format!(
            r#"{{"format": {}{}, "version": 1}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_invalid(read_err(nested), "recursion limit exceeded");
        // A field this version does not know is skipped without recursion, however deep.
        let text = fixture("worker_old.json");
        let deep = text.replacen(
            r#""jobs":"#,
            &format!(
                r#""future_field": {}{}, "jobs":"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ),
            1,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.json");
        std::fs::write(&path, deep).unwrap();
        Report::read_json(&path).expect("unknown deep field skipped");
    }
}

#[test]
fn writing_into_a_missing_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/folder/r.json");
    match sample_report().write_json(&path) {
        Err(Error::Io { path: p, .. }) => assert_eq!(p, path.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn rewrites_keep_the_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let r = sample_report();
    r.write_json(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&path),
        0o600,
        "a new report is readable by its owner only"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    r.write_json(&path).unwrap();
    assert_eq!(mode(&path), 0o644);
}

/// A reader polling the file while a writer rewrites it sees a complete report every time,
/// alternately the small and the large one.
#[test]
fn a_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.json");
    let small = Report::from_json(&fixture("worker_old.json")).unwrap();
    let mut large = Report::from_json(&fixture("worker_new.json")).unwrap();
    // Make the two versions differ a lot in size, so a torn read could not pass for either.
    for i in 0..60 {
        let mut j = large.jobs[0].clone();
        j.name = format!("padding_job_{i}");
        large.jobs.push(j);
    }
    small.write_json(&path).unwrap();
    let done = AtomicBool::new(false);
    let (reads, writes) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = [0u32; 2];
            while !done.load(Ordering::Acquire) {
                let r = Report::read_json(&path).expect("the reader saw a partial file");
                if r == small {
                    reads[0] += 1;
                } else {
                    assert_eq!(r, large, "the reader saw a report that was never written");
                    reads[1] += 1;
                }
            }
            reads
        });
        for i in 0..100 {
            if i % 2 == 0 { &large } else { &small }
                .write_json(&path)
                .unwrap();
        }
        done.store(true, Ordering::Release);
        (reader.join().unwrap(), 100)
    });
    assert_eq!(writes, 100);
    eprintln!("reads of the small / large report: {reads:?}");
    assert!(reads[0] + reads[1] > 0, "the reader never read");
    assert_eq!(
        Report::read_json(&path).unwrap(),
        small,
        "the last write wins"
    );
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temporary files left behind");
}
