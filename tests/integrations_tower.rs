//! `allocscope::tower::ScopeLayer`: a real axum server on loopback, driven by a real hyper
//! client; one job per route, exact runs and retained figures.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use allocscope::{report, TrackingAllocator, Usage};
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Bytes the leaking route leaks per request (one block).
const LEAK: usize = 100;
/// Frames of the streaming route, and their size.
const FRAMES: usize = 3;
const FRAME_BYTES: usize = 1000;

async fn leak() -> &'static str {
    Box::leak(vec![7u8; LEAK].into_boxed_slice());
    "leaked"
}

async fn user(Path(id): Path<u32>) -> String {
    format!("user {id}")
}

/// A body that allocates each frame when polled: streamed after the handler returned.
struct Frames(usize);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; FRAME_BYTES])))))
    }
}

async fn stream() -> Body {
    Body::new(Frames(FRAMES))
}

fn app() -> Router {
    Router::new()
        .route("/leak", get(leak))
        .route("/users/{id}", get(user))
        .route("/stream", get(stream))
        .layer(allocscope::tower::ScopeLayer::by_route())
}

fn job(name: &str) -> allocscope::JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name:?}"))
}

#[test]
fn axum_routes_are_jobs_with_exact_runs_and_retained() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sent, unmatched) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app())
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<String>();
        let mut sent = [0u64; 3];
        // 8 concurrent connections, 1,000 requests in all.
        let paths: Vec<String> = (0..1000)
            .map(|i| match i % 3 {
                0 => "/leak".to_string(),
                1 => format!("/users/{i}"),
                _ => "/stream".to_string(),
            })
            .collect();
        for i in 0..1000 {
            sent[i % 3] += 1;
        }
        let mut tasks = Vec::new();
        for part in paths.chunks(125) {
            let part = part.to_vec();
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for path in part {
                    let uri = format!("http://{addr}{path}");
                    let resp = client.get(uri.parse().unwrap()).await.unwrap();
                    assert_eq!(resp.status(), 200, "{path}");
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    if path == "/stream" {
                        assert_eq!(body.len(), FRAMES * FRAME_BYTES);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Paths no route matches: each a different URI, all one job.
        let unmatched = 30;
        for i in 0..unmatched {
            let uri = format!("http://{addr}/nope/{i}?q={i}");
            let resp = client.get(uri.parse().unwrap()).await.unwrap();
            assert_eq!(resp.status(), 404);
            resp.into_body().collect().await.unwrap();
        }
        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap();
        (sent, unmatched)
    });
    drop(rt);

    let leak = job("GET /leak");
    let users = job("GET /users/{id}");
    let stream = job("GET /stream");
    assert_eq!(
        [leak.runs, users.runs, stream.runs],
        sent,
        "one run per request"
    );
    assert_eq!(leak.active_runs + users.active_runs + stream.active_runs, 0);
    assert_eq!(leak.retained, Usage::new(sent[0], sent[0] * LEAK as u64));
    assert_eq!(users.retained, Usage::new(0, 0));
    assert_eq!(stream.retained, Usage::new(0, 0));
    // The body's frames are allocated while hyper polls the body, after the handler returned:
    // still the request's job.
    assert!(
        stream.allocated.bytes >= sent[2] * (FRAMES * FRAME_BYTES) as u64,
        "{:?}",
        stream.allocated
    );
    // A run finishes with the body's last frame, while hyper still holds the response head
    // and that frame (freed later, so they are not in the job's retained figures above).
    for run in &leak.recent_runs {
        assert!(run.retained_at_finish.bytes >= LEAK as u64, "{run:?}");
    }
    let other = job(allocscope::tower::UNMATCHED_ROUTE);
    assert_eq!(other.runs, unmatched);
    assert_eq!(other.retained, Usage::new(0, 0));
    let r = report();
    assert!(
        !r.jobs().iter().any(|j| j.name.contains("/nope")),
        "raw URIs must not become jobs"
    );
}

#[test]
fn a_naming_function_names_jobs_and_errors_finish_the_run() {
    use tower_service::Service;
    let namer = |req: &http::Request<String>| format!("tenant {}", req.uri().path().len() % 2);
    let inner = tower::service_fn(|req: http::Request<String>| async move {
        if req.uri().path() == "/fail" {
            return Err("failed");
        }
        let kept = vec![1u8; 10];
        Ok(http::Response::new(http_body_util::Full::new(Bytes::from(
            kept,
        ))))
    });
    let mut svc = tower_layer::Layer::layer(&allocscope::tower::ScopeLayer::new(namer), inner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = svc
            .call(http::Request::get("/ab").body(String::new()).unwrap())
            .await
            .unwrap();
        // The run is open until the body has sent its last frame.
        assert_eq!(job("tenant 1").active_runs, 1);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 10);
        assert_eq!((job("tenant 1").runs, job("tenant 1").active_runs), (1, 0));
        drop(body);
        assert!(svc
            .call(http::Request::get("/fail").body(String::new()).unwrap())
            .await
            .is_err());
        assert_eq!((job("tenant 1").runs, job("tenant 1").active_runs), (2, 0));
    });
    assert_eq!(job("tenant 1").retained, Usage::new(0, 0));
}
