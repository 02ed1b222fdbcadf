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
