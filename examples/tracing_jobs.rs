//! Job scopes from tracing spans: a worker whose jobs are `#[instrument]`ed async functions
//! gets per-job memory figures from one line of set-up, `ScopeLayer`.
//!
//! Run with `cargo run --release --example tracing_jobs --features tracing`.

use std::collections::HashMap;
use std::sync::Mutex;

use allocscope::TrackingAllocator;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// A cache that the import job fills and nobody empties: what the report should point at.
static USER_CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One job per call: the span is named after the function, the job after its `job` field.
#[tracing::instrument(skip_all, fields(job = "import_users"))]
async fn import_users(batch: u32) -> usize {
    let rows: Vec<String> = (0..500).map(|i| format!("user-{batch}-{i}")).collect();
    tokio::task::yield_now().await; // the next poll may run on another worker
    let valid = validate(&rows); // an unselected span: part of this job
    USER_CACHE.lock().unwrap().push(rows[0].clone()); // kept: 1 string per run
    valid
}

#[tracing::instrument(skip_all)]
fn validate(rows: &[String]) -> usize {
    let seen: HashMap<&str, ()> = rows.iter().map(|r| (r.as_str(), ())).collect();
    seen.len()
}

/// Selected by name ("process_job"), named by its `job` field: a job type, not an id.
#[tracing::instrument(skip_all, fields(job = %kind))]
async fn process_job(kind: &'static str, n: usize) -> usize {
    let buf = vec![0u8; n];
    tokio::task::yield_now().await;
    buf.iter().filter(|b| **b == 0).count()
}

fn main() {
    tracing_subscriber::registry()
        .with(
            allocscope::tracing::ScopeLayer::new()
                .spans_named(["process_job", "import_users"])
                .job_field("job"),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for batch in 0..20 {
            tasks.push(tokio::spawn(import_users(batch)));
            let kind = if batch % 2 == 0 {
                "resize_image"
            } else {
                "send_email"
            };
            tasks.push(tokio::spawn(process_job(kind, 64 * 1024)));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let report = allocscope::report();
    println!("{}", report.to_text());
    let import = report.job("import_users").expect("ran");
    println!(
        "import_users: {} runs, still holding {} objects / {} bytes: one cached name per run and \
         the cache's buffer, plus what tracing's registry (a span slab per thread) and tokio \
         (a defer list per worker) set up lazily inside the first runs on each worker \
         (ALLOCSCOPE_STACKS=every shows them as callsites)",
        import.runs, import.retained.objects, import.retained.bytes
    );
}
