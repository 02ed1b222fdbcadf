//! The workloads under `allocscope::TrackingAllocator`, in each configuration, switched at run
//! time inside this one binary (the allocator is per binary):
//!
//! * `outside`: installed, default stack mode (sampled, 512 KiB), no job scope entered;
//! * `off`: `StackMode::Off`, every iteration inside a job scope (exact per-job counts only);
//! * `sampled`: the default `StackMode::Sampled` (512 KiB mean) inside a job scope;
//! * `every`: `StackMode::Every` with the frame-pointer unwinder, inside a job scope;
//! * `every_dwarf`: `StackMode::Every` with DWARF unwinding (reduced sizes only: microseconds
//!   per stack);
//! * `every_dwarf16`: the same with stacks cut at 16 frames (`set_max_frames(16)`), about the
//!   depth dhat-rs unwinds by default (10 frames below its allocator frames).
//!
//! The `threads` workloads inside a scope start their threads with `allocscope::spawn`, so all
//! of them share the one job scope.

use std::thread::JoinHandle;

use allocscope::{StackMode, TrackingAllocator, Unwinder};
use criterion::{criterion_group, criterion_main, Criterion};

#[path = "workloads/mod.rs"]
mod workloads;

#[path = "workloads/criterion_glue.rs"]
mod criterion_glue;

#[global_allocator]
static GLOBAL: TrackingAllocator = TrackingAllocator::system();

fn scoped_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64> {
    allocscope::spawn(f)
}

fn allocscope_configs(c: &mut Criterion<criterion_glue::Clock>) {
    use criterion_glue::bench_cases;
    use workloads::{std_spawn, FULL, REDUCED};
    let plain = |f: &dyn Fn() -> u64| f();
    let scoped = |f: &dyn Fn() -> u64| allocscope::track_scope("bench", f);

    allocscope::set_unwinder(Unwinder::FramePointers);
    allocscope::set_stack_mode(StackMode::default());
    bench_cases(c, "outside", FULL, &plain, std_spawn);

    allocscope::set_stack_mode(StackMode::Off);
    bench_cases(c, "off", FULL, &scoped, scoped_spawn);

    allocscope::set_stack_mode(StackMode::default());
    bench_cases(c, "sampled", FULL, &scoped, scoped_spawn);

    allocscope::set_stack_mode(StackMode::Every);
    bench_cases(c, "every", FULL, &scoped, scoped_spawn);
    bench_cases(c, "every", REDUCED, &scoped, scoped_spawn);

    allocscope::set_unwinder(Unwinder::Dwarf);
    bench_cases(c, "every_dwarf", REDUCED, &scoped, scoped_spawn);
    // dhat-rs stops unwinding 10 frames below its own; the same depth for comparison.
    allocscope::set_max_frames(16);
    bench_cases(c, "every_dwarf16", REDUCED, &scoped, scoped_spawn);
    allocscope::set_max_frames(64);

    allocscope::set_unwinder(Unwinder::Auto);
    allocscope::set_stack_mode(StackMode::default());
}

criterion_group! {
    name = benches;
    config = criterion_glue::criterion();
    targets = allocscope_configs
}
criterion_main!(benches);
