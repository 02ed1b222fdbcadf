//! A future keeps its scope while a multi-thread tokio runtime moves it between workers.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use allocscope::{report, track_scope, FutureExt, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn future_polled_across_threads_is_charged_to_its_job() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let seen = threads.clone();
    let kept = rt.block_on(async move {
        let handle = tokio::spawn(
            async move {
                let mut kept = Vec::new();
                for i in 0..40u64 {
                    seen.lock().unwrap().insert(std::thread::current().id());
                    // Hands this worker's scheduler to another thread, so the next poll
                    // happens on a different worker: the task migrates.
                    tokio::task::block_in_place(|| {});
                    // Tracked: Box<u64> kept, a temporary Vec<u8> of 256 bytes dropped.
                    kept.push(black_box(Box::new(i)));
                    black_box(vec![0u8; 256]);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                kept
            }
            .track_scope("async_job"),
        );
        handle.await.unwrap()
    });
    assert!(
        threads.lock().unwrap().len() > 1,
        "the task should have run on several worker threads"
    );
    let r = report();
    let j = r.job("async_job").unwrap();
    assert_eq!(j.runs, 1);
    let boxes = 40u64;
    let temps = 40u64;
    // The runtime's own bookkeeping during polls is charged too, so check the job's totals
    // with lower bounds and the frees of what we kept exactly.
    assert!(j.allocated.objects >= boxes + temps);
    let live_before = j.retained;
    assert!(live_before.objects > boxes);
    drop(kept); // 40 boxes + the vector's buffer
    let after = report().job("async_job").unwrap().retained;
    assert_eq!(live_before.objects - after.objects, boxes + 1);
    assert_eq!(live_before.bytes - after.bytes, boxes * 8 + 64 * 8);
    drop(rt);
}

#[test]
fn in_scope_charges_an_existing_scope_and_drop_finishes_the_run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let kept = track_scope("scope_for_future", || {
        let scope = allocscope::current_scope().unwrap();
        let handle = rt.spawn(async { black_box(vec![1u8; 300]) }.in_scope(scope));
        rt.block_on(handle).unwrap()
    });
    let j = report().job("scope_for_future").cloned().unwrap();
    assert!(j.retained.bytes >= 300);
    let before = j.retained;
    drop(kept);
    let after = report().job("scope_for_future").unwrap().retained;
    assert_eq!(before.bytes - after.bytes, 300);
    assert_eq!(before.objects - after.objects, 1);

    // A tracked future dropped before completion finishes its run.
    let fut = async {
        let _held = black_box(vec![0u8; 10]);
        std::future::pending::<()>().await
    }
    .track_scope("cancelled_future");
    drop(fut);
    let j = report().job("cancelled_future").cloned().unwrap();
    assert_eq!(j.runs, 1);
    assert_eq!(j.retained, Usage::new(0, 0));
}
