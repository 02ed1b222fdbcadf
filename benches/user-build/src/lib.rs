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

/// How the allocscope binary runs one unit of work (a document) as its own run of a job;
/// unset elsewhere (the unit runs plainly).
pub static UNIT: std::sync::OnceLock<fn(&mut dyn FnMut())> = std::sync::OnceLock::new();

/// Runs `f` as one unit of work: a run of the job `doc` under allocscope, plainly otherwise.
pub fn unit(mut f: impl FnMut()) {
    match UNIT.get() {
        Some(run) => run(&mut f),
        None => f(),
    }
}

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
        "serde_values" => |_| m::serde_values(60),
        "serde_pretty" => |_| m::serde_pretty(6),
        "serde_typed" => |_| m::serde_typed(6),
        "serde_values_small" => |_| m::serde_values(6),
        "serde_pretty_small" => |_| m::serde_pretty(1),
        "serde_typed_small" => |_| m::serde_typed(1),
        "serde_docs" => |_| m::serde_docs(4, 10_000),
        "serde_docs_small" => |_| m::serde_docs(2, 2_000),
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

/// The floors every allocscope figure is printed beside:
///
/// * [`HeaderOnly`]: `System` with a header in front of each block, as allocscope lays it out
///   for alignments up to 8 (8 bytes; 16 with the `h16` configuration, the former layout),
///   written on every allocation and read on every free, counting nothing: what the header
///   alone costs (bigger blocks, glibc size classes).
/// * [`CountOnly`]: `System` with per-thread allocation and free counters (objects and bytes,
///   plain thread-local cells) and no header: what counting alone costs.
pub mod floors {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::Cell;
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::alloc::System;

    /// Header bytes for alignments up to 8 (set once by the binary's configuration).
    pub static HEADER: AtomicUsize = AtomicUsize::new(8);

    /// `System` with a header per block and no counting.
    pub struct HeaderOnly;

    fn offset(layout: Layout) -> usize {
        if layout.align() <= 8 {
            HEADER.load(Relaxed)
        } else {
            layout.align().max(16)
        }
    }

    fn wrapped(layout: Layout, off: usize) -> Layout {
        // SAFETY (of the unchecked constructor): the sizes here stay far below isize::MAX in
        // the harness's workloads, and the alignment comes from a valid layout (at least 8).
        unsafe { Layout::from_size_align_unchecked(layout.size() + off, layout.align().max(8)) }
    }

    // SAFETY: delegates to `System` with the enlarged layout and returns `base + off`, aligned
    // to the caller's alignment (off is a multiple of it) with `size` bytes after it.
    unsafe impl GlobalAlloc for HeaderOnly {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let off = offset(layout);
            // SAFETY: non-zero size (includes the header).
            let base = unsafe { System.alloc(wrapped(layout, off)) };
            if base.is_null() {
                return base;
            }
            // SAFETY: the header word lies inside the block, 8-aligned.
            unsafe {
                let user = base.add(off);
                user.sub(8).cast::<u64>().write(layout.size() as u64);
                user
            }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let off = offset(layout);
            // SAFETY: `ptr` came from `alloc` with `layout`.
            unsafe {
                core::hint::black_box(ptr.sub(8).cast::<u64>().read());
                System.dealloc(ptr.sub(off), wrapped(layout, off));
            }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let off = offset(layout);
            // SAFETY: as in `alloc`/`dealloc`; the header offset does not change with the size.
            unsafe {
                core::hint::black_box(ptr.sub(8).cast::<u64>().read());
                let base = System.realloc(ptr.sub(off), wrapped(layout, off), new_size + off);
                if base.is_null() {
                    return base;
                }
                let user = base.add(off);
                user.sub(8).cast::<u64>().write(new_size as u64);
                user
            }
        }
    }

    thread_local! {
        static COUNTS: [Cell<u64>; 4] = const { [const { Cell::new(0) }; 4] };
    }

    fn count(i: usize, bytes: usize) {
        let _ = COUNTS.try_with(|c| {
            c[i].set(c[i].get().wrapping_add(1));
            c[i + 1].set(c[i + 1].get().wrapping_add(bytes as u64));
        });
    }

    /// `System` with per-thread counters and no header.
    pub struct CountOnly;

    // SAFETY: delegates every call to `System` unchanged.
    unsafe impl GlobalAlloc for CountOnly {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(0, layout.size());
            // SAFETY: forwarded as is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(2, layout.size());
            // SAFETY: forwarded as is.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(2, layout.size());
            count(0, new_size);
            // SAFETY: forwarded as is.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}
