//! `allocscope::tracing::ScopeLayer`: selected spans are job runs, entered on any thread.
//!
//! One global subscriber for the whole binary (tokio workers need the global dispatcher), with
//! every selection rule: names, a target prefix, a predicate and a job field.

use std::hint::black_box;
use std::sync::{Mutex, Once};

use allocscope::{report, track_scope, TrackingAllocator, Usage};
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let layer = allocscope::tracing::ScopeLayer::new()
            .spans_named(["process_job", "outer", "inner"])
            .target_prefix("integrations_tracing::selected_module")
            .predicate(|meta| meta.name().starts_with("pred_"))
            .job_field("job");
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
    });
}

/// Creates and enters spans on this thread before a measured scope, so the registry's
/// per-thread span slab (pages of 32, 64, 128... slots, allocated when a thread's shard first
/// needs them) and span stack already have room: otherwise the first span created or entered
/// in the scope allocates them, and that is charged to the scope (the registry's memory, not
/// the job's). 200 spans live at once leave room for far more than these tests keep.
fn warm_thread() {
    let spans: Vec<_> = (0..200).map(|_| tracing::info_span!("warm")).collect();
    let _a = spans[0].enter();
    let _b = spans[1].enter();
    let _c = spans[2].enter();
}

fn job(name: &str) -> allocscope::JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name:?}"))
}

/// A future that is pending once and wakes itself: the task is polled again, maybe on another
/// worker, without the runtime allocating (unlike timers or `yield_now`'s defer list).
struct Repoll(bool);

impl std::future::Future for Repoll {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Where each run keeps its one object (a block of its own, on purpose); capacity reserved up
/// front, so pushing never allocates inside a run.
#[allow(clippy::vec_box)]
static KEPT: Mutex<Vec<Box<[u64; 4]>>> = Mutex::new(Vec::new());

/// One job run: 3 blocks (1,000 + 8 + 32 bytes), of which it keeps one (32 bytes).
#[tracing::instrument(skip_all, fields(job = job))]
async fn process_job(job: &'static str, i: u64) {
    Repoll(false).await;
    black_box(vec![0u8; 1000]);
    inner_step(i);
    Repoll(false).await;
    let kept = Box::new([i; 4]);
    KEPT.lock().unwrap().push(kept);
    Repoll(false).await;
}

/// Not selected: its span must not become a job, and its allocation belongs to process_job.
#[tracing::instrument]
fn inner_step(i: u64) {
    black_box(Box::new(i));
}

#[test]
fn instrumented_async_runs_on_four_workers_are_exact() {
    install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        // Creates and enters spans once per worker, so the registry's per-thread span slab
        // and span stack exist before any run (they would otherwise grow inside the first
        // run that creates a span on that worker and be charged to it).
        .on_thread_start(warm_thread)
        .build()
        .unwrap();
    KEPT.lock().unwrap().reserve(200);
    // Same code paths once under another job name (callsite registration, first polls).
    for name in ["tracing_warmup", "tracing_job"] {
        rt.block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|i| tokio::spawn(process_job(name, i)))
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    }
    let j = job("tracing_job");
    assert_eq!(j.runs, 100);
    assert_eq!(j.active_runs, 0);
    assert_eq!(j.allocated, Usage::new(300, 100 * (1000 + 8 + 32)));
    assert_eq!(j.retained, Usage::new(100, 100 * 32));
    for run in &j.recent_runs {
        assert_eq!(run.allocated, Usage::new(3, 1040), "{run:?}");
        assert_eq!(run.retained_at_finish, Usage::new(1, 32), "{run:?}");
    }
    let r = report();
    assert!(
        r.job("inner_step").is_none(),
        "an unselected span made a job"
    );
    assert!(
        r.job("process_job").is_none(),
        "the job field names the job"
    );
    KEPT.lock().unwrap().clear();
    assert_eq!(job("tracing_job").retained, Usage::new(0, 0));
    drop(rt);
}

#[test]
fn span_entered_on_several_threads_is_one_run_until_it_closes() {
    install();
    let span = tracing::info_span!("pred_threads");
    let kept: Vec<Box<[u8; 100]>> = Vec::with_capacity(3);
    let (span, mut kept) = std::thread::spawn(move || {
        let mut kept = kept;
        span.in_scope(|| kept.push(Box::new([1; 100])));
        (span, kept)
    })
    .join()
    .unwrap();
    // Not entered: not the span's.
    let outside = black_box(vec![0u8; 50]);
    let (span, kept) = std::thread::spawn(move || {
        span.in_scope(|| {
            kept.push(Box::new([2; 100]));
            black_box(vec![0u8; 7]);
        });
        (span, kept)
    })
    .join()
    .unwrap();
    let j = job("pred_threads");
    assert_eq!(
        (j.runs, j.active_runs),
        (0, 1),
        "open until the span closes"
    );
    assert_eq!(j.allocated, Usage::new(3, 207));
    assert_eq!(j.retained, Usage::new(2, 200));
    std::thread::spawn(move || drop(span)).join().unwrap();
    let j = job("pred_threads");
    assert_eq!((j.runs, j.active_runs), (1, 0));
    assert_eq!(j.recent_runs[0].allocated, Usage::new(3, 207));
    assert_eq!(j.recent_runs[0].retained_at_finish, Usage::new(2, 200));
    drop(kept);
    drop(outside);
    assert_eq!(job("pred_threads").retained, Usage::new(0, 0));
}

#[test]
fn nested_selected_spans_nest_and_unselected_spans_change_nothing() {
    install();
    warm_thread();
    let kept = track_scope("tracing_host", || {
        let outer = tracing::info_span!("outer");
        let _o = outer.enter();
        let a = black_box(Box::new(1u32));
        let inner = tracing::info_span!("inner");
        let b = inner.in_scope(|| {
            // An unselected span inside a selected one: still the inner job.
            tracing::info_span!("not_selected").in_scope(|| black_box(Box::new(2u64)))
        });
        (a, b)
    });
    let host = job("tracing_host");
    let outer = job("outer");
    let inner = job("inner");
    assert_eq!(inner.allocated, Usage::new(1, 8));
    assert_eq!(outer.allocated, Usage::new(2, 12), "inclusive of inner");
    assert_eq!(outer.exclusive.allocated, Usage::new(1, 4));
    assert_eq!(
        host.allocated,
        Usage::new(2, 12),
        "the spans nest in the host"
    );
    assert_eq!(host.exclusive.allocated, Usage::new(0, 0));
    assert!(report().job("not_selected").is_none());
    drop(kept);

    // An explicit parent nests in that parent's run, wherever the child is created.
    let parent = tracing::info_span!("outer");
    let child = std::thread::scope(|s| {
        s.spawn(|| tracing::info_span!(parent: &parent, "inner"))
            .join()
            .unwrap()
    });
    let before = (job("outer").allocated, job("inner").allocated);
    let b = child.in_scope(|| black_box(Box::new([0u8; 16])));
    assert_eq!(job("inner").allocated, before.1 + Usage::new(1, 16));
    assert_eq!(job("outer").allocated, before.0 + Usage::new(1, 16));
    drop((b, child, parent));
}

mod selected_module {
    /// Selected by the target prefix (this module's path).
    pub fn work() -> Box<[u8; 24]> {
        tracing::info_span!("by_target").in_scope(|| Box::new([0; 24]))
    }
}

#[test]
fn target_prefix_and_job_field_select_and_name() {
    install();
    let a = selected_module::work();
    assert_eq!(job("by_target").allocated, Usage::new(1, 24));
    // A span selected only by having the job field, named by its value (Display or str).
    let kind = "import_users";
    let b = tracing::info_span!("anything", job = %kind).in_scope(|| Box::new(5u8));
    let c = tracing::info_span!("other", job = "import_users").in_scope(|| Box::new(6u8));
    let j = job("import_users");
    assert_eq!((j.runs, j.allocated), (2, Usage::new(2, 2)));
    assert!(report().job("anything").is_none());
    drop((a, b, c));
}

#[test]
fn guards_dropped_out_of_order_restore_the_right_scope() {
    install();
    warm_thread();
    let kept = track_scope("tracing_order", || {
        let a = tracing::info_span!("pred_order_a");
        let b = tracing::info_span!("pred_order_b");
        let ga = a.enter();
        let gb = b.enter();
        drop(ga); // out of order: b's scope stays current
        let in_b = black_box(Box::new(1u8));
        drop(gb); // now back to the host scope
        let in_host = black_box(Box::new(2u16));
        (in_b, in_host)
    });
    assert_eq!(job("pred_order_b").allocated, Usage::new(1, 1));
    assert_eq!(job("tracing_order").exclusive.allocated, Usage::new(1, 2));
    drop(kept);
}

#[test]
fn a_span_closed_by_a_panic_is_a_panicked_run_and_the_scope_is_left() {
    install();
    let result = std::panic::catch_unwind(|| {
        let span = tracing::info_span!("pred_panics");
        let _entered = span.enter();
        panic!("allocscope test: the job fails");
    });
    assert!(result.is_err());
    let j = job("pred_panics");
    assert_eq!((j.runs, j.panicked_runs, j.active_runs), (1, 1, 0));
    assert!(
        allocscope::current_scope().is_none(),
        "the span's scope was left"
    );
}
