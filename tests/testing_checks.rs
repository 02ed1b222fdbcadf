//! `allocscope::testing`: memory checks in one test binary, in parallel, with exact figures.
//!
//! Every test here sets `StackMode::Every` first (the mode is process-wide: all tests of this
//! binary use the same one), so retained memory is attributed to exact callsites.

// Boxes in vectors on purpose: each box is one allocation, a block the checks count.
#![allow(clippy::vec_box)]

mod common;

use common::every;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex, OnceLock};

use allocscope::testing::{CheckFailure, Limit, MemoryCheck};
use allocscope::{assert_memory, assert_no_leaks, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();
/// Allocates `n` buffers of `size` bytes one after the other, keeps the first `k` in `kept`
/// (which has room for them, so pushing allocates nothing) and drops the others at once.
/// Allocated: `n` objects, `n * size` bytes; retained: `k`, `k * size`; peak: `(k + 1) * size`
/// when `n > k`.
#[inline(never)]
fn keep_k_of_n(n: usize, k: usize, size: usize, kept: &mut Vec<Vec<u8>>) {
    for i in 0..n {
        // (A non-zero byte: `vec![0; n]` takes another path, a second callsite.)
        let buf = black_box(vec![7u8; size]);
        if i < k {
            kept.push(buf);
        }
    }
}

/// Whether a failure message shows a frame of `function` on a line starting with `lead`
/// (`at` for the first frame of a callsite, `by` for the next ones). Debug builds name frames
/// `testing_checks::function`, optimized builds name inlined frames just `function`.
fn shows(message: &str, lead: &str, function: &str) -> bool {
    message
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(lead)?.strip_prefix(' '))
        .map(|l| l.split(" (").next().unwrap_or(l))
        .any(|name| name == function || name.ends_with(&format!("::{function}")))
}

fn expected(n: u64, k: u64, size: u64) -> (Usage, Usage, u64) {
    let peak = if n > k { (k + 1) * size } else { k * size };
    (Usage::new(n, n * size), Usage::new(k, k * size), peak)
}

/// One check with exact figures, and the same limits set at the measured values (pass) and
/// one below (fail).
fn exact_check(name: &str, n: usize, k: usize, size: usize) {
    every();
    let (allocated, retained, peak) = expected(n as u64, k as u64, size as u64);
    let mut kept = Vec::with_capacity(k);
    let figures = MemoryCheck::new(name)
        .max_retained_objects(retained.objects)
        .max_retained_bytes(retained.bytes)
        .max_peak_bytes(peak)
        .max_allocated_objects(allocated.objects)
        .max_allocated_bytes(allocated.bytes)
        .run(|| keep_k_of_n(n, k, size, &mut kept))
        .unwrap();
    assert_eq!(figures.allocated, allocated, "{name}");
    assert_eq!(figures.retained, retained, "{name}");
    assert_eq!(figures.peak_bytes, peak, "{name}");
    assert_eq!(figures.check, name);
    assert!(figures.job.starts_with(&format!("{name} [check ")));
    if k > 0 {
        // The callsite holding the memory is keep_k_of_n, with exactly what it kept.
        assert_eq!(figures.holding.len(), 1, "{name}: {:#?}", figures.holding);
        let held = &figures.holding[0].callsite;
        assert!(held.top_function().contains("keep_k_of_n"), "{held:?}");
        assert_eq!(held.retained, retained);
    }
    drop(kept);

    let mut kept = Vec::with_capacity(k);
    let failure = MemoryCheck::new(name)
        .max_retained_bytes(retained.bytes.saturating_sub(1))
        .max_peak_bytes(peak - 1)
        .max_allocated_objects(allocated.objects - 1)
        .run(|| keep_k_of_n(n, k, size, &mut kept))
        .unwrap_err();
    let mut limits: Vec<(Limit, u64, u64)> = failure
        .violations()
        .iter()
        .map(|v| (v.limit, v.max, v.measured))
        .collect();
    limits.sort_by_key(|l| format!("{:?}", l.0));
    let mut want = vec![
        (Limit::PeakBytes, peak - 1, peak),
        (
            Limit::AllocatedObjects,
            allocated.objects - 1,
            allocated.objects,
        ),
    ];
    if retained.bytes > 0 {
        want.push((Limit::RetainedBytes, retained.bytes - 1, retained.bytes));
    }
    want.sort_by_key(|l| format!("{:?}", l.0));
    assert_eq!(limits, want, "{name}: {failure}");
    assert_eq!(failure.figures().unwrap().retained, retained);
}

// Twenty checks with different figures, run in parallel by the test harness.
macro_rules! exact_tests {
    ($($test:ident: $n:expr, $k:expr, $size:expr;)*) => {$(
        #[test]
        fn $test() {
            exact_check(stringify!($test), $n, $k, $size);
        }
    )*};
}

exact_tests! {
    exact_01: 1, 0, 8;
    exact_02: 2, 1, 16;
    exact_03: 3, 2, 24;
    exact_04: 4, 0, 1000;
    exact_05: 5, 5, 40;
    exact_06: 10, 3, 100;
    exact_07: 17, 4, 33;
    exact_08: 50, 25, 64;
    exact_09: 100, 1, 7;
    exact_10: 128, 64, 128;
    exact_11: 7, 6, 4096;
    exact_12: 9, 2, 65536;
    exact_13: 300, 0, 12;
    exact_14: 11, 11, 11;
    exact_15: 64, 32, 1;
    exact_16: 2, 1, 1 << 20;
    exact_17: 1000, 10, 48;
    exact_18: 13, 12, 313;
    exact_19: 6, 3, 999;
    exact_20: 31, 30, 2;
    exact_21: 40, 1, 5000;
    exact_22: 3, 3, 3;
}

/// Twenty-four checks started at the same moment on their own threads: each sees only its
/// own job's figures.
#[test]
fn checks_on_parallel_threads_are_independent() {
    every();
    let threads = 24;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let (n, k, size) = (10 + t, t % 5, 8 * (t + 1));
                let mut kept = Vec::with_capacity(k);
                barrier.wait();
                let figures = MemoryCheck::new(format!("parallel_{t}"))
                    .run(|| keep_k_of_n(n, k, size, &mut kept))
                    .unwrap();
                (t, figures)
            })
        })
        .collect();
    for h in handles {
        let (t, f) = h.join().unwrap();
        let (n, k, size) = (10 + t as u64, t as u64 % 5, 8 * (t as u64 + 1));
        let (allocated, retained, peak) = expected(n, k, size);
        assert_eq!(f.allocated, allocated, "thread {t}");
        assert_eq!(f.retained, retained, "thread {t}");
        assert_eq!(f.peak_bytes, peak, "thread {t}");
        assert_eq!(f.job, format!("parallel_{t} [check 1]"));
    }
}

// ---------------------------------------------------------------------------------------------
// A leak, and its fix
// ---------------------------------------------------------------------------------------------

static SESSIONS: Mutex<Vec<Box<[u8; 96]>>> = Mutex::new(Vec::new());

/// Handles a request and remembers its session forever: a leak.
#[inline(never)]
fn remember_session(id: u8) {
    SESSIONS.lock().unwrap().push(black_box(Box::new([id; 96])));
}

#[inline(never)]
fn handle_request_leaky(id: u8) -> usize {
    let body = black_box(format!("request {id}"));
    remember_session(id);
    body.len()
}

#[inline(never)]
fn handle_request_fixed(id: u8) -> usize {
    let body = black_box(format!("request {id}"));
    let session = black_box(Box::new([id; 96])); // dropped when the request is done
    body.len() + session.len()
}

#[test]
fn leaking_job_fails_naming_the_callsite_and_the_fix_passes() {
    every();
    // Room for the sessions, so that the leak is exactly one box per request.
    SESSIONS.lock().unwrap().reserve(16);
    let failure = MemoryCheck::new("handle_request")
        .no_leaks()
        .run(|| handle_request_leaky(1))
        .unwrap_err();
    let figures = failure.figures().unwrap();
    assert_eq!(figures.retained, Usage::new(1, 96));
    assert_eq!(figures.holding.len(), 1);
    assert!(figures.holding[0]
        .callsite
        .top_function()
        .contains("remember_session"));
    let message = failure.to_string();
    for needle in [
        "memory check \"handle_request\" failed",
        "in test `leaking_job_fails_naming_the_callsite_and_the_fix_passes`",
        "retained objects: 1 measured, limit 0",
        "retained bytes: 96 B measured, limit 0 B",
        "96 B in 1 object",
        "testing_checks.rs:",
        "callsites still holding memory (exact; 1 of 1)",
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
    assert!(shows(&message, "at", "remember_session"), "{message}");
    assert!(shows(&message, "by", "handle_request_leaky"), "{message}");
    // The frames end with the closure given to the check: neither allocscope's frames nor the
    // test function's and the harness's below the check are shown.
    let frames = &figures.holding[0].callsite.frames;
    assert_eq!(frames.len(), 3, "{frames:#?}");
    assert!(frames[2].function.contains("closure"), "{frames:#?}");
    for absent in [
        "allocscope::",
        "test::run_test",
        "leaking_job_fails_naming_the_callsite_and_the_fix_passes (",
    ] {
        assert!(!message.contains(absent), "{absent:?} in:\n{message}");
    }
    // Debug prints the same readable report (for `.unwrap()`).
    assert_eq!(format!("{failure:?}"), message);

    let figures = MemoryCheck::new("handle_request")
        .no_leaks()
        .run(|| handle_request_fixed(1))
        .unwrap();
    assert_eq!(figures.retained, Usage::new(0, 0));
    // The formatted body (its capacity is format!'s estimate) and a box of 96, both freed.
    let body = format!("request {}", black_box(1u8)).capacity() as u64;
    assert_eq!(figures.allocated, Usage::new(2, body + 96));
    assert_eq!(figures.peak_bytes, body + 96);
    assert!(figures.holding.is_empty());
}

#[test]
#[should_panic(expected = "retained bytes: 96 B measured, limit 0 B")]
fn assert_no_leaks_panics_with_the_report() {
    every();
    static KEPT: Mutex<Vec<Box<[u8; 96]>>> = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(4);
    assert_no_leaks!("keep_one", || KEPT
        .lock()
        .unwrap()
        .push(black_box(Box::new([0; 96]))));
}

#[test]
fn macros_accept_options_and_return_figures() {
    every();
    // Nameless form: named after the file and line.
    let f = assert_no_leaks!(|| black_box(vec![0u64; 100]).len());
    assert!(f.check.contains("testing_checks.rs:"), "{}", f.check);
    assert_eq!(f.allocated, Usage::new(1, 800));
    // Named form with options.
    let f = assert_no_leaks!(
        "sum_vec",
        || black_box(vec![1u32; 250]).iter().sum::<u32>(),
        warmup = 2,
        max_peak_bytes = 1000,
    );
    assert_eq!(f.warmup.len(), 2);
    assert_eq!(f.peak_bytes, 1000);
    let f = assert_memory!(
        "two_buffers",
        || (black_box(vec![0u8; 300]), black_box(vec![0u8; 200])),
        max_allocated_objects = 2,
        max_allocated_bytes = 500,
        max_peak_bytes = 500,
        max_retained_bytes = 0,
    );
    assert_eq!(f.allocated, Usage::new(2, 500));
}

#[test]
fn the_return_value_is_dropped_inside_the_run() {
    every();
    let f = MemoryCheck::new("returns_a_vec")
        .no_leaks()
        .assert(|| black_box(vec![7u8; 4000]));
    assert_eq!(f.allocated, Usage::new(1, 4000));
    assert_eq!(f.retained, Usage::new(0, 0));
}

// ---------------------------------------------------------------------------------------------
// Warm-up
// ---------------------------------------------------------------------------------------------

static SQUARES: OnceLock<Vec<u64>> = OnceLock::new();
static SQUARES_COLD: OnceLock<Vec<u64>> = OnceLock::new();

#[inline(never)]
fn square_table(cache: &'static OnceLock<Vec<u64>>) -> &'static [u64] {
    cache.get_or_init(|| (0..1000u64).map(|i| i * i).collect())
}

#[inline(never)]
fn lookup_square(cache: &'static OnceLock<Vec<u64>>, i: usize) -> u64 {
    let key = black_box(i.to_string()); // a temporary
    square_table(cache)[key.parse::<usize>().unwrap()]
}

#[test]
fn warmup_tolerates_a_cache_that_fills_once() {
    every();
    let f = MemoryCheck::new("lookup_square")
        .warmup(1)
        .no_leaks()
        .assert(|| lookup_square(&SQUARES, 12));
    assert_eq!(f.warmup.len(), 1);
    // The warm-up run filled the table (and freed its temporary)...
    assert_eq!(f.warmup[0].retained_at_finish, Usage::new(1, 8000));
    assert_eq!(f.warmup[0].job, "lookup_square [warm-up]");
    // ...the measured run only allocated and freed the temporary.
    assert_eq!(f.allocated, Usage::new(1, 2));
    assert_eq!(f.retained, Usage::new(0, 0));

    // Without a warm-up, the first run is charged with the cache.
    let failure = MemoryCheck::new("lookup_square_cold")
        .no_leaks()
        .run(|| lookup_square(&SQUARES_COLD, 12))
        .unwrap_err();
    assert_eq!(failure.figures().unwrap().retained, Usage::new(1, 8000));
    assert!(failure.to_string().contains("square_table"), "{}", failure);
}

static HISTORY: Mutex<Vec<Box<u64>>> = Mutex::new(Vec::new());

#[inline(never)]
fn record_history(v: u64) {
    HISTORY.lock().unwrap().push(black_box(Box::new(v)));
}

#[test]
fn warmup_does_not_hide_growth_after_the_first_run() {
    every();
    // The first push allocates room for 4 boxes; the 3rd run only adds a box.
    let failure = MemoryCheck::new("record_history")
        .warmup(2)
        .no_leaks()
        .run(|| record_history(3))
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.warmup[0].retained_at_finish, Usage::new(2, 32 + 8));
    assert_eq!(f.warmup[1].retained_at_finish, Usage::new(1, 8));
    assert_eq!(f.retained, Usage::new(1, 8));
    let message = failure.to_string();
    assert!(message.contains("after 2 warm-up runs that retained 2 objects / 40 B, 1 object / 8 B"));
    assert!(shows(&message, "at", "record_history"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Callsite filters
// ---------------------------------------------------------------------------------------------

static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static UNKNOWN: Mutex<Vec<Box<[u8; 40]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn known_cache_insert(key: &str) {
    KNOWN.lock().unwrap().push(black_box(key.to_owned()));
}

#[inline(never)]
fn stray_keep() {
    UNKNOWN.lock().unwrap().push(black_box(Box::new([1; 40])));
}

#[test]
fn filter_ignores_known_callsites_exactly() {
    every();
    KNOWN.lock().unwrap().reserve(64);
    UNKNOWN.lock().unwrap().reserve(64);
    let f = MemoryCheck::new("render_page")
        .no_leaks()
        .ignore_callsites_matching("known_cache_insert")
        .assert(|| {
            let page = black_box(vec![0u8; 512]);
            known_cache_insert("page-1"); // 6 bytes, kept by the cache
            page.len()
        });
    assert_eq!(f.retained, Usage::new(1, 6));
    assert_eq!(f.ignored, Usage::new(1, 6));
    assert_eq!(f.retained_checked(), Usage::new(0, 0));
    assert_eq!(
        f.ignore_filters,
        vec!["matching \"known_cache_insert\"".to_string()]
    );
    assert!(f.holding[0].ignored);

    // The same filter does not hide another leak; the report marks what it ignored.
    let failure = MemoryCheck::new("render_page_stray")
        .no_leaks()
        .ignore_callsites_matching("known_cache_insert")
        .run(|| {
            known_cache_insert("page-22");
            stray_keep();
        })
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.retained, Usage::new(2, 7 + 40));
    assert_eq!(f.ignored, Usage::new(1, 7));
    assert_eq!(f.retained_checked(), Usage::new(1, 40));
    assert_eq!(
        failure.violations()[1].measured,
        40,
        "{:?}",
        failure.violations()
    );
    let message = failure.to_string();
    assert!(
        message.contains("retained bytes: 40 B measured, limit 0 B"),
        "{message}"
    );
    assert!(message.contains("7 B in 1 object [ignored]"), "{message}");
    assert!(shows(&message, "at", "stray_keep"), "{message}");
    assert!(
        message.contains("ignored callsites (matching \"known_cache_insert\") held 1 object / 7 B"),
        "{message}"
    );

    // A predicate sees the whole stack.
    let f = MemoryCheck::new("render_page_where")
        .no_leaks()
        .ignore_callsites_where("kept by a cache", |c| {
            c.frames
                .iter()
                .any(|fr| fr.function.ends_with("stray_keep"))
        })
        .assert(stray_keep);
    assert_eq!(f.ignored, Usage::new(1, 40));
}

#[test]
fn filter_patterns_do_not_match_the_tracker_or_the_harness() {
    every();
    static KEEP: Mutex<Vec<Box<u32>>> = Mutex::new(Vec::new());
    KEEP.lock().unwrap().reserve(8);
    // "testing" and "scope" appear in allocscope's and the harness's frames, not the job's.
    // Nor does the name of this test, which its closure's frame carries.
    for pattern in [
        "allocscope",
        "testing::",
        "track_scope",
        "test::run_test",
        "filter_patterns_do_not_match_the_tracker_or_the_harness",
        "{{closure}}",
    ] {
        let failure = MemoryCheck::new("pattern_scope")
            .no_leaks()
            .ignore_callsites_matching(pattern)
            .run(|| KEEP.lock().unwrap().push(black_box(Box::new(1))))
            .unwrap_err();
        assert_eq!(
            failure.figures().unwrap().ignored,
            Usage::new(0, 0),
            "{pattern}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Threads and futures
// ---------------------------------------------------------------------------------------------

static FROM_THREADS: Mutex<Vec<Box<[u8; 200]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn thread_work(i: usize, leak: bool) -> usize {
    let scratch = black_box(vec![i as u8; 1000 + i]);
    if leak && i == 2 {
        FROM_THREADS
            .lock()
            .unwrap()
            .push(black_box(Box::new([9; 200])));
    }
    scratch.len()
}

fn fan_out(leak: bool) -> usize {
    let handles: Vec<_> = (0..4)
        .map(|i| allocscope::spawn(move || thread_work(i, leak)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn jobs_spawning_threads_are_measured_whole() {
    every();
    FROM_THREADS.lock().unwrap().reserve(8);
    let f = MemoryCheck::new("fan_out")
        .no_leaks()
        .assert(|| fan_out(false));
    assert_eq!(f.retained, Usage::new(0, 0));
    // The scratch buffers of the four threads were allocated (and freed) in the run.
    assert!(f.allocated.bytes >= 4 * 1000 + 6, "{f}");

    let failure = MemoryCheck::new("fan_out_leaky")
        .no_leaks()
        .run(|| fan_out(true))
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.retained, Usage::new(1, 200), "{failure}");
    assert!(f.holding[0].callsite.top_function().contains("thread_work"));
    assert!(
        shows(&failure.to_string(), "at", "thread_work"),
        "{failure}"
    );
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    })
}

static FROM_TASKS: Mutex<Vec<Box<[u8; 72]>>> = Mutex::new(Vec::new());

#[inline(never)]
async fn fetch(i: u32, leak: bool) -> usize {
    let buf = black_box(vec![0u8; 512]);
    tokio::task::yield_now().await; // may resume on another worker
    if leak {
        FROM_TASKS
            .lock()
            .unwrap()
            .push(black_box(Box::new([i as u8; 72])));
    }
    buf.len()
}

fn fetch_all(leak: bool) -> usize {
    use allocscope::FutureExt;
    let rt = runtime();
    rt.block_on(async {
        let scope = allocscope::current_scope().expect("inside the check");
        let tasks: Vec<_> = (0..4)
            .map(|i| tokio::spawn(fetch(i, leak && i == 1).in_scope(scope)))
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        // A nested tracked future counts in the check too.
        total + fetch(9, false).track_scope("fetch_nested").await
    })
}

/// Tokio's workers keep a list of tasks that yielded, which grows the first time a task
/// yields on that worker: a per-worker buffer, charged (as any realloc) to the job that made
/// it grow. Which worker runs which task varies, so a warm-up cannot be relied on to fill it:
/// it is a known cache, ignored by callsite.
/// (A file pattern: in release builds the inlined frame is named just `defer`.)
const TOKIO_DEFER: &str = "/src/runtime/scheduler/defer.rs";

#[test]
fn futures_on_a_multi_thread_runtime_are_measured() {
    every();
    FROM_TASKS.lock().unwrap().reserve(8);
    // Warm-up: the runtime's first use on this thread sets up its per-thread state.
    let f = MemoryCheck::new("fetch_all")
        .warmup(1)
        .no_leaks()
        .ignore_callsites_matching(TOKIO_DEFER)
        .assert(|| fetch_all(false));
    assert_eq!(f.retained_checked(), Usage::new(0, 0), "{f}");
    // Five buffers of 512 bytes, on the workers and on this thread.
    assert!(f.allocated.bytes >= 5 * 512, "{f}");

    let failure = MemoryCheck::new("fetch_all_leaky")
        .warmup(1)
        .no_leaks()
        .ignore_callsites_matching(TOKIO_DEFER)
        .run(|| fetch_all(true))
        .unwrap_err();
    let f = failure.figures().unwrap();
    // The warm-up leaked one box too; the measured run is charged only with its own.
    assert!(f.warmup[0].retained_at_finish.bytes >= 72);
    assert_eq!(f.retained_checked(), Usage::new(1, 72), "{failure}");
    let leak: Vec<_> = f.holding.iter().filter(|h| !h.ignored).collect();
    assert_eq!(leak.len(), 1, "{failure}");
    // The box is pushed in `fetch` (an async fn: its body is a closure or `{async_fn#0}`,
    // depending on the build), polled by the task.
    let frames = &leak[0].callsite.frames;
    assert!(
        frames[0]
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("testing_checks.rs")),
        "{failure}"
    );
    assert!(
        frames.iter().any(|f| f.function.contains("fetch")),
        "{failure}"
    );
}

// ---------------------------------------------------------------------------------------------
// Peak and allocated limits
// ---------------------------------------------------------------------------------------------

#[inline(never)]
fn load_all(rows: usize) -> usize {
    let all: Vec<Vec<u8>> = (0..rows).map(|_| black_box(vec![1u8; 1000])).collect();
    all.iter().map(|r| r.len()).sum()
}

#[inline(never)]
fn batched(rows: usize, batch: usize) -> usize {
    let mut total = 0;
    let mut buf: Vec<Vec<u8>> = Vec::with_capacity(batch);
    for _ in 0..rows / batch {
        buf.extend((0..batch).map(|_| black_box(vec![1u8; 1000])));
        total += buf.iter().map(|r| r.len()).sum::<usize>();
        buf.clear();
    }
    total
}

#[test]
fn peak_limit_tells_loading_everything_from_batches() {
    every();
    // 100 rows of 1000 bytes plus the outer vector (100 * 24 bytes).
    let failure = MemoryCheck::new("load_all")
        .max_peak_bytes(20_000)
        .no_leaks()
        .run(|| load_all(100))
        .unwrap_err();
    let f = failure.figures().unwrap();
    assert_eq!(f.peak_bytes, 100 * 1000 + 100 * 24);
    assert_eq!(f.allocated, Usage::new(101, 100 * 1000 + 100 * 24));
    assert_eq!(
        failure.violations(),
        &[allocscope::testing::Violation {
            limit: Limit::PeakBytes,
            max: 20_000,
            measured: 102_400
        }]
    );
    assert!(failure
        .to_string()
        .contains("peak bytes: 102,400 B (100 KiB) measured, limit 20,000 B (19.5 KiB)"));

    // Batches of 10: the peak is one batch plus the batch vector.
    let f = MemoryCheck::new("batched")
        .max_peak_bytes(20_000)
        .no_leaks()
        .assert(|| batched(100, 10));
    assert_eq!(f.peak_bytes, 10 * 1000 + 10 * 24);
    assert_eq!(f.allocated, Usage::new(101, 100 * 1000 + 10 * 24));
}

#[test]
fn peak_counts_blocks_freed_on_other_threads() {
    every();
    // A buffer handed to another thread and freed there was live before: the peak has it.
    let f = MemoryCheck::new("hand_off").no_leaks().assert(|| {
        let buf = black_box(vec![1u8; 10_000]);
        std::thread::spawn(move || drop(buf)).join().unwrap();
    });
    assert!(f.peak_bytes >= 10_000, "{f}");
    // Each of four threads has 10,000 bytes live at some point.
    let f = MemoryCheck::new("four_threads").no_leaks().assert(|| {
        let handles: Vec<_> = (0..4)
            .map(|_| allocscope::spawn(|| black_box(vec![1u8; 10_000]).len()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert!(f.peak_bytes >= 10_000, "{f}");
    let failure = MemoryCheck::new("four_threads")
        .max_peak_bytes(9_999)
        .run(|| allocscope::spawn(|| black_box(vec![1u8; 10_000]).len()).join())
        .unwrap_err();
    assert_eq!(failure.violations()[0].limit, Limit::PeakBytes);
}

#[test]
fn allocated_limits_count_every_block() {
    every();
    let job = || (0..50u64).map(|i| *black_box(Box::new(i))).sum::<u64>();
    let f = MemoryCheck::new("concat").no_leaks().assert(job);
    assert_eq!(f.allocated, Usage::new(50, 400));
    assert_eq!(f.peak_bytes, 8);
    let failure = MemoryCheck::new("concat")
        .max_allocated_objects(49)
        .max_allocated_bytes(f.allocated.bytes)
        .run(job)
        .unwrap_err();
    assert_eq!(
        failure.violations(),
        &[allocscope::testing::Violation {
            limit: Limit::AllocatedObjects,
            max: 49,
            measured: 50
        }]
    );
    assert!(failure
        .to_string()
        .contains("allocated objects: 50 measured, limit 49"));
}

// ---------------------------------------------------------------------------------------------
// Check slots: bounded job names, never mixed
// ---------------------------------------------------------------------------------------------

#[test]
fn a_clean_check_reuses_its_job_name() {
    every();
    let mut jobs = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let f = MemoryCheck::new("reuse_clean")
            .no_leaks()
            .assert(|| black_box(vec![0u8; 10]));
        jobs.insert(f.job);
    }
    assert_eq!(
        jobs.into_iter().collect::<Vec<_>>(),
        ["reuse_clean [check 1]"]
    );
    let report = allocscope::report();
    assert_eq!(report.job("reuse_clean [check 1]").unwrap().runs, 20);
}

#[test]
fn checks_holding_memory_get_their_own_callsites_and_stay_bounded() {
    every();
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(100);
    let mut jobs = std::collections::BTreeSet::new();
    for i in 0..30usize {
        let f = MemoryCheck::new("reuse_held")
            .run(|| keep_k_of_n(1, 1, 100 + i, &mut kept))
            .unwrap();
        // Each check sees only its own memory, also when it reuses a job name whose earlier
        // runs still hold theirs.
        assert_eq!(f.retained, Usage::new(1, 100 + i as u64), "run {i}");
        let held: Vec<_> = f.holding.iter().map(|h| h.callsite.retained).collect();
        assert_eq!(held, [Usage::new(1, 100 + i as u64)], "run {i}: {f:?}");
        jobs.insert(f.job);
    }
    assert_eq!(jobs.len(), 8, "{jobs:?}");
    // Once their memory is freed, the slots are reused without subtracting anything.
    drop(kept);
    let f = MemoryCheck::new("reuse_held").no_leaks().assert(|| ());
    assert!(f.notes.is_empty(), "{:?}", f.notes);
}

#[test]
fn concurrent_checks_of_one_name_get_distinct_jobs() {
    every();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4usize)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::with_capacity(1);
                MemoryCheck::new("same_name")
                    .run(|| {
                        barrier.wait(); // all four runs are active at once
                        keep_k_of_n(1, 1, 10 * (t + 1), &mut kept)
                    })
                    .unwrap()
            })
        })
        .collect();
    let mut jobs = std::collections::BTreeSet::new();
    for (t, h) in handles.into_iter().enumerate() {
        let f = h.join().unwrap();
        assert_eq!(f.retained, Usage::new(1, 10 * (t as u64 + 1)));
        assert_eq!(f.holding.len(), 1);
        assert_eq!(f.holding[0].callsite.retained, f.retained);
        jobs.insert(f.job);
    }
    assert_eq!(jobs.len(), 4);
}

#[test]
fn a_panicking_job_propagates_its_panic() {
    every();
    let result = std::panic::catch_unwind(|| {
        MemoryCheck::new("panics")
            .no_leaks()
            .run(|| -> () { panic!("job failed") })
    });
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"job failed"));
    // The next check of that name runs normally.
    let f = MemoryCheck::new("panics").no_leaks().assert(|| ());
    assert_eq!(f.retained, Usage::new(0, 0));
}

#[test]
fn failures_without_limits_never_happen() {
    every();
    let mut kept = Vec::with_capacity(1);
    let f = MemoryCheck::new("measure_only")
        .run(|| keep_k_of_n(3, 1, 64, &mut kept))
        .unwrap();
    assert_eq!(f.retained, Usage::new(1, 64));
    assert_eq!(
        f.to_string(),
        "allocated 3 objects / 192 B, peak 128 B, retained 1 object / 64 B"
    );
    assert!(matches!(
        MemoryCheck::new("measure_only")
            .no_leaks()
            .run(|| keep_k_of_n(3, 1, 64, &mut kept)),
        Err(CheckFailure::Exceeded { .. })
    ));
}
