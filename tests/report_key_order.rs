//! JSON objects are unordered: a report whose keys come in another order than the writer's
//! (sorted keys, reverse-sorted keys, `jq -S` output) reads back equal to the original, and
//! a JSON document that is not a report is still refused early with a one-line error.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use allocscope::{report, track_scope, Error, Report, TrackingAllocator};
use serde_json::Value;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[inline(never)]
fn keep(n: usize, kept: &mut Vec<Vec<u8>>) {
    kept.push(vec![n as u8; 64 + n]);
}

/// A real report with callsites, hence a stack table, as the crate writes it.
fn written_report() -> Option<(Report, String)> {
    common::every();
    let mut kept = Vec::new();
    track_scope("key order", || {
        for n in 0..32 {
            keep(n, &mut kept);
        }
    });
    let r = report();
    if !allocscope::is_installed() {
        return None;
    }
    let text = r.to_json();
    assert!(text.contains("\"stacks\""), "the report has a stack table");
    assert!(!r.callsites.is_empty());
    drop(kept);
    Some((r, text))
}

/// Puts an object's entries in the order wanted.
type Order = dyn Fn(&mut Vec<(&String, &Value)>);

/// `v` as JSON text with every object's keys in the order `order` gives them.
fn emit(v: &Value, order: &Order, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            order(&mut entries);
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                emit(v, order, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                emit(item, order, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

fn reordered(text: &str, order: &Order) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    let mut out = String::new();
    emit(&v, order, &mut out);
    out
}

#[test]
fn a_report_with_sorted_or_reversed_keys_reads_back_equal() {
    let Some((r, text)) = written_report() else {
        return;
    };
    let sorted = reordered(&text, &|e| e.sort_by(|a, b| a.0.cmp(b.0)));
    assert!(sorted.starts_with("{\"callsites\""), "{}", &sorted[..40]);
    let reversed = reordered(&text, &|e| e.sort_by(|a, b| b.0.cmp(a.0)));
    assert!(reversed.starts_with("{\"version\""), "{}", &reversed[..40]);
    for (name, variant) in [("sorted", &sorted), ("reversed", &reversed)] {
        let back = Report::from_json(variant).unwrap_or_else(|e| panic!("{name} keys: {e}"));
        assert_eq!(back, r, "{name} keys");
    }
    // Through a file too (the streaming reader of `read_json`).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sorted.json");
    std::fs::write(&path, &sorted).unwrap();
    assert_eq!(Report::read_json(&path).unwrap(), r);
}

#[test]
fn jq_sorted_output_reads_back_equal() {
    let Some((r, text)) = written_report() else {
        return;
    };
    if !common::require_tool("jq", &["--version"], "jq") {
        return;
    }
    let mut jq = Command::new("jq")
        .args(["-S", "."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = jq.stdin.take().unwrap();
    let input = text.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = jq.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "jq -S failed");
    let sorted = String::from_utf8(out.stdout).unwrap();
    assert!(
        sorted.starts_with("{\n  \"callsites\""),
        "{}",
        &sorted[..40]
    );
    assert_eq!(Report::from_json(&sorted).unwrap(), r);
}

#[test]
fn a_json_document_that_is_no_report_is_refused_in_one_line() {
    let refused = |text: &str| -> String {
        match Report::from_json(text) {
            Err(e @ Error::InvalidReport(_)) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "one line: {msg}");
                assert!(msg.contains("not an allocscope report"), "{msg}");
                msg
            }
            other => panic!("{text}: expected InvalidReport, got {other:?}"),
        }
    };
    // Refused at the first key no report has, before reading its value.
    let msg = refused(r#"{"name":"some-package","dependencies":{"a":"1"}}"#);
    assert!(msg.contains("name"), "{msg}");
    let huge = format!("{{\"data\":[{}1]}}", "1,".repeat(100_000));
    refused(&huge);
    // Report-like keys but no "format": refused at the end.
    let msg = refused(r#"{"timestamp_unix_ms":1,"jobs":[]}"#);
    assert!(msg.contains("format"), "{msg}");
}
