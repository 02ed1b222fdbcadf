//! Costs of the integrations, as ratios measured alternately in one run:
//!
//! * tracing: enter+exit of an unselected span with `ScopeLayer` vs the same subscriber
//!   without it; enter+exit of a selected span; create+close of a selected span (one run);
//! * tower: one request through an axum `Router` with `ScopeLayer::by_route` vs without, in
//!   process (`oneshot`, no network) and over loopback with a hyper client;
//! * `ScopeHandle::wrap`: one call of a trivial closure, wrapped vs not; a 10,000-item
//!   `par_iter` allocating one block per item, wrapped vs not.
//!
//! Each round measures every case once, in a rotating order; the table shows the median over
//! rounds. Run with `cargo run --release --example bench_integrations --all-features
//! [ROUNDS]`; `scripts/bench_integrations.sh` also runs it as a user's crate would build it
//! (outside this repository, without its frame-pointer flag).

use std::hint::black_box;
use std::time::Instant;

use allocscope::{current_scope, track_scope, TrackingAllocator};
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use rayon::prelude::*;
use tower::ServiceExt;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// One measured case: its name, the operations per sample, and a function timing them.
struct Case {
    name: &'static str,
    ops: u64,
    run: Box<dyn FnMut(u64)>,
    samples: Vec<f64>,
}

fn case(name: &'static str, ops: u64, run: impl FnMut(u64) + 'static) -> Case {
    Case {
        name,
        ops,
        run: Box::new(run),
        samples: Vec::new(),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn user(Path(id): Path<u32>) -> String {
    format!("user {id}")
}

fn router(layer: bool) -> Router {
    let r = Router::new().route("/users/{id}", get(user));
    if layer {
        r.layer(allocscope::tower::ScopeLayer::by_route())
    } else {
        r
    }
}

fn tracing_cases() -> Vec<Case> {
    let plain = Dispatch::new(tracing_subscriber::registry());
    // Any layer (fmt, OpenTelemetry...) makes the registry a `Layered` one, with its own
    // per-enter and per-close bookkeeping: the fair baseline for "what ScopeLayer adds".
    let noop = Dispatch::new(
        tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new()),
    );
    let layered = Dispatch::new(
        tracing_subscriber::registry()
            .with(allocscope::tracing::ScopeLayer::new().spans_named(["selected"])),
    );
    let enter_exit = move |d: Dispatch, name: &'static str| {
        move |n: u64| {
            tracing::dispatcher::with_default(&d, || {
                let span = if name == "selected" {
                    tracing::info_span!("selected")
                } else {
                    tracing::info_span!("unselected")
                };
                for _ in 0..n {
                    span.in_scope(|| black_box(()));
                }
            })
        }
    };
    let create_close = move |d: Dispatch| {
        move |n: u64| {
            tracing::dispatcher::with_default(&d, || {
                for _ in 0..n {
                    black_box(tracing::info_span!("selected"));
                }
            })
        }
    };
    vec![
        case(
            "tracing: unselected enter+exit, registry only",
            200_000,
            enter_exit(plain, "unselected"),
        ),
        case(
            "tracing: unselected enter+exit, registry + no-op layer",
            200_000,
            enter_exit(noop.clone(), "unselected"),
        ),
        case(
            "tracing: unselected enter+exit, registry + ScopeLayer",
            200_000,
            enter_exit(layered.clone(), "unselected"),
        ),
        case(
            "tracing: selected enter+exit, registry + ScopeLayer",
            200_000,
            enter_exit(layered.clone(), "selected"),
        ),
        case(
            "tracing: span create+close, registry + no-op layer",
            50_000,
            create_close(noop),
        ),
        case(
            "tracing: selected span create+close (one run), + ScopeLayer",
            50_000,
            create_close(layered),
        ),
    ]
}

fn tower_cases(rt: &'static tokio::runtime::Runtime) -> Vec<Case> {
    let oneshot = move |layer: bool| {
        let app = router(layer);
        move |n: u64| {
            rt.block_on(async {
                for i in 0..n {
                    let req = http::Request::get(format!("/users/{i}"))
                        .body(Body::empty())
                        .unwrap();
                    let resp = app.clone().oneshot(req).await.unwrap();
                    black_box(resp.into_body().collect().await.unwrap());
                }
            })
        }
    };
    let loopback = move |layer: bool| {
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router(layer)).await.unwrap() });
            addr
        });
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<String>();
        move |n: u64| {
            rt.block_on(async {
                for i in 0..n {
                    let uri = format!("http://{addr}/users/{i}").parse().unwrap();
                    let resp = client.get(uri).await.unwrap();
                    black_box(resp.into_body().collect().await.unwrap());
                }
            })
        }
    };
    vec![
        case("tower: request in process, no layer", 5_000, oneshot(false)),
        case(
            "tower: request in process, ScopeLayer::by_route",
            5_000,
            oneshot(true),
        ),
        case(
            "tower: request over loopback, no layer",
            500,
            loopback(false),
        ),
        case(
            "tower: request over loopback, ScopeLayer::by_route",
            500,
            loopback(true),
        ),
    ]
}

fn wrap_cases() -> Vec<Case> {
    let pool: &'static rayon::ThreadPool =
        Box::leak(Box::new(rayon::ThreadPoolBuilder::new().build().unwrap()));
    let items: &'static [u64] = Box::leak((0..10_000u64).collect::<Vec<_>>().into_boxed_slice());
    let call = |x: u64| black_box(x).wrapping_mul(3);
    let alloc = |x: &u64| black_box(vec![*x; 2]).len();
    vec![
        case(
            "track_scope: one empty run (reference)",
            100_000,
            move |n| {
                for _ in 0..n {
                    track_scope("bench_run", || black_box(()));
                }
            },
        ),
        case("wrap: trivial call, plain", 1_000_000, move |n| {
            track_scope("bench_wrap", || {
                for i in 0..n {
                    black_box(call(i));
                }
            })
        }),
        case("wrap: trivial call, wrapped", 1_000_000, move |n| {
            track_scope("bench_wrap", || {
                let f = current_scope().unwrap().wrap(call);
                for i in 0..n {
                    black_box(f(i));
                }
            })
        }),
        case(
            "wrap: par_iter 10,000 allocating items, plain",
            10,
            move |n| {
                track_scope("bench_wrap", || {
                    for _ in 0..n {
                        black_box(pool.install(|| items.par_iter().map(alloc).sum::<usize>()));
                    }
                })
            },
        ),
        case(
            "wrap: par_iter 10,000 allocating items, wrapped",
            10,
            move |n| {
                track_scope("bench_wrap", || {
                    let h = current_scope().unwrap();
                    for _ in 0..n {
                        black_box(
                            pool.install(|| items.par_iter().map(h.wrap(alloc)).sum::<usize>()),
                        );
                    }
                })
            },
        ),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(11);
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ));
    let mut cases = tracing_cases();
    cases.extend(tower_cases(rt));
    cases.extend(wrap_cases());
    // `bench_integrations count NAME N`: only the case NAME (its name after "area: "), N
    // operations once, for instruction counts under callgrind (deterministic whatever the
    // machine's load): run it with two values of N and divide the difference.
    if args.get(1).map(String::as_str) == Some("count") {
        let c = cases
            .iter_mut()
            .find(|c| c.name.split_once(": ").map(|(_, n)| n) == Some(args[2].as_str()))
            .expect("no such case");
        (c.run)(args[3].parse().expect("N"));
        return;
    }
    for c in cases.iter_mut() {
        (c.run)(c.ops / 10 + 1); // warm-up
    }
    for round in 0..rounds {
        let n = cases.len();
        for k in 0..n {
            let c = &mut cases[(k + round) % n];
            let start = Instant::now();
            (c.run)(c.ops);
            c.samples
                .push(start.elapsed().as_nanos() as f64 / c.ops as f64);
        }
    }
    println!("{rounds} rounds, median per operation (pairs: baseline first, then with allocscope)");
    let mut base = 0.0;
    for c in &cases {
        let m = median(&c.samples);
        // Baselines: each later line is compared with the last baseline above it.
        let pair_start = c.name.contains("registry only")
            || c.name.contains("no-op layer")
            || c.name.contains("no layer")
            || c.name.contains("reference")
            || c.name.ends_with("plain");
        if pair_start {
            base = m;
            println!("{:<66} {:>12.1} ns", c.name, m);
        } else {
            println!(
                "{:<66} {:>12.1} ns   x{:.2} (+{:.1} ns)",
                c.name,
                m,
                m / base,
                m - base
            );
        }
    }
}
