//! Async jobs on a multi-thread tokio runtime: each task keeps its job scope while the runtime
//! moves it between worker threads.
//!
//! Run with `cargo run --release --example tokio_jobs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocscope::{FutureExt, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Sessions that a buggy handler forgets to remove.
static SESSIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

async fn handle_request(id: usize, threads: Arc<Mutex<BTreeSet<String>>>) -> usize {
    let mut total = 0;
    for step in 0..10 {
        threads
            .lock()
            .unwrap()
            .insert(format!("{:?}", std::thread::current().id()));
        let body = vec![(id + step) as u8; 4096]; // temporary
        total += body.len();
        // Hand the worker's scheduler to another thread: the next poll runs elsewhere.
        tokio::task::block_in_place(|| {});
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if id % 4 == 0 {
        SESSIONS.lock().unwrap().push(vec![0u8; 10_000]); // the leak
    }
    total
}

async fn compact_index() -> usize {
    let mut index: HashMap<u64, String> = HashMap::new();
    for i in 0..20_000u64 {
        index.insert(i, i.to_string());
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    index.len()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .expect("tokio runtime");
    let threads = Arc::new(Mutex::new(BTreeSet::new()));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for id in 0..16 {
            let threads = threads.clone();
            tasks.push(tokio::spawn(
                handle_request(id, threads).track_scope("handle_request"),
            ));
        }
        tasks.push(tokio::spawn(compact_index().track_scope("compact_index")));
        for t in tasks {
            t.await.expect("task");
        }
    });
    let report = allocscope::report();
    println!("{}", report.to_text());
    println!(
        "handle_request ran on {} different worker threads",
        threads.lock().unwrap().len()
    );
    let handler = report.job("handle_request").expect("ran");
    println!(
        "handle_request: {} runs, still holding {} objects / {} bytes (4 leaked sessions of 10,000 bytes)",
        handler.runs, handler.retained.objects, handler.retained.bytes
    );
}
