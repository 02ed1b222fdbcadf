//! allocscope as a user installs it, in the configuration given on the command line:
//!
//! * `outside`: installed, default stack mode (sampled, 512 KiB), no job scope entered;
//! * `off`: `StackMode::Off` inside one job scope (exact per-job counts only);
//! * `sampled`: the default `StackMode::Sampled` (512 KiB) inside the scope;
//! * `every`: `StackMode::Every`, unwinder chosen automatically (what a user gets);
//! * `every_dwarf`: `StackMode::Every` with libgcc's DWARF unwinder (`Unwinder::Dwarf`);
//! * `every_cached`: `StackMode::Every` with the caching unwinder (`Unwinder::Cached`);
//! * `every_fp`: `StackMode::Every` with the frame-pointer walk (`Unwinder::FramePointers`).
//!
//! Protocol: see the crate's `child_main`.

use std::thread::JoinHandle;

use allocscope::{StackMode, TrackingAllocator, Unwinder};
use allocscope_user_build as ub;

#[global_allocator]
static GLOBAL: TrackingAllocator = TrackingAllocator::system();

fn scoped_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64> {
    allocscope::spawn(f)
}

fn scope(f: &dyn Fn() -> u64) -> u64 {
    allocscope::track_scope("bench", f)
}

fn setup(config: &str) -> Result<bool, String> {
    let (mode, unwinder, scoped) = match config {
        "outside" => (StackMode::default(), Unwinder::Auto, false),
        "off" => (StackMode::Off, Unwinder::Auto, true),
        "sampled" => (StackMode::default(), Unwinder::Auto, true),
        "every" => (StackMode::Every, Unwinder::Auto, true),
        "every_dwarf" => (StackMode::Every, Unwinder::Dwarf, true),
        "every_fp" => (StackMode::Every, Unwinder::FramePointers, true),
        "every_cached" => (StackMode::Every, Unwinder::Cached, true),
        other => {
            return Err(format!(
                "unknown configuration {other:?}: outside, off, sampled, every, every_dwarf, \
                 every_fp, every_cached"
            ))
        }
    };
    let _ = ub::UNIT.set(|f| allocscope::track_scope("doc", f));
    allocscope::set_stack_mode(mode);
    allocscope::set_unwinder(unwinder);
    Ok(scoped)
}

fn main() {
    ub::child_main(setup, scope, scoped_spawn);
}
