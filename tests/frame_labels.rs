//! Frames a person can read: generic arguments stripped from labels (full names in tooltips)
//! and std/core/alloc frames between two user frames folded, in folded stacks, flamegraph SVGs
//! and text. Golden files in `tests/data/labels/` (`ALLOCSCOPE_BLESS=1` rewrites them).

mod common;

use allocscope::{CallsiteReport, FlameOptions, Frame, Report, Usage};

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some(file.into()),
        line: Some(line),
    }
}

/// The worker example's shape: the job's closure called through iterator adapters, with an
/// allocation inside `Vec` growth (innermost first).
fn fixture() -> Report {
    let mut report = common::export_fixture();
    let lib = "/rustc/0123/library";
    let frames = vec![
        frame("alloc::raw_vec::RawVec<T,A>::grow_one", &format!("{lib}/alloc/src/raw_vec.rs"), 567),
        frame("alloc::vec::Vec<T,A>::push", &format!("{lib}/alloc/src/vec/mod.rs"), 2417),
        frame("worker::render_report::{{closure}}", "examples/worker.rs", 88),
        frame(
            "core::iter::adapters::map::map_fold::{{closure}}",
            &format!("{lib}/core/src/iter/adapters/map.rs"),
            89,
        ),
        frame(
            "<core::iter::adapters::map::Map<core::ops::range::Range<i32>,worker::render_report::{closure_env#0}> as core::iter::traits::iterator::Iterator>::fold",
            &format!("{lib}/core/src/iter/adapters/map.rs"),
            129,
        ),
        frame(
            "core::iter::traits::iterator::Iterator::collect::<alloc::vec::Vec<alloc::string::String>>",
            &format!("{lib}/core/src/iter/traits/iterator.rs"),
            2015,
        ),
        frame("worker::render_report", "examples/worker.rs", 90),
        frame("worker::main", "examples/worker.rs", 120),
        frame("std::rt::lang_start::{{closure}}", &format!("{lib}/std/src/rt.rs"), 195),
    ];
    let site = {
        let mut site = CallsiteReport::default();
        site.scope = vec!["render".to_string()];
        site.frames = frames.into();
        site.allocated = Usage::new(10, 40_000);
        site.retained = Usage::new(2, 8_000);
        site.peak_bytes = 8_000;
        site
    };
    report.callsites = vec![site.clone()];
    report.jobs.truncate(1);
    report.jobs[0].name = "render".to_string();
    report.jobs[0].retained = Usage::new(2, 8_000);
    report.jobs[0].allocated = Usage::new(10, 40_000);
    report.jobs[0].callsites = vec![site];
    report
}

#[test]
fn std_frames_between_user_frames_fold_by_default() {
    let r = fixture();
    let folded = r.folded(&FlameOptions::default());
    common::golden("labels", "folded_default.txt", &folded);
    assert!(!folded.contains("map_fold"), "{folded}");
    assert!(
        folded.contains("grow_one"),
        "library frames at the leaf stay"
    );
    let kept = r.folded(&FlameOptions {
        keep_std: true,
        ..FlameOptions::default()
    });
    common::golden("labels", "folded_keep_std.txt", &kept);
    assert!(kept.contains("map_fold"));
}

/// (title, text) of each frame group of an inferno SVG, as written (XML-escaped).
fn frames_of(svg: &str) -> Vec<(String, String)> {
    let between = |s: &str, a: &str, b: &str| -> Option<String> {
        let i = s.find(a)? + a.len();
        let j = s[i..].find(b)? + i;
        Some(s[i..j].to_string())
    };
    svg.split("<g")
        .skip(1)
        .filter_map(|g| {
            let title = between(g, "<title>", "</title>")?;
            let text_tag = &g[g.find("<text")?..];
            let text = between(text_tag, ">", "</text>")?;
            Some((title, text))
        })
        .collect()
}

#[test]
fn flamegraph_labels_are_short_titles_full() {
    let r = fixture();
    let opts = FlameOptions {
        keep_std: true,
        ..FlameOptions::default()
    };
    let svg = r.flamegraph_svg(&opts).unwrap();
    common::golden("labels", "flamegraph_short.svg", &svg);
    let frames = frames_of(&svg);
    let (title, text) = frames
        .iter()
        .find(|(t, _)| t.starts_with("&lt;core::iter::adapters::map::Map&lt;"))
        .expect("the Map frame");
    assert!(
        title.contains("{closure_env#0}&gt;"),
        "full name in the tooltip: {title}"
    );
    assert!(
        "&lt;core::iter::adapters::map::Map as core::iter::traits::iterator::Iterator&gt;::fold"
            .ends_with(text.trim_start_matches('.')),
        "short label, cut on the left: {text:?}"
    );
    for (title, text) in &frames {
        assert!(
            !text.contains("Range&lt;") && !text.contains("&lt;T,A&gt;"),
            "no generic arguments in labels: {text} ({title})"
        );
    }
    // Full names on request.
    let full = r
        .flamegraph_svg(&FlameOptions {
            full_names: true,
            keep_std: true,
            ..FlameOptions::default()
        })
        .unwrap();
    assert!(!full.contains("data-label"));
    // Inferno's script is not edited: both renderings carry the same one, which cuts names on
    // the left when it relabels frames on zoom.
    let script = |svg: &str| {
        let start = svg.find("<script").expect("a script");
        svg[start..svg[start..].find("</script>").unwrap() + start].to_string()
    };
    assert_eq!(script(&svg), script(&full));
    assert!(script(&svg).contains("truncate_text_right = false"));
    assert!(!script(&svg).contains("data-label"));
}

#[test]
fn text_names_callsites_by_short_name() {
    let text = fixture().to_text();
    common::golden("labels", "report.txt", &text);
    assert!(text.contains("alloc::raw_vec::RawVec::grow_one"), "{text}");
    assert!(!text.contains("RawVec<T,A>"), "{text}");
}
