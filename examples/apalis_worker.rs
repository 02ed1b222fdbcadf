//! allocscope in a real job framework: an apalis worker process (in-memory `MemoryStorage`,
//! tokio) with three job types, each task one run of its job.
//!
//! * `leak_job` keeps each task's 1 KiB payload in a global list that nobody clears: a leak
//!   (trend `growing`, retained = the payloads).
//! * `cache_job` computes an entry in a tokio subtask (`tokio::spawn(fut.in_current_scope())`)
//!   and keeps it in a cache bounded to [`CACHE_ENTRIES`] entries: a cache that fills up
//!   (trend `saturating`, retained = the cache).
//! * `churn_job` allocates 64 KiB and a few hundred strings per task and keeps nothing
//!   (trend `steady`, retained 0).
//!
//! Each worker runs two tasks at a time (`.concurrency(2)`, as apalis's README does) and
//! attaches its job with `allocscope::tower::JobLayer::named(..)` **after**
//! `.parallelize(tokio::spawn)`, so the future that runs on the spawned task is the layer's.
//! The program counts what it processed and kept, prints those counts, then the job table.
//!
//! ```text
//! cargo run --release --example apalis_worker --features tower,tracing [-- MODE]
//! ```
//!
//! MODE:
//! * `after` (default): `.parallelize(tokio::spawn).layer(JobLayer::named(..))` — exact;
//! * `before`: `.layer(JobLayer::named(..)).parallelize(tokio::spawn)` — the handlers run on
//!   spawned tasks outside the runs: every job retains 0 and the report's unscoped note fires;
//! * `tracing`: no JobLayer; apalis's own `.enable_tracing()` spans (`task`) become runs with
//!   `ScopeLayer::spans_named(["task"]).ancestor_job_field("job")`, each worker running in
//!   `info_span!("worker", job = ..)` — exact, one job per task type;
//! * `tracing-global-filter`: the same with a global `EnvFilter::new("info")` (what
//!   `RUST_LOG=info` gives): apalis's DEBUG spans are never created, no job is reported, and
//!   the report's spans note says why and shows the per-layer filter that fixes it.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use allocscope::tower::JobLayer;
use allocscope::{FutureExt, Report, TrackingAllocator};
use apalis::prelude::*;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Tasks pushed per job type.
pub const TASKS: u64 = 300;
/// Bytes of each leaked payload.
pub const PAYLOAD: usize = 1024;
/// Entries the cache keeps, and the bytes of each.
pub const CACHE_ENTRIES: usize = 20;
pub const CACHE_ENTRY: usize = 2048;

/// Where the job is attached to the workers (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    After,
    Before,
    Tracing,
    TracingGlobalFilter,
}

impl Mode {
    pub fn parse(arg: Option<&str>) -> Result<Mode, String> {
        match arg.unwrap_or("after") {
            "after" => Ok(Mode::After),
            "before" => Ok(Mode::Before),
            "tracing" => Ok(Mode::Tracing),
            "tracing-global-filter" => Ok(Mode::TracingGlobalFilter),
            other => Err(format!(
                "unknown mode {other:?}: expected after, before, tracing or tracing-global-filter"
            )),
        }
    }
}

/// A task of `leak_job`: its payload is kept for good.
#[derive(Debug, Clone)]
pub struct LeakTask(u64);
/// A task of `cache_job`: its entry goes into the bounded cache.
#[derive(Debug, Clone)]
pub struct CacheTask(u64);
/// A task of `churn_job`: allocates, keeps nothing.
#[derive(Debug, Clone)]
pub struct ChurnTask(u64);

/// The leak: every payload, never cleared (room reserved up front, outside any job, so that
/// the list's own growth is not what the job keeps).
static PAYLOADS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
/// The bounded cache.
static CACHE: Mutex<VecDeque<Box<[u8]>>> = Mutex::new(VecDeque::new());
/// Tasks processed, per job type.
static PROCESSED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn done(kind: usize, worker: &WorkerContext) {
    if PROCESSED[kind].fetch_add(1, Relaxed) + 1 == TASKS {
        worker.stop().expect("stop the worker");
    }
}

fn remember_payload(id: u64) {
    let payload = vec![id as u8; PAYLOAD].into_boxed_slice();
    PAYLOADS.lock().unwrap().push(payload);
}

async fn leak(task: LeakTask, worker: WorkerContext) {
    remember_payload(task.0);
    done(0, &worker);
}

async fn cache(task: CacheTask, worker: WorkerContext) {
    // A subtask computes the entry: in_current_scope keeps it in this task's run.
    let entry = tokio::spawn(
        async move { vec![task.0 as u8; CACHE_ENTRY].into_boxed_slice() }.in_current_scope(),
    )
    .await
    .expect("the subtask");
    let evicted = {
        let mut cache = CACHE.lock().unwrap();
        cache.push_back(entry);
        (cache.len() > CACHE_ENTRIES).then(|| cache.pop_front())
    };
    drop(evicted);
    done(1, &worker);
}

async fn churn(task: ChurnTask, worker: WorkerContext) {
    let buffer = black_box(vec![task.0 as u8; 64 << 10]);
    let words: Vec<String> = (0..300)
        .map(|i| format!("word {i} of {}", task.0))
        .collect();
    black_box((buffer.len(), words.len()));
    drop((buffer, words));
    tokio::task::yield_now().await;
    done(2, &worker);
}

/// What the program counted itself.
#[derive(Debug)]
pub struct Outcome {
    /// Tasks processed per job type: leak, cache, churn.
    pub processed: [u64; 3],
    /// Payloads the leak keeps, and their bytes.
    pub leaked: (u64, u64),
    /// Entries in the cache, and their bytes.
    pub cached: (u64, u64),
    /// The report taken after the workers stopped.
    pub report: Report,
}

/// Builds one worker per job type, attached as `mode` says, and runs it until it processed
/// its tasks.
macro_rules! worker {
    ($mode:expr, $name:literal, $job:literal, $storage:expr, $handler:expr) => {
        async {
            let result = match $mode {
                Mode::After => {
                    WorkerBuilder::new($name)
                        .backend($storage)
                        .concurrency(2)
                        .parallelize(tokio::spawn)
                        .layer(JobLayer::named($job))
                        .build($handler)
                        .run()
                        .await
                }
                Mode::Before => {
                    WorkerBuilder::new($name)
                        .backend($storage)
                        .concurrency(2)
                        .layer(JobLayer::named($job))
                        .parallelize(tokio::spawn)
                        .build($handler)
                        .run()
                        .await
                }
                Mode::Tracing | Mode::TracingGlobalFilter => {
                    WorkerBuilder::new($name)
                        .backend($storage)
                        .concurrency(2)
                        .parallelize(tokio::spawn)
                        .enable_tracing()
                        .build($handler)
                        .run()
                        .instrument(tracing::info_span!("worker", job = $job))
                        .await
                }
            };
            result.expect(concat!("run ", $name));
        }
    };
}

/// Runs the three workers as `mode` says and returns what the program counted.
pub fn run(mode: Mode) -> Outcome {
    PAYLOADS.lock().unwrap().reserve(TASKS as usize);
    CACHE.lock().unwrap().reserve(CACHE_ENTRIES + 1);
    let scopes = allocscope::tracing::ScopeLayer::new()
        .spans_named(["task"])
        .ancestor_job_field("job");
    // Logs at INFO; the filter on the log layer only (per-layer), or global.
    let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match mode {
        Mode::Tracing => Box::new(
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_filter(tracing_subscriber::EnvFilter::new("info")),
                )
                .with(scopes),
        ),
        Mode::TracingGlobalFilter => Box::new(
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(tracing_subscriber::fmt::layer())
                .with(scopes),
        ),
        Mode::After | Mode::Before => Box::new(tracing_subscriber::registry()),
    };
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut leaks = MemoryStorage::new();
        let mut caches = MemoryStorage::new();
        let mut churns = MemoryStorage::new();
        for i in 0..TASKS {
            leaks.push(LeakTask(i)).await.expect("push");
            caches.push(CacheTask(i)).await.expect("push");
            churns.push(ChurnTask(i)).await.expect("push");
        }
        tokio::join!(
            worker!(mode, "leak-worker", "leak_job", leaks, leak),
            worker!(mode, "cache-worker", "cache_job", caches, cache),
            worker!(mode, "churn-worker", "churn_job", churns, churn),
        );
    });
    drop(runtime);

    let leaked = PAYLOADS.lock().unwrap().len() as u64;
    let cached = CACHE.lock().unwrap().len() as u64;
    Outcome {
        processed: PROCESSED.each_ref().map(|p| p.load(Relaxed)),
        leaked: (leaked, leaked * PAYLOAD as u64),
        cached: (cached, cached * CACHE_ENTRY as u64),
        report: allocscope::report(),
    }
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() {
    let arg = std::env::args().nth(1);
    let mode = match Mode::parse(arg.as_deref()) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("apalis_worker: {e}");
            std::process::exit(2);
        }
    };
    let out = run(mode);
    println!(
        "processed: leak_job {}, cache_job {}, churn_job {} tasks",
        out.processed[0], out.processed[1], out.processed[2]
    );
    println!(
        "kept by the program: {} payloads ({} B), {} cache entries ({} B)\n",
        out.leaked.0, out.leaked.1, out.cached.0, out.cached.1
    );
    print!("{}", out.report);
}
