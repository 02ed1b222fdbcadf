//! The rule cache and the walk: each thread slot's table of unwind rules by return address,
//! learnt from framehop once per address and executed inline (rules at the top of
//! `cached/mod.rs`).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicPtr, Ordering::*};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, MayAllocateDuringUnwind, Unwinder};

use super::modules::{refresh, snapshot, Snapshot};
use crate::callsite::capture::thread_stack;
use crate::callsite::intern;
use crate::thread::{self, ThreadState, MAX_THREADS};

type Cache = CacheX86_64<MayAllocateDuringUnwind>;

/// A slot's caches: the fast rule table, and framehop's cache for the rules it computes.
struct Caches {
    fast: Box<[Fast]>,
    framehop: Cache,
}

/// Entries of the per-slot fast rule table (2-way set-associative on a hash of the
/// address: 1024 sets of 2).
const FAST_ENTRIES: usize = 2048;
const FAST_EMPTY: u8 = 0;
/// CFA = sp + cfa_off.
const FAST_SP: u8 = 1;
/// CFA = bp + cfa_off.
const FAST_BP: u8 = 2;
/// No caller frame (end of the stack, or a frame that cannot be unwound).
const FAST_END: u8 = 3;
/// Not expressible here: ask framehop each time.
const FAST_SLOW: u8 = 4;

/// One cached unwind rule, in the form every rule framehop caches on x86_64 reduces to:
/// `CFA = (sp or bp) + cfa_off`, return address at `CFA - 8`, caller's sp = CFA, caller's
/// bp unchanged or read at `CFA + bp_off`.
#[derive(Clone, Copy)]
struct Fast {
    /// Lookup address (return address - 1).
    key: u64,
    /// Snapshot generation the rule was computed in.
    gen: u32,
    kind: u8,
    bp_saved: bool,
    cfa_off: i32,
    bp_off: i32,
}

const FAST_NONE: Fast = Fast {
    key: 0,
    gen: 0,
    kind: FAST_EMPTY,
    bp_saved: false,
    cfa_off: 0,
    bp_off: 0,
};

#[inline]
fn fast_index(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FAST_ENTRIES.trailing_zeros())) as usize
}

/// Computes the fast rule of a return address by letting framehop unwind that one frame
/// on a synthetic stack whose every word holds its own address (plus a tag): where the
/// caller's sp lands, where the return address and the caller's bp were read from, give
/// the rule. A second probe with other register values must agree, or the frame is left
/// to framehop (`FAST_SLOW`: e.g. a CFA computed by a DWARF expression).
#[cold]
#[inline(never)]
fn probe(snap: &Snapshot, address: FrameAddress, cache: &mut Cache, key: u64) -> Fast {
    const TAG: u64 = 0x4000_0000_0000_0000;
    let mut read = |a: u64| -> Result<u64, ()> { Ok(a.wrapping_add(TAG)) };
    let run =
        |sp: u64, bp: u64, cache: &mut Cache, read: &mut dyn FnMut(u64) -> Result<u64, ()>| {
            let mut regs = UnwindRegsX86_64::new(0, sp, bp);
            let r = snap
                .unwinder
                .unwind_frame(address, &mut regs, cache, &mut |a| read(a));
            (r, regs.sp(), regs.bp())
        };
    let mut out = Fast {
        key,
        gen: snap.gen,
        ..FAST_NONE
    };
    let (s1, b1) = (0x1000_0000_0000u64, 0x2000_0000_0000u64);
    let (r, sp, bp) = run(s1, b1, cache, &mut read);
    let ret = match r {
        Ok(Some(ret)) => ret,
        _ => {
            out.kind = FAST_END;
            return out;
        }
    };
    let off = |v: u64, base: u64| i32::try_from(v.wrapping_sub(base) as i64).ok();
    let slow = Fast {
        kind: FAST_SLOW,
        ..out
    };
    let (kind, cfa_off) = match (off(sp, s1), off(sp, b1)) {
        (Some(o), _) => (FAST_SP, o),
        (_, Some(o)) => (FAST_BP, o),
        _ => return slow,
    };
    if ret != sp.wrapping_sub(8).wrapping_add(TAG) {
        return slow;
    }
    out.kind = kind;
    out.cfa_off = cfa_off;
    if bp != b1 {
        match off(bp.wrapping_sub(TAG), sp) {
            Some(o) => {
                out.bp_saved = true;
                out.bp_off = o;
            }
            None => return slow,
        }
    }
    if kind == FAST_BP && cfa_off == 16 && out.bp_saved && out.bp_off == -16 && !snap.has_fde(key) {
        out.kind = FAST_END;
        return out;
    }
    // The second probe: other registers, the same rule must predict the result.
    let (s2, b2) = (0x1800_0000_0000u64, 0x2800_0000_0000u64);
    let (r2, sp2, bp2) = run(s2, b2, cache, &mut read);
    let cfa2 = if kind == FAST_SP { s2 } else { b2 }.wrapping_add(cfa_off as i64 as u64);
    let bp_expect = if out.bp_saved {
        cfa2.wrapping_add(out.bp_off as i64 as u64)
            .wrapping_add(TAG)
    } else {
        b2
    };
    let ok = matches!(r2, Ok(Some(r)) if r == cfa2.wrapping_sub(8).wrapping_add(TAG))
        && sp2 == cfa2
        && bp2 == bp_expect;
    if ok {
        out
    } else {
        slow
    }
}

/// The rule caches of each thread slot, allocated on the slot's first capture.
static CACHES: [AtomicPtr<Caches>; MAX_THREADS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];

/// Records up to `buf.len()` return addresses, starting with the caller of this function,
/// and their running hash. `None` when this thread cannot use the caching unwinder now
/// (no slot, not on its own stack, no module data): the caller falls back to libgcc.
#[inline(never)]
pub(crate) fn walk(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<(usize, u64)> {
    let slot = thread::slot_index(t)?;
    let (stack_lo, hi) = thread_stack(t)?;
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads the instruction pointer, stack pointer and frame-pointer register into
    // locals; no memory is touched.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let lo = sp as usize;
    // On another stack than the thread's own (a signal's alternate stack): let libgcc,
    // which knows signal frames, do it.
    if lo < stack_lo || lo >= hi {
        return None;
    }
    let mut snap = snapshot()?;
    let caches = cache_for(slot)?;
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let a = addr as usize;
        if a < lo || a % 8 != 0 || a > hi.saturating_sub(8) {
            return Err(());
        }
        // SAFETY: `lo <= a` and `a + 8 <= hi`: inside this thread's mapped stack, from the
        // current frame to its top, and 8-aligned.
        Ok(unsafe { core::ptr::read_volatile(a as *const u64) })
    };
    let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
    let mut address = FrameAddress::from_instruction_pointer(pc);
    let mut n = 0;
    let mut h = intern::HASH_START;
    // The code range of the last frame's module: consecutive frames are usually in the
    // same module, so most frames skip the search.
    let mut known = snap.range_of(pc).unwrap_or((0, 0));
    while n < buf.len() {
        // The cached rule of a return address; the first frame (the current pc) has none.
        let fast = if address.is_return_address() {
            let key = address.address_for_lookup();
            let set = fast_index(key) & !1;
            let Some([w0, w1]) = caches.fast.get_mut(set..set + 2) else {
                break;
            };
            let hit = |w: &Fast| w.key == key && w.gen == snap.gen;
            let e: Fast = if hit(w0) {
                *w0
            } else if hit(w1) {
                *w1
            } else {
                // Two ways: the newcomer takes way 0, the previous way 0 moves to way 1,
                // so two addresses sharing a set never evict each other.
                *w1 = *w0;
                *w0 = probe(snap, address, &mut caches.framehop, key);
                *w0
            };
            Some(e)
        } else {
            None
        };
        let ret = match fast {
            Some(e) if e.kind == FAST_END => break,
            Some(e) if e.kind == FAST_SP || e.kind == FAST_BP => {
                let base = if e.kind == FAST_SP {
                    regs.sp()
                } else {
                    regs.bp()
                };
                let cfa = base.wrapping_add(e.cfa_off as i64 as u64);
                if cfa <= regs.sp() {
                    break;
                }
                let Ok(ret) = read_stack(cfa.wrapping_sub(8)) else {
                    break;
                };
                if e.bp_saved {
                    let Ok(bp) = read_stack(cfa.wrapping_add(e.bp_off as i64 as u64)) else {
                        break;
                    };
                    regs.set_bp(bp);
                }
                regs.set_sp(cfa);
                ret
            }
            // The first frame, or a rule the fast form cannot express: framehop, every
            // time.
            _ => match snap.unwinder.unwind_frame(
                address,
                &mut regs,
                &mut caches.framehop,
                &mut read_stack,
            ) {
                Ok(Some(ret)) => ret,
                _ => break,
            },
        };
        if ret == 0 {
            break;
        }
        buf[n] = MaybeUninit::new(ret as usize);
        h = intern::mix(h, ret);
        n += 1;
        if ret < known.0 || ret >= known.1 {
            match snap.range_of(ret) {
                Some(r) => known = r,
                None => match refresh(ret) {
                    Some((s, r)) => {
                        snap = s;
                        known = r;
                    }
                    // No module has it: this frame cannot be unwound, the stack ends.
                    None => break,
                },
            }
        }
        match FrameAddress::from_return_address(ret) {
            Some(a) => address = a,
            None => break,
        }
    }
    Some((n, h))
}

/// This slot's rule caches, allocated on first use.
#[inline]
fn cache_for(slot: usize) -> Option<&'static mut Caches> {
    let cell = CACHES.get(slot)?;
    let mut p = cell.load(Relaxed);
    if p.is_null() {
        p = new_cache(cell);
    }
    // SAFETY: the cache is a leaked box owned by this slot; the slot's single owner thread
    // is the only user, and not reentrantly (capture runs with the thread marked busy).
    unsafe { p.as_mut() }
}

#[cold]
#[inline(never)]
fn new_cache(cell: &AtomicPtr<Caches>) -> *mut Caches {
    let p = Box::into_raw(Box::new(Caches {
        fast: vec![FAST_NONE; FAST_ENTRIES].into_boxed_slice(),
        framehop: Cache::new(),
    }));
    cell.store(p, Relaxed);
    p
}
