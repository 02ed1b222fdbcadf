//! Requests as scopes (feature `tower`): [`ScopeLayer`], a `tower` layer for HTTP services
//! (axum, tonic, hyper services).
//!
//! Rules:
//! * Each request is one run of a job named by a function of the request ([`ScopeLayer::new`])
//!   or by its route ([`ScopeLayer::by_route`]: `"GET /users/{id}"` from axum's
//!   [`MatchedPath`]; never the raw URI, so the number of jobs stays bounded — requests that
//!   matched no route all go to the job [`UNMATCHED_ROUTE`]).
//! * The run begins when the request reaches the layer. The inner service's `call`, every poll
//!   of its future and the drop of that future run in the run's scope; so do every poll of the
//!   response body and its drop, so a streaming body is charged to the request too. The run
//!   finishes when the body has sent its last frame (or errs, or is dropped), or when the
//!   service returns an error.
//! * With axum, add the layer with `Router::layer` (or `route_layer`): it then runs after
//!   routing, when `MatchedPath` is known. Outside the router every request is unmatched.
//! * Other servers (tonic, plain hyper services) name jobs with [`ScopeLayer::new`]; gRPC paths
//!   are method names, a bounded set: `ScopeLayer::new(|r: &Request<B>| r.uri().path().to_owned())`.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use ::axum::extract::MatchedPath;
use ::http::{Request, Response};
use ::http_body::{Body, Frame, SizeHint};
use ::tower_layer::Layer;
use ::tower_service::Service;

use crate::future::{FutureExt, InScope};
use crate::scope::OwnedRun;
use crate::scope::ScopeHandle;
use crate::thread;

/// The job of requests that matched no route (with [`ScopeLayer::by_route`]).
pub const UNMATCHED_ROUTE: &str = "(unmatched route)";

/// How a [`ScopeLayer`] names the job of a request. Implemented for closures
/// `Fn(&Request<B>) -> impl AsRef<str>` and for [`ByRoute`].
pub trait JobName<B> {
    /// The name (a type that can be read as `&str`).
    type Name: AsRef<str>;
    /// The job name of `request`. Keep the set of names small: a route, a method, a tenant
    /// class — not a URI or an id.
    fn job_name(&self, request: &Request<B>) -> Self::Name;
}

impl<B, F, N> JobName<B> for F
where
    F: Fn(&Request<B>) -> N,
    N: AsRef<str>,
{
    type Name = N;
    fn job_name(&self, request: &Request<B>) -> N {
        self(request)
    }
}

/// Names a request's job `"METHOD /matched/{route}"` from axum's [`MatchedPath`], or
/// [`UNMATCHED_ROUTE`]. Used by [`ScopeLayer::by_route`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ByRoute;

impl<B> JobName<B> for ByRoute {
    type Name = String;
    fn job_name(&self, request: &Request<B>) -> String {
        match request.extensions().get::<MatchedPath>() {
            Some(path) => format!("{} {}", request.method(), path.as_str()),
            None => UNMATCHED_ROUTE.to_owned(),
        }
    }
}

/// A `tower` layer that runs each request as one run of a job.
///
/// ```
/// use axum::{routing::get, Router};
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .layer(allocscope::tower::ScopeLayer::by_route());
/// # drop(app);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ScopeLayer<N> {
    namer: N,
}

impl<N> ScopeLayer<N> {
    /// Names each request's job with `namer`, e.g.
    /// `ScopeLayer::new(|req: &Request<Body>| req.method().to_string())`.
    pub fn new(namer: N) -> Self {
        ScopeLayer { namer }
    }
}

impl ScopeLayer<ByRoute> {
    /// One job per axum route, `"GET /users/{id}"`; unmatched requests share the job
    /// [`UNMATCHED_ROUTE`]. Add it with `Router::layer` so it runs after routing.
    pub fn by_route() -> Self {
        ScopeLayer { namer: ByRoute }
    }
}

impl<S, N: Clone> Layer<S> for ScopeLayer<N> {
    type Service = ScopeService<S, N>;
    fn layer(&self, inner: S) -> Self::Service {
        ScopeService {
            inner,
            namer: self.namer.clone(),
        }
    }
}

/// The service made by [`ScopeLayer`].
#[derive(Clone, Copy, Debug)]
pub struct ScopeService<S, N> {
    inner: S,
    namer: N,
}

impl<S, N, ReqB, ResB> Service<Request<ReqB>> for ScopeService<S, N>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    N: JobName<ReqB>,
    ResB: Body,
{
    type Response = Response<ScopeBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let run = {
            let name = self.namer.job_name(&request);
            thread::untracked(|| OwnedRun::begin(name.as_ref(), thread::current_context()))
        };
        let scope = run.handle();
        let inner = scope.enter(|| self.inner.call(request));
        ResponseFuture {
            inner: inner.in_scope(scope),
            run: Some(run),
        }
    }
}

/// The response future of [`ScopeService`]: polled in the request's scope.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F> {
    // Dropped first (in the scope), then the run (finishing it): field order matters.
    inner: InScope<F>,
    run: Option<OwnedRun>,
}

impl<F> core::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.run.as_ref().map(OwnedRun::handle))
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ScopeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out (this type has no
        // `Drop` impl and never hands out `&mut inner` unpinned); `run` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this` stays pinned, so `inner` does too.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        match inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => {
                let run = this.run.take();
                Poll::Ready(Ok(response.map(|body| ScopeBody::new(body, run))))
            }
            Poll::Ready(Err(e)) => {
                if let Some(run) = this.run.take() {
                    let _ = run.finish(false);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// A response body polled (and dropped) in its request's scope; the request's run finishes
/// with its last frame.
pub struct ScopeBody<B> {
    inner: ManuallyDrop<B>,
    scope: Option<ScopeHandle>,
    run: Option<OwnedRun>,
}

impl<B> core::fmt::Debug for ScopeBody<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScopeBody")
            .field("scope", &self.scope)
            .field("finished", &self.run.is_none())
            .finish_non_exhaustive()
    }
}

impl<B> ScopeBody<B> {
    fn new(inner: B, run: Option<OwnedRun>) -> Self {
        ScopeBody {
            inner: ManuallyDrop::new(inner),
            scope: run.as_ref().map(OwnedRun::handle),
            run,
        }
    }
}

impl<B: Body> Body for ScopeBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        // SAFETY: `inner` is structurally pinned: never moved out, dropped in place in `Drop`.
        let this = unsafe { self.get_unchecked_mut() };
        let restore = this.scope.map(|s| s.enter_guard());
        // SAFETY: see above.
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        let result = inner.poll_frame(cx);
        let end = match &result {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        drop(restore);
        if end {
            if let Some(run) = this.run.take() {
                let _ = run.finish(false);
            }
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ScopeBody<B> {
    fn drop(&mut self) {
        {
            let _restore = self.scope.map(|s| s.enter_guard());
            // SAFETY: `inner` is dropped exactly once, here, in place (allowed for pinned data).
            unsafe { ManuallyDrop::drop(&mut self.inner) };
        }
        drop(self.run.take());
    }
}
