//! Per-job budgets: the same limits as `MemoryCheck`, applied to every finished run. From the
//! environment (`ALLOCSCOPE_BUDGETS`, in a child process: one stderr line and one report per
//! job per interval, however many runs breach) and from code (hooks, interval, counts, and
//! `/metrics`' `allocscope_job_budget_breaches_total`).
#![cfg(feature = "http")]

mod common;

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocscope::budget::{self, Budget, Limit};
use allocscope::{track_scope, Report, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const CHILD: &str = "ALLOCSCOPE_TEST_CHILD";

/// What the leaking jobs keep.
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn keep(bytes: usize) {
    let block = black_box(vec![7u8; bytes]);
    KEPT.lock().unwrap().push(block);
}

/// The child: 5 runs of a job over its retained budget (from the environment), 3 within.
#[test]
fn child_breaches_five_times() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    KEPT.lock().unwrap().reserve(100);
    for _ in 0..5 {
        track_scope("env_leaky", || keep(64 << 10));
    }
    for _ in 0..3 {
        track_scope("env_fine", || black_box(vec![0u8; 1 << 20]).len());
    }
    let counts = budget::breach_counts();
    assert!(
        counts.contains(&("env_leaky".to_string(), Limit::RetainedBytes, 5)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("env_leaky".to_string(), Limit::AllocatedObjects, 0)),
        "{counts:?}"
    );
}

#[test]
fn environment_budgets_log_and_dump_once_per_interval() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_breaches_five_times", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env(
            "ALLOCSCOPE_BUDGETS",
            "env_leaky: retained=16KiB objects=1000; env_fine: retained=0 peak=2MiB; interval=10m",
        )
        .env("ALLOCSCOPE_DIR", dir.path())
        .env("ALLOCSCOPE_DUMP_THRESHOLD", "1g")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("exceeded its budget"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("allocscope: job env_leaky run 1 exceeded its budget: retained bytes: 65,536 B (64.0 KiB) measured, limit 16,384 B (16.0 KiB); report: "),
        "{}",
        lines[0]
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("allocscope-budget-") && name.ends_with("-env_leaky-run1.json"),
        "{name}"
    );
    let report = Report::read_json(&files[0]).unwrap();
    assert_eq!(report.jobs.len(), 1);
    assert_eq!(report.jobs[0].name, "env_leaky");
    let t = report.trigger.unwrap();
    assert_eq!(t.reason, "budget");
    assert!(t.message.contains("retained bytes"), "{}", t.message);
}

#[test]
fn an_invalid_budget_prints_one_line() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_invalid", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("ALLOCSCOPE_BUDGETS", "env_leaky: retained=lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ALLOCSCOPE_BUDGETS"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("allocscope: invalid configuration: "),
        "{stderr}"
    );
}

#[test]
fn child_invalid() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    track_scope("env_leaky", || keep(64 << 10));
    assert!(budget::budget("env_leaky").is_none());
    assert!(budget::breach_counts().is_empty());
}

#[test]
fn code_budgets_hooks_intervals_and_metrics() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No report for the first runs: the interval is counted from a breach's check, and
    // writing a report in a debug build may take longer than the interval.
    budget::set_dir(None);
    budget::set_log(false);
    budget::set_interval(Duration::from_millis(1500));
    budget::set_budget(
        "code_peaky",
        Some(
            Budget::new()
                .max_peak_bytes(512 << 10)
                .max_allocated_objects(10),
        ),
    );
    type Seen = Vec<(u64, bool, Vec<Limit>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen2 = seen.clone();
    let hook = budget::on_breach(move |b| {
        if b.job == "code_peaky" {
            seen2.lock().unwrap().push((
                b.run,
                b.reported,
                b.violations.iter().map(|v| v.limit).collect(),
            ));
        }
    });
    let within = AtomicU64::new(0);
    for i in 0..4 {
        // Runs 1-3 peak at 1 MiB (over); run 4 stays within.
        let size = if i < 3 { 1 << 20 } else { 1 << 10 };
        track_scope("code_peaky", || {
            within.fetch_add(black_box(vec![1u8; size]).len() as u64, Relaxed)
        });
    }
    std::thread::sleep(Duration::from_millis(1600));
    budget::set_dir(Some(dir.path().to_path_buf()));
    track_scope("code_peaky", || black_box(vec![1u8; 1 << 20]).len());
    assert!(budget::remove_breach_hook(hook));
    let seen = seen.lock().unwrap().clone();
    // Every breach reaches the hook; runs 1 and 5 (after the interval) are reported.
    assert_eq!(
        seen,
        vec![
            (1, true, vec![Limit::PeakBytes]),
            (2, false, vec![Limit::PeakBytes]),
            (3, false, vec![Limit::PeakBytes]),
            (5, true, vec![Limit::PeakBytes]),
        ]
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let text = common::get_text(&format!("http://{}/metrics", server.local_addr()));
    server.shutdown();
    assert!(
        text.contains(
            "allocscope_job_budget_breaches_total{job=\"code_peaky\",limit=\"peak_bytes\"} 4\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("allocscope_job_budget_breaches_total{job=\"code_peaky\",limit=\"allocated_objects\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("allocscope_dumps_total{reason=\"budget\"} 1\n"),
        "{text}"
    );
    budget::set_budget("code_peaky", None);
}

/// `MemoryCheck` and `Budget` apply the same limits the same way.
#[test]
fn checks_and_budgets_agree() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let figures = allocscope::testing::MemoryCheck::new("agree")
        .max_peak_bytes(100)
        .run(|| black_box(vec![0u8; 1000]).len());
    let failure = figures.unwrap_err();
    let (_, run) = allocscope::track_scope_run("agree_run", || black_box(vec![0u8; 1000]).len());
    let from_budget = Budget::new().max_peak_bytes(100).check(&run);
    assert_eq!(failure.violations()[0].limit, from_budget[0].limit);
    assert_eq!(failure.violations()[0].max, from_budget[0].max);
    assert_eq!(
        failure.violations()[0].to_string(),
        from_budget[0].to_string()
    );
}
