//! The peer: dhat-rs with a heap profiler running (a stack for every allocation). Protocol: see
//! the crate's `child_main`.

use allocscope_user_build as ub;

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn main() {
    // `testing()` records exactly as `Profiler::new_heap()` and only skips writing
    // dhat-heap.json when dropped.
    let _profiler = dhat::Profiler::builder().testing().build();
    ub::child_main(|_| Ok(false), ub::no_scope, ub::plain_spawn);
}
