//! Callsites: which stacks allocate, sampled or exact.
//!
//! * [`StackMode`] decides which allocations get a stack: none, every one, or a Poisson sample
//!   by bytes (the model of Go's and tcmalloc's heap profilers).
//! * [`capture`] records raw instruction pointers only — a bounds-checked frame-pointer walk
//!   when the build has frame pointers, the caching DWARF unwinder ([`cached`]) otherwise, and
//!   libgcc's unwinder as the last resort (threads without a counter slot, alternate signal
//!   stacks, unsupported targets).
//! * [`intern`] stores each distinct stack once, and each (path, stack) pair as a **site** with
//!   its own counters, in lock-free fixed-capacity tables, so the hot path takes no lock;
//!   [`ages`] keeps each site's live figures apart by the run of its job that allocated them.
//! * Symbolization (instruction pointers to function/file/line) happens at report time, in
//!   `report::symbolize`: nothing here resolves symbols.

pub(crate) mod ages;
pub(crate) mod cached;
pub(crate) mod capture;
pub(crate) mod intern;

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::config;

pub use crate::model::{StackMode, DEFAULT_SAMPLE_BYTES};
pub(crate) use crate::model::{MODE_EVERY, MODE_OFF};

/// `MODE_OFF`, `MODE_EVERY`, n ≥ 2 = sampled with mean n. Read on every allocation.
///
/// Starts as [`MODE_UNSET`], which the allocator treats as "sampled": every thread's first
/// allocation takes the cold sampling path (its countdown starts at 0), and the first one in
/// the process reads `ALLOCSCOPE_STACKS` there ([`init_early`]), so the environment decides the
/// mode before the first tracked allocation is recorded — also before `main`.
pub(crate) static MODE: AtomicU64 = AtomicU64::new(MODE_UNSET);
/// `MODE` before the environment was read.
pub(crate) const MODE_UNSET: u64 = u64::MAX;
/// Deepest stack recorded.
pub(crate) static MAX_FRAMES: AtomicU32 = AtomicU32::new(64);
/// Seed for the per-thread sampling random generators.
pub(crate) static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
/// Threads that seeded their generator since the last [`set_sampling_seed`]: the next one's
/// index.
static THREADS_SEEDED: AtomicU64 = AtomicU64::new(0);

/// Selects which allocations record a stack. Blocks already allocated keep the weight they
/// were recorded with, so their frees stay exact.
///
/// `Off` and `Every` apply to every thread's next allocation. A sampled mean applies to the
/// calling thread at once (it draws a new gap with the new mean at its next allocation); every
/// other thread first uses up the gap it already drew with the previous mean, then draws with
/// the new one. Switching from a large mean to a small one therefore samples other threads
/// only after up to about one previous mean of their allocations.
pub fn set_stack_mode(mode: StackMode) {
    init_from_env();
    MODE.store(mode.encode(), Relaxed);
    // This thread draws a new gap for the new mean at its next allocation.
    let _ = crate::thread::TLS.try_with(|t| {
        t.rng.set(0);
        t.countdown.set(0);
    });
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
///
/// Each thread's generator starts from the seed and the thread's index: the order in which
/// threads make their first sampling decision after this call (the calling thread's next
/// allocation comes first). So the same seed, the same program and the same order of threads
/// (e.g. threads started one after another) give the same samples in every process — no
/// address goes into it, so ASLR does not change them — and distinct seeds give distinct
/// streams.
pub fn set_sampling_seed(seed: u64) {
    SEED.store(seed, Relaxed);
    THREADS_SEEDED.store(0, Relaxed);
    let _ = crate::thread::TLS.try_with(|t| {
        t.rng.set(0);
        t.countdown.set(0);
    });
}

/// The first generator state of the next thread to sample (never 0, which means "unseeded").
/// Lock-free and allocation-free: called from the allocator's cold sampling path.
pub(crate) fn thread_rng_seed() -> u64 {
    let index = THREADS_SEEDED.fetch_add(1, Relaxed);
    // splitmix64 is a bijection: distinct seeds give distinct states for the same index.
    let state = splitmix64(SEED.load(Relaxed) ^ splitmix64(index.wrapping_add(1)));
    if state == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        state
    }
}

/// The splitmix64 finalizer.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which unwinder records stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwinder {
    /// Frame pointers if this crate was built with `-C force-frame-pointers=yes`, else the
    /// caching DWARF unwinder ([`Unwinder::Cached`]) where supported, else libgcc's
    /// ([`Unwinder::Dwarf`]).
    Auto,
    /// Walk frame pointers (nanoseconds; needs frame pointers in every crate to see every
    /// frame). Bounds-checked against the thread's stack, so it never faults.
    FramePointers,
    /// DWARF unwinding through `backtrace` (microseconds; works without frame pointers).
    Dwarf,
    /// DWARF unwinding with rules cached per return address (nanoseconds per cached frame;
    /// works without frame pointers; Linux x86_64, elsewhere it behaves as `Dwarf`). Each
    /// loaded module's `.eh_frame_hdr`/`.eh_frame` is read once, modules loaded later with
    /// `dlopen` are picked up when met, and a frame without unwind information ends the stack.
    /// Falls back to `Dwarf` on threads without a counter slot and on alternate signal stacks.
    Cached,
}

/// `UNWINDER` codes: `Auto` (resolved when read), then each explicit choice.
const UNWINDER_AUTO: u8 = 0;
const UNWINDER_FRAME_POINTERS: u8 = 1;
const UNWINDER_DWARF: u8 = 2;
const UNWINDER_CACHED: u8 = 3;

pub(crate) static UNWINDER: AtomicU8 = AtomicU8::new(UNWINDER_AUTO);

/// Chooses the unwinder used to record stacks.
pub fn set_unwinder(unwinder: Unwinder) {
    UNWINDER.store(
        match unwinder {
            Unwinder::Auto => UNWINDER_AUTO,
            Unwinder::FramePointers => UNWINDER_FRAME_POINTERS,
            Unwinder::Dwarf => UNWINDER_DWARF,
            Unwinder::Cached => UNWINDER_CACHED,
        },
        Relaxed,
    );
}

/// The unwinder in effect (`Auto` resolved to what it picks).
pub fn unwinder() -> Unwinder {
    match UNWINDER.load(Relaxed) {
        UNWINDER_FRAME_POINTERS => Unwinder::FramePointers,
        UNWINDER_DWARF => Unwinder::Dwarf,
        UNWINDER_CACHED => Unwinder::Cached,
        _ if capture::frame_pointers_default() => Unwinder::FramePointers,
        _ if cached::SUPPORTED => Unwinder::Cached,
        _ => Unwinder::Dwarf,
    }
}

static ENV_INIT: Once = Once::new();

/// Applies `ALLOCSCOPE_STACKS` (parsed by [`config::stacks`], which reports an invalid value
/// on stderr) once, at the first call into allocscope's API. Usually [`init_early`] already
/// applied it at the first allocation; this is where an invalid value is reported, and where
/// the mode is settled if no allocation went through the tracking allocator.
pub(crate) fn init_from_env() {
    if ENV_INIT.is_completed() {
        return;
    }
    crate::thread::untracked(|| {
        ENV_INIT.call_once(|| {
            let mode = config::stacks().unwrap_or_default().encode();
            // Only if nothing set the mode yet (the early read sets the same value).
            let _ = MODE.compare_exchange(MODE_UNSET, mode, Relaxed, Relaxed);
        });
    });
}

/// Applies `ALLOCSCOPE_STACKS` from inside the allocator, at the first allocation of the
/// process, without allocating or locking ([`config::stacks_early`]). An invalid value leaves
/// the default; [`init_from_env`] reports it later.
#[cold]
#[inline(never)]
pub(crate) fn init_early() {
    let mode = config::stacks_early().unwrap_or_default().encode();
    let _ = MODE.compare_exchange(MODE_UNSET, mode, Relaxed, Relaxed);
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
