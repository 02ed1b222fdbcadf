//! The text report says why a job that holds memory lists no callsite
//! (and how to get callsites); flamegraphs can leave unscoped memory out (`--no-unscoped`);
//! callsites can be listed by allocated, retained or peak bytes (`--callsites-by`).

mod common;

use std::hint::black_box;
use std::sync::Mutex;

use allocscope::{
    track_scope, CallsiteOrder, FlameOptions, Report, StackMode, TextOptions, TrackingAllocator,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// The stack mode is process-wide: tests that set it run one at a time.
static MODE: Mutex<()> = Mutex::new(());

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn small_leak() {
    for _ in 0..82 {
        KEPT.lock().unwrap().push(black_box(vec![1u8; 1024]));
    }
}

#[inline(never)]
fn big_temporary() -> usize {
    let v = black_box(vec![7u8; 4 << 20]);
    v.len()
}

#[inline(never)]
fn small_keep() {
    KEPT.lock().unwrap().push(black_box(vec![2u8; 10_000]));
}

#[inline(never)]
fn churn() -> usize {
    (0..50).map(|i| black_box(vec![0u8; 1000 + i]).len()).sum()
}

fn text(r: &Report, job: &str, by: CallsiteOrder) -> String {
    r.to_text_with(&TextOptions {
        job: Some(job.to_string()),
        callsites_by: by,
        ..TextOptions::default()
    })
}

#[test]
fn a_job_that_retains_memory_without_sampled_callsites_says_how_to_get_them() {
    let _g = MODE.lock().unwrap_or_else(|e| e.into_inner());
    // A mean of 1 TiB between samples: an 82 KiB leak is (almost surely) never sampled.
    allocscope::set_stack_mode(StackMode::Sampled {
        mean_bytes: 1 << 40,
    });
    track_scope("quiet_leak", small_leak);
    let r = allocscope::report();
    allocscope::set_stack_mode(StackMode::default());
    if !allocscope::is_installed() {
        return;
    }
    let job = r.job("quiet_leak").unwrap();
    // 82 KiB, and the growth of the Vec that keeps them.
    assert!(job.retained.bytes >= 82 * 1024, "{job:?}");
    assert!(job.callsites.is_empty(), "{:?}", job.callsites);
    let t = text(&r, "quiet_leak", CallsiteOrder::Retained);
    let says = format!(
        "quiet_leak retains {} but no callsite of it was sampled",
        allocscope::human_bytes(job.retained.bytes)
    );
    assert!(t.contains(&says), "{t}");
    assert!(t.contains("ALLOCSCOPE_STACKS=every"), "{t}");
    // A smaller mean that would sample it: at most an eighth of the leak.
    assert!(t.contains("ALLOCSCOPE_STACKS=8k"), "{t}");
    // Stacks off: one note for all jobs.
    let mut off = r.clone();
    off.stack_mode = StackMode::Off;
    let t = off.to_text();
    assert_eq!(t.matches("stacks are off").count(), 1, "{t}");
}

#[test]
fn callsites_by_allocated_retained_and_peak() {
    let _g = MODE.lock().unwrap_or_else(|e| e.into_inner());
    common::every();
    track_scope("spiky", || {
        big_temporary();
        small_keep();
    });
    track_scope("churner", churn);
    let r = allocscope::report();
    allocscope::set_stack_mode(StackMode::default());
    if !allocscope::is_installed() {
        return;
    }
    // Peak: the 4 MiB temporary is the job's peak callsite, though freed.
    let spiky = r.job("spiky").unwrap();
    let peak_site = spiky.callsites.iter().max_by_key(|c| c.peak_bytes).unwrap();
    assert_eq!(peak_site.peak_bytes, 4 << 20);
    assert_eq!(peak_site.retained.bytes, 0);
    assert!(
        peak_site
            .frames
            .iter()
            .any(|f| f.function.contains("big_temporary")),
        "{peak_site:?}"
    );
    let by_retained = text(&r, "spiky", CallsiteOrder::Retained);
    let by_peak = text(&r, "spiky", CallsiteOrder::Peak);
    let first_site = |t: &str| {
        t.lines()
            .skip_while(|l| !l.contains("CALLSITE"))
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert!(by_peak.contains("top callsites by peak bytes"), "{by_peak}");
    assert!(first_site(&by_peak).contains("4.0 MiB"), "{by_peak}");
    assert!(first_site(&by_peak).contains("big_temporary"), "{by_peak}");
    assert!(
        first_site(&by_retained).contains("small_keep"),
        "{by_retained}"
    );
    assert!(!by_retained.contains("big_temporary"), "{by_retained}");

    // A job that retains nothing: by retained, no callsites (and no hint: it holds nothing);
    // by allocated, where it allocates.
    let churner = r.job("churner").unwrap();
    assert_eq!(churner.retained.bytes, 0);
    let t = text(&r, "churner", CallsiteOrder::Retained);
    assert!(!t.contains("CALLSITE") && !t.contains("note:"), "{t}");
    let t = text(&r, "churner", CallsiteOrder::Allocated);
    assert!(t.contains("top callsites by allocated bytes"), "{t}");
    assert!(first_site(&t).contains("churn"), "{t}");
    assert!(first_site(&t).contains("100.0%"), "{t}");

    // DHAT's "Max" is the callsite's peak.
    let v: serde_json::Value = serde_json::from_str(&r.to_dhat_json().unwrap()).unwrap();
    let ftbl = v["ftbl"].as_array().unwrap();
    let mb = v["pps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pp| {
            pp["fs"].as_array().unwrap().iter().any(|f| {
                ftbl[f.as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .contains("big_temporary")
            })
        })
        .map(|pp| pp["mb"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(mb, 4 << 20);
    // The JSON keeps peaks.
    let back = Report::from_json(&r.to_json()).unwrap();
    assert_eq!(back.job("spiky").unwrap().callsites, spiky.callsites);
    assert_eq!(CallsiteOrder::parse("peak").unwrap(), CallsiteOrder::Peak);
    assert!(CallsiteOrder::parse("largest").is_err());
}

#[test]
fn flamegraphs_can_leave_unscoped_memory_out() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cli/worker_new.json"
    ))
    .unwrap();
    let r = Report::from_json(&text).unwrap();
    let all = r.folded(&FlameOptions::default());
    assert!(all.lines().any(|l| l.starts_with("(unscoped);")), "{all}");
    let opts = FlameOptions::default().without_unscoped();
    assert!(!opts.include_unscoped);
    let jobs = r.folded(&opts);
    assert!(!jobs.lines().any(|l| l.starts_with("(unscoped)")), "{jobs}");
    assert_eq!(
        jobs.lines().count(),
        all.lines()
            .filter(|l| !l.starts_with("(unscoped);"))
            .count()
    );
    let svg = r.flamegraph_svg(&opts).unwrap();
    assert!(!svg.contains("(unscoped)"));
    assert!(svg.contains("unscoped left out"));
    // Only unscoped memory: the jobs-only graph is empty and says so.
    let mut only_unscoped = r.clone();
    only_unscoped.callsites.retain(|c| c.scope.is_empty());
    let svg = only_unscoped.flamegraph_svg(&opts).unwrap();
    assert!(svg.contains("Nothing to show: no retained bytes recorded in any job"));
    // Diffs too.
    let d = r.diff(&only_unscoped);
    assert!(!d.folded(&opts).contains("(unscoped)"));
    assert!(d.folded(&FlameOptions::default()).contains("(unscoped)"));
}

#[cfg(feature = "cli")]
#[test]
fn cli_no_unscoped_and_callsites_by() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_allocscope"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let new = "tests/data/cli/worker_new.json";
    let folded = run(&["export", new, "--format", "folded", "-o", "-"]);
    assert!(folded.contains("(unscoped)"));
    let folded = run(&[
        "export",
        new,
        "--format",
        "folded",
        "--no-unscoped",
        "-o",
        "-",
    ]);
    assert!(!folded.contains("(unscoped)") && !folded.is_empty());
    let svg = run(&["flamegraph", new, "--no-unscoped", "-o", "-"]);
    assert!(!svg.contains("(unscoped)") && svg.contains("<svg"));
    let t = run(&["show", new, "--callsites-by", "allocated"]);
    assert!(t.contains("top callsites by allocated bytes"), "{t}");
    let t = run(&["show", new, "--callsites-by", "peak"]);
    assert!(t.contains("top callsites by peak bytes"), "{t}");
    let help = run(&["show", "--help"]);
    assert!(help.contains("FIFO"), "{help}");
    assert!(help.contains("--callsites-by"), "{help}");
}
