//! The baseline: the workloads under `System` (glibc malloc). Also the binary heaptrack traces
//! (`heaptrack ub_system <workload> system`). Protocol: see the crate's `child_main`.

use allocscope_user_build as ub;

fn main() {
    ub::child_main(|_| Ok(false), ub::no_scope, ub::plain_spawn);
}
