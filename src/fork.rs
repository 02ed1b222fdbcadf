//! `fork()`: the one place that owns `pthread_atfork` and every lock a forked child could
//! find held.
//!
//! A forked child has only the thread that called `fork()`. A lock another thread held at that
//! moment stays locked forever in the child, so a child entering a scope or building a report
//! could hang. Like glibc's malloc, the handlers here take every lock allocscope owns before
//! the fork and release them after it — in the parent by unlocking, in the child by making each
//! lock new again (see [`reset_raw`]): the child has no other thread, and a normal unlock could
//! hand the lock to a parent thread that was parked on it (parking_lot's fair hand-off),
//! leaving it held forever by a thread that does not exist there.
//!
//! # Rules
//! * Every `Mutex`/`RwLock`/map that allocscope code can hold while another thread forks is a
//!   **participant**: it is registered with [`register`] before it is first locked (the
//!   module that owns it registers it when it initialises it). Participants today:
//!   - `registry`: the job list, each job's recent runs, the path lock, the run free list, and
//!     the job-name and path indexes ([`ShardedMap`], every shard);
//!   - `scope`: the `on_run_finished` hook table;
//!   - `report::dump`: the automatic dump settings and the dump write lock;
//!   - `report::symbolize`: the symbol cache ([`ShardedMap`], every shard);
//!   - `testing`: the check-slot table;
//!   - `series`: the run-event and timeline-sample stores;
//!   - `timeline`: the sampler handle.
//! * No participant's lock is held while another participant's lock is acquired (each module
//!   keeps its locks to itself), so the prepare handler may take them in registration order
//!   without deadlocking.
//! * The registration list is itself locked from prepare to release, so a participant cannot
//!   be registered half-way through a fork.
//! * This module is a leaf: it knows lock types, not the modules that own them.
//!
//! Not covered (no lock of ours): the allocation hot path takes no lock at all; the lock-free
//! stack and site tables need nothing. `std::sync::Once`s that were running at the fork (the
//! first environment read, a table's first initialisation) and the `backtrace` crate's own
//! lock cannot be reset: a fork at the very instant another thread runs one of those is not
//! covered. Fork-then-exec is always safe.

use core::sync::atomic::{AtomicBool, Ordering::*};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use parking_lot::{Mutex, RwLock};

/// Something holding locks that must be taken around `fork()`.
pub(crate) trait AtFork: Sync {
    /// Takes every lock, forgetting the guards. Runs on the forking thread before `fork()`.
    fn prepare(&self);

    /// Releases what [`prepare`](Self::prepare) took: in the parent by unlocking, in the child
    /// by resetting (see the module docs).
    ///
    /// # Safety
    /// Called once after each `prepare`, on the same thread, with no other use of the locks
    /// in between (in the child, no other thread exists; in the parent, other threads are
    /// blocked on the locks prepare holds).
    unsafe fn release(&self, child: bool);
}

impl<T: Send> AtFork for Mutex<T> {
    fn prepare(&self) {
        core::mem::forget(self.lock());
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait: this thread holds the lock through a forgotten guard.
        unsafe {
            if child {
                reset_raw((self.raw() as *const parking_lot::RawMutex).cast_mut());
            } else {
                self.force_unlock();
            }
        }
    }
}

impl<T: Send + Sync> AtFork for RwLock<T> {
    fn prepare(&self) {
        core::mem::forget(self.write());
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait: this thread holds the write lock through a forgotten guard.
        unsafe {
            if child {
                reset_raw((self.raw() as *const parking_lot::RawRwLock).cast_mut());
            } else {
                self.force_unlock_write();
            }
        }
    }
}

/// Most participants; `register` beyond it is a bug caught by a debug assertion (there are
/// six today).
const MAX_PARTICIPANTS: usize = 16;

struct List {
    items: [Option<&'static dyn AtFork>; MAX_PARTICIPANTS],
    len: usize,
}

static LIST: Mutex<List> = Mutex::new(List {
    items: [None; MAX_PARTICIPANTS],
    len: 0,
});
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers a participant (once per participant: its owner calls this when it initialises
/// it, before the first lock). Installs the `pthread_atfork` handlers on first use. Does not
/// allocate.
pub(crate) fn register(p: &'static dyn AtFork) {
    if !INSTALLED.swap(true, AcqRel) {
        // SAFETY: registers three `extern "C"` functions that live for the whole program.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }
    let mut list = LIST.lock();
    debug_assert!(
        list.len < MAX_PARTICIPANTS,
        "allocscope: too many fork participants"
    );
    if list.len < MAX_PARTICIPANTS {
        let n = list.len;
        list.items[n] = Some(p);
        list.len += 1;
    }
}

extern "C" fn prepare() {
    let list = LIST.lock();
    for p in list.items[..list.len].iter().flatten() {
        p.prepare();
    }
    core::mem::forget(list);
}

extern "C" fn parent() {
    // SAFETY: `prepare` ran on this thread and still holds every lock.
    unsafe { release_all(false) };
}

extern "C" fn child() {
    // SAFETY: as in `parent`; in the child this is the only thread.
    unsafe { release_all(true) };
}

/// # Safety
/// `prepare` ran on this thread and its locks are held by forgotten guards.
unsafe fn release_all(child: bool) {
    // SAFETY: `LIST` is locked by `prepare` (forgotten guard), so nothing else reads or writes
    // it; we read it through its data pointer, then release it last.
    unsafe {
        let list = &*LIST.data_ptr();
        for p in list.items[..list.len].iter().rev().flatten() {
            p.release(child);
        }
        LIST.release(child);
    }
}

/// Makes a raw lock new (unlocked, no waiters).
///
/// # Safety
/// `raw` points to a lock that no live thread holds or waits for (true in the child just
/// after `fork()` for locks the prepare handler held); the lock's state is entirely atomics,
/// so writing it through a pointer derived from a shared reference is a write into
/// `UnsafeCell`s.
pub(crate) unsafe fn reset_raw<R: ResetLock>(raw: *mut R) {
    // SAFETY: per the caller.
    unsafe { raw.write(R::NEW) };
}

/// A raw lock's unlocked state.
pub(crate) trait ResetLock {
    const NEW: Self;
}

impl ResetLock for parking_lot::RawMutex {
    const NEW: Self = <parking_lot::RawMutex as parking_lot::lock_api::RawMutex>::INIT;
}

impl ResetLock for parking_lot::RawRwLock {
    const NEW: Self = <parking_lot::RawRwLock as parking_lot::lock_api::RawRwLock>::INIT;
}

// ---------------------------------------------------------------------------------------------
// A concurrent map whose locks the handlers can take
// ---------------------------------------------------------------------------------------------

/// Shards of [`ShardedMap`].
const SHARDS: usize = 16;

/// FNV-1a: a small deterministic hash for choosing a shard and inside shards (keys are ids and
/// job names chosen by the program, not by an attacker).
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Shard<K, V> = RwLock<HashMap<K, V, BuildHasherDefault<Fnv>>>;

/// A concurrent hash map of `SHARDS` `RwLock`ed shards — what `dashmap` does, with locks this
/// module can take around `fork()` (dashmap's shard locks are private). Readers of different
/// shards never contend; an entry is never removed.
pub(crate) struct ShardedMap<K, V> {
    shards: [Shard<K, V>; SHARDS],
}

impl<K: Hash + Eq, V: Clone> ShardedMap<K, V> {
    pub(crate) fn new() -> Self {
        ShardedMap {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::default())),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        let mut h = Fnv::default();
        key.hash(&mut h);
        &self.shards[(h.finish() >> 7) as usize % SHARDS]
    }

    /// The value of `key`, cloned.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().get(key).cloned()
    }

    /// Inserts (or replaces) `key`.
    pub(crate) fn insert(&self, key: K, value: V) {
        self.shard(&key).write().insert(key, value);
    }

    /// Entries in all shards.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

impl<K: Send + Sync, V: Send + Sync> AtFork for ShardedMap<K, V> {
    fn prepare(&self) {
        for s in &self.shards {
            s.prepare();
        }
    }

    unsafe fn release(&self, child: bool) {
        for s in self.shards.iter().rev() {
            // SAFETY: per the trait; `prepare` took every shard.
            unsafe { s.release(child) };
        }
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_map_finds_what_it_stores() {
        let m: ShardedMap<Box<str>, u32> = ShardedMap::new();
        for i in 0..1000u32 {
            m.insert(format!("job {i}").into(), i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get("job 417"), Some(417));
        assert_eq!(m.get("job 1000"), None);
    }

    #[test]
    fn locks_are_released_in_the_parent_and_reset_in_the_child() {
        // Local locks only: the process-wide handlers would also reset other tests' locks.
        let m: Mutex<u32> = Mutex::new(0);
        let r: RwLock<u32> = RwLock::new(0);
        let map: ShardedMap<u32, u32> = ShardedMap::new();
        for child in [false, true] {
            m.prepare();
            r.prepare();
            map.prepare();
            assert!(m.try_lock().is_none() && r.try_read().is_none());
            // SAFETY: `prepare` ran on this thread just above and nothing else uses the locks.
            unsafe {
                map.release(child);
                r.release(child);
                m.release(child);
            }
            *m.lock() += 1;
            *r.write() += 1;
            map.insert(1, 1);
        }
        assert_eq!((*m.lock(), *r.read(), map.get(&1)), (2, 2, Some(1)));
    }
}
