//! Callsites in `StackMode::Every`: exact per-stack figures, trimmed to the user's code.

mod common;

use common::every;
use std::hint::black_box;

use allocscope::{report, track_scope, TrackingAllocator, Unwinder, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();
// Individual boxes are the point: each is one allocation at this callsite.
#[allow(clippy::vec_box)]
#[inline(never)]
fn keep_some(n: usize) -> Vec<Box<[u8; 24]>> {
    (0..n).map(|_| black_box(Box::new([7u8; 24]))).collect()
}

#[inline(never)]
fn drop_all(n: usize) {
    for _ in 0..n {
        black_box(Box::new([1u8; 40]));
    }
}

fn sites_named<'a>(
    job: &'a allocscope::JobReport,
    name: &'a str,
) -> impl Iterator<Item = &'a allocscope::CallsiteReport> + 'a {
    job.callsites
        .iter()
        .filter(move |c| c.top_function().contains(name))
}

#[test]
fn retained_objects_are_attributed_to_the_keeping_function() {
    every();
    let kept = track_scope("callsite_job", || {
        drop_all(500);
        keep_some(1000)
    });
    let r = report();
    let job = r.job("callsite_job").unwrap();
    // Two callsites in keep_some: the boxes (in its closure) and the vector collecting them.
    let keep: Vec<_> = sites_named(job, "keep_some").collect();
    assert_eq!(keep.len(), 2, "{:#?}", job.callsites);
    let boxes: Vec<_> = keep.iter().filter(|c| c.retained.objects == 1000).collect();
    assert_eq!(
        boxes.len(),
        1,
        "one callsite holds exactly the 1000 boxes: {keep:#?}"
    );
    assert_eq!(boxes[0].retained, Usage::new(1000, 24_000));
    assert_eq!(boxes[0].allocated, Usage::new(1000, 24_000));
    assert!(!boxes[0].estimated, "Every mode is exact");
    let vec_site: Vec<_> = keep.iter().filter(|c| c.retained.objects == 1).collect();
    assert_eq!(vec_site[0].retained, Usage::new(1, 8_000));
    let dropped: Vec<_> = sites_named(job, "drop_all").collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].retained, Usage::new(0, 0));
    assert_eq!(dropped[0].allocated, Usage::new(500, 20_000));
    // The top callsite by retained bytes is keep_some's.
    assert!(job.callsites[0].top_function().contains("keep_some"));
    assert_eq!(job.callsites[0].scope, vec!["callsite_job".to_string()]);
    // A free on another thread, after the scope ended, brings it to zero.
    std::thread::spawn(move || drop(kept)).join().unwrap();
    let r = report();
    let job = r.job("callsite_job").unwrap();
    for c in sites_named(job, "keep_some") {
        assert_eq!(c.retained, Usage::new(0, 0));
    }
    assert_eq!(job.retained.bytes, 0);
}

#[test]
fn dwarf_unwinder_finds_the_same_function() {
    every();
    // DWARF and frame pointers give the same symbolized first frame.
    let kept = track_scope("callsite_dwarf", || {
        allocscope::set_unwinder(Unwinder::Dwarf);
        let k = keep_some(10);
        allocscope::set_unwinder(Unwinder::Auto);
        k
    });
    let r = report();
    let job = r.job("callsite_dwarf").unwrap();
    let boxes: Vec<_> = sites_named(job, "keep_some")
        .filter(|c| c.retained.objects == 10)
        .collect();
    assert_eq!(boxes.len(), 1, "{:#?}", job.callsites);
    assert_eq!(boxes[0].retained, Usage::new(10, 240));
    drop(kept);
}

#[test]
fn frames_are_trimmed_and_keep_file_and_line() {
    every();
    let kept = track_scope("callsite_frames", || keep_some(3));
    let r = report();
    let job = r.job("callsite_frames").unwrap();
    let site = sites_named(job, "keep_some").next().unwrap();
    let first = &site.frames[0];
    assert!(
        first
            .file
            .as_deref()
            .unwrap_or("")
            .ends_with("callsites_every.rs"),
        "{first:?}"
    );
    assert!(first.line.is_some());
    // The hot path and the allocation plumbing are trimmed (track_scope itself stays: the
    // user's closure runs inside it).
    for f in &site.frames {
        assert!(
            !f.function.contains("allocscope::alloc::"),
            "untrimmed frame {f:?}"
        );
        assert!(
            !f.function.contains("__rust_alloc"),
            "untrimmed frame {f:?}"
        );
        assert!(
            !f.function.starts_with("alloc::alloc::"),
            "untrimmed frame {f:?}"
        );
    }
    // The caller (this test) is in the stack too.
    assert!(
        site.frames
            .iter()
            .any(|f| f.function.contains("frames_are_trimmed")),
        "{:#?}",
        site.frames
    );
    drop(kept);
}

#[test]
fn process_wide_callsites_include_unscoped() {
    every();
    let kept = keep_some(5);
    let r = report();
    let unscoped: Vec<_> = r
        .callsites
        .iter()
        .filter(|c| c.scope.is_empty() && c.top_function().contains("keep_some"))
        .collect();
    assert!(!unscoped.is_empty());
    let total: u64 = unscoped.iter().map(|c| c.retained.objects).sum();
    assert!(total >= 5);
    drop(kept);
}

#[test]
fn rendering_a_report_while_others_allocate_does_not_deadlock() {
    every();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let name = format!("busy_{i}");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    track_scope(&name, || drop_all(50));
                }
            })
        })
        .collect();
    for _ in 0..20 {
        let r = report();
        let _ = r
            .flamegraph_svg(&allocscope::FlameOptions::default())
            .unwrap();
        let _ = r.to_json();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let r = report();
    for i in 0..2 {
        let j = r.job(&format!("busy_{i}")).unwrap();
        assert_eq!(j.retained, Usage::new(0, 0));
        assert_eq!(j.allocated.objects, j.runs * 50);
    }
}
