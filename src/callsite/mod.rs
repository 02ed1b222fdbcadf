//! Callsites: which stacks allocate, sampled or exact.
//!
//! * [`StackMode`] decides which allocations get a stack: none, every one, or a Poisson sample
//!   by bytes (the model of Go's and tcmalloc's heap profilers).
//! * [`capture`] records raw instruction pointers only — a bounds-checked frame-pointer walk
//!   when the build has frame pointers, the DWARF unwinder otherwise.
//! * [`intern`] stores each distinct stack once, and each (path, stack) pair as a **site** with
//!   its own counters, in lock-free fixed-capacity tables, so the hot path takes no lock.
//! * [`symbolize`] turns instruction pointers into function/file/line when a report is built.

pub(crate) mod capture;
pub(crate) mod intern;
pub(crate) mod symbolize;

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Once;

use serde::{Deserialize, Serialize};

/// Which allocations record a stack (a callsite).
///
/// Per-job counts (objects, bytes, peak, retained) are exact in every mode; the mode only
/// decides how callsites are attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum StackMode {
    /// No stacks: per-job counts only. The cheapest mode.
    Off,
    /// Sample allocations by bytes: the gap between samples is exponentially distributed with
    /// mean `mean_bytes`, so an allocation of `s` bytes is sampled with probability
    /// `p = 1 - exp(-s / mean_bytes)`. Each sampled block stands for `1/p` blocks in callsite
    /// figures, which are then unbiased **estimates** (marked as such in reports).
    Sampled {
        /// Mean number of bytes between samples (default 512 KiB). Values of 0 or 1 behave
        /// like [`StackMode::Every`].
        mean_bytes: u64,
    },
    /// A stack for every allocation: callsite figures are exact.
    Every,
}

/// Default mean sampling interval: 512 KiB, as Go's `MemProfileRate` and jemalloc.
pub const DEFAULT_SAMPLE_BYTES: u64 = 512 * 1024;

impl Default for StackMode {
    /// `Sampled { mean_bytes: 512 KiB }`: cheap enough for production.
    fn default() -> Self {
        StackMode::Sampled {
            mean_bytes: DEFAULT_SAMPLE_BYTES,
        }
    }
}

impl StackMode {
    /// Parses the `ALLOCSCOPE_STACKS` syntax: `off`, `every`, `sampled` (default mean), or a
    /// byte count (sampled with that mean; `k`/`m`/`kib`/`mib` suffixes allowed).
    pub fn parse(text: &str) -> Result<StackMode, crate::Error> {
        let s = text.trim().to_ascii_lowercase();
        match s.as_str() {
            "off" | "none" | "0" => return Ok(StackMode::Off),
            "every" | "all" | "exact" => return Ok(StackMode::Every),
            "sampled" | "sample" | "default" => return Ok(StackMode::default()),
            _ => {}
        }
        match crate::report::text::parse_bytes(&s) {
            Some(mean_bytes) if mean_bytes > 0 => Ok(StackMode::Sampled { mean_bytes }),
            _ => Err(crate::Error::InvalidConfig(format!(
                "ALLOCSCOPE_STACKS={text:?} is not one of off, every, sampled, or a byte count \
                 such as 524288 or 512k"
            ))),
        }
    }

    fn encode(self) -> u64 {
        match self {
            StackMode::Off => 0,
            StackMode::Every => 1,
            StackMode::Sampled { mean_bytes } => mean_bytes.max(1),
        }
    }

    fn decode(v: u64) -> StackMode {
        match v {
            0 => StackMode::Off,
            1 => StackMode::Every,
            mean_bytes => StackMode::Sampled { mean_bytes },
        }
    }
}

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

/// Reads `ALLOCSCOPE_STACKS` once, at the first call into allocscope's API (never from inside
/// the allocator, where reading the environment could allocate or take its lock). An invalid
/// value is reported once on stderr and the default is used.
pub(crate) fn init_from_env() {
    if ENV_INIT.is_completed() {
        return;
    }
    crate::thread::untracked(|| {
        ENV_INIT.call_once(|| {
            if let Some(raw) = std::env::var_os("ALLOCSCOPE_STACKS") {
                let v = raw.to_string_lossy();
                match StackMode::parse(&v) {
                    Ok(mode) => {
                        MODE.store(mode.encode(), Relaxed);
                    }
                    Err(e) => eprintln!("allocscope: {e}; using the default (sampled, 512 KiB)"),
                }
            }
        });
    });
    // After the settings above are in force, and outside their `Once`: the server calls back
    // into allocscope (which then returns early here).
    #[cfg(feature = "http")]
    crate::http::start_from_env();
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
    fn parse_accepts_documented_values() {
        assert_eq!(StackMode::parse("off").unwrap(), StackMode::Off);
        assert_eq!(StackMode::parse("EVERY").unwrap(), StackMode::Every);
        assert_eq!(StackMode::parse("sampled").unwrap(), StackMode::default());
        assert_eq!(
            StackMode::parse("4096").unwrap(),
            StackMode::Sampled { mean_bytes: 4096 }
        );
        assert_eq!(
            StackMode::parse("512k").unwrap(),
            StackMode::Sampled {
                mean_bytes: 512 * 1024
            }
        );
        assert_eq!(
            StackMode::parse("2MiB").unwrap(),
            StackMode::Sampled {
                mean_bytes: 2 << 20
            }
        );
    }

    #[test]
    fn parse_rejects_garbage_with_a_message() {
        for bad in ["", "fast", "-5", "12q", "99999999999999999999999", "1.5"] {
            let err = StackMode::parse(bad).unwrap_err().to_string();
            assert!(err.contains("ALLOCSCOPE_STACKS"), "{bad}: {err}");
        }
    }

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
