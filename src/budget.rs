//! Per-job memory budgets in production: "`import_users` may retain 10 MiB per run".
//!
//! A [`Budget`] holds the same limits as a test's
//! [`MemoryCheck`](crate::testing::MemoryCheck) (one implementation: the run's retained bytes
//! and objects when it finished, its peak, what it allocated), applied to every finished run
//! of a job. On a breach:
//! * one line on stderr naming the job, the run, each figure and its limit (turn it off with
//!   [`set_log`]);
//! * that job's report (its figures and top callsites, with
//!   [`Report::trigger`](crate::Report::trigger) saying why) written as
//!   `allocscope-budget-<UTC time>-p<pid>-<job>-run<N>.json` to `ALLOCSCOPE_DIR` (or
//!   [`set_dir`]);
//! * both **at most once per job per interval** ([`set_interval`], default
//!   [`DEFAULT_INTERVAL`]): a job that breaches on every run logs and dumps once per interval,
//!   the line saying how many breaches it stood for;
//! * every breach calls the hooks ([`on_breach`]) and counts in `/metrics` as
//!   `allocscope_job_budget_breaches_total{job,limit}` (series exist at 0 for each limit of a
//!   job named in a budget, so alerts see the first breach).
//!
//! From code ([`set_budget`]) or from one environment variable, read at the first call into
//! allocscope:
//!
//! ```text
//! ALLOCSCOPE_BUDGETS='import_users: retained=10MiB peak=200MiB; export: objects=1000000; *: peak=1GiB; interval=10m'
//! ```
//!
//! Entries are separated by `;`. `JOB: LIMIT=VALUE ...` sets a job's budget (the job name is
//! everything before the entry's last `:`; limits separated by spaces or commas); `*` is the
//! budget of every job without one of its own; `interval=DURATION` (`30s`, `10m`, `1h`) sets
//! the interval. Limits: `retained` (bytes still held when the run finished; also
//! `retained_bytes`), `retained_objects`, `peak` (`peak_bytes`), `allocated`
//! (`allocated_bytes`), `objects` (`allocated_objects`). Bytes take `k`/`m`/`g` or
//! `KiB`/`MiB`/`GiB` suffixes (binary); objects are whole numbers (`1_000_000`). An invalid
//! value prints one line on stderr and no budget is taken from the variable; budgets set in
//! code replace those of the environment for their job.
//!
//! Rules: the check runs on the thread that finished the run, after its hooks; with no budget
//! set it is one atomic load. The log line, the report and the hooks run with tracking
//! suspended, so they are never charged to a job; writing the report takes as long as a
//! [`report()`](crate::report()), once per job per interval. A run that could not be measured
//! ([`RunReport::unmeasured`]) is not checked.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config;
pub use crate::model::{Limit, Violation};
use crate::model::{Limits, RunReport};
use crate::report::dump::{write_set, DumpReason};
use crate::report::DumpTrigger;
use crate::thread::untracked;

/// The job name of the budget that applies to every job without one of its own.
pub const ANY_JOB: &str = "*";
/// Default [`set_interval`]: at most one log line and one report per job every 5 minutes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Limits on each run of a job. Built like a [`MemoryCheck`](crate::testing::MemoryCheck)'s
/// limits, with the same names; a figure equal to its limit is within the budget.
///
/// ```
/// use allocscope::budget::{set_budget, Budget};
/// set_budget("import_users", Some(Budget::new().max_retained_bytes(10 << 20).max_peak_bytes(200 << 20)));
/// # set_budget("import_users", None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    limits: Limits,
}

impl Budget {
    /// A budget without limits (add them with the methods below).
    pub fn new() -> Self {
        Budget::default()
    }

    /// At most `objects` blocks still held when a run finishes.
    pub fn max_retained_objects(mut self, objects: u64) -> Self {
        self.limits.set(Limit::RetainedObjects, objects);
        self
    }

    /// At most `bytes` still held when a run finishes.
    pub fn max_retained_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::RetainedBytes, bytes);
        self
    }

    /// At most `bytes` live at once while a run runs (its peak).
    pub fn max_peak_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::PeakBytes, bytes);
        self
    }

    /// At most `objects` blocks allocated by a run.
    pub fn max_allocated_objects(mut self, objects: u64) -> Self {
        self.limits.set(Limit::AllocatedObjects, objects);
        self
    }

    /// At most `bytes` allocated by a run.
    pub fn max_allocated_bytes(mut self, bytes: u64) -> Self {
        self.limits.set(Limit::AllocatedBytes, bytes);
        self
    }

    /// The value of `limit`, if set.
    pub fn limit(&self, limit: Limit) -> Option<u64> {
        self.limits.get(limit)
    }

    /// The limits `run` exceeds (empty: within budget).
    pub fn check(&self, run: &RunReport) -> Vec<Violation> {
        self.limits
            .violations(run.retained_at_finish, run.peak_bytes, run.allocated)
    }
}

/// One run over its job's budget, as the hooks see it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Breach {
    /// The job.
    pub job: String,
    /// The run's number within its job.
    pub run: u64,
    /// The limits exceeded, with the measured figures.
    pub violations: Vec<Violation>,
    /// Whether this breach was logged and dumped (the first of its job in the interval).
    pub reported: bool,
    /// The job's report written for it, if any.
    pub report_file: Option<PathBuf>,
}

/// Identifies a hook added by [`on_breach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BreachHookId(u64);

type Hook = Arc<dyn Fn(&Breach) + Send + Sync>;

struct State {
    budgets: HashMap<String, Budget>,
    interval: Duration,
    dir: Option<PathBuf>,
    dir_set: bool,
    log: bool,
    /// Breaches by (job, limit); explicit budgets' limits are present from the start at 0.
    counts: BTreeMap<(String, Limit), u64>,
    /// Per job: when it was last reported, and breaches since then not reported.
    last: HashMap<String, (Instant, u64)>,
    hooks: Vec<(u64, Hook)>,
    next_hook: u64,
}

impl State {
    fn new() -> Self {
        State {
            budgets: HashMap::new(),
            interval: DEFAULT_INTERVAL,
            dir: None,
            dir_set: false,
            log: true,
            counts: BTreeMap::new(),
            last: HashMap::new(),
            hooks: Vec::new(),
            next_hook: 0,
        }
    }
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Whether any budget is set (the check after every run is this one load when not).
static ENABLED: AtomicBool = AtomicBool::new(false);

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    init_from_env();
    untracked(|| {
        let mut s = STATE.lock();
        f(s.get_or_insert_with(State::new))
    })
}

/// Sets the budget of job `name` ([`ANY_JOB`] for every job without one of its own), or
/// removes it with `None`. Replaces a budget from `ALLOCSCOPE_BUDGETS` for that job.
pub fn set_budget(name: &str, budget: Option<Budget>) {
    with_state(|s| {
        apply(s, name, budget);
    })
}

fn apply(s: &mut State, name: &str, budget: Option<Budget>) {
    let name = &*crate::model::stored_job_name(name);
    match budget {
        Some(b) => {
            if name != ANY_JOB {
                for (limit, _) in b.limits.iter() {
                    s.counts.entry((name.to_string(), limit)).or_insert(0);
                }
            }
            s.budgets.insert(name.to_string(), b);
        }
        None => {
            s.budgets.remove(name);
        }
    }
    ENABLED.store(!s.budgets.is_empty(), Relaxed);
}

/// The budget that applies to job `name` (its own, else [`ANY_JOB`]'s).
pub fn budget(name: &str) -> Option<Budget> {
    let name = &*crate::model::stored_job_name(name);
    with_state(|s| {
        s.budgets
            .get(name)
            .or_else(|| s.budgets.get(ANY_JOB))
            .copied()
    })
}

/// At most one log line and one report per job per `interval` (default
/// [`DEFAULT_INTERVAL`]; `interval=` in `ALLOCSCOPE_BUDGETS`).
pub fn set_interval(interval: Duration) {
    with_state(|s| s.interval = interval)
}

/// The folder breach reports go to (created if missing); `None`: none are written. Without
/// this call, `ALLOCSCOPE_DIR`.
pub fn set_dir(dir: Option<PathBuf>) {
    with_state(|s| {
        s.dir = dir;
        s.dir_set = true;
    })
}

/// Whether a breach prints its line on stderr (default `true`).
pub fn set_log(on: bool) {
    with_state(|s| s.log = on)
}

/// Calls `hook` with every breach, on the thread that finished the run, after the line and
/// the report (so [`Breach::report_file`] is set). A hook that panics is caught.
pub fn on_breach(hook: impl Fn(&Breach) + Send + Sync + 'static) -> BreachHookId {
    with_state(|s| {
        s.next_hook += 1;
        s.hooks.push((s.next_hook, Arc::new(hook)));
        BreachHookId(s.next_hook)
    })
}

/// Removes a hook added by [`on_breach`]; whether it was there.
pub fn remove_breach_hook(id: BreachHookId) -> bool {
    with_state(|s| {
        let before = s.hooks.len();
        s.hooks.retain(|(i, _)| *i != id.0);
        s.hooks.len() != before
    })
}

/// Breaches counted so far, by job and limit (0 for each limit of a job named in a budget),
/// sorted by job then limit.
pub fn breach_counts() -> Vec<(String, Limit, u64)> {
    with_state(|s| {
        s.counts
            .iter()
            .map(|((job, limit), n)| (job.clone(), *limit, *n))
            .collect()
    })
}

/// The after-run hook budgets install in the registry.
#[inline]
fn after_run(run: &RunReport) {
    if ENABLED.load(Relaxed) && !run.unmeasured {
        check_run(run);
    }
}

#[cold]
fn check_run(run: &RunReport) {
    let decided = untracked(|| {
        let mut guard = STATE.lock();
        let s = guard.as_mut()?;
        let b = s
            .budgets
            .get(run.job.as_str())
            .or_else(|| s.budgets.get(ANY_JOB))?;
        let violations = b.check(run);
        if violations.is_empty() {
            return None;
        }
        for v in &violations {
            *s.counts.entry((run.job.to_string(), v.limit)).or_insert(0) += 1;
        }
        let now = Instant::now();
        let interval = s.interval;
        let entry = s.last.entry(run.job.to_string()).or_insert((now, u64::MAX));
        let (report, skipped) = if entry.1 == u64::MAX || now.duration_since(entry.0) >= interval {
            let skipped = if entry.1 == u64::MAX { 0 } else { entry.1 };
            *entry = (now, 0);
            (true, skipped)
        } else {
            entry.1 += 1;
            (false, 0)
        };
        let dir = if s.dir_set {
            s.dir.clone()
        } else {
            std::env::var_os(config::DIR)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        };
        let hooks: Vec<Hook> = s.hooks.iter().map(|(_, h)| h.clone()).collect();
        Some((violations, report, skipped, dir, s.log, hooks))
    });
    let Some((violations, report, skipped, dir, log, hooks)) = decided else {
        return;
    };
    let report_file = if report {
        untracked(|| report_breach(run, &violations, skipped, dir, log))
    } else {
        None
    };
    let breach = untracked(|| Breach {
        job: run.job.to_string(),
        run: run.run,
        violations,
        reported: report,
        report_file,
    });
    for hook in hooks {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&breach)));
        if caught.is_err() {
            crate::registry::HOOK_PANICS.fetch_add(1, Relaxed);
        }
    }
    untracked(|| drop(breach));
}

/// The log line and the job's report for a breach; the report's file.
fn report_breach(
    run: &RunReport,
    violations: &[Violation],
    skipped: u64,
    dir: Option<PathBuf>,
    log: bool,
) -> Option<PathBuf> {
    let figures: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    let message = format!(
        "job {} run {} exceeded its budget: {}",
        crate::report::escape::job_display_name(&run.job),
        run.run,
        figures.join("; ")
    );
    let mut written = None;
    let mut failed = None;
    if let Some(dir) = dir {
        let mut report = crate::report::report();
        report.jobs.retain(|j| j.name == run.job);
        report
            .callsites
            .retain(|c| c.scope.iter().any(|s| *s == run.job));
        report.trigger = Some(DumpTrigger {
            reason: DumpReason::Budget.as_str().to_string(),
            message: message.clone(),
            rss_bytes: report.process.rss_bytes,
            active: crate::timeline::active_jobs(),
            ..DumpTrigger::default()
        });
        let suffix = format!("{}-run{}", run.job, run.run);
        match write_set(&dir, DumpReason::Budget, &suffix, &report, false) {
            Ok(files) => written = files.into_iter().next(),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    if log {
        let more = if skipped > 0 {
            format!(
                " ({skipped} more breach{} of this job since its last line)",
                if skipped == 1 { "" } else { "es" }
            )
        } else {
            String::new()
        };
        let file = match (&written, &failed) {
            (Some(f), _) => format!("; report: {}", f.display()),
            (None, Some(e)) => format!("; the report could not be written: {e}"),
            (None, None) => String::new(),
        };
        eprintln!("allocscope: {message}{more}{file}");
    }
    written
}

/// Installs the after-run check and applies `ALLOCSCOPE_BUDGETS` once (at the first call
/// into allocscope's API).
pub(crate) fn init_from_env() {
    static ENV: std::sync::Once = std::sync::Once::new();
    if ENV.is_completed() {
        return;
    }
    untracked(|| {
        ENV.call_once(|| {
            crate::fork::register(&STATE);
            crate::registry::set_after_run(after_run);
            let Some(env) = config::budgets() else {
                return;
            };
            let mut guard = STATE.lock();
            let s = guard.get_or_insert_with(State::new);
            for (job, limits) in env.jobs {
                if !s.budgets.contains_key(&job) {
                    apply(s, &job, Some(Budget { limits }));
                }
            }
            if let Some(i) = env.interval {
                s.interval = i;
            }
        })
    });
}
