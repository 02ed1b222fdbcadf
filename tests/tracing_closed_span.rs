//! A thread left inside a selected span's scope by tracing misuse — its `Entered` guard
//! forgotten, or the span exited on another thread (`Dispatch::exit`) — leaves it once the span
//! closes: at once when the span closes on that thread, else at its next allocation (or
//! scope operation, whichever comes first). The run finishes exactly once; later allocations are not the
//! closed job's, and `current_scope()` names the scope the thread had before the span.
//!
//! Its own binary: one global subscriber, and job names no other test uses.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Once};

use allocscope::{current_scope, report, track_scope, TrackingAllocator, Usage};
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let layer = allocscope::tracing::ScopeLayer::new().spans_named([
            "forgotten_here",
            "exited_elsewhere_closed_here",
            "exited_elsewhere_closed_elsewhere",
        ]);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
    });
}

/// Creates and enters spans on this thread first, so the registry's per-thread span slab and
/// span stack have room before anything is measured (see `integrations_tracing.rs`).
fn warm_thread() {
    let spans: Vec<_> = (0..200).map(|_| tracing::info_span!("warm")).collect();
    let _a = spans[0].enter();
    let _b = spans[1].enter();
}

fn job(name: &str) -> allocscope::JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name:?}"))
}

/// The scope current on this thread, by job name.
fn scope_name() -> Option<String> {
    current_scope().map(|s| s.job_name())
}

/// 1,000 boxes and the vector holding them: 1,001 blocks, 16,000 bytes (each its own block,
/// on purpose).
#[allow(clippy::vec_box)]
fn thousand() -> Vec<Box<u64>> {
    (0..1000u64).map(|i| black_box(Box::new(i))).collect()
}

#[test]
fn a_forgotten_guard_is_left_when_the_span_closes_on_the_same_thread() {
    install();
    warm_thread();
    let (kept, later, inside) = track_scope("forgotten_host", || {
        let span = tracing::info_span!("forgotten_here");
        std::mem::forget(span.enter());
        let kept = black_box(Box::new([1u8; 100]));
        drop(span); // closes: the run finishes, the thread is back in the host
        let inside = scope_name();
        (kept, thousand(), inside)
    });
    assert_eq!(inside.as_deref(), Some("forgotten_host"));
    assert_eq!(
        scope_name(),
        None,
        "track_scope restored the unscoped context"
    );
    let j = job("forgotten_here");
    assert_eq!((j.runs, j.active_runs), (1, 0), "finished exactly once");
    assert_eq!(
        j.allocated,
        Usage::new(1, 100),
        "later blocks are not the span's"
    );
    assert_eq!(j.retained, Usage::new(1, 100));
    // Closed on the thread inside it: left before the run finished, so the run has its figures.
    assert_eq!(j.recent_runs.len(), 1);
    assert_eq!(j.recent_runs[0].allocated, Usage::new(1, 100));
    assert_eq!(j.recent_runs[0].retained_at_finish, Usage::new(1, 100));
    let host = job("forgotten_host");
    assert_eq!(host.exclusive.allocated, Usage::new(1001, 16_000));
    assert_eq!(
        host.allocated,
        Usage::new(1002, 16_100),
        "the span nested in it"
    );
    drop((kept, later));
    assert_eq!(job("forgotten_here").retained, Usage::new(0, 0));
}

/// What the stuck thread returns: its kept block, its scope after the close, its 1,001 later
/// blocks, and the later job's block.
#[allow(clippy::vec_box)]
type Stuck = (Box<[u8; 100]>, Option<String>, Vec<Box<u64>>, Box<u32>);

/// Runs the stuck thread: spawned unscoped, it enters `span` (guard forgotten) and keeps 100
/// bytes; the test thread exits the span between the first two waits at `barrier`.
/// `close_here`: the thread holds the span's last handle and drops it after the second wait;
/// otherwise it drops its handle at once and the test thread closes the span before the
/// third. Then it allocates 1,001 blocks (no scope operation before them), asks for its
/// scope, and runs the job `after`.
fn stuck_thread(
    span: tracing::Span,
    barrier: Arc<Barrier>,
    close_here: bool,
    after: &'static str,
) -> std::thread::JoinHandle<Stuck> {
    std::thread::spawn(move || {
        warm_thread();
        std::mem::forget(span.enter());
        let kept = black_box(Box::new([2u8; 100]));
        let mut span = Some(span);
        if !close_here {
            drop(span.take());
        }
        barrier.wait();
        barrier.wait();
        drop(span); // closes it here when this was the last handle
        barrier.wait(); // the test thread closes it (if it held the last handle)
                        // Allocates first, with no scope operation in between, then asks for its scope.
        let later = thousand();
        let inside = scope_name();
        let after = track_scope(after, || black_box(Box::new(7u32)));
        (kept, inside, later, after)
    })
}

#[test]
fn a_span_exited_on_another_thread_is_left_when_it_closes_there() {
    install();
    let span = tracing::info_span!("exited_elsewhere_closed_here");
    let id = span.id().expect("enabled");
    let barrier = Arc::new(Barrier::new(2));
    let t = stuck_thread(span, barrier.clone(), true, "after_closed_here");
    barrier.wait();
    tracing::dispatcher::get_default(|d| d.exit(&id)); // not the thread that entered it
    barrier.wait();
    barrier.wait();
    let (kept, inside, later, after) = t.join().unwrap();
    assert_eq!(inside, None, "back to the unscoped context it entered from");
    let j = job("exited_elsewhere_closed_here");
    assert_eq!((j.runs, j.active_runs), (1, 0), "finished exactly once");
    assert_eq!(
        j.allocated,
        Usage::new(1, 100),
        "later blocks are not the span's"
    );
    assert_eq!(j.recent_runs.len(), 1);
    assert_eq!(j.recent_runs[0].allocated, Usage::new(1, 100));
    assert_eq!(j.recent_runs[0].retained_at_finish, Usage::new(1, 100));
    assert_eq!(job("after_closed_here").allocated, Usage::new(1, 4));
    drop((kept, later, after));
    assert_eq!(
        job("exited_elsewhere_closed_here").retained,
        Usage::new(0, 0)
    );
}

#[test]
fn a_span_exited_and_closed_on_another_thread_is_left_at_the_next_allocation() {
    install();
    let span = tracing::info_span!("exited_elsewhere_closed_elsewhere");
    let id = span.id().expect("enabled");
    let barrier = Arc::new(Barrier::new(2));
    let t = stuck_thread(
        span.clone(),
        barrier.clone(),
        false,
        "after_closed_elsewhere",
    );
    barrier.wait();
    tracing::dispatcher::get_default(|d| d.exit(&id)); // not the thread that entered it
    barrier.wait();
    drop(span); // the last handle: closes here, while the other thread is still inside
    barrier.wait();
    let j = job("exited_elsewhere_closed_elsewhere");
    assert_eq!(
        (j.runs, j.active_runs),
        (1, 0),
        "finished exactly once, at the close"
    );
    let (kept, inside, later, after) = t.join().unwrap();
    assert_eq!(
        inside, None,
        "the first allocation left the closed span's scope"
    );
    let j = job("exited_elsewhere_closed_elsewhere");
    assert_eq!(
        (j.runs, j.active_runs),
        (1, 0),
        "leaving did not finish it again"
    );
    assert_eq!(
        j.allocated,
        Usage::new(1, 100),
        "later blocks are not the span's"
    );
    assert_eq!(j.retained, Usage::new(1, 100));
    // Documented: what the stuck thread had not flushed when the run finished (elsewhere) is
    // in the job's figures, not in the run's.
    assert_eq!(j.recent_runs.len(), 1);
    assert_eq!(j.recent_runs[0].allocated, Usage::new(0, 0));
    assert_eq!(job("after_closed_elsewhere").allocated, Usage::new(1, 4));
    drop((kept, later, after));
    assert_eq!(
        job("exited_elsewhere_closed_elsewhere").retained,
        Usage::new(0, 0)
    );
}
