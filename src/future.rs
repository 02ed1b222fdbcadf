//! Scopes for futures: the scope follows the future to whichever thread polls it.
//!
//! Rules:
//! * Like `tracing::Instrument`, a wrapper enters its scope around every `poll` of the inner
//!   future and around its drop, so a task that migrates between worker threads of a
//!   multi-thread runtime stays charged to its job.
//! * A [`Tracked`] future owns one run: it finishes when the inner future completes, or when the
//!   wrapper is dropped (after the inner future, which is dropped inside the scope).
//! * Pin projections come from `pin-project-lite`; the inner future sits in an `Option` that is
//!   emptied in place (`Pin::set`) only by the wrapper's drop, so no unsafe code is needed.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::scope::{self, OwnedRun, ScopeHandle};

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
        Tracked::new(OwnedRun::begin(name, scope::context()), self)
    }

    /// Polls (and drops) this future inside an existing scope, e.g. one captured with
    /// [`current_scope`](crate::current_scope) before handing work to a runtime.
    fn in_scope(self, scope: ScopeHandle) -> InScope<Self> {
        InScope {
            scope,
            inner: Some(self),
        }
    }

    /// Polls (and drops) this future in the scope current where this is called
    /// ([`ScopeHandle::current`]): the one word that keeps a subtask in its job.
    ///
    /// `tokio::spawn(fut)` inside a job runs `fut` on whichever worker thread picks it up,
    /// outside the job; `tokio::spawn(fut.in_current_scope())` charges it to the job (and to
    /// the same run while that run goes on). Outside any scope the future stays unscoped.
    ///
    /// ```
    /// use allocscope::FutureExt;
    /// # async fn load() -> Vec<u8> { vec![0; 16] }
    /// # fn spawn<F: core::future::Future>(_f: F) {}
    /// allocscope::track_scope("import", || spawn(load().in_current_scope()));
    /// ```
    fn in_current_scope(self) -> InScope<Self> {
        self.in_scope(ScopeHandle::current())
    }
}

impl<F: Future> FutureExt for F {}

pin_project! {
    /// A future running as one run of a job. Created by [`FutureExt::track_scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Tracked<F> {
        scope: ScopeHandle,
        run: Option<OwnedRun>,
        // `None` only while the wrapper is being dropped.
        #[pin]
        inner: Option<F>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            {
                let _restore = this.scope.enter_guard();
                this.inner.set(None);
            }
            // Finishes the run (marked as panicked during unwinding), after the inner future.
            drop(this.run.take());
        }
    }
}

impl<F> Tracked<F> {
    /// Wraps `inner` as the future of `run` (begun by the caller, e.g. a tower layer that
    /// entered the run around the inner service's `call`).
    pub(crate) fn new(run: OwnedRun, inner: F) -> Self {
        Tracked {
            scope: run.handle(),
            run: Some(run),
            inner: Some(inner),
        }
    }

    /// The scope of this future's run.
    pub fn scope(&self) -> ScopeHandle {
        self.scope
    }
}

impl<F> core::fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tracked")
            .field("scope", &self.scope)
            .field("finished", &self.run.is_none())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let restore = this.scope.enter_guard();
        let result = inner(this.inner).poll(cx);
        drop(restore);
        if result.is_ready() {
            if let Some(run) = this.run.take() {
                let _ = run.finish(false);
            }
        }
        result
    }
}

pin_project! {
    /// A future polled inside an existing scope. Created by [`FutureExt::in_scope`] and
    /// [`FutureExt::in_current_scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InScope<F> {
        scope: ScopeHandle,
        // `None` only while the wrapper is being dropped.
        #[pin]
        inner: Option<F>,
    }

    impl<F> PinnedDrop for InScope<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _restore = this.scope.enter_guard();
            this.inner.set(None);
        }
    }
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
        let this = self.project();
        let _restore = this.scope.enter_guard();
        inner(this.inner).poll(cx)
    }
}

/// The pinned inner value of a wrapper. It is `Some` from construction until the wrapper's
/// own drop, so every poll finds it.
pub(crate) fn inner<T>(slot: Pin<&mut Option<T>>) -> Pin<&mut T> {
    slot.as_pin_mut()
        .expect("allocscope: a wrapper's inner value is only taken by its drop")
}
