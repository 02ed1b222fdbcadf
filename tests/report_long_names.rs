//! Long job names: a name is stored once, cut to `MAX_JOB_NAME_BYTES` with a marker and a
//! hash of the full name, so a job with a 1 MiB name run 2,000 times costs little to report
//! (copied whole into every run event and recent run, such a name would cost a 2.2 GiB peak
//! and a 2.1 GB JSON file at 3,000 runs), two long names stay two jobs, and every output shows
//! the same stored name.

mod common;

use std::process::Command;

use allocscope::{
    job_display_name, report, stored_job_name, track_scope, track_scope_run, TrackingAllocator,
    MAX_JOB_NAME_BYTES,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const CHILD: &str = "ALLOCSCOPE_LONG_NAME_CHILD";
const RUNS: usize = 2_000;
/// What reporting a job with a 1 MiB name run 2,000 times may cost (peak RSS around
/// `report()` and `write_json`).
const BUDGET: u64 = 256 << 20;

fn long_name(last: char) -> String {
    let mut name = "n".repeat((1 << 20) - 1);
    name.push(last);
    name
}

/// In the child: runs the job, then measures the peak around `report()` + `write_json`.
fn child(path: &str) {
    let name = long_name('a');
    for _ in 0..RUNS {
        track_scope(&name, || std::hint::black_box(vec![0u8; 64]));
    }
    let peak = common::PeakRss::start().expect("/proc/self/clear_refs and VmHWM (Linux)");
    let r = report();
    r.write_json(path).unwrap();
    let grown = peak.grown();
    let size = std::fs::metadata(path).unwrap().len();
    println!(
        "CHILD grown={grown} json={size} events={} jobs={}",
        r.run_events.len(),
        r.jobs.len()
    );
}

#[test]
fn a_1_mib_job_name_run_2000_times_costs_little_to_report() {
    if let Ok(path) = std::env::var(CHILD) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_1_mib_job_name_run_2000_times_costs_little_to_report",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("CHILD ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    println!("{line}");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .parse()
            .unwrap()
    };
    assert!(field("events") >= 1_000, "{line}");
    assert!(field("grown") < BUDGET, "{line}");
    // Every run event names the job: with the name cut, the file stays small.
    assert!(field("json") < 4 << 20, "{line}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&"n".repeat(MAX_JOB_NAME_BYTES)));
    assert!(text.contains(&*stored_job_name(&long_name('a'))));
}

#[test]
fn long_names_are_cut_the_same_way_everywhere_and_stay_distinct() {
    let (a, b) = (long_name('a'), long_name('b'));
    let ((), run_a) = track_scope_run(&a, || drop(std::hint::black_box(vec![1u8; 100])));
    let ((), run_b) = track_scope_run(&b, || drop(std::hint::black_box(vec![1u8; 100])));
    let (sa, sb) = (stored_job_name(&a), stored_job_name(&b));
    assert_ne!(sa, sb, "two long names merged");
    assert!(sa.len() <= MAX_JOB_NAME_BYTES && sa.contains("…[1048576 bytes #"));
    // The run report, the job report (found by its full name or its stored one), the text
    // and the JSON all name the stored form.
    assert_eq!(run_a.job, *sa);
    assert_eq!(run_b.job, *sb);
    let r = report();
    assert_eq!(r.job(&a).unwrap().name, *sa);
    assert_eq!(r.job(&sb).unwrap().name, *sb);
    assert_eq!(r.job(&a).unwrap().runs, 1);
    let text = r.to_text();
    assert!(text.contains(&*job_display_name(&sa)), "{text}");
    assert!(!text.contains(&"n".repeat(MAX_JOB_NAME_BYTES)));
    let json = r.to_json();
    assert!(!json.contains(&"n".repeat(MAX_JOB_NAME_BYTES)));
    let back = allocscope::Report::from_json(&json).unwrap();
    assert_eq!(back.job(&a).unwrap().name, *sa);
    // A file written elsewhere with the full name reads under the same rule.
    let full = json.replace(
        &*serde_json::to_string(&*sa).unwrap(),
        &serde_json::to_string(&a).unwrap(),
    );
    assert!(full.len() > 1 << 20);
    let back = allocscope::Report::from_json(&full).unwrap();
    assert_eq!(back.job(&a).unwrap().name, *sa);
    assert!(back.run_events.iter().any(|e| e.job == *sa));
    assert!(back
        .job(&a)
        .unwrap()
        .recent_runs
        .iter()
        .all(|r| r.job == *sa));
    assert!(back
        .callsites
        .iter()
        .flat_map(|c| &c.scope)
        .all(|s| s.len() <= MAX_JOB_NAME_BYTES));

    // A name at the limit is kept whole; one byte more is cut at a character boundary.
    let at_limit = "é".repeat(MAX_JOB_NAME_BYTES / 2);
    assert_eq!(stored_job_name(&at_limit), at_limit);
    let over = format!("{at_limit}x");
    let cut = stored_job_name(&over);
    assert!(
        cut.len() <= MAX_JOB_NAME_BYTES && cut.starts_with("éé"),
        "{cut}"
    );
    assert_eq!(
        stored_job_name(&cut),
        cut,
        "a stored name is its own stored name"
    );
}
