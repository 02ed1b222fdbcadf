//! Requests as scopes (feature `tower`): [`JobLayer`] for any `tower` service (job frameworks
//! such as apalis, gRPC and message consumers) and [`ScopeLayer`] for HTTP services (axum,
//! tonic, hyper services), whose response bodies it follows too.
//!
//! Rules:
//! * Each call is one run of a job: named once for every call ([`JobLayer::named`]), by a
//!   function of the request ([`JobLayer::new`], [`ScopeLayer::new`]) or by the route
//!   ([`ScopeLayer::by_route`]: `"GET /users/{id}"` from axum's [`MatchedPath`]; never the raw
//!   URI, so the number of jobs stays bounded — requests that matched no route all go to the
//!   job [`UNMATCHED_ROUTE`]).
//! * The name is computed with tracking suspended (tracker overhead): it is charged neither to
//!   the enclosing scope nor to the run.
//! * The run begins when the request reaches the layer, nested in the scope current there. The
//!   inner service's `call`, every poll of its future and the drop of that future run in the
//!   run's scope. With [`JobLayer`] the run finishes when that future completes or is dropped;
//!   with [`ScopeLayer`] every poll of the response body and its drop run in the scope too, and
//!   the run finishes when the body has sent its last frame (or errs, or is dropped), or when
//!   the service returns an error.
//! * Work the inner service hands to another task (`tokio::spawn`, a layer that spawns such as
//!   apalis's `parallelize`) leaves the scope unless it is wrapped with
//!   [`FutureExt::in_current_scope`](crate::FutureExt::in_current_scope): put the layer *inside*
//!   (after) such layers, so that the spawned future is the layer's.
//! * With axum, add [`ScopeLayer`] with `Router::layer` (or `route_layer`): it then runs after
//!   routing, when `MatchedPath` is known. Outside the router every request is unmatched.
//! * Other servers (tonic, plain hyper services) name jobs with [`ScopeLayer::new`]; gRPC paths
//!   are method names, a bounded set: `ScopeLayer::new(|r: &Request<B>| r.uri().path().to_owned())`.
//! * Pin projections come from `pin-project-lite`; no unsafe code.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;

use ::axum::extract::MatchedPath;
use ::http::{Request, Response};
use ::http_body::{Body, Frame, SizeHint};
use ::tower_layer::Layer;
use ::tower_service::Service;
use pin_project_lite::pin_project;

use crate::future::{inner, FutureExt, InScope, Tracked};
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
        let run = begin_run(|| self.namer.job_name(&request));
        let scope = run.handle();
        let inner = scope.enter(|| self.inner.call(request));
        ResponseFuture {
            inner: inner.in_scope(scope),
            run: Some(run),
        }
    }
}

pin_project! {
    /// The response future of [`ScopeService`]: polled in the request's scope.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        // Dropped first (in the scope), then the run (finishing it): field order matters.
        #[pin]
        inner: InScope<F>,
        run: Option<OwnedRun>,
    }
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
        let this = self.project();
        match this.inner.poll(cx) {
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

pin_project! {
    /// A response body polled (and dropped) in its request's scope; the request's run finishes
    /// with its last frame.
    pub struct ScopeBody<B> {
        // `None` only while the body is being dropped.
        #[pin]
        inner: Option<B>,
        scope: Option<ScopeHandle>,
        run: Option<OwnedRun>,
    }

    impl<B> PinnedDrop for ScopeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            {
                let _restore = this.scope.map(|s| s.enter_guard());
                this.inner.set(None);
            }
            drop(this.run.take());
        }
    }
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
            inner: Some(inner),
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
        let this = self.project();
        let restore = this.scope.map(|s| s.enter_guard());
        let mut body = inner(this.inner);
        let result = body.as_mut().poll_frame(cx);
        let end = match &result {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
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
        self.inner.as_ref().map_or(true, B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

/// Begins a run named by `name`, nested in the scope current here. The name is computed with
/// tracking suspended: tracker overhead, charged neither to the enclosing scope nor to the run.
fn begin_run<N: AsRef<str>>(name: impl FnOnce() -> N) -> OwnedRun {
    thread::untracked(|| {
        let name = name();
        OwnedRun::begin(name.as_ref(), crate::scope::context())
    })
}

/// How a [`JobLayer`] names the job of a request of type `Req`. Implemented for closures
/// `Fn(&Req) -> impl AsRef<str>` and for [`Named`].
pub trait NameJob<Req> {
    /// The name (a type that can be read as `&str`).
    type Name: AsRef<str>;
    /// The job name of `request`. Keep the set of names small: a task type, a queue, a method
    /// — not an id.
    fn name_job(&self, request: &Req) -> Self::Name;
}

impl<Req, F, N> NameJob<Req> for F
where
    F: Fn(&Req) -> N,
    N: AsRef<str>,
{
    type Name = N;
    fn name_job(&self, request: &Req) -> N {
        self(request)
    }
}

/// One job name for every request. Used by [`JobLayer::named`].
#[derive(Clone, Debug)]
pub struct Named(Arc<str>);

impl<Req> NameJob<Req> for Named {
    type Name = Arc<str>;
    fn name_job(&self, _request: &Req) -> Arc<str> {
        self.0.clone()
    }
}

/// A `tower` layer for any service (`Service<Req>` for every `Req`, not only HTTP): each call
/// is one run of a job, from `call` until its future completes or is dropped.
///
/// In an apalis worker, add it after `.parallelize(tokio::spawn)`, so that the future that
/// runs on the spawned task is this layer's (before it, the handler runs on a spawned task
/// outside the run and the report's unscoped note fires):
///
/// ```
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let service = ServiceBuilder::new()
///     .layer(allocscope::tower::JobLayer::named("resize_image"))
///     .service(service_fn(|pixels: usize| async move {
///         Ok::<_, std::convert::Infallible>(vec![0u8; pixels].len())
///     }));
/// assert_eq!(service.oneshot(64).await.unwrap(), 64);
/// # });
/// ```
///
/// See the [module documentation](self) for the rules.
#[derive(Clone, Debug)]
pub struct JobLayer<N> {
    namer: N,
}

impl JobLayer<Named> {
    /// Every call is one run of the job `name`.
    pub fn named(name: impl Into<String>) -> Self {
        let name: String = name.into();
        JobLayer {
            namer: Named(thread::untracked(|| Arc::from(name))),
        }
    }
}

impl<N> JobLayer<N> {
    /// Names each call's job with `namer`, a function of the request:
    /// `JobLayer::new(|task: &Task<Email, Ctx>| "send_email")`, or a name from the request's
    /// type or queue. The set of names it returns should be small (at most `MAX_JOBS` jobs are
    /// kept apart; beyond that, names go to `(other jobs)`).
    pub fn new<Req>(namer: N) -> Self
    where
        N: NameJob<Req>,
    {
        JobLayer { namer }
    }
}

impl<S, N: Clone> Layer<S> for JobLayer<N> {
    type Service = JobService<S, N>;
    fn layer(&self, inner: S) -> Self::Service {
        JobService {
            inner,
            namer: self.namer.clone(),
        }
    }
}

/// The service made by [`JobLayer`].
#[derive(Clone, Debug)]
pub struct JobService<S, N> {
    inner: S,
    namer: N,
}

impl<S, N, Req> Service<Req> for JobService<S, N>
where
    S: Service<Req>,
    N: NameJob<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let run = begin_run(|| self.namer.name_job(&request));
        let inner = run.handle().enter(|| self.inner.call(request));
        Tracked::new(run, inner)
    }
}
