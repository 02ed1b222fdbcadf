//! Raw stack capture: instruction pointers only, never symbols, never an allocation.
//!
//! Runs inside the allocator, so it must not allocate, lock or fault:
//! * the frame-pointer walk reads only addresses between the current stack pointer and the top
//!   of the current thread's stack (both mapped), 8-byte aligned, strictly increasing, so any
//!   garbage in a frame-pointer register ends the walk instead of faulting;
//! * the DWARF path uses `backtrace::trace_unsynchronized`, which on Linux calls libgcc's
//!   `_Unwind_Backtrace` (thread-safe, no Rust allocation).

use core::sync::atomic::Ordering::Relaxed;

use crate::thread::ThreadState;

/// Hard upper bound on recorded frames (the buffer lives on the stack).
pub(crate) const MAX_FRAMES_LIMIT: usize = 128;

/// Whether the crate was compiled with frame pointers (set by `build.rs` from the rustflags).
pub(crate) fn frame_pointers_default() -> bool {
    cfg!(allocscope_frame_pointers)
        && cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && cfg!(target_os = "linux")
}

/// Records up to `buf.len()` return addresses of the current stack into `buf`; returns how many.
#[inline(never)]
pub(crate) fn capture(t: &ThreadState, buf: &mut [usize]) -> usize {
    let depth = (super::MAX_FRAMES.load(Relaxed) as usize).min(buf.len());
    let buf = &mut buf[..depth];
    if super::unwinder() == super::Unwinder::FramePointers {
        if let Some(n) = frame_pointer_walk(t, buf) {
            return n;
        }
    }
    dwarf(buf)
}

fn dwarf(buf: &mut [usize]) -> usize {
    let mut n = 0;
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not take backtrace's global
    // lock, which exists for Windows' dbghelp. On Linux it calls `_Unwind_Backtrace`, which is
    // thread-safe; the closure only writes into `buf`, within bounds.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if n < buf.len() {
                buf[n] = frame.ip() as usize;
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
fn frame_pointer_walk(t: &ThreadState, buf: &mut [usize]) -> Option<usize> {
    let hi = match t.stack_hi.get() {
        0 => {
            let hi = stack_top()?;
            t.stack_hi.set(hi);
            hi
        }
        hi => hi,
    };
    let marker = 0u8;
    let lo = core::ptr::addr_of!(marker) as usize;
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
        buf[n] = ret;
        n += 1;
        // Callers' frames are at higher addresses; anything else is garbage or the end.
        if next <= fp {
            break;
        }
        fp = next;
    }
    Some(n)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn frame_pointer_walk(_t: &ThreadState, _buf: &mut [usize]) -> Option<usize> {
    None
}

/// Highest address of the current thread's stack, from pthread (glibc reads it without
/// calling the Rust allocator).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[cold]
fn stack_top() -> Option<usize> {
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
        Some(addr as usize + size)
    }
}
