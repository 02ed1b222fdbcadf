//! A small report whose callsites all name one huge stack must not make the reader ask for
//! memory in proportion to callsites × frames: 2,000 callsites naming one 250,000-frame
//! stack (about 1 MB of JSON, 24 GB if each callsite got its own copy) are read in a child
//! under a 2 GiB address-space limit, and share one copy of the stack: the resident peak of
//! reading stays within the factor of the file's size that RELIABILITY.md states.

mod common;

use std::process::Command;

use allocscope::{Error, Report};
use serde_json::Value;

const CHILD: &str = "ALLOCSCOPE_AMPLIFIED_CHILD";
const CALLSITES: usize = 2_000;
const DEPTH: usize = 250_000;

/// The amplified file, in the order allocscope writes (header, table, then the rest).
fn amplified() -> String {
    let fixture = common::export_fixture();
    let mut v: Value = serde_json::from_str(&fixture.to_json()).unwrap();
    let obj = v.as_object_mut().unwrap();
    let frame = obj["frames"][0].clone();
    let mut callsite = obj["callsites"][0].clone();
    callsite["frames"] = Value::from(0);
    for job in obj["jobs"].as_array_mut().unwrap() {
        job["callsites"] = Value::Array(Vec::new());
    }
    obj.insert("callsites".into(), Value::Array(vec![callsite; CALLSITES]));
    let mut out = format!(
        "{{\"format\":\"allocscope\",\"version\":2,\"frames\":[{frame}],\"stacks\":[[{}0]]",
        "0,".repeat(DEPTH - 1)
    );
    for (k, v) in obj.iter() {
        if !["format", "version", "frames", "stacks"].contains(&k.as_str()) {
            out.push_str(&format!(",{}:{v}", serde_json::to_string(k).unwrap()));
        }
    }
    out.push('}');
    out
}

/// Resident memory reading a report may take, per byte of the file, plus [`READ_FLOOR`]
/// (RELIABILITY.md, "Memory of reading a report").
const READ_FACTOR: u64 = 24;
const READ_FLOOR: u64 = 16 << 20;

/// In the child (`CHILD` names the file): reads it under a 2 GiB address-space limit, from
/// the file and from a string, printing for each `CHILD {how} read|refused ... grown=N`.
fn child(path: &str) {
    let lim = libc::rlimit {
        rlim_cur: 2 << 30,
        rlim_max: 2 << 30,
    };
    // SAFETY: `lim` is a valid rlimit; lowering our own limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    for how in ["file", "text"] {
        let peak = common::PeakRss::start().expect("VmHWM (Linux)");
        let result = match how {
            "file" => Report::read_json(path),
            _ => Report::from_json(&std::fs::read_to_string(path).unwrap()),
        };
        let grown = peak.grown();
        match result {
            Ok(r) => {
                let first = r.callsites.first().map(|c| c.frames.as_ptr());
                let shared = r.callsites.iter().all(|c| Some(c.frames.as_ptr()) == first);
                println!(
                    "CHILD {how} read callsites={} depth={} shared={shared} grown={grown}",
                    r.callsites.len(),
                    r.callsites.first().map_or(0, |c| c.frames.len()),
                )
            }
            Err(e @ Error::InvalidReport(_)) => {
                println!("CHILD {how} refused ({e}) grown={grown}")
            }
            Err(e) => println!("CHILD {how} other error ({e}) grown={grown}"),
        }
    }
}

/// Reads `text` in a child (test `test`), checks that the child lived and that each read's
/// resident peak stayed within `READ_FACTOR` × the file's size + `READ_FLOOR`; the two
/// result lines (file, text).
fn read_in_child(test: &str, text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the reader died: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bound = READ_FACTOR * text.len() as u64 + READ_FLOOR;
    ["file", "text"]
        .iter()
        .map(|how| {
            let marker = format!("CHILD {how} ");
            let line = stdout
                .lines()
                .find_map(|l| l.find(&marker).map(|at| &l[at..]))
                .unwrap_or_else(|| panic!("no {how} result in {stdout}"))
                .to_string();
            println!("{line} (file {} bytes, bound {bound})", text.len());
            let grown: u64 = line
                .rsplit("grown=")
                .next()
                .and_then(|g| g.trim().parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert!(grown < bound, "{line}: above {bound}");
            line
        })
        .collect()
}

#[test]
fn callsites_naming_one_huge_stack_share_one_copy() {
    if let Ok(path) = std::env::var(CHILD) {
        return child(&path);
    }
    let text = amplified();
    assert!(text.len() < 2 << 20, "{} bytes", text.len());
    for line in read_in_child("callsites_naming_one_huge_stack_share_one_copy", &text) {
        assert!(
            line.contains(&format!(
                "read callsites={CALLSITES} depth={DEPTH} shared=true"
            )),
            "{line}"
        );
    }
}

#[test]
fn other_hostile_shapes_stay_within_the_factor() {
    if let Ok(path) = std::env::var(CHILD) {
        return child(&path);
    }
    const TEST: &str = "other_hostile_shapes_stay_within_the_factor";
    let header = r#""format":"allocscope","version":2,"frames":[],"stacks":[]"#;
    let n = 1_000_000;
    // Keys before "format" are kept until the header is read: an array of a million numbers.
    let early = format!(r#"{{"callsites":[{}0],{header}}}"#, "0,".repeat(n - 1));
    let lines = read_in_child(TEST, &early);
    assert!(lines.iter().all(|l| l.contains("refused")), "{lines:?}");
    // A callsite whose scope is a million empty job names.
    let fixture: Value = serde_json::from_str(&common::export_fixture().to_json()).unwrap();
    let mut callsite = fixture["callsites"][0].clone();
    callsite["scope"] = Value::Array(vec![Value::from(""); n]);
    callsite["frames"] = Value::Array(Vec::new());
    let scopes = format!(r#"{{{header},"callsites":[{callsite}]}}"#);
    let lines = read_in_child(TEST, &scopes);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("refused") || l.contains("read")),
        "{lines:?}"
    );
    // The same, with sorted keys: the callsites come before the header and are kept first.
    let sorted = format!(r#"{{"callsites":[{callsite}],{header}}}"#);
    read_in_child(TEST, &sorted);
}

#[test]
fn a_file_with_one_huge_stack_named_once_still_reads() {
    // The bound is on copies, not on the table: one callsite naming the 250,000-frame
    // stack is well within it.
    let text = amplified();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["callsites"] = Value::Array(vec![v["callsites"][0].clone()]);
    let mut out = format!(
        "{{\"format\":\"allocscope\",\"version\":2,\"frames\":{},\"stacks\":{}",
        v["frames"], v["stacks"]
    );
    for (k, val) in v.as_object().unwrap() {
        if !["format", "version", "frames", "stacks"].contains(&k.as_str()) {
            out.push_str(&format!(",{}:{val}", serde_json::to_string(k).unwrap()));
        }
    }
    out.push('}');
    let r = Report::from_json(&out).unwrap();
    assert_eq!(r.callsites.len(), 1);
    assert_eq!(r.callsites[0].frames.len(), DEPTH);
}
