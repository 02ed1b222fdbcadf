//! Floor: `System` with allocscope's header layout and no counting (`floors::HeaderOnly`).
//! Configuration `h8` (the header for alignments up to 8 today) or `h16` (the former 16-byte
//! header). Protocol: see the crate's `child_main`.

use allocscope_user_build as ub;
use core::sync::atomic::Ordering::Relaxed;

#[global_allocator]
static GLOBAL: ub::floors::HeaderOnly = ub::floors::HeaderOnly;

fn main() {
    ub::child_main(
        |config| {
            let h = if config == "h16" { 16 } else { 8 };
            ub::floors::HEADER.store(h, Relaxed);
            Ok(false)
        },
        ub::no_scope,
        ub::plain_spawn,
    );
}
