//! The version-2 wire format (a stack table, callsites naming stacks by
//! index) is at least 10× smaller than frames written inline, round-trips exactly, still
//! reads version 1; reading streams (a gigabyte of `[` is refused after a few KiB, an
//! oversized file before reading) and a corrupt table is an error, not a panic.

mod common;

use std::io::Write;

use allocscope::{report, track_scope, Error, Report, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/distinct_stacks.rs"]
mod distinct_stacks;
use distinct_stacks::{free_blocks, rec_a};

const LEVELS: u32 = 11;

#[test]
fn the_stack_table_makes_reports_ten_times_smaller_and_round_trips() {
    common::every();
    let mut blocks = Vec::new();
    track_scope("wide", || {
        for n in 0..(1u32 << LEVELS) {
            rec_a(LEVELS, n, 16, &mut blocks);
        }
    });
    allocscope::set_stack_mode(StackMode::Off);
    let r = report();
    if !allocscope::is_installed() {
        return;
    }
    assert!(r.callsites.len() >= 1 << LEVELS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    r.write_json(&path).unwrap();
    let compact = std::fs::metadata(&path).unwrap().len();
    // The same report with every callsite's frames inline (the version-1 layout), as plain
    // serde writes it.
    let inline = serde_json::to_string_pretty(&r).unwrap().len() as u64;
    assert!(
        inline >= 10 * compact,
        "inline {inline} bytes vs table {compact} bytes: only {:.1}×",
        inline as f64 / compact as f64
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(r#"{"format":"allocscope","version":2,"frames":["#));
    assert_eq!(Report::read_json(&path).unwrap(), r);
    assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
    // Inline frames (plain serde, version 1) still read.
    let v1 = Report::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(v1, r);
    // Read either way, equal frames share their strings (one copy per distinct frame, as in
    // the process that built the report): the innermost frame of every callsite of the
    // recursion is `leaf`, and all of them point at one string.
    let v2 = Report::read_json(&path).unwrap();
    for read in [&v1, &v2] {
        let leaves: Vec<&str> = read
            .callsites
            .iter()
            .filter_map(|c| c.frames.first())
            .filter(|f| f.function.ends_with("distinct_stacks::leaf"))
            .map(|f| f.function.as_str())
            .collect();
        assert!(leaves.len() >= 1 << LEVELS, "{} leaves", leaves.len());
        assert!(
            leaves.iter().all(|l| l.as_ptr() == leaves[0].as_ptr()),
            "frames read back are copied per callsite"
        );
    }
    free_blocks(blocks, 16);
}

#[test]
fn a_corrupt_stack_table_is_an_error() {
    let base = r#"{"format":"allocscope","version":2,"frames":[{"function":"f","file":null,"line":null}],"stacks":STACKS,"timestamp_unix_ms":0,"stack_mode":{"mode":"every"},"totals":{"live":{"objects":0,"bytes":0},"allocated":{"objects":0,"bytes":0},"unscoped_live":{"objects":0,"bytes":0},"unscoped_allocated":{"objects":0,"bytes":0}},"jobs":[],"callsites":[{"scope":[],"frames":FRAMES,"allocated":{"objects":1,"bytes":1},"retained":{"objects":0,"bytes":0},"estimated":false}],"tracker":{"installed":true,"overhead":{"objects":0,"bytes":0},"jobs":0,"paths":0,"stacks":0,"sites":0,"jobs_overflowed":0,"paths_overflowed":0,"runs_overflowed":0,"stacks_dropped":0,"hook_panics":0}}"#;
    let ok = base.replace("STACKS", "[[0]]").replace("FRAMES", "0");
    let r = Report::from_json(&ok).unwrap();
    assert_eq!(r.callsites[0].frames[0].function, "f");
    for (stacks, frames, says) in [
        ("[[0]]", "7", "outside the stack table"),
        ("[[3]]", "0", "outside the frame table"),
        ("[[0]]", "-1", "invalid"),
    ] {
        let bad = base.replace("STACKS", stacks).replace("FRAMES", frames);
        match Report::from_json(&bad) {
            Err(e @ Error::InvalidReport(_)) => {
                assert!(e.to_string().contains(says), "{e}")
            }
            other => panic!("expected InvalidReport for {stacks} {frames}: {other:?}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn a_gigabyte_of_brackets_is_refused_after_a_few_kib() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("brackets");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer_path = fifo.clone();
    // Writes up to 1 GiB of `[` and counts what the reader took before closing the pipe.
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        let chunk = vec![b'['; 64 << 10];
        let mut written = 0u64;
        while written < 1 << 30 {
            match f.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(_) => break, // EPIPE: the reader gave up
            }
        }
        written
    });
    let err = Report::read_json(&fifo).unwrap_err();
    let written = writer.join().unwrap();
    assert!(
        err.to_string()
            .contains("the top level is not a JSON object"),
        "{err}"
    );
    // The head (64 KiB), the read buffer and the pipe's own buffer: a few hundred KiB.
    assert!(written < 4 << 20, "{written} bytes read before the error");
}

#[cfg(unix)]
#[test]
fn an_oversized_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let mut f = std::fs::File::create(&path).unwrap();
    // Blank text first (no NUL bytes for the head check to catch), then a sparse tail: 5 GiB
    // that use no disk space. Reading it whole would need 4 GiB of memory.
    f.write_all(&vec![b' '; 128 << 10]).unwrap();
    f.set_len(5 << 30).unwrap();
    let err = Report::read_json(&path).unwrap_err();
    assert!(err.to_string().contains("larger than 4 GiB"), "{err}");
}
