//! The report before the kill, configured only by the environment: a child process (this test
//! binary, re-run) with `ALLOCSCOPE_DUMP_ABOVE=200MiB` and `ALLOCSCOPE_DIR` climbs past the
//! line twice, falling back to well below it in between, inside a running job. Exactly one
//! dump per crossing: the JSON report (read back, the running job has `active_runs > 0`,
//! `process.rss_bytes` above the line, the trigger names the job), the gzipped pprof profile
//! and the HTML page — opened by `allocscope show`, `go tool pprof` and headless Chromium.
//! An invalid value prints one line and writes nothing.
#![cfg(all(feature = "cli", feature = "http"))]

#[allow(dead_code)]
#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use allocscope::{track_scope, Report, TrackingAllocator};
use serde_json::json;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const LINE: u64 = 200 << 20;
const CHILD: &str = "ALLOCSCOPE_TEST_CHILD";

/// Runs this binary's `test` as a child process with `env`; returns (status ok, stderr).
fn child(test: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .env_remove("ALLOCSCOPE_TIMELINE")
        .env_remove("ALLOCSCOPE_HTTP")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 64 MiB blocks, every page written (resident), until `total` bytes.
#[inline(never)]
fn climb(total: u64) -> Vec<Vec<u8>> {
    (0..total / (64 << 20))
        .map(|i| black_box(vec![i as u8 + 1; 64 << 20]))
        .collect()
}

/// Waits until the memory watcher has written `n` dumps (bounded), so the child does not
/// depend on timing.
fn wait_for_dumps(n: u64) {
    for _ in 0..400 {
        if allocscope::timeline::dump_above().is_some_and(|s| s.dumps_written >= n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "no dump {n} within 10 s: {:?}",
        allocscope::timeline::dump_above()
    );
}

/// Waits until the watcher is armed again (memory fell below the re-arm level).
fn wait_armed() {
    for _ in 0..400 {
        if allocscope::timeline::dump_above().is_some_and(|s| s.armed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "not re-armed within 10 s: {:?}",
        allocscope::timeline::dump_above()
    );
}

/// The child: two climbs past 200 MiB, each inside one run of `bulk_import`, falling back in
/// between. Does nothing unless run by `dumps_once_per_crossing`.
#[test]
fn child_climbs_twice() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    for round in 1..=2u64 {
        track_scope("bulk_import", || {
            let held = climb(LINE + (64 << 20)); // 256 MiB
            wait_for_dumps(round);
            // Still above the line: no second dump for the same crossing.
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                allocscope::timeline::dump_above().unwrap().dumps_written,
                round
            );
            drop(held);
        });
        wait_armed();
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn dumps_once_per_crossing() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = child(
        "child_climbs_twice",
        &[
            ("ALLOCSCOPE_DUMP_ABOVE", "200MiB"),
            ("ALLOCSCOPE_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(ok, "child failed:\n{stderr}");
    let jsons = files(dir.path(), ".json");
    let profiles = files(dir.path(), ".pb.gz");
    let pages = files(dir.path(), ".html");
    assert_eq!(jsons.len(), 2, "{jsons:?}\n{stderr}");
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert_eq!(pages.len(), 2, "{pages:?}");
    // One stderr line per dump, naming the running job.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("crossed the memory line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("running: bulk_import (1 run since "),
        "{stderr}"
    );
    for json in &jsons {
        let text = std::fs::read_to_string(json).unwrap();
        let report = Report::from_json(&text).unwrap();
        let job = report.job("bulk_import").expect("the running job");
        assert!(job.active_runs > 0, "{json:?}");
        assert!(
            report.process.rss_bytes > LINE,
            "rss {}",
            report.process.rss_bytes
        );
        let t = report.trigger.as_ref().expect("a trigger");
        assert_eq!(t.reason, "memory_above");
        assert_eq!(t.line_bytes, LINE);
        assert!(t.figure_bytes >= LINE && t.rss_bytes >= LINE, "{t:?}");
        assert_eq!(t.active.len(), 1, "{t:?}");
        assert_eq!(t.active[0].job, "bulk_import");
        assert!(
            t.active[0].since_unix_ms > 0 && t.active[0].since_unix_ms <= report.timestamp_unix_ms
        );
    }
    // The second dump is of the second run.
    let second = Report::read_json(&jsons[1]).unwrap();
    assert_eq!(second.job("bulk_import").unwrap().runs, 1);

    // `allocscope show` reads the report.
    let out = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .arg("show")
        .arg(&jsons[0])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("bulk_import"), "{shown}");

    // The profile is a gzipped profile.proto that go tool pprof reads.
    let gz = std::fs::read(&profiles[0]).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    if common::require_tool("go", &["version"], "golang-go") {
        let out = Command::new("go")
            .args(["tool", "pprof", "-top", "-sample_index=inuse_space"])
            .arg(&profiles[0])
            .env("HOME", dir.path())
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .unwrap();
        let top = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "go tool pprof: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(top.contains("climb"), "{top}");
    }

    // The page opens in Chromium, without errors, and shows the job.
    if common::require_tool(chromium::CHROMIUM, &["--version"], "chromium") {
        let profile = tempfile::tempdir().unwrap();
        let mut browser = chromium::Chromium::launch(profile.path(), Duration::from_secs(60));
        let session = browser.new_page();
        let s = Some(session.as_str());
        browser.call(s, "Runtime.enable", json!({}));
        browser.call(s, "Page.enable", json!({}));
        let since = browser.events.len();
        let url = format!("file://{}", pages[0].display());
        let nav = browser.call(s, "Page.navigate", json!({ "url": url }));
        assert!(nav.get("errorText").is_none(), "{nav}");
        browser.wait_event(&session, "Page.loadEventFired", since);
        let r = browser.call(
            s,
            "Runtime.evaluate",
            json!({ "expression": "document.body.innerText", "returnByValue": true }),
        );
        let text = r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.contains("bulk_import"), "{text}");
        assert!(text.contains("crossed the memory line"), "{text}");
        let errors: Vec<_> = browser
            .events
            .iter()
            .filter(|e| e["method"] == "Runtime.exceptionThrown")
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        browser.close();
    }
}

/// The child for an invalid value: a job runs (applying the environment) and nothing else.
#[test]
fn child_invalid_value() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    track_scope("anything", || black_box(vec![0u8; 100]));
    assert!(allocscope::timeline::dump_above().is_none());
}

#[test]
fn an_invalid_value_prints_one_line_and_stays_off() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = child(
        "child_invalid_value",
        &[
            ("ALLOCSCOPE_DUMP_ABOVE", "lots"),
            ("ALLOCSCOPE_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ALLOCSCOPE_DUMP_ABOVE"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("allocscope: "), "{stderr}");
    assert!(lines[0].contains("\"lots\""), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The real cgroup's limit, read independently here, is the one the crate uses (or physical
/// memory when there is none, or it is larger).
#[test]
fn the_real_limit_matches_the_cgroup_files() {
    let limit = allocscope::timeline::memory_limit().expect("a limit on Linux");
    // SAFETY: sysconf has no preconditions.
    let physical = unsafe {
        libc::sysconf(libc::_SC_PHYS_PAGES) as u64 * libc::sysconf(libc::_SC_PAGESIZE) as u64
    };
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut expected: Option<u64> = None;
    for line in cgroup.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        if parts.len() != 3 {
            continue;
        }
        let file = if parts[1].split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{}/memory.limit_in_bytes", parts[2])
        } else if parts[0] == "0" && parts[1].is_empty() {
            format!(
                "/sys/fs/cgroup{}/memory.max",
                parts[2].trim_end_matches('/')
            )
        } else {
            continue;
        };
        if let Some(v) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            expected = Some(expected.map_or(v, |e| e.min(v)));
        }
    }
    eprintln!(
        "/proc/self/cgroup:\n{cgroup}own limit file: {expected:?}; physical {physical}; crate: {limit:?}"
    );
    match expected.filter(|&v| v < physical) {
        // The process's own cgroup limits it: the crate's limit is at most that (an ancestor
        // may limit more).
        Some(v) => {
            assert!(limit.bytes <= v, "{limit:?} vs {v}");
            assert_ne!(limit.source, allocscope::timeline::LimitSource::Physical);
        }
        None => assert!(limit.bytes <= physical),
    }
}
