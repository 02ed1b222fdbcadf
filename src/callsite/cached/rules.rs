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

/// A slot's caches: the fast rule table, framehop's cache for the rules it computes, and the
/// last two walks (the previous one is the memo the next walk validates; see [`Memo`]).
struct Caches {
    /// Snapshot generation the rules and the memo were computed in (cleared on a change).
    gen: u32,
    /// The code range of the module of the last frame unwound (of this generation):
    /// consecutive frames are usually in the same module, so most skip the search.
    known: (u64, u64),
    fast: &'static mut [Fast; FAST_ENTRIES],
    framehop: Cache,
    memo: Memo,
}

/// Entries of the per-slot fast rule table (2-way set-associative on a hash of the
/// address: 1024 sets of 2).
const FAST_ENTRIES: usize = 2048;
/// `Fast::key` of an unused entry: no lookup address is all ones (a return address of 0
/// ends the walk before its lookup).
const KEY_NONE: u64 = u64::MAX;
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
/// bp unchanged or read at `CFA + bp_off`. 16 bytes: four rules per cache line.
#[derive(Clone, Copy)]
struct Fast {
    /// Lookup address (return address - 1; the current pc for the walk's own frame).
    key: u64,
    cfa_off: i32,
    bp_off: i16,
    kind: u8,
    bp_saved: bool,
}

const FAST_NONE: Fast = Fast {
    key: KEY_NONE,
    cfa_off: 0,
    bp_off: 0,
    kind: FAST_END,
    bp_saved: false,
};

/// The state of a walk before one frame is unwound: the frame's lookup address and the
/// registers that unwinding reads (x86_64 unwind rules use only sp and bp).
#[derive(Clone, Copy, PartialEq, Eq)]
struct State {
    key: u64,
    sp: u64,
    bp: u64,
}

/// One unwound frame of a recorded walk: the state before it, the (at most two) stack words
/// its unwinding read (a rule that reads one word records it twice), the return address it
/// gave, and the stack hash of the walk from this frame to its end (`intern::mix` folded from
/// the outermost frame in). 64 bytes.
#[derive(Clone, Copy)]
struct Step {
    before: State,
    a0: u64,
    v0: u64,
    a1: u64,
    v1: u64,
    ret: u64,
    tail_hash: u64,
}

const STEP_NONE: Step = Step {
    before: State {
        key: 0,
        sp: 0,
        bp: 0,
    },
    a0: 0,
    v0: 0,
    a1: 0,
    v1: 0,
    ret: 0,
    tail_hash: 0,
};

/// Why a recorded walk stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// For a reason that depends only on the state and the words read (an end rule, a
    /// return address of 0, a CFA below sp): a walk that reaches the same point stops too.
    Done,
    /// For a reason outside the record (the buffer was full, a read outside the current
    /// bounds, an unknown module, a rule that read more than two words): a walk that
    /// reaches the same point goes on unwinding from `Walk::last`.
    Resume,
}

/// Frames a memo holds (the deepest stack recorded).
const MEMO_STEPS: usize = crate::callsite::capture::MAX_FRAMES_LIMIT;

/// The walk memo. Unwinding is a deterministic function of the starting state, the rules
/// (fixed per snapshot generation) and the stack words it reads. So when a walk reaches a
/// state that the previous walk passed through (same lookup address, sp and bp), the rest of
/// that walk is the answer if every word it read still holds the value it read: checking
/// that is one load and compare per word, instead of a rule lookup and its execution per
/// frame. Consecutive allocations usually share the bottom of their stacks (the caller's
/// callers, `main`), so only the frames above the first shared state are unwound. A word that
/// changed ends the reuse at that frame, and the walk continues from the state before it.
///
/// The recorded walk is kept at the end of `steps` (`steps[start..]`, innermost first), so
/// the frames a new walk shares with it stay where they are: the new walk writes only the
/// frames it unwound (into `top`) and puts them just before the shared ones.
struct Memo {
    steps: &'static mut [Step; MEMO_STEPS],
    /// First recorded step; `MEMO_STEPS`: nothing recorded.
    start: usize,
    /// The state after the last recorded step, and why the walk stopped there.
    last: State,
    end: End,
    /// The steps of the walk in progress that are not (yet) placed in `steps`.
    top: &'static mut [Step; MEMO_STEPS],
}

fn new_memo() -> Option<Memo> {
    // SAFETY: `Step` is plain integers: all zeros is a valid value.
    let (steps, top) = unsafe { (mapped_array()?, mapped_array()?) };
    Some(Memo {
        steps,
        start: MEMO_STEPS,
        last: STEP_NONE.before,
        end: End::Resume,
        top,
    })
}

/// A zeroed array in its own anonymous mapping, never unmapped. The rule tables and memos
/// (about 48 KiB per thread slot) are kept out of the program's heap: allocated from it on a
/// thread's first capture, they moved glibc's top chunk and made it consolidate its fast
/// bins on many later frees (measured in the program's own `malloc`/`free`).
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn mapped_array<T, const N: usize>() -> Option<&'static mut [T; N]> {
    let size = core::mem::size_of::<[T; N]>();
    // SAFETY: an anonymous private mapping of `size` bytes, no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p.is_null() {
        return None;
    }
    // SAFETY: the mapping is page-aligned (enough for `T`), `size` bytes, zero-filled (a
    // valid `[T; N]` by the caller's guarantee), never unmapped, and referenced only here.
    Some(unsafe { &mut *p.cast::<[T; N]>() })
}

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
    let mut out = Fast { key, ..FAST_NONE };
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
        match off(bp.wrapping_sub(TAG), sp).and_then(|o| i16::try_from(o).ok()) {
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
        cfa2.wrapping_add(i64::from(out.bp_off) as u64)
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

/// The readable part of this thread's stack during a walk: 8-aligned words from the current
/// frame (`lo`) up to the top.
#[derive(Clone, Copy)]
struct Bounds {
    lo: u64,
    /// Highest readable word address minus `lo`.
    span: u64,
}

impl Bounds {
    /// Whether the word at `a`, an 8-aligned address read before, is readable and holds `v`.
    #[inline(always)]
    fn holds(self, a: u64, v: u64) -> bool {
        if a.wrapping_sub(self.lo) > self.span {
            return false;
        }
        // SAFETY: as in `read`; `a` is 8-aligned (a recorded read, which checked it).
        unsafe { core::ptr::read_volatile(a as *const u64) == v }
    }

    #[inline(always)]
    fn read(self, a: u64) -> Option<u64> {
        if a.wrapping_sub(self.lo) > self.span || a % 8 != 0 {
            return None;
        }
        // SAFETY: `lo <= a <= lo + span`, and `lo + span + 8` is at most the top of this
        // thread's mapped stack (`walk` checked `lo` lies in it): the word is inside the
        // stack, from the current frame up, and 8-aligned.
        Some(unsafe { core::ptr::read_volatile(a as *const u64) })
    }
}

/// The rule caches of each thread slot, allocated on the slot's first capture.
static CACHES: [AtomicPtr<Caches>; MAX_THREADS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];

/// Records up to `buf.len()` return addresses, starting with the caller of this function,
/// and their running hash. `None` when this thread cannot use the caching unwinder now
/// (no slot, not on its own stack, no module data): the caller falls back to libgcc.
///
/// Inlined (with `capture`) into the allocator's recording functions: each function between
/// the allocation and the walk is one more frame to unwind on every capture.
#[inline(always)]
pub(crate) fn walk(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<(usize, u64)> {
    walk_with(t, buf, true)
}

/// [`walk`], reusing the previous walk's frames where they still hold (`memo`) or unwinding
/// every frame (to check the memo against).
#[inline(always)]
fn walk_with(
    t: &ThreadState,
    buf: &mut [MaybeUninit<usize>],
    memo_on: bool,
) -> Option<(usize, u64)> {
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
    // On another stack than the thread's own (a signal's alternate stack): let libgcc,
    // which knows signal frames, do it.
    if (sp as usize) < stack_lo || sp as usize >= hi {
        return None;
    }
    let stack = Bounds {
        lo: sp,
        span: (hi as u64).saturating_sub(8).checked_sub(sp)?,
    };
    let mut snap = snapshot()?;
    let caches = cache_for(slot)?;
    if caches.gen != snap.gen {
        caches.reset(snap.gen);
    }
    let Caches {
        gen,
        known,
        fast,
        framehop,
        memo,
    } = caches;
    // The recorded walk is `memo.steps[j..]`; `j` is the next step the walk may meet (the
    // sps of both walks only grow), `jsp` its sp (`u64::MAX`: none left).
    let mut j = if memo_on { memo.start } else { MEMO_STEPS };
    let sp_at = |steps: &[Step; MEMO_STEPS], j: usize| match steps.get(j) {
        Some(s) => s.before.sp,
        None => u64::MAX,
    };
    let mut jsp = sp_at(memo.steps, j);
    let mut st = State { key: pc, sp, bp };
    let mut n = 0;
    // This walk's steps not taken from the recorded walk's tail: `memo.top[..top_len]`.
    let mut top_len = 0;
    // The recorded walk's tail this walk ends with, from `memo.steps[tail..]` (the walk
    // ended as the recorded one did).
    let mut tail: Option<usize> = None;
    // Set when a step could not be recorded: the record stops before it.
    let mut cut: Option<(usize, State)> = None;
    // Whether this walk may be the next one's memo (not across a snapshot change).
    let mut keep = true;
    let end = loop {
        if n >= buf.len() {
            break End::Resume;
        }
        while jsp < st.sp {
            j += 1;
            jsp = sp_at(memo.steps, j);
        }
        if jsp == st.sp && memo.steps[j % MEMO_STEPS].before == st {
            // The recorded walk passed through this state: take its frames while the words
            // they were read from are unchanged.
            let mut m = j;
            let limit = MEMO_STEPS.min(j + (buf.len() - n));
            while m < limit {
                let s = &memo.steps[m % MEMO_STEPS];
                if !(stack.holds(s.a0, s.v0) & stack.holds(s.a1, s.v1)) {
                    break;
                }
                if let Some(b) = buf.get_mut(n) {
                    *b = MaybeUninit::new(s.ret as usize);
                }
                n += 1;
                m += 1;
            }
            if m == MEMO_STEPS && memo.end == End::Done && top_len <= j {
                // All of it holds: the walk ends as the recorded one did.
                tail = Some(j);
                break End::Done;
            }
            // Part of it: copy the steps taken into this walk's record and unwind on from
            // the state where the reuse stopped.
            for k in j..m {
                if let Some(t) = memo.top.get_mut(top_len) {
                    *t = memo.steps[k % MEMO_STEPS];
                    top_len += 1;
                }
            }
            st = if m == MEMO_STEPS {
                memo.last
            } else {
                memo.steps[m % MEMO_STEPS].before
            };
            j = m + 1;
            jsp = sp_at(memo.steps, j);
            continue;
        }
        // A frame past the first must be in a known module (a library loaded since the
        // snapshot is picked up here); an address in none ends the stack.
        if n > 0 {
            let ret = st.key.wrapping_add(1);
            if ret < known.0 || ret >= known.1 {
                match snap.range_of(ret) {
                    Some(r) => *known = r,
                    None => match refresh(ret) {
                        Some((s, r)) => {
                            snap = s;
                            *known = r;
                            *gen = s.gen;
                            fast.fill(FAST_NONE);
                            keep = false;
                            jsp = u64::MAX;
                        }
                        None => break End::Resume,
                    },
                }
            }
        }
        let address = if n == 0 {
            FrameAddress::from_instruction_pointer(st.key)
        } else {
            match FrameAddress::from_return_address(st.key.wrapping_add(1)) {
                Some(a) => a,
                None => break End::Done,
            }
        };
        // The cached rule of this address (2-way: the newcomer takes way 0, the previous way
        // 0 moves to way 1, so two addresses sharing a set never evict each other).
        let set = fast_index(st.key) & !1;
        let e = if fast[set].key == st.key {
            fast[set]
        } else if fast[set + 1].key == st.key {
            fast[set + 1]
        } else {
            let e = probe(snap, address, framehop, st.key);
            fast[set + 1] = fast[set];
            fast[set] = e;
            e
        };
        let mut step = Step {
            before: st,
            ..STEP_NONE
        };
        match e.kind {
            FAST_SP | FAST_BP => {
                let base = if e.kind == FAST_SP { st.sp } else { st.bp };
                let cfa = base.wrapping_add(e.cfa_off as i64 as u64);
                if cfa <= st.sp {
                    break End::Done;
                }
                step.a0 = cfa.wrapping_sub(8);
                let Some(ret) = stack.read(step.a0) else {
                    break End::Resume;
                };
                step.v0 = ret;
                step.ret = ret;
                (step.a1, step.v1) = (step.a0, ret);
                if e.bp_saved {
                    step.a1 = cfa.wrapping_add(i64::from(e.bp_off) as u64);
                    let Some(v) = stack.read(step.a1) else {
                        break End::Resume;
                    };
                    step.v1 = v;
                    st.bp = v;
                }
                st.sp = cfa;
            }
            FAST_END => break End::Done,
            // A rule the fast form cannot express: framehop, every time, recording the words
            // it reads so the memo can check them.
            _ => {
                let mut regs = UnwindRegsX86_64::new(st.key, st.sp, st.bp);
                let mut reads = [(0u64, 0u64); 2];
                let mut count = 0usize;
                let r = snap
                    .unwinder
                    .unwind_frame(address, &mut regs, framehop, &mut |a| {
                        let v = stack.read(a).ok_or(())?;
                        if let Some(slot) = reads.get_mut(count) {
                            *slot = (a, v);
                        }
                        count += 1;
                        Ok(v)
                    });
                let Ok(Some(ret)) = r else {
                    break End::Resume;
                };
                if !(1..=2).contains(&count) && cut.is_none() {
                    cut = Some((top_len, st));
                }
                (step.a0, step.v0) = reads[0];
                (step.a1, step.v1) = if count >= 2 { reads[1] } else { reads[0] };
                step.ret = ret;
                st.sp = regs.sp();
                st.bp = regs.bp();
            }
        }
        if step.ret == 0 {
            break End::Done;
        }
        buf[n] = MaybeUninit::new(step.ret as usize);
        if let Some(t) = memo.top.get_mut(top_len) {
            *t = step;
            top_len += 1;
        }
        n += 1;
        st.key = step.ret.wrapping_sub(1);
    };
    let mut h = intern::HASH_START;
    match tail {
        // The record is this walk's own steps followed by the recorded tail, which stays in
        // place (they fit: `top_len + MEMO_STEPS - at = n <= MEMO_STEPS`): the stack's hash
        // is the tail's, then the own steps folded in, each keeping its partial hash.
        Some(at) if memo_on && keep && cut.is_none() => {
            h = memo.steps[at % MEMO_STEPS].tail_hash;
            for i in (0..top_len).rev() {
                let mut s = memo.top[i % MEMO_STEPS];
                h = intern::mix(h, s.ret);
                s.tail_hash = h;
                memo.steps[(at - top_len + i) % MEMO_STEPS] = s;
            }
            memo.start = at - top_len;
            return Some((n, h));
        }
        Some(at) => h = memo.steps[at % MEMO_STEPS].tail_hash,
        None => {}
    }
    // SAFETY: the first `n` elements of `buf` were written above.
    let frames = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u64>(), n) };
    let own = if tail.is_some() { top_len.min(n) } else { n };
    for &ret in frames[..own].iter().rev() {
        h = intern::mix(h, ret);
    }
    if !keep {
        memo.start = MEMO_STEPS;
    } else if memo_on {
        // The record is `top[..len]`, then the state after it: move it to the end of
        // `steps`, with the partial hashes (used only by a walk that reaches its end).
        let (len, last, end) = match cut {
            Some((len, at)) => (len, at, End::Resume),
            None => (top_len, st, end),
        };
        let len = len.min(MEMO_STEPS).min(n);
        let mut th = intern::HASH_START;
        for i in (0..len).rev() {
            let mut s = memo.top[i % MEMO_STEPS];
            th = intern::mix(th, s.ret);
            s.tail_hash = th;
            memo.steps[(MEMO_STEPS - len + i) % MEMO_STEPS] = s;
        }
        memo.start = MEMO_STEPS - len;
        memo.last = last;
        memo.end = end;
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
    let Some(caches) = new_caches() else {
        return core::ptr::null_mut();
    };
    let p = Box::into_raw(Box::new(caches));
    cell.store(p, Relaxed);
    p
}

fn new_caches() -> Option<Caches> {
    Some(Caches {
        gen: 0,
        known: (0, 0),
        // SAFETY: `Fast` is integers and a `bool`: all zeros is a valid value (the table
        // is filled with `FAST_NONE` by `reset` before first use: `gen` 0 is no snapshot's).
        fast: unsafe { mapped_array()? },
        framehop: Cache::new(),
        memo: new_memo()?,
    })
}

impl Caches {
    /// Forgets every rule and the memo: the snapshot changed (a module may now be loaded
    /// where another one was).
    #[cold]
    fn reset(&mut self, gen: u32) {
        self.gen = gen;
        self.known = (0, 0);
        self.fast.fill(FAST_NONE);
        self.memo.start = MEMO_STEPS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hint::black_box;

    /// `walk` without the memo: every frame unwound.
    #[inline(never)]
    fn walk_plain(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<(usize, u64)> {
        walk_with(t, buf, false)
    }

    /// `walk`, as a frame of its own like `walk_plain`.
    #[inline(never)]
    fn walk_memo(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<(usize, u64)> {
        walk(t, buf)
    }

    fn frames(buf: &[MaybeUninit<usize>], n: usize) -> Vec<usize> {
        // SAFETY: the walk initialised the first `n` elements.
        unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<usize>(), n) }.to_vec()
    }

    /// Both walks from the same frame; their first frames differ (two call sites here),
    /// everything below must be equal, and the memo walk's hash must be its frames' hash.
    #[inline(never)]
    fn compare(t: &ThreadState, depth: usize) -> usize {
        let mut a = [MaybeUninit::<usize>::uninit(); MEMO_STEPS];
        let mut b = [MaybeUninit::<usize>::uninit(); MEMO_STEPS];
        let (n, _) = walk_plain(t, &mut a[..depth]).expect("plain walk");
        let (m, h) = walk_memo(t, &mut b[..depth]).expect("memo walk");
        let (plain, memo) = (frames(&a, n), frames(&b, m));
        assert_eq!(n, m, "depth {depth}");
        assert_eq!(plain[1..], memo[1..], "depth {depth}");
        assert_eq!(
            intern::hash_finish(h, m),
            intern::hash_stack(&memo),
            "depth {depth}"
        );
        n
    }

    #[inline(never)]
    fn left(t: &ThreadState, level: usize, path: u64, depth: usize) -> usize {
        let local = black_box([path; 4]);
        let n = rec(t, level, path, depth);
        black_box(local);
        n
    }

    #[inline(never)]
    fn right(t: &ThreadState, level: usize, path: u64, depth: usize) -> usize {
        let local = black_box([path, 1, 2, 3, 4, 5, 6, 7]);
        let n = rec(t, level, path, depth);
        black_box(local);
        n
    }

    /// Recurses `level` times, through `left` or `right` as the bits of `path` say, then
    /// compares: stacks of every depth and shape, sharing prefixes and suffixes in turn.
    #[inline(never)]
    fn rec(t: &ThreadState, level: usize, path: u64, depth: usize) -> usize {
        if level == 0 {
            return compare(t, depth);
        }
        if path >> level & 1 == 0 {
            black_box(left(t, level - 1, path, depth))
        } else {
            black_box(right(t, level - 1, path, depth))
        }
    }

    #[test]
    fn memo_walks_equal_full_walks() {
        std::thread::spawn(|| {
            crate::thread::TLS.with(|t| {
                // A counter slot, as the allocator claims on a thread's first allocation.
                crate::thread::count_alloc(t, 0);
                crate::thread::count_free(t, t.path.get(), t.run.get(), 0);
                let mut deepest = 0;
                for round in 0..400u64 {
                    let level = (round * 7 % 13) as usize;
                    let path = round.wrapping_mul(0x9E37_79B9) >> 3;
                    // Mostly the full depth, sometimes cut short (the memo's end).
                    let depth = if round % 5 == 0 {
                        6 + round as usize % 20
                    } else {
                        128
                    };
                    deepest = deepest.max(rec(t, level, path, depth));
                    // Back to back from the same place: the whole memo holds.
                    rec(t, level, path, depth);
                }
                assert!(deepest > 12, "walks were {deepest} frames deep");
            });
        })
        .join()
        .unwrap();
    }
}
