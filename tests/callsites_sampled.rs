//! Callsites in `StackMode::Sampled`: unbiased estimates on a seeded workload.

use std::hint::black_box;

use allocscope::{report, track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[inline(never)]
fn hold_most(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().map(|&s| black_box(vec![0u8; s])).collect()
}

// Individual boxes are the point: each is one allocation at this callsite.
#[allow(clippy::vec_box)]
#[inline(never)]
fn hold_a_little(n: usize) -> Vec<Box<[u8; 64]>> {
    (0..n).map(|_| black_box(Box::new([0u8; 64]))).collect()
}

/// A deterministic size sequence (64 B .. 16 KiB), from a fixed seed.
fn sizes(n: usize, mut seed: u64) -> Vec<usize> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            64 + (seed % (16 * 1024)) as usize
        })
        .collect()
}

#[test]
fn sampled_estimate_is_within_ten_percent_of_exact() {
    allocscope::set_stack_mode(StackMode::Sampled {
        mean_bytes: 64 * 1024,
    });
    allocscope::set_sampling_seed(42);
    let sizes = sizes(40_000, 7);
    let exact_bytes: u64 = sizes.iter().map(|&s| s as u64).sum();
    let (big, small) = track_scope("sampled_job", || (hold_most(&sizes), hold_a_little(1000)));
    let r = report();
    let job = r.job("sampled_job").unwrap();
    // Per-job counts stay exact in sampled mode.
    assert_eq!(job.retained.objects, 40_000 + 1 + 1000 + 1);
    let site = job
        .callsites
        .iter()
        .find(|c| c.frames.iter().any(|f| f.function.contains("hold_most")))
        .expect("the callsite holding most bytes is sampled");
    assert!(site.estimated, "sampled figures are labelled as estimates");
    let est = site.retained.bytes as f64;
    let err = (est - exact_bytes as f64).abs() / exact_bytes as f64;
    assert!(
        err < 0.10,
        "estimate {est} vs exact {exact_bytes}: {:.1}% off",
        err * 100.0
    );
    let est_objects = site.retained.objects as f64;
    let err_o = (est_objects - 40_000.0).abs() / 40_000.0;
    assert!(err_o < 0.10, "objects estimate {est_objects}");
    // Frees subtract exactly what the samples added: back to zero.
    drop(big);
    drop(small);
    let r = report();
    let job = r.job("sampled_job").unwrap();
    for c in &job.callsites {
        assert_eq!(c.retained.bytes, 0, "{c:?}");
        assert_eq!(c.retained.objects, 0, "{c:?}");
    }
    assert_eq!(job.retained.bytes, 0);
}

#[test]
fn shares_of_estimates_never_exceed_their_whole() {
    // Same mode as the other test of this binary (tests may run in parallel).
    allocscope::set_stack_mode(StackMode::Sampled {
        mean_bytes: 64 * 1024,
    });
    // Jobs retaining ~21 KiB each in 64-byte boxes: one sample of a job's callsite estimates
    // it at 64 KiB or more, above the job's exact figure.
    let names: Vec<String> = (0..60).map(|i| format!("small_sampled_{i}")).collect();
    let kept: Vec<_> = names
        .iter()
        .map(|n| track_scope(n.as_str(), || hold_a_little(300)))
        .collect();
    let r = report();
    let jobs: Vec<_> = r
        .jobs
        .iter()
        .filter(|j| j.name.starts_with("small_sampled_"))
        .collect();
    let over = jobs
        .iter()
        .filter(|j| {
            j.callsites
                .iter()
                .any(|c| c.estimated && c.retained.bytes > j.retained.bytes)
        })
        .count();
    assert!(
        over > 0,
        "no estimate above its job's exact figure to check"
    );
    for j in &jobs {
        let text = r.to_text_with(&allocscope::TextOptions {
            job: Some(j.name.clone()),
            ..Default::default()
        });
        for line in text
            .lines()
            .filter(|l| l.contains('%') && !l.contains("CUM%"))
        {
            for pct in line
                .split_whitespace()
                .filter_map(|w| w.strip_suffix('%')?.parse::<f64>().ok())
            {
                assert!(pct <= 100.0, "{pct}% in {line:?}\n{text}");
            }
        }
        if j.callsites.iter().any(|c| c.estimated) {
            assert!(
                text.contains("% are shares of the callsites' estimated sum"),
                "{text}"
            );
        }
    }
    // JSON: each callsite says whether its figures are estimates; the job's are exact.
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let sampled = json["callsites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["estimated"] == serde_json::Value::Bool(true))
        .count();
    assert!(sampled >= over, "{sampled} estimated callsites in JSON");
    // HTML: estimates are marked and explained.
    let html = r.to_html();
    assert!(html.contains("class=\"est\" title=\"estimate from sampled stacks\">~"));
    assert!(html.contains("~ marks estimates from sampled stacks"));
    drop(kept);
}
