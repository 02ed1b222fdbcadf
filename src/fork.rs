//! `fork()`: the one place that owns `pthread_atfork` and every lock a forked child could
//! find held.
//!
//! A forked child has only the thread that called `fork()`. A lock another thread held at that
//! moment stays locked forever in the child, so a child entering a scope or building a report
//! could hang. Like glibc's malloc, the handlers here take every lock allocscope owns before
//! the fork and release them after it — in the parent by unlocking, in the child by making each
//! lock new again (its type's `INIT`, see [`reset`]): the child has no other thread, and a normal unlock could
//! hand the lock to a parent thread that was parked on it (parking_lot's fair hand-off),
//! leaving it held forever by a thread that does not exist there.
//!
//! # Rules
//! * Every `Mutex`/`RwLock`/map that allocscope code can hold while another thread forks is a
//!   **participant**: it is registered with [`register`] before it is first locked (the
//!   module that owns it registers it when it initialises it). Participants today:
//!   - `registry`: the job list, each job's recent runs, the path lock, the run free list, and
//!     the job-name and path indexes (`DashMap`s, every shard);
//!   - `scope`: the `on_run_finished` hook table;
//!   - `report::dump`: the automatic dump settings and the dump write lock;
//!   - `report::stacks`: the stack table, held while the symbol cache below is used, so
//!     it is always registered (and taken) before it;
//!   - `report::symbolize`: the symbol cache (a `DashMap`, every shard);
//!   - `testing`: the check-slot table;
//!   - `series`: the run-event and timeline-sample stores;
//!   - `timeline`: the sampler handle;
//!   - `http`: the server started from the environment (`FROM_ENV`).
//! * No participant's lock is held while another participant's lock is acquired (each module
//!   keeps its locks to itself), so the prepare handler may take them in registration order
//!   without deadlocking — except the stack table, held while the symbol cache is used,
//!   which is registered before it (the same order).
//! * The registration list is itself locked from prepare to release, so a participant cannot
//!   be registered half-way through a fork.
//! * This module is a leaf: it knows lock types, not the modules that own them.
//!
//! Locks of ours that are not participants, and why a fork cannot hang on them:
//! - `callsite::cached`'s snapshot build lock: only ever `try_lock`ed, from the allocation path
//!   (where registering would take a lock). A child that finds it held keeps the module
//!   snapshot it has; frames outside it fall back to libgcc's unwinder.
//! - the HTTP server's report lock (`http::server`'s `Shared::build`): only the server's own
//!   threads take it, and they do not exist in a forked child (a server the child starts has
//!   its own). `http`'s `FROM_ENV` (the server started from `ALLOCSCOPE_HTTP`) is a participant.
//!
//! Not covered: `std::sync::Once`s that were running at the fork (the first environment read,
//! a table's first initialisation) and the `backtrace` crate's own lock cannot be reset: a fork
//! at the very instant another thread runs one of those is not covered. The allocation hot
//! path takes no lock at all; the lock-free stack and site tables need nothing. Fork-then-exec
//! is always safe.

use core::sync::atomic::{AtomicBool, Ordering::*};
use std::hash::{BuildHasher, Hash};

use dashmap::DashMap;
use parking_lot::lock_api::{self, RawMutex, RawRwLock};
use parking_lot::Mutex;

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

impl<R: RawMutex + Sync, T: Send> AtFork for lock_api::Mutex<R, T> {
    fn prepare(&self) {
        core::mem::forget(self.lock());
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait: this thread holds the lock through a forgotten guard; in the
        // child no other thread exists (see `reset`).
        unsafe {
            if child {
                reset(self.raw(), R::INIT);
            } else {
                self.force_unlock();
            }
        }
    }
}

impl<R: RawRwLock + Sync, T: Send + Sync> AtFork for lock_api::RwLock<R, T> {
    fn prepare(&self) {
        core::mem::forget(self.write());
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait: this thread holds the write lock through a forgotten guard; in
        // the child no other thread exists (see `reset`).
        unsafe {
            if child {
                reset(self.raw(), R::INIT);
            } else {
                self.force_unlock_write();
            }
        }
    }
}

/// A `DashMap` is covered through its shard locks (dashmap's `raw-api`): every shard's write
/// lock is taken, in shard order, and released in reverse.
impl<K, V, S> AtFork for DashMap<K, V, S>
where
    K: Eq + Hash + Send + Sync,
    V: Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    fn prepare(&self) {
        for shard in self.shards() {
            shard.prepare();
        }
    }

    unsafe fn release(&self, child: bool) {
        for shard in self.shards().iter().rev() {
            // SAFETY: per the trait; `prepare` took every shard.
            unsafe { shard.release(child) };
        }
    }
}

/// Most participants; `register` beyond it is a bug caught by a debug assertion (each
/// participant listed in the module docs registers once).
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

/// Makes a raw lock new (unlocked, no waiters): writes `init` (the lock type's `INIT`) over it.
///
/// # Safety
/// `raw` is a lock that no live thread holds or waits for (true in the child just after
/// `fork()` for locks the prepare handler held); the lock's state is entirely atomics, so
/// writing it through a pointer derived from a shared reference is a write into `UnsafeCell`s.
unsafe fn reset<R>(raw: &R, init: R) {
    // SAFETY: per the caller.
    unsafe { (raw as *const R).cast_mut().write(init) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::{Mutex, RwLock};

    #[test]
    fn locks_are_released_in_the_parent_and_reset_in_the_child() {
        // Local locks only: the process-wide handlers would also reset other tests' locks.
        let m: Mutex<u32> = Mutex::new(0);
        let r: RwLock<u32> = RwLock::new(0);
        let map: DashMap<u32, u32> = DashMap::with_shard_amount(4);
        for child in [false, true] {
            m.prepare();
            r.prepare();
            map.prepare();
            assert!(m.try_lock().is_none() && r.try_read().is_none());
            assert!(map.try_get(&1).is_locked(), "every shard is held");
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
        assert_eq!(
            (*m.lock(), *r.read(), map.get(&1).map(|v| *v)),
            (2, 2, Some(1))
        );
    }
}
