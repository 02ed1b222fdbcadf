//! Relative reports: what was allocated after a [`Marker`] and is still live.
//!
//! A block's header has no room for an allocation time, so a block allocated before the mark
//! cannot be told apart from one allocated after it. Instead, [`mark`] snapshots the
//! monotonic counters (allocations and frees, per scope path and per callsite) and
//! [`report_since`] subtracts that snapshot from a fresh report, entry by entry.

use std::collections::HashMap;

use core::sync::atomic::Ordering::*;

use super::build::{build_from, sort_callsites};
use super::snapshot::{Rollup, Snapshot};
use super::symbolize;
use super::{CallsiteReport, Exclusive, JobReport, Report, Totals};
use crate::callsite::{self, intern};
use crate::model::{Counters, SharedFrames};
use crate::registry;
use crate::thread::untracked;

/// A point in time to report from; see [`mark`] and [`report_since`].
///
/// Holds a copy of the tracker's counters (four numbers per scope path and per callsite, two
/// per job): its size grows with the number of paths and callsites, not with allocations.
#[derive(Clone, Debug)]
pub struct Marker {
    taken_unix_ms: u64,
    /// Per path id.
    paths: Vec<Counters>,
    /// Per site id; object counts in the sites' fixed point.
    sites: Vec<(u32, Counters)>,
    /// Per job id: finished runs and panicked runs.
    jobs: Vec<(u64, u64)>,
}

impl Marker {
    /// When the mark was taken, in milliseconds since the Unix epoch.
    pub fn taken_unix_ms(&self) -> u64 {
        self.taken_unix_ms
    }
}

/// Marks the present moment, for [`report_since`].
///
/// Cheap: it copies counters and resolves no symbols. Typical use: mark after warm-up (caches
/// filled, pools allocated), run the workload, then look at what it added and still holds.
///
/// ```
/// let marker = allocscope::mark();
/// let kept = allocscope::track_scope("after_mark", || vec![0u8; 4096]);
/// let since = allocscope::report_since(&marker);
/// # if allocscope::is_installed() {
/// assert_eq!(since.job("after_mark").unwrap().retained.bytes, 4096);
/// # }
/// # drop(kept);
/// ```
pub fn mark() -> Marker {
    callsite::init_from_env();
    untracked(|| {
        // The one snapshot path: run counts first, then paths (shared + pending, re-checked),
        // so a run the mark counts as finished has all its allocations in the mark.
        let snap = Snapshot::take();
        let sites = intern::site_ids()
            .filter_map(|id| {
                let s = intern::site(id);
                s.ready.load(Acquire).then(|| (id, s.counters.load()))
            })
            .collect();
        let jobs = snap.runs.iter().map(|r| (r.finished, r.panicked)).collect();
        Marker {
            taken_unix_ms: crate::model::unix_ms(),
            paths: snap.paths,
            sites,
            jobs,
        }
    })
}

/// A report of what was allocated after `marker` was taken, and of that, what is still live.
///
/// Every figure is the difference between now and the mark, computed per job, per scope and
/// per callsite (the same entries as in [`report()`](crate::report())):
///
/// * **allocated** (objects and bytes) is exact: allocation counters only grow, so now minus
///   then is exactly what was allocated after the mark (in sampled stack mode, callsite
///   figures stay estimates, job figures stay exact).
/// * **retained** is *retained now minus retained at the mark*, clamped at 0. It is exact when
///   no block allocated before the mark was freed after it. Each such free lowers the figure
///   of the entry that allocated it (it counts as if a post-mark block had been freed), so
///   memory released from before the mark can hide as much memory added since, within the
///   same job or callsite — the figures are then a lower bound of what the period added and
///   still holds. A block header has no room for an allocation time, which exact figures
///   would need.
/// * **runs** and **panicked runs** count the runs that finished after the mark;
///   `recent_runs` keeps only those, and `peak_bytes` is the highest peak among them (0 if
///   none of the job's remembered recent runs finished after the mark).
/// * Jobs and callsites with nothing allocated and no run since the mark are left out; totals
///   follow the same rules; tracker statistics are the current ones.
///
/// The result is an ordinary [`Report`]: render it, save it, diff it.
pub fn report_since(marker: &Marker) -> Report {
    callsite::init_from_env();
    untracked(|| {
        let snap = Snapshot::take();
        let now = build_from(&snap);
        symbolize::release_debug_info();
        subtract(now, &snap, marker)
    })
}

type SiteKey = (Vec<String>, SharedFrames);

fn subtract(mut now: Report, snap: &Snapshot, m: &Marker) -> Report {
    // Figures at the mark, rolled up along today's paths (a path never changes once made).
    let at_mark = Rollup::of(&m.paths, &snap.chains, snap.jobs.len());
    let (inclusive, exclusive) = (&at_mark.inclusive, &at_mark.exclusive);
    let (all, unscoped) = (at_mark.all, at_mark.unscoped);
    let mut chain = Vec::new();
    let name_of = |job: u32| snap.name_of(job).to_string();

    // Callsites at the mark, keyed like the report's entries: (scope names, frames).
    let mut sites: HashMap<SiteKey, Counters> = HashMap::new();
    let mut frames_of_stack: HashMap<u32, SharedFrames> = HashMap::new();
    let mut table = super::stacks::table();
    for &(id, c) in &m.sites {
        let s = intern::site(id);
        let path = s.path.load(Relaxed);
        let stack = s.stack.load(Relaxed);
        let frames = frames_of_stack
            .entry(stack)
            .or_insert_with(|| {
                let trimmed = table.stack_of(stack);
                table.frames(trimmed)
            })
            .clone();
        let scope = snap.scope_names(path).unwrap_or_else(|| {
            registry::path_jobs(path, &mut chain);
            chain.iter().rev().map(|&j| name_of(j)).collect()
        });
        sites.entry((scope, frames)).or_default().add(c);
    }
    drop(table);

    now.totals = Totals {
        live: now.totals.live - all.retained(),
        allocated: now.totals.allocated - all.allocated(),
        unscoped_live: now.totals.unscoped_live - unscoped.retained(),
        unscoped_allocated: now.totals.unscoped_allocated - unscoped.allocated(),
    };
    now.callsites = subtract_sites(std::mem::take(&mut now.callsites), &sites);

    let ids: HashMap<&str, usize> = snap
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (&*j.name, i))
        .collect();
    let jobs = std::mem::take(&mut now.jobs);
    now.jobs = jobs
        .into_iter()
        .filter_map(|mut j| {
            let id = ids.get(j.name.as_str()).copied();
            let get = |v: &[Counters]| id.and_then(|i| v.get(i)).copied().unwrap_or_default();
            let (inc, exc) = (get(inclusive), get(exclusive));
            let (runs0, panicked0) = id.and_then(|i| m.jobs.get(i)).copied().unwrap_or((0, 0));
            j.runs = j.runs.saturating_sub(runs0);
            j.panicked_runs = j.panicked_runs.saturating_sub(panicked0);
            j.allocated -= inc.allocated();
            j.retained -= inc.retained();
            j.exclusive = Exclusive {
                allocated: j.exclusive.allocated - exc.allocated(),
                retained: j.exclusive.retained - exc.retained(),
            };
            j.recent_runs.retain(|r| r.run > runs0);
            j.peak_bytes = j
                .recent_runs
                .iter()
                .map(|r| r.peak_bytes)
                .max()
                .unwrap_or(0);
            j.callsites = subtract_sites(std::mem::take(&mut j.callsites), &sites);
            let keep = j.runs > 0 || j.active_runs > 0 || !j.allocated.is_zero();
            keep.then_some(j)
        })
        .collect::<Vec<JobReport>>();
    super::build::sort_jobs(&mut now.jobs);
    now
}

/// Subtracts the mark's figures from each callsite (entries with the same key merged first),
/// dropping those with nothing since the mark.
fn subtract_sites(
    list: Vec<CallsiteReport>,
    mark: &HashMap<SiteKey, Counters>,
) -> Vec<CallsiteReport> {
    let mut merged: HashMap<SiteKey, CallsiteReport> = HashMap::with_capacity(list.len());
    for c in list {
        let key = (c.scope.clone(), c.frames.clone());
        match merged.get_mut(&key) {
            Some(e) => {
                e.allocated += c.allocated;
                e.retained += c.retained;
                e.peak_bytes = e.peak_bytes.saturating_add(c.peak_bytes);
                e.estimated |= c.estimated;
            }
            None => {
                merged.insert(key, c);
            }
        }
    }
    let mut out: Vec<CallsiteReport> = merged
        .into_iter()
        .filter_map(|(key, mut c)| {
            if let Some(&m) = mark.get(&key) {
                let (allocated, retained) = super::build::site_usage(m);
                c.allocated -= allocated;
                c.retained -= retained;
            }
            (!c.allocated.is_zero()).then_some(c)
        })
        .collect();
    sort_callsites(&mut out);
    out
}
