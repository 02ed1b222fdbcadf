//! DHAT JSON export: the fields DHAT's viewer requires, valid frame indices, totals that
//! match the report, job pseudo-frames, a golden file for a fixture report, and (when Node
//! and Valgrind's `dh_view.js` are installed) the real viewer building its tree from the file.

mod common;

use common::export_fixture as fixture;

/// A file of `tests/data/export/`.
fn data(name: &str) -> PathBuf {
    common::data("export", name)
}

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use allocscope::{track_scope, Report, StackMode, TrackingAllocator, Usage};
use serde_json::Value;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();
fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key)
        .unwrap_or_else(|| panic!("missing field {key:?} in {v}"))
        .as_u64()
        .unwrap_or_else(|| panic!("field {key:?} is not a non-negative integer in {v}"))
}

/// Every rule `dh_view.js` checks when loading a file (`buildTree`, `checkPP`, the radix
/// tree's repeated-location error), plus `tl`, which it reads without checking.
fn check_viewer_rules(v: &Value) {
    for key in [
        "dhatFileVersion",
        "mode",
        "verb",
        "bklt",
        "bkacc",
        "tu",
        "Mtu",
        "cmd",
        "pid",
        "te",
        "pps",
        "ftbl",
    ] {
        assert!(v.get(key).is_some(), "top-level field {key:?} missing");
    }
    assert_eq!(v["dhatFileVersion"], 2);
    assert_eq!(v["mode"], "rust-heap");
    assert_eq!(v["bklt"], true);
    assert_eq!(v["bkacc"], false);
    // Needed because bklt is true.
    u64_field(v, "tg");
    u64_field(v, "tuth");
    assert!(u64_field(v, "te") >= 1, "te is a divisor in the viewer");
    assert!(u64_field(v, "tg") <= u64_field(v, "te"));
    assert!(v["cmd"].is_string() && v["verb"].is_string() && v["tu"].is_string());

    let ftbl: Vec<&str> = v["ftbl"]
        .as_array()
        .expect("ftbl is an array")
        .iter()
        .map(|s| s.as_str().expect("ftbl entries are strings"))
        .collect();
    assert_eq!(ftbl.first(), Some(&"[root]"), "ftbl[0] must be the root");
    let distinct: HashSet<&str> = ftbl.iter().copied().collect();
    assert_eq!(distinct.len(), ftbl.len(), "ftbl entries are stored once");

    let mut seen_fs: HashSet<Vec<u64>> = HashSet::new();
    for pp in v["pps"].as_array().expect("pps is an array") {
        for key in ["tb", "tbk", "tl", "mb", "mbk", "gb", "gbk", "eb", "ebk"] {
            u64_field(pp, key);
        }
        let fs: Vec<u64> = pp["fs"]
            .as_array()
            .expect("fs is an array")
            .iter()
            .map(|i| i.as_u64().expect("frame indices are integers"))
            .collect();
        assert!(!fs.is_empty(), "a program point without frames: {pp}");
        for &i in &fs {
            assert!(
                i >= 1 && (i as usize) < ftbl.len(),
                "frame index {i} out of 1..{}",
                ftbl.len()
            );
        }
        assert!(
            seen_fs.insert(fs.clone()),
            "repeated frame list {fs:?}: the viewer refuses the file"
        );
        // Semantic sanity: live figures never exceed what was allocated.
        assert!(u64_field(pp, "eb") <= u64_field(pp, "tb"));
        assert!(u64_field(pp, "ebk") <= u64_field(pp, "tbk"));
        assert!(u64_field(pp, "gb") <= u64_field(pp, "mb"));
    }
}

/// The frames of a program point, as strings.
fn frames<'a>(v: &'a Value, pp: &Value) -> Vec<&'a str> {
    pp["fs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| v["ftbl"][i.as_u64().unwrap() as usize].as_str().unwrap())
        .collect()
}

/// Sums (allocated, retained) over the program points whose frames satisfy `pick`.
fn sums(v: &Value, pick: impl Fn(&[&str]) -> bool) -> (Usage, Usage) {
    let mut allocated = Usage::default();
    let mut retained = Usage::default();
    for pp in v["pps"].as_array().unwrap() {
        if pick(&frames(v, pp)) {
            allocated += Usage::new(u64_field(pp, "tbk"), u64_field(pp, "tb"));
            retained += Usage::new(u64_field(pp, "ebk"), u64_field(pp, "eb"));
        }
    }
    (allocated, retained)
}

fn callsite_sums(r: &Report) -> (Usage, Usage) {
    let mut allocated = Usage::default();
    let mut retained = Usage::default();
    for c in &r.callsites {
        allocated += c.allocated;
        retained += c.retained;
    }
    (allocated, retained)
}

// One allocation per box is the point: they are the retained objects counted below.
#[allow(clippy::vec_box)]
#[inline(never)]
fn keep_boxes(n: usize) -> Vec<Box<[u64; 8]>> {
    (0..n).map(|i| black_box(Box::new([i as u64; 8]))).collect()
}

#[test]
fn real_workload_exports_every_job_with_exact_totals() {
    common::every();
    let kept = track_scope("dhx_import", || {
        let temp: Vec<String> = (0..40).map(|i| black_box(i.to_string())).collect();
        drop(temp);
        let inner = track_scope("dhx_parse", || keep_boxes(6));
        (keep_boxes(4), inner)
    });
    track_scope("dhx_mail", || drop(black_box(vec![0u8; 1000])));
    let report = allocscope::report();
    let json = report.to_dhat_json().expect("export");
    drop(kept);

    let v: Value = serde_json::from_str(&json).expect("the export is JSON");
    check_viewer_rules(&v);

    // Everything the report attributes to callsites is in the file, once.
    let (all_alloc, all_ret) = sums(&v, |_| true);
    assert_eq!((all_alloc, all_ret), callsite_sums(&report));

    // Each job's program points (its pseudo-frame anywhere in the scope part) add up to the
    // job's inclusive figures: with a stack for every allocation they are exact.
    for name in ["dhx_import", "dhx_parse", "dhx_mail"] {
        let job = report.job(name).expect("job in report");
        let frame = format!("[job] {name}");
        let (a, r) = sums(&v, |fs| fs.contains(&frame.as_str()));
        assert_eq!(a, job.allocated, "{name}: allocated");
        assert_eq!(r, job.retained, "{name}: retained");
        assert!(!a.is_zero(), "{name} allocated something");
    }
    // Nested jobs are framed outermost first, and the kept boxes are attributed to the
    // function that allocated them, in this file.
    let pps = v["pps"].as_array().unwrap();
    let parse_pp = pps
        .iter()
        .find(|pp| frames(&v, pp).get(1) == Some(&"[job] dhx_parse"))
        .expect("a program point of the nested job");
    let fs = frames(&v, parse_pp);
    assert_eq!(fs[0], "[job] dhx_import");
    assert!(
        fs.iter().any(|f| f.starts_with("0x0: ")
            && f.contains("keep_boxes")
            && f.contains("export_dhat.rs:")),
        "keep_boxes frame with file and line in {fs:?}"
    );
    let (_, retained) = sums(&v, |fs| fs.get(1) == Some(&"[job] dhx_parse"));
    assert_eq!(
        retained,
        Usage::new(7, 6 * 64 + 6 * 8),
        "6 boxes and their Vec"
    );
}

#[test]
fn fixture_maps_figures_as_documented() {
    let report = fixture();
    let v: Value = serde_json::from_str(&report.to_dhat_json().unwrap()).unwrap();
    check_viewer_rules(&v);
    let pps = v["pps"].as_array().unwrap();
    assert_eq!(pps.len(), report.callsites.len());
    for (pp, c) in pps.iter().zip(&report.callsites) {
        assert_eq!(u64_field(pp, "tb"), c.allocated.bytes);
        assert_eq!(u64_field(pp, "tbk"), c.allocated.objects);
        for (b, k) in [("eb", "ebk"), ("gb", "gbk"), ("mb", "mbk")] {
            assert_eq!(u64_field(pp, b), c.retained.bytes);
            assert_eq!(u64_field(pp, k), c.retained.objects);
        }
        assert_eq!(u64_field(pp, "tl"), 0);
        let mut expected: Vec<String> = if c.scope.is_empty() {
            vec!["[job] (unscoped)".to_string()]
        } else {
            c.scope.iter().map(|s| format!("[job] {s}")).collect()
        };
        expected.extend(c.frames.iter().map(|f| {
            format!(
                "0x0: {} ({}:{})",
                f.function,
                f.file.as_deref().unwrap(),
                f.line.unwrap()
            )
        }));
        assert_eq!(frames(&v, pp), expected);
    }
    // te: from the start of the earliest run (finished - duration) to the report.
    let earliest_start_us = report
        .jobs
        .iter()
        .flat_map(|j| &j.recent_runs)
        .map(|r| r.finished_unix_ms * 1000 - r.duration_ns / 1000)
        .min()
        .unwrap();
    assert_eq!(
        u64_field(&v, "te"),
        report.timestamp_unix_ms * 1000 - earliest_start_us
    );
    assert_eq!(u64_field(&v, "tg"), u64_field(&v, "te"));
}

#[test]
fn fixture_matches_golden_file() {
    let json = fixture().to_dhat_json().unwrap();
    common::golden("export", "fixture.dhat.json", &json);
}

#[test]
fn stacks_off_gives_one_program_point_per_job() {
    let mut report = fixture();
    report.stack_mode = StackMode::Off;
    report.callsites.clear();
    for j in &mut report.jobs {
        j.callsites.clear();
    }
    let v: Value = serde_json::from_str(&report.to_dhat_json().unwrap()).unwrap();
    check_viewer_rules(&v);
    assert_eq!(v["pps"].as_array().unwrap().len(), report.jobs.len() + 1);
    for job in &report.jobs {
        let frame = format!("[job] {}", job.name);
        let got = sums(&v, |fs| fs == [frame.as_str()]);
        assert_eq!(got, (job.exclusive.allocated, job.exclusive.retained));
    }
    let unscoped = sums(&v, |fs| fs == ["[job] (unscoped)"]);
    assert_eq!(
        unscoped,
        (
            report.totals.unscoped_allocated,
            report.totals.unscoped_live
        )
    );
    assert!(v["cmd"].as_str().unwrap().contains("no callsites"));
}

#[test]
fn callsites_that_render_alike_are_summed_not_repeated() {
    let mut report = fixture();
    // Two entries with the same scope and frames (a hand-merged or edited report).
    let dup = report.callsites[0].clone();
    report.callsites.push(dup.clone());
    let v: Value = serde_json::from_str(&report.to_dhat_json().unwrap()).unwrap();
    check_viewer_rules(&v);
    assert_eq!(
        v["pps"].as_array().unwrap().len(),
        report.callsites.len() - 1
    );
    let first = &v["pps"][0];
    assert_eq!(u64_field(first, "tb"), 2 * dup.allocated.bytes);
    assert_eq!(u64_field(first, "ebk"), 2 * dup.retained.objects);
}

/// Valgrind's `dh_view.js`, if installed (override with `ALLOCSCOPE_DH_VIEW`).
fn dh_view_js() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ALLOCSCOPE_DH_VIEW") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/libexec/valgrind/dh_view.js",
        "/usr/lib/x86_64-linux-gnu/valgrind/dh_view.js",
        "/usr/lib/valgrind/dh_view.js",
        "/usr/local/libexec/valgrind/dh_view.js",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Runs the viewer's own loading and rendering code on `json`; `Err` carries its error.
fn run_viewer(viewer: &Path, json: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, json).unwrap();
    let out = Command::new("node")
        .arg(data("dh_view_harness.js"))
        .arg(viewer)
        .arg(&file)
        .output()
        .expect("run node");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn dhat_viewer_loads_the_export() {
    let Some(viewer) = dh_view_js() else {
        common::missing_tool(
            "Valgrind's dh_view.js",
            "not in its usual places",
            "valgrind",
        );
        return;
    };
    if !common::require_tool("node", &["--version"], "nodejs") {
        return;
    }
    let report = fixture();
    let json = report.to_dhat_json().unwrap();
    let text = run_viewer(&viewer, &json).unwrap_or_else(|e| panic!("dh_view.js failed: {e}"));
    // The viewer shows the jobs at the top level and the figures of the fixture.
    assert!(text.contains("Mode:    rust-heap"), "{text}");
    assert!(text.contains("#1: [job] import_users"), "{text}");
    assert!(text.contains("[job] parse"), "{text}");
    assert!(
        text.contains("0x0: app::load_rows (src/import.rs:10)"),
        "{text}"
    );
    let (alloc, _) = callsite_sums(&report);
    let total_line = format!("Total:     {} bytes (100%", grouped(alloc.bytes));
    assert!(text.contains(&total_line), "{total_line:?} in {text}");

    // A real report of this process: real symbol names, many stacks.
    common::every();
    let kept = track_scope("dhx_viewer", || keep_boxes(3));
    // Only this job's part: dh_view folds nodes under ~1% of the total into "insignificant",
    // and what else this process allocated (other tests, the harness) varies from run to run.
    let mut real = allocscope::report();
    real.callsites
        .retain(|c| c.scope.iter().any(|s| s == "dhx_viewer"));
    real.jobs.retain(|j| j.name == "dhx_viewer");
    let real = real.to_dhat_json().unwrap();
    drop(kept);
    let text = run_viewer(&viewer, &real).unwrap_or_else(|e| panic!("dh_view.js failed: {e}"));
    assert!(text.contains("[job] dhx_viewer"), "{text}");

    // An empty report (nothing allocated) is an empty but loadable file.
    let mut empty = fixture();
    empty.callsites.clear();
    empty.jobs.clear();
    empty.totals = Default::default();
    let text = run_viewer(&viewer, &empty.to_dhat_json().unwrap())
        .unwrap_or_else(|e| panic!("dh_view.js failed on an empty report: {e}"));
    assert!(text.contains("Total:     0 bytes"), "{text}");

    // The harness can fail: a repeated frame list is refused by the viewer.
    let mut v: Value = serde_json::from_str(&json).unwrap();
    let first = v["pps"][0].clone();
    v["pps"].as_array_mut().unwrap().push(first);
    let err = run_viewer(&viewer, &v.to_string()).expect_err("viewer must refuse");
    assert!(err.contains("repeated location"), "{err}");
}

/// `12,345` as the viewer's `Intl.NumberFormat` (en-US) prints it.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
