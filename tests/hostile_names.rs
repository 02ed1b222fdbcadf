//! Hostile job, frame and title text. Every SVG (all jobs, one job,
//! empty, diff, CLI `--title`) is well-formed XML 1.0 (parsed by quick-xml, every character
//! checked against XML 1.0's `Char`); distinct jobs stay distinct in text, folded stacks,
//! pprof labels and DHAT frames, through one documented encoding (`job_display_name`).

use std::collections::{BTreeSet, HashSet};

use allocscope::{
    job_display_name, job_name_from_display, CallsiteReport, FlameMetric, FlameOptions, Frame,
    JobReport, Report, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Job names that broke or merged outputs, and more of their classes.
const HOSTILE: &[&str] = &[
    "plain_job",
    "(unscoped)",
    "(no frames)",
    "(other)",
    "semi;colon",
    "semi:colon",
    "",
    " ",
    "two\nlines",
    "two\\nlines",
    "cr\rreturn",
    "nul\0byte",
    "bell\x07",
    "esc\x1b[31mred",
    "del\x7f",
    "c1\u{85}\u{9b}",
    "nonchar\u{fffe}",
    "nonchar\u{ffff}",
    "nonchar\u{fdd0}",
    "plane1\u{1fffe}",
    "replacement\u{fffd}",
    "line\u{2028}sep",
    "a > b",
    "\"quoted\"",
    "<script>alert(1)</script>",
    "amp&amp;",
    "apos'",
    "trailing ",
    "tab\there",
];

fn frame(function: &str) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("src/{}.rs", function.replace('\0', "0")).into()),
        line: Some(1),
    }
}

/// One callsite per hostile job (its top function hostile too), one nested job, and unscoped
/// memory; `scale` varies the figures so that diffs have something to show.
fn fixture(scale: u64) -> Report {
    let mut jobs = Vec::new();
    let mut all = Vec::new();
    for (i, name) in HOSTILE.iter().enumerate() {
        let u = Usage::new(1 + i as u64, (100 + i as u64) * scale);
        let site = {
            let mut site = CallsiteReport::default();
            site.scope = vec![name.to_string()];
            site.frames = vec![frame(&format!("leaf{name}")), frame("main")].into();
            site.allocated = u;
            site.retained = u;
            site.peak_bytes = u.bytes;
            site
        };
        all.push(site.clone());
        jobs.push({
            let mut job = JobReport::default();
            job.name = name.to_string();
            job.runs = 1;
            job.allocated = u;
            job.retained = u;
            job.peak_bytes = u.bytes;
            job.exclusive = {
                let mut exclusive = allocscope::Exclusive::default();
                exclusive.allocated = u;
                exclusive.retained = u;
                exclusive
            };
            job.callsites = vec![site];
            job
        });
    }
    all.push({
        let mut site = CallsiteReport::default();
        site.frames = vec![frame("init\x1b"), frame("main")].into();
        site.allocated = Usage::new(1, 5000);
        site.retained = Usage::new(1, 5000);
        site.peak_bytes = 5000;
        site
    });
    let mut r = Report::from_json(&allocscope::report().to_json()).unwrap();
    r.stack_mode = allocscope::StackMode::Every;
    r.jobs = jobs;
    r.callsites = all;
    r
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Parses `xml` with quick-xml to the end (balanced, matching tags, valid escapes) and checks
/// that every character, raw or unescaped, is an XML 1.0 `Char`.
fn assert_well_formed(xml: &str, what: &str) {
    use quick_xml::events::Event;
    if let Some(c) = xml.chars().find(|&c| !is_xml_char(c)) {
        panic!("{what}: raw character {c:?} is not XML 1.0");
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut depth = 0i32;
    let mut elements = 0;
    loop {
        let ev = reader
            .read_event()
            .unwrap_or_else(|e| panic!("{what}: not well-formed XML: {e}"));
        let check = |s: &str| {
            if let Some(c) = s.chars().find(|&c| !is_xml_char(c)) {
                panic!("{what}: character {c:?} (escaped) is not XML 1.0");
            }
        };
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                elements += 1;
                for a in e.attributes() {
                    let a = a.unwrap_or_else(|err| panic!("{what}: bad attribute: {err}"));
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap_or_else(|err| panic!("{what}: bad attribute value: {err}"));
                    check(&v);
                }
                if !xml[..reader.buffer_position() as usize].ends_with("/>") {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::Text(t) => {
                let s = t
                    .decode()
                    .unwrap_or_else(|err| panic!("{what}: bad text: {err}"));
                check(&s);
            }
            Event::GeneralRef(r) => {
                let name = r.decode().unwrap();
                if let Some(c) = r
                    .resolve_char_ref()
                    .unwrap_or_else(|err| panic!("{what}: bad character reference: {err}"))
                {
                    check(&c.to_string());
                } else {
                    assert!(
                        ["amp", "lt", "gt", "quot", "apos"].contains(&&*name),
                        "{what}: unknown entity &{name};"
                    );
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "{what}: unbalanced");
    assert!(elements > 1, "{what}: no elements");
}

#[test]
fn every_svg_is_well_formed_for_hostile_names_and_titles() {
    let older = fixture(1);
    let newer = fixture(3);
    let mut empty = fixture(1);
    empty.callsites.clear();
    for j in &mut empty.jobs {
        j.callsites.clear();
    }
    let diff = newer.diff(&older);
    let same = newer.diff(&newer);
    for metric in [FlameMetric::RetainedBytes, FlameMetric::AllocatedObjects] {
        let all = FlameOptions::default().metric(metric);
        assert_well_formed(&newer.flamegraph_svg(&all).unwrap(), "all jobs");
        assert_well_formed(
            &newer
                .flamegraph_svg(&all.clone().without_unscoped())
                .unwrap(),
            "all jobs without unscoped",
        );
        assert_well_formed(&empty.flamegraph_svg(&all).unwrap(), "empty");
        assert_well_formed(&diff.flamegraph_svg(&all).unwrap(), "diff");
        assert_well_formed(&same.flamegraph_svg(&all).unwrap(), "empty diff");
        for name in HOSTILE {
            let one = FlameOptions::job(name).metric(metric);
            let what = format!("job {name:?}");
            assert_well_formed(&newer.flamegraph_svg(&one).unwrap(), &what);
            assert_well_formed(&empty.flamegraph_svg(&one).unwrap(), &what);
            assert_well_formed(&diff.flamegraph_svg(&one).unwrap(), &what);
            assert_well_formed(&same.flamegraph_svg(&one).unwrap(), &what);
            // The same name as a title.
            let titled = FlameOptions {
                title: Some(name.to_string()),
                ..all.clone()
            };
            let what = format!("title {name:?}");
            assert_well_formed(&newer.flamegraph_svg(&titled).unwrap(), &what);
            assert_well_formed(&empty.flamegraph_svg(&titled).unwrap(), &what);
            assert_well_formed(&diff.flamegraph_svg(&titled).unwrap(), &what);
            assert_well_formed(&same.flamegraph_svg(&titled).unwrap(), &what);
        }
    }
}

/// The job root of each folded line.
fn roots(folded: &str) -> Vec<String> {
    folded
        .lines()
        .map(|l| l.split(';').next().unwrap().to_string())
        .collect()
}

#[test]
fn distinct_jobs_stay_distinct_in_folded_stacks() {
    let r = fixture(1);
    let folded = r.folded(&FlameOptions::default());
    let all_roots = roots(&folded);
    // One line per job plus unscoped; every root distinct, decoding to its job.
    assert_eq!(all_roots.len(), HOSTILE.len() + 1, "{folded}");
    let set: BTreeSet<&String> = all_roots.iter().collect();
    assert_eq!(set.len(), all_roots.len(), "roots merged: {folded}");
    let mut decoded: HashSet<String> = HashSet::new();
    let mut unscoped = 0;
    for root in &all_roots {
        match job_name_from_display(root) {
            Some(name) => assert!(decoded.insert(name)),
            None => {
                assert_eq!(root, "(unscoped)");
                unscoped += 1;
            }
        }
    }
    assert_eq!(unscoped, 1);
    let expected: HashSet<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
    assert_eq!(decoded, expected);
    // Each line has exactly its frames: no name adds a separator or a line.
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        count.parse::<u64>().unwrap();
        assert_eq!(stack.split(';').count(), 3, "{line:?}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
    // Without unscoped memory, no `(unscoped)` root and the jobs' total only.
    let jobs_only = r.folded(&FlameOptions::default().without_unscoped());
    assert!(!roots(&jobs_only).iter().any(|r| r == "(unscoped)"));
    assert_eq!(jobs_only.lines().count(), HOSTILE.len());
    // A diff folds the same way.
    let diff = fixture(2).diff(&r);
    let droots = roots(&diff.folded(&FlameOptions::default()));
    assert_eq!(droots.iter().collect::<BTreeSet<_>>(), set);
}

#[test]
fn text_rows_stay_one_per_job_with_control_characters_escaped() {
    let r = fixture(1);
    for text in [r.to_text(), fixture(2).diff(&r).to_text()] {
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && (c.is_control() || !is_xml_char(c))),
            "{text}"
        );
        for name in HOSTILE {
            let shown = job_display_name(name);
            let rows = text
                .lines()
                .filter(|l| {
                    l.strip_prefix(&*shown)
                        .is_some_and(|rest| rest.starts_with("  "))
                })
                .count();
            assert_eq!(rows, 1, "job {name:?} shown as {shown}: {text}");
        }
    }
}

#[test]
fn dhat_job_frames_stay_distinct() {
    let r = fixture(1);
    let v: serde_json::Value = serde_json::from_str(&r.to_dhat_json().unwrap()).unwrap();
    let ftbl: Vec<&str> = v["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let jobs: Vec<&str> = ftbl
        .iter()
        .filter_map(|f| f.strip_prefix("[job] "))
        .collect();
    assert_eq!(jobs.len(), HOSTILE.len() + 1, "{ftbl:?}");
    let decoded: HashSet<String> = jobs
        .iter()
        .filter_map(|j| job_name_from_display(j))
        .collect();
    assert_eq!(decoded.len(), HOSTILE.len());
    assert!(jobs.contains(&"(unscoped)"));
}

#[cfg(feature = "pprof")]
#[allow(dead_code)]
#[path = "../src/report/export/proto.rs"]
mod proto;

#[cfg(feature = "pprof")]
#[test]
fn pprof_job_labels_stay_distinct_and_present() {
    use prost::Message;
    use std::io::Read;
    let r = fixture(1);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(r.to_pprof().unwrap().as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let p = proto::Profile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    let mut jobs = Vec::new();
    for sample in &p.sample {
        let job = sample
            .label
            .iter()
            .find(|l| s(l.key) == "job")
            .unwrap_or_else(|| panic!("a sample without a job label: {sample:?}"));
        assert_ne!(job.str, 0, "an empty job label reads as no label");
        jobs.push(s(job.str).to_string());
    }
    assert_eq!(jobs.len(), HOSTILE.len() + 1);
    let set: HashSet<&String> = jobs.iter().collect();
    assert_eq!(set.len(), jobs.len(), "labels merged: {jobs:?}");
    assert_eq!(jobs.iter().filter(|j| *j == "(unscoped)").count(), 1);
    let decoded: HashSet<String> = jobs
        .iter()
        .filter_map(|j| job_name_from_display(j))
        .collect();
    assert_eq!(decoded.len(), HOSTILE.len());
    for l in &jobs {
        assert!(!l.chars().any(char::is_control), "{l:?}");
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_svgs_are_well_formed_for_hostile_titles_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("old.json");
    let newer = dir.path().join("new.json");
    fixture(1).write_json(&older).unwrap();
    fixture(2).write_json(&newer).unwrap();
    let out = dir.path().join("out.svg");
    // Command-line arguments cannot hold NUL; every other hostile name can.
    for name in HOSTILE.iter().filter(|n| !n.contains('\0')) {
        let runs: Vec<Vec<std::ffi::OsString>> = vec![
            vec![
                "flamegraph".into(),
                newer.clone().into(),
                "--title".into(),
                name.into(),
                "-o".into(),
                out.clone().into(),
            ],
            vec![
                "flamegraph".into(),
                newer.clone().into(),
                "--job".into(),
                name.into(),
                "-o".into(),
                out.clone().into(),
            ],
            vec![
                "diff".into(),
                older.clone().into(),
                newer.clone().into(),
                "--job".into(),
                name.into(),
                "--flamegraph".into(),
                out.clone().into(),
            ],
        ];
        for args in runs {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_allocscope"))
                .args(&args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}: {o:?}");
            let svg = std::fs::read_to_string(&out).unwrap();
            assert_well_formed(&svg, &format!("allocscope {args:?}"));
        }
    }
}
