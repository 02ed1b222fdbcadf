//! Building a [`Report`] from the live tables, without stopping other threads.

use std::collections::HashMap;
use std::sync::Arc;

use core::sync::atomic::Ordering::*;

use super::{
    CallsiteReport, Exclusive, Frame, JobReport, Report, Totals, TrackerStats, Usage, FORMAT,
    VERSION,
};
use crate::callsite::{self, intern, symbolize};
use crate::registry::{self, PATH_TRACKER, PATH_UNSCOPED};
use crate::thread::{self, untracked};

/// Figures of one path: allocated and freed.
#[derive(Clone, Copy, Default)]
struct PathFigures {
    alloc: Usage,
    freed: Usage,
}

impl PathFigures {
    fn retained(&self) -> Usage {
        Usage::new(
            self.alloc.objects.saturating_sub(self.freed.objects),
            self.alloc.bytes.saturating_sub(self.freed.bytes),
        )
    }
}

/// Takes a snapshot of every job's figures.
///
/// Other threads keep running: figures they accumulate while the snapshot is taken may or may
/// not be in it, but nothing is counted twice. Taken with tracking suspended, so the report's
/// own memory is tracker overhead, not any job's.
pub fn report() -> Report {
    callsite::init_from_env();
    untracked(|| {
        let report = build(true);
        symbolize::release_debug_info();
        report
    })
}

/// The same snapshot as [`report`] without callsites (`callsites` empty, in the report and in
/// every job): no stack is read and nothing is symbolized, so its cost depends on the number
/// of jobs and scope paths only, never on the number of stacks. For figures polled often
/// (the live endpoint's `/metrics`).
#[cfg(feature = "http")]
pub(crate) fn report_figures() -> Report {
    callsite::init_from_env();
    untracked(|| build(false))
}

/// Every path's figures: the shared counters plus what threads have not flushed yet. Retried
/// (a bounded number of times) when a thread flushed while we read, since its figures would
/// then be counted in both places.
fn path_figures(count: usize) -> Vec<PathFigures> {
    let mut pending = Vec::new();
    let mut figs = Vec::new();
    for _ in 0..16 {
        thread::pending_all(&mut pending);
        figs = (0..count)
            .map(|i| {
                let e = registry::path(i as u32);
                PathFigures {
                    alloc: Usage::new(e.alloc_objects.load(Relaxed), e.alloc_bytes.load(Relaxed)),
                    freed: Usage::new(e.free_objects.load(Relaxed), e.free_bytes.load(Relaxed)),
                }
            })
            .collect();
        if thread::pending_unchanged(&pending) {
            break;
        }
    }
    for p in &pending {
        if let Some(f) = figs.get_mut(p.path as usize) {
            f.alloc += Usage::new(p.alloc_objects, p.alloc_bytes);
            f.freed += Usage::new(p.free_objects, p.free_bytes);
        }
    }
    figs
}

/// Callsites of the paths `scope_of` names (it returns the path's job names, outermost first),
/// grouped by path and symbolized frames (distinct stacks can trim to the same frames). Each
/// distinct stack is symbolized once and its frames are shared until the final entries are
/// built, so a report with many callsites holds one copy of each stack's frames per entry.
fn grouped_sites(scope_of: impl Fn(u32) -> Option<Vec<String>>) -> Vec<(u32, CallsiteReport)> {
    struct Acc {
        frames: Arc<[Frame]>,
        allocated: Usage,
        retained: Usage,
        estimated: bool,
    }
    let mut scopes: HashMap<u32, Option<Vec<String>>> = HashMap::new();
    let mut frames_of_stack: HashMap<u32, usize> = HashMap::new();
    let mut frame_ids: HashMap<Arc<[Frame]>, usize> = HashMap::new();
    let mut frame_table: Vec<Arc<[Frame]>> = Vec::new();
    let mut groups: HashMap<(u32, usize), Acc> = HashMap::new();
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
        let (ao, ab) = (s.alloc_objects.load(Relaxed), s.alloc_bytes.load(Relaxed));
        let (fo, fb) = (s.free_objects.load(Relaxed), s.free_bytes.load(Relaxed));
        let allocated = Usage::new(fixed_to_objects(ao), ab);
        if allocated.is_zero() {
            continue;
        }
        let retained = Usage::new(
            fixed_to_objects(ao.saturating_sub(fo)),
            ab.saturating_sub(fb),
        );
        let stack = s.stack.load(Relaxed);
        let fid = *frames_of_stack.entry(stack).or_insert_with(|| {
            let frames: Arc<[Frame]> = symbolize::symbolize(&intern::stack_frames(stack)).into();
            *frame_ids.entry(frames.clone()).or_insert_with(|| {
                frame_table.push(frames);
                frame_table.len() - 1
            })
        });
        let acc = groups.entry((path, fid)).or_insert_with(|| Acc {
            frames: frame_table[fid].clone(),
            allocated: Usage::default(),
            retained: Usage::default(),
            estimated: false,
        });
        acc.allocated += allocated;
        acc.retained += retained;
        acc.estimated |= s.estimated.load(Relaxed);
    }
    groups
        .into_iter()
        .map(|((path, _), acc)| {
            let scope = scopes.get(&path).cloned().flatten().unwrap_or_default();
            let c = CallsiteReport {
                scope,
                frames: acc.frames.to_vec(),
                allocated: acc.allocated,
                retained: acc.retained,
                estimated: acc.estimated,
            };
            (path, c)
        })
        .collect()
}

fn build(with_callsites: bool) -> Report {
    let count = registry::PATH_COUNT.load(Acquire) as usize;
    let figs = path_figures(count);
    let jobs_entries = registry::all_jobs();

    // Names of each path's jobs, outermost first.
    let mut chain = Vec::new();
    let scopes: Vec<Vec<u32>> = (0..count as u32)
        .map(|p| {
            registry::path_jobs(p, &mut chain);
            let mut c = chain.clone();
            c.reverse();
            c
        })
        .collect();
    let name_of = |job: u32| -> String {
        jobs_entries.get(job as usize).map_or_else(
            || registry::OTHER_JOBS_NAME.to_string(),
            |j| j.name.to_string(),
        )
    };

    // Per-job inclusive and exclusive figures.
    let mut inclusive: Vec<PathFigures> = vec![PathFigures::default(); jobs_entries.len()];
    let mut exclusive: Vec<PathFigures> = vec![PathFigures::default(); jobs_entries.len()];
    let mut totals = Totals::default();
    for (p, f) in figs.iter().enumerate() {
        if p as u32 == PATH_TRACKER {
            continue;
        }
        totals.allocated += f.alloc;
        totals.live += f.retained();
        if p as u32 == PATH_UNSCOPED {
            totals.unscoped_allocated = f.alloc;
            totals.unscoped_live = f.retained();
            continue;
        }
        let jobs = &scopes[p];
        for &j in jobs {
            if let Some(inc) = inclusive.get_mut(j as usize) {
                inc.alloc += f.alloc;
                inc.freed += f.freed;
            }
        }
        if let Some(&leaf) = jobs.last() {
            if let Some(ex) = exclusive.get_mut(leaf as usize) {
                ex.alloc += f.alloc;
                ex.freed += f.freed;
            }
        }
    }

    // Callsites: every site, grouped by (path, symbolized frames); each job gets the ones of
    // the paths it is on.
    let mut by_job: Vec<Vec<CallsiteReport>> = vec![Vec::new(); jobs_entries.len()];
    let grouped = if with_callsites {
        grouped_sites(|path| {
            scopes
                .get(path as usize)
                .map(|c| c.iter().map(|&j| name_of(j)).collect())
        })
    } else {
        Vec::new()
    };
    let mut callsites: Vec<CallsiteReport> = Vec::with_capacity(grouped.len());
    for (path, c) in grouped {
        if let Some(jobs) = scopes.get(path as usize) {
            for &j in jobs {
                if let Some(list) = by_job.get_mut(j as usize) {
                    list.push(c.clone());
                }
            }
        }
        callsites.push(c);
    }
    sort_callsites(&mut callsites);

    let mut jobs: Vec<JobReport> = Vec::new();
    for (j, entry) in jobs_entries.iter().enumerate() {
        let runs = entry.runs.load(Relaxed);
        let active = entry.active_runs.load(Relaxed).max(0) as u64;
        let inc = inclusive[j];
        if runs == 0 && active == 0 && inc.alloc.is_zero() {
            continue;
        }
        let mut job_sites = std::mem::take(&mut by_job[j]);
        sort_callsites(&mut job_sites);
        jobs.push(JobReport {
            name: entry.name.to_string(),
            runs,
            active_runs: active,
            panicked_runs: entry.panicked_runs.load(Relaxed),
            allocated: inc.alloc,
            retained: inc.retained(),
            peak_bytes: entry.peak_bytes.load(Relaxed),
            exclusive: Exclusive {
                allocated: exclusive[j].alloc,
                retained: exclusive[j].retained(),
            },
            recent_runs: entry.recent.lock().iter().cloned().collect(),
            callsites: job_sites,
        });
    }
    jobs.sort_by(|a, b| {
        b.retained
            .bytes
            .cmp(&a.retained.bytes)
            .then(b.allocated.bytes.cmp(&a.allocated.bytes))
            .then(a.name.cmp(&b.name))
    });

    let (stacks, sites, _) = intern::usage();
    let tracker_fig = figs.get(PATH_TRACKER as usize).copied().unwrap_or_default();
    Report {
        format: FORMAT.to_string(),
        version: VERSION,
        timestamp_unix_ms: crate::scope::unix_ms(),
        stack_mode: callsite::stack_mode(),
        totals,
        jobs,
        callsites,
        tracker: TrackerStats {
            installed: thread::INSTALLED.load(Relaxed),
            overhead: tracker_fig.retained(),
            jobs: jobs_entries.len().saturating_sub(1) as u64,
            paths: count.saturating_sub(3) as u64,
            stacks: stacks as u64,
            sites: sites as u64,
            jobs_overflowed: registry::JOBS_OVERFLOWED.load(Relaxed),
            paths_overflowed: registry::PATHS_OVERFLOWED.load(Relaxed),
            runs_overflowed: registry::RUNS_OVERFLOWED.load(Relaxed),
            stacks_dropped: intern::DROPPED.load(Relaxed),
            hook_panics: crate::scope::HOOK_PANICS.load(Relaxed),
        },
    }
}

fn fixed_to_objects(fx: u64) -> u64 {
    (fx + intern::OBJ_ONE / 2) / intern::OBJ_ONE
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

/// One job's figures now, for `testing`: what it still holds (inclusive of nested jobs, with
/// pending thread figures) and its callsites, grouped like the report's. Unlike [`report`],
/// only this job's sites are symbolized, so it stays cheap however many other jobs and
/// stacks the process has. `None` if no job has that name.
pub(crate) fn job_snapshot(name: &str) -> Option<(Usage, Vec<CallsiteReport>)> {
    callsite::init_from_env();
    untracked(|| {
        let jobs_entries = registry::all_jobs();
        let job = jobs_entries.iter().position(|j| &*j.name == name)? as u32;
        let name_of = |job: u32| -> String {
            jobs_entries.get(job as usize).map_or_else(
                || registry::OTHER_JOBS_NAME.to_string(),
                |j| j.name.to_string(),
            )
        };
        let count = registry::PATH_COUNT.load(Acquire) as usize;
        let figs = path_figures(count);
        let mut inc = PathFigures::default();
        let mut scopes: HashMap<u32, Vec<String>> = HashMap::new();
        let mut chain = Vec::new();
        for (p, f) in figs.iter().enumerate() {
            if p as u32 == PATH_TRACKER || p as u32 == PATH_UNSCOPED {
                continue;
            }
            registry::path_jobs(p as u32, &mut chain);
            if chain.contains(&job) {
                inc.alloc += f.alloc;
                inc.freed += f.freed;
                scopes.insert(p as u32, chain.iter().rev().map(|&j| name_of(j)).collect());
            }
        }
        let mut callsites: Vec<CallsiteReport> = grouped_sites(|path| scopes.get(&path).cloned())
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        sort_callsites(&mut callsites);
        Some((inc.retained(), callsites))
    })
}
