//! The HTML report in a real browser: headless Chromium driven over the DevTools protocol by
//! `tests/support/html_check.mjs` (node). For a saved report, a diff of two reports, and the
//! live `/` page of the HTTP endpoint: no console message or exception, no request leaves the
//! page, the job table and the inferno flamegraph are in the DOM, a header click sorts the
//! table, a frame click zooms the flamegraph; a job named `<script>…` shows as text. The
//! screenshots stay in `target/tmp/html-artifacts/` (look at them).
#![cfg(feature = "http")]

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use allocscope::{track_scope, Report, TrackingAllocator};
use serde_json::Value;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const EVIL: &str = "<script>alert(1)</script>";

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tools() -> bool {
    // The DevTools client needs node's WebSocket (node >= 20.10 with this flag; Debian 12's
    // own nodejs is 18: then the check says so and skips).
    common::have_tool("chromium", &["--version"], "chromium")
        && common::have_tool(
            "node",
            &[
                "--experimental-websocket",
                "-e",
                "if (typeof WebSocket !== 'function') process.exit(1)",
            ],
            "nodejs (>= 20.10, for its WebSocket)",
        )
}

/// Loads `url` in Chromium; returns what the page showed and did.
fn check_in_browser(url: &str, name: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let shot = artifacts().join(format!("{name}.png"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/html_check.mjs");
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&script)
        .arg(url)
        .arg(&shot)
        .arg(profile.path())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "html_check.mjs printed no result ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(v.get("fatal").is_none(), "{v}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    eprintln!("screenshot: {}", shot.display());
    v
}

/// What every page must satisfy.
fn common_checks(v: &Value, min_jobs: u64) {
    assert_eq!(v["console"], serde_json::json!([]), "console messages: {v}");
    assert_eq!(v["foreignRequests"], serde_json::json!([]), "fetches: {v}");
    for src in v["scriptElements"].as_array().unwrap() {
        assert!(
            src.as_str().unwrap_or("").is_empty(),
            "external script: {src}"
        );
    }
    assert!(v["jobRows"].as_u64().unwrap() >= min_jobs, "{v}");
    assert!(
        v["flameFrames"].as_u64().unwrap() >= 3,
        "flamegraph frames: {v}"
    );
    assert!(
        v["flameWidth"].as_f64().unwrap() > 900.0,
        "flamegraph fills the page: {v}"
    );
    let sorted: Vec<String> = serde_json::from_value(v["sortedNames"].clone()).unwrap();
    let mut expected = sorted.clone();
    expected.sort_by_key(|s| s.to_lowercase());
    assert_eq!(sorted, expected, "a click on Job sorts by name");
    assert_eq!(v["zoom"]["clicked"], true, "{v}");
    assert_eq!(v["zoom"]["unzoomVisible"], true, "a frame click zooms: {v}");
}

#[inline(never)]
fn html_keep(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| black_box(vec![i as u8; 2048])).collect()
}

fn populate() -> Vec<Vec<Vec<u8>>> {
    common::every();
    vec![
        track_scope("html_import", || html_keep(20)),
        track_scope("html_render", || html_keep(5)),
        track_scope(EVIL, || html_keep(3)),
    ]
}

#[test]
fn saved_report_and_diff_pages_work_in_chromium() {
    if !tools() {
        return;
    }
    allocscope::timeline::start(Duration::from_millis(20));
    let mut kept = populate();
    std::thread::sleep(Duration::from_millis(100));
    let older = allocscope::report();
    kept.push(track_scope("html_import", || html_keep(10)));
    std::thread::sleep(Duration::from_millis(100));
    let newer = allocscope::report();
    allocscope::timeline::stop();
    assert!(!newer.timeline.is_empty(), "the timeline sampler ran");

    let html = newer.to_html();
    assert!(!html.contains(EVIL), "job names are escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        html.contains("data:image/svg+xml;base64,"),
        "timeline chart inline"
    );
    let file = artifacts().join("report.html");
    std::fs::write(&file, &html).unwrap();
    let v = check_in_browser(&format!("file://{}", file.display()), "report");
    common_checks(&v, 3);
    let names: Vec<String> = serde_json::from_value(v["jobNames"].clone()).unwrap();
    assert!(
        names.iter().any(|n| n == EVIL),
        "the evil name is text: {names:?}"
    );

    // Round trip through JSON, as `allocscope html` reads it.
    let reread = Report::from_json(&newer.to_json()).unwrap();
    assert_eq!(reread.to_html(), html.replace("\r", ""));

    let diff = newer.diff(&older).to_html();
    assert!(!diff.contains(EVIL));
    let file = artifacts().join("diff.html");
    std::fs::write(&file, &diff).unwrap();
    let v = check_in_browser(&format!("file://{}", file.display()), "diff");
    common_checks(&v, 1);
    drop(kept);
}

#[test]
fn live_page_works_in_chromium() {
    if !tools() {
        return;
    }
    let kept = populate();
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let v = check_in_browser(&format!("http://{}/", server.local_addr()), "live");
    common_checks(&v, 3);
    assert!(v["requests"].as_u64().unwrap() >= 1);
    server.shutdown();
    drop(kept);
}
