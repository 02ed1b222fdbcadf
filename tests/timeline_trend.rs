//! Trends per job: growing with its per-run growth, saturating, steady, not enough
//! runs; on one thread and with runs interleaved across 4 threads. Each test uses its own job
//! names, so tests running in parallel in this binary do not disturb each other.

use std::hint::black_box;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Mutex;

use allocscope::{report, track_scope, JobReport, TrackingAllocator, TrendKind};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn job(name: &str) -> JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("job {name} missing from report"))
}

/// Keeps exactly 10 KiB more per run (the holder's capacity is reserved up front, outside).
fn leak_10k(store: &Mutex<Vec<Vec<u8>>>) {
    let kept = black_box(vec![7u8; 10 * 1024]);
    let _temp = black_box(vec![0u8; 50_000]); // freed in the run
    store.lock().unwrap().push(kept);
}

/// Fills a 3-entry cache of 64 KiB entries: only the first 3 runs of the job add to it.
fn fill_cache(store: &Mutex<Vec<Vec<u8>>>, run: u64) {
    let _temp = black_box(vec![0u8; 20_000]);
    if run < 3 {
        store.lock().unwrap().push(black_box(vec![1u8; 64 * 1024]));
    }
}

fn steady() {
    let v: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    black_box(v);
}

fn assert_leak(j: &JobReport, runs: u64) {
    // Every run keeps what it allocated: the retained-by-run ledger calls it a leak (the
    // series alone says `growing`); the slope stays the series'.
    assert_eq!(j.trend.kind, TrendKind::Leaking, "{:?}", j.trend);
    let err = (j.trend.bytes_per_run - 10240.0).abs() / 10240.0;
    assert!(
        err <= 0.05,
        "bytes_per_run {} not within 5% of 10 KiB",
        j.trend.bytes_per_run
    );
    assert_eq!(
        j.trend.runs_considered,
        runs - allocscope::timeline::WARMUP_RUNS
    );
}

#[test]
fn leak_of_10_kib_per_run_is_growing() {
    static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(64);
    for _ in 0..30 {
        track_scope("trend_leak", || leak_10k(&KEPT));
    }
    let j = job("trend_leak");
    assert_leak(&j, 30);
    // The run's own figures agree: 10 KiB kept each run.
    assert!(j
        .recent_runs
        .iter()
        .all(|r| r.retained_at_finish.bytes == 10240));
    let text = report().to_text();
    let line = text.lines().find(|l| l.starts_with("trend_leak")).unwrap();
    assert!(line.ends_with("leaking +10.0 KiB/run"), "{line}");
}

#[test]
fn cache_filled_in_three_runs_is_saturating() {
    static CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    CACHE.lock().unwrap().reserve(8);
    for run in 0..30 {
        track_scope("trend_cache", || fill_cache(&CACHE, run));
    }
    let j = job("trend_cache");
    assert_eq!(j.trend.kind, TrendKind::Saturating, "{:?}", j.trend);
    assert_eq!(j.retained.bytes, 3 * 64 * 1024);
    let text = report().to_text();
    let line = text.lines().find(|l| l.starts_with("trend_cache")).unwrap();
    assert!(line.ends_with("saturating"), "{line}");
}

#[test]
fn job_keeping_nothing_is_steady() {
    for _ in 0..30 {
        track_scope("trend_steady", steady);
    }
    let j = job("trend_steady");
    assert_eq!(j.trend.kind, TrendKind::Steady, "{:?}", j.trend);
    assert_eq!(j.trend.bytes_per_run, 0.0);
    let text = report().to_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("trend_steady"))
        .unwrap();
    assert!(line.ends_with("steady"), "{line}");
}

#[test]
fn two_runs_are_not_enough() {
    static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(4);
    for _ in 0..2 {
        track_scope("trend_two", || leak_10k(&KEPT));
    }
    let j = job("trend_two");
    assert_eq!(j.trend.kind, TrendKind::NotEnoughRuns);
    assert_eq!(j.trend.runs_considered, 1);
    let text = report().to_text();
    let line = text.lines().find(|l| l.starts_with("trend_two")).unwrap();
    assert!(line.ends_with(" -"), "{line}");
}

#[test]
fn a_job_that_replaces_last_runs_result_is_not_a_leak() {
    // Each run keeps 10 KiB at finish, and frees the previous run's: its own retained-at-finish
    // says 10 KiB every run, but the job holds 10 KiB in total.
    static LAST: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    for _ in 0..30 {
        track_scope("trend_replace", || {
            let v = black_box(vec![3u8; 10 * 1024]);
            *LAST.lock().unwrap() = Some(v);
        });
    }
    let j = job("trend_replace");
    // Only the newest run holds anything: the ledger says `replaced` (the series: steady).
    assert_eq!(j.trend.kind, TrendKind::Replaced, "{:?}", j.trend);
    assert_eq!(j.retained_by_run.len(), 1);
    assert_eq!(j.retained_by_run[0].run, 30);
}

#[test]
fn interleaved_across_four_threads() {
    static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    static CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    static CACHE_RUNS: AtomicU64 = AtomicU64::new(0);
    KEPT.lock().unwrap().reserve(256);
    CACHE.lock().unwrap().reserve(8);
    // The cache fills in the job's first three runs, one after another: thread 0 runs them,
    // and the other threads start their runs of the job once those finished; from then on all
    // four interleave. (Fills running concurrently could all land before the first run's
    // trend point — nothing left to saturate — or, on a loaded machine, a descheduled fill
    // could land many runs late, which is growth.)
    static FILLED: AtomicU64 = AtomicU64::new(0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for _ in 0..30 {
                    track_scope("mt_leak", || leak_10k(&KEPT));
                    while t != 0 && FILLED.load(Acquire) < 3 {
                        std::thread::yield_now();
                    }
                    track_scope("mt_cache", || {
                        fill_cache(&CACHE, CACHE_RUNS.fetch_add(1, Relaxed))
                    });
                    if t == 0 {
                        FILLED.fetch_add(1, Release);
                    }
                    track_scope("mt_steady", steady);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = report();
    assert_leak(r.job("mt_leak").unwrap(), 120);
    assert_eq!(r.job("mt_cache").unwrap().trend.kind, TrendKind::Saturating);
    assert_eq!(r.job("mt_steady").unwrap().trend.kind, TrendKind::Steady);
}

#[test]
fn sort_by_trend_puts_growing_first() {
    static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    KEPT.lock().unwrap().reserve(16);
    for _ in 0..10 {
        track_scope("sort_leak", || leak_10k(&KEPT));
        track_scope("sort_big_steady", || black_box(vec![0u8; 1 << 20]).len());
    }
    let r = report();
    let text = r.to_text_with(&allocscope::TextOptions {
        sort: allocscope::SortBy::Trend,
        ..Default::default()
    });
    let pos = |name: &str| text.find(&format!("\n{name} ")).unwrap();
    assert!(pos("sort_leak") < pos("sort_big_steady"));
    let by_alloc = r.to_text_with(&allocscope::TextOptions {
        sort: allocscope::SortBy::AllocatedObjects,
        flag_objects_per_run: 1,
        ..Default::default()
    });
    // sort_leak allocates 2 objects per run (+ pushes): above a threshold of 1, flagged.
    assert!(by_alloc.contains("! sort_leak: "), "{by_alloc}");
}

#[test]
fn per_thread_buffers_grown_inside_runs_and_freed_at_exit_read_as_their_row() {
    use std::cell::RefCell;
    use std::sync::Barrier;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    const THREADS: usize = 4;
    // Each thread's buffer grows inside its first three runs (64, 128, 192 KiB), one thread
    // after another, then every thread reuses it: the job holds 4 × 192 KiB between runs
    // while its threads live, and nothing once they exited.
    static TURN: AtomicU64 = AtomicU64::new(0);
    let alive = std::sync::Arc::new(Barrier::new(THREADS + 1));
    let exit = std::sync::Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let (alive, exit) = (alive.clone(), exit.clone());
            std::thread::spawn(move || {
                let run = |grow_to: usize| {
                    track_scope("trend_thread_buffers", || {
                        BUF.with(|b| {
                            let mut b = b.borrow_mut();
                            b.clear();
                            b.reserve_exact(grow_to);
                            b.resize(grow_to, 1);
                            black_box(&*b);
                        })
                    })
                };
                while TURN.load(Acquire) != t {
                    std::thread::yield_now();
                }
                for k in 1..=3 {
                    run(k * 64 * 1024);
                }
                TURN.fetch_add(1, Release);
                while TURN.load(Acquire) != THREADS as u64 {
                    std::thread::yield_now();
                }
                for _ in 0..10 {
                    run(100 * 1024);
                }
                alive.wait();
                exit.wait();
            })
        })
        .collect();
    alive.wait();
    let held = job("trend_thread_buffers");
    // While the threads live: the buffers are held, and the trend says how they got there.
    assert!(
        held.retained.bytes >= THREADS as u64 * 192 * 1024,
        "{held:?}"
    );
    assert_eq!(held.trend.kind, TrendKind::Saturating, "{:?}", held.trend);
    exit.wait();
    for t in threads {
        t.join().unwrap();
    }
    // After the threads exited: nothing held, and the trend does not say otherwise.
    let freed = job("trend_thread_buffers");
    assert_eq!(freed.retained.bytes, 0, "{freed:?}");
    assert_eq!(freed.trend.kind, TrendKind::Steady, "{:?}", freed.trend);
    let text = report().to_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("trend_thread_buffers"))
        .unwrap();
    assert!(line.contains(" 0 B ") && line.ends_with("steady"), "{line}");
}
