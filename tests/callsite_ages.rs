//! Per-callsite retained memory by age of run (`CallsiteReport::retained_by_age`), in
//! every-stack mode: a leaking job whose runs each keep 10 objects from one stack, beside a
//! working set freed within the run; allocations on the job's threads, frees on other
//! threads; the buckets exact after 20 runs, mid-run, after old objects are freed late, and in
//! the flamegraph of old memory.

mod common;

use std::sync::mpsc;
use std::sync::Mutex;

use allocscope::{
    report, track_scope, CallsiteReport, FlameOptions, Report, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// A leaked object: 96 bytes.
type Leak = Box<[u8; 96]>;
/// A working-set object: 200 bytes.
type Work = Box<[u8; 200]>;

#[inline(never)]
fn leak_object() -> Leak {
    Box::new(std::hint::black_box([1u8; 96]))
}

#[inline(never)]
fn working_object() -> Work {
    Box::new(std::hint::black_box([2u8; 200]))
}

const JOB: &str = "ages leaker";
const THREADS: usize = 2;

/// The job's callsites whose top frame is `function`, bucket by bucket (summed over the
/// stacks of the job's threads), with their retained total.
fn buckets(r: &Report, function: &str) -> ([Usage; 6], Usage) {
    let job = r.job(JOB).expect("the job ran");
    let sites: Vec<&CallsiteReport> = job
        .callsites
        .iter()
        .filter(|c| c.frames.iter().any(|f| f.function.contains(function)))
        .collect();
    assert!(!sites.is_empty(), "no callsite of {function}");
    let mut out = [Usage::default(); 6];
    let mut total = Usage::default();
    for c in sites {
        let sum = c
            .retained_by_age
            .iter()
            .fold(Usage::default(), |a, &u| a + u);
        assert_eq!(sum, c.retained, "buckets sum to the callsite's retained");
        assert!(!c.estimated);
        for (o, &u) in out.iter_mut().zip(&c.retained_by_age) {
            *o += u;
        }
        total += c.retained;
    }
    (out, total)
}

fn objects(n: u64, size: u64) -> Usage {
    Usage::new(n, n * size)
}

/// One run: `THREADS` threads carrying the scope each keep 5 leak objects (10 per run) and
/// allocate a working set that a thread outside the job frees, before the run ends.
fn one_run(leaked: &Mutex<Vec<(u64, Leak)>>, run: u64, drain: &mpsc::Sender<Vec<Work>>) {
    track_scope(JOB, || {
        let scope = allocscope::current_scope().expect("in the job");
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    scope.enter(|| {
                        let work: Vec<Work> = (0..20).map(|_| working_object()).collect();
                        let keep: Vec<(u64, Leak)> = (0..5).map(|_| (run, leak_object())).collect();
                        // The working set goes to another thread, which frees it.
                        drain.send(work).unwrap();
                        leaked.lock().unwrap().extend(keep);
                    })
                });
            }
        });
        // Wait until the drain thread freed this run's working sets.
        while drain_pending() > 0 {
            std::thread::yield_now();
        }
    });
}

static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn drain_pending() -> usize {
    PENDING.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn old_retained_memory_is_told_apart_by_stack() {
    common::every();
    let leaked: Mutex<Vec<(u64, Leak)>> = Mutex::new(Vec::with_capacity(1000));
    let (tx, rx) = mpsc::channel::<Vec<Work>>();
    let drainer = std::thread::spawn(move || {
        for work in rx {
            drop(work);
            PENDING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    for run in 1..=20 {
        PENDING.fetch_add(THREADS, std::sync::atomic::Ordering::SeqCst);
        one_run(&leaked, run, &tx);
    }

    // After 20 runs: run 20 is age 0, run 19 age 1, runs 17–18 ages 2–3, 13–16 ages 4–7,
    // 5–12 ages 8–15, 1–4 ages 16+; 10 objects each.
    let r = report();
    let j = r.job(JOB).unwrap();
    assert_eq!(j.runs, 20);
    let (leak, total) = buckets(&r, "leak_object");
    assert_eq!(total, objects(200, 96));
    let want = [1, 1, 2, 4, 8, 4].map(|runs| objects(runs * 10, 96));
    assert_eq!(leak, want, "leak by age {:?}", CallsiteReport::AGE_BUCKETS);
    let (work, total) = buckets(&r, "working_object");
    assert_eq!(total, Usage::default(), "the working set is freed");
    assert_eq!(
        work,
        [Usage::default(); 6],
        "nothing old in the working set"
    );

    // The flamegraph of memory at least 8 runs old has the leak's stack only.
    let old = r.folded(&FlameOptions::job(JOB).min_age(8));
    assert!(old.contains("leak_object"), "{old}");
    assert!(!old.contains("working_object"), "{old}");
    let old_bytes: u64 = old
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(old_bytes, 120 * 96, "runs 1-12: 12 runs x 10 objects");

    // The text report's callsite table says what runs 2 or more runs ago hold, per stack.
    let text = r.to_text();
    assert!(text.contains("2+ RUNS AGO"), "{text}");
    let leak_row = text
        .lines()
        .find(|l| l.contains("leak_object"))
        .unwrap_or_else(|| panic!("no leak_object row in\n{text}"));
    assert!(leak_row.contains("16.9 KiB"), "{leak_row}"); // runs 1-18: 180 x 96 B
                                                          // The HTML report: an age bar per callsite, and the old memory by stack, the leak's only.
    let html = r.to_html();
    let old_table = html
        .split("Held from runs 2 or more runs ago")
        .nth(1)
        .expect("an old-memory table")
        .split("</table>")
        .next()
        .unwrap();
    assert!(old_table.contains("leak_object"), "{old_table}");
    assert!(!old_table.contains("working_object"), "{old_table}");
    assert!(html.contains("class=\"ages\""));

    // Mid-run, from another thread: the run in progress's blocks are age 0, the runs before
    // shift by one; the working set held by the run is young only.
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let mid = std::thread::scope(|s| {
        let leaked = &leaked;
        s.spawn(move || {
            track_scope(JOB, || {
                let work: Vec<Work> = (0..20).map(|_| working_object()).collect();
                let keep: Vec<(u64, Leak)> = (0..10).map(|_| (21, leak_object())).collect();
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                drop(work);
                leaked.lock().unwrap().extend(keep);
            })
        });
        held_rx.recv().unwrap();
        let r = report();
        go_tx.send(()).unwrap();
        r
    });
    let (leak, _) = buckets(&mid, "leak_object");
    // Runs 21 (in progress) and 20 are age 0, 19 age 1, 17–18, 13–16, 5–12, 1–4.
    assert_eq!(leak, [2, 1, 2, 4, 8, 4].map(|runs| objects(runs * 10, 96)));
    let (work, total) = buckets(&mid, "working_object");
    assert_eq!(total, objects(20, 200));
    assert_eq!(
        work[0],
        objects(20, 200),
        "the run in progress's working set"
    );

    // Late frees on another thread, charged back to their run: half of run 2's objects (age
    // 19 now) and all of run 15's (age 6).
    let late: Vec<(u64, Leak)> = {
        let mut l = leaked.lock().unwrap();
        let mut out = Vec::new();
        let mut kept = Vec::new();
        let mut from_two = 0;
        for (run, o) in l.drain(..) {
            if run == 15 || (run == 2 && from_two < 5) {
                from_two += u64::from(run == 2);
                out.push((run, o));
            } else {
                kept.push((run, o));
            }
        }
        *l = kept;
        out
    };
    assert_eq!(late.len(), 15);
    std::thread::spawn(move || drop(late)).join().unwrap();
    let r = report();
    assert_eq!(r.job(JOB).unwrap().runs, 21);
    let (leak, total) = buckets(&r, "leak_object");
    assert_eq!(total, objects(210 - 15, 96));
    // Run 21 age 0, 20 age 1, 18–19, 14–17 (less run 15), 6–13, 1–5 (less 5 of run 2).
    let want = [10, 10, 20, 30, 80, 45].map(|n| objects(n, 96));
    assert_eq!(leak, want);

    drop(tx);
    drainer.join().unwrap();
    drop(leaked);
}

/// The retained memory of a callsite older than the ledger, through the text report's
/// one line per job, and the JSON round trip of the buckets.
#[test]
fn buckets_survive_json_and_show_in_text() {
    common::every();
    let keep = Mutex::new(Vec::new());
    for _ in 0..3 {
        track_scope("ages json", || keep.lock().unwrap().push(leak_object()));
    }
    let r = report();
    let back = Report::from_json(&r.to_json()).unwrap();
    let j = back.job("ages json").unwrap();
    let c = j
        .callsites
        .iter()
        .find(|c| c.frames.iter().any(|f| f.function.contains("leak_object")))
        .unwrap();
    assert_eq!(
        c.retained_by_age,
        [1, 1, 1, 0, 0, 0].map(|n| objects(n, 96)),
        "runs 3, 2, 1: ages 0, 1, 2"
    );
    drop(keep);
}

/// The live endpoint's flamegraph of old memory (`/flamegraph.svg?min_age=N`), and a bad
/// `min_age` refused naming the parameter.
#[cfg(feature = "http")]
#[test]
fn the_live_flamegraph_draws_old_memory() {
    common::every();
    let keep = Mutex::new(Vec::new());
    for _ in 0..3 {
        track_scope("ages live", || keep.lock().unwrap().push(leak_object()));
    }
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.local_addr());
    let svg = ureq::get(&format!("{base}/flamegraph.svg?job=ages%20live&min_age=2"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(svg.contains("allocated 2+ runs ago"), "{svg}");
    assert!(svg.contains("leak_object"), "{svg}");
    match ureq::get(&format!("{base}/flamegraph.svg?min_age=old")).call() {
        Err(ureq::Error::StatusCode(400)) => {}
        other => panic!("expected 400 for min_age=old, got {other:?}"),
    }
    server.shutdown();
    drop(keep);
}
