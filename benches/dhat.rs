//! The peer: dhat-rs (`dhat::Alloc` + `Profiler::new_heap()`), which records a stack for every
//! allocation under a global lock. Measured at 1/10 size only (it is ~30× slower than `System`);
//! `benches/system.rs` measures `System` at the same reduced sizes for the ratio.

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "workloads/mod.rs"]
mod workloads;

#[path = "workloads/criterion_glue.rs"]
mod criterion_glue;

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn dhat_heap(c: &mut Criterion<criterion_glue::Clock>) {
    // One profiler for the whole binary (dhat allows one at a time); `testing()` keeps it from
    // writing `dhat-heap.json` into the working directory when it is dropped.
    let _profiler = dhat::Profiler::builder().testing().build();
    let plain = |f: &dyn Fn() -> u64| f();
    criterion_glue::bench_cases(c, "dhat", workloads::REDUCED, &plain, workloads::std_spawn);
}

criterion_group! {
    name = benches;
    config = criterion_glue::criterion();
    targets = dhat_heap
}
criterion_main!(benches);
