//! A real job framework: the apalis worker of `examples/apalis_worker.rs` (MemoryStorage,
//! tokio, three job types), each mode in its own process (the figures are process-wide).
//! The figures the report gives must equal what the program counted itself.

use std::process::Command;

use allocscope::{Diagnostic, TrendKind, Usage};

#[allow(dead_code)]
#[path = "../examples/apalis_worker.rs"]
mod apalis_worker;

use apalis_worker::{Mode, Outcome, CACHE_ENTRIES, CACHE_ENTRY, PAYLOAD, TASKS};

/// Runs the child test `name` of this binary in its own process.
fn child(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn job_layer_after_parallelize_is_exact() {
    child("child_after");
}

#[test]
fn job_layer_before_parallelize_loses_the_jobs_and_says_so() {
    child("child_before");
}

#[test]
fn apalis_task_spans_named_by_the_worker_span_are_exact() {
    child("child_tracing");
}

#[test]
fn a_global_log_filter_hides_the_task_spans_and_says_so() {
    child("child_tracing_global_filter");
}

/// The program's own counts: every task processed, what it keeps.
fn check_counts(out: &Outcome) {
    assert_eq!(out.processed, [TASKS; 3]);
    assert_eq!(out.leaked, (TASKS, TASKS * PAYLOAD as u64));
    assert_eq!(
        out.cached,
        (CACHE_ENTRIES as u64, (CACHE_ENTRIES * CACHE_ENTRY) as u64)
    );
}

/// Each job: runs = tasks processed, retained = what the program keeps for it, the trend.
fn check_exact(out: &Outcome) {
    check_counts(out);
    let r = &out.report;
    print!("{r}");
    let job = |name: &str| r.job(name).unwrap_or_else(|| panic!("no job {name}\n{r}"));
    // The leak: growing, or `leaking` when the retained-by-run ledger sees every old run
    // still holding what it kept.
    let expect: [(&str, (u64, u64), &[TrendKind]); 3] = [
        (
            "leak_job",
            out.leaked,
            &[TrendKind::Growing, TrendKind::Leaking],
        ),
        ("cache_job", out.cached, &[TrendKind::Saturating]),
        ("churn_job", (0, 0), &[TrendKind::Steady]),
    ];
    for (name, (objects, bytes), trend) in expect {
        let j = job(name);
        assert_eq!(j.runs, TASKS, "{name}");
        assert_eq!(j.active_runs, 0, "{name}");
        assert_eq!(j.retained, Usage { objects, bytes }, "{name}");
        assert!(trend.contains(&j.trend.kind), "{name}: {:?}", j.trend);
    }
    assert_eq!(r.jobs.len(), 3, "one job per task type, nothing else:\n{r}");
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
}

#[test]
#[ignore = "run by job_layer_after_parallelize_is_exact in its own process"]
fn child_after() {
    check_exact(&apalis_worker::run(Mode::After));
}

#[test]
#[ignore = "run by apalis_task_spans_named_by_the_worker_span_are_exact in its own process"]
fn child_tracing() {
    check_exact(&apalis_worker::run(Mode::Tracing));
}

#[test]
#[ignore = "run by job_layer_before_parallelize_loses_the_jobs_and_says_so in its own process"]
fn child_before() {
    let out = apalis_worker::run(Mode::Before);
    check_counts(&out);
    let r = &out.report;
    print!("{r}");
    // Every task is a run, but the handlers ran on spawned tasks outside them.
    for name in ["leak_job", "cache_job", "churn_job"] {
        let j = r.job(name).unwrap();
        assert_eq!(j.runs, TASKS, "{name}");
        assert_eq!(j.retained, Usage::default(), "{name}");
    }
    let kept = out.leaked.1 + out.cached.1;
    assert!(r.totals.unscoped_live.bytes >= kept);
    let note = r
        .diagnostics
        .iter()
        .find_map(|d| match d {
            Diagnostic::UnscopedHeap {
                unscoped_live_bytes,
                runs,
                ..
            } => Some((*unscoped_live_bytes, *runs)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no unscoped note: {:?}", r.diagnostics));
    assert_eq!(note, (r.totals.unscoped_live.bytes, 3 * TASKS));
    let text = r.to_text();
    assert!(text.contains("was allocated outside any job"), "{text}");
    assert!(text.contains("in_current_scope"), "{text}");
    assert!(text.contains(".parallelize(tokio::spawn)"), "{text}");
    assert!(r.to_html().contains("was allocated outside any job"));
}

#[test]
#[ignore = "run by a_global_log_filter_hides_the_task_spans_and_says_so in its own process"]
fn child_tracing_global_filter() {
    let out = apalis_worker::run(Mode::TracingGlobalFilter);
    check_counts(&out);
    let r = &out.report;
    print!("{r}");
    assert!(r.jobs.is_empty(), "{r}");
    let (seen, selected, max_level) = r
        .diagnostics
        .iter()
        .find_map(|d| match d {
            Diagnostic::SpansNotSelected {
                seen,
                selected,
                max_level,
                ..
            } => Some((*seen, *selected, max_level.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no spans note: {:?}", r.diagnostics));
    // The three worker spans (INFO) reached the layer; no task span was created.
    assert_eq!((seen, selected), (3, 0));
    assert_eq!(max_level.as_deref(), Some("INFO"));
    let text = r.to_text();
    assert!(
        text.contains("has seen 3 spans and selected none"),
        "{text}"
    );
    assert!(
        text.contains("fmt::layer().with_filter(EnvFilter::new(\"info\"))"),
        "{text}"
    );
    assert!(r.to_html().contains("selected none"));
}
