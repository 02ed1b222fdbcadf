//! `fork()` from a tracked process: the child allocates, frees and exits, and never hangs —
//! also when the parent's other threads were allocating (with stacks recorded) or registering
//! new jobs at the moment of the fork. A child may also run jobs and build reports when no
//! other thread was inside allocscope's scope bookkeeping at the fork (entering a scope takes
//! registry locks; see RELIABILITY.md, known limits). The parent waits with a timeout and
//! fails if a child hangs.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::{report, track_scope, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// The tests fork one at a time: a child of one test must not inherit another test's
/// threads in the middle of scope bookkeeping.
static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    FORKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for `pid` at most `secs` seconds; returns its exit code, or kills it and fails.
fn wait_child(pid: libc::pid_t, secs: u64, what: &str) -> i32 {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-parameter.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid failed");
        if rc == pid {
            assert!(
                libc::WIFEXITED(status),
                "{what}: child died: status {status}"
            );
            return libc::WEXITSTATUS(status);
        }
        if start.elapsed() > Duration::from_secs(secs) {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaping it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("{what}: the forked child hung (killed after {secs} s)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forks; the child runs `child` and `_exit`s with its result (never returns into the test
/// harness). Returns the child's exit code.
fn fork_and(what: &str, child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `child` (allocation, allocscope calls) and then `_exit`s,
    // without unwinding into the parent's state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child immediately, without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid, 20, what)
}

/// The child's work: allocations of many sizes, a growing vector, formatting, then exit.
fn child_allocates() -> i32 {
    let mut v: Vec<Vec<u8>> = Vec::new();
    for i in 0..2_000usize {
        v.push(vec![i as u8; 1 + (i * 37) % 5000]);
        if i % 3 == 0 {
            v.swap_remove(0);
        }
    }
    let s = format!("{}", v.len());
    black_box(s);
    0
}

#[test]
fn forked_children_allocate_and_exit_while_parent_threads_allocate() {
    let _serial = serial();
    let _wd = reliability::watchdog("fork while allocating", 200);
    common::every();
    let stop = Arc::new(AtomicBool::new(false));
    // Parent threads busy in the allocator (stack capture, interning, counters) and starting
    // runs of existing jobs, so forks land in the middle of all of it.
    let busy: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    track_scope(["f_busy_a", "f_busy_b"][t], || {
                        for k in 0..20 {
                            black_box(vec![0u8; 16 + k * 8]);
                        }
                    });
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..40 {
        assert_eq!(fork_and("child allocating", child_allocates), 0, "fork {i}");
    }
    stop.store(true, Relaxed);
    for h in busy {
        assert!(h.join().unwrap() > 0);
    }
}

#[test]
fn a_forked_child_can_run_jobs_and_report() {
    // No other thread of ours is inside allocscope's bookkeeping at this fork.
    let _serial = serial();
    let _wd = reliability::watchdog("fork and run a job", 120);
    // A job in the child is counted in the child only, exactly.
    let code = fork_and("child job", || {
        let (b, run) =
            allocscope::track_scope_run("f_child_job", || black_box(Box::new([0u8; 100])));
        let r = report();
        let ok = run.allocated == Usage::new(1, 100)
            && r.job("f_child_job").map(|j| j.retained) == Some(Usage::new(1, 100));
        drop(b);
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(code, 0, "the child's job figures were wrong");
    assert!(
        report().job("f_child_job").is_none(),
        "the child's job does not appear in the parent"
    );
}

#[test]
fn a_forked_child_runs_a_job_while_parent_threads_register_new_jobs() {
    let _serial = serial();
    let _wd = reliability::watchdog("fork while registering jobs", 200);
    let stop = Arc::new(AtomicBool::new(false));
    // Parent threads take the registry's locks: new job names, new paths, run slots.
    let busy: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let name = format!("f_reg_{t}_{}", n % 5000);
                    track_scope(&name, || black_box(Box::new(n)));
                    n += 1;
                }
                n
            })
        })
        .collect();
    track_scope("f_child_during", || ());
    let mut codes = Vec::new();
    for _ in 0..60 {
        codes.push(fork_and("child job during registration", || {
            child_allocates();
            // A job known before the fork: entering it takes the registry's locks, which a
            // parent thread may have held at the fork (released for the child by
            // allocscope's fork handlers).
            let (_, run) = allocscope::track_scope_run("f_child_during", || {
                black_box(vec![0u8; 64]);
            });
            i32::from(run.allocated != Usage::new(1, 64))
        }));
    }
    stop.store(true, Relaxed);
    for h in busy {
        h.join().unwrap();
    }
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
}

#[test]
fn a_forked_child_registers_new_job_names_while_parent_threads_read_the_name_index() {
    // The name and path indexes are read (shard read locks) by every scope entry of a known
    // job; a child registering a name it has never seen takes a shard's write lock. Before the
    // fork handlers covered the indexes, a child forked while a parent thread held a read lock
    // waited forever here.
    let _serial = serial();
    let _wd = reliability::watchdog("fork while reading the name index", 200);
    let known: Vec<String> = (0..64).map(|i| format!("f_known_{i}")).collect();
    for name in &known {
        track_scope(name, || ());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            let known = known.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Relaxed) {
                    // Known names and nestings only: lookups, never a registration.
                    track_scope(&known[(n * 7 + t) % known.len()], || {
                        track_scope(&known[n % known.len()], || ());
                    });
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut codes = Vec::new();
    for i in 0..60 {
        codes.push(fork_and("child registering names", move || {
            // Names (and so paths) the parent never registered: every shard gets written.
            let mut bad = 0;
            for k in 0..32 {
                let (_, run) = allocscope::track_scope_run(&format!("f_child_new_{i}_{k}"), || {
                    black_box(vec![0u8; 32]);
                });
                bad += i32::from(run.allocated != Usage::new(1, 32));
            }
            let r = report();
            bad += i32::from(r.job(&format!("f_child_new_{i}_31")).map(|j| j.runs) != Some(1));
            bad
        }));
    }
    stop.store(true, Relaxed);
    for h in readers {
        assert!(h.join().unwrap() > 0);
    }
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
}
