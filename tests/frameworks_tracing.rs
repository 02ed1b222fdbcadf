//! `allocscope::tracing::ScopeLayer` with spans a framework made: job names from ancestor
//! spans (a field, or a function of the ancestors) without the ancestors becoming runs, and
//! the report's note when a layer selects no span or far fewer than it has seen.

use std::hint::black_box;
use std::sync::Mutex;

use allocscope::tracing::ScopeLayer;
use allocscope::{report, Diagnostic, TrackingAllocator, Usage};
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// What the tasks keep (room reserved outside any scope, per test).
type Kept = Mutex<Vec<Box<[u8]>>>;

/// Runs `f` with `layer` as this thread's subscriber, spans' per-thread storage warmed up
/// first (the registry's first spans on a thread allocate its slab pages).
fn with_layer<R>(layer: ScopeLayer, f: impl FnOnce() -> R) -> R {
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let warm: Vec<_> = (0..200).map(|_| tracing::info_span!("warm")).collect();
        let entered: Vec<_> = warm.iter().take(4).map(|s| s.enter()).collect();
        drop(entered);
        drop(warm);
        f()
    })
}

/// Tasks as a framework makes them: the same span name for every task, created with the
/// worker's span as explicit parent (apalis: `span!(parent: Span::current(), DEBUG, "task")`).
fn run_tasks(worker: &tracing::Span, name: &'static str, tasks: u64, keep: usize, kept: &Kept) {
    for id in 0..tasks {
        let task = tracing::debug_span!(parent: worker, "fw_task", task_id = id);
        let _entered = task.enter();
        black_box(vec![0u8; 4096]);
        kept.lock()
            .unwrap()
            .push(vec![id as u8; keep].into_boxed_slice());
        let _ = name;
    }
}

#[test]
fn a_task_span_takes_its_job_from_the_worker_span_field() {
    static KEPT: Kept = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(64);
    let layer = ScopeLayer::new()
        .spans_named(["fw_task"])
        .ancestor_job_field("job");
    let r = with_layer(layer, || {
        for (job, keep) in [("fw_send_email", 100), ("fw_resize", 300)] {
            let worker = tracing::info_span!("fw_worker", job = job);
            // Contextual, as a worker instrumented with its span.
            worker.in_scope(|| run_tasks(&tracing::Span::current(), job, 10, keep, &KEPT));
        }
        report()
    });
    for (job, keep) in [("fw_send_email", 100u64), ("fw_resize", 300)] {
        let j = r.job(job).unwrap_or_else(|| panic!("no job {job}\n{r}"));
        assert_eq!(j.runs, 10, "{job}");
        assert_eq!(
            j.retained,
            Usage {
                objects: 10,
                bytes: 10 * keep
            },
            "{job}"
        );
    }
    // The worker spans name jobs; they are not runs themselves, and the task spans' own name
    // is no job.
    assert!(r.job("fw_worker").is_none(), "{r}");
    assert!(r.job("fw_task").is_none(), "{r}");
    assert!(
        !r.diagnostics.iter().any(|d| matches!(d,
            Diagnostic::SpansNotSelected { rules, .. } if rules.contains("fw_task"))),
        "{:?}",
        r.diagnostics
    );
}

#[test]
fn a_naming_function_sees_the_span_and_its_ancestors() {
    static KEPT: Kept = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(64);
    let layer = ScopeLayer::new()
        .spans_named(["fw_task"])
        .job_name_fn(|span| {
            assert_eq!(span.metadata().name(), "fw_task");
            assert!(span.field("task_id").is_some());
            // The span around the worker: `fw_worker_<kind>`.
            span.ancestors()
                .iter()
                .find_map(|a| a.name().strip_prefix("fw_worker_"))
                .map(|kind| format!("fw_fn_{kind}"))
        });
    let r = with_layer(layer, || {
        let outer = tracing::info_span!("fw_process");
        let _outer = outer.enter();
        let worker = tracing::info_span!("fw_worker_thumbnails");
        let _worker = worker.enter();
        run_tasks(&tracing::Span::current(), "", 6, 50, &KEPT);
        report()
    });
    let j = r.job("fw_fn_thumbnails").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(j.runs, 6);
    assert_eq!(
        j.retained,
        Usage {
            objects: 6,
            bytes: 300
        }
    );
    assert!(r.job("fw_worker_thumbnails").is_none());
}

fn spans_note<'a>(r: &'a allocscope::Report, name: &str) -> Option<(u64, u64, &'a str)> {
    r.diagnostics.iter().find_map(|d| match d {
        Diagnostic::SpansNotSelected {
            rules,
            seen,
            selected,
            ..
        } if rules.contains(name) => Some((*seen, *selected, rules.as_str())),
        _ => None,
    })
}

#[test]
fn a_layer_that_selects_nothing_or_far_too_little_says_so() {
    // Selects nothing: the rules name a span nobody makes.
    let r = with_layer(ScopeLayer::new().spans_named(["fw_never"]), || {
        for i in 0..5 {
            let _s = tracing::info_span!("fw_other", i).entered();
        }
        report()
    });
    let (seen, selected, _) = spans_note(&r, "fw_never").expect("a note");
    assert_eq!((seen, selected), (205, 0), "200 warm-up spans and 5 others");
    let text = r.to_text();
    assert!(
        text.contains(
            "tracing ScopeLayer (spans named [\"fw_never\"]) has seen 205 spans and selected none"
        ),
        "{text}"
    );
    assert!(
        text.contains("No span the program has used matches its rules."),
        "{text}"
    );

    // One in 1,000 or more: quiet. Fewer: the note. (200 warm-up spans count as seen.)
    let noisy = |rare: u64, noise: u64| {
        with_layer(ScopeLayer::new().spans_named(["fw_rare"]), || {
            for _ in 0..rare {
                let _s = tracing::info_span!("fw_rare").entered();
            }
            for _ in 0..noise {
                let _s = tracing::trace_span!("fw_noise").entered();
            }
            report()
        })
    };
    let quiet = noisy(2, 2 * Diagnostic::SPANS_RATIO - 202);
    assert_eq!(
        spans_note(&quiet, "fw_rare"),
        None,
        "{:?}",
        quiet.diagnostics
    );
    let loud = noisy(1, Diagnostic::SPANS_RATIO - 200);
    let (seen, selected, _) = spans_note(&loud, "fw_rare").expect("a note");
    assert_eq!((seen, selected), (1001, 1));
    assert!(loud
        .to_text()
        .contains("selected 1 of the 1,001 spans it has seen"));
    // A layer no longer installed is not listed.
    assert_eq!(spans_note(&report(), "fw_never"), None);
}
