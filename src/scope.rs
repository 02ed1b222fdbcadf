//! Scopes: entering and leaving jobs, and carrying them to other threads.
//!
//! A thread's current scope is its context (path, run) in `thread::TLS`. Entering a scope
//! flushes the figures the thread accumulated for the previous context and switches; leaving
//! switches back. Bookkeeping (job names, paths, run slots, hooks) runs with tracking
//! suspended, so the tracker's allocations are never charged to a job.
//!
//! A context whose run has finished while the thread was still inside it (a tracing span
//! exited on another thread, or whose guard was forgotten, then closed elsewhere) is left at
//! the thread's next allocation (the span layer asks it through the thread's counter slot,
//! `thread::ask_to_leave`) or next scope operation, whichever comes first: every entry point
//! here reads the context through [`context`], which first asks the span layer's hook
//! ([`set_leave_finished`]) to restore what the thread had before entering it.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use core::sync::atomic::{AtomicU64, Ordering::*};
use parking_lot::RwLock;

use crate::fork;
use crate::model::{unix_ms, RunReport, Usage};
use crate::registry::{self, RECENT_RUNS};
use crate::thread::{self, untracked, Context};

/// Runs `f` as one run of the job `name` and returns its value.
///
/// Every block allocated while `f` runs on this thread (and on threads or futures that carry
/// the scope, see [`spawn`], [`ScopeHandle`], [`FutureExt`](crate::FutureExt)) is charged to
/// `name`, and to every job enclosing this one. When `f` returns — or panics — the run is
/// finished: counted in the job's `runs`, recorded among its recent runs, and passed to the
/// [`on_run_finished`] hooks. A panic is then resumed unchanged.
///
/// ```
/// # use allocscope::track_scope;
/// let total: usize = track_scope("sum", || (0..100).map(|i| vec![0u8; i].len()).sum());
/// assert_eq!(total, 4950);
/// ```
pub fn track_scope<R>(name: &str, f: impl FnOnce() -> R) -> R {
    track_scope_run(name, f).0
}

/// Like [`track_scope`], and also returns the finished run's own figures: what this run
/// allocated, its peak, and what it still held when it finished — independent of other runs
/// of the same job on other threads. If `f` panics, the run is finished and the panic resumed.
///
/// ```
/// let (len, run) = allocscope::track_scope_run("build", || vec![0u8; 100].len());
/// assert_eq!(len, 100);
/// assert_eq!(run.retained_at_finish.bytes, 0);
/// ```
pub fn track_scope_run<R>(name: &str, f: impl FnOnce() -> R) -> (R, RunReport) {
    let run = ActiveRun::begin(name, context());
    let prev = thread::switch_context(run.ctx);
    let result = catch_unwind(AssertUnwindSafe(f));
    thread::switch_context(prev);
    let _ = context();
    let report = run.finish(result.is_err());
    match result {
        Ok(r) => (r, report),
        Err(payload) => resume_unwind(payload),
    }
}

/// One run in progress.
pub(crate) struct ActiveRun {
    job: u32,
    /// The run's path and token.
    pub(crate) ctx: Context,
    started: Instant,
}

impl ActiveRun {
    /// Starts a run of `name` nested in the context `parent`.
    pub(crate) fn begin(name: &str, parent: Context) -> ActiveRun {
        crate::startup::apply_env();
        untracked(|| {
            let job = registry::job_id(name);
            let path = registry::path_id(Some(parent.path), job);
            let entry = registry::job(job);
            let seq = entry.started.fetch_add(1, Relaxed).wrapping_add(1);
            let token = registry::run_begin(parent.run, seq);
            if entry.active_runs.fetch_add(1, Relaxed) == 0 {
                entry.active_since_ms.store(unix_ms(), Relaxed);
            }
            ActiveRun {
                job,
                ctx: Context { path, run: token },
                started: Instant::now(),
            }
        })
    }

    /// Finishes the run. The caller has already left its context on this thread (so the
    /// figures the thread accumulated are flushed). Calls the hooks in the caller's context.
    pub(crate) fn finish(self, panicked: bool) -> RunReport {
        let report = untracked(|| {
            let entry = registry::job(self.job);
            // Release: the thread left the run's scope (its figures are flushed) before this, and a
            // snapshot reads `runs` first with acquire (see `report::snapshot`).
            let run = entry.runs.fetch_add(1, Release) + 1;
            let totals = registry::run_end(self.ctx.run, self.job, run);
            entry.active_runs.fetch_sub(1, Relaxed);
            if panicked {
                entry.panicked_runs.fetch_add(1, Relaxed);
            }
            let unmeasured = totals.is_none();
            let (allocated, retained, peak) = match totals {
                Some(t) => (t.counters.allocated(), t.counters.retained(), t.peak_bytes),
                None => (Usage::default(), Usage::default(), 0),
            };
            entry.peak_bytes.fetch_max(peak, Relaxed);
            let report = RunReport {
                job: entry.name.clone(),
                run,
                duration_ns: self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64,
                finished_unix_ms: unix_ms(),
                allocated,
                peak_bytes: peak,
                retained_at_finish: retained,
                panicked,
                // No run slot: nothing was measured (the figures above are zeros).
                unmeasured,
            };
            {
                let mut h = entry.recent.lock();
                if h.runs.len() >= RECENT_RUNS {
                    h.runs.pop_front();
                }
                h.runs.push_back(report.clone());
                let retained_now = h.retained_bytes();
                h.trend.add(retained_now);
            }
            crate::series::record_run(self.job, &report);
            report
        });
        run_hooks(&report);
        registry::after_run(&report);
        report
    }
}

/// A run entered from many places and finished once, when it is finished or dropped: a future
/// polled on many threads ([`Tracked`](crate::Tracked)), a tracing span entered per poll, a
/// request whose response body streams. Entering is done through [`OwnedRun::handle`].
pub(crate) struct OwnedRun {
    handle: ScopeHandle,
    run: Option<ActiveRun>,
}

impl OwnedRun {
    /// Starts a run of `name` nested in the context `parent`.
    pub(crate) fn begin(name: &str, parent: Context) -> OwnedRun {
        let run = ActiveRun::begin(name, parent);
        OwnedRun {
            handle: ScopeHandle(run.ctx),
            run: Some(run),
        }
    }

    /// The scope of this run, to enter around each piece of its work.
    pub(crate) fn handle(&self) -> ScopeHandle {
        self.handle
    }

    /// Finishes the run now (the caller is not inside its scope on this thread).
    pub(crate) fn finish(mut self, panicked: bool) -> Option<RunReport> {
        self.run.take().map(|r| r.finish(panicked))
    }
}

impl Drop for OwnedRun {
    /// Finishes the run if it was not finished explicitly; a drop during unwinding marks it as
    /// panicked.
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            let _ = run.finish(std::thread::panicking());
        }
    }
}

/// A scope that can be entered from anywhere: on another thread, in a future, later.
///
/// Obtained from [`current_scope`]. Entering it charges allocations to the same job (and the
/// same run, while that run is still going) as the code that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeHandle(Context);

impl ScopeHandle {
    /// Runs `f` with allocations on this thread charged to this scope, then restores the
    /// thread's previous scope (also if `f` panics).
    ///
    /// If the run that created the handle has finished, allocations are still charged to its
    /// job (its totals and retained figures), but no longer to the finished run's figures.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _restore = self.enter_guard();
        f()
    }

    /// Switches to this scope until the guard is dropped.
    pub(crate) fn enter_guard(&self) -> Restore {
        let _ = context();
        let run = if registry::run_active(self.0.run) {
            self.0.run
        } else {
            0
        };
        Restore(thread::switch_context(Context {
            path: self.0.path,
            run,
        }))
    }

    /// Wraps `f` into a closure that enters this scope around each call, on whichever thread
    /// calls it: a closure handed to a thread pool (`rayon`'s `par_iter().map(..)`,
    /// `for_each`, a work queue) stays charged to the job that created it.
    ///
    /// Without it, a pool task runs in the scope of the thread that happens to run it. With
    /// rayon that is not only "no scope": a worker blocked in `join` (waiting for its stolen
    /// half) runs other tasks meanwhile — possibly another job's — and their allocations are
    /// charged to the blocked worker's job.
    ///
    /// For closures of no or several arguments, call [`enter`](Self::enter) inside them
    /// (`rayon::join(|| h.enter(a), || h.enter(b))`); with the `rayon` feature,
    /// `allocscope::rayon::{join, spawn}` do it for you.
    ///
    /// ```
    /// let lens = allocscope::track_scope("parse", || {
    ///     let h = allocscope::current_scope().unwrap();
    ///     let parse = h.wrap(|s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>().len());
    ///     std::thread::scope(|t| t.spawn(|| ["a,b", "c"].map(&parse)).join().unwrap())
    /// });
    /// assert_eq!(lens, [2, 1]);
    /// ```
    pub fn wrap<A, R, F>(&self, f: F) -> impl Fn(A) -> R
    where
        F: Fn(A) -> R,
    {
        let scope = *self;
        move |a| scope.enter(|| f(a))
    }

    /// The calling thread's context as a handle, also when it is outside any scope (entering
    /// such a handle then means "no job": allocations are unscoped). Use it to carry "whatever
    /// the caller was doing" to a pool thread, where [`current_scope`] would give `None`.
    pub fn current() -> ScopeHandle {
        ScopeHandle(context())
    }

    /// The scope's context, to nest a new run in it.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn parts(&self) -> Context {
        self.0
    }

    /// The innermost job name of this scope.
    pub fn job_name(&self) -> String {
        untracked(|| {
            let job = registry::path(self.0.path).job.load(Relaxed);
            registry::job(job).name.to_string()
        })
    }
}

/// Restores a thread's previous context when dropped.
pub(crate) struct Restore(pub(crate) Context);

impl Restore {
    /// The context to restore, leaving the restoring to the caller (who stacks it).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn into_previous(self) -> Context {
        let prev = self.0;
        core::mem::forget(self);
        prev
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        thread::switch_context(self.0);
        let _ = context();
    }
}

/// Leaves, on the calling thread, the scopes of runs that finished while the thread was still
/// inside them; installed by the span layer (the only source of such contexts).
static LEAVE_FINISHED: OnceLock<fn()> = OnceLock::new();

/// Installs the hook [`context`] calls when the thread's run has finished (the first call wins).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn set_leave_finished(leave: fn()) {
    let _ = LEAVE_FINISHED.set(leave);
}

/// The calling thread's context for a scope operation: when its run has finished while the
/// thread was inside it, the hook restores the context the thread had before, first. A
/// context with no run (run 0) or an active run is returned as is (one load of the run's
/// generation).
pub(crate) fn context() -> Context {
    let ctx = thread::current_context();
    if ctx.run == 0 || registry::run_active(ctx.run) {
        return ctx;
    }
    match LEAVE_FINISHED.get() {
        Some(leave) => {
            leave();
            thread::current_context()
        }
        None => ctx,
    }
}

/// The scope active on this thread, or `None` outside any scope.
///
/// A thread left inside the scope of a tracing span that has since closed (exited on another
/// thread, or its guard forgotten) is first restored to the scope it had before entering the
/// span, so this never names a closed span's scope.
pub fn current_scope() -> Option<ScopeHandle> {
    let ctx = context();
    (ctx.path != registry::PATH_UNSCOPED && ctx.path != registry::PATH_TRACKER)
        .then_some(ScopeHandle(ctx))
}

/// Like [`std::thread::spawn`], but the new thread runs in the caller's current scope, so its
/// allocations are charged to the caller's job.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match current_scope() {
        Some(scope) => std::thread::spawn(move || scope.enter(f)),
        None => std::thread::spawn(f),
    }
}

type Hook = Arc<dyn Fn(&RunReport) + Send + Sync + 'static>;

static HOOKS: RwLock<Vec<(u64, Hook)>> = RwLock::new(Vec::new());

/// The hook table, registered with the fork handlers before its first use.
fn hooks() -> &'static RwLock<Vec<(u64, Hook)>> {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| fork::register(&HOOKS));
    &HOOKS
}

static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

/// Identifies a hook registered with [`on_run_finished`], to remove it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId(u64);

/// Calls `hook` after every finished run, on the thread that finished it, after its scope has
/// closed (so what the hook allocates is charged to the enclosing scope, not to the run).
///
/// Use it to log one memory line per job, the way APM tools show them. A panicking hook is
/// caught and counted; it does not disturb the tracker or other hooks.
///
/// A hook may run jobs (`track_scope` inside it works and is counted as usual), but runs that
/// finish **while a hook is running on the same thread** do not call the hooks again: a hook
/// that runs a job would otherwise call itself without end. Those runs are still counted,
/// recorded in `recent_runs` and run events, and seen by automatic dumps.
///
/// ```
/// allocscope::on_run_finished(|run| {
///     if run.retained_at_finish.bytes > 1 << 20 {
///         eprintln!("{} #{} kept {} bytes", run.job, run.run, run.retained_at_finish.bytes);
///     }
/// });
/// ```
pub fn on_run_finished(hook: impl Fn(&RunReport) + Send + Sync + 'static) -> HookId {
    let id = NEXT_HOOK.fetch_add(1, Relaxed);
    untracked(|| hooks().write().push((id, Arc::new(hook))));
    HookId(id)
}

/// Removes a hook; returns whether it was registered.
pub fn remove_hook(id: HookId) -> bool {
    untracked(|| {
        let mut hooks = hooks().write();
        let before = hooks.len();
        hooks.retain(|(h, _)| *h != id.0);
        hooks.len() != before
    })
}

thread_local! {
    /// Set while this thread runs the hooks (const, no destructor).
    static IN_HOOK: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

fn run_hooks(report: &RunReport) {
    // A run finished inside a hook (on this thread) does not call the hooks again.
    if IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true) {
        return;
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = IN_HOOK.try_with(|h| h.set(false));
        }
    }
    let _leave = Leave;
    let hooks: Vec<Hook> = untracked(|| hooks().read().iter().map(|(_, h)| h.clone()).collect());
    for hook in &hooks {
        if catch_unwind(AssertUnwindSafe(|| hook(report))).is_err() {
            registry::HOOK_PANICS.fetch_add(1, Relaxed);
        }
    }
    untracked(|| drop(hooks));
}
