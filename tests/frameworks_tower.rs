//! `allocscope::tower::JobLayer` on services that are not HTTP (any `Service<Req>`), in a plain
//! `tower::ServiceBuilder` on a multi-thread tokio runtime: exact runs and retained figures,
//! the run finished on completion and on drop, names per request, subtasks kept in the job
//! with `in_current_scope`, and the layers' naming charged to no scope.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Mutex;

use allocscope::tower::{JobLayer, ScopeLayer};
use allocscope::{report, FutureExt, TrackingAllocator, Usage};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// What the handlers keep, so their retained figures are known exactly; one store per test
/// (tests run in parallel), with room reserved outside any scope (a growing Vec would charge
/// its new buffer to the job that grew it).
type Kept = Mutex<Vec<Box<[u8]>>>;

fn reserve(kept: &Kept) {
    kept.lock().unwrap().reserve(64);
}

/// A runtime to use in one statement (`runtime().block_on(..)`): figures are read after it is
/// dropped, when its workers have let go of every spawned task (a worker may still hold a
/// finished task's cell, allocated in the job, just after its output was read).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn job(name: &str) -> allocscope::JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name:?}"))
}

/// A message of a queue consumer: not an HTTP request.
struct Message {
    kind: &'static str,
    payload: usize,
}

#[test]
fn named_job_layer_on_any_service_is_exact_across_polls() {
    const CALLS: u64 = 25;
    const KEEP: usize = 700;
    static KEPT: Kept = Mutex::new(Vec::new());
    reserve(&KEPT);
    let kept = runtime().block_on(async {
        let mut service = ServiceBuilder::new()
            .layer(JobLayer::named("tower_keep"))
            .service(service_fn(|n: u64| async move {
                // Polled several times, on whichever worker picks the task up.
                tokio::task::yield_now().await;
                black_box(vec![0u8; 4096]);
                tokio::task::yield_now().await;
                KEPT.lock()
                    .unwrap()
                    .push(vec![n as u8; KEEP].into_boxed_slice());
                Ok::<_, Infallible>(n)
            }));
        let mut sum = 0;
        for n in 0..CALLS {
            let fut = service.ready().await.unwrap().call(n);
            sum += tokio::spawn(fut).await.unwrap().unwrap();
        }
        sum
    });
    assert_eq!(kept, (0..CALLS).sum::<u64>());
    let j = job("tower_keep");
    assert_eq!(j.runs, CALLS);
    assert_eq!(j.active_runs, 0);
    assert_eq!(
        j.retained,
        Usage {
            objects: CALLS,
            bytes: CALLS * KEEP as u64
        }
    );
    assert!(j.allocated.bytes >= CALLS * (KEEP as u64 + 4096));
}

#[test]
fn a_dropped_future_finishes_its_run_and_drops_in_scope() {
    static KEPT: Kept = Mutex::new(Vec::new());
    reserve(&KEPT);
    struct Guard(#[allow(dead_code)] Box<[u8; 300]>);
    impl Drop for Guard {
        fn drop(&mut self) {
            // Allocated by the drop: charged to the run's job.
            KEPT.lock().unwrap().push(vec![1u8; 33].into_boxed_slice());
        }
    }
    runtime().block_on(async {
        let mut service = ServiceBuilder::new()
            .layer(JobLayer::named("tower_dropped"))
            .service(service_fn(|_: ()| async move {
                let _guard = Guard(Box::new([0; 300]));
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(())
            }));
        let mut fut = Box::pin(service.ready().await.unwrap().call(()));
        // Polled once (allocates the guard), then dropped unfinished.
        assert!(futures_poll_once(fut.as_mut()).await.is_pending());
        assert_eq!(job("tower_dropped").active_runs, 1);
        drop(fut);
    });
    let j = job("tower_dropped");
    assert_eq!(j.runs, 1);
    assert_eq!(j.active_runs, 0);
    // The guard's box was freed; the 33 bytes its drop kept are the job's.
    assert_eq!(
        j.retained,
        Usage {
            objects: 1,
            bytes: 33
        }
    );
}

/// Polls `fut` once.
async fn futures_poll_once<F: std::future::Future>(
    fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(move |cx| std::task::Poll::Ready(fut.take().unwrap().poll(cx))).await
}

#[test]
fn a_naming_function_gives_a_job_per_kind_and_subtasks_stay_in_it() {
    static KEPT: Kept = Mutex::new(Vec::new());
    reserve(&KEPT);
    runtime().block_on(async {
        let mut service = ServiceBuilder::new()
            .layer(JobLayer::new(|m: &Message| m.kind))
            .service(service_fn(|m: Message| async move {
                // A subtask: kept in the job by in_current_scope.
                let payload = m.payload;
                tokio::spawn(
                    async move {
                        KEPT.lock()
                            .unwrap()
                            .push(vec![3u8; payload].into_boxed_slice());
                    }
                    .in_current_scope(),
                )
                .await
                .unwrap();
                Ok::<_, Infallible>(())
            }));
        for i in 0..10 {
            let m = Message {
                kind: if i % 2 == 0 {
                    "tower_even"
                } else {
                    "tower_odd"
                },
                payload: 100 + i % 2,
            };
            service.ready().await.unwrap().call(m).await.unwrap();
        }
    });
    for (name, bytes) in [("tower_even", 100), ("tower_odd", 101)] {
        let j = job(name);
        assert_eq!(j.runs, 5, "{name}");
        assert_eq!(
            j.retained,
            Usage {
                objects: 5,
                bytes: 5 * bytes
            },
            "{name}: {}",
            report().to_text_with(&allocscope::TextOptions {
                job: Some(name.to_string()),
                top_callsites: 5,
                ..Default::default()
            })
        );
    }
}

#[test]
fn naming_a_request_is_charged_to_no_scope() {
    // Each name is a fresh String, built with tracking suspended: not charged to the scope the
    // request came from.
    let rt = runtime();
    rt.block_on(
        async {
            let mut jobs = ServiceBuilder::new()
                .layer(JobLayer::new(|n: &u32| format!("tower_named_{}", n % 2)))
                .service(service_fn(|_: u32| async { Ok::<_, Infallible>(()) }));
            let mut http = ServiceBuilder::new()
                .layer(ScopeLayer::new(|r: &http::Request<()>| {
                    format!("tower_http_{}", r.uri().path().len() % 2)
                }))
                .service(service_fn(|_: http::Request<()>| async {
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<
                        axum::body::Bytes,
                    >::new()))
                }));
            for n in 0..8u32 {
                jobs.ready().await.unwrap().call(n).await.unwrap();
                let response = http
                    .ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(()))
                    .await
                    .unwrap();
                drop(response);
            }
        }
        .track_scope("tower_caller"),
    );
    let caller = job("tower_caller");
    assert_eq!(caller.runs, 1);
    // The caller itself allocates nothing: the layers' names and run bookkeeping are tracker
    // overhead, and the services allocate nothing.
    assert_eq!(caller.allocated, Usage::default(), "{caller:?}");
    assert_eq!(job("tower_named_0").runs, 4);
    assert_eq!(job("tower_named_1").runs, 4);
}
