//! [`MemoryCheck`]: the builder, and the run: warm-up runs, the measured run, what it still
//! holds (read by `held`), the limits applied (into `figures::Figures` or a `CheckFailure`).
//!
//! Rules: every figure comes from the run's own [`RunReport`](crate::model::RunReport) and the one snapshot path
//! (`report::job_snapshot`); the bookkeeping runs untracked, so the check's own memory is
//! never charged to the job it measures.

use std::fmt;
use std::sync::Arc;

use super::failure::{CheckFailure, Limit, Violation};
use super::figures::Figures;
use super::held::{finished_runs, held_by_runs_older_than, still_held, Held, Ignore};
use super::lease::Lease;
use super::DEFAULT_SHOWN_CALLSITES;
use crate::callsite::StackMode;
use crate::model::Limits;
use crate::report::symbolize::caller_ips;
use crate::report::{job_counters_now, CallsiteReport, Usage};
use crate::scope::track_scope_run;
use crate::thread::untracked;

/// A memory check: a job name, limits, warm-up and callsite filters. Build it, then
/// [`run`](Self::run) it (a `Result`) or [`assert`](Self::assert) it (a panic on failure).
///
/// Without limits a check only measures (and still fails if the allocator is not installed).
///
/// ```
/// # #[global_allocator]
/// # static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
/// use allocscope::testing::MemoryCheck;
///
/// static CACHE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
/// fn lookup(i: usize) -> u64 {
///     CACHE.get_or_init(|| (0..1000).collect())[i] // fills once, on the first call
/// }
///
/// # fn main() {
/// let figures = MemoryCheck::new("lookup")
///     .warmup(1) // the first run fills the cache
///     .no_leaks() // later runs keep nothing
///     .assert(|| lookup(7));
/// assert_eq!(figures.warmup[0].retained_at_finish.bytes, 8000);
/// assert_eq!(figures.retained.bytes, 0);
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a check does nothing until `run` or `assert` is called"]
pub struct MemoryCheck {
    name: String,
    warmup: u32,
    limits: Limits,
    max_age_runs: Option<u64>,
    ignore: Vec<Ignore>,
    show_callsites: usize,
}

impl fmt::Debug for MemoryCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCheck")
            .field("name", &self.name)
            .field("warmup", &self.warmup)
            .field("limits", &self.limits)
            .field("no_retention_older_than", &self.max_age_runs)
            .field(
                "ignore",
                &self.ignore.iter().map(Ignore::describe).collect::<Vec<_>>(),
            )
            .field("show_callsites", &self.show_callsites)
            .finish()
    }
}

impl MemoryCheck {
    /// A check of the job `name` (shown in reports and failure messages), without limits.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryCheck {
            name: name.into(),
            warmup: 0,
            limits: Limits::default(),
            max_age_runs: None,
            ignore: Vec::new(),
            show_callsites: DEFAULT_SHOWN_CALLSITES,
        }
    }

    /// Fails if runs `runs` or more runs older than the newest still hold memory: a job may
    /// keep what its latest `runs` runs made (`0`: nothing at all; `1`: the latest result, as
    /// a cache of the last answer does) but never older runs' blocks. The check runs the job
    /// `runs + 1` more times before the measured run, under the same job, and reads what each
    /// of those runs still holds after the measured one (the job's retained-by-run ledger,
    /// [`JobReport::retained_by_run`](crate::report::JobReport::retained_by_run)); the
    /// measured run is the newest.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
    /// # fn main() {
    /// use allocscope::testing::MemoryCheck;
    /// use std::sync::Mutex;
    /// static LATEST: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    /// // Each run replaces the previous run's result: only the newest run holds memory.
    /// MemoryCheck::new("latest result")
    ///     .no_retention_older_than(1)
    ///     .assert(|| *LATEST.lock().unwrap() = Some(vec![1u8; 4096]));
    /// *LATEST.lock().unwrap() = None;
    /// # }
    /// ```
    pub fn no_retention_older_than(mut self, runs: u64) -> Self {
        self.max_age_runs = Some(runs);
        self
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the job `runs` times before the measured run (default 0), so that what fills once
    /// (caches, lazy statics, pools) is in place; the limits apply to the measured run only.
    pub fn warmup(mut self, runs: u32) -> Self {
        self.warmup = runs;
        self
    }

    /// Fails if the measured run still held more than `objects` blocks when it returned.
    pub fn max_retained_objects(mut self, objects: u64) -> Self {
        self.limits.set(Limit::RetainedObjects, objects);
        self
    }

    /// Fails if the measured run still held more than `bytes` bytes when it returned.
    pub fn max_retained_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::RetainedBytes, bytes);
        self
    }

    /// Fails if the measured run still held anything when it returned: the same as
    /// `.max_retained_objects(0).max_retained_bytes(0)`.
    pub fn no_leaks(self) -> Self {
        self.max_retained_objects(0).max_retained_bytes(0)
    }

    /// Fails if the measured run's live bytes went above `bytes` while it ran.
    pub fn max_peak_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::PeakBytes, bytes);
        self
    }

    /// Fails if the measured run allocated more than `objects` blocks in total.
    pub fn max_allocated_objects(mut self, objects: u64) -> Self {
        self.limits.set(Limit::AllocatedObjects, objects);
        self
    }

    /// Fails if the measured run allocated more than `bytes` bytes in total.
    pub fn max_allocated_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::AllocatedBytes, bytes);
        self
    }

    /// Does not count what callsites still hold whose stack has a frame whose function name or
    /// source file contains `pattern` (a plain substring, case-sensitive, e.g.
    /// `"known_cache"`, `"mycrate::cache::"` or `"src/cache.rs"`). In optimized builds with
    /// line tables only, inlined frames carry short function names (`insert` rather than
    /// `mycrate::cache::Cache::insert`); their file paths are complete, so a file pattern works
    /// in every profile.
    ///
    /// Only the job's code is matched: not allocscope's own frames, nor the test function that
    /// runs the check, the closure given to it, and the harness below (so a test named
    /// `known_cache_is_ignored` does not ignore all it allocates). Name a function the job
    /// calls. May be given several times (any pattern ignores).
    ///
    /// Needs [`StackMode::Every`] (exact callsites); otherwise the check fails with
    /// [`CheckFailure::ExactStacksRequired`].
    pub fn ignore_callsites_matching(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(Ignore::Matching(pattern.into()));
        self
    }

    /// Does not count what callsites for which `predicate` returns `true` still hold. It sees
    /// the callsite's scope and its symbolized stack ([`CallsiteReport::frames`], innermost
    /// first) down to the check, as in [`HeldCallsite::callsite`](super::HeldCallsite::callsite). `description` names the filter in failure messages. Needs
    /// [`StackMode::Every`], like [`ignore_callsites_matching`](Self::ignore_callsites_matching).
    pub fn ignore_callsites_where(
        mut self,
        description: impl Into<String>,
        predicate: impl Fn(&CallsiteReport) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.ignore
            .push(Ignore::Where(description.into(), Arc::new(predicate)));
        self
    }

    /// How many callsites a failure message lists (default [`DEFAULT_SHOWN_CALLSITES`]).
    pub fn show_callsites(mut self, callsites: usize) -> Self {
        self.show_callsites = callsites;
        self
    }

    /// Runs the warm-up runs, then the measured run, and checks the limits.
    ///
    /// Returns the measured figures, or a [`CheckFailure`] whose `Display` (and `Debug`, so
    /// that `.unwrap()` prints it readably) is the whole report: the limits exceeded, the
    /// measured values, the check's and the test's names, and the callsites still holding
    /// memory when stacks are on. If the job panics, the panic is resumed unchanged.
    ///
    /// Fails without running the job if the tracking allocator is not installed, or if a
    /// callsite filter is set and the stack mode is not [`StackMode::Every`].
    pub fn run<R>(&self, mut job: impl FnMut() -> R) -> Result<Figures, CheckFailure> {
        let test = untracked(test_name);
        let caller = untracked(caller_ips);
        if !crate::alloc::is_installed() {
            return Err(untracked(|| CheckFailure::NotInstalled {
                check: self.name.clone(),
                test,
            }));
        }
        let mode = crate::callsite::stack_mode();
        if !self.ignore.is_empty() && mode != StackMode::Every {
            return Err(untracked(|| CheckFailure::ExactStacksRequired {
                check: self.name.clone(),
                test,
                mode,
                filters: self.ignore.iter().map(Ignore::describe).collect(),
            }));
        }

        let (warmup_name, mut warmup) = untracked(|| {
            (
                format!("{} [warm-up]", self.name),
                Vec::with_capacity(self.warmup as usize),
            )
        });
        for _ in 0..self.warmup {
            let ((), run) = track_scope_run(&warmup_name, || drop(job()));
            untracked(|| warmup.push(run));
        }

        let mut lease = Lease::acquire(&self.name);
        // Runs before the measured one, for `no_retention_older_than`: the first of them is
        // the job's run `first`.
        let aged = match self.max_age_runs {
            Some(age) => {
                let first = untracked(|| finished_runs(&lease.job)) + 1;
                for _ in 0..=age {
                    let ((), _) = track_scope_run(&lease.job, || drop(job()));
                }
                Some((age, first))
            }
            None => None,
        };
        let before = untracked(|| job_counters_now(&lease.job)).unwrap_or_default();
        let ((), mut run) = track_scope_run(&lease.job, || drop(job()));
        if run.unmeasured {
            // No run slot was free (forgotten futures hold them): the run has no figures of its
            // own. Its job's figures are its own, though — no other run uses a leased check
            // name — so allocated and retained come from there, exactly; only the peak is
            // unknown, and a check with a peak limit cannot pass on a guess.
            if self.limits.get(Limit::PeakBytes).is_some() {
                drop(lease);
                return Err(untracked(|| CheckFailure::Unmeasured {
                    check: self.name.clone(),
                    test,
                    job: run.job.to_string(),
                }));
            }
            untracked(|| {
                let after = job_counters_now(&lease.job).unwrap_or_default();
                run.allocated = after.allocated() - before.allocated();
                run.retained_at_finish = after.retained() - before.retained();
            });
        }
        let mut held = untracked(|| still_held(&lease, &self.ignore, mode, &run, &caller));
        // Another thread may free the run's blocks just after it finished (a runtime dropping
        // its reference to a finished task after the join handle got the output). Those are
        // not kept: before failing a retained limit, give such frees a moment (≤ 63 ms).
        let mut wait_ms = 1;
        while lease.baseline.is_none() && wait_ms <= 32 && self.retained_exceeded(&held) {
            std::thread::sleep(std::time::Duration::from_millis(wait_ms));
            wait_ms *= 2;
            held = untracked(|| still_held(&lease, &self.ignore, mode, &run, &caller));
        }
        lease.clean = held.retained.is_zero();
        let old_runs = aged.map(|(age, first)| {
            (
                age,
                untracked(|| held_by_runs_older_than(&lease.job, age, first)),
            )
        });
        drop(lease);
        if run.unmeasured {
            untracked(|| {
                held.notes.push(
                    "every run slot was in use when this run started (`.track_scope()` futures \
                     never finished or forgotten keep theirs): allocated and retained come from \
                     the check's job, whose figures are this run's own; the peak is unknown (0)"
                        .to_string(),
                )
            });
        }

        untracked(|| {
            let figures = Figures {
                check: self.name.clone(),
                job: run.job.to_string(),
                test,
                allocated: run.allocated,
                peak_bytes: run.peak_bytes,
                retained: held.retained,
                ignored: held.ignored,
                ignore_filters: self.ignore.iter().map(Ignore::describe).collect(),
                holding: held.holding,
                stack_mode: mode,
                warmup,
                run,
                notes: held.notes,
            };
            let violations = self.violations(&figures);
            if violations.is_empty() {
                if let Some((age, held)) = old_runs.filter(|(_, h)| !h.is_zero()) {
                    return Err(CheckFailure::OldRunsRetain {
                        figures: Box::new(figures),
                        runs: age,
                        held,
                    });
                }
                return Ok(figures);
            }
            Err(CheckFailure::Exceeded {
                figures: Box::new(figures),
                violations,
                shown_callsites: self.show_callsites,
            })
        })
    }

    /// Like [`run`](Self::run), but panics with the failure's message; returns the figures.
    #[track_caller]
    pub fn assert<R>(&self, job: impl FnMut() -> R) -> Figures {
        match self.run(job) {
            Ok(figures) => figures,
            Err(failure) => panic!("{failure}"),
        }
    }

    fn retained_exceeded(&self, held: &Held) -> bool {
        let counted = held.retained - held.ignored;
        self.limits
            .violations(counted, 0, Usage::default())
            .iter()
            .any(|v| matches!(v.limit, Limit::RetainedObjects | Limit::RetainedBytes))
    }

    fn violations(&self, f: &Figures) -> Vec<Violation> {
        self.limits
            .violations(f.retained_checked(), f.peak_bytes, f.allocated)
    }
}

fn test_name() -> String {
    let t = std::thread::current();
    t.name().unwrap_or("<unnamed thread>").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunReport;

    fn figures(allocated: Usage, peak: u64, retained: Usage, ignored: Usage) -> Figures {
        let run = RunReport {
            job: "x [check 1]".into(),
            run: 1,
            duration_ns: 0,
            finished_unix_ms: 0,
            allocated,
            peak_bytes: peak,
            retained_at_finish: retained,
            panicked: false,
            unmeasured: false,
        };
        Figures {
            check: "x".into(),
            job: run.job.to_string(),
            test: "t".into(),
            allocated,
            peak_bytes: peak,
            retained,
            ignored,
            ignore_filters: Vec::new(),
            holding: Vec::new(),
            stack_mode: StackMode::Off,
            warmup: Vec::new(),
            run,
            notes: Vec::new(),
        }
    }

    #[test]
    fn limits_fail_only_above_their_value_in_a_fixed_order() {
        let check = MemoryCheck::new("x")
            .max_allocated_bytes(100)
            .max_peak_bytes(50)
            .no_leaks();
        let f = figures(Usage::new(3, 100), 51, Usage::new(1, 8), Usage::default());
        let v: Vec<(Limit, u64, u64)> = check
            .violations(&f)
            .iter()
            .map(|v| (v.limit, v.max, v.measured))
            .collect();
        assert_eq!(
            v,
            [
                (Limit::RetainedObjects, 0, 1),
                (Limit::RetainedBytes, 0, 8),
                (Limit::PeakBytes, 50, 51),
            ]
        );
        assert!(MemoryCheck::new("x").violations(&f).is_empty());
    }

    #[test]
    fn ignored_memory_is_subtracted_before_the_retained_limits() {
        let check = MemoryCheck::new("x").max_retained_bytes(10);
        let f = figures(
            Usage::new(3, 100),
            100,
            Usage::new(2, 30),
            Usage::new(1, 25),
        );
        assert_eq!(f.retained_checked(), Usage::new(1, 5));
        assert!(check.violations(&f).is_empty());
    }
}
