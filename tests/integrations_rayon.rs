//! rayon tasks and scopes: `ScopeHandle::wrap` and `allocscope::rayon::{join, spawn}` charge a
//! task to the scope that created it, whichever worker runs it; without them a worker blocked
//! in `join` charges other jobs' tasks to its own job (shown deterministically below).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use allocscope::{current_scope, report, track_scope, TrackingAllocator, Usage};
use rayon::prelude::*;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const ITEMS: u64 = 10_000;

fn job(name: &str) -> allocscope::JobReport {
    report()
        .job(name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name:?}"))
}

fn allocated(name: &str) -> Usage {
    report().job(name).map_or(Usage::default(), |j| j.allocated)
}

/// Spins until `flag` is set; fails (instead of hanging) if the schedule never comes.
fn wait_for(flag: &AtomicBool, what: &str) {
    let start = Instant::now();
    while !flag.load(SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::yield_now();
    }
}

/// The work of one item: one block of 16 bytes, freed at once.
fn item(x: &u64) -> usize {
    black_box(vec![*x; 2]).len()
}

#[test]
fn wrap_charges_two_concurrent_par_iters_exactly() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let items: Vec<u64> = (0..ITEMS).collect();
    let rounds = 3;
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for name in ["rayon_a", "rayon_b"] {
            let (pool, items, barrier) = (&pool, &items, &barrier);
            s.spawn(move || {
                // This thread's first call into the pool sets up its wait latch: not a job's.
                pool.install(|| ());
                for _ in 0..rounds {
                    barrier.wait(); // both jobs' par_iters run on the pool at the same time
                    track_scope(name, || {
                        let h = current_scope().unwrap();
                        let n: usize = pool.install(|| items.par_iter().map(h.wrap(item)).sum());
                        assert_eq!(n, 2 * ITEMS as usize);
                    });
                }
            });
        }
    });
    for name in ["rayon_a", "rayon_b"] {
        let j = job(name);
        assert_eq!(j.runs, rounds);
        assert_eq!(j.allocated, Usage::new(rounds * ITEMS, rounds * ITEMS * 16));
        assert_eq!(j.retained, Usage::new(0, 0));
    }
}

/// Job A runs on worker 1 and calls `join`; its second half is stolen by worker 2, which
/// then stays busy until job B is done. Worker 1, blocked in `join` waiting for that half,
/// takes B's `install` job from the pool's queue and runs all of B's par_iter — inside A's
/// scope unless B's closure enters B's scope.
fn blocked_joiner_runs_another_job(a: &'static str, b: &'static str, wrap: bool) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| ()); // the test thread's latch
    let items: Vec<u64> = (0..ITEMS).collect();
    static RIGHT_STARTED: AtomicBool = AtomicBool::new(false);
    static B_DONE: AtomicBool = AtomicBool::new(false);
    static A_DONE: AtomicBool = AtomicBool::new(false);
    for f in [&RIGHT_STARTED, &B_DONE, &A_DONE] {
        f.store(false, SeqCst);
    }
    pool.spawn(move || {
        track_scope(a, || {
            rayon::join(
                || wait_for(&RIGHT_STARTED, "the other worker to steal A's second half"),
                || {
                    RIGHT_STARTED.store(true, SeqCst);
                    wait_for(&B_DONE, "job B");
                },
            )
        });
        A_DONE.store(true, SeqCst);
    });
    wait_for(&RIGHT_STARTED, "job A to start");
    let n = track_scope(b, || {
        let h = current_scope().unwrap();
        pool.install(|| {
            if wrap {
                items.par_iter().map(h.wrap(item)).sum::<usize>()
            } else {
                items.par_iter().map(item).sum::<usize>()
            }
        })
    });
    assert_eq!(n, 2 * ITEMS as usize);
    B_DONE.store(true, SeqCst);
    wait_for(&A_DONE, "job A to finish");
}

#[test]
fn without_wrap_a_worker_blocked_in_join_charges_another_job_to_its_own() {
    blocked_joiner_runs_another_job("rayon_joiner", "rayon_victim", false);
    // All of B's 10,000 blocks went to A, none to B: the pitfall.
    assert_eq!(allocated("rayon_joiner"), Usage::new(ITEMS, ITEMS * 16));
    assert_eq!(allocated("rayon_victim"), Usage::new(0, 0));

    blocked_joiner_runs_another_job("rayon_joiner_wrapped", "rayon_victim_wrapped", true);
    assert_eq!(allocated("rayon_joiner_wrapped"), Usage::new(0, 0));
    assert_eq!(
        allocated("rayon_victim_wrapped"),
        Usage::new(ITEMS, ITEMS * 16)
    );
}

#[test]
fn scope_join_and_spawn_carry_the_callers_scope_to_a_thief() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (name, helper) in [("rayon_plain_join", false), ("rayon_scope_join", true)] {
        let started = AtomicBool::new(false);
        let left = || {
            wait_for(&started, "the other worker to steal the second half");
            black_box(Box::new([0u8; 10]));
        };
        // Runs on the other worker (the first is busy in `left` until it starts).
        let right = || {
            started.store(true, SeqCst);
            black_box(Box::new([0u8; 1000]));
        };
        pool.install(|| {
            track_scope(name, || {
                if helper {
                    allocscope::rayon::join(left, right);
                } else {
                    rayon::join(left, right);
                }
            })
        });
    }
    assert_eq!(allocated("rayon_plain_join"), Usage::new(1, 10));
    assert_eq!(allocated("rayon_scope_join"), Usage::new(2, 1010));

    static SPAWNED_DONE: AtomicBool = AtomicBool::new(false);
    pool.install(|| {
        track_scope("rayon_spawn", || {
            allocscope::rayon::spawn(|| {
                black_box(Box::new([0u8; 64]));
                SPAWNED_DONE.store(true, SeqCst);
            })
        })
    });
    wait_for(&SPAWNED_DONE, "the spawned task");
    // Two blocks: rayon's boxed task (allocated by `spawn`, in the scope) and the task's own.
    let j = job("rayon_spawn");
    assert_eq!(j.allocated.objects, 2);
    assert!(j.allocated.bytes >= 64);
}

/// A binary tree of `allocscope::rayon::join`s, one 16-byte allocation per leaf.
fn tree(depth: u32) -> usize {
    if depth == 0 {
        return black_box(Box::new([1u8; 16])).len() / 16;
    }
    let (a, b) = allocscope::rayon::join(|| tree(depth - 1), || tree(depth - 1));
    a + b
}

/// `pool.install` moves the closure to a worker, out of the caller's scope: through
/// `allocscope::rayon::install`, all 4,096 leaf allocations of a tree of joins are charged to
/// the caller's job (plain `pool.install` charged none of them).
#[test]
fn install_carries_the_scope_into_the_pool() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for round in 0..3 {
        let name = format!("install_tree_{round}");
        let leaves = track_scope(&name, || {
            allocscope::rayon::install(&pool, || {
                assert!(current_scope().is_some(), "no scope inside install");
                tree(12)
            })
        });
        assert_eq!(leaves, 4096);
        let a = job(&name);
        assert_eq!(a.runs, 1);
        // Every leaf's box, plus nothing else is required: at least the 4,096 leaves.
        assert!(
            a.allocated.objects >= 4096,
            "round {round}: {} objects charged to {name}",
            a.allocated.objects
        );
    }
}
