//! Retained memory split by the run that allocated it (`JobReport::retained_by_run` and
//! `retained_older`): a leaking, a replacing and a warming job, exact per run, after the window
//! slides, under threads with blocks freed on other threads, outside the job and by later
//! runs; the ledger's trend verdicts; `MemoryCheck::no_retention_older_than`.

use std::sync::Mutex;

use allocscope::testing::MemoryCheck;
use allocscope::{report, track_scope, JobReport, TrackingAllocator, TrendKind, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// One object: 40 bytes.
type Obj = Box<[u8; 40]>;
const OBJ: u64 = 40;

fn obj() -> Obj {
    Box::new([7u8; 40])
}

/// A store whose buffer is allocated outside every job, so that only the objects count.
fn store(capacity: usize) -> Mutex<Vec<Obj>> {
    Mutex::new(Vec::with_capacity(capacity))
}

fn job(name: &str) -> JobReport {
    report().job(name).cloned().expect(name)
}

/// `retained_by_run` + `retained_older` = `retained`, exactly.
fn assert_sums(j: &JobReport) {
    let (objects, bytes) = j.retained_by_run.iter().fold((0, 0), |(o, b), r| {
        (o + r.retained.objects, b + r.retained.bytes)
    });
    assert_eq!(
        Usage::new(
            objects + j.retained_older.objects,
            bytes + j.retained_older.bytes
        ),
        j.retained,
        "{}: {:?} + {:?}",
        j.name,
        j.retained_by_run,
        j.retained_older
    );
    let runs: Vec<u64> = j.retained_by_run.iter().map(|r| r.run).collect();
    assert!(
        runs.windows(2).all(|w| w[0] < w[1]),
        "newest last: {runs:?}"
    );
}

fn runs_of(j: &JobReport) -> Vec<(u64, Usage)> {
    j.retained_by_run
        .iter()
        .map(|r| (r.run, r.retained))
        .collect()
}

#[test]
fn leaking_replacing_and_warming_jobs_are_told_apart() {
    let leaked = store(4000);
    let latest = store(20);
    let warm = store(400);
    let run_all = |from: u64, to: u64| {
        for run in from..=to {
            track_scope("rbr leaker", || {
                let mut l = leaked.lock().unwrap();
                l.extend((0..10).map(|_| obj()));
            });
            track_scope("rbr replacer", || {
                let mut l = latest.lock().unwrap();
                l.clear(); // the previous run's 10 objects
                l.extend((0..10).map(|_| obj()));
            });
            track_scope("rbr warmer", || {
                if run <= 3 {
                    warm.lock().unwrap().extend((0..100).map(|_| obj()));
                }
                std::hint::black_box(vec![0u8; 256]);
            });
        }
    };
    run_all(1, 20);
    let ten = Usage::new(10, 10 * OBJ);

    let leaker = job("rbr leaker");
    assert_sums(&leaker);
    assert_eq!(
        runs_of(&leaker),
        (1..=20).map(|r| (r, ten)).collect::<Vec<_>>()
    );
    assert_eq!(leaker.retained_older, Usage::default());
    assert_eq!(leaker.trend.kind, TrendKind::Leaking);

    let replacer = job("rbr replacer");
    assert_sums(&replacer);
    assert_eq!(runs_of(&replacer), vec![(20, ten)]);
    assert_eq!(replacer.trend.kind, TrendKind::Replaced);

    let warmer = job("rbr warmer");
    assert_sums(&warmer);
    let hundred = Usage::new(100, 100 * OBJ);
    assert_eq!(
        runs_of(&warmer),
        vec![(1, hundred), (2, hundred), (3, hundred)]
    );
    assert!(
        !matches!(warmer.trend.kind, TrendKind::Leaking | TrendKind::Replaced),
        "{:?}",
        warmer.trend
    );

    // 200 runs: the window keeps the last 64, the older bucket grows exactly.
    run_all(21, 200);
    let leaker = job("rbr leaker");
    assert_sums(&leaker);
    assert_eq!(
        runs_of(&leaker),
        (137..=200).map(|r| (r, ten)).collect::<Vec<_>>()
    );
    assert_eq!(leaker.retained_older, Usage::new(136 * 10, 136 * 10 * OBJ));
    assert_eq!(leaker.trend.kind, TrendKind::Leaking);
    let replacer = job("rbr replacer");
    assert_sums(&replacer);
    assert_eq!(runs_of(&replacer), vec![(200, ten)]);
    assert_eq!(replacer.retained_older, Usage::default());
    let warmer = job("rbr warmer");
    assert_sums(&warmer);
    assert!(warmer.retained_by_run.is_empty());
    assert!(report()
        .to_html()
        .contains("title=\"older runs: 11.7 KiB in 300 objects\""));
    assert_eq!(warmer.retained_older, Usage::new(300, 300 * OBJ));

    // Frees outside the job, long after: charged back to each run, older ones to the older
    // bucket.
    {
        let mut l = leaked.lock().unwrap();
        l.drain(..5); // run 1's first five
        let n = l.len();
        l.truncate(n - 3); // three of run 200's
    }
    let leaker = job("rbr leaker");
    assert_sums(&leaker);
    assert_eq!(
        leaker.retained_by_run.last().unwrap().retained,
        Usage::new(7, 7 * OBJ)
    );
    assert_eq!(leaker.retained_older, Usage::new(1355, 1355 * OBJ));
    leaked.lock().unwrap().clear();
    latest.lock().unwrap().clear();
    warm.lock().unwrap().clear();
    for name in ["rbr leaker", "rbr replacer", "rbr warmer"] {
        let j = job(name);
        assert_sums(&j);
        assert_eq!(j.retained, Usage::default(), "{name}");
        assert!(j.retained_by_run.is_empty());
    }
}

/// Runs on four threads at once, each keeping objects that are freed later on other threads
/// (outside any job) or by later runs on yet another thread: every run's figure is exact.
#[test]
fn exact_under_threads_with_frees_elsewhere() {
    const THREADS: usize = 4;
    const RUNS: usize = 12;
    let kept: Mutex<Vec<(u64, Vec<Obj>)>> = Mutex::new(Vec::with_capacity(THREADS * RUNS));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let kept = &kept;
            s.spawn(move || {
                for i in 0..RUNS {
                    // (t + i) % 3 + 1 objects kept per run; the rest freed in the run.
                    let keep = (t + i) % 3 + 1;
                    let (objs, run) = allocscope::track_scope_run("rbr threads", || {
                        let v: Vec<Obj> = (0..keep + 2).map(|_| obj()).collect();
                        let mut v = v;
                        v.truncate(keep);
                        v.shrink_to_fit();
                        v
                    });
                    kept.lock().unwrap().push((run.run, objs));
                }
            });
        }
    });
    // Each run keeps its objects plus its Vec's buffer (keep × 8 bytes).
    let mut expected: Vec<(u64, Usage)> = kept
        .lock()
        .unwrap()
        .iter()
        .map(|(run, v)| {
            let n = v.len() as u64;
            (*run, Usage::new(n + 1, n * OBJ + n * 8))
        })
        .collect();
    expected.sort_by_key(|e| e.0);
    let j = job("rbr threads");
    assert_sums(&j);
    assert_eq!(runs_of(&j), expected);

    // Free every other run's objects on other threads, outside any job.
    let mut all = std::mem::take(&mut *kept.lock().unwrap());
    all.sort_by_key(|e| e.0);
    let (freed, stay): (Vec<_>, Vec<_>) = all.into_iter().partition(|(run, _)| run % 2 == 0);
    let mut freed = freed;
    std::thread::scope(|s| {
        while !freed.is_empty() {
            let chunk: Vec<(u64, Vec<Obj>)> = freed.drain(..freed.len().min(5)).collect();
            s.spawn(move || drop(chunk));
        }
    });
    let j = job("rbr threads");
    assert_sums(&j);
    let odd: Vec<(u64, Usage)> = expected.into_iter().filter(|(r, _)| r % 2 == 1).collect();
    assert_eq!(runs_of(&j), odd);
    // A later run of the same job frees the rest, on another thread.
    std::thread::scope(|s| {
        s.spawn(|| allocscope::track_scope("rbr threads", || drop(stay)));
    });
    let j = job("rbr threads");
    assert_sums(&j);
    assert_eq!(j.retained, Usage::default());
    assert!(j.retained_by_run.is_empty(), "{:?}", j.retained_by_run);
}

/// A nested job's blocks are charged to the enclosing job's run too, also when freed after
/// both finished.
#[test]
fn nested_runs_charge_the_enclosing_run() {
    let keep = store(100);
    for _ in 0..3 {
        track_scope("rbr outer", || {
            track_scope("rbr inner", || keep.lock().unwrap().push(obj()));
            keep.lock().unwrap().push(obj());
        });
    }
    let outer = job("rbr outer");
    assert_sums(&outer);
    let two = Usage::new(2, 2 * OBJ);
    assert_eq!(runs_of(&outer), vec![(1, two), (2, two), (3, two)]);
    // Free run 2's inner object: both jobs' run 2 lose it.
    drop(keep.lock().unwrap().remove(2));
    let outer = job("rbr outer");
    let inner = job("rbr inner");
    assert_sums(&outer);
    assert_sums(&inner);
    assert_eq!(runs_of(&outer)[1], (2, Usage::new(1, OBJ)));
    assert_eq!(
        runs_of(&inner),
        vec![(1, Usage::new(1, OBJ)), (3, Usage::new(1, OBJ))]
    );
    keep.lock().unwrap().clear();
}

#[test]
fn no_retention_older_than_passes_a_latest_result_and_fails_a_leak() {
    static LATEST: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    MemoryCheck::new("rbr latest")
        .no_retention_older_than(1)
        .assert(|| *LATEST.lock().unwrap() = Some(vec![1u8; 4096]));
    *LATEST.lock().unwrap() = None;

    static LEAK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    LEAK.lock().unwrap().reserve(16);
    let failure = MemoryCheck::new("rbr leak")
        .no_retention_older_than(2)
        .run(|| LEAK.lock().unwrap().push(vec![1u8; 1000]))
        .unwrap_err();
    let text = failure.to_string();
    // Runs 1-3 before the measured run 4, each keeping 1,000 bytes: runs 1 and 2 are two or
    // more runs old.
    assert!(
        text.contains("runs 2 or more runs older than the newest still hold 2,000 B"),
        "{text}"
    );
    assert!(matches!(
        failure,
        allocscope::testing::CheckFailure::OldRunsRetain { runs: 2, .. }
    ));
    LEAK.lock().unwrap().clear();
}

#[test]
fn diff_shows_the_change_per_age() {
    let leaked = store(400);
    let run = |n: usize| {
        for _ in 0..n {
            track_scope("rbr diff leak", || {
                leaked.lock().unwrap().extend((0..10).map(|_| obj()))
            });
        }
    };
    run(20);
    let older = report();
    run(10);
    let newer = report();
    let diff = newer.diff(&older);
    let j = diff
        .jobs
        .iter()
        .find(|j| j.name == "rbr diff leak")
        .unwrap();
    assert!(j.has_ages);
    // Each report's buckets count runs back from its own newest run: only "8+" grows (by the
    // 10 runs that aged past 8), the younger buckets hold the same 400 B per run.
    let bytes: Vec<i128> = j.retained_change_by_age.iter().map(|c| c.bytes).collect();
    assert_eq!(bytes, vec![0, 0, 0, 0, 10 * 400]);
    let text = diff.to_text();
    assert!(
        text.contains("by age of run (runs ago): 8+ +3.9 KiB"),
        "{text}"
    );
    // The HTML page charts the job's runs: one bar per run, older runs grey.
    let html = newer.to_html();
    assert!(
        html.contains("title=\"run 30: 400 B in 10 objects\""),
        "bar of run 30"
    );
    leaked.lock().unwrap().clear();
}

/// A report taken while a run is in progress: the job-level split lists finished runs only
/// (a run has its number when it finishes, in finish order), so the run in progress's blocks
/// are in `retained_older` until it finishes, then in its own entry; the sum stays exact.
#[test]
fn a_run_in_progress_counts_as_older_until_it_finishes() {
    let kept = store(100);
    for _ in 0..2 {
        track_scope("rbr in progress", || kept.lock().unwrap().push(obj()));
    }
    // Barriers (no allocation): the run holds its objects while the report is taken.
    let (held, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    let mid = std::thread::scope(|s| {
        let (kept, held, go) = (&kept, &held, &go);
        s.spawn(move || {
            track_scope("rbr in progress", || {
                let three: Vec<Obj> = (0..3).map(|_| obj()).collect();
                held.wait();
                go.wait();
                kept.lock().unwrap().extend(three);
            })
        });
        held.wait();
        let j = job("rbr in progress");
        go.wait();
        j
    });
    assert_eq!((mid.runs, mid.active_runs), (2, 1));
    assert_eq!(
        runs_of(&mid),
        vec![(1, Usage::new(1, OBJ)), (2, Usage::new(1, OBJ))]
    );
    // The run in progress's 3 objects, plus its Vec's buffer (3 pointers).
    assert_eq!(mid.retained_older, Usage::new(4, 3 * OBJ + 24));
    assert_sums(&mid);
    let after = job("rbr in progress");
    assert_eq!(
        runs_of(&after),
        vec![
            (1, Usage::new(1, OBJ)),
            (2, Usage::new(1, OBJ)),
            (3, Usage::new(3, 3 * OBJ))
        ]
    );
    assert_eq!(after.retained_older, Usage::default());
    assert_sums(&after);
    drop(kept);
}
