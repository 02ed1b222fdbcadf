//! The allocator wrapper: the hot path.
//!
//! # Rules for everything reachable from `alloc`, `dealloc`, `realloc`, `alloc_zeroed`
//!
//! Code here runs inside every allocation of the host program — inside its locks, its panics,
//! its thread teardown, and inside allocscope's own reporting. It therefore:
//!
//! * **never panics**: no `unwrap`, no indexing that can fail (ids read from headers are
//!   masked), no arithmetic that can overflow in debug builds (wrapping or checked ops);
//! * **never takes a lock**: counters are per-thread (owner-written) or shared atomics; stack
//!   and site interning are lock-free tables (`callsite::intern`);
//! * **never recurses into tracking**: the thread-local `busy` flag marks the tracker's own
//!   work; an allocation made while it is set is charged to the tracker path with plain atomics
//!   and nothing else;
//! * **never allocates** itself, and only touches: the block header, `thread::TLS` (const, no
//!   destructor), the thread's counter slot, the static path/run/site tables, and — in `Every`
//!   or sampled mode — the current stack (read-only, bounds-checked);
//! * **cold exceptions**, once per thread or only when asked for: a thread's first allocation
//!   claims a counter slot and registers its exit destructor (glibc's
//!   `__cxa_thread_atexit_impl`, which uses C `malloc`, never this allocator); the first stack
//!   captured on a thread asks pthread for the stack bounds (also C `malloc` for the main
//!   thread); libgcc's DWARF unwinder (`Unwinder::Dwarf`, and the fallback of the others)
//!   takes the dynamic loader's recursive lock in `dl_iterate_phdr`; the caching unwinder
//!   (`Unwinder::Cached`, the default without frame pointers) takes a lock only when it meets a
//!   module it does not know yet (`try_lock`, never waiting; see `callsite::cached`) — the
//!   frame-pointer walk takes none;
//! * **splits fast from slow by structure**: `fast_alloc` / `fast_free` test every condition
//!   of the common case (thread state reachable, not busy, slot claimed and not asked to
//!   leave a closed span's scope, no stack to record; for a free, a block of the current
//!   context with no callsite, or of the context the thread's foreign-free batch collects)
//!   before writing anything and
//!   call nothing, so the entry points need few saved registers; any other case goes to a
//!   `#[cold]` function that runs the full path (`on_alloc` / `on_free` / `on_realloc`) from
//!   the start, so both routes decide and count exactly the same;
//! * **forwards to the inner allocator's own entry points** (`alloc_zeroed` and `realloc` are
//!   not emulated), asking for `size + offset` bytes as described in `header`.
//!
//! Attribution is decided here: a block belongs to the innermost scope active on the allocating
//! thread (its path and run go in the header); a free is charged back to the header's path and
//! run, whichever thread frees it and whenever; a realloc is a free of the old block plus an
//! allocation of the new one in the current scope.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::Ordering::Relaxed;
use std::alloc::System;

use crate::callsite::{self, capture, intern};
use crate::header::{self, Header};
use crate::registry::{self, PATH_TRACKER};
use crate::thread::{self, Context, ThreadSlot, ThreadState, TLS};

/// A `GlobalAlloc` that attributes every block to the job scope that allocated it.
///
/// Wraps any other global allocator (`System` by default, or mimalloc, jemalloc, …) and adds a
/// header in front of each block: 8 bytes for alignments up to 8 (16 for sampled blocks and
/// alignment 16, `align` bytes above; see the `header` module).
///
/// ```
/// use allocscope::TrackingAllocator;
///
/// #[global_allocator]
/// static ALLOC: TrackingAllocator = TrackingAllocator::system();
/// # fn main() {}
/// ```
pub struct TrackingAllocator<A: GlobalAlloc = System> {
    inner: A,
}

impl TrackingAllocator<System> {
    /// Tracks allocations made with the system allocator.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A: GlobalAlloc> TrackingAllocator<A> {
    /// Tracks allocations made with `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A: GlobalAlloc> core::fmt::Debug for TrackingAllocator<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The inner allocator need not be `Debug` (`System` is, most others are not).
        f.debug_struct("TrackingAllocator")
            .field("inner", &core::any::type_name::<A>())
            .finish()
    }
}

impl Default for TrackingAllocator<System> {
    fn default() -> Self {
        Self::system()
    }
}

/// A call into the inner allocator. With the `malloc` feature, the `malloc` it may reach
/// must not count the block again (`cmalloc::rust_inner` tells it so).
#[inline(always)]
fn inner_call<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(allocscope_cmalloc)]
    {
        crate::cmalloc::rust_inner(f)
    }
    #[cfg(not(allocscope_cmalloc))]
    {
        f()
    }
}

/// Tracker's own allocations (counted with plain atomics, no thread state needed).
#[cold]
#[inline(never)]
fn tracker_alloc(bytes: u64) -> Header {
    let p = registry::path(PATH_TRACKER);
    p.counters.add_alloc(1, bytes);
    // The tracker's peak (a report's transient memory): two more atomic reads and a max, on
    // the tracker's own path only; never above the true live bytes.
    registry::TRACKER_PEAK_BYTES.fetch_max(p.counters.live_bytes(), Relaxed);
    Header {
        path: PATH_TRACKER,
        site: 0,
        run: 0,
        weight: 0.0,
    }
}

/// Decides the callsite of a new block (none, every, or sampled), capturing a stack if needed,
/// and charges the block to it. Only the `Off` test and the sampling countdown are inline.
#[inline(always)]
fn choose_site(t: &ThreadState, path: u32, size: u64) -> (u32, f32) {
    let mode = callsite::MODE.load(Relaxed);
    if mode == callsite::MODE_OFF {
        return (0, 0.0);
    }
    if mode != callsite::MODE_EVERY {
        let left = t.countdown.get().wrapping_sub(size as i64);
        t.countdown.set(left);
        if left > 0 {
            return (0, 0.0);
        }
        return sample(t, path, size, mode);
    }
    every(t, path, size)
}

/// `StackMode::Every`: a stack for this block, weight 1.
#[inline(never)]
fn every(t: &ThreadState, path: u32, size: u64) -> (u32, f32) {
    let site = record_stack(t, path);
    if site != 0 {
        intern::site_alloc(site, t.run.get(), size, 1.0);
    }
    (site, 1.0)
}

#[cold]
#[inline(never)]
fn sample(t: &ThreadState, path: u32, size: u64, mut mean: u64) -> (u32, f32) {
    if mean == callsite::MODE_UNSET {
        // The first allocation of the process: the environment decides the mode now, before
        // any block is recorded (every thread's countdown starts at 0, so the first
        // allocation always comes here).
        callsite::init_early();
        mean = callsite::MODE.load(Relaxed);
        match mean {
            callsite::MODE_OFF => return (0, 0.0),
            callsite::MODE_EVERY => return every(t, path, size),
            callsite::MODE_UNSET => mean = callsite::DEFAULT_SAMPLE_BYTES,
            _ => {}
        }
    }
    let mut rng = t.rng.get();
    if rng == 0 {
        // First sampling decision on this thread: seed (from the seed and the thread's
        // index, never an address: reproducible across processes) and draw the first gap.
        // The countdown was unset rather than crossed, so this block is not a sample.
        rng = callsite::thread_rng_seed();
        let gap = callsite::next_gap(&mut rng, mean);
        t.rng.set(rng);
        t.countdown.set(gap);
        return (0, 0.0);
    }
    // The countdown crossed zero inside this block: the block is sampled once, however many
    // sample points fell in it (probability 1 - exp(-size/mean)).
    let mut left = t.countdown.get();
    while left <= 0 {
        left = left.wrapping_add(callsite::next_gap(&mut rng, mean));
    }
    t.rng.set(rng);
    t.countdown.set(left);
    let site = record_stack(t, path);
    if site == 0 {
        return (0, 0.0);
    }
    let weight = callsite::sample_weight(size, mean);
    intern::site_alloc(site, t.run.get(), size, weight);
    (site, weight)
}

/// Inlined with the capture into `every` and `sample`: every function between the allocator
/// entry and the unwinder is one more frame to unwind on each capture.
#[inline(always)]
fn record_stack(t: &ThreadState, path: u32) -> u32 {
    // The capture and interning do not allocate, but mark the thread busy anyway so that any
    // allocation a platform unwinder might make is never tracked into itself.
    t.busy.set(true);
    let mut buf = [core::mem::MaybeUninit::<usize>::uninit(); capture::MAX_FRAMES_LIMIT];
    let (ips, hash) = capture::capture(t, &mut buf);
    let site = intern::intern_site(path, ips, hash);
    t.busy.set(false);
    site
}

/// Records a new block of `size` bytes in `t`'s current context and returns its header.
#[inline(always)]
fn alloc_in(t: &ThreadState, size: u64) -> Header {
    if t.busy.get() {
        return tracker_alloc(size);
    }
    thread::leave_if_asked(t);
    let path = t.path.get();
    let run = t.run.get();
    thread::count_alloc(t, size);
    let (site, weight) = choose_site(t, path, size);
    Header {
        path,
        site,
        run,
        weight,
    }
}

/// The current thread's state, or null if it cannot be reached.
///
/// Only the address is taken inside `LocalKey::try_with`'s closure, so the hot path stays
/// inline in the allocator entry points: with the whole hot path inside the closure, rustc
/// emits an out-of-line call (saved registers, the header returned through memory).
#[inline(always)]
fn state_ptr() -> *const ThreadState {
    TLS.try_with(|t| t as *const ThreadState)
        .unwrap_or(core::ptr::null())
}

/// Records a new block of `size` bytes in the current context and returns its header.
#[inline(always)]
fn on_alloc(size: u64) -> Header {
    // SAFETY: a non-null `state_ptr` points to this thread's `TLS`, which is const-initialised
    // and has no destructor, so it stays valid while this thread runs; the reference is used
    // only here, on this thread, and `ThreadState` holds only `Cell`s.
    match unsafe { state_ptr().as_ref() } {
        Some(t) => alloc_in(t, size),
        None => tracker_alloc(size),
    }
}

/// What the allocation fast path checked before the inner allocator is called: the thread's
/// claimed slot and its sampling countdown after this block.
#[derive(Clone, Copy)]
struct FastAlloc {
    slot: &'static ThreadSlot,
    countdown: i64,
}

/// The allocation fast path's test: a thread with a claimed slot, not busy, with no stack to
/// record (mode `Off`, or sampled with the countdown not crossed). Writes nothing, so it runs
/// before the inner allocator is called and decides the block's layout: a fast-path block has
/// no callsite and gets a narrow header; `None` means the full path (`on_alloc`) and a wide
/// header. Inside the fast path nothing is called, so the allocator entry points need no saved
/// registers beyond those around `malloc`.
#[inline(always)]
fn fast_alloc_check(t: &ThreadState, size: u64) -> Option<FastAlloc> {
    if t.busy.get() {
        return None;
    }
    let slot = thread::claimed_slot(t)?;
    // A span closed on another thread while this one is inside its scope (cold).
    if thread::asked_to_leave(slot) {
        return leave_first();
    }
    let mut countdown = t.countdown.get();
    let mode = callsite::MODE.load(Relaxed);
    if mode != callsite::MODE_OFF {
        // `Every` always records a stack. Sampled (and `MODE_UNSET`, whose countdown is 0 on
        // every thread until `sample` runs) stays here only while the countdown does not
        // cross zero, as in `choose_site`.
        if mode == callsite::MODE_EVERY {
            return None;
        }
        countdown = countdown.wrapping_sub(size as i64);
        if countdown <= 0 {
            return None;
        }
    }
    Some(FastAlloc { slot, countdown })
}

/// `fast_alloc_check`'s answer when the thread must first leave a closed span's scope (the
/// slow path does it): out of line, so the fast path keeps its layout.
#[cold]
#[inline(never)]
fn leave_first() -> Option<FastAlloc> {
    None
}

/// Records the block `fast_alloc_check` admitted (the inner allocator succeeded); returns its
/// context.
#[inline(always)]
fn fast_alloc_commit(t: &ThreadState, f: FastAlloc, size: u64) -> Context {
    t.countdown.set(f.countdown);
    let ctx = t.context();
    thread::count_alloc_in_slot(f.slot, ctx.run, size);
    ctx
}

/// The free fast path's test: a narrow block (so no callsite) of the thread's current context,
/// freed on a thread with a claimed slot that is not busy. Writes nothing; `None`: take
/// `on_free`. The tracker's own blocks are wide, so never match.
#[inline(always)]
fn fast_free_check(t: &ThreadState, word: u64) -> Option<&'static ThreadSlot> {
    // One test for four conditions (narrow, same path, same run, not busy): a chain of `||`
    // compiled to a ladder of flag materialisations.
    let differs = (word ^ header::narrow_word(t.path.get(), t.run.get())) | u64::from(t.busy.get());
    if differs != 0 {
        return None;
    }
    thread::claimed_slot(t)
}

/// The free fast path's second test: a narrow block of the context the thread's foreign-free
/// batch is collecting, with nothing else to charge (`ThreadState::foreign_word`), on a thread
/// that is not busy. Writes nothing; `None`: take `on_free`.
#[inline(always)]
fn fast_foreign_free_check(t: &ThreadState, word: u64) -> Option<&'static ThreadSlot> {
    let differs = (word ^ t.foreign_word.get()) | u64::from(t.busy.get());
    if differs != 0 {
        return None;
    }
    thread::claimed_slot(t)
}

/// Whether the next allocation of `size` bytes on this thread might record a callsite (so it
/// needs a wide header): the conditions under which `choose_site` calls `every` or `sample`,
/// read without changing anything. Errs towards `true`.
fn may_record_site(t: Option<&ThreadState>, size: u64) -> bool {
    let Some(t) = t else { return false };
    if t.busy.get() {
        return false;
    }
    match callsite::MODE.load(Relaxed) {
        callsite::MODE_OFF => false,
        callsite::MODE_EVERY => true,
        _ => t.countdown.get().wrapping_sub(size as i64) <= 0,
    }
}

/// `alloc`/`alloc_zeroed` through the full path: a wide block (room for a callsite), its
/// header from `on_alloc`.
///
/// # Safety
/// As for `GlobalAlloc::alloc` on a `TrackingAllocator` wrapping `inner`.
#[cold]
#[inline(never)]
unsafe fn alloc_slow<A: GlobalAlloc>(inner: &A, layout: Layout, zeroed: bool) -> *mut u8 {
    let Some((wrapped, offset)) = header::wrap_as(layout, true) else {
        return core::ptr::null_mut();
    };
    // SAFETY: `wrapped` has non-zero size (it includes the header); on success the block has
    // `offset` header bytes before `user`, ours to write (zeroed blocks: only the header is
    // overwritten, outside the user bytes).
    unsafe {
        let base = if zeroed {
            inner_call(|| inner.alloc_zeroed(wrapped))
        } else {
            inner_call(|| inner.alloc(wrapped))
        };
        if base.is_null() {
            return base;
        }
        let user = base.add(offset);
        header::write(user, offset, on_alloc(layout.size() as u64));
        user
    }
}

/// `dealloc` through the full path (`on_free`), then the inner allocator's free.
///
/// # Safety
/// As for `GlobalAlloc::dealloc` on a `TrackingAllocator` wrapping `inner`; `word` is the
/// block's header word.
#[cold]
#[inline(never)]
unsafe fn dealloc_slow<A: GlobalAlloc>(inner: &A, ptr: *mut u8, layout: Layout, word: u64) {
    // SAFETY: as in `TrackingAllocator::dealloc`.
    unsafe {
        let (wrapped, offset) = header::wrap_allocated(layout, word);
        let h = header::read(ptr, word);
        on_free(h, layout.size() as u64);
        inner_call(|| inner.dealloc(ptr.sub(offset), wrapped));
    }
}

/// `realloc` through the full path (`on_realloc`). In place (the inner allocator's realloc,
/// keeping the header's offset), except for a narrow block whose new allocation may record a
/// callsite: that one moves into a new wide block (allocate, copy, free), so the callsite has
/// room in its header.
///
/// # Safety
/// As for `GlobalAlloc::realloc` on a `TrackingAllocator` wrapping `inner`; `word` is the
/// block's header word.
#[cold]
#[inline(never)]
unsafe fn realloc_slow<A: GlobalAlloc>(
    inner: &A,
    ptr: *mut u8,
    layout: Layout,
    word: u64,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: `layout` is the one the block was allocated with, so `wrap_allocated` gives the
    // inner block (`ptr - offset`, `wrapped`); the inner realloc keeps the first `min(old,
    // new)` bytes including the header (same offset), and returns a block valid for
    // `new_wrapped`; a moved block gets `min(old, new)` user bytes copied between two distinct
    // live blocks before the old one is freed.
    unsafe {
        let (wrapped, offset) = header::wrap_allocated(layout, word);
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let old = header::read(ptr, word);
        let (old_size, new_size64) = (layout.size() as u64, new_size as u64);
        let t = state_ptr().as_ref();
        if !header::is_wide(word) && may_record_site(t, new_size64) {
            let Some((new_wrapped, new_offset)) = header::wrap_as(new_layout, true) else {
                return core::ptr::null_mut();
            };
            let base = inner_call(|| inner.alloc(new_wrapped));
            if base.is_null() {
                return base;
            }
            let user = base.add(new_offset);
            core::ptr::copy_nonoverlapping(ptr, user, layout.size().min(new_size));
            inner_call(|| inner.dealloc(ptr.sub(offset), wrapped));
            header::write(user, new_offset, on_realloc(old, old_size, new_size64));
            return user;
        }
        let Some((new_wrapped, new_offset)) = header::wrap_as(new_layout, header::is_wide(word))
        else {
            return core::ptr::null_mut();
        };
        debug_assert_eq!(offset, new_offset);
        let base = inner_call(|| inner.realloc(ptr.sub(offset), wrapped, new_wrapped.size()));
        if base.is_null() {
            // The old block is untouched and still owned by the caller.
            return base;
        }
        let user = base.add(offset);
        let mut h = on_realloc(old, old_size, new_size64);
        if h.site != 0 && offset < header::WIDE_HEADER_SIZE {
            // Only if the mode changed on another thread since `may_record_site`: a narrow
            // header has no room, so the sample is not kept (its callsite figures undone).
            intern::site_free(h.site, h.run, new_size64, h.weight);
            h.site = 0;
            h.weight = 0.0;
        }
        header::write(user, offset, h);
        user
    }
}

/// A free of a block of the tracker's own (no thread state needed).
#[cold]
#[inline(never)]
fn tracker_free(size: u64) {
    registry::path(PATH_TRACKER).counters.add_free(1, size);
}

/// Records, on a thread whose state is `t` (if it still has one), that the block described by
/// `h` (of `size` bytes) was freed.
#[inline(always)]
fn free_in(t: Option<&ThreadState>, h: Header, size: u64) {
    if h.path == PATH_TRACKER {
        tracker_free(size);
        return;
    }
    if h.site != 0 {
        intern::site_free(h.site, h.run, size, h.weight);
    }
    match t {
        Some(t) if !t.busy.get() => thread::count_free(t, h.path, h.run, size),
        _ => thread::count_free_shared(h.path, h.run, size),
    }
}

/// Records that the block described by `h` (of `size` bytes) was freed.
#[inline(always)]
fn on_free(h: Header, size: u64) {
    // SAFETY: as in `on_alloc`.
    free_in(unsafe { state_ptr().as_ref() }, h, size);
}

/// A realloc: the free of the old block (header `old`, `old_size` bytes) and the allocation of
/// `new_size` bytes in the current context, with one thread-local access.
#[inline(always)]
fn on_realloc(old: Header, old_size: u64, new_size: u64) -> Header {
    // SAFETY: as in `on_alloc`.
    let t = unsafe { state_ptr().as_ref() };
    free_in(t, old, old_size);
    match t {
        Some(t) => alloc_in(t, new_size),
        None => tracker_alloc(new_size),
    }
}

// SAFETY: every method upholds the `GlobalAlloc` contract by delegating to `inner` with the
// enlarged layout from `header::wrap_as` and returning `base + offset`, which is aligned to the
// caller's alignment and followed by at least `layout.size()` bytes of the same block; the
// header lives in the `offset` bytes before it, inside the block. `dealloc`/`realloc` recompute
// the same wrapped layout from the caller's layout and the header word's `WIDE` flag, as the
// contract requires them to pass the layout the block was allocated with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as u64;
        // SAFETY: a non-null `state_ptr` is this thread's `TLS` (as in `on_alloc`). On the fast
        // path `base` points to `wrapped.size() >= offset` bytes, so `user` and the header
        // before it (8-aligned) are inside the block.
        unsafe {
            if let Some(t) = state_ptr().as_ref() {
                if let Some(f) = fast_alloc_check(t, size) {
                    let Some((wrapped, offset)) = header::wrap(layout) else {
                        return core::ptr::null_mut();
                    };
                    let base = inner_call(|| self.inner.alloc(wrapped));
                    if base.is_null() {
                        return base;
                    }
                    let user = base.add(offset);
                    let ctx = fast_alloc_commit(t, f, size);
                    header::write_unsited(user, offset, ctx.path, ctx.run);
                    return user;
                }
            }
            alloc_slow(&self.inner, layout, false)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as u64;
        // SAFETY: as in `alloc`; the inner allocator zeroes the whole block, and we overwrite
        // only the header, which is outside the user bytes.
        unsafe {
            if let Some(t) = state_ptr().as_ref() {
                if let Some(f) = fast_alloc_check(t, size) {
                    let Some((wrapped, offset)) = header::wrap(layout) else {
                        return core::ptr::null_mut();
                    };
                    let base = inner_call(|| self.inner.alloc_zeroed(wrapped));
                    if base.is_null() {
                        return base;
                    }
                    let user = base.add(offset);
                    let ctx = fast_alloc_commit(t, f, size);
                    header::write_unsited(user, offset, ctx.path, ctx.run);
                    return user;
                }
            }
            alloc_slow(&self.inner, layout, true)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let ptr = header::launder(ptr);
        // SAFETY: `layout` is the one the block was allocated with (the `GlobalAlloc` contract),
        // so `wrap_as` succeeded for it then. `ptr` came from our `alloc*`/`realloc` with this
        // layout, so its header is initialised and `ptr - offset` is the base the inner
        // allocator returned for `wrapped`.
        // The fast path calls nothing but the inner free (a tail call); everything else goes
        // to `dealloc_slow`, which starts over from the header.
        unsafe {
            let word = header::read_word(ptr);
            if let Some(t) = state_ptr().as_ref() {
                if let Some(s) = fast_free_check(t, word) {
                    thread::count_free_in_slot(s, layout.size() as u64);
                    let (wrapped, offset) = header::wrap_allocated(layout, word);
                    inner_call(|| self.inner.dealloc(ptr.sub(offset), wrapped));
                    return;
                }
                // A block of an earlier run or another scope, freed in a burst.
                if let Some(s) = fast_foreign_free_check(t, word) {
                    thread::count_free_batched(s, layout.size() as u64);
                    let (wrapped, offset) = header::wrap_allocated(layout, word);
                    inner_call(|| self.inner.dealloc(ptr.sub(offset), wrapped));
                    return;
                }
            }
            dealloc_slow(&self.inner, ptr, layout, word)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ptr = header::launder(ptr);
        // SAFETY: `layout` is the one the block was allocated with, so `wrap_allocated` gives
        // the inner block; the fast path's block is narrow (its test compares the whole word),
        // so the new block keeps the 8-byte offset, checked for overflow by `wrap`; the inner
        // realloc keeps the header bytes and returns a block valid for `new_wrapped`.
        unsafe {
            let word = header::read_word(ptr);
            if let Some(t) = state_ptr().as_ref() {
                if let Some(s) = fast_free_check(t, word) {
                    let new_size64 = new_size as u64;
                    if let Some(f) = fast_alloc_check(t, new_size64) {
                        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align())
                        else {
                            return core::ptr::null_mut();
                        };
                        let Some((new_wrapped, offset)) = header::wrap(new_layout) else {
                            return core::ptr::null_mut();
                        };
                        let (wrapped, _) = header::wrap_allocated(layout, word);
                        let base = inner_call(|| {
                            self.inner
                                .realloc(ptr.sub(offset), wrapped, new_wrapped.size())
                        });
                        if base.is_null() {
                            return base;
                        }
                        thread::count_free_in_slot(s, layout.size() as u64);
                        let ctx = fast_alloc_commit(t, f, new_size64);
                        let user = base.add(offset);
                        header::write_unsited(user, offset, ctx.path, ctx.run);
                        return user;
                    }
                }
            }
            realloc_slow(&self.inner, ptr, layout, word, new_size)
        }
    }
}

#[cfg(allocscope_cmalloc)]
/// Counts a new block of `size` bytes made outside `GlobalAlloc` (the `malloc` feature's C
/// blocks) exactly as `alloc` counts one, and writes its header before `anchor` (narrow
/// without a callsite, wide with one).
///
/// # Safety
/// The `WIDE_HEADER_SIZE` bytes before `anchor` must be writable and 8-aligned, inside the
/// block.
#[inline(always)]
pub(crate) unsafe fn record_alloc(anchor: *mut u8, size: u64) {
    // SAFETY: as in `TrackingAllocator::alloc`, with `anchor` for the user pointer and room
    // for a wide header before it.
    unsafe {
        if let Some(t) = state_ptr().as_ref() {
            if let Some(f) = fast_alloc_check(t, size) {
                let ctx = fast_alloc_commit(t, f, size);
                header::write_unsited(anchor, header::HEADER_SIZE, ctx.path, ctx.run);
                return;
            }
        }
        record_alloc_slow(anchor, size);
    }
}

/// [`record_alloc`]'s full path.
///
/// # Safety
/// As for [`record_alloc`].
#[cfg(allocscope_cmalloc)]
#[cold]
#[inline(never)]
unsafe fn record_alloc_slow(anchor: *mut u8, size: u64) {
    let h = on_alloc(size);
    // SAFETY: the caller guarantees room for a wide header.
    unsafe { header::write(anchor, header_room(&h), h) };
}

/// The header room a C block's header needs: narrow without a callsite, wide with one.
#[cfg(allocscope_cmalloc)]
#[inline(always)]
fn header_room(h: &Header) -> usize {
    if h.site == 0 {
        header::HEADER_SIZE
    } else {
        header::WIDE_HEADER_SIZE
    }
}

/// The header of a block recorded by [`record_alloc`] or [`record_realloc`].
///
/// # Safety
/// `anchor` must be that of a live block recorded by them.
#[cfg(allocscope_cmalloc)]
#[inline(always)]
pub(crate) unsafe fn recorded_header(anchor: *mut u8) -> Header {
    // SAFETY: per the caller, the header before `anchor` was written by us.
    unsafe { header::read(anchor, header::read_word(anchor)) }
}

/// Counts the free of a block recorded by [`record_alloc`] (header before `anchor`, `size`
/// bytes), on any thread, exactly as `dealloc` does.
///
/// # Safety
/// `anchor` must be that of a live block recorded by `record_alloc` or `record_realloc`.
#[cfg(allocscope_cmalloc)]
#[inline(always)]
pub(crate) unsafe fn record_free(anchor: *mut u8, size: u64) {
    // SAFETY: per the caller, the header before `anchor` was written by us; a non-null
    // `state_ptr` is this thread's `TLS`.
    unsafe {
        let word = header::read_word(anchor);
        if let Some(t) = state_ptr().as_ref() {
            if let Some(s) = fast_free_check(t, word) {
                thread::count_free_in_slot(s, size);
                return;
            }
        }
        on_free(header::read(anchor, word), size);
    }
}

/// Counts a resize made outside `GlobalAlloc`: the block whose header was `old` (`old_size`
/// bytes) freed, the new one (`new_size` bytes, header before `anchor`) allocated in the
/// current context, as `realloc` does.
///
/// # Safety
/// As for [`record_alloc`], for the new block.
#[cfg(allocscope_cmalloc)]
#[inline(never)]
pub(crate) unsafe fn record_realloc(old: Header, anchor: *mut u8, old_size: u64, new_size: u64) {
    let h = on_realloc(old, old_size, new_size);
    // SAFETY: the caller guarantees room for a wide header before `anchor`.
    unsafe { header::write(anchor, header_room(&h), h) };
}

/// Whether a `TrackingAllocator` is installed as this program's global allocator.
///
/// `track_scope` works without it (a library whose user forgot to install it must not crash),
/// but then reports show nothing; call this to detect that case.
pub fn is_installed() -> bool {
    if thread::INSTALLED.load(Relaxed) {
        return true;
    }
    // One allocation through the global allocator proves it either way.
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    thread::INSTALLED.load(Relaxed)
        || registry::path(PATH_TRACKER)
            .counters
            .alloc_objects
            .load(Relaxed)
            > 0
}
