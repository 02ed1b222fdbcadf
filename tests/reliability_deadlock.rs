//! No deadlock, and exact counts, where an allocator is most likely to hang: reports rendered
//! while other threads allocate with every stack recorded, runs that end while their blocks are
//! being freed elsewhere, threads that die or tear down inside scopes, and thread-local
//! destructors that allocate. Every test runs under a watchdog that aborts the process with a
//! message instead of letting CI hang.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use allocscope::{
    report, track_scope, track_scope_run, FlameOptions, Report, TrackingAllocator, Usage,
};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn reports_render_while_threads_allocate_with_every_stack() {
    let _wd = reliability::watchdog("reports while allocating (Every mode)", 120);
    common::every();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = reliability::Rng::new(t + 7);
                let mut kept: Vec<Vec<u8>> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let name = ["d_render_a", "d_render_b", "d_render_c"][(n % 3) as usize];
                    track_scope(name, || {
                        for _ in 0..50 {
                            let v = vec![0u8; 1 + rng.below(2000) as usize];
                            if rng.below(4) == 0 {
                                kept.push(v);
                            }
                        }
                        if kept.len() > 200 {
                            kept.drain(..100);
                        }
                    });
                    n += 1;
                }
                n
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reports = 0;
    while Instant::now() < deadline || reports < 5 {
        let r = report();
        let json = r.to_json();
        let back = Report::from_json(&json).expect("a report reads back");
        assert_eq!(back.jobs.len(), r.jobs.len());
        let svg = r.flamegraph_svg(&FlameOptions::default()).expect("renders");
        assert!(svg.contains("<svg"));
        let _ = r.to_text();
        reports += 1;
    }
    stop.store(true, Relaxed);
    let runs: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(runs > 0 && reports >= 5, "{runs} runs, {reports} reports");
    let r = report();
    let counted: u64 = ["d_render_a", "d_render_b", "d_render_c"]
        .iter()
        .map(|n| r.job(n).unwrap().runs)
        .sum();
    assert_eq!(counted, runs);
    // Once quiet, a report is exact: every job's retained is what its threads still hold (the
    // workers dropped theirs on exit).
    for n in ["d_render_a", "d_render_b", "d_render_c"] {
        assert_eq!(r.job(n).unwrap().retained, Usage::default(), "{n}");
    }
}

#[test]
#[allow(clippy::vec_box)] // one heap block per element is the point
fn runs_end_while_their_blocks_are_freed_on_another_thread() {
    let _wd = reliability::watchdog("runs ending during remote frees", 120);
    const RUNS: usize = 2_000;
    let (tx, rx) = mpsc::sync_channel::<Vec<Box<[u8; 32]>>>(64);
    let freer = std::thread::spawn(move || {
        let mut freed = 0usize;
        for batch in rx {
            freed += batch.len();
            // Freed one by one while the producer is already in its next run.
            for b in batch {
                drop(black_box(b));
            }
        }
        freed
    });
    let mut allocated = 0usize;
    for i in 0..RUNS {
        let (batch, run) = track_scope_run("d_remote_free", || {
            let n = 1 + i % 20;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Box::new([0u8; 32]));
            }
            v
        });
        // The run's own figures are exact whatever the other thread does meanwhile.
        let n = batch.len() as u64;
        assert_eq!(run.allocated, Usage::new(n + 1, 32 * n + 8 * n));
        assert_eq!(run.retained_at_finish, run.allocated);
        allocated += batch.len();
        tx.send(batch).unwrap();
    }
    drop(tx);
    assert_eq!(freer.join().unwrap(), allocated);
    let j = report().job("d_remote_free").cloned().unwrap();
    assert_eq!(j.runs, RUNS as u64);
    assert_eq!(j.retained, Usage::default(), "every late free charged back");
    assert_eq!(j.allocated.objects, (allocated + RUNS) as u64);
}

/// What the thread-local destructors below did, kept by the test.
static TEARDOWN_ALLOCS: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::vec_box)] // one heap block per element is the point
static TEARDOWN_KEPT: Mutex<Vec<Box<[u8; 48]>>> = Mutex::new(Vec::new());

struct AllocatesOnDrop {
    held: Vec<u8>,
}

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        // Runs during thread teardown, after the thread's scope was left, maybe after the
        // tracker's own per-thread state was released: allocate, free, and run a job.
        let tmp = black_box(vec![1u8; 500]);
        drop(tmp);
        track_scope("d_teardown_job", || {
            let kept = black_box(Box::new([9u8; 48]));
            let tmp = black_box(vec![0u8; 1000]);
            drop(tmp);
            TEARDOWN_KEPT.lock().unwrap().push(kept);
        });
        TEARDOWN_ALLOCS.fetch_add(1, Relaxed);
        black_box(&self.held);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<AllocatesOnDrop>> = const {
        std::cell::RefCell::new(None)
    };
}

#[test]
fn thread_local_destructors_allocate_and_run_jobs_during_teardown() {
    let _wd = reliability::watchdog("thread-local destructors during teardown", 120);
    // Reserve the vector first so pushes from the destructors do not reallocate inside a job.
    TEARDOWN_KEPT.lock().unwrap().reserve(64);
    const THREADS: usize = 16;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                // The thread-local's memory is allocated in a job, freed at thread exit.
                track_scope("d_tls_owner", || {
                    ON_EXIT.with(|s| {
                        *s.borrow_mut() = Some(AllocatesOnDrop {
                            held: vec![0u8; 300],
                        })
                    });
                });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Destructors have run by the time join returns.
    assert_eq!(TEARDOWN_ALLOCS.load(Relaxed), THREADS as u64);
    let r = report();
    let owner = r.job("d_tls_owner").unwrap();
    #[cfg(not(feature = "malloc"))]
    assert_eq!(owner.allocated.bytes, THREADS as u64 * 300);
    // With the `malloc` feature, glibc's entry for the thread-local's destructor (allocated by
    // `__cxa_thread_atexit_impl` when the job first touched it) is the job's too: one more
    // block of the same size per thread, freed at exit like the vector.
    #[cfg(feature = "malloc")]
    {
        assert_eq!(
            owner.allocated.objects,
            2 * THREADS as u64,
            "{:?}",
            owner.allocated
        );
        let extra = owner.allocated.bytes - THREADS as u64 * 300;
        assert!(
            extra > 0 && extra % THREADS as u64 == 0,
            "{:?}",
            owner.allocated
        );
    }
    assert_eq!(
        owner.retained,
        Usage::default(),
        "thread-local memory freed at exit is charged back"
    );
    let td = r.job("d_teardown_job").unwrap();
    assert_eq!(td.runs, THREADS as u64);
    assert_eq!(
        td.allocated,
        Usage::new(2 * THREADS as u64, THREADS as u64 * 1048)
    );
    assert_eq!(td.retained, Usage::new(THREADS as u64, THREADS as u64 * 48));
    TEARDOWN_KEPT.lock().unwrap().clear();
    assert_eq!(
        report().job("d_teardown_job").unwrap().retained,
        Usage::default()
    );
}

#[test]
fn a_thread_that_exits_inside_a_carried_scope_flushes_its_counts() {
    let _wd = reliability::watchdog("thread exit inside a scope", 120);
    // Threads spawned in a scope run in it until they exit; nothing they counted is lost,
    // including blocks still pending in their per-thread counters at exit.
    let kept = track_scope("d_exit_in_scope", || {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                allocscope::spawn(move || {
                    let mut v = Vec::new();
                    for k in 0..100 {
                        let b = black_box(vec![0u8; 10 + k + i]);
                        if k % 10 == 0 {
                            v.push(b);
                        }
                    }
                    v
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let j = report().job("d_exit_in_scope").cloned().unwrap();
    let kept_bytes: u64 = kept.iter().flatten().map(|v| v.len() as u64).sum();
    let kept_objects = kept.iter().flatten().count() as u64;
    // Retained: the kept vectors (and their containers) — at least what the test holds.
    assert!(j.retained.bytes >= kept_bytes, "{j:?}");
    assert!(j.retained.objects >= kept_objects);
    let before = j.retained;
    drop(kept);
    let after = report().job("d_exit_in_scope").cloned().unwrap().retained;
    assert!(before.bytes - after.bytes >= kept_bytes);
    // Once everything is dropped nothing of the vectors remains; what is left is the spawned
    // threads' own bookkeeping (e.g. their names/handles), bounded and not growing per block.
    assert!(after.objects <= 8 * 8, "{after:?}");
}
