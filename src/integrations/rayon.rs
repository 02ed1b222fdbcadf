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
//! * `pool.install(..)` moves its closure to one of the pool's workers, out of the caller's
//!   scope: use [`install`] here, which runs the closure in the caller's scope on that worker,
//!   so [`join`], [`spawn`] and `ScopeHandle::current()` inside it carry the caller's job on.
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

/// [`ThreadPool::install`](::rayon::ThreadPool::install), with the closure run in the
/// caller's scope on the pool's worker (plain `pool.install` runs it in the worker's own
/// scope, so everything inside, [`join`] included, would be charged elsewhere).
///
/// ```
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
/// let n = allocscope::track_scope("tree", || {
///     allocscope::rayon::install(&pool, || {
///         let (a, b) = allocscope::rayon::join(|| vec![1u8; 8], || vec![2u8; 8]);
///         a.len() + b.len()
///     })
/// });
/// assert_eq!(n, 16);
/// ```
pub fn install<OP, R>(pool: &::rayon::ThreadPool, op: OP) -> R
where
    OP: FnOnce() -> R + Send,
    R: Send,
{
    let scope = ScopeHandle::current();
    pool.install(|| scope.enter(op))
}

/// [`rayon::spawn`](::rayon::spawn), with the task run in the caller's scope.
pub fn spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let scope = ScopeHandle::current();
    ::rayon::spawn(move || scope.enter(f));
}
