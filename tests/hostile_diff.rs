//! Every figure difference of a diff (runs, objects, bytes) is exact for any
//! `u64` inputs, in text, JSON, folded stacks and both SVGs; sums of figures too.

use allocscope::{
    CallsiteReport, FlameMetric, FlameOptions, Frame, JobReport, Report, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const MAX: u64 = u64::MAX;

fn site(
    scope: &str,
    function: &str,
    line: u32,
    allocated: Usage,
    retained: Usage,
) -> CallsiteReport {
    let mut site = CallsiteReport::default();
    site.scope = vec![scope.to_string()];
    site.frames = vec![Frame {
        function: function.into(),
        file: Some("src/big.rs".into()),
        line: Some(line),
    }]
    .into();
    site.allocated = allocated;
    site.retained = retained;
    site.peak_bytes = retained.bytes;
    site
}

fn report(runs: u64, figure: u64, ts: u64) -> Report {
    let u = Usage::new(figure, figure);
    // Two callsites (lines 7 and 8) that fold into the same stack line: their sum exceeds
    // u64.
    let sites = vec![
        site("big", "big::alloc", 7, u, u),
        site("big", "big::alloc", 8, u, u),
    ];
    let job = {
        let mut job = JobReport::default();
        job.name = "big".to_string();
        job.runs = runs;
        job.allocated = u;
        job.retained = u;
        job.peak_bytes = figure;
        job.callsites = sites.clone();
        job
    };
    let mut r = Report::from_json(&allocscope::report().to_json()).unwrap();
    r.timestamp_unix_ms = ts;
    r.jobs = vec![job];
    r.callsites = sites;
    r.totals.live = u;
    r
}

/// A number as the text renderings group it.
fn grouped(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn diff_figures_are_exact_for_extreme_u64_inputs() {
    let older = report(1, 0, 1_000);
    let newer = report(MAX, MAX, 2_000);
    let up = newer.diff(&older);
    let j = &up.jobs[0];
    assert_eq!(j.runs_change, i128::from(MAX) - 1);
    assert_eq!(j.retained_change.bytes, i128::from(MAX));
    assert_eq!(j.retained_change.objects, i128::from(MAX));
    assert_eq!(j.allocated_change.bytes, i128::from(MAX));
    assert_eq!(up.live_change.bytes, i128::from(MAX));

    let text = up.to_text();
    assert!(
        text.contains(&format!("+{}", grouped(u128::from(MAX) - 1))),
        "runs change: {text}"
    );
    assert!(
        text.contains(&format!("+{}", grouped(u128::from(MAX)))),
        "objects change: {text}"
    );
    assert!(text.contains("+16.0 EiB"), "{text}");
    assert!(!text.contains("-2 "), "{text}");

    // The reverse: every change negative, none wrapped or clamped.
    let down = older.diff(&newer);
    let j = &down.jobs[0];
    assert_eq!(j.runs_change, 1 - i128::from(MAX));
    assert_eq!(j.retained_change.objects, -i128::from(MAX));
    let text = down.to_text();
    assert!(
        text.contains(&format!("-{}", grouped(u128::from(MAX) - 1))),
        "{text}"
    );
    assert!(text.contains("-16.0 EiB"), "{text}");

    // JSON keeps every figure exactly, and reads back.
    for d in [&up, &down] {
        let json = d.to_json();
        let back: allocscope::ReportDiff = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, d);
    }
    assert!(up
        .to_json()
        .contains(&format!("\"runs_change\": {}", MAX - 1)));
}

#[test]
fn folded_sums_and_svgs_survive_figures_beyond_u64() {
    let older = report(1, 0, 1_000);
    let newer = report(MAX, MAX, 2_000);
    let twice = 2 * u128::from(MAX);
    // Report: two u64::MAX callsites on one stack line.
    for metric in [
        FlameMetric::RetainedBytes,
        FlameMetric::RetainedObjects,
        FlameMetric::AllocatedBytes,
        FlameMetric::AllocatedObjects,
    ] {
        let opts = FlameOptions::default().metric(metric);
        let folded = newer.folded(&opts);
        assert_eq!(folded, format!("big;big::alloc {twice}\n"));
        let svg = newer.flamegraph_svg(&opts).expect("renders");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("labels are rounded"));
    }
    // Diff: older 0, newer 2 × u64::MAX, and back.
    let up = newer.diff(&older);
    assert_eq!(
        up.folded(&FlameOptions::default()),
        format!("big;big::alloc 0 {twice}\n")
    );
    let down = older.diff(&newer);
    assert_eq!(
        down.folded(&FlameOptions::default()),
        format!("big;big::alloc {twice} 0\n")
    );
    for d in [&up, &down] {
        let svg = d.flamegraph_svg(&FlameOptions::default()).expect("renders");
        assert!(svg.contains("<svg"));
    }
    // Ordinary figures are not scaled.
    let small = report(3, 1000, 5).diff(&report(1, 10, 1));
    let svg = small.flamegraph_svg(&FlameOptions::default()).unwrap();
    assert!(!svg.contains("labels are rounded"));
    assert!(svg.contains("2,000 bytes"), "{svg}");
}
