//! Per-thread state: the reentrancy guard, the current scope, and per-thread counters.
//!
//! The alloc/free hot path must not do shared atomic read-modify-writes on every call (they cost
//! more than `malloc` itself when cache lines bounce between cores). Instead each thread owns a
//! **slot** in a static table and accumulates, for its current context (path + run), plain
//! counters that only it writes (relaxed load + store, no lock prefix). A slot's pending figures
//! are folded into the shared path/run counters (**flushed**) whenever the thread changes
//! context (entering or leaving a scope, polling a tracked future) and when the thread exits.
//! Reports read pending figures directly from the slots, under a per-slot sequence counter that
//! the owner makes odd while it flushes, so figures are neither lost nor counted twice.
//!
//! A free of a block of **another context** (an earlier run's, another scope's) goes to the
//! slot's **foreign-free batch** — one context at a time, plain owner-written counters — so a
//! burst of such frees (the next run dropping the previous run's tree) costs no shared
//! read-modify-write per free for the path counters and the finished runs' ledger entries; runs
//! still active are charged at each free (their figures are read when they end, on any
//! thread). The batch is flushed when a free of a different context comes (taking the slot's
//! lock only if it is free: `try_lock_slot`; if a report holds it, that one free is charged
//! directly), at every context switch and at thread exit; reports read it with the slot's
//! other figures, under the same sequence number and lock, and count its ledger part through
//! `Snapshot::ledger_pending`. Bound: one context per slot; frees alternating between two
//! foreign contexts flush at every free (the former per-free cost plus a lock swap).
//!
//! # The slot lock (what keeps a report's read consistent)
//! A flush moves figures from a slot into the shared counters; a report that read the slot
//! before the flush and the shared counters after it would count them twice. Reports first
//! read optimistically (sequence numbers, no lock, owners never wait). When that read cannot be
//! made consistent (owners flushed during each attempt), the report **holds** every in-use
//! slot's `lock` while it reads the slots and the shared path counters. The owner takes its own
//! slot's lock around every flush and context switch (one uncontended swap on its own cache
//! line; never on the alloc/free path), so it waits — spinning, then yielding — only while a
//! report holds it, for the length of one read of the path counters. Rules:
//! * Only `flush_slot`'s callers (context switch, thread exit) and `hold_slots` take a lock
//!   waiting for it; the free path only tries it (`count_free_foreign`). Nothing is allocated,
//!   and no other lock is taken, while the owner holds its own.
//! * The locks are a `fork` participant (taken before, released after), so a child never
//!   inherits a held one.
//! * Not async-signal-safe: a signal handler that enters a scope while its thread is flushing
//!   waits for itself (scopes in signal handlers are not supported).
//!
//! The thread-local `TLS` is `const`-initialised and has no destructor, so it is usable during
//! thread teardown. Releasing a slot at thread exit needs a destructor; that lives in a second
//! thread-local (`SlotOwner`) that is touched only on the cold path that claims a slot. A thread
//! without a slot counts through shared atomics: slower, equally exact. That is a thread
//! whose claim failed (all `MAX_THREADS` slots taken, or its destructor could not be
//! registered) or whose slot was already released at its exit.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use crate::model::{bump, AtomicCounters, Counters};
use crate::registry::{self, PATH_UNSCOPED};

/// Threads that can hold a counter slot at the same time; more threads fall back to shared
/// atomics (exact, slower).
pub(crate) const MAX_THREADS: usize = 1024;

/// `ThreadState::slot` before the thread claimed one.
const SLOT_UNCLAIMED: u32 = 0;
/// `ThreadState::slot` when the thread has no slot and must use shared atomics.
const SLOT_NONE: u32 = u32::MAX;

/// Hot-path thread-local state. Only plain `Cell`s: no destructor, `const` initialiser.
pub(crate) struct ThreadState {
    /// Reentrancy guard: while set, allocations on this thread are the tracker's own.
    pub busy: Cell<bool>,
    /// Slot index + 1, or `SLOT_UNCLAIMED` / `SLOT_NONE`.
    slot: Cell<u32>,
    /// The claimed slot itself, so the hot path reaches it with one load and no bounds check;
    /// `None` while `slot` is `SLOT_UNCLAIMED` or `SLOT_NONE`.
    slot_ref: Cell<Option<&'static ThreadSlot>>,
    /// Current path (`PATH_UNSCOPED` outside any scope).
    pub path: Cell<u32>,
    /// Current run token (0 outside any run).
    pub run: Cell<u32>,
    /// Bytes left before the next sampled allocation (sampled stack mode).
    pub countdown: Cell<i64>,
    /// Sampler random state (0 = not seeded yet).
    pub rng: Cell<u64>,
    /// Highest address of this thread's stack (0 = not looked up yet), for frame-pointer walks.
    pub stack_hi: Cell<usize>,
    /// Lowest address of this thread's stack (valid once `stack_hi` is set).
    pub stack_lo: Cell<usize>,
    /// The narrow header word of the slot's foreign-free batch context while a free of that
    /// context needs nothing but the batch's counters (no active run to charge at each free);
    /// `NO_WORD` otherwise. The free fast path's second test (`fast_foreign_free_check`).
    pub foreign_word: Cell<u64>,
}

/// `ThreadState::foreign_word` when no free can join the batch on the fast path: not a header
/// word (bits 48-62 are never set in one).
pub(crate) const NO_WORD: u64 = u64::MAX;

impl ThreadState {
    const fn new() -> Self {
        Self {
            busy: Cell::new(false),
            slot: Cell::new(SLOT_UNCLAIMED),
            slot_ref: Cell::new(None),
            path: Cell::new(PATH_UNSCOPED),
            run: Cell::new(0),
            countdown: Cell::new(0),
            rng: Cell::new(0),
            stack_hi: Cell::new(0),
            stack_lo: Cell::new(0),
            foreign_word: Cell::new(NO_WORD),
        }
    }
}

impl ThreadState {
    /// The thread's current context.
    #[inline(always)]
    pub(crate) fn context(&self) -> Context {
        Context {
            path: self.path.get(),
            run: self.run.get(),
        }
    }
}

thread_local! {
    pub(crate) static TLS: ThreadState = const { ThreadState::new() };
}

/// What a thread's allocations are charged to: a scope `path` and a `run` token (0 outside
/// any run). Every block's header records the context that allocated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Context {
    pub(crate) path: u32,
    pub(crate) run: u32,
}

impl Context {
    /// Outside any scope and run.
    pub(crate) const UNSCOPED: Context = Context {
        path: PATH_UNSCOPED,
        run: 0,
    };
}

/// Counters a thread accumulates for its current context. Written only by the owning thread.
///
/// Net live bytes since the last flush are `alloc_bytes - free_bytes` (not stored: one store
/// less per event); `peak` is the highest value that difference reached since the flush.
#[repr(align(128))]
pub(crate) struct ThreadSlot {
    /// Odd while the owner flushes or switches context.
    seq: AtomicU32,
    /// Held by the owner while it flushes or switches context, and by a report reading under
    /// locks (see the module docs).
    lock: AtomicBool,
    in_use: AtomicBool,
    path: AtomicU32,
    run: AtomicU32,
    /// Pending figures, written by the owner only (`bump_*`).
    counters: AtomicCounters,
    /// Highest `alloc_bytes - free_bytes` since the last flush.
    peak: AtomicI64,
    /// The foreign-free batch: frees, made on this thread, of blocks of ONE other context
    /// (`fpath`, `frun`), not yet in the shared counters (`f_objects == 0`: empty). See
    /// [`count_free`]. Written by the owner only, under `seq` (odd while it changes), so reports
    /// read it with the rest of the slot.
    fpath: AtomicU32,
    frun: AtomicU32,
    /// The first run of `frun`'s chain (itself, then the runs it was nested in) that was still
    /// active when the batch began: that run and its ancestors are charged at each free
    /// (`registry::run_remote_free`); the finished runs below it, at the batch's flush. 0: no
    /// active run, or one enclosing the thread's current run — all charged at the flush.
    fstop: AtomicU32,
    f_objects: AtomicU64,
    f_bytes: AtomicU64,
    /// A run token the owner is asked to leave (its run finished while the owner was inside
    /// it: a span closed on another thread); 0: none. Set by `ask_to_leave`, read by the
    /// allocation fast path (one relaxed load), acted on by `leave_if_asked`.
    leave: AtomicU32,
    /// Owner-written: the run of the innermost entered span and the context (path << 32 |
    /// run) entering it replaced, for `leave_if_asked` (`set_leave_target`).
    leave_run: AtomicU32,
    leave_to: AtomicU64,
}

impl ThreadSlot {
    const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            lock: AtomicBool::new(false),
            in_use: AtomicBool::new(false),
            path: AtomicU32::new(PATH_UNSCOPED),
            run: AtomicU32::new(0),
            counters: AtomicCounters::new(),
            peak: AtomicI64::new(0),
            fpath: AtomicU32::new(0),
            frun: AtomicU32::new(0),
            fstop: AtomicU32::new(0),
            f_objects: AtomicU64::new(0),
            f_bytes: AtomicU64::new(0),
            leave: AtomicU32::new(0),
            leave_run: AtomicU32::new(0),
            leave_to: AtomicU64::new(0),
        }
    }
}

/// One past the highest slot index ever claimed (slots above it were never in use).
static SLOTS_HIGH: AtomicU32 = AtomicU32::new(0);

/// Whether the slot asks its owner to leave its context (the allocation fast path's check).
#[inline(always)]
pub(crate) fn asked_to_leave(s: &ThreadSlot) -> bool {
    s.leave.load(Relaxed) != 0
}

/// Records, in the calling thread's slot, the context to restore should its run `run` finish
/// while the thread is inside it (`run` 0: none). Called by the span layer when its innermost
/// entered span changes.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn set_leave_target(run: u32, to: Context) {
    let _ = TLS.try_with(|t| {
        if let Some(s) = t.slot_ref.get() {
            s.leave_to
                .store(u64::from(to.path) << 32 | u64::from(to.run), Relaxed);
            s.leave_run.store(run, Relaxed);
        }
    });
}

/// Asks every thread whose current run is `token` (a run that has just finished) and that
/// recorded a target for it to leave it at its next allocation. Cost: one read per slot
/// ever claimed.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn ask_to_leave(token: u32) {
    if token == 0 {
        return;
    }
    let high = (SLOTS_HIGH.load(Acquire) as usize).min(MAX_THREADS);
    for s in &SLOTS[..high] {
        if s.in_use.load(Relaxed)
            && s.run.load(Relaxed) == token
            && s.leave_run.load(Relaxed) == token
        {
            s.leave.store(token, Release);
        }
    }
}

/// On the allocation slow path of a thread whose slot asks it to leave its context: if the
/// thread is still in that finished run, switches to the recorded context (flushing, as a
/// context switch does). Never waits: if a report holds the slot's lock, it tries again at the
/// next allocation. Not for the tracker's own allocations (`busy`).
#[cold]
#[inline(never)]
pub(crate) fn leave_if_asked(t: &ThreadState) {
    let Some(s) = t.slot_ref.get() else { return };
    let token = s.leave.load(Acquire);
    if token == 0 {
        return;
    }
    if t.run.get() != token || s.leave_run.load(Relaxed) != token {
        s.leave.store(0, Relaxed);
        return;
    }
    if s.lock.swap(true, Acquire) {
        return;
    }
    let to = s.leave_to.load(Relaxed);
    let to = Context {
        path: (to >> 32) as u32,
        run: to as u32,
    };
    switch_locked(t, s, to);
    s.leave.store(0, Relaxed);
    unlock_slot(s);
    t.path.set(to.path);
    t.run.set(to.run);
}

static SLOTS: [ThreadSlot; MAX_THREADS] = [const { ThreadSlot::new() }; MAX_THREADS];
/// Threads that found every slot taken (they use shared atomics).
pub(crate) static THREADS_WITHOUT_SLOT: AtomicU64 = AtomicU64::new(0);
/// Set once any allocation went through `TrackingAllocator`.
pub(crate) static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Index of the counter slot `t` holds, if it holds one. A slot has one owner thread at a time,
/// so per-slot scratch state (the caching unwinder's rule cache) needs no lock.
#[inline]
pub(crate) fn slot_index(t: &ThreadState) -> Option<usize> {
    match t.slot.get() {
        SLOT_UNCLAIMED | SLOT_NONE => None,
        s => Some(s as usize - 1),
    }
}

/// The slot of the current thread, claiming one on first use. `None`: use shared atomics.
#[inline(always)]
fn my_slot(t: &ThreadState) -> Option<&'static ThreadSlot> {
    match t.slot_ref.get() {
        Some(s) => Some(s),
        None => slot_slow(t),
    }
}

/// `my_slot` when no slot is cached: claim one on first use, else none (shared atomics).
#[cold]
#[inline(never)]
fn slot_slow(t: &ThreadState) -> Option<&'static ThreadSlot> {
    match t.slot.get() {
        SLOT_UNCLAIMED => claim_slot(t),
        _ => None,
    }
}

#[cold]
#[inline(never)]
fn claim_slot(t: &ThreadState) -> Option<&'static ThreadSlot> {
    INSTALLED.store(true, Relaxed);
    // Claiming may allocate (registering the exit destructor); those allocations are ours.
    let was_busy = t.busy.replace(true);
    t.slot.set(SLOT_NONE);
    let mut claimed = None;
    for (i, s) in SLOTS.iter().enumerate() {
        if !s.in_use.load(Relaxed)
            && s.in_use
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        {
            claimed = Some((i, s));
            SLOTS_HIGH.fetch_max(i as u32 + 1, Release);
            break;
        }
    }
    let result = match claimed {
        None => {
            THREADS_WITHOUT_SLOT.fetch_add(1, Relaxed);
            None
        }
        Some((i, s)) => {
            // Arm the exit destructor that gives the slot back. If thread-local destructors
            // can no longer be registered (the thread is already exiting), give it back now.
            if SLOT_OWNER.try_with(|o| o.armed.set(true)).is_ok() {
                // `seq` keeps counting across owners (never reset): a report that read this
                // slot before it was released must see that it changed.
                s.path.store(t.path.get(), Relaxed);
                s.run.store(t.run.get(), Relaxed);
                t.slot.set(i as u32 + 1);
                t.slot_ref.set(Some(s));
                Some(s)
            } else {
                s.in_use.store(false, Release);
                None
            }
        }
    };
    t.busy.set(was_busy);
    result
}

/// Gives the slot back when the thread exits.
struct SlotOwner {
    armed: Cell<bool>,
}

impl Drop for SlotOwner {
    fn drop(&mut self) {
        if !self.armed.get() {
            return;
        }
        let _ = TLS.try_with(|t| {
            let was_busy = t.busy.replace(true);
            let s = t.slot.get();
            if s != SLOT_NONE && s != SLOT_UNCLAIMED {
                let slot = &SLOTS[s as usize - 1];
                // Fold what is pending into the shared counters, then stop using the slot:
                // this thread's remaining allocations (later destructors) use shared atomics.
                register_at_fork();
                lock_slot(slot);
                flush_slot(slot, t.context());
                flush_foreign(slot);
                t.foreign_word.set(NO_WORD);
                t.slot.set(SLOT_NONE);
                t.slot_ref.set(None);
                unlock_slot(slot);
                slot.in_use.store(false, Release);
            }
            t.busy.set(was_busy);
        });
    }
}

thread_local! {
    static SLOT_OWNER: SlotOwner = const { SlotOwner { armed: Cell::new(false) } };
}

/// The thread's claimed counter slot, if it holds one (no claim attempt: the fast paths use
/// this and leave the first-allocation claim to the slow path).
#[inline(always)]
pub(crate) fn claimed_slot(t: &ThreadState) -> Option<&'static ThreadSlot> {
    t.slot_ref.get()
}

/// Records an allocation of `bytes` in `s`, the claimed slot of a thread whose current run is
/// `run`. The peak is kept only inside a run: it is read only when a flush folds it into the
/// run's counters (`flush_slot`, skipped for run 0), and every context switch flushes and
/// zeroes it, so outside a run only the objects/bytes pair is written.
#[inline(always)]
pub(crate) fn count_alloc_in_slot(s: &ThreadSlot, run: u32, bytes: u64) {
    let ab = s.counters.bump_alloc(1, bytes);
    if run != 0 {
        let live = ab.wrapping_sub(s.counters.free_bytes.load(Relaxed)) as i64;
        if live > s.peak.load(Relaxed) {
            s.peak.store(live, Relaxed);
        }
    }
}

/// Records a free of `bytes` of the current context in `s`, the thread's claimed slot.
#[inline(always)]
pub(crate) fn count_free_in_slot(s: &ThreadSlot, bytes: u64) {
    s.counters.bump_free(1, bytes);
}

/// Records an allocation of `bytes` in the current context.
#[inline(always)]
pub(crate) fn count_alloc(t: &ThreadState, bytes: u64) {
    match my_slot(t) {
        Some(s) => count_alloc_in_slot(s, t.run.get(), bytes),
        None => count_alloc_shared(t, bytes),
    }
}

/// `count_alloc` for a thread without a slot.
#[cold]
#[inline(never)]
fn count_alloc_shared(t: &ThreadState, bytes: u64) {
    registry::path(t.path.get()).counters.add_alloc(1, bytes);
    registry::run_add(
        t.run.get(),
        Counters::of_allocs(1, bytes),
        bytes as i64,
        bytes as i64,
    );
}

/// Records a free of a block of `bytes` allocated under `path` / `run`.
///
/// A block of another context (an earlier run's, another scope's) goes to the slot's
/// foreign-free batch: a run's blocks are typically freed in one burst (the next run drops the
/// previous one's tree), so the shared path counters and the finished runs' ledger entries get
/// one charge per burst instead of one atomic read-modify-write per counter per free. Runs
/// still active are charged at once (their figures are read when they finish, possibly on
/// another thread).
#[inline(always)]
pub(crate) fn count_free(t: &ThreadState, path: u32, run: u32, bytes: u64) {
    if let Some(s) = my_slot(t) {
        if path == t.path.get() && run == t.run.get() {
            count_free_in_slot(s, bytes);
        } else {
            count_free_foreign(t, s, path, run, bytes);
        }
        return;
    }
    count_free_shared(path, run, bytes);
}

/// A free of a block of another context (`path`, `run`) on thread `t`, owner of `s`: added to the slot's batch when it is the batch's context; otherwise the
/// batch is flushed and restarted for this context. Never waits: when a report holds the
/// slot's lock (`try_lock_slot` fails), this free is charged straight to the shared counters
/// and the batch stays.
///
/// The first active run of `run`'s chain (`stop`) is charged at each free, unless it encloses
/// the thread's current run: then this thread leaves it — a context switch, which flushes the
/// batch — before it can finish here, so it is charged at the flush like the thread's own
/// pending figures (a run's figures include the threads that left its scope).
#[inline(never)]
fn count_free_foreign(t: &ThreadState, s: &ThreadSlot, path: u32, run: u32, bytes: u64) {
    let fo = s.f_objects.load(Relaxed);
    if fo != 0 && s.fpath.load(Relaxed) == path && s.frun.load(Relaxed) == run {
        s.f_objects.store(fo.wrapping_add(1), Relaxed);
        bump(&s.f_bytes, bytes);
        registry::run_remote_free(s.fstop.load(Relaxed), 1, bytes);
        return;
    }
    if !try_lock_slot(s) {
        count_free_shared(path, run, bytes);
        return;
    }
    let mut stop = registry::first_active_run(run);
    if stop != 0 && registry::run_encloses(stop, t.run.get()) {
        stop = 0;
    }
    let seq = s.seq.load(Relaxed);
    s.seq.store(seq.wrapping_add(1), Relaxed);
    core::sync::atomic::fence(Release);
    charge_foreign(s);
    s.fpath.store(path, Relaxed);
    s.frun.store(run, Relaxed);
    s.fstop.store(stop, Relaxed);
    s.f_objects.store(1, Relaxed);
    s.f_bytes.store(bytes, Relaxed);
    s.seq.store(seq.wrapping_add(2), Release);
    unlock_slot(s);
    t.foreign_word.set(if stop == 0 {
        crate::header::narrow_word(path, run)
    } else {
        NO_WORD
    });
    registry::run_remote_free(stop, 1, bytes);
}

/// A free of a narrow block of the slot's foreign-free batch context when nothing else is to
/// be charged (`ThreadState::foreign_word` matched): the batch's counters only.
#[inline(always)]
pub(crate) fn count_free_batched(s: &ThreadSlot, bytes: u64) {
    bump(&s.f_objects, 1);
    bump(&s.f_bytes, bytes);
}

/// Moves the foreign-free batch into the shared path counters and the ledger entries of its
/// finished runs (those below `fstop`, which was charged at each free), and empties it. The
/// owner calls this holding the slot's lock, with `seq` odd.
fn charge_foreign(s: &ThreadSlot) {
    let fo = s.f_objects.load(Relaxed);
    if fo == 0 {
        return;
    }
    let fb = s.f_bytes.load(Relaxed);
    registry::path(s.fpath.load(Relaxed))
        .counters
        .add_free(fo, fb);
    registry::ledger_free(s.frun.load(Relaxed), fo, fb, s.fstop.load(Relaxed));
    s.f_objects.store(0, Relaxed);
    s.f_bytes.store(0, Relaxed);
}

/// `charge_foreign` under a sequence bump of its own (the slot's lock held by the owner).
fn flush_foreign(s: &ThreadSlot) {
    if s.f_objects.load(Relaxed) == 0 {
        return;
    }
    let seq = s.seq.load(Relaxed);
    s.seq.store(seq.wrapping_add(1), Relaxed);
    core::sync::atomic::fence(Release);
    charge_foreign(s);
    s.seq.store(seq.wrapping_add(2), Release);
}

/// A free charged straight to the shared counters of the owning path and run (a block of
/// another context, or a thread without a slot). Kept out of line: the local case is the
/// common one and stays small enough to inline.
#[inline(never)]
pub(crate) fn count_free_shared(path: u32, run: u32, bytes: u64) {
    registry::path(path).counters.add_free(1, bytes);
    registry::run_remote_free(run, 1, bytes);
}

/// Takes a slot's lock: spins briefly, then yields (the holder is a report reading the path
/// counters, or the owner flushing; neither holds it long).
fn lock_slot(s: &ThreadSlot) {
    let mut spins = 0u32;
    while s.lock.swap(true, Acquire) {
        while s.lock.load(Relaxed) {
            if spins < 100 {
                spins += 1;
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Takes a slot's lock if it is free (the owner's free path: never waits).
#[inline]
fn try_lock_slot(s: &ThreadSlot) -> bool {
    !s.lock.load(Relaxed) && !s.lock.swap(true, Acquire)
}

fn unlock_slot(s: &ThreadSlot) {
    s.lock.store(false, Release);
}

/// The slot locks around `fork()`: a child must not inherit one held by a thread it does not
/// have (its next context switch, or a report, would wait forever).
struct SlotsAtFork;

impl crate::fork::AtFork for SlotsAtFork {
    fn prepare(&self) {
        for s in SLOTS.iter() {
            lock_slot(s);
        }
    }

    unsafe fn release(&self, _child: bool) {
        // A spin flag has no waiters to hand over to: unlocking is the same in both processes.
        for s in SLOTS.iter() {
            unlock_slot(s);
        }
    }
}

/// Registers the slot locks with `fork` before this thread first takes one.
#[inline]
fn register_at_fork() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| crate::fork::register(&SlotsAtFork));
}

/// Folds a slot's pending figures into the shared counters of context `ctx`, and zeroes it.
/// Only the owning thread calls this, holding the slot's lock.
fn flush_slot(s: &ThreadSlot, ctx: Context) {
    let seq = s.seq.load(Relaxed);
    s.seq.store(seq.wrapping_add(1), Relaxed);
    core::sync::atomic::fence(Release);
    let c = s.counters.load();
    let peak = s.peak.load(Relaxed);
    registry::path(ctx.path).counters.add(c);
    // Nothing happened since the last flush (a scope entered and left without allocating, as
    // `ScopeHandle::wrap` does per call): the run's counters would not change (its peak
    // already covers its live bytes), so skip their atomic read-modify-writes.
    if ctx.run != 0 && !c.is_zero() {
        registry::run_add(ctx.run, c, c.net_bytes(), peak.max(0));
    }
    s.counters.clear();
    s.peak.store(0, Relaxed);
    s.seq.store(seq.wrapping_add(2), Release);
}

/// The one context switch of a slot, its lock held by the owner `t`: flushes the foreign-free
/// batch and the previous context's figures, and publishes `to` in the slot atomically with the
/// flush (the caller then sets `t`'s own cells and unlocks).
fn switch_locked(t: &ThreadState, slot: &ThreadSlot, to: Context) {
    flush_foreign(slot);
    t.foreign_word.set(NO_WORD);
    let seq = slot.seq.load(Relaxed);
    flush_slot(slot, t.context());
    // Re-open the sequence to publish the new context atomically with the flush.
    slot.seq.store(seq.wrapping_add(3), Relaxed);
    core::sync::atomic::fence(Release);
    slot.path.store(to.path, Relaxed);
    slot.run.store(to.run, Relaxed);
    slot.seq.store(seq.wrapping_add(4), Release);
}

/// Switches the current thread to context `to`, flushing what the previous context
/// accumulated. Returns the previous context.
pub(crate) fn switch_context(to: Context) -> Context {
    TLS.try_with(|t| {
        let prev = t.context();
        let s = t.slot.get();
        if s != SLOT_NONE && s != SLOT_UNCLAIMED {
            let slot = &SLOTS[s as usize - 1];
            register_at_fork();
            lock_slot(slot);
            switch_locked(t, slot, to);
            unlock_slot(slot);
        }
        t.path.set(to.path);
        t.run.set(to.run);
        prev
    })
    .unwrap_or(Context::UNSCOPED)
}

/// The current thread's context.
pub(crate) fn current_context() -> Context {
    TLS.try_with(ThreadState::context)
        .unwrap_or(Context::UNSCOPED)
}

/// Pending (not yet flushed) figures of one thread.
pub(crate) struct Pending {
    /// The slot read, and its sequence number at the time.
    slot: &'static ThreadSlot,
    seq: u32,
    pub path: u32,
    pub counters: Counters,
    /// The slot's foreign-free batch (frees of another context's blocks), if not empty.
    pub foreign: Option<ForeignFrees>,
}

/// A thread's foreign-free batch as a report reads it: `objects` blocks of `path` / `run`
/// (`bytes` bytes) freed, not yet in the shared path counters nor in the ledger entries of
/// `run`'s finished runs below `stop` (see `registry::ledger_free`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ForeignFrees {
    pub path: u32,
    pub run: u32,
    pub stop: u32,
    pub objects: u64,
    pub bytes: u64,
}

/// Reads every in-use slot's pending figures without stopping its owner (optimistic read).
/// Returns `false` when a slot could not be read because its owner stayed mid-flush for a few
/// attempts: the read is then incomplete, and the caller reads again or under
/// [`hold_slots`].
pub(crate) fn pending_all(out: &mut Vec<Pending>) -> bool {
    out.clear();
    let mut complete = true;
    for s in SLOTS.iter() {
        if !s.in_use.load(Acquire) {
            continue;
        }
        let mut read = false;
        for _ in 0..64 {
            let s1 = s.seq.load(Acquire);
            if s1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let p = read_slot(s, s1);
            core::sync::atomic::fence(Acquire);
            if s.seq.load(Relaxed) == s1 {
                out.push(p);
                read = true;
                break;
            }
        }
        complete &= read;
    }
    complete
}

fn read_slot(s: &'static ThreadSlot, seq: u32) -> Pending {
    Pending {
        slot: s,
        seq,
        path: s.path.load(Relaxed),
        counters: s.counters.load(),
        foreign: match s.f_objects.load(Relaxed) {
            0 => None,
            objects => Some(ForeignFrees {
                path: s.fpath.load(Relaxed),
                run: s.frun.load(Relaxed),
                stop: s.fstop.load(Relaxed),
                objects,
                bytes: s.f_bytes.load(Relaxed),
            }),
        },
    }
}

/// Every in-use slot held by a report: no owner flushes or switches context until it is
/// dropped, so the pending figures read under it and the shared counters read while it is
/// held are one consistent read. Hold it only for that read (owners wait meanwhile).
pub(crate) struct HeldSlots(Vec<&'static ThreadSlot>);

impl Drop for HeldSlots {
    fn drop(&mut self) {
        for s in &self.0 {
            unlock_slot(s);
        }
    }
}

/// Takes the lock of every in-use slot and reads its pending figures into `out` (the fallback
/// of a report whose optimistic reads kept meeting flushes). Must run untracked, and the caller
/// must not enter or leave a scope while holding the result.
pub(crate) fn hold_slots(out: &mut Vec<Pending>) -> HeldSlots {
    register_at_fork();
    out.clear();
    let mut held = Vec::with_capacity(64);
    for s in SLOTS.iter() {
        if !s.in_use.load(Acquire) {
            continue;
        }
        lock_slot(s);
        held.push(s);
        // The owner changes path and counters' context only under the lock, which we hold:
        // the path read is the context of the counters read.
        out.push(read_slot(s, s.seq.load(Relaxed)));
    }
    HeldSlots(held)
}

/// Whether no slot read by [`pending_all`] has flushed since (a flush moves pending figures
/// into the shared counters; a reader that saw them in both places would count them twice).
pub(crate) fn pending_unchanged(read: &[Pending]) -> bool {
    core::sync::atomic::fence(Acquire);
    read.iter().all(|p| p.slot.seq.load(Relaxed) == p.seq)
}

/// Runs `f` with tracking suspended on this thread: its allocations are the tracker's own.
/// Restores the previous state even if `f` panics.
pub(crate) fn untracked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = TLS.try_with(|t| t.busy.set(self.0));
        }
    }
    let _restore = Restore(TLS.try_with(|t| t.busy.replace(true)).unwrap_or(true));
    f()
}
