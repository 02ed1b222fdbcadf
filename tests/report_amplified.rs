//! A small report whose callsites all name one huge stack must not make the reader ask for
//! memory in proportion to callsites × frames: 2,000 callsites naming one 250,000-frame
//! stack (about 1 MB of JSON, 24 GB if materialised) are read in a child under a 2 GiB
//! address-space limit, and are refused with a one-line error, never an abort.

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

#[test]
fn callsites_naming_one_huge_stack_are_refused_not_materialised() {
    if let Ok(path) = std::env::var(CHILD) {
        let lim = libc::rlimit {
            rlim_cur: 2 << 30,
            rlim_max: 2 << 30,
        };
        // SAFETY: `lim` is a valid rlimit; lowering our own limit is always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
        let text = std::fs::read_to_string(&path).unwrap();
        for (how, result) in [
            ("file", Report::read_json(&path)),
            ("text", Report::from_json(&text)),
        ] {
            match result {
                Ok(r) => println!("CHILD {how} read {} callsites", r.callsites.len()),
                Err(e @ Error::InvalidReport(_)) => println!("CHILD {how} refused: {e}"),
                Err(e) => println!("CHILD {how} other error: {e}"),
            }
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("amplified.json");
    let text = amplified();
    assert!(text.len() < 2 << 20, "{} bytes", text.len());
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "callsites_naming_one_huge_stack_are_refused_not_materialised",
            "--nocapture",
            "--test-threads=1",
        ])
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
    for how in ["file", "text"] {
        let marker = format!("CHILD {how} ");
        let line = stdout
            .lines()
            .find_map(|l| l.find(&marker).map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("no {how} result in {stdout}"));
        assert!(
            line.contains("refused") && line.contains("frames"),
            "{line}"
        );
    }
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
