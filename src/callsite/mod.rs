//! Callsites: which stacks allocate, sampled or exact.
//!
//! * [`StackMode`] decides which allocations get a stack: none, every one, or a Poisson sample
//!   by bytes (the model of Go's and tcmalloc's heap profilers).
//! * [`capture`] records raw instruction pointers only — a bounds-checked frame-pointer walk
//!   when the build has frame pointers, the DWARF unwinder otherwise.
//! * [`intern`] stores each distinct stack once, and each (path, stack) pair as a **site** with
//!   its own counters, in lock-free fixed-capacity tables, so the hot path takes no lock.
//! * Symbolization (instruction pointers to function/file/line) happens at report time, in
//!   `report::symbolize`: nothing here resolves symbols.

pub(crate) mod capture;
pub(crate) mod intern;

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::config;

pub use crate::model::{StackMode, DEFAULT_SAMPLE_BYTES};

/// 0 = off, 1 = every, n ≥ 2 = sampled with mean n. Read on every allocation.
pub(crate) static MODE: AtomicU64 = AtomicU64::new(DEFAULT_SAMPLE_BYTES);
/// Deepest stack recorded.
pub(crate) static MAX_FRAMES: AtomicU32 = AtomicU32::new(64);
/// Seed for the per-thread sampling random generators.
pub(crate) static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// Selects which allocations record a stack. Takes effect immediately on every thread; blocks
/// already allocated keep the weight they were recorded with, so their frees stay exact.
pub fn set_stack_mode(mode: StackMode) {
    init_from_env();
    MODE.store(mode.encode(), Relaxed);
    // Redraw this thread's sampling gap for the new mean.
    let _ = crate::thread::TLS.try_with(|t| t.rng.set(0));
}

/// The current [`StackMode`].
pub fn stack_mode() -> StackMode {
    init_from_env();
    StackMode::decode(MODE.load(Relaxed))
}

/// Sets the deepest stack recorded, in frames (clamped to 1..=128; default 64).
pub fn set_max_frames(frames: usize) {
    MAX_FRAMES.store(frames.clamp(1, capture::MAX_FRAMES_LIMIT) as u32, Relaxed);
}

/// Seeds the random generator that chooses sampled allocations, for reproducible runs. Applies
/// to threads that have not sampled yet and to the calling thread.
pub fn set_sampling_seed(seed: u64) {
    SEED.store(seed | 1, Relaxed);
    let _ = crate::thread::TLS.try_with(|t| {
        t.rng.set(0);
        t.countdown.set(0);
    });
}

/// Which unwinder records stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwinder {
    /// Frame pointers if this crate was built with `-C force-frame-pointers=yes`, else DWARF.
    Auto,
    /// Walk frame pointers (nanoseconds; needs frame pointers in every crate to see every
    /// frame). Bounds-checked against the thread's stack, so it never faults.
    FramePointers,
    /// DWARF unwinding through `backtrace` (microseconds; works without frame pointers).
    Dwarf,
}

pub(crate) static UNWINDER: AtomicU8 = AtomicU8::new(0);

/// Chooses the unwinder used to record stacks.
pub fn set_unwinder(unwinder: Unwinder) {
    UNWINDER.store(
        match unwinder {
            Unwinder::Auto => 0,
            Unwinder::FramePointers => 1,
            Unwinder::Dwarf => 2,
        },
        Relaxed,
    );
}

/// The unwinder in effect (`Auto` resolved to what it picks).
pub fn unwinder() -> Unwinder {
    match UNWINDER.load(Relaxed) {
        1 => Unwinder::FramePointers,
        2 => Unwinder::Dwarf,
        _ if capture::frame_pointers_default() => Unwinder::FramePointers,
        _ => Unwinder::Dwarf,
    }
}

static ENV_INIT: Once = Once::new();

/// Applies `ALLOCSCOPE_STACKS` (parsed by [`config::stacks`]) once, at the first call into
/// allocscope's API (never from inside the allocator, where reading the environment could
/// allocate or take its lock).
pub(crate) fn init_from_env() {
    if ENV_INIT.is_completed() {
        return;
    }
    crate::thread::untracked(|| {
        ENV_INIT.call_once(|| {
            if let Some(mode) = config::stacks() {
                MODE.store(mode.encode(), Relaxed);
            }
        });
    });
}

/// Draws the next gap (in bytes) before a sample: exponential with mean `mean`.
#[inline]
pub(crate) fn next_gap(rng: &mut u64, mean: u64) -> i64 {
    // xorshift64*: tiny, good enough for sampling, no allocation.
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    // Uniform in (0, 1]: never ln(0).
    let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let gap = -u.ln() * mean as f64;
    gap.min(i64::MAX as f64 / 2.0) as i64 + 1
}

/// Weight (1/p) of a sampled block of `size` bytes when the mean gap is `mean`.
#[inline]
pub(crate) fn sample_weight(size: u64, mean: u64) -> f32 {
    let p = -(-(size as f64) / mean as f64).exp_m1();
    if p <= 0.0 {
        return 1.0;
    }
    (1.0 / p) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_have_the_requested_mean() {
        let mut rng = 12345u64;
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| next_gap(&mut rng, 1000) as f64).sum();
        let mean = sum / n as f64;
        assert!((mean - 1000.0).abs() < 15.0, "mean {mean}");
    }

    #[test]
    fn weights_follow_the_poisson_model() {
        assert!((sample_weight(512 * 1024, 512 * 1024) - 1.581_976_7).abs() < 1e-4);
        assert!(sample_weight(1 << 30, 512 * 1024) - 1.0 < 1e-6);
        assert!((sample_weight(8, 512 * 1024) - 65536.5).abs() < 1.0);
    }
}
