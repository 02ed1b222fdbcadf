//! The live endpoint read by the real tools: `promtool check metrics`, a real `prometheus`
//! server scraping it, and `go tool pprof` fetching `/debug/pprof/heap` over HTTP. Each test
//! skips (saying why) only when its tool is not installed; `.ci/run` installs them.
#![cfg(feature = "http")]
// One heap block per object, on purpose: the tests count blocks.
#![allow(clippy::vec_box)]

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::hint::black_box;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allocscope::http::serve;
use allocscope::{track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[inline(never)]
fn prom_leaker(n: usize) -> Vec<Box<[u8; 4096]>> {
    (0..n).map(|_| black_box(Box::new([3u8; 4096]))).collect()
}

#[test]
fn promtool_accepts_metrics() {
    if !common::require_tool("promtool", &["--version"], "prometheus") {
        return;
    }
    let kept = [
        track_scope("promtool_job", || prom_leaker(2)),
        // Names that need escaping in label values.
        track_scope("quote \" back \\ slash", || prom_leaker(1)),
        track_scope("new\nline", || prom_leaker(1)),
        track_scope("<script>alert(1)</script>", || prom_leaker(1)),
        track_scope("utf-8 ✓ ü", || prom_leaker(1)),
    ];
    let server = serve("127.0.0.1:0").unwrap();
    let text = common::get_text(&format!("http://{}/metrics", server.local_addr()));
    assert!(text.contains("allocscope_job_retained_bytes{job=\"quote \\\" back \\\\ slash\"}"));
    assert!(text.contains("allocscope_job_retained_bytes{job=\"new\\nline\"}"));
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- input:\n{text}",
        out.status
    );
    drop(kept);
    server.shutdown();
}

#[test]
fn prometheus_scrapes_the_retained_bytes() {
    if !common::require_tool("prometheus", &["--version"], "prometheus") {
        return;
    }
    let kept = track_scope("prometheus_job", || prom_leaker(3));
    let server = serve("127.0.0.1:0").unwrap();
    let expected = allocscope::report()
        .job("prometheus_job")
        .unwrap()
        .retained
        .bytes;
    assert!(expected >= 3 * 4096);

    let dir = tempfile::tempdir().unwrap();
    let prom = prometheus::Prometheus::start(
        dir.path(),
        "allocscope",
        &[server.local_addr().to_string()],
        &[],
    );
    let web = prom.web;
    let started = Instant::now();
    let value = loop {
        // Unreachable while prometheus starts; an empty result until its first scrape.
        // `age=""`: the job's total, not one of the five series that split it by age.
        let result = prom.query("allocscope_job_retained_bytes{job=\"prometheus_job\",age=\"\"}");
        if let Some(v) = result
            .as_ref()
            .and_then(|r| r.first()?["value"][1].as_str())
        {
            break v.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "prometheus did not scrape the endpoint within 2 minutes; its log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(value, expected.to_string(), "value prometheus scraped");
    // Prometheus saw the target as healthy.
    let targets: serde_json::Value =
        serde_json::from_str(&common::get_text(&format!("http://{web}/api/v1/targets"))).unwrap();
    assert_eq!(
        targets["data"]["activeTargets"][0]["health"], "up",
        "{targets}"
    );
    drop(kept);
    server.shutdown();
}

#[inline(never)]
fn pprof_http_leaker(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| black_box(vec![i as u8; 64 * 1024]))
        .collect()
}

#[inline(never)]
fn pprof_http_other(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| black_box(vec![i as u8; 32 * 1024]))
        .collect()
}

#[test]
fn go_tool_pprof_reads_the_heap_endpoint() {
    if !common::require_tool("go", &["version"], "golang-go") {
        return;
    }
    common::every();
    let kept = track_scope("pprof_http_leaky", || pprof_http_leaker(8));
    let other = track_scope("pprof_http_other", || pprof_http_other(4));
    let server = serve("127.0.0.1:0").unwrap();
    let url = format!("http://{}/debug/pprof/heap", server.local_addr());
    let dir = tempfile::tempdir().unwrap();
    let pprof = |args: &[&str]| -> String {
        let out = Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&url)
            .env("HOME", dir.path()) // pprof saves fetched profiles under ~/pprof
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .expect("run go tool pprof");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "go tool pprof {args:?} failed: {stderr}"
        );
        assert!(stderr.contains("Fetching profile over HTTP"), "{stderr}");
        stdout
    };
    let top = pprof(&["-top", "-sample_index=inuse_space"]);
    assert!(top.contains("pprof_http_leaker"), "{top}");
    assert!(top.contains("pprof_http_other"), "{top}");
    let only = pprof(&[
        "-top",
        "-sample_index=inuse_space",
        "-tagfocus=job=pprof_http_leaky",
    ]);
    assert!(only.contains("pprof_http_leaker"), "{only}");
    assert!(
        !only.contains("pprof_http_other"),
        "tagfocus selects one job:\n{only}"
    );
    // The job's retained bytes are the focused total (8 × 64 KiB plus the Vec of Vecs).
    let expected = allocscope::report()
        .job("pprof_http_leaky")
        .unwrap()
        .retained
        .bytes;
    assert!(expected >= 8 * 64 * 1024);
    let total = format!("accounting for {:.2}kB,", expected as f64 / 1024.0);
    assert!(
        only.contains(&total),
        "total of the focused job is its retained bytes ({total}):\n{only}"
    );
    // /debug/pprof/allocs: alloc_space by default.
    let allocs_url = format!("http://{}/debug/pprof/allocs", server.local_addr());
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&allocs_url)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains("alloc_space/bytes[dflt]"), "{raw}");
    drop((kept, other));
    server.shutdown();
}
