//! What a check's finished run still holds, and where: the callsites holding its memory (the
//! job's frames, less an earlier check's leftovers), the filters that ignore some of them, and
//! what the job's earlier runs still hold (its retained-by-run ledger).
//!
//! Rules: read through the one snapshot path (`report::job_snapshot`) and the registry's
//! ledger, untracked (callers run these inside `untracked`).

use std::sync::Arc;

use core::sync::atomic::Ordering::Relaxed;

use super::lease::Lease;
use crate::callsite::StackMode;
use crate::report::symbolize::{is_own_name, is_test_code, job_frames};
use crate::report::{CallsiteReport, RunReport, Usage};

type Predicate = Arc<dyn Fn(&CallsiteReport) -> bool + Send + Sync>;

/// How callsites are chosen to be ignored.
#[derive(Clone)]
pub(super) enum Ignore {
    Matching(String),
    Where(String, Predicate),
}

impl Ignore {
    pub(super) fn describe(&self) -> String {
        match self {
            Ignore::Matching(p) => format!("matching {p:?}"),
            Ignore::Where(d, _) => d.clone(),
        }
    }

    /// Whether the filter ignores `c`. `caller` are the functions of the stack that called
    /// the check: they and closures defined in them (the closure passed to the check) are the
    /// test's code, never matched by a pattern — a test named `known_cache_is_ignored` must
    /// not ignore everything its closure allocates because of a pattern `"known_cache"`.
    fn matches(&self, c: &CallsiteReport, caller: &[&str]) -> bool {
        match self {
            Ignore::Matching(p) => c
                .frames
                .iter()
                .filter(|f| !is_own_name(&f.function) && !is_test_code(&f.function, caller))
                .any(|f| {
                    f.function.contains(p.as_str())
                        || f.file
                            .as_deref()
                            .is_some_and(|file| file.contains(p.as_str()))
                }),
            Ignore::Where(_, pred) => pred(c),
        }
    }
}

/// What a finished run still holds, and where.
pub(super) struct Held {
    pub(super) retained: Usage,
    pub(super) ignored: Usage,
    pub(super) holding: Vec<HeldCallsite>,
    pub(super) notes: Vec<String>,
}

/// A callsite still holding memory from the measured run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeldCallsite {
    /// The callsite; its `retained` is what it holds from the measured run, and its `frames`
    /// are the job's: from the allocation down to the check, without the frames of the test
    /// and the harness below it (allocations on other threads keep their whole stack).
    pub callsite: CallsiteReport,
    /// Whether a filter ignores it.
    pub ignored: bool,
}

/// What the finished measured run still holds, and where (untracked).
pub(super) fn still_held(
    lease: &Lease,
    ignore: &[Ignore],
    mode: StackMode,
    run: &RunReport,
    caller: &[usize],
) -> Held {
    let mut held = Held {
        retained: run.retained_at_finish,
        ignored: Usage::default(),
        holding: Vec::new(),
        notes: Vec::new(),
    };
    if held.retained.is_zero() {
        return held;
    }
    if run.job != lease.job {
        held.notes.push(format!(
            "the job table is full, so this run was counted as {:?}: its callsites cannot \
             be told apart from other jobs' and none are ignored",
            run.job
        ));
        return held;
    }
    let Some((now, callsites)) = crate::report::job_snapshot(&lease.job) else {
        return held;
    };
    if lease.baseline.is_none() {
        // The job holds only what this run left (earlier runs of this job name left
        // nothing): what other threads freed since the run finished is not held any more.
        held.retained = Usage::new(
            held.retained.objects.min(now.objects),
            held.retained.bytes.min(now.bytes),
        );
    } else {
        held.notes.push(format!(
            "job {:?} still held memory from an earlier check of the same name; it was \
             subtracted from the callsites",
            lease.job
        ));
    }
    if mode == StackMode::Off || callsites.is_empty() {
        return held;
    }
    let caller = crate::report::symbolize::symbolize(caller);
    let caller_fns: Vec<&str> = caller.iter().map(|f| f.function.as_str()).collect();
    for c in callsites {
        let before = lease
            .baseline
            .as_ref()
            .and_then(|b| b.get(&(c.scope.clone(), c.frames.clone())))
            .copied()
            .unwrap_or_default();
        let retained = c.retained - before;
        if retained.is_zero() {
            continue;
        }
        let callsite = CallsiteReport {
            retained,
            frames: job_frames(c.frames.to_vec(), &caller).into(),
            ..c
        };
        let ignored = ignore.iter().any(|i| i.matches(&callsite, &caller_fns));
        if ignored {
            held.ignored += retained;
        }
        held.holding.push(HeldCallsite { callsite, ignored });
    }
    held.holding.sort_by(|a, b| {
        b.callsite
            .retained
            .bytes
            .cmp(&a.callsite.retained.bytes)
            .then(
                b.callsite
                    .retained
                    .objects
                    .cmp(&a.callsite.retained.objects),
            )
    });
    // What is ignored is part of what is retained, never more.
    held.ignored = Usage::new(
        held.ignored.objects.min(held.retained.objects),
        held.ignored.bytes.min(held.retained.bytes),
    );
    let dropped = crate::callsite::intern::DROPPED.load(Relaxed);
    if dropped > 0 {
        held.notes.push(format!(
            "{dropped} stacks were not recorded because the callsite tables are full; \
             callsites may be missing"
        ));
    }
    held
}

/// Finished runs of the job `name` so far. Untracked.
pub(super) fn finished_runs(name: &str) -> u64 {
    let id = crate::registry::job_id(name);
    crate::registry::job(id)
        .runs
        .load(core::sync::atomic::Ordering::Acquire)
}

/// What runs of the job `name` numbered `first` or later, `age` or more runs older than its
/// newest finished run, still hold. Untracked.
pub(super) fn held_by_runs_older_than(name: &str, age: u64, first: u64) -> Usage {
    let id = crate::registry::job_id(name);
    let finished = crate::registry::job(id)
        .runs
        .load(core::sync::atomic::Ordering::Acquire);
    // Frees still in threads' foreign-free batches count as freed, as in reports.
    let pending = crate::report::snapshot::Snapshot::take().ledger_pending;
    crate::registry::job_holdings(id, finished, &pending)
        .iter()
        .filter(|h| h.run >= first && finished - h.run >= age)
        .fold(Usage::default(), |a, h| {
            let r = h.retained.retained();
            Usage::new(a.objects + r.objects, a.bytes + r.bytes)
        })
}
