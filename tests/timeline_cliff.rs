//! The timeline shows the cliff: with the sampler at 100 ms, a job that allocates
//! 200 MiB and keeps it shows as a jump of at least 200 MB between the sample before its run
//! and the sample after, and its run event lies between those two samples. The chart of that
//! report is well-formed SVG with axes, a legend and the run's job name in a `<title>`.
//! (2 s instead of 10 s: the semantics are the same, CI time is not.)
//!
//! Its own binary, so no other test moves the RSS meanwhile.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use allocscope::{report, track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

const BIG: usize = 200 << 20;

#[test]
fn the_cliff_is_between_two_samples_with_its_run() {
    allocscope::timeline::start(Duration::from_millis(100));
    assert_eq!(
        allocscope::timeline::interval(),
        Some(Duration::from_millis(100))
    );
    for _ in 0..5 {
        track_scope("cliff_small", || black_box(vec![0u8; 4096]).len());
        std::thread::sleep(Duration::from_millis(100));
    }
    track_scope("cliff_big", || {
        // Touched, so it is resident.
        KEPT.lock().unwrap().push(black_box(vec![1u8; BIG]));
    });
    std::thread::sleep(Duration::from_millis(1000));
    allocscope::timeline::stop();
    assert_eq!(allocscope::timeline::interval(), None);

    let r = report();
    assert_eq!(r.timeline_stats.interval_ms, 0, "stopped");
    let n = r.timeline.len();
    assert!(
        (10..=25).contains(&n),
        "about 15 samples at 100 ms over 1.5 s: {n}"
    );
    assert_eq!(r.timeline_stats.samples_taken, n as u64);
    let ev = r
        .run_events
        .iter()
        .find(|e| e.job == "cliff_big")
        .expect("the big run's event");
    assert!(ev.retained_at_finish.bytes >= BIG as u64);
    // The last sample taken before the run started, the first after it finished.
    let before = r
        .timeline
        .iter()
        .rev()
        .find(|s| s.unix_ms <= ev.start_unix_ms)
        .expect("a sample before the run");
    let after = r
        .timeline
        .iter()
        .find(|s| s.unix_ms >= ev.finish_unix_ms)
        .expect("a sample after the run");
    assert!(before.unix_ms <= ev.start_unix_ms && ev.finish_unix_ms <= after.unix_ms);
    assert!(
        after.rss_bytes >= before.rss_bytes + 200_000_000,
        "RSS jumped by ≥ 200 MB: {} -> {}",
        before.rss_bytes,
        after.rss_bytes
    );
    assert!(after.heap_live_bytes >= before.heap_live_bytes + BIG as u64);
    let top = &after.top_jobs[0];
    assert_eq!(top.job, "cliff_big");
    assert!(top.live_bytes >= BIG as u64);
    assert_eq!(
        r.run_events
            .iter()
            .filter(|e| e.job == "cliff_small")
            .count(),
        5
    );
    // Samples are oldest first, at full resolution this early.
    assert!(r.timeline.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms));
    assert!(r.timeline.iter().all(|s| s.merged == 1));

    #[cfg(feature = "chart")]
    check_chart(&r);
}

/// The chart of the cliff: well-formed, with units, legend and the run's title.
#[cfg(feature = "chart")]
fn check_chart(r: &allocscope::Report) {
    let svg = r.timeline_svg(&Default::default()).unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline_cliff.svg");
    std::fs::write(&out, &svg).unwrap();
    eprintln!("chart: {}", out.display());
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut titles = Vec::new();
    let mut texts = Vec::new();
    let mut in_title = false;
    loop {
        match reader.read_event().expect("well-formed SVG") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"title" => in_title = true,
            quick_xml::events::Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
            quick_xml::events::Event::Text(t) => {
                let t = t.decode().unwrap().into_owned();
                if in_title {
                    titles.push(t);
                } else {
                    texts.push(t);
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(
        titles.len(),
        r.run_events.len(),
        "one hover title per run marker"
    );
    assert!(
        titles.iter().any(|t| t.starts_with("cliff_big #1: ")),
        "{titles:?}"
    );
    let all = texts.join("|");
    for needle in [
        "RSS",
        "live heap (tracked)",
        "job cliff_big",
        "memory (MiB)",
        "time since",
    ] {
        assert!(
            all.contains(needle),
            "{needle:?} in the chart's text: {all}"
        );
    }
}

#[test]
fn environment_variable_starts_the_sampler_or_says_why_not() {
    // Each case in a child process: the variable is read when the first scope begins.
    if let Ok(v) = std::env::var("TIMELINE_CHILD") {
        track_scope("env_child", || black_box(vec![0u8; 100]).len());
        std::thread::sleep(Duration::from_millis(300));
        let r = report();
        println!(
            "CHILD samples={} interval={} v={v}",
            r.timeline.len(),
            r.timeline_stats.interval_ms
        );
        return;
    }
    let run = |value: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "environment_variable_starts_the_sampler_or_says_why_not",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TIMELINE_CHILD", "1")
            .env("ALLOCSCOPE_TIMELINE", value)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest.to_string()))
            .unwrap_or_else(|| panic!("no CHILD line in {stdout}"));
        (line, stderr)
    };
    let (line, stderr) = run("50ms");
    assert!(line.contains("interval=50"), "{line}");
    let samples: usize = line
        .split("samples=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(samples >= 3, "{line}");
    assert!(!stderr.contains("allocscope:"), "{stderr}");
    let (line, stderr) = run("fast");
    assert!(line.contains("samples=0 interval=0"), "{line}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ALLOCSCOPE_TIMELINE"))
        .collect();
    assert_eq!(complaints.len(), 1, "one stderr line: {stderr}");
    assert!(complaints[0].contains("timeline off"), "{stderr}");
}
