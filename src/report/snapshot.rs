//! The one snapshot path: every job's figures read consistently from the live tables, without
//! stopping other threads, and rolled up from scope paths to jobs once.
//!
//! [`report()`](crate::report()), the testing module's job figures, [`mark`](crate::mark) and
//! [`report_since`](crate::report_since) all start here; renderers never read the tables.
//!
//! # Protocol (what a snapshot guarantees)
//! 1. The job table and each job's run counts are read **first** (acquire). A run is counted
//!    as finished only after the thread that ran it left its scope, which flushes that thread's
//!    figures for the run into the shared path counters; the count is then incremented with
//!    release ordering. So every allocation that run made on its own thread — and on any
//!    thread that had left the run's scope before it finished — is in the shared counters
//!    read in step 2 (or still pending in a thread slot, which step 2 reads too).
//! 2. The path counters are read as shared counters **plus** each thread's pending
//!    (not yet flushed) figures, and the pending figures are re-checked with each slot's
//!    sequence number: when a thread flushed while we read (its figures could then be seen in
//!    both places), the read is repeated (up to `OPTIMISTIC_READS` times, owners never
//!    wait). If every attempt met a flush, the read is made under the slots' locks
//!    (`thread::hold_slots`): no thread flushes or switches context while the pending figures
//!    and the shared counters are read, so the read is consistent by construction. An
//!    inconsistent read is never used.
//! 3. Paths are rolled up into jobs (inclusive: every job on the path; exclusive: the
//!    innermost), and into process totals.
//!
//! Hence: in any snapshot, a job's `allocated` includes every allocation of every run it
//! counts in `runs` (per-run allocations are never missing), and no figure is counted twice.
//!
//! **Cumulative figures never go back.** Each allocation is counted either in a shared
//! counter (where it stays) or in a slot's pending figures (until a flush moves it to the
//! shared counter). A consistent read counts each allocation that happened before the read of
//! its slot exactly once, so runs, allocated objects and allocated bytes — per path, per job
//! (sums over fixed paths) and per process — of a later snapshot are never below an earlier
//! one's. `tests/hostile_monotonic.rs` checks it over 100,000 reports and 10,000 scrapes.
//! Figures of runs still active, and of other threads' work in progress, may be partly in it.

use std::sync::Arc;

use core::sync::atomic::Ordering::*;

use crate::model::Counters;
use crate::registry::{self, JobEntry, PATH_TRACKER, PATH_UNSCOPED};
use crate::thread;

/// Optimistic reads of the paths before reading under the slots' locks.
const OPTIMISTIC_READS: usize = 4;

/// One job's run counts, read before its figures.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Runs {
    pub(crate) finished: u64,
    pub(crate) panicked: u64,
    pub(crate) active: u64,
}

/// A consistent read of every counter, rolled up to jobs. Take it untracked.
pub(crate) struct Snapshot {
    /// Job entries by id (names, recent runs, peaks).
    pub(crate) jobs: Vec<Arc<JobEntry>>,
    /// Run counts by job id, read first.
    pub(crate) runs: Vec<Runs>,
    /// Counters by path id (shared + pending).
    pub(crate) paths: Vec<Counters>,
    /// Job ids of each path, outermost first (empty for the unscoped and tracker paths).
    pub(crate) chains: Vec<Vec<u32>>,
    /// The roll-up of `paths`.
    pub(crate) rollup: Rollup,
    /// Frees in threads' foreign-free batches (counted in `paths`) not yet charged to the
    /// finished runs' ledger entries: `registry::job_holdings` counts them as freed, so
    /// `retained_by_run` agrees with `paths`.
    pub(crate) ledger_pending: Vec<registry::PendingLedgerFree>,
}

/// Path figures summed per job and per process.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rollup {
    /// By job id: every path the job is on.
    pub(crate) inclusive: Vec<Counters>,
    /// By job id: the paths where it is innermost.
    pub(crate) exclusive: Vec<Counters>,
    /// Every path but the tracker's.
    pub(crate) all: Counters,
    /// Outside any scope.
    pub(crate) unscoped: Counters,
    /// The tracker's own allocations.
    pub(crate) tracker: Counters,
}

impl Rollup {
    /// Sums `paths` (by path id) into jobs along `chains`, for `jobs` job ids.
    pub(crate) fn of(paths: &[Counters], chains: &[Vec<u32>], jobs: usize) -> Rollup {
        let mut r = Rollup {
            inclusive: vec![Counters::default(); jobs],
            exclusive: vec![Counters::default(); jobs],
            ..Rollup::default()
        };
        for (p, c) in paths.iter().enumerate() {
            match p as u32 {
                PATH_TRACKER => {
                    r.tracker = *c;
                    continue;
                }
                PATH_UNSCOPED => r.unscoped = *c,
                _ => {}
            }
            r.all.add(*c);
            let Some(chain) = chains.get(p) else {
                continue;
            };
            for &j in chain {
                if let Some(inc) = r.inclusive.get_mut(j as usize) {
                    inc.add(*c);
                }
            }
            if let Some(ex) = chain.last().and_then(|&j| r.exclusive.get_mut(j as usize)) {
                ex.add(*c);
            }
        }
        r
    }
}

impl Snapshot {
    /// Reads the tables (see the module docs for the order and what it guarantees). Must run
    /// untracked.
    pub(crate) fn take() -> Snapshot {
        // 1. Jobs and their run counts first.
        let jobs = registry::all_jobs();
        let runs: Vec<Runs> = jobs
            .iter()
            .map(|j| Runs {
                finished: j.runs.load(Acquire),
                panicked: j.panicked_runs.load(Relaxed),
                active: j.active_runs.load(Relaxed).max(0) as u64,
            })
            .collect();
        // 2. Paths: shared + pending, re-checked.
        let count = registry::PATH_COUNT.load(Acquire) as usize;
        let (paths, ledger_pending) = path_counters(count);
        // 3. Roll-up.
        let mut chain = Vec::new();
        let chains: Vec<Vec<u32>> = (0..count as u32)
            .map(|p| {
                registry::path_jobs(p, &mut chain);
                chain.iter().rev().copied().collect()
            })
            .collect();
        let rollup = Rollup::of(&paths, &chains, jobs.len());
        Snapshot {
            jobs,
            runs,
            paths,
            chains,
            rollup,
            ledger_pending,
        }
    }

    /// A job's name (the overflow job's for an unknown id).
    pub(crate) fn name_of(&self, job: u32) -> &str {
        self.jobs
            .get(job as usize)
            .map_or(registry::OTHER_JOBS_NAME, |j| &j.name)
    }

    /// The job id of `name` (a full name or its stored form), if it ran.
    pub(crate) fn job_id(&self, name: &str) -> Option<u32> {
        let name = &*crate::model::stored_job_name(name);
        self.jobs
            .iter()
            .position(|j| &*j.name == name)
            .map(|i| i as u32)
    }

    /// The job names of a path, outermost first (`None` for an unknown path).
    pub(crate) fn scope_names(&self, path: u32) -> Option<Vec<String>> {
        self.chains
            .get(path as usize)
            .map(|c| c.iter().map(|&j| self.name_of(j).to_string()).collect())
    }
}

/// Every path's counters: the shared ones plus what threads have not flushed yet. Read
/// optimistically a few times; when a thread flushed during every attempt (its figures could
/// be in both places), read once more holding the slots' locks.
///
/// Also returns the ledger charges of the foreign-free batches read (see
/// `Snapshot::ledger_pending`).
fn path_counters(count: usize) -> (Vec<Counters>, Vec<registry::PendingLedgerFree>) {
    let mut pending = Vec::new();
    let mut figs = Vec::with_capacity(count);
    let mut consistent = false;
    for _ in 0..OPTIMISTIC_READS {
        let complete = thread::pending_all(&mut pending);
        #[cfg(test)]
        tests::between_reads();
        shared_counters(count, &mut figs);
        if complete && thread::pending_unchanged(&pending) {
            consistent = true;
            break;
        }
    }
    if !consistent {
        let held = thread::hold_slots(&mut pending);
        shared_counters(count, &mut figs);
        drop(held);
    }
    for p in &pending {
        if let Some(f) = figs.get_mut(p.path as usize) {
            f.add(p.counters);
        }
        // A thread's batch of frees of another context's blocks: charged to that context's
        // path (`thread::count_free`).
        if let Some(b) = p.foreign {
            if let Some(f) = figs.get_mut(b.path as usize) {
                f.add(Counters {
                    free_objects: b.objects,
                    free_bytes: b.bytes,
                    ..Counters::default()
                });
            }
        }
    }
    let mut ledger = Vec::new();
    for b in pending.iter().filter_map(|p| p.foreign) {
        registry::pending_ledger_frees(b.run, b.stop, b.objects, b.bytes, &mut ledger);
    }
    (figs, ledger)
}

/// The shared counters of paths `0..count` into `figs` (no allocation when it has the room).
fn shared_counters(count: usize, figs: &mut Vec<Counters>) {
    window_counters(0..count as u32, figs);
}

/// The shared counters of the paths `ids` into `figs` (no allocation when it has the room).
fn window_counters(ids: core::ops::Range<u32>, figs: &mut Vec<Counters>) {
    figs.clear();
    figs.extend(ids.map(|i| registry::path(i).counters.load()));
}

/// The shared counters of the paths `ids` (into `shared`, by position) and every thread's
/// pending figures (into `pending`), as one consistent read under the snapshot's protocol
/// (optimistic reads, then under the slots' locks): no figure is in both. For the timeline
/// sampler, which reads a bounded window of paths per sample and keeps the others' last
/// figures. Must run untracked.
pub(crate) fn read_window(
    ids: core::ops::Range<u32>,
    shared: &mut Vec<Counters>,
    pending: &mut Vec<thread::Pending>,
) {
    for _ in 0..OPTIMISTIC_READS {
        let complete = thread::pending_all(pending);
        window_counters(ids.clone(), shared);
        if complete && thread::pending_unchanged(pending) {
            return;
        }
    }
    let held = thread::hold_slots(pending);
    window_counters(ids, shared);
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thread::{count_alloc, count_free, switch_context, Context, TLS};
    use std::cell::RefCell;
    use std::sync::mpsc;

    thread_local! {
        /// Run by this thread's snapshots between reading the slots and the shared counters.
        static BETWEEN: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    pub(super) fn between_reads() {
        BETWEEN.with(|b| {
            if let Some(f) = b.borrow_mut().as_mut() {
                f();
            }
        });
    }

    /// A thread flushes in the window of every optimistic read (the worst interleaving, made
    /// deterministic): the snapshot must not count the flushed figures twice. Flush `i` leaves
    /// one allocation fewer pending than the read before it saw, so a read that kept an
    /// inconsistent attempt counts more allocations than were ever made.
    #[test]
    fn a_flush_in_every_read_window_is_not_counted_twice() {
        const FIRST_PENDING: u64 = 64;
        // A path of its own: other unit tests charge the built-in paths.
        let path = registry::path_id(None, registry::job_id("snapshot_flush_window_test"));
        let (go, go_rx) = mpsc::channel::<()>();
        let (done, done_rx) = mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let alloc = |n: u64| TLS.with(|t| (0..n).for_each(|_| count_alloc(t, 8)));
            switch_context(Context { path, run: 0 });
            alloc(FIRST_PENDING);
            done.send(()).unwrap();
            let mut next = FIRST_PENDING;
            while go_rx.recv().is_ok() {
                switch_context(Context { path, run: 0 });
                next -= 1;
                alloc(next);
                done.send(()).unwrap();
            }
            // Leaving: the exit flush moves the rest to the shared counters.
        });
        done_rx.recv().unwrap();
        let flushes = std::rc::Rc::new(core::cell::Cell::new(0u64));
        let counted = flushes.clone();
        BETWEEN.with(|b| {
            *b.borrow_mut() = Some(Box::new(move || {
                counted.set(counted.get() + 1);
                go.send(()).unwrap();
                done_rx.recv().unwrap();
            }))
        });
        let during = Snapshot::take().paths[path as usize];
        BETWEEN.with(|b| b.borrow_mut().take());
        helper.join().unwrap();
        let after = Snapshot::take().paths[path as usize];
        assert!(flushes.get() >= 1);
        assert!(
            during.alloc_objects <= after.alloc_objects,
            "{} objects while the helper flushed, {} when it was done ({} flushes)",
            during.alloc_objects,
            after.alloc_objects,
            flushes.get()
        );
    }

    /// Frees of an earlier, finished run's blocks wait in the freeing thread's batch: a
    /// snapshot counts them once (path figures and, through `ledger_pending`, the run's ledger
    /// entry), and the flush at the next context switch changes none of the figures. The
    /// enclosing run, still active, is charged at each free when the freeing thread is outside
    /// it, at the flush when it is inside (it leaves, flushing, before the run can end).
    #[test]
    fn a_foreign_free_batch_is_counted_once_and_in_its_runs_ledger() {
        let job = registry::job_id("snapshot_foreign_batch_test");
        let path = registry::path_id(None, job);
        let outer = registry::run_begin(0, 1);
        let inner = registry::run_begin(outer, 1);
        assert!(outer != 0 && inner != 0);
        switch_context(Context { path, run: inner });
        TLS.with(|t| (0..10).for_each(|_| count_alloc(t, 8)));
        switch_context(Context { path, run: outer });
        let inner_totals = registry::run_end(inner, job, 1).unwrap();
        assert_eq!(inner_totals.counters.alloc_objects, 10);
        let free = |n: u64| TLS.with(|t| (0..n).for_each(|_| count_free(t, path, inner, 8)));
        let retained = |pending: &[registry::PendingLedgerFree]| {
            registry::job_holdings(job, 2, pending)
                .iter()
                .map(|h| (h.run, h.retained.retained().objects))
                .collect::<Vec<_>>()
        };
        // Outside the outer run: two frees batched, the outer run charged at once.
        switch_context(Context {
            path: PATH_UNSCOPED,
            run: 0,
        });
        free(2);
        let snap = Snapshot::take();
        assert_eq!(snap.paths[path as usize].free_objects, 2);
        assert_eq!(snap.paths[path as usize].free_bytes, 16);
        assert_eq!(
            retained(&[]),
            vec![(1, 10)],
            "not charged to the ledger yet"
        );
        assert_eq!(retained(&snap.ledger_pending), vec![(1, 8)]);
        // Inside the outer run (the switch flushed the first batch): two more, all deferred.
        switch_context(Context { path, run: outer });
        assert_eq!(retained(&[]), vec![(1, 8)], "flushed by the context switch");
        free(2);
        let snap = Snapshot::take();
        assert_eq!(
            snap.paths[path as usize].free_objects, 4,
            "not counted twice"
        );
        assert_eq!(retained(&snap.ledger_pending), vec![(1, 6)]);
        // Leaving the outer run flushes; its figures then include all four frees.
        switch_context(Context {
            path: PATH_UNSCOPED,
            run: 0,
        });
        let outer_totals = registry::run_end(outer, job, 2).unwrap();
        assert_eq!(outer_totals.counters.free_objects, 4);
        assert_eq!(outer_totals.counters.free_bytes, 32);
        let after = Snapshot::take();
        assert_eq!(
            after.paths[path as usize].free_objects, 4,
            "not counted twice"
        );
        assert!(
            after.ledger_pending.iter().all(|p| p.job != job),
            "{:?}",
            after.ledger_pending
        );
        // The inner run's entry got the four frees; the outer one finished with them counted.
        assert_eq!(retained(&[]), vec![(1, 6), (2, 6)]);
    }
}
