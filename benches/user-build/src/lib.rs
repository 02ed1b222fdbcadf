//! Shared by the user-build harness binaries: the repository's workloads
//! (`benches/workloads/mod.rs`, included as is), two more (`more_workloads`), and the child
//! protocol every allocator binary speaks.
//!
//! A child is run as `<binary> <workload> <config> [reps]`: it runs the workload once untimed
//! (warm-up), then `reps` times (default 1), and prints one line
//! `UB <median wall ms> <median CPU ms> <peak RSS KiB>` (CPU time of the whole process: all
//! threads, user + system; peak RSS from `getrusage`). The `UB` prefix lets the driver find the
//! line among heaptrack's own output.

#[path = "../../workloads/mod.rs"]
pub mod workloads;

pub mod more_workloads;

use std::thread::JoinHandle;

/// How a workload is started: the function to run and the size.
pub fn find(name: &str) -> Option<fn(workloads::Spawner) -> u64> {
    use more_workloads as m;
    use workloads as w;
    Some(match name {
        "churn" => |_| w::churn(w::CHURN_ITERS),
        "job" => |_| w::job(w::JOB_INTS),
        "threads" => |s| w::threads(2, w::THREAD_MSGS, s),
        "serde" => |_| m::serde_doc(m::SERDE_RECORDS),
        "churn_small" => |_| w::churn(w::CHURN_ITERS / w::SMALL),
        "job_small" => |_| w::job(w::JOB_INTS / w::SMALL),
        "threads_small" => |s| w::threads(2, w::THREAD_MSGS / w::SMALL, s),
        "serde_small" => |_| m::serde_doc(m::SERDE_RECORDS / w::SMALL),
        "objects16" => |_| m::live_objects::<2>(m::LIVE_OBJECTS),
        "objects24" => |_| m::live_objects::<3>(m::LIVE_OBJECTS),
        "objects32" => |_| m::live_objects::<4>(m::LIVE_OBJECTS),
        _ => return None,
    })
}

/// Peak resident set size of this process so far, in KiB.
pub fn peak_rss_kib() -> u64 {
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is a valid `who`.
    unsafe {
        let mut ru: libc::rusage = core::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0;
        }
        ru.ru_maxrss as u64
    }
}

/// The child side: parses `<workload> <config> [reps]`, lets `setup` apply the configuration
/// (returning whether to run inside a job scope, or an error for an unknown one), runs and
/// prints the `UB` line. `scope` runs one repetition inside a scope (allocscope only).
pub fn child_main(
    setup: impl FnOnce(&str) -> Result<bool, String>,
    scope: fn(&dyn Fn() -> u64) -> u64,
    scoped_spawn: workloads::Spawner,
) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("churn", String::as_str);
    let config = args.get(1).map_or("", String::as_str);
    let reps: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let Some(run) = find(name) else {
        eprintln!("unknown workload {name:?}");
        std::process::exit(2);
    };
    let scoped = match setup(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let once = || {
        if scoped {
            scope(&|| run(scoped_spawn))
        } else {
            run(workloads::std_spawn)
        }
    };
    // Live-object workloads measure memory, not time: one run, no warm-up.
    let warm = !name.starts_with("objects");
    if warm {
        std::hint::black_box(once());
    }
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..reps {
        let (start, cpu_start) = (std::time::Instant::now(), workloads::process_cpu_time());
        std::hint::black_box(once());
        wall.push(start.elapsed().as_secs_f64() * 1e3);
        cpu.push((workloads::process_cpu_time() - cpu_start).as_secs_f64() * 1e3);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "UB {:.3} {:.3} {}",
        wall[reps / 2],
        cpu[reps / 2],
        peak_rss_kib()
    );
}

/// `std::thread::spawn` with the `Spawner` signature, for binaries without scopes.
pub fn plain_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64> {
    std::thread::spawn(f)
}

/// Runs `f` without a scope (binaries other than allocscope's).
pub fn no_scope(f: &dyn Fn() -> u64) -> u64 {
    f()
}
