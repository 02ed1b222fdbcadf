//! Panics: in a job (caught by the caller), across nested jobs, and in a user's
//! `on_run_finished` hook. None of them may leave a thread in the wrong scope, lose or double a
//! count, or poison the tracker. Each test uses its own job names.

#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Mutex;

use allocscope::{current_scope, report, track_scope, track_scope_run, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Tests that look at the global hook-panic counter run one at a time.
static HOOK_TESTS: Mutex<()> = Mutex::new(());

fn quiet_panics() {
    // The default hook prints every (expected) panic; keep the output readable.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        if !msg.contains("expected test panic") {
            eprintln!("{msg}");
        }
    }));
}

#[test]
fn a_panicking_job_leaves_the_thread_ready_for_the_next_job() {
    quiet_panics();
    for round in 0..50u64 {
        let r = catch_unwind(|| {
            track_scope("p_fail", || {
                let _tmp = black_box(vec![0u8; 100]);
                panic!("expected test panic {round}");
            })
        });
        assert!(r.is_err());
        assert!(current_scope().is_none(), "round {round}: still in a scope");
        // The next job on this thread counts exactly its own allocations.
        let (b, run) = track_scope_run("p_next", || black_box(Box::new([0u8; 40])));
        assert_eq!(run.allocated, Usage::new(1, 40));
        assert_eq!(run.retained_at_finish, Usage::new(1, 40));
        drop(b);
    }
    let r = report();
    let fail = r.job("p_fail").unwrap();
    assert_eq!(
        (fail.runs, fail.panicked_runs, fail.active_runs),
        (50, 50, 0)
    );
    // The vectors were dropped while unwinding, inside the scope. The panic payloads (a
    // String per panic, allocated in the scope) were dropped by `catch_unwind`'s caller.
    assert_eq!(fail.retained, Usage::default());
    let next = r.job("p_next").unwrap();
    assert_eq!((next.runs, next.panicked_runs), (50, 0));
    assert_eq!(next.allocated, Usage::new(50, 50 * 40));
    assert_eq!(next.retained, Usage::default());
}

#[test]
fn a_panic_through_nested_jobs_restores_each_level() {
    quiet_panics();
    let outer_scope = track_scope("p_outer", || {
        let here = current_scope().unwrap();
        let r = catch_unwind(|| {
            track_scope("p_middle", || {
                track_scope("p_inner", || {
                    let _v = black_box(vec![1u8; 10]);
                    panic!("expected test panic (nested)");
                })
            })
        });
        assert!(r.is_err());
        // Back in the outer job, exactly.
        assert_eq!(current_scope(), Some(here));
        assert_eq!(here.job_name(), "p_outer");
        let kept = black_box(Box::new([0u8; 24]));
        (here, kept)
    });
    assert!(current_scope().is_none());
    let r = report();
    for name in ["p_middle", "p_inner"] {
        let j = r.job(name).unwrap();
        assert_eq!((j.runs, j.panicked_runs), (1, 1), "{name}");
        assert_eq!(j.retained, Usage::default(), "{name}");
    }
    let outer = r.job("p_outer").unwrap();
    assert_eq!((outer.runs, outer.panicked_runs), (1, 0));
    // The box kept after the caught panic is the outer job's own.
    assert_eq!(outer.exclusive.retained, Usage::new(1, 24));
    drop(outer_scope);
}

#[test]
fn a_panicking_hook_does_not_poison_the_tracker() {
    let _g = HOOK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panics();
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let before = report().tracker.hook_panics;
    let bad = allocscope::on_run_finished(|run| {
        if run.job == "p_hooked" {
            panic!("expected test panic in a hook");
        }
    });
    let good = allocscope::on_run_finished(|run| {
        if run.job == "p_hooked" {
            // Hooks may allocate and even build a report (no lock is held while they run).
            let r = allocscope::report();
            assert!(r.job("p_hooked").is_some());
            CALLS.fetch_add(1, Relaxed);
        }
    });
    for i in 0..20u64 {
        let (v, run) = track_scope_run("p_hooked", || black_box(vec![0u8; 8 + i as usize]));
        assert_eq!(run.allocated, Usage::new(1, 8 + i));
        assert!(current_scope().is_none());
        drop(v);
    }
    // Every run reached the hook after the panicking one.
    assert_eq!(CALLS.load(Relaxed), 20);
    let r = report();
    assert_eq!(r.tracker.hook_panics - before, 20);
    let j = r.job("p_hooked").unwrap();
    assert_eq!((j.runs, j.panicked_runs), (20, 0));
    assert_eq!(j.retained, Usage::default());
    assert!(allocscope::remove_hook(bad));
    assert!(!allocscope::remove_hook(bad), "removed once");
    // After removal, runs and the remaining hook work, and nothing panics any more.
    track_scope("p_hooked", || black_box(Box::new(1u8)));
    assert_eq!(CALLS.load(Relaxed), 21);
    assert_eq!(report().tracker.hook_panics - before, 20);
    assert!(allocscope::remove_hook(good));
}

#[test]
fn hooks_may_register_and_remove_hooks_and_run_jobs() {
    let _g = HOOK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let _wd = reliability::watchdog("hooks re-entering the hook table", 60);
    static INNER_RUNS: AtomicU64 = AtomicU64::new(0);
    let id = allocscope::on_run_finished(|run| {
        if run.job == "p_reentrant" {
            // Register and remove a hook, and run a (different) job, from inside a hook.
            let h = allocscope::on_run_finished(|_| {});
            assert!(allocscope::remove_hook(h));
            track_scope("p_from_hook", || black_box(Box::new(0u64)));
            INNER_RUNS.fetch_add(1, Relaxed);
        }
    });
    for _ in 0..10 {
        track_scope("p_reentrant", || black_box(vec![0u8; 3]).len());
    }
    assert!(allocscope::remove_hook(id));
    assert_eq!(INNER_RUNS.load(Relaxed), 10);
    let r = report();
    assert_eq!(r.job("p_from_hook").unwrap().runs, 10);
    assert_eq!(r.job("p_reentrant").unwrap().runs, 10);
    // The hook runs after the run's scope closed: what it allocates is not the run's.
    assert_eq!(r.job("p_reentrant").unwrap().allocated, Usage::new(10, 30));
}

#[test]
fn a_thread_that_dies_by_panic_inside_a_scope_is_counted() {
    quiet_panics();
    let h = std::thread::spawn(|| {
        track_scope("p_thread_dies", || {
            let _v = black_box(vec![0u8; 77]);
            panic!("expected test panic: thread dies in scope");
        })
    });
    assert!(h.join().is_err());
    let j = report().job("p_thread_dies").cloned().unwrap();
    assert_eq!((j.runs, j.panicked_runs, j.active_runs), (1, 1, 0));
    assert_eq!(j.retained, Usage::default(), "the unwound vector was freed");
}
