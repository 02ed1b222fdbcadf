//! Baseline: the workloads under the plain `System` allocator. Every other configuration is
//! reported as a ratio to these times (see `scripts/bench.sh` and `BENCHMARKS.md`).

use std::alloc::System;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "workloads/mod.rs"]
mod workloads;

#[path = "workloads/criterion_glue.rs"]
mod criterion_glue;

#[global_allocator]
static GLOBAL: System = System;

fn system(c: &mut Criterion<criterion_glue::Clock>) {
    let plain = |f: &dyn Fn() -> u64| f();
    criterion_glue::bench_cases(c, "system", workloads::FULL, &plain, workloads::std_spawn);
    criterion_glue::bench_cases(
        c,
        "system",
        workloads::REDUCED,
        &plain,
        workloads::std_spawn,
    );
}

criterion_group! {
    name = benches;
    config = criterion_glue::criterion();
    targets = system
}
criterion_main!(benches);
