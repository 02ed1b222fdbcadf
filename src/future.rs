//! Scopes for futures: the scope follows the future to whichever thread polls it.
//!
//! Like `tracing::Instrument`, the wrapper enters the scope around every `poll` and around the
//! drop of the inner future, so a task that migrates between worker threads of a multi-thread
//! runtime stays charged to its job.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::scope::{ActiveRun, ScopeHandle};
use crate::thread;

/// Extension methods attaching allocscope scopes to futures.
///
/// ```
/// use allocscope::FutureExt;
/// # async fn import_users() {}
/// # fn run<F: core::future::Future>(_f: F) {}
/// run(import_users().track_scope("import_users"));
/// ```
pub trait FutureExt: Future + Sized {
    /// Runs this future as one run of job `name`, nested in the scope current where this is
    /// called. The run starts now and finishes when the future completes or is dropped.
    ///
    /// The run holds one of allocscope's 65,535 run slots until then: a future that is
    /// forgotten (`std::mem::forget`) or never finished keeps it for good. When every slot is
    /// taken, later runs are still counted per job but are not measured (their
    /// [`RunReport::unmeasured`](crate::RunReport::unmeasured) is set).
    fn track_scope(self, name: &str) -> Tracked<Self> {
        let (path, run) = thread::current_context();
        let run = ActiveRun::begin(name, path, run);
        Tracked {
            scope: ScopeHandle::from_parts(run.path, run.token),
            run: Some(run),
            inner: ManuallyDrop::new(self),
        }
    }

    /// Polls (and drops) this future inside an existing scope, e.g. one captured with
    /// [`current_scope`](crate::current_scope) before handing work to a runtime.
    fn in_scope(self, scope: ScopeHandle) -> InScope<Self> {
        InScope {
            scope,
            inner: ManuallyDrop::new(self),
        }
    }
}

impl<F: Future> FutureExt for F {}

/// A future running as one run of a job. Created by [`FutureExt::track_scope`].
#[must_use = "futures do nothing unless polled"]
pub struct Tracked<F> {
    scope: ScopeHandle,
    run: Option<ActiveRun>,
    inner: ManuallyDrop<F>,
}

impl<F> core::fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tracked")
            .field("scope", &self.scope)
            .field("finished", &self.run.is_none())
            .finish_non_exhaustive()
    }
}

impl<F> Tracked<F> {
    /// The scope of this future's run.
    pub fn scope(&self) -> ScopeHandle {
        self.scope
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self` (it is only
        // dropped in place in `Drop`), and the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let restore = this.scope.enter_guard();
        // SAFETY: see above; `this` stays pinned, so `inner` does too.
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        let result = inner.poll(cx);
        drop(restore);
        if result.is_ready() {
            if let Some(run) = this.run.take() {
                let _ = run.finish(false);
            }
        }
        result
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        {
            let _restore = self.scope.enter_guard();
            // SAFETY: `inner` is dropped exactly once, here, in place (allowed for pinned data).
            unsafe { ManuallyDrop::drop(&mut self.inner) };
        }
        if let Some(run) = self.run.take() {
            let _ = run.finish(std::thread::panicking());
        }
    }
}

/// A future polled inside an existing scope. Created by [`FutureExt::in_scope`].
#[must_use = "futures do nothing unless polled"]
pub struct InScope<F> {
    scope: ScopeHandle,
    inner: ManuallyDrop<F>,
}

impl<F> core::fmt::Debug for InScope<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InScope")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved (dropped in place in `Drop`).
        let this = unsafe { self.get_unchecked_mut() };
        let _restore = this.scope.enter_guard();
        // SAFETY: see above.
        unsafe { Pin::new_unchecked(&mut *this.inner) }.poll(cx)
    }
}

impl<F> Drop for InScope<F> {
    fn drop(&mut self) {
        let _restore = self.scope.enter_guard();
        // SAFETY: `inner` is dropped exactly once, here, in place.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
    }
}
