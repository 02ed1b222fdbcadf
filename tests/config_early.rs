//! The environment decides before the first tracked allocation, in
//! child processes of this test binary:
//!
//! * `ALLOCSCOPE_STACKS` is applied by the allocator's first allocation (without allocating),
//!   not at the first call into allocscope: with `off`, memory allocated before any call has
//!   no sampled callsite; with `every`, a large block allocated before any call is an exact
//!   callsite and the flamegraph does not say "estimates".
//! * `set_sampling_seed` is reproducible across processes (no address in the seed: ASLR moves
//!   every address between runs), and distinct seeds give distinct samples (also seeds 2k and
//!   2k+1, which differ only in their lowest bit).

use std::hint::black_box;
use std::process::Command;

use allocscope::{
    report, set_sampling_seed, track_scope, FlameOptions, StackMode, TrackingAllocator,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const CHILD: &str = "ALLOCSCOPE_TEST_CHILD";

/// Runs the child test `name` of this binary with `env`; returns its stdout.
fn child(name: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("ALLOCSCOPE_STACKS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the test binary");
    assert!(out.status.success(), "child {name} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line the child printed after `key=`.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    // (The harness prints the test's name on the same line as its first output.)
    out.lines()
        .find_map(|l| l.split_once(&format!("{key}=")).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {key}= in the child's output:\n{out}"))
}

// One allocation per box is the point: each is a block the sampler decides on.
#[allow(clippy::vec_box)]
#[inline(never)]
fn early_blocks() -> Vec<Box<[u8; 65536]>> {
    (0..1024)
        .map(|_| black_box(Box::new([1u8; 65536])))
        .collect()
}

#[test]
fn child_allocates_before_any_call() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // 64 MiB in 1,024 blocks and a 7 MiB tower, before any call into allocscope: with the
    // default mean (512 KiB) about 140 of them would be sampled.
    let kept = early_blocks();
    let tower = black_box(vec![7u8; 7 << 20]);
    let r = report();
    let tower_site = r
        .callsites
        .iter()
        .find(|c| c.allocated.bytes >= 7 << 20 && c.allocated.objects <= 1);
    println!("MODE={:?}", r.stack_mode);
    println!("CALLSITES={}", r.callsites.len());
    println!(
        "TOWER={}",
        tower_site.map_or("none".to_string(), |c| format!("estimated:{}", c.estimated))
    );
    let svg = r.flamegraph_svg(&FlameOptions::default()).unwrap();
    println!("SVG_SAYS_ESTIMATES={}", svg.contains("estimates"));
    drop((kept, tower));
}

#[test]
fn stacks_off_from_the_environment_records_nothing_allocated_before_the_first_call() {
    let out = child(
        "child_allocates_before_any_call",
        &[("ALLOCSCOPE_STACKS", "off")],
    );
    assert_eq!(field(&out, "MODE"), "Off");
    assert_eq!(field(&out, "CALLSITES"), "0", "{out}");
}

#[test]
fn stacks_every_from_the_environment_is_exact_from_the_first_allocation() {
    let out = child(
        "child_allocates_before_any_call",
        &[("ALLOCSCOPE_STACKS", "every")],
    );
    assert_eq!(field(&out, "MODE"), "Every");
    assert_eq!(field(&out, "TOWER"), "estimated:false", "{out}");
    assert_eq!(field(&out, "SVG_SAYS_ESTIMATES"), "false", "{out}");
}

/// Sizes of a fixed, varied allocation sequence.
fn sizes() -> impl Iterator<Item = usize> {
    (0..6_000usize).map(|i| 16 + (i * 7919) % 4000)
}

#[inline(never)]
fn sampled_work() -> usize {
    sizes().map(|s| black_box(vec![0u8; s]).len()).sum()
}

#[test]
fn child_samples_with_a_seed() {
    let Some(seed) = std::env::var_os(CHILD).and_then(|_| std::env::var("SEED").ok()) else {
        return;
    };
    allocscope::set_stack_mode(StackMode::Sampled {
        mean_bytes: 16 << 10,
    });
    set_sampling_seed(seed.parse().unwrap());
    // The calling thread, then two threads started one after the other.
    track_scope("seeded", sampled_work);
    for _ in 0..2 {
        allocscope::spawn(sampled_work).join().unwrap();
    }
    let r = report();
    let job = r.job("seeded").unwrap();
    // Which blocks were sampled decides the callsite estimates, to the byte.
    let mut sites: Vec<String> = job
        .callsites
        .iter()
        .map(|c| format!("{}/{}", c.allocated.objects, c.allocated.bytes))
        .collect();
    sites.sort();
    println!("SAMPLES={}", sites.join(","));
}

#[test]
fn the_same_seed_samples_the_same_blocks_in_every_process_and_distinct_seeds_differ() {
    let run = |seed: &str| {
        field(
            &child("child_samples_with_a_seed", &[("SEED", seed)]),
            "SAMPLES",
        )
        .to_string()
    };
    let a = run("42");
    assert!(!a.is_empty(), "nothing sampled");
    assert_eq!(a, run("42"), "seed 42 in two processes");
    assert_eq!(a, run("42"), "seed 42 in a third process");
    assert_ne!(run("42"), run("43"), "seeds 42 and 43 (2k, 2k+1)");
    assert_ne!(run("42"), run("1042"), "seeds 42 and 1042");
}
