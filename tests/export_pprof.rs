//! pprof export: decoded back with the same prost messages the exporter uses, checked for
//! Go's four heap sample types, a well-formed string table and location/function tables,
//! values that add up to the report, job labels; and (when Go is installed) read by
//! `go tool pprof`.
#![cfg(feature = "pprof")]

mod common;

use common::export_fixture as fixture;

use std::collections::HashSet;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use allocscope::{track_scope, StackMode, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[path = "common/pprof.rs"]
mod pprof;

use pprof::proto::{Profile, Sample};
use pprof::{check_well_formed, decode, label, s, stack};

/// Sums (alloc, inuse) over the samples that `pick` selects.
fn sums(p: &Profile, pick: impl Fn(&Sample) -> bool) -> (Usage, Usage) {
    let mut alloc = Usage::default();
    let mut inuse = Usage::default();
    for sample in p.sample.iter().filter(|x| pick(x)) {
        let v: Vec<u64> = sample.value.iter().map(|&v| v as u64).collect();
        alloc += Usage::new(v[0], v[1]);
        inuse += Usage::new(v[2], v[3]);
    }
    (alloc, inuse)
}

// One allocation per box is the point: they are the retained objects counted below.
#[allow(clippy::vec_box)]
#[inline(never)]
fn keep_boxes(n: usize) -> Vec<Box<[u64; 8]>> {
    (0..n).map(|i| black_box(Box::new([i as u64; 8]))).collect()
}

#[test]
fn real_workload_decodes_with_jobs_as_labels_and_exact_sums() {
    common::every();
    let kept = track_scope("ppx_import", || {
        let temp: Vec<String> = (0..40).map(|i| black_box(i.to_string())).collect();
        drop(temp);
        let inner = track_scope("ppx_parse", || keep_boxes(6));
        (keep_boxes(4), inner)
    });
    track_scope("ppx_mail", || drop(black_box(vec![0u8; 1000])));
    let report = allocscope::report();
    let p = decode(&report.to_pprof().expect("export"));
    drop(kept);
    check_well_formed(&p);

    // All callsites of the report, each once.
    assert_eq!(p.sample.len(), report.callsites.len());
    let mut alloc = Usage::default();
    let mut retained = Usage::default();
    for c in &report.callsites {
        alloc += c.allocated;
        retained += c.retained;
    }
    assert_eq!(sums(&p, |_| true), (alloc, retained));

    // Per job: the samples whose scope label contains the job add up to its inclusive
    // figures (exact with a stack for every allocation).
    for name in ["ppx_import", "ppx_parse", "ppx_mail"] {
        let job = report.job(name).expect("job in report");
        let got = sums(&p, |x| {
            label(&p, x, "scope").is_some_and(|sc| sc.split(" > ").any(|j| j == name))
        });
        assert_eq!(got, (job.allocated, job.retained), "{name}");
        assert!(!got.0.is_zero());
    }
    // The job label is the innermost job; the scope label the whole nesting.
    let parse: Vec<&Sample> = p
        .sample
        .iter()
        .filter(|x| label(&p, x, "job") == Some("ppx_parse"))
        .collect();
    assert!(!parse.is_empty());
    for x in &parse {
        assert_eq!(label(&p, x, "scope"), Some("ppx_import > ppx_parse"));
    }
    let (_, inuse) = sums(&p, |x| label(&p, x, "job") == Some("ppx_parse"));
    assert_eq!(
        inuse,
        Usage::new(7, 6 * 64 + 6 * 8),
        "6 boxes and their Vec"
    );
    // Stacks are real: the boxes were allocated by keep_boxes in this file, with a line.
    assert!(parse.iter().any(|x| stack(&p, x)
        .iter()
        .any(|(f, file, line)| f.contains("keep_boxes")
            && file.ends_with("export_pprof.rs")
            && *line > 0)));
}

#[test]
fn fixture_maps_callsites_to_samples() {
    let report = fixture();
    let p = decode(&report.to_pprof().unwrap());
    check_well_formed(&p);
    assert_eq!(p.sample.len(), report.callsites.len());
    for (x, c) in p.sample.iter().zip(&report.callsites) {
        let expected = [
            c.allocated.objects,
            c.allocated.bytes,
            c.retained.objects,
            c.retained.bytes,
        ];
        assert_eq!(x.value, expected.map(|v| v as i64));
        let frames: Vec<(String, String, i64)> = c
            .frames
            .iter()
            .map(|f| {
                (
                    f.function.to_string(),
                    f.file.as_deref().unwrap().to_string(),
                    i64::from(f.line.unwrap()),
                )
            })
            .collect();
        assert_eq!(stack(&p, x), frames, "leaf first");
        let job = c.scope.last().map_or("(unscoped)", String::as_str);
        assert_eq!(label(&p, x, "job"), Some(job));
        let scope = if c.scope.is_empty() {
            "(unscoped)".to_string()
        } else {
            c.scope.join(" > ")
        };
        assert_eq!(label(&p, x, "scope"), Some(scope.as_str()));
    }
    // The fixture's 12 frames are 8 distinct locations in 5 distinct functions.
    let distinct_frames: HashSet<_> = report.callsites.iter().flat_map(|c| &c.frames).collect();
    assert_eq!(p.location.len(), distinct_frames.len());
    let distinct_functions: HashSet<_> = distinct_frames
        .iter()
        .map(|f| (&f.function, &f.file))
        .collect();
    assert_eq!(p.function.len(), distinct_functions.len());
    assert_eq!(p.time_nanos as u64, report.timestamp_unix_ms * 1_000_000);
    assert_eq!(p.period, 1, "every allocation has a stack");
}

#[test]
fn sampled_reports_say_so() {
    let mut report = fixture();
    report.stack_mode = StackMode::Sampled { mean_bytes: 4096 };
    report.callsites[0].estimated = true;
    let p = decode(&report.to_pprof().unwrap());
    check_well_formed(&p);
    assert_eq!(p.period, 4096);
    let comments: Vec<&str> = p.comment.iter().map(|&c| s(&p, c)).collect();
    assert!(
        comments.iter().any(|c| c.contains("estimates")),
        "{comments:?}"
    );
}

#[test]
fn stacks_off_gives_one_sample_per_job() {
    let mut report = fixture();
    report.stack_mode = StackMode::Off;
    report.callsites.clear();
    for j in &mut report.jobs {
        j.callsites.clear();
    }
    let p = decode(&report.to_pprof().unwrap());
    check_well_formed(&p);
    assert_eq!(p.sample.len(), report.jobs.len() + 1);
    for job in &report.jobs {
        let got = sums(&p, |x| label(&p, x, "job") == Some(job.name.as_str()));
        assert_eq!(got, (job.exclusive.allocated, job.exclusive.retained));
        let x = p
            .sample
            .iter()
            .find(|x| label(&p, x, "job") == Some(job.name.as_str()))
            .unwrap();
        assert_eq!(stack(&p, x)[0].0, format!("[job] {}", job.name));
    }
    let unscoped = sums(&p, |x| label(&p, x, "job") == Some("(unscoped)"));
    assert_eq!(
        unscoped,
        (
            report.totals.unscoped_allocated,
            report.totals.unscoped_live
        )
    );
}

#[test]
fn empty_report_is_a_valid_profile() {
    let mut report = fixture();
    report.callsites.clear();
    report.jobs.clear();
    report.totals = Default::default();
    let p = decode(&report.to_pprof().unwrap());
    check_well_formed(&p);
    assert!(p.sample.is_empty());
}

/// `go tool pprof` reads the export: the top table by retained bytes and the job tags.
#[test]
fn go_tool_pprof_reads_the_export() {
    if !common::require_tool("go", &["version"], "golang-go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pprof = |file: &Path, args: &[&str]| -> String {
        let out = Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(file)
            .env("HOME", dir.path()) // pprof may write ~/pprof; keep it in the scratch dir
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .expect("run go tool pprof");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "go tool pprof {args:?} failed: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = dir.path().join("fixture.pb.gz");
    std::fs::write(&file, fixture().to_pprof().unwrap()).unwrap();
    let top = pprof(&file, &["-top", "-sample_index=inuse_space"]);
    // Flat retained bytes: load_rows holds 1280 (import_users) + 700 (send_mail).
    let line = top
        .lines()
        .find(|l| l.ends_with("app::load_rows"))
        .unwrap_or_else(|| panic!("load_rows missing from:\n{top}"));
    assert!(line.trim_start().starts_with("1980B"), "{line}");
    assert!(top.contains("of 2012B total"), "{top}");
    let top = pprof(&file, &["-top", "-sample_index=alloc_objects"]);
    assert!(top.contains("of 159 total"), "{top}");
    let tags = pprof(&file, &["-tags", "-sample_index=alloc_space"]);
    for job in ["import_users", "parse", "send_mail", "(unscoped)"] {
        assert!(tags.contains(job), "{job} in {tags}");
    }
    assert!(tags.contains("import_users > parse"), "{tags}");

    // A real report of this process: real (long, generic) symbol names and many stacks.
    common::every();
    let kept = track_scope("ppx_go", || keep_boxes(3));
    let report = allocscope::report();
    drop(kept);
    let file = dir.path().join("real.pb.gz");
    std::fs::write(&file, report.to_pprof().unwrap()).unwrap();
    let top = pprof(
        &file,
        &[
            "-top",
            "-sample_index=inuse_objects",
            "-tagfocus=job=ppx_go",
        ],
    );
    // The job filter keeps exactly the job's retained objects (its 3 boxes and their Vec).
    let job = report.job("ppx_go").unwrap();
    assert_eq!(job.retained.objects, 4);
    assert!(
        top.contains(&format!(
            "Showing nodes accounting for {}, ",
            job.retained.objects
        )),
        "{top}"
    );
    // Every function of the job's stacks is shown under its full name: pprof must not
    // shorten Rust names like `<T as Trait>::f` as it does undemangled C++ names.
    let mut functions = 0;
    for c in job.callsites.iter().filter(|c| c.retained.objects > 0) {
        for f in &c.frames {
            functions += 1;
            assert!(
                top.lines()
                    .any(|l| l.ends_with(&format!("  {}", f.function))),
                "{:?} not shown by its full name in:\n{top}",
                f.function
            );
        }
    }
    assert!(functions > 0);
}
