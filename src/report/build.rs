//! Building a [`Report`] from a [`Snapshot`] (the one read of the live tables): job figures
//! from its roll-up, callsites from the site table, symbolized once per distinct stack.
//!
//! Rules: nothing here reads path or thread counters directly (the snapshot does, with its
//! consistency protocol); everything runs untracked.

use std::collections::HashMap;

use core::sync::atomic::Ordering::*;

use super::snapshot::Snapshot;
use super::{stacks, symbolize};
use super::{
    CallsiteReport, Exclusive, JobReport, Report, RunRetained, Totals, TrackerStats, Usage, FORMAT,
    VERSION,
};
use crate::callsite::{self, intern};
use crate::model::Counters;
use crate::registry;
use crate::series::{ledger_verdict, RunHeld, Trend};
use crate::thread::{self, untracked};

/// Takes a snapshot of every job's figures.
///
/// Other threads keep running: figures they accumulate while the snapshot is taken may or may
/// not be in it, but nothing is counted twice, and a job's figures include every allocation of
/// every run the report counts as finished (RELIABILITY.md states the guarantee). Taken with
/// tracking suspended, so the report's own memory is tracker overhead, not any job's.
///
/// # Not from a signal handler
///
/// Building a report is **not async-signal-safe**: it allocates, takes locks and symbolizes
/// stacks (which reads debug info through the C library). Called from a signal handler that
/// interrupted a thread inside `malloc` or the symbolizer, it can deadlock (seen: glibc's
/// malloc lock, `__lll_lock_wait_private`). To report on a signal (`SIGUSR1`, `SIGTERM`),
/// let the handler only set an atomic flag (or write to a pipe), and call `report()` or
/// [`Report::write_json`] from an ordinary thread that waits for it (crates such as
/// `signal-hook` do exactly this); or let automatic dumps
/// ([`AutoDump`](crate::AutoDump), `ALLOCSCOPE_DIR`) write reports after leaking runs and at
/// [`finish`](crate::finish) without any handler.
pub fn report() -> Report {
    callsite::init_from_env();
    untracked(|| {
        let report = build_from(&Snapshot::take());
        symbolize::release_debug_info();
        report
    })
}

/// The same snapshot as [`report`] with figures only: no callsites (`callsites` empty, in the
/// report and in every job), no timeline and no run events (their statistics stay). No stack
/// is read and nothing is symbolized, so its cost depends on the number of jobs and scope paths
/// only, never on the number of stacks or samples. For figures polled often (the live
/// endpoint's `/metrics`).
#[cfg(feature = "http")]
pub(crate) fn report_figures() -> Report {
    callsite::init_from_env();
    untracked(|| build_with(&Snapshot::take(), false))
}

/// One callsite before its frames are copied out: a (scope path, trimmed stack) group of
/// sites with its figures.
pub(crate) struct Site {
    /// The scope path (see [`Sites::scope`]).
    pub(crate) path: u32,
    /// The trimmed stack, an id of the stack table ([`stacks::StackTable::frame_ids`]).
    pub(crate) stack: u32,
    pub(crate) allocated: Usage,
    pub(crate) retained: Usage,
    pub(crate) peak_bytes: u64,
    pub(crate) estimated: bool,
    /// `retained` by age of the run that allocated it (`CallsiteReport::retained_by_age`).
    pub(crate) ages: [Usage; 6],
}

/// The callsites of a snapshot, grouped and in report order, with the stack table (locked)
/// that names their frames: what [`Report::callsites`] is made of, without the copies.
pub(crate) struct Sites {
    pub(crate) table: stacks::Locked,
    scopes: HashMap<u32, Option<Vec<String>>>,
    /// In report order ([`sort_callsites`]).
    pub(crate) list: Vec<Site>,
}

impl Sites {
    /// The job names of `path`, outermost first (empty: unscoped).
    pub(crate) fn scope(&self, path: u32) -> &[String] {
        self.scopes
            .get(&path)
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }
}

/// From one snapshot: its figures-only report (as [`report_figures`]) and its callsites,
/// grouped and in report order but not copied out (the live pprof profile is built from
/// them). Must run untracked.
#[cfg(feature = "http")]
pub(crate) fn figures_and_sites() -> (Report, Sites) {
    callsite::init_from_env();
    let snap = Snapshot::take();
    // The report first: it takes the stack table's lock for a moment, which `Sites` holds.
    let report = build_with(&snap, false);
    let sites = grouped_stacks(&snap, |path| snap.scope_names(path));
    (report, sites)
}

/// Callsites of the paths `scope_of` names (it returns the path's job names, outermost first),
/// grouped by path and trimmed stack (distinct stacks can trim to the same frames), **in
/// report order** ([`sort_callsites`]). Stacks are looked up in the stack table
/// (`stacks.rs`), which symbolizes each stack once in the process's life: a repeated report
/// with nothing new to symbolize only reads counters and sorts integers.
pub(crate) fn grouped_stacks(
    snap: &Snapshot,
    scope_of: impl Fn(u32) -> Option<Vec<String>>,
) -> Sites {
    let mut ages = SiteAges::new(snap);
    let mut table = stacks::table();
    let mut scopes: HashMap<u32, Option<Vec<String>>> = HashMap::new();
    let mut groups: HashMap<(u32, u32), usize> = HashMap::new();
    let mut accs: Vec<Site> = Vec::new();
    for id in intern::site_ids() {
        let s = intern::site(id);
        if !s.ready.load(Acquire) {
            continue;
        }
        let path = s.path.load(Relaxed);
        if scopes
            .entry(path)
            .or_insert_with(|| scope_of(path))
            .is_none()
        {
            continue;
        }
        let counters = s.counters.load();
        let (allocated, retained) = site_usage(counters);
        if allocated.is_zero() {
            continue;
        }
        let by_age = ages.of(s, path, counters.retained().objects, retained);
        let stack = table.stack_of(s.stack.load(Relaxed));
        let i = *groups.entry((path, stack)).or_insert_with(|| {
            accs.push(Site {
                path,
                stack,
                allocated: Usage::default(),
                retained: Usage::default(),
                peak_bytes: 0,
                estimated: false,
                ages: [Usage::default(); 6],
            });
            accs.len() - 1
        });
        let acc = &mut accs[i];
        acc.allocated += allocated;
        acc.retained += retained;
        acc.peak_bytes = acc
            .peak_bytes
            .saturating_add(s.peak_bytes.load(Relaxed).max(retained.bytes));
        acc.estimated |= s.estimated.load(Relaxed);
        for (a, b) in acc.ages.iter_mut().zip(by_age) {
            *a += b;
        }
    }
    // The order of `sort_callsites`, on integers: scopes ranked by their names, stacks by
    // their frames (the table's ranks).
    let mut paths: Vec<(&Vec<String>, u32)> = scopes
        .iter()
        .filter_map(|(&p, names)| Some((names.as_ref()?, p)))
        .collect();
    paths.sort_unstable();
    let scope_rank: HashMap<u32, usize> = paths
        .iter()
        .enumerate()
        .map(|(rank, &(_, p))| (p, rank))
        .collect();
    let stack_rank = table.ranks();
    // Keys computed once per site, not per comparison (each would take two hash lookups).
    accs.sort_by_cached_key(|a| {
        (
            core::cmp::Reverse(a.retained.bytes),
            core::cmp::Reverse(a.allocated.bytes),
            scope_rank[&a.path],
            stack_rank[a.stack as usize],
        )
    });
    Sites {
        table,
        scopes,
        list: accs,
    }
}

/// [`grouped_stacks`] as callsite reports (each path's with the path id), copying out the
/// frames (shared strings: no frame text is copied).
fn grouped_sites(
    snap: &Snapshot,
    scope_of: impl Fn(u32) -> Option<Vec<String>>,
) -> Vec<(u32, CallsiteReport)> {
    let sites = grouped_stacks(snap, scope_of);
    sites
        .list
        .iter()
        .map(|acc| {
            let c = CallsiteReport {
                scope: sites.scope(acc.path).to_vec(),
                frames: sites.table.frames(acc.stack),
                allocated: acc.allocated,
                retained: acc.retained,
                peak_bytes: acc.peak_bytes,
                estimated: acc.estimated,
                retained_by_age: acc.ages,
            };
            (acc.path, c)
        })
        .collect()
}

/// The report of a snapshot (symbolizing every callsite). Must run untracked.
pub(crate) fn build_from(snap: &Snapshot) -> Report {
    build_with(snap, true)
}

/// The report of a snapshot: everything (`full`), or its figures without callsites, timeline
/// and run events. Must run untracked.
fn build_with(snap: &Snapshot, full: bool) -> Report {
    let r = &snap.rollup;
    let totals = Totals {
        live: r.all.retained(),
        allocated: r.all.allocated(),
        unscoped_live: r.unscoped.retained(),
        unscoped_allocated: r.unscoped.allocated(),
    };

    // Callsites: every site, grouped by (path, symbolized frames); each job gets the ones of
    // the paths it is on.
    let mut by_job: Vec<Vec<CallsiteReport>> = vec![Vec::new(); snap.jobs.len()];
    let grouped = if full {
        grouped_sites(snap, |path| snap.scope_names(path))
    } else {
        Vec::new()
    };
    let mut callsites: Vec<CallsiteReport> = Vec::with_capacity(grouped.len());
    for (path, c) in grouped {
        if let Some(jobs) = snap.chains.get(path as usize) {
            for &j in jobs {
                if let Some(list) = by_job.get_mut(j as usize) {
                    list.push(c.clone());
                }
            }
        }
        callsites.push(c);
    }

    let mut jobs: Vec<JobReport> = Vec::new();
    for (j, entry) in snap.jobs.iter().enumerate() {
        let runs = snap.runs[j];
        let inc = r.inclusive[j];
        if runs.finished == 0 && runs.active == 0 && inc.allocated().is_zero() {
            continue;
        }
        // In report order already: a filter of the sorted list.
        let job_sites = std::mem::take(&mut by_job[j]);
        let (recent_runs, trend) = {
            let h = entry.recent.lock();
            (
                h.runs.iter().cloned().collect(),
                h.trend.trend(inc.retained().bytes),
            )
        };
        let (retained_by_run, retained_older, trend) =
            retained_by_origin(snap, j as u32, runs.finished, inc.retained(), trend);
        jobs.push(JobReport {
            name: entry.name.to_string(),
            runs: runs.finished,
            active_runs: runs.active,
            panicked_runs: runs.panicked,
            allocated: inc.allocated(),
            retained: inc.retained(),
            peak_bytes: entry.peak_bytes.load(Relaxed),
            exclusive: Exclusive {
                allocated: r.exclusive[j].allocated(),
                retained: r.exclusive[j].retained(),
            },
            recent_runs,
            callsites: job_sites,
            trend,
            retained_by_run,
            retained_older,
        });
    }
    sort_jobs(&mut jobs);

    let (stacks, sites, frames) = intern::usage();
    let symbolized = stacks::table().counts();
    let process = super::memory::process_memory(super::memory::tracked_live(r));
    let mut history = super::memory::history(&snap.jobs);
    if !full {
        history.timeline = Vec::new();
        history.run_events = Vec::new();
    }
    let diagnostics = super::diagnose::diagnose(&totals, &jobs, &callsites);
    Report {
        format: FORMAT.to_string(),
        version: VERSION,
        timestamp_unix_ms: crate::model::unix_ms(),
        stack_mode: callsite::stack_mode(),
        totals,
        jobs,
        callsites,
        tracker: TrackerStats {
            installed: thread::INSTALLED.load(Relaxed),
            overhead: r.tracker.retained(),
            overhead_allocated: r.tracker.allocated(),
            overhead_peak_bytes: registry::TRACKER_PEAK_BYTES
                .load(Relaxed)
                .max(r.tracker.retained().bytes),
            jobs: snap.jobs.len().saturating_sub(1) as u64,
            paths: snap.paths.len().saturating_sub(3) as u64,
            stacks: stacks as u64,
            sites: sites as u64,
            jobs_overflowed: registry::JOBS_OVERFLOWED.load(Relaxed),
            paths_overflowed: registry::PATHS_OVERFLOWED.load(Relaxed),
            runs_overflowed: registry::RUNS_OVERFLOWED.load(Relaxed),
            stacks_dropped: intern::DROPPED.load(Relaxed),
            unwinder_fallbacks: crate::callsite::capture::FALLBACKS.load(Relaxed),
            hook_panics: registry::HOOK_PANICS.load(Relaxed),
            threads_without_slot: thread::THREADS_WITHOUT_SLOT.load(Relaxed),
            frames_stored: frames as u64,
            stacks_symbolized: symbolized.0,
            frames_symbolized: symbolized.1,
        },
        process,
        timeline: history.timeline,
        run_events: history.run_events,
        timeline_stats: history.stats,
        diagnostics,
        trigger: None,
    }
}

/// The order of jobs in every report: retained bytes, then allocated bytes, largest first,
/// then by name.
pub(crate) fn sort_jobs(jobs: &mut [JobReport]) {
    jobs.sort_by(|a, b| {
        b.retained
            .bytes
            .cmp(&a.retained.bytes)
            .then(b.allocated.bytes.cmp(&a.allocated.bytes))
            .then(a.name.cmp(&b.name))
    });
}

/// A site's fixed-point object count, rounded to whole objects; saturating, so a counter near
/// `u64::MAX` (sampled weights summed over a long run) rounds down instead of overflowing.
pub(crate) fn fixed_to_objects(fx: u64) -> u64 {
    fx.saturating_add(intern::OBJ_ONE / 2) / intern::OBJ_ONE
}

/// A site's counters (objects in `OBJ_ONE` units) as (allocated, retained) whole objects and
/// bytes.
pub(crate) fn site_usage(c: Counters) -> (Usage, Usage) {
    let (allocated, retained) = (c.allocated(), c.retained());
    (
        Usage::new(fixed_to_objects(allocated.objects), allocated.bytes),
        Usage::new(fixed_to_objects(retained.objects), retained.bytes),
    )
}

pub(crate) fn sort_callsites(list: &mut [CallsiteReport]) {
    list.sort_by(|a, b| {
        b.retained
            .bytes
            .cmp(&a.retained.bytes)
            .then(b.allocated.bytes.cmp(&a.allocated.bytes))
            .then_with(|| a.scope.cmp(&b.scope))
            .then_with(|| a.frames.cmp(&b.frames))
    });
}

/// Job `name`'s inclusive counters now (pending thread figures included), without callsites;
/// `None` if no job has that name. Must run untracked.
pub(crate) fn job_counters_now(name: &str) -> Option<Counters> {
    let snap = Snapshot::take();
    snap.job_id(name).map(|j| snap.rollup.inclusive[j as usize])
}

/// One job's figures now, for `testing`: what it still holds (inclusive of nested jobs, with
/// pending thread figures) and its callsites, grouped like the report's. Unlike [`report`],
/// only this job's sites are symbolized, so it stays cheap however many other jobs and
/// stacks the process has. `None` if no job has that name.
pub(crate) fn job_snapshot(name: &str) -> Option<(Usage, Vec<CallsiteReport>)> {
    callsite::init_from_env();
    untracked(|| {
        let snap = Snapshot::take();
        let job = snap.job_id(name)?;
        let callsites: Vec<CallsiteReport> = grouped_sites(&snap, |path| {
            let chain = snap.chains.get(path as usize)?;
            chain
                .contains(&job)
                .then(|| snap.scope_names(path))
                .flatten()
        })
        .into_iter()
        .map(|(_, c)| c)
        .collect();
        Some((snap.rollup.inclusive[job as usize].retained(), callsites))
    })
}

/// Reads sites' figures by age of run (`callsite::ages`), per job: the job's finished runs
/// (the snapshot's count), its start count, and its ledger's start number → run number map.
struct SiteAges<'a> {
    snap: &'a Snapshot,
    jobs: HashMap<u32, JobRuns>,
}

/// What maps one job's ring tags to ages.
struct JobRuns {
    finished: u64,
    started: u64,
    /// Start number → run number, for the finished runs in the job's ledger.
    numbers: HashMap<u64, u64>,
}

impl<'a> SiteAges<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        SiteAges {
            snap,
            jobs: HashMap::new(),
        }
    }

    /// Site `s`'s live figures (`live_fx`: fixed-point objects; `retained`: the site's, as
    /// reported) by age bucket: each ring entry of a run among the newest 16 finished (or in
    /// progress) in its bucket, the rest in the oldest. The buckets sum to `retained`; a ring
    /// read ahead of the counters (blocks allocated in between) is trimmed from the youngest
    /// bucket. All zero for an unscoped site.
    fn of(
        &mut self,
        s: &intern::SiteEntry,
        path: u32,
        live_fx: u64,
        retained: Usage,
    ) -> [Usage; 6] {
        let mut out = [Usage::default(); 6];
        let Some(&job) = self.snap.chains.get(path as usize).and_then(|c| c.last()) else {
            return out;
        };
        let Some(ring) = callsite::ages::read(s) else {
            out[5] = retained;
            return out;
        };
        let snap = self.snap;
        let runs = self.jobs.entry(job).or_insert_with(|| {
            let finished = snap.runs.get(job as usize).map_or(0, |r| r.finished);
            let started = snap
                .jobs
                .get(job as usize)
                .map_or(0, |j| j.started.load(Acquire));
            let numbers = registry::job_holdings(job, finished, &snap.ledger_pending)
                .iter()
                .map(|h| (h.seq, h.run))
                .collect();
            JobRuns {
                finished,
                started,
                numbers,
            }
        });
        // Fixed-point objects and bytes per bucket, young ones from the ring.
        let mut fx = [0u64; 5];
        let mut bytes = [0u64; 5];
        for (i, entry) in ring.iter().enumerate() {
            for (k, &(tag, count)) in entry.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let Some(age) = runs.age(i, tag) else {
                    continue;
                };
                let b = CallsiteReport::age_bucket(age);
                if b < 5 {
                    let sum = if k == 0 { &mut fx[b] } else { &mut bytes[b] };
                    *sum = sum.saturating_add(count);
                }
            }
        }
        // Never more than the site's live figures (a ring read after newer allocations).
        let (mut fx_left, mut bytes_left) = (live_fx, retained.bytes);
        for b in (0..5).rev() {
            fx[b] = fx[b].min(fx_left);
            fx_left -= fx[b];
            bytes[b] = bytes[b].min(bytes_left);
            bytes_left -= bytes[b];
        }
        let mut objects_left = retained.objects;
        for b in (0..5).rev() {
            let objects = fixed_to_objects(fx[b]).min(objects_left);
            objects_left -= objects;
            out[b] = Usage::new(objects, bytes[b]);
        }
        out[5] = Usage::new(objects_left, bytes_left);
        out
    }
}

impl JobRuns {
    /// The age (runs since, 0 for a run in progress) of the run whose ring entry `index` is
    /// tagged `tag`; `None` for a run older than the ledger's window.
    fn age(&self, index: usize, tag: u64) -> Option<u64> {
        // A run started after `started` was read (its blocks allocated meanwhile): in progress.
        let ahead = tag.wrapping_sub(self.started) & 0xFFFF;
        if ahead != 0 && ahead <= callsite::ages::RING as u64 * 32 {
            return Some(0);
        }
        let seq = callsite::ages::seq_of(index, tag, self.started)?;
        match self.numbers.get(&seq) {
            Some(&run) => Some(self.finished.saturating_sub(run)),
            // Not among the finished runs of the window: a run in progress if it started
            // among the last `RING` (older ones are out of the ring's reach).
            None if self.started - seq < callsite::ages::RING as u64 => Some(0),
            None => None,
        }
    }
}

/// Job `job`'s retained figures split by run of origin (the registry's ledger, read now), the
/// rest (`retained` less the runs listed) as older, and the trend with the ledger's verdict
/// where it can tell (`series::ledger_verdict`).
fn retained_by_origin(
    snap: &Snapshot,
    job: u32,
    finished: u64,
    retained: Usage,
    mut trend: Trend,
) -> (Vec<RunRetained>, Usage, Trend) {
    let holdings = registry::job_holdings(job, finished, &snap.ledger_pending);
    let mut by_run = Vec::new();
    let mut held = Vec::with_capacity(holdings.len());
    let (mut objects, mut bytes) = (0u64, 0u64);
    for h in &holdings {
        let r = h.retained.retained();
        held.push(RunHeld {
            age: finished - h.run,
            bytes: r.bytes,
            freed_since: h.freed_since,
        });
        if r.is_zero() {
            continue;
        }
        objects = objects.saturating_add(r.objects);
        bytes = bytes.saturating_add(r.bytes);
        by_run.push(RunRetained {
            run: h.run,
            retained: r,
        });
    }
    let older = retained - Usage::new(objects, bytes);
    let window = finished.min(registry::LEDGER_RUNS as u64);
    if let Some(kind) = ledger_verdict(&held, window, finished, older.bytes) {
        trend.kind = kind;
    }
    (by_run, older, trend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_counts_round_and_saturate() {
        assert_eq!(fixed_to_objects(0), 0);
        assert_eq!(fixed_to_objects(intern::OBJ_ONE), 1);
        assert_eq!(fixed_to_objects(intern::OBJ_ONE / 2), 1);
        assert_eq!(fixed_to_objects(intern::OBJ_ONE / 2 - 1), 0);
        // Overflowed (a debug-build panic) before it saturated.
        assert_eq!(fixed_to_objects(u64::MAX), u64::MAX / intern::OBJ_ONE);
    }
}
