//! Comparing two reports of a worker loop: the job that leaks comes first, with exact growth,
//! its growing callsite on top, and a differential flamegraph of it.

mod common;

use std::hint::black_box;
use std::sync::Mutex;

use allocscope::{
    report, track_scope, Change, FlameMetric, FlameOptions, ReportDiff, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// What the leaking job keeps forever.
/// (Boxes on purpose: each is one counted block of exactly 1000 bytes.)
#[allow(clippy::vec_box)]
static CACHE: Mutex<Vec<Box<[u8; 1000]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn import_one(i: usize) {
    let rows: Vec<String> = (0..50).map(|n| format!("row {n} of {i}")).collect(); // temporary
    black_box(&rows);
    CACHE
        .lock()
        .unwrap()
        .push(black_box(Box::new([i as u8; 1000]))); // kept: the leak
}

#[inline(never)]
fn render_one(i: usize) -> usize {
    let page = black_box(vec![i as u8; 64 * 1024]); // temporary
    page.len()
}

#[inline(never)]
fn mail_one(i: usize) -> usize {
    black_box(format!("mail {i}")).len()
}

fn worker_round(i: usize) {
    track_scope("dw_import", || import_one(i));
    track_scope("dw_render", || render_one(i));
    track_scope("dw_mail", || mail_one(i));
}

#[test]
fn the_leaking_job_is_on_top() {
    common::every();
    CACHE.lock().unwrap().reserve(100); // the cache's own buffer is not the leak
    for i in 0..5 {
        worker_round(i);
    }
    let older = report();
    for i in 5..12 {
        worker_round(i);
    }
    let newer = report();
    let diff = newer.diff(&older);

    // Other tests of this binary have their own jobs: look at this worker's.
    let mine: Vec<_> = diff
        .jobs
        .iter()
        .filter(|j| j.name.starts_with("dw_"))
        .collect();
    assert_eq!(mine[0].name, "dw_import", "{}", diff.to_text());
    let import = mine[0];
    assert_eq!(
        import.retained_change,
        Change {
            objects: 7,
            bytes: 7000
        }
    );
    assert_eq!(import.older_retained, Usage::new(5, 5000));
    assert_eq!(import.newer_retained, Usage::new(12, 12_000));
    assert_eq!((import.older_runs, import.newer_runs), (5, 12));
    assert!(
        import.allocated_change.bytes > 7000,
        "temporaries count in allocated"
    );
    for j in &mine[1..] {
        assert_eq!(
            j.retained_change,
            Change::default(),
            "{} does not grow",
            j.name
        );
        assert!(j.allocated_change.bytes > 0);
    }

    // The growing callsite is the push in import_one.
    let top = &import.callsites[0];
    assert_eq!(
        top.retained_change,
        Change {
            objects: 7,
            bytes: 7000
        }
    );
    assert!(
        top.frames.iter().any(|f| f.function.contains("import_one")),
        "{:?}",
        top.frames
    );
    assert_eq!(top.scope, ["dw_import"]);

    // The text puts the leak first and names the function.
    let text = diff.to_text_with(&allocscope::DiffTextOptions {
        job: Some("dw_import".into()),
        ..Default::default()
    });
    let row = text.lines().find(|l| l.starts_with("dw_import")).unwrap();
    assert!(row.contains("+6.8 KiB") && row.contains("+7"), "{text}");
    assert!(text.contains("import_one"), "{text}");

    // Differential folded stacks: the leak's stack goes from 5000 to 12000 bytes.
    let folded = diff.folded(&FlameOptions::job("dw_import"));
    let leak = folded
        .lines()
        .find(|l| l.contains("import_one") && l.ends_with(" 5000 12000"))
        .unwrap_or_else(|| panic!("no 5000 -> 12000 line in\n{folded}"));
    assert!(leak.starts_with("dw_import;"), "{leak}");
    let objects = diff.folded(&FlameOptions::job("dw_import").metric(FlameMetric::RetainedObjects));
    assert!(objects.lines().any(|l| l.ends_with(" 5 12")), "{objects}");

    let svg = diff
        .flamegraph_svg(&FlameOptions::job("dw_import"))
        .unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("dw_import"));
    assert!(svg.contains("import_one"));

    // Serde round trip.
    let back: ReportDiff = serde_json::from_str(&diff.to_json()).unwrap();
    assert_eq!(back, diff);
}

#[test]
fn jobs_on_one_side_only() {
    let mut older =
        allocscope::Report::from_json(include_str!("data/cli/worker_old.json")).unwrap();
    let newer = allocscope::Report::from_json(include_str!("data/cli/worker_new.json")).unwrap();
    older.jobs.retain(|j| j.name != "send_email");
    let mut gone = newer.clone();
    gone.jobs.retain(|j| j.name != "import_users");
    let d = newer.diff(&older);
    let mail = d.jobs.iter().find(|j| j.name == "send_email").unwrap();
    assert!(!mail.in_older && mail.in_newer);
    assert!(d
        .to_text()
        .lines()
        .any(|l| l.starts_with("send_email") && l.ends_with("(new)")));
    let d = gone.diff(&older);
    let import = d.jobs.last().unwrap();
    assert_eq!(import.name, "import_users", "shrinking jobs come last");
    assert!(import.in_older && !import.in_newer);
    assert_eq!(
        import.retained_change,
        Change {
            objects: -5000,
            bytes: -1_280_000
        }
    );
    // A report diffed with itself changes nothing.
    let same = newer.diff(&newer);
    assert!(same
        .jobs
        .iter()
        .all(|j| j.retained_change == Change::default()));
    assert!(same.to_text().contains("(no job changed)"));
}
