//! Scope-carrying rayon helpers (feature `rayon`).
//!
//! Rules:
//! * A rayon task runs on whichever worker takes it, and without help it is charged to that
//!   worker's current scope. The pitfall is worse than "unscoped": a worker blocked in `join`
//!   (waiting for the half another worker stole) runs *other* tasks meanwhile — possibly
//!   another job's — inside its own scope, so job B's allocations are charged to job A.
//! * The fix is to enter the caller's scope inside each task: [`ScopeHandle::wrap`] for the
//!   one-argument closures of parallel iterators (`par_iter().map(h.wrap(f))`), and [`join`]
//!   and [`spawn`] here, which carry the caller's context (also "no scope") to both halves.
//! * Capture the handle where the job's scope is current, outside `install`: inside
//!   `pool.install(..)` the closure already runs on a worker, in that worker's scope.
//!
//! [`ScopeHandle::wrap`]: crate::ScopeHandle::wrap

use crate::scope::ScopeHandle;

/// [`rayon::join`](::rayon::join), with both closures run in the caller's scope, whichever
/// worker runs them.
///
/// ```
/// let (a, b) = allocscope::track_scope("split", || {
///     allocscope::rayon::join(|| vec![0u8; 10].len(), || vec![0u8; 20].len())
/// });
/// assert_eq!((a, b), (10, 20));
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let scope = ScopeHandle::current();
    ::rayon::join(|| scope.enter(a), || scope.enter(b))
}

/// [`rayon::spawn`](::rayon::spawn), with the task run in the caller's scope.
pub fn spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let scope = ScopeHandle::current();
    ::rayon::spawn(move || scope.enter(f));
}
