//! Floor: `System` with per-thread counters and no header (`floors::CountOnly`). Protocol:
//! see the crate's `child_main`.

use allocscope_user_build as ub;

#[global_allocator]
static GLOBAL: ub::floors::CountOnly = ub::floors::CountOnly;

fn main() {
    ub::child_main(|_| Ok(false), ub::no_scope, ub::plain_spawn);
}
