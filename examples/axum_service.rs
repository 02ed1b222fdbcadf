//! An axum service with one job per route (`ScopeLayer::by_route`), served on loopback and
//! driven by a hyper client: the leaking route stands out in the job table.
//!
//! Run with `cargo run --release --example axum_service --features tower`.

use std::sync::Mutex;

use allocscope::TrackingAllocator;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Audit entries a buggy handler keeps forever.
static AUDIT: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn user(Path(id): Path<u32>) -> String {
    format!("{{\"id\":{id},\"name\":\"user-{id}\"}}")
}

async fn login(body: String) -> &'static str {
    AUDIT.lock().unwrap().push(format!("login: {body}")); // the leak
    "ok"
}

async fn report_page() -> String {
    (0..200).map(|i| format!("<tr><td>{i}</td></tr>")).collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let app = Router::new()
            .route("/users/{id}", get(user))
            .route("/login", post(login))
            .route("/report", get(report_page))
            .layer(allocscope::tower::ScopeLayer::by_route());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
        for i in 0..300u32 {
            let req = match i % 3 {
                0 => hyper::Request::get(format!("http://{addr}/users/{i}")).body(Full::default()),
                1 => hyper::Request::post(format!("http://{addr}/login"))
                    .body(Full::from(format!("user-{i}:{}", "*".repeat(64)))),
                _ => hyper::Request::get(format!("http://{addr}/report")).body(Full::default()),
            };
            let resp = client
                .request(req.expect("request"))
                .await
                .expect("response");
            resp.into_body().collect().await.expect("body");
        }
        // One path no route matches: its job is "(unmatched route)", not the URI.
        let resp = client
            .get(format!("http://{addr}/nope?x=1").parse().expect("uri"))
            .await
            .expect("response");
        assert_eq!(resp.status(), 404);
        drop(client);
        let _ = stop.send(());
        server.await.expect("server");
    });
    let report = allocscope::report();
    println!("{}", report.to_text());
    let login = report.job("POST /login").expect("ran");
    println!(
        "POST /login: {} requests, still holding {} objects / {} bytes (the audit log)",
        login.runs, login.retained.objects, login.retained.bytes
    );
}
