//! Raw stack capture: instruction pointers only, never symbols, never an allocation.
//!
//! Runs inside the allocator, so it must not allocate, lock or fault:
//! * the frame-pointer walk reads only addresses between the current stack pointer and the top
//!   of the current thread's stack (both mapped), 8-byte aligned, strictly increasing, so any
//!   garbage in a frame-pointer register ends the walk instead of faulting;
//! * the caching unwinder (`cached`) reads the stack under the same bounds, and its own copies
//!   of the modules' unwind tables;
//! * the DWARF path uses `backtrace::trace_unsynchronized`, which on Linux calls libgcc's
//!   `_Unwind_Backtrace` (thread-safe, no Rust allocation).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::intern;
use crate::thread::ThreadState;

/// Stacks the chosen unwinder could not take, taken by libgcc instead (see
/// `TrackerStats::unwinder_fallbacks`).
pub(crate) static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Hard upper bound on recorded frames (the buffer lives on the stack).
pub(crate) const MAX_FRAMES_LIMIT: usize = 128;

/// Whether the crate was compiled with frame pointers (set by `build.rs` from the rustflags).
pub(crate) fn frame_pointers_default() -> bool {
    cfg!(allocscope_frame_pointers)
        && cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && cfg!(target_os = "linux")
}

/// Records up to `buf.len()` return addresses of the current stack into `buf` and returns the
/// recorded ones with their `intern::hash_stack`. `buf` need not be initialised (zeroing a
/// 1 KiB buffer on every captured allocation was measurable): only the returned prefix is
/// written and read. The caching unwinder returns the hash with the frames (it reuses the
/// partial hashes of frames it reuses); the others' frames are hashed here.
/// Inlined into the allocator's recording functions (fewer frames to unwind).
#[inline(always)]
pub(crate) fn capture<'a>(
    t: &ThreadState,
    buf: &'a mut [MaybeUninit<usize>],
) -> (&'a [usize], u64) {
    let depth = (super::MAX_FRAMES.load(Relaxed) as usize).min(buf.len());
    let buf = &mut buf[..depth];
    let (walked, chosen) = match super::unwinder() {
        super::Unwinder::FramePointers => (frame_pointer_walk(t, buf).map(|n| (n, None)), true),
        super::Unwinder::Cached => (super::cached::walk(t, buf).map(|(n, h)| (n, Some(h))), true),
        _ => (None, false),
    };
    let (n, hash) = match walked {
        Some((n, h)) => (n.min(buf.len()), h),
        None => {
            if chosen {
                FALLBACKS.fetch_add(1, Relaxed);
            }
            (dwarf(buf).min(buf.len()), None)
        }
    };
    // SAFETY: both walkers write `buf[0..n]` in order before counting an element, so the first
    // `n` elements are initialised `usize`s (`MaybeUninit<usize>` has `usize`'s layout).
    let ips = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<usize>(), n) };
    let hash = match hash {
        Some(h) => intern::hash_finish(h, n),
        None => intern::hash_stack(ips),
    };
    (ips, hash)
}

fn dwarf(buf: &mut [MaybeUninit<usize>]) -> usize {
    let mut n = 0;
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not take backtrace's global
    // lock, which exists for Windows' dbghelp. On Linux it calls `_Unwind_Backtrace`, which is
    // thread-safe; the closure only writes into `buf`, within bounds.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if n < buf.len() {
                buf[n] = MaybeUninit::new(frame.ip() as usize);
                n += 1;
            }
            n < buf.len()
        });
    }
    n
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn frame_pointer_walk(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<usize> {
    let (stack_lo, hi) = thread_stack(t)?;
    let marker = 0u8;
    let lo = core::ptr::addr_of!(marker) as usize;
    // Running on another stack than the thread's own (a signal's alternate stack, a coroutine):
    // [lo, hi) would not be one mapped region, so do not walk; the DWARF unwinder takes over.
    if lo < stack_lo || lo >= hi {
        return None;
    }
    let mut fp: usize;
    // SAFETY: reads the frame-pointer register into a local; no memory is touched.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    let mut n = 0;
    while n < buf.len() {
        // A frame record is [saved fp, return address]; both words must lie in the live part
        // of this thread's stack, which is mapped from our own frame up to the top.
        if fp < lo || fp % 8 != 0 || fp > hi.saturating_sub(16) {
            break;
        }
        // SAFETY: `lo <= fp` and `fp + 16 <= hi`, and [lo, hi) is this thread's mapped stack
        // (from the current frame to the top recorded by pthread), 8-byte aligned.
        let (next, ret) = unsafe {
            (
                core::ptr::read_volatile(fp as *const usize),
                core::ptr::read_volatile((fp + 8) as *const usize),
            )
        };
        if ret == 0 {
            break;
        }
        buf[n] = MaybeUninit::new(ret);
        n += 1;
        // Callers' frames are at higher addresses; anything else is garbage or the end.
        if next <= fp {
            break;
        }
        fp = next;
    }
    Some(n)
}

/// Lowest and highest address of this thread's stack, looked up once per thread.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[inline]
pub(crate) fn thread_stack(t: &ThreadState) -> Option<(usize, usize)> {
    match t.stack_hi.get() {
        0 => {
            // A C block (feature `malloc`) may be allocated inside `pthread_getattr_np` itself,
            // under the lock `stack_bounds` would take again: no lookup then.
            #[cfg(allocscope_cmalloc)]
            if crate::cmalloc::in_c() {
                return None;
            }
            let (lo, hi) = stack_bounds()?;
            t.stack_lo.set(lo);
            t.stack_hi.set(hi);
            Some((lo, hi))
        }
        hi => Some((t.stack_lo.get(), hi)),
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn frame_pointer_walk(_t: &ThreadState, _buf: &mut [MaybeUninit<usize>]) -> Option<usize> {
    None
}

/// Lowest and highest address of the current thread's stack, from pthread (glibc reads them
/// without calling the Rust allocator).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[cold]
fn stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before use and destroyed after;
    // `addr`/`size` are out-parameters of the right types.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 || addr.is_null() {
            return None;
        }
        Some((addr as usize, addr as usize + size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash returned is the hash of the frames returned, so stacks captured by any
    /// unwinder intern to the same ids.
    #[test]
    fn walk_hash_matches_hash_of_frames() {
        crate::thread::TLS.with(|t| {
            let mut buf = [MaybeUninit::<usize>::uninit(); MAX_FRAMES_LIMIT];
            if let Some(n) = frame_pointer_walk(t, &mut buf) {
                assert!(n > 0 || !frame_pointers_default());
            }
            let (ips, hash) = capture(t, &mut buf);
            assert_eq!(hash, intern::hash_stack(ips));
        });
    }
}
