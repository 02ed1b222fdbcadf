//! The memory-over-time model: version-1 files still read (with defaults), version-2
//! reports round-trip through JSON with every new field, and the text says "RSS unavailable"
//! when RSS is 0.

use std::path::PathBuf;
use std::time::Duration;

use allocscope::{report, track_scope, Report, TrackingAllocator, TrendKind};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cli")
        .join(name)
}

#[test]
fn version_1_files_still_read() {
    let text = std::fs::read_to_string(data("worker_old.json")).unwrap();
    assert!(
        text.contains(r#""version": 1"#),
        "the fixture is a version-1 file"
    );
    let r = Report::read_json(data("worker_old.json")).unwrap();
    assert_eq!(r.format_version(), 1);
    assert_eq!(r.process, Default::default());
    assert!(r.timeline.is_empty() && r.run_events.is_empty());
    assert!(r
        .jobs
        .iter()
        .all(|j| j.trend.kind == TrendKind::NotEnoughRuns));
    let text = r.to_text();
    assert!(text.contains("memory: RSS unavailable"), "{text}");
    assert!(text.lines().nth(3).unwrap().ends_with("TREND"), "{text}");
}

#[test]
fn version_2_reports_round_trip_with_the_new_fields() {
    allocscope::timeline::start(Duration::from_millis(5));
    for i in 0..6 {
        track_scope("model_job", || vec![0u8; 1000 + i].len());
        std::thread::sleep(Duration::from_millis(10));
    }
    allocscope::timeline::stop();
    let r = report();
    assert_eq!(r.format_version(), 2);
    assert!(!r.timeline.is_empty());
    assert!(r.run_events.iter().filter(|e| e.job == "model_job").count() == 6);
    assert!(r.process.rss_bytes > 0 || !cfg!(target_os = "linux"));
    assert!(r.process.heap_live_bytes >= r.totals.live.bytes);
    assert_eq!(
        r.process.heap_live_bytes,
        r.totals.live.bytes + r.tracker.overhead.bytes,
        "all tracked live bytes: jobs + unscoped + tracker"
    );
    assert_eq!(r.job("model_job").unwrap().trend.kind, TrendKind::Steady);
    let back = Report::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    let json = r.to_json();
    for field in [
        "\"process\"",
        "\"rss_bytes\"",
        "\"not_returned_bytes\"",
        "\"timeline\"",
        "\"top_jobs\"",
        "\"run_events\"",
        "\"trend\"",
        "\"runs_considered\"",
        "\"timeline_stats\"",
    ] {
        assert!(json.contains(field), "{field} in the JSON");
    }
}

#[test]
fn zero_rss_says_unavailable_and_never_advises() {
    let mut r = report();
    r.process.rss_bytes = 0;
    r.process.not_returned_bytes = 1 << 30;
    let text = r.to_text();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("memory: RSS unavailable, live heap "),
        "{text}"
    );
    assert!(!text.contains("MALLOC_ARENA_MAX"));
}
