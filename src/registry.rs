//! Counters and tables: scope paths, jobs and runs.
//!
//! * A **path** is one chain of nested jobs (`import` > `parse`). Every block's header names the
//!   path that allocated it, and the shared counters live per path (exclusive figures). A job's
//!   inclusive figures are the sum over every path that contains it, computed when a report is
//!   built, so the hot path touches exactly one counter set per event. Invariant: the sum over
//!   all paths equals the process totals.
//! * A **job** is a name. Its entry holds what is only known at run boundaries: finished runs,
//!   the highest run peak, the most recent runs.
//! * A **run** is one execution of a job (one `track_scope` call, one tracked future). Active
//!   runs live in a fixed table of slots addressed by a token `slot << 16 | generation`; a slot is
//!   recycled when its run finishes, and a stale token (old generation) is ignored, so late frees
//!   never touch a newer run.
//!
//! All tables have fixed capacities (documented on the constants); when one is full the event is
//! charged to an overflow entry and counted, never dropped silently. Path and run tables are
//! `static` arrays of atomics: zero pages until used, readable without locks.

use core::sync::atomic::{AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering::*};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use dashmap::DashMap;

use crate::fork::{self, AtFork};
use crate::model::{stored_job_name, AtomicCounters, Counters, RunReport, SharedStr};

/// Most distinct scope paths (nesting chains of job names) kept apart; later ones share the
/// overflow path. 65,536 × 48 bytes = 3 MiB of address space, touched as used.
pub(crate) const MAX_PATHS: usize = 1 << 16;
/// Most distinct job names; later names are charged to the job `(other jobs)`.
pub(crate) const MAX_JOBS: usize = 16_384;
/// Most runs active at the same time; a run beyond it is still counted per job, but has no
/// per-run figures (peak, duration).
pub(crate) const MAX_RUNS: usize = (1 << 16) - 1;
/// How many finished runs each job remembers.
pub(crate) const RECENT_RUNS: usize = 16;
/// Deepest nesting of jobs a path records; deeper scopes are charged to their ancestor at this
/// depth.
pub(crate) const MAX_DEPTH: u32 = 32;

/// Path of blocks allocated outside any scope.
pub(crate) const PATH_UNSCOPED: u32 = 0;
/// Path of the tracker's own allocations (reports, tables, symbol caches).
pub(crate) const PATH_TRACKER: u32 = 1;
/// Path that receives scopes once `MAX_PATHS` is reached.
pub(crate) const PATH_OVERFLOW: u32 = 2;
const FIRST_PATH: u32 = 3;

/// Job that receives names once `MAX_JOBS` is reached.
pub(crate) const JOB_OTHER: u32 = 0;
/// Name of the overflow job.
pub(crate) const OTHER_JOBS_NAME: &str = "(other jobs)";

/// Shared counters of one path. Allocation and free counts only grow; live = alloc - free.
pub(crate) struct PathEntry {
    /// Flushes and the shared slow path add here.
    pub counters: AtomicCounters,
    /// Innermost job of the path.
    pub job: AtomicU32,
    /// Enclosing path, `u32::MAX` for a root path.
    pub parent: AtomicU32,
    pub depth: AtomicU32,
}

impl PathEntry {
    const fn new() -> Self {
        Self {
            counters: AtomicCounters::new(),
            job: AtomicU32::new(u32::MAX),
            parent: AtomicU32::new(u32::MAX),
            depth: AtomicU32::new(0),
        }
    }
}

pub(crate) static PATHS: [PathEntry; MAX_PATHS] = [const { PathEntry::new() }; MAX_PATHS];
/// Number of initialised paths (entries below it are valid).
pub(crate) static PATH_COUNT: AtomicU32 = AtomicU32::new(FIRST_PATH);

/// The path entry for an id read from a header. Ids are always below `MAX_PATHS` (they are
/// created here), but a corrupt header must not make the allocator panic, so clamp.
#[inline]
pub(crate) fn path(id: u32) -> &'static PathEntry {
    &PATHS[(id as usize) & (MAX_PATHS - 1)]
}

/// One job name and what is known at its run boundaries.
pub(crate) struct JobEntry {
    /// The stored name ([`stored_job_name`]), shared by every run report and event of the job.
    pub name: SharedStr,
    pub runs: AtomicU64,
    pub panicked_runs: AtomicU64,
    pub active_runs: AtomicI64,
    /// Runs started so far: a run's start number (from 1) is its `seq`, which callsites use to
    /// keep a run's blocks apart before the run has its number (given when it finishes).
    pub started: AtomicU64,
    /// When `active_runs` last went from 0 to 1 (ms since the Unix epoch): since when the job
    /// has had runs in progress, while it has any.
    pub active_since_ms: AtomicU64,
    pub peak_bytes: AtomicU64,
    /// What is updated once per finished run, under one short lock.
    pub recent: Mutex<RunHistory>,
}

/// Most scope paths a job's trend reads (the first ones created); a job nested under more
/// distinct chains of jobs gets its trend from these only.
pub(crate) const MAX_TREND_PATHS: usize = 256;

/// A job's per-run state: its recent runs, its trend summary, and the scope paths whose
/// counters make up its inclusive figures (for the trend's "retained after each run").
#[derive(Default)]
pub(crate) struct RunHistory {
    pub runs: VecDeque<RunReport>,
    pub trend: crate::series::TrendSummary,
    pub paths: Vec<u32>,
}

impl RunHistory {
    /// The job's retained bytes now, from the shared counters of its paths (what threads have
    /// not flushed is not included).
    pub(crate) fn retained_bytes(&self) -> u64 {
        self.paths
            .iter()
            .map(|&p| path(p).counters.load().net_bytes())
            .fold(0i64, |a, b| a.wrapping_add(b))
            .max(0) as u64
    }
}

struct Tables {
    jobs: RwLock<Vec<Arc<JobEntry>>>,
    job_ids: DashMap<Box<str>, u32>,
    path_ids: DashMap<(u32, u32), u32>,
    path_lock: Mutex<()>,
    free_runs: Mutex<VecDeque<u32>>,
    next_run: AtomicU32,
}

static TABLES: OnceLock<Tables> = OnceLock::new();

/// Names beyond `MAX_JOBS` that were merged into `(other jobs)`.
pub(crate) static JOBS_OVERFLOWED: AtomicU64 = AtomicU64::new(0);
/// Scopes that could not get a path of their own.
pub(crate) static PATHS_OVERFLOWED: AtomicU64 = AtomicU64::new(0);
/// Runs that found every run slot busy.
pub(crate) static RUNS_OVERFLOWED: AtomicU64 = AtomicU64::new(0);
/// Highest live bytes of the tracker's own path (`PATH_TRACKER`), kept by the allocator's
/// tracker path.
pub(crate) static TRACKER_PEAK_BYTES: AtomicU64 = AtomicU64::new(0);
/// `on_run_finished` hooks that panicked (the panic is caught; the tracker carries on).
pub(crate) static HOOK_PANICS: AtomicU64 = AtomicU64::new(0);

/// The internal after-run hooks: called with every finished run, on its thread, after the
/// public hooks. Set once each by higher layers (automatic dumps, budgets), so finishing a run
/// does not hard-wire any I/O.
static AFTER_RUN: [OnceLock<fn(&RunReport)>; 4] = [const { OnceLock::new() }; 4];

/// Installs an internal after-run hook (once per function; at most four).
pub(crate) fn set_after_run(hook: fn(&RunReport)) {
    for slot in &AFTER_RUN {
        match slot.get() {
            Some(h) if *h as usize == hook as usize => return,
            Some(_) => continue,
            None => {
                if slot.set(hook).is_ok() {
                    return;
                }
            }
        }
    }
}

/// Calls the internal after-run hooks installed.
#[inline]
pub(crate) fn after_run(run: &RunReport) {
    for slot in &AFTER_RUN {
        match slot.get() {
            Some(hook) => hook(run),
            None => return,
        }
    }
}

fn tables() -> &'static Tables {
    TABLES.get_or_init(|| {
        let t = Tables {
            jobs: RwLock::new(Vec::new()),
            job_ids: DashMap::new(),
            path_ids: DashMap::new(),
            path_lock: Mutex::new(()),
            free_runs: Mutex::new(VecDeque::new()),
            next_run: AtomicU32::new(1),
        };
        ledger_init(JOB_OTHER);
        t.jobs
            .write()
            .push(Arc::new(JobEntry::new(OTHER_JOBS_NAME)));
        t.job_ids.insert(OTHER_JOBS_NAME.into(), JOB_OTHER);
        PATHS[PATH_OVERFLOW as usize].job.store(JOB_OTHER, Relaxed);
        // Before the tables are published: no lock of theirs can be taken uncovered.
        fork::register(&TABLES_AT_FORK);
        t.jobs.read()[JOB_OTHER as usize]
            .recent
            .lock()
            .paths
            .push(PATH_OVERFLOW);
        t
    })
}

/// The registry's locks around `fork()` (see `fork`): the job list, then each job's recent
/// runs, the path lock, the run free list and both indexes. Registered before the tables
/// exist, so no lock of theirs can be taken before it is covered.
struct TablesAtFork;

impl AtFork for TablesAtFork {
    fn prepare(&self) {
        if let Some(t) = TABLES.get() {
            let jobs = t.jobs.write();
            for job in jobs.iter() {
                job.recent.prepare();
            }
            core::mem::forget(jobs);
            t.path_lock.prepare();
            t.free_runs.prepare();
            t.job_ids.prepare();
            t.path_ids.prepare();
        }
    }

    unsafe fn release(&self, child: bool) {
        if let Some(t) = TABLES.get() {
            // SAFETY: `prepare` acquired exactly these locks on this thread and forgot the
            // guards; they are released once, here, in reverse order. The job list cannot have
            // changed: its write lock was held since the prepare.
            unsafe {
                t.path_ids.release(child);
                t.job_ids.release(child);
                t.free_runs.release(child);
                t.path_lock.release(child);
                for job in (*t.jobs.data_ptr()).iter() {
                    job.recent.release(child);
                }
                t.jobs.release(child);
            }
        }
    }
}

static TABLES_AT_FORK: TablesAtFork = TablesAtFork;

impl JobEntry {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            runs: AtomicU64::new(0),
            panicked_runs: AtomicU64::new(0),
            active_runs: AtomicI64::new(0),
            started: AtomicU64::new(0),
            active_since_ms: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
            recent: Mutex::new(RunHistory {
                runs: VecDeque::with_capacity(RECENT_RUNS),
                ..RunHistory::default()
            }),
        }
    }
}

/// The id of job `name` (stored as [`stored_job_name`]), creating it if needed. Must run
/// untracked (it may allocate).
pub(crate) fn job_id(name: &str) -> u32 {
    let name = &*stored_job_name(name);
    let t = tables();
    if let Some(id) = t.job_ids.get(name).map(|id| *id) {
        return id;
    }
    let mut jobs = t.jobs.write();
    if let Some(id) = t.job_ids.get(name).map(|id| *id) {
        return id;
    }
    if jobs.len() >= MAX_JOBS {
        JOBS_OVERFLOWED.fetch_add(1, Relaxed);
        return JOB_OTHER;
    }
    let id = jobs.len() as u32;
    ledger_init(id);
    jobs.push(Arc::new(JobEntry::new(name)));
    t.job_ids.insert(name.into(), id);
    id
}

/// The job entry for an id.
pub(crate) fn job(id: u32) -> Arc<JobEntry> {
    let jobs = tables().jobs.read();
    jobs.get(id as usize)
        .cloned()
        .unwrap_or_else(|| jobs[JOB_OTHER as usize].clone())
}

/// All job entries, in id order (untracked).
pub(crate) fn all_jobs() -> Vec<Arc<JobEntry>> {
    tables().jobs.read().clone()
}

/// The path for job `job` nested in `parent` (`None` for a root scope). Must run untracked.
pub(crate) fn path_id(parent: Option<u32>, job: u32) -> u32 {
    let parent = match parent {
        Some(p) if p != PATH_UNSCOPED && p != PATH_TRACKER => p,
        _ => u32::MAX,
    };
    if parent == PATH_OVERFLOW {
        return PATH_OVERFLOW;
    }
    if parent != u32::MAX && path(parent).depth.load(Relaxed) >= MAX_DEPTH {
        return parent;
    }
    let t = tables();
    if let Some(id) = t.path_ids.get(&(parent, job)).map(|id| *id) {
        return id;
    }
    let _g = t.path_lock.lock();
    if let Some(id) = t.path_ids.get(&(parent, job)).map(|id| *id) {
        return id;
    }
    let id = PATH_COUNT.load(Relaxed);
    if id as usize >= MAX_PATHS {
        PATHS_OVERFLOWED.fetch_add(1, Relaxed);
        return PATH_OVERFLOW;
    }
    let e = &PATHS[id as usize];
    e.job.store(job, Relaxed);
    e.parent.store(parent, Relaxed);
    let depth = if parent == u32::MAX {
        1
    } else {
        path(parent).depth.load(Relaxed) + 1
    };
    e.depth.store(depth, Relaxed);
    PATH_COUNT.store(id + 1, Release);
    t.path_ids.insert((parent, job), id);
    drop(_g);
    // Each job on the new path counts it in its trend's figures. Done after releasing
    // `path_lock`: the fork handler takes the job locks before `path_lock`, so holding both
    // here in the other order could deadlock against a fork. Until this loop ran, a run
    // finishing elsewhere misses the new path's bytes in its trend point (the path is empty
    // then unless another thread already allocates in it).
    let mut chain = Vec::new();
    path_jobs(id, &mut chain);
    for j in chain {
        let entry = self::job(j);
        let mut h = entry.recent.lock();
        if h.paths.len() < MAX_TREND_PATHS {
            h.paths.push(id);
        }
    }
    id
}

/// Job ids on a path, innermost first, each job once (a job nested in itself counts once).
pub(crate) fn path_jobs(mut id: u32, out: &mut Vec<u32>) {
    out.clear();
    let mut guard = 0;
    while id != u32::MAX && guard <= MAX_DEPTH + 1 {
        if id == PATH_UNSCOPED || id == PATH_TRACKER {
            break;
        }
        let e = path(id);
        let job = e.job.load(Relaxed);
        if job != u32::MAX && !out.contains(&job) {
            out.push(job);
        }
        if id == PATH_OVERFLOW {
            break;
        }
        id = e.parent.load(Relaxed);
        guard += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// Figures of one active run, inclusive of nested runs. Updated on flushes and remote frees.
pub(crate) struct RunSlot {
    /// Generation in the low 16 bits; bumped when the run finishes.
    gen: AtomicU32,
    /// Token of the enclosing run (0 for none).
    parent: AtomicU32,
    /// The run's start number in its job (`JobEntry::started`), 0 for none.
    seq: AtomicU64,
    counters: AtomicCounters,
    live: AtomicI64,
    peak: AtomicI64,
    /// The record of the last run that finished in this slot, kept until the slot finishes
    /// its next run, so that frees of that run's blocks find its job and run number:
    /// `fin_token` is its token (0 while rewritten), `fin_job` its job, `fin_run` its job's
    /// run number, `fin_parent` the token of the run it was nested in, `fin_seq` its start
    /// number.
    fin_token: AtomicU32,
    fin_job: AtomicU32,
    fin_run: AtomicU64,
    fin_parent: AtomicU32,
    fin_seq: AtomicU64,
}

impl RunSlot {
    const fn new() -> Self {
        Self {
            gen: AtomicU32::new(0),
            parent: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            fin_token: AtomicU32::new(0),
            fin_job: AtomicU32::new(0),
            fin_run: AtomicU64::new(0),
            fin_parent: AtomicU32::new(0),
            fin_seq: AtomicU64::new(0),
            counters: AtomicCounters::new(),
            live: AtomicI64::new(0),
            peak: AtomicI64::new(0),
        }
    }
}

static RUNS: [RunSlot; MAX_RUNS + 1] = [const { RunSlot::new() }; MAX_RUNS + 1];

#[inline]
fn token_slot(token: u32) -> Option<&'static RunSlot> {
    let idx = (token >> 16) as usize;
    if idx == 0 || idx > MAX_RUNS {
        return None;
    }
    let slot = &RUNS[idx];
    (slot.gen.load(Acquire) & 0xFFFF == token & 0xFFFF).then_some(slot)
}

/// Whether the run named by `token` is still active.
pub(crate) fn run_active(token: u32) -> bool {
    token_slot(token).is_some()
}

/// The start number (`JobEntry::started`) of the active run `token`, `None` for no run or a
/// run that finished. Lock-free (allocation path of sited blocks): the slot's generation is
/// read again after the number, so a slot reused meanwhile is never read as this run's.
#[inline]
pub(crate) fn run_seq(token: u32) -> Option<u64> {
    let slot = token_slot(token)?;
    let seq = slot.seq.load(Relaxed);
    core::sync::atomic::fence(Acquire);
    (slot.gen.load(Relaxed) & 0xFFFF == token & 0xFFFF && seq != 0).then_some(seq)
}

/// The start number of the run `token`, active or finished while its slot still keeps its
/// finish record (until the slot finishes another run: about 65,535 later runs of the
/// process); `None` otherwise. Lock-free (free path of sited blocks).
#[inline]
pub(crate) fn block_seq(token: u32) -> Option<u64> {
    if token == 0 {
        return None;
    }
    run_seq(token).or_else(|| finished_record(token).map(|r| r.3))
}

/// Starts a run nested in `parent` (a token, 0 for none), its job's start number `seq`;
/// returns its token, 0 if every slot is busy. Must run untracked.
pub(crate) fn run_begin(parent: u32, seq: u64) -> u32 {
    let t = tables();
    // Never-used slots first, then the slot that finished longest ago (FIFO). A slot's 16-bit
    // generation comes back to a value only after 65,536 runs *in that slot*: recycling one
    // slot LIFO made that every 65,536 runs of one thread, and a late free of a block from an
    // old run was charged to an unrelated current run. In FIFO order it takes
    // 65,535 × 65,536 (≈ 4.3 billion) runs while every slot is in rotation.
    let fresh = if t.next_run.load(Relaxed) as usize <= MAX_RUNS {
        let i = t.next_run.fetch_add(1, Relaxed);
        (i as usize <= MAX_RUNS).then_some(i)
    } else {
        None
    };
    let idx = match fresh.or_else(|| t.free_runs.lock().pop_front()) {
        Some(i) => i,
        None => {
            RUNS_OVERFLOWED.fetch_add(1, Relaxed);
            return 0;
        }
    };
    let slot = &RUNS[idx as usize];
    slot.counters.clear();
    slot.live.store(0, Relaxed);
    slot.peak.store(0, Relaxed);
    slot.seq.store(seq, Relaxed);
    slot.parent
        .store(if run_active(parent) { parent } else { 0 }, Relaxed);
    let gen = slot.gen.load(Relaxed) & 0xFFFF;
    (idx << 16) | gen
}

/// Final figures of a run, read when it finishes.
pub(crate) struct RunTotals {
    pub counters: Counters,
    pub peak_bytes: u64,
}

/// Ends a run, run number `number` of job `job`: returns its figures and recycles its slot.
/// Must run untracked.
///
/// The finish record and the ledger entry are written before the token goes stale, and the
/// figures read after, so a free of the run's blocks on another thread is counted once: in the
/// run's figures (token still active) or in its ledger entry (stale), except for a free that
/// tested the token just before and added just after (a window of a few instructions).
pub(crate) fn run_end(token: u32, job: u32, number: u64) -> Option<RunTotals> {
    let slot = token_slot(token)?;
    ledger_begin_finish(slot, token, job, number);
    slot.gen.fetch_add(1, AcqRel);
    let totals = RunTotals {
        counters: slot.counters.load(),
        peak_bytes: slot.peak.load(Relaxed).max(0) as u64,
    };
    ledger_end_finish(job, number, &totals.counters);
    tables().free_runs.lock().push_back(token >> 16);
    Some(totals)
}

/// Adds a thread's pending figures `c` to a run and its active ancestors. `live` is their net
/// live bytes; `local_peak` the highest net live bytes the thread reached since its last
/// flush (≥ 0).
pub(crate) fn run_add(token: u32, c: Counters, live: i64, local_peak: i64) {
    let mut token = token;
    let mut guard = 0;
    while let Some(slot) = token_slot(token) {
        slot.counters.add(c);
        let before = slot.live.fetch_add(live, Relaxed);
        // `before` is below zero when another thread freed blocks whose allocation is still
        // pending in a thread's slot (this one's included): the run's true live bytes were
        // never negative, so count from zero rather than lose that much of the peak.
        slot.peak
            .fetch_max(before.max(0).saturating_add(local_peak), Relaxed);
        token = slot.parent.load(Relaxed);
        guard += 1;
        if guard > MAX_DEPTH {
            break;
        }
    }
}

/// Charges frees of `objects` blocks (`bytes` bytes) to the active run `token` and its active
/// ancestors: free counts and live bytes only (three read-modify-writes per run instead of
/// `run_add`'s seven: a free never raises a peak, and the peak already covers the live bytes).
fn run_free(token: u32, objects: u64, bytes: u64) {
    let mut token = token;
    let mut guard = 0;
    while let Some(slot) = token_slot(token) {
        slot.counters.add(Counters::of_frees(objects, bytes));
        slot.live.fetch_sub(bytes as i64, Relaxed);
        token = slot.parent.load(Relaxed);
        guard += 1;
        if guard > MAX_DEPTH {
            break;
        }
    }
}

/// A free of `objects` blocks (`bytes` bytes), from another thread or after a context switch,
/// allocated by run `token`: charged to the run while it is active, to its ledger entry once
/// it finished (then to the runs it was nested in).
#[inline]
pub(crate) fn run_remote_free(token: u32, objects: u64, bytes: u64) {
    if token == 0 {
        return;
    }
    if run_active(token) {
        run_free(token, objects, bytes);
    } else {
        ledger_free(token, objects, bytes, 0);
    }
}

/// Whether the active run `outer` is `inner` or one of the runs `inner` is nested in.
pub(crate) fn run_encloses(outer: u32, mut inner: u32) -> bool {
    for _ in 0..=MAX_DEPTH {
        if inner == 0 {
            return false;
        }
        if inner == outer {
            return true;
        }
        let Some(slot) = token_slot(inner) else {
            return false;
        };
        inner = slot.parent.load(Relaxed);
    }
    false
}

/// The first run of `token`'s chain (the run itself, then the runs it was nested in) that is
/// still active, or 0 (none, or a finished run's record is gone). Lock-free, no writes.
pub(crate) fn first_active_run(token: u32) -> u32 {
    walk_finished(token, 0, |_, _, _| {})
}

// ---------------------------------------------------------------------------------------------
// Retained by run of origin
// ---------------------------------------------------------------------------------------------

/// Finished runs of a job whose holdings are kept apart, by run number; older runs' blocks are
/// counted together (a report's `retained_older`).
pub(crate) const LEDGER_RUNS: usize = 64;

/// What one finished run still holds: its retained figures when it finished, less every free
/// of its blocks since (charged here by `ledger_free`, from any thread, at any later time).
struct LedgerEntry {
    /// The job's run number (from 1); 0 while the entry is empty or being rewritten.
    run: AtomicU64,
    /// The run's token, so that a free finds the entry only for blocks of that very run.
    token: AtomicU32,
    /// The run's start number in its job (`JobEntry::started`): callsites name runs by it.
    seq: AtomicU64,
    /// Allocations: what the run retained when it finished (objects, bytes); frees: the frees
    /// of its blocks since. Retained now = alloc - free.
    held: AtomicCounters,
}

impl LedgerEntry {
    const fn new() -> Self {
        Self {
            run: AtomicU64::new(0),
            token: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            held: AtomicCounters::new(),
        }
    }
}

/// A job's last `LEDGER_RUNS` finished runs, in a ring indexed by run number: 64 × 56 bytes =
/// 3.5 KiB per job, allocated when the job is created (once; jobs are never removed).
pub(crate) struct Ledger {
    entries: [LedgerEntry; LEDGER_RUNS],
}

/// Each job's ledger by job id, reachable from the free path without a lock.
static LEDGERS: [AtomicPtr<Ledger>; MAX_JOBS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_JOBS];

/// Creates job `id`'s ledger (once). Must run untracked (it allocates).
fn ledger_init(id: u32) {
    if let Some(slot) = LEDGERS.get(id as usize) {
        if slot.load(Acquire).is_null() {
            let l: &'static mut Ledger = Box::leak(Box::new(Ledger {
                entries: [const { LedgerEntry::new() }; LEDGER_RUNS],
            }));
            slot.store(l, Release);
        }
    }
}

fn ledger(job: u32) -> Option<&'static Ledger> {
    let p = LEDGERS.get(job as usize)?.load(Acquire);
    // SAFETY: non-null pointers in `LEDGERS` come from `Box::leak` in `ledger_init` and are
    // never freed or replaced.
    unsafe { p.as_ref() }
}

/// What a finished run of a job still holds now, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunHolding {
    /// The job's run number.
    pub run: u64,
    /// Still-live blocks allocated by the run (inclusive of runs nested in it).
    pub retained: Counters,
    /// Whether any of the run's blocks was freed after the run finished.
    pub freed_since: bool,
    /// The run's start number in its job (how callsites name it).
    pub seq: u64,
}

/// Job `job`'s finished runs among its last `LEDGER_RUNS` (run numbers above
/// `finished - LEDGER_RUNS`), oldest first, with what each still holds (including runs that
/// hold nothing).
///
/// `pending` are frees not yet charged to the entries (threads' foreign-free batches read by the
/// same snapshot): they count as freed.
pub(crate) fn job_holdings(
    job: u32,
    finished: u64,
    pending: &[PendingLedgerFree],
) -> Vec<RunHolding> {
    let Some(l) = ledger(job) else {
        return Vec::new();
    };
    let oldest = finished.saturating_sub(LEDGER_RUNS as u64);
    let mut out: Vec<RunHolding> = Vec::with_capacity(LEDGER_RUNS);
    for e in &l.entries {
        for _ in 0..100 {
            let run = e.run.load(Acquire);
            if run == 0 || run <= oldest || run > finished {
                break;
            }
            let mut held = e.held.load();
            let token = e.token.load(Relaxed);
            let seq = e.seq.load(Relaxed);
            core::sync::atomic::fence(Acquire);
            if e.run.load(Relaxed) != run {
                continue;
            }
            for p in pending {
                if p.job == job && p.run == run && p.token == token {
                    held.free_objects = held.free_objects.saturating_add(p.objects);
                    held.free_bytes = held.free_bytes.saturating_add(p.bytes);
                }
            }
            let freed_since = held.free_objects != 0;
            held.free_objects = held.free_objects.min(held.alloc_objects);
            held.free_bytes = held.free_bytes.min(held.alloc_bytes);
            out.push(RunHolding {
                run,
                retained: held,
                freed_since,
                seq,
            });
            break;
        }
    }
    out.sort_by_key(|h| h.run);
    out
}

/// Records, before the run's token goes stale, that run `number` of `job` (token `token`,
/// nested in `parent`) is finishing: the slot keeps the record until it is reused (FIFO: after
/// ~65,535 later runs of the process) and the job's ledger gets an empty entry for the run.
fn ledger_begin_finish(slot: &RunSlot, token: u32, job: u32, number: u64) {
    slot.fin_token.store(0, Relaxed);
    core::sync::atomic::fence(Release);
    slot.fin_job.store(job, Relaxed);
    slot.fin_run.store(number, Relaxed);
    slot.fin_parent.store(slot.parent.load(Relaxed), Relaxed);
    let seq = slot.seq.load(Relaxed);
    slot.fin_seq.store(seq, Relaxed);
    slot.fin_token.store(token, Release);
    if let Some(l) = ledger(job) {
        let e = &l.entries[(number % LEDGER_RUNS as u64) as usize];
        e.run.store(0, Relaxed);
        core::sync::atomic::fence(Release);
        e.token.store(token, Relaxed);
        e.seq.store(seq, Relaxed);
        e.held.clear();
        e.run.store(number, Release);
    }
}

/// Sets what run `number` of `job` held when it finished (after its token went stale: frees
/// from then on are charged through `ledger_free`).
fn ledger_end_finish(job: u32, number: u64, retained: &Counters) {
    if let Some(l) = ledger(job) {
        let e = &l.entries[(number % LEDGER_RUNS as u64) as usize];
        if e.run.load(Acquire) == number {
            let at_finish = retained.retained();
            e.held.alloc_objects.store(at_finish.objects, Relaxed);
            e.held.alloc_bytes.store(at_finish.bytes, Relaxed);
        }
    }
}

/// The finish record of the run `token` if its slot still holds it: (job, run number, parent
/// token, start number).
fn finished_record(token: u32) -> Option<(u32, u64, u32, u64)> {
    let idx = (token >> 16) as usize;
    if idx == 0 || idx > MAX_RUNS {
        return None;
    }
    let slot = &RUNS[idx];
    if slot.fin_token.load(Acquire) != token {
        return None;
    }
    let rec = (
        slot.fin_job.load(Relaxed),
        slot.fin_run.load(Relaxed),
        slot.fin_parent.load(Relaxed),
        slot.fin_seq.load(Relaxed),
    );
    core::sync::atomic::fence(Acquire);
    (slot.fin_token.load(Relaxed) == token).then_some(rec)
}

/// Walks the chain of runs from `token` up through the runs it was nested in, calling
/// `finished(job, run number, token)` for each finished run whose record is still kept, until
/// it reaches `stop`, 0, a run whose record is gone, or an active run; returns that active
/// run's token (0 otherwise).
fn walk_finished(mut token: u32, stop: u32, mut finished: impl FnMut(u32, u64, u32)) -> u32 {
    for _ in 0..=MAX_DEPTH {
        if token == 0 || token == stop {
            return 0;
        }
        if run_active(token) {
            return token;
        }
        let Some((job, number, parent, _)) = finished_record(token) else {
            return 0;
        };
        finished(job, number, token);
        token = parent;
    }
    0
}

/// Frees of `objects` blocks (`bytes` bytes) of the finished run `token`: charged back to that
/// run in its job's ledger, then to the runs it was nested in (a finished one through its own
/// ledger, the first active one through `run_free`), up to but not including `stop` (0: no
/// stop; a thread's foreign-free batch charges its active runs at each free). Lock-free; a run
/// whose record is gone (its slot reused) or that left its job's window is not charged (its
/// blocks are counted in `retained_older`).
#[cold]
#[inline(never)]
pub(crate) fn ledger_free(token: u32, objects: u64, bytes: u64, stop: u32) {
    let active = walk_finished(token, stop, |job, number, token| {
        if let Some(e) = ledger_entry(job, number, token) {
            e.held.add_free(objects, bytes);
        }
    });
    if active != 0 {
        run_free(active, objects, bytes);
    }
}

/// Run `number` of `job`'s ledger entry, if it is still that run's (token `token`).
fn ledger_entry(job: u32, number: u64, token: u32) -> Option<&'static LedgerEntry> {
    let e = &ledger(job)?.entries[(number % LEDGER_RUNS as u64) as usize];
    (e.run.load(Acquire) == number && e.token.load(Relaxed) == token).then_some(e)
}

/// Frees not yet charged to a finished run's ledger entry (a thread's foreign-free batch, read
/// by a snapshot): `objects` blocks, `bytes` bytes of run `run` of job `job`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingLedgerFree {
    pub job: u32,
    pub run: u64,
    pub token: u32,
    pub objects: u64,
    pub bytes: u64,
}

/// The ledger entries a batch of `objects` frees (`bytes` bytes) of run `token` will be charged
/// to when flushed with stop `stop` (as `ledger_free` walks), appended to `out`.
pub(crate) fn pending_ledger_frees(
    token: u32,
    stop: u32,
    objects: u64,
    bytes: u64,
    out: &mut Vec<PendingLedgerFree>,
) {
    walk_finished(token, stop, |job, run, token| {
        out.push(PendingLedgerFree {
            job,
            run,
            token,
            objects,
            bytes,
        })
    });
}
