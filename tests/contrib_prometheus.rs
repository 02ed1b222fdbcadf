//! The alert rules and the dashboard shipped in `contrib/`, checked by the real tools:
//! `promtool check rules` and `promtool test rules` (synthetic series in
//! `tests/data/prometheus/allocscope-rules.test.yml`); every metric they name is one the
//! endpoint serves; and every query of every dashboard panel returns data from a real
//! `prometheus` scraping the worker example (`examples/worker.rs`, live endpoint on), whose
//! budget breach is logged once, dumped once and counted in `/metrics`.
#![cfg(feature = "http")]

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allocscope::{track_scope, TrackingAllocator};
use prometheus::{KillOnDrop, Prometheus};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const RULES: &str = "contrib/prometheus/allocscope-rules.yml";
const DASHBOARD: &str = "contrib/grafana/allocscope-dashboard.json";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {}\n{said}", out.status);
    said
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    if !common::require_tool("promtool", &["--version"], "prometheus") {
        return;
    }
    let said = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join(RULES)));
    assert!(said.contains("SUCCESS: 4 rules found"), "{said}");
    let said = run(Command::new("promtool")
        .args(["test", "rules", "allocscope-rules.test.yml"])
        .current_dir(root().join("tests/data/prometheus")));
    assert!(said.contains("SUCCESS"), "{said}");
}

/// `allocscope_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("allocscope_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The panel queries of the dashboard, with Grafana's variables replaced as "All" does.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap().to_string();
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: every panel reads the dashboard's data source variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s")
                .replace("$instance", ".*")
                .replace("$job", ".*");
            out.push((title.clone(), expr));
        }
    }
    out
}

#[test]
fn every_metric_named_in_contrib_is_served() {
    // A job and a budget breach, so that every family has a series.
    allocscope::budget::set_log(false);
    allocscope::budget::set_dir(None);
    allocscope::budget::set_budget(
        "served_job",
        Some(allocscope::budget::Budget::new().max_allocated_objects(0)),
    );
    for _ in 0..6 {
        track_scope("served_job", || std::hint::black_box(vec![1u8; 100]).len());
    }
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let text = common::get_text(&format!("http://{}/metrics", server.local_addr()));
    server.shutdown();
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let rules = std::fs::read_to_string(root().join(RULES)).unwrap();
    let dashboard = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    for (file, names) in [
        (RULES, metric_names(&rules)),
        (DASHBOARD, metric_names(&dashboard)),
    ] {
        assert!(names.len() >= 4, "{file}: {names:?}");
        for name in names {
            assert!(
                served.contains(&name),
                "{file} names {name}, which /metrics does not serve:\n{text}"
            );
        }
    }
}

/// The worker example's binary, built with this test's features (cargo builds examples with
/// the tests; when only this test was built, it is built here).
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let worker = profile_dir.join("examples").join("worker");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "worker",
            "--features",
            "http",
        ])
        .args(if profile_dir.ends_with("release") {
            &["--release"][..]
        } else {
            &[][..]
        })
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example worker");
    assert!(worker.exists(), "{}", worker.display());
    worker
}

#[test]
fn every_dashboard_query_returns_data_from_the_worker() {
    if !common::require_tool("prometheus", &["--version"], "prometheus") {
        return;
    }
    let queries = dashboard_queries();
    let worker = worker_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = KillOnDrop(
        Command::new(worker)
            .current_dir(dir.path())
            .env("ALLOCSCOPE_HTTP", format!("127.0.0.1:{port}"))
            .env("ALLOCSCOPE_STACKS", "off")
            .env_remove("ALLOCSCOPE_BUDGETS")
            .env_remove("ALLOCSCOPE_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The worker's stderr, collected on a thread (its budget line comes early).
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let prom = Prometheus::start(
        dir.path(),
        "worker",
        &[format!("127.0.0.1:{port}")],
        &[root().join(RULES)],
    );

    // Every panel's query returns data (bounded: the worker's eight rounds and a few scrapes).
    let started = Instant::now();
    let mut results: Vec<(String, String, Vec<serde_json::Value>)> = Vec::new();
    let mut first_seen: Vec<Option<Duration>> = vec![None; queries.len()];
    // The leaking job's trend says so once it has run enough (after the worker's fifth round),
    // so the trend and growth panels show real verdicts, not only "not enough runs".
    let leak_seen = "allocscope_job_trend{job=\"sync_customers\",trend=~\"growing|leaking\"} == 1";
    loop {
        results.clear();
        let mut missing = Vec::new();
        if prom.query(leak_seen).map_or(true, |r| r.is_empty()) {
            missing.push(format!("the leaking job's trend: {leak_seen}"));
        }
        for (i, (title, expr)) in queries.iter().enumerate() {
            match prom.query(expr) {
                Some(r) if !r.is_empty() => {
                    first_seen[i].get_or_insert(started.elapsed());
                    results.push((title.clone(), expr.clone(), r))
                }
                _ => missing.push(format!("{title}: {expr}")),
            }
        }
        if missing.is_empty() {
            eprintln!("first data after: {first_seen:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "dashboard queries without data after {:?}:\n{}\nprometheus log:\n{}",
            started.elapsed(),
            missing.join("\n"),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The results, as the README's table shows them.
    let mut table = String::from("| panel | query | series: value |\n|---|---|---|\n");
    for (title, expr, r) in &results {
        let values: Vec<String> = r
            .iter()
            .take(6)
            .map(|s| {
                let m = &s["metric"];
                let label = ["job", "reason", "trend", "limit", "part", "age"]
                    .iter()
                    .filter_map(|k| m[*k].as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = m["__name__"].as_str().unwrap_or("");
                let label = if label.is_empty() { name } else { &label };
                format!("{label}: {}", s["value"][1].as_str().unwrap_or("?"))
            })
            .collect();
        table.push_str(&format!(
            "| {title} | `{}` | {} |\n",
            expr.replace('|', "\\|"),
            values.join("<br>")
        ));
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-queries.md");
    std::fs::write(&out, &table).unwrap();
    eprintln!("{table}(also in {})", out.display());

    // The budget breach: counted by /metrics (one per sync_customers run) ...
    // (every run of sync_customers breaches: the two counters of one scrape are equal).
    let breaches = prom
        .query(
        "allocscope_job_budget_breaches_total{job=\"sync_customers\",limit=\"retained_bytes\"} \
         - ignoring (limit) allocscope_job_runs_total{job=\"sync_customers\"}",
    )
    .unwrap();
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0]["value"][1], "0", "{breaches:?}");
    // ... logged once and dumped once (the interval is a minute).
    let lines: Vec<String> = rx.try_iter().collect();
    let breach_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("exceeded its budget"))
        .collect();
    assert_eq!(breach_lines.len(), 1, "{lines:#?}");
    assert!(
        breach_lines[0].starts_with(
            "allocscope: job sync_customers run 1 exceeded its budget: retained bytes: "
        ),
        "{}",
        breach_lines[0]
    );
    let budgets: Vec<_> = std::fs::read_dir(dir.path().join("target/allocscope/budgets"))
        .unwrap()
        .collect();
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    // Prometheus evaluated the shipped rules against the worker: the breach alert fires.
    let alerts = prom.query("ALERTS{alertname=\"AllocscopeJobBudgetBreached\"}");
    assert!(alerts.is_some_and(|a| !a.is_empty()), "no budget alert");
}
