//! Folded stacks (golden files) and flamegraph SVGs (structure) from a fixed report.
//!
//! Golden files live in `tests/data/report/`; set `ALLOCSCOPE_BLESS=1` to rewrite them after
//! an intended change, and review the diff.

mod common;

/// Compares `actual` with the golden file `tests/data/report/<name>` (see `common::golden`:
/// a missing golden file fails unless `ALLOCSCOPE_BLESS=1`).
fn golden(name: &str, actual: &str) {
    common::golden("report", name, actual)
}

use std::collections::BTreeSet;

use allocscope::{
    CallsiteReport, FlameMetric, FlameOptions, Frame, JobReport, Report, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn frame(function: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some("src/worker.rs".into()),
        line: Some(line),
    }
}

fn site(
    scope: &[&str],
    frames: &[&str],
    allocated: (u64, u64),
    retained: (u64, u64),
) -> CallsiteReport {
    let mut site = CallsiteReport::default();
    site.scope = scope.iter().map(|s| s.to_string()).collect();
    site.frames = frames
        .iter()
        .enumerate()
        .map(|(i, f)| frame(f, 10 + i as u32))
        .collect();
    site.allocated = Usage::new(allocated.0, allocated.1);
    site.retained = Usage::new(retained.0, retained.1);
    site.peak_bytes = retained.1;
    site
}

fn job(name: &str, callsites: Vec<CallsiteReport>) -> JobReport {
    let sum = |f: fn(&CallsiteReport) -> Usage| {
        callsites.iter().map(f).fold(Usage::default(), |a, b| a + b)
    };
    let mut job = JobReport::default();
    job.name = name.to_string();
    job.runs = 3;
    job.allocated = sum(|c| c.allocated);
    job.retained = sum(|c| c.retained);
    job.peak_bytes = 4096;
    job.callsites = callsites;
    job
}

/// A report with two jobs (one nested in the other), a leak and an unscoped callsite.
fn fixture() -> Report {
    let leak = site(
        &["sync_customers"],
        &[
            "worker::append_to_cache",
            "worker::sync_customers",
            "worker::main",
        ],
        (300, 30_000),
        (300, 30_000),
    );
    let temp = site(
        &["sync_customers"],
        &[
            "worker::format_record",
            "worker::sync_customers",
            "worker::main",
        ],
        (900, 90_000),
        (0, 0),
    );
    let nested = site(
        &["sync_customers", "parse; \"quoted\" <job>"],
        &["worker::parse", "worker::sync_customers", "worker::main"],
        (50, 5_000),
        (10, 1_000),
    );
    let render = site(
        &["render_report"],
        &[
            "worker::render_line",
            "worker::render_report",
            "worker::main",
        ],
        (1_000, 64_000),
        (0, 0),
    );
    let unscoped = site(
        &[],
        &["worker::init_config", "worker::main"],
        (4, 2_000),
        (4, 2_000),
    );
    let mut all = vec![
        leak.clone(),
        temp.clone(),
        nested.clone(),
        render.clone(),
        unscoped,
    ];
    all.sort_by_key(|c| std::cmp::Reverse(c.retained.bytes));
    let mut report = Report::default();
    report.stack_mode = allocscope::StackMode::Every;
    report.jobs = vec![
        job("sync_customers", vec![leak, nested.clone(), temp]),
        job("parse; \"quoted\" <job>", vec![nested]),
        job("render_report", vec![render]),
    ];
    report.callsites = all;
    report
}
#[test]
fn folded_all_jobs_retained_bytes() {
    golden(
        "folded_all_retained_bytes.txt",
        &fixture().folded(&FlameOptions::default()),
    );
}

#[test]
fn folded_one_job_allocated_objects() {
    let opts = FlameOptions::job("sync_customers").metric(FlameMetric::AllocatedObjects);
    golden(
        "folded_sync_customers_allocated_objects.txt",
        &fixture().folded(&opts),
    );
}

#[test]
fn folded_without_job_roots() {
    let opts = FlameOptions {
        job_root: false,
        metric: FlameMetric::AllocatedBytes,
        ..FlameOptions::default()
    };
    golden(
        "folded_no_roots_allocated_bytes.txt",
        &fixture().folded(&opts),
    );
}

#[test]
fn folded_lines_have_the_expected_shape() {
    let folded = fixture().folded(&FlameOptions::default());
    for line in folded.lines() {
        let (stack, weight) = line.rsplit_once(' ').unwrap();
        assert!(weight.parse::<u64>().unwrap() > 0);
        assert!(!stack.split(';').any(|f| f.is_empty()), "{line}");
    }
    // Retained bytes only: the render job and the temporary callsite hold nothing.
    assert!(!folded.contains("render_report"));
    assert!(!folded.contains("format_record"));
    // A `;` inside a job name must not split it into two frames: the name is quoted and
    // escaped (`job_display_name`), and decodes back.
    let shown = allocscope::job_display_name("parse; \"quoted\" <job>");
    assert!(
        folded.contains(&format!("sync_customers;{shown};")),
        "{folded}"
    );
    assert_eq!(
        allocscope::job_name_from_display(&shown).as_deref(),
        Some("parse; \"quoted\" <job>")
    );
    assert!(folded.contains("(unscoped);worker::main;worker::init_config 2000"));
}

/// Frames of an SVG: the `<title>` text of each `<g>`.
fn svg_titles(svg: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut titles = Vec::new();
    let mut title: Option<String> = None;
    let mut depth_g = 0;
    loop {
        match reader.read_event().expect("the SVG is well-formed XML") {
            Event::Start(e) if e.name().as_ref() == b"g" => depth_g += 1,
            Event::End(e) if e.name().as_ref() == b"g" => depth_g -= 1,
            Event::Start(e) if e.name().as_ref() == b"title" && depth_g > 0 => {
                title = Some(String::new())
            }
            Event::End(e) if e.name().as_ref() == b"title" => titles.extend(title.take()),
            Event::Text(t) => {
                if let Some(title) = title.as_mut() {
                    title.push_str(&t.decode().unwrap());
                }
            }
            // Entity references arrive as their own events.
            Event::GeneralRef(r) => {
                if let Some(title) = title.as_mut() {
                    let name = r.decode().unwrap();
                    title.push_str(match name.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity &{other};"),
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    titles
}

#[test]
fn svg_has_one_frame_per_stack_element_with_counts_in_titles() {
    let report = fixture();
    let opts = FlameOptions::default();
    let folded = report.folded(&opts);
    let svg = report.flamegraph_svg(&opts).unwrap();
    assert!(svg.starts_with("<?xml"));
    let titles = svg_titles(&svg);
    // Every distinct stack prefix is one frame, plus the root "all".
    let mut prefixes = BTreeSet::new();
    for line in folded.lines() {
        let (stack, _) = line.rsplit_once(' ').unwrap();
        let parts: Vec<&str> = stack.split(';').collect();
        for i in 1..=parts.len() {
            prefixes.insert(parts[..i].join(";"));
        }
    }
    assert_eq!(titles.len(), prefixes.len() + 1, "{titles:#?}");
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("all (33,000 bytes, 100%)")),
        "{titles:#?}"
    );
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("worker::append_to_cache (30,000 bytes, ")),
        "{titles:#?}"
    );
    assert!(titles
        .iter()
        .any(|t| t.starts_with("sync_customers (31,000 bytes, ")));
    // Escaped characters come back intact.
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with(r#""parse\u{3b} \"quoted\" <job\u{3e}" (1,000 bytes, "#)),
        "{titles:#?}"
    );
    // Memory palette and the title we asked for.
    assert!(svg.contains("All jobs: retained bytes"));
}

#[test]
fn svg_of_an_empty_profile_is_valid_and_says_so() {
    let mut report = fixture();
    report.callsites.clear();
    report.jobs.clear();
    let svg = report.flamegraph_svg(&FlameOptions::default()).unwrap();
    assert!(svg_titles(&svg).is_empty());
    assert!(svg.contains("Nothing to show"));
    let svg = fixture()
        .flamegraph_svg(&FlameOptions::job("render_report"))
        .unwrap();
    assert!(
        svg.contains("Nothing to show: job"),
        "render_report retains nothing"
    );
}

#[test]
fn json_round_trip_keeps_everything() {
    let report = fixture();
    let back = Report::from_json(&report.to_json()).unwrap();
    assert_eq!(back, report);
}

#[test]
fn a_missing_golden_file_fails_unless_blessed() {
    // A helper that wrote a missing golden file and passed would let a renderer change that
    // lost a golden file go unnoticed.
    if common::blessing() {
        return;
    }
    let missing = common::data("report", "no_such_golden.txt");
    assert!(!missing.exists());
    let result = std::panic::catch_unwind(|| golden("no_such_golden.txt", "anything"));
    let message = result
        .expect_err("a missing golden file must fail")
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(message.contains("ALLOCSCOPE_BLESS=1"), "{message}");
    assert!(!missing.exists(), "the helper must not create the file");
}

#[test]
fn labels_say_which_callsites_are_estimates_whatever_the_mode() {
    // A report taken in `Every` mode whose callsites were partly recorded while sampling
    // (the mode changed at run time): each output says which figures are estimates.
    let mut r = fixture();
    r.stack_mode = allocscope::StackMode::Every;
    r.callsites[0].estimated = true;
    let n = r.callsites.len();
    let text = r.to_text();
    assert!(
        text.contains(&format!(
            "note: 1 of {n} callsites were recorded while stacks were sampled"
        )),
        "{text}"
    );
    let svg = r.flamegraph_svg(&FlameOptions::default()).unwrap();
    assert!(
        svg.contains(&format!("1 of {n} callsites from sampled stacks")),
        "subtitle"
    );
    // All exact: no such label.
    r.callsites[0].estimated = false;
    assert!(!r.to_text().contains("sampled"));
    assert!(!r
        .flamegraph_svg(&FlameOptions::default())
        .unwrap()
        .contains("estimates"));
}
