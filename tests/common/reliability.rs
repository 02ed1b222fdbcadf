//! Shared pieces of the reliability tests (`tests/reliability_*.rs`, `tests/stress.rs`):
//! a watchdog that turns a deadlock into a failure, a tiny RNG, RSS, and the mixed
//! alloc/realloc/free workload with its independent ledger.
//!
//! Included with `#[path = "common/reliability.rs"] mod reliability;`; not every binary
//! uses every item.
#![allow(dead_code)]

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::{report, track_scope_run, StackMode, Usage};

/// Aborts the process with a message if not dropped within `secs` seconds, so a deadlock
/// fails the test run instead of hanging CI.
/// Dropping it stops the watchdog thread and waits for it to exit (so its own memory is freed
/// by then, which whole-process checks rely on).
pub struct Watchdog(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

/// `RELIABILITY_WATCHDOG_SCALE=N` multiplies every limit (for runs under valgrind).
pub fn watchdog(what: &'static str, secs: u64) -> Watchdog {
    let scale: u64 = std::env::var("RELIABILITY_WATCHDOG_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let secs = secs.saturating_mul(scale.max(1));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        s.store(true, Release);
        drop(s);
        while !d.load(Acquire) {
            if start.elapsed() > Duration::from_secs(secs) {
                // No allocation, no stderr lock: a deadlocked thread may hold either.
                let msg = format_static(what, secs);
                // SAFETY: writes a valid buffer to fd 2, then aborts.
                unsafe {
                    libc::write(2, msg.0.as_ptr().cast(), msg.1);
                    libc::abort();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Wait until the thread runs: its start-up frees (the spawn's bookkeeping) must not land in
    // the middle of a test that compares process-wide live figures.
    while !started.load(Acquire) || Arc::strong_count(&started) > 1 {
        std::thread::yield_now();
    }
    Watchdog(done, Some(handle))
}

/// "WATCHDOG: <what> did not finish in time (deadlock?)\n" in a stack buffer.
fn format_static(what: &str, _secs: u64) -> ([u8; 256], usize) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for part in [
        "\nWATCHDOG: ",
        what,
        " did not finish in time (deadlock?); aborting\n",
    ] {
        for &b in part.as_bytes() {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    }
    (buf, n)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Release);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// xorshift64*: deterministic, allocation-free.
#[derive(Clone, Copy)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm has a resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    resident * page
}

// ---------------------------------------------------------------------------------------------
// The mixed workload
// ---------------------------------------------------------------------------------------------

/// Root jobs of the workload; job `NESTED` runs only inside job 0.
pub const ROOT_JOBS: usize = 4;
pub const NESTED: usize = ROOT_JOBS;
pub const ALL_JOBS: usize = ROOT_JOBS + 1;

/// Per-job figures kept by the test itself (never by allocscope).
pub struct Ledger {
    alloc_objects: [AtomicU64; ALL_JOBS],
    alloc_bytes: [AtomicU64; ALL_JOBS],
    free_objects: [AtomicU64; ALL_JOBS],
    free_bytes: [AtomicU64; ALL_JOBS],
}

impl Ledger {
    pub const fn new() -> Ledger {
        Ledger {
            alloc_objects: [const { AtomicU64::new(0) }; ALL_JOBS],
            alloc_bytes: [const { AtomicU64::new(0) }; ALL_JOBS],
            free_objects: [const { AtomicU64::new(0) }; ALL_JOBS],
            free_bytes: [const { AtomicU64::new(0) }; ALL_JOBS],
        }
    }
    fn on_alloc(&self, job: usize, size: usize) {
        self.alloc_objects[job].fetch_add(1, Relaxed);
        self.alloc_bytes[job].fetch_add(size as u64, Relaxed);
    }
    fn on_free(&self, job: usize, size: usize) {
        self.free_objects[job].fetch_add(1, Relaxed);
        self.free_bytes[job].fetch_add(size as u64, Relaxed);
    }
    pub fn allocated(&self, job: usize) -> Usage {
        Usage::new(
            self.alloc_objects[job].load(Relaxed),
            self.alloc_bytes[job].load(Relaxed),
        )
    }
    pub fn retained(&self, job: usize) -> Usage {
        Usage::new(
            self.alloc_objects[job].load(Relaxed) - self.free_objects[job].load(Relaxed),
            self.alloc_bytes[job].load(Relaxed) - self.free_bytes[job].load(Relaxed),
        )
    }
}

/// One live block, as the workload remembers it.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    ptr: usize,
    size: usize,
    align: usize,
    job: usize,
    tag: u8,
}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }

    /// Checks the tag bytes (first and last user byte) are intact.
    fn check(&self) {
        // SAFETY: `ptr` is a live block of `size >= 1` bytes written by `write_tag`.
        let (first, last) = unsafe {
            let p = self.ptr as *const u8;
            (p.read(), p.add(self.size - 1).read())
        };
        assert_eq!(
            (first, last),
            (self.tag, self.tag),
            "block contents corrupted: {self:?}"
        );
    }

    fn write_tag(&self) {
        // SAFETY: `ptr` is a live block of `size >= 1` bytes.
        unsafe {
            let p = self.ptr as *mut u8;
            p.write(self.tag);
            p.add(self.size - 1).write(self.tag);
        }
    }

    /// Frees the block and charges the ledger.
    pub fn free(self, ledger: &Ledger) {
        self.check();
        ledger.on_free(self.job, self.size);
        // SAFETY: live block allocated with this layout.
        unsafe { dealloc(self.ptr as *mut u8, self.layout()) };
    }
}

/// A fixed table where threads leave blocks for other threads (no allocation, no lock).
pub struct Exchange {
    state: Vec<AtomicUsize>, // 0 empty, 1 busy, 2 full
    blocks: Vec<std::sync::Mutex<Option<Block>>>,
}

impl Exchange {
    pub fn new(slots: usize) -> Exchange {
        Exchange {
            state: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
            blocks: (0..slots).map(|_| std::sync::Mutex::new(None)).collect(),
        }
    }
    fn put(&self, i: usize, b: Block) -> Result<(), Block> {
        let i = i % self.state.len();
        if self.state[i]
            .compare_exchange(0, 1, Acquire, Relaxed)
            .is_err()
        {
            return Err(b);
        }
        *self.blocks[i].lock().unwrap() = Some(b);
        self.state[i].store(2, Release);
        Ok(())
    }
    fn take(&self, i: usize) -> Option<Block> {
        let i = i % self.state.len();
        if self.state[i]
            .compare_exchange(2, 1, Acquire, Relaxed)
            .is_err()
        {
            return None;
        }
        let b = self.blocks[i].lock().unwrap().take();
        self.state[i].store(0, Release);
        b
    }
    /// Every block left in the table (after the workers have finished).
    pub fn drain(&self) -> Vec<Block> {
        (0..self.state.len()).filter_map(|i| self.take(i)).collect()
    }
}

pub struct Workload {
    /// Names of the jobs, index `NESTED` last.
    pub names: [String; ALL_JOBS],
    pub threads: usize,
    pub ops_per_thread: usize,
    /// Operations per run (one `track_scope` call).
    pub ops_per_run: usize,
    /// Largest block (bytes); sizes are 1..=max_size, skewed towards small.
    pub max_size: usize,
    /// Largest alignment (a power of two).
    pub max_align: usize,
    /// Blocks each thread keeps at most.
    pub pool: usize,
}

/// What a worker hands back: the blocks it still holds.
pub struct WorkerResult {
    pub blocks: Vec<Block>,
    pub runs: u64,
}

fn random_layout(rng: &mut Rng, max_size: usize, max_align: usize) -> (usize, usize) {
    let r = rng.below(100);
    let size = if r < 70 {
        1 + rng.below(256.min(max_size as u64)) as usize
    } else if r < 95 {
        1 + rng.below(4096.min(max_size as u64)) as usize
    } else {
        1 + rng.below(max_size as u64) as usize
    };
    let max_shift = max_align.trailing_zeros() as u64;
    // Half the blocks use the natural alignments (1..16), half anything up to max_align.
    let shift = if rng.below(2) == 0 {
        rng.below(5.min(max_shift + 1))
    } else {
        rng.below(max_shift + 1)
    };
    (size, 1usize << shift)
}

impl Workload {
    /// Runs the workload on `threads` threads; returns the blocks still held at the end.
    /// Every allocation the workload makes inside a scope is one the ledger records (the pools
    /// and RNG never allocate inside a scope).
    pub fn run(&self, ledger: &'static Ledger, exchange: &Arc<Exchange>) -> Vec<WorkerResult> {
        let names: Arc<[String; ALL_JOBS]> = Arc::new(self.names.clone());
        let handles: Vec<_> = (0..self.threads)
            .map(|t| {
                let names = names.clone();
                let exchange = exchange.clone();
                let (ops, per_run, max_size, max_align, pool) = (
                    self.ops_per_thread,
                    self.ops_per_run,
                    self.max_size,
                    self.max_align,
                    self.pool,
                );
                std::thread::spawn(move || {
                    let mut w = Worker {
                        rng: Rng::new(t as u64 + 1),
                        blocks: Vec::with_capacity(pool),
                        pool,
                        max_size,
                        max_align,
                        ledger,
                        exchange: &exchange,
                        run_alloc: (0, 0),
                    };
                    let mut done = 0;
                    let mut runs = 0;
                    while done < ops {
                        let job = w.rng.below(ROOT_JOBS as u64) as usize;
                        let n = per_run.min(ops - done);
                        w.run_alloc = (0, 0);
                        let (expected, run) = track_scope_run(&names[job], || {
                            w.ops(job, n, &names);
                            w.run_alloc
                        });
                        // A run's own allocations (nested runs included) are exact.
                        assert_eq!(
                            run.allocated,
                            Usage::new(expected.0, expected.1),
                            "run {} of {}",
                            run.run,
                            names[job]
                        );
                        done += n;
                        runs += 1;
                    }
                    WorkerResult {
                        blocks: std::mem::take(&mut w.blocks),
                        runs,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }
}

struct Worker<'a> {
    rng: Rng,
    blocks: Vec<Block>,
    pool: usize,
    max_size: usize,
    max_align: usize,
    ledger: &'static Ledger,
    exchange: &'a Exchange,
    /// Objects and bytes allocated in the current (outer) run.
    run_alloc: (u64, u64),
}

impl Worker<'_> {
    fn ops(&mut self, job: usize, n: usize, names: &[String; ALL_JOBS]) {
        let mut i = 0;
        while i < n {
            if job == 0 && self.rng.below(64) == 0 {
                // A nested run: counted in job 0 inclusively and in NESTED exclusively.
                let m = (n - i).min(16);
                track_scope_run(&names[NESTED], || self.ops(NESTED, m, names));
                i += m;
                continue;
            }
            self.op(job);
            i += 1;
        }
    }

    fn alloc_block(&mut self, job: usize) {
        let (size, align) = random_layout(&mut self.rng, self.max_size, self.max_align);
        let layout = Layout::from_size_align(size, align).unwrap();
        let zeroed = self.rng.below(8) == 0;
        // SAFETY: non-zero size.
        let ptr = unsafe {
            if zeroed {
                alloc_zeroed(layout)
            } else {
                alloc(layout)
            }
        };
        assert!(!ptr.is_null(), "allocation of {layout:?} failed");
        assert_eq!(ptr as usize % align, 0, "misaligned block for {layout:?}");
        if zeroed {
            // SAFETY: `size` bytes were just allocated.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "alloc_zeroed not zeroed: {layout:?}"
            );
        }
        self.ledger.on_alloc(job, size);
        self.run_alloc.0 += 1;
        self.run_alloc.1 += size as u64;
        let b = Block {
            ptr: ptr as usize,
            size,
            align,
            job,
            tag: self.rng.next() as u8,
        };
        b.write_tag();
        self.blocks.push(b);
    }

    fn take_random(&mut self) -> Option<Block> {
        if self.blocks.is_empty() {
            return None;
        }
        let i = self.rng.below(self.blocks.len() as u64) as usize;
        Some(self.blocks.swap_remove(i))
    }

    fn op(&mut self, job: usize) {
        let r = self.rng.below(100);
        if r < 35 {
            if self.blocks.len() < self.pool {
                self.alloc_block(job);
            } else if let Some(b) = self.take_random() {
                b.free(self.ledger);
            }
        } else if r < 60 {
            if let Some(b) = self.take_random() {
                b.free(self.ledger);
            }
        } else if r < 75 {
            if let Some(mut b) = self.take_random() {
                b.check();
                let (new_size, _) = random_layout(&mut self.rng, self.max_size, self.max_align);
                // SAFETY: live block with this layout; non-zero new size that does not
                // overflow isize when rounded to the alignment.
                let p = unsafe { realloc(b.ptr as *mut u8, b.layout(), new_size) };
                assert!(!p.is_null(), "realloc failed");
                assert_eq!(p as usize % b.align, 0, "realloc lost the alignment");
                // Contents up to the smaller size survive: the first byte, and the last
                // byte if the block grew.
                // SAFETY: `p` has `new_size >= 1` bytes.
                unsafe {
                    assert_eq!(p.read(), b.tag, "realloc lost the contents");
                    if new_size >= b.size {
                        assert_eq!(p.add(b.size - 1).read(), b.tag, "realloc lost the tail");
                    }
                }
                self.ledger.on_free(b.job, b.size);
                self.ledger.on_alloc(job, new_size);
                self.run_alloc.0 += 1;
                self.run_alloc.1 += new_size as u64;
                b.ptr = p as usize;
                b.size = new_size;
                b.job = job;
                b.write_tag();
                self.blocks.push(b);
            }
        } else if r < 90 {
            if let Some(b) = self.take_random() {
                let slot = self.rng.next() as usize;
                if let Err(b) = self.exchange.put(slot, b) {
                    self.blocks.push(b);
                }
            }
        } else {
            let slot = self.rng.next() as usize;
            if let Some(b) = self.exchange.take(slot) {
                // Freed here (another thread, maybe another job and run), or kept to be
                // freed or reallocated later.
                if self.rng.below(2) == 0 || self.blocks.len() >= self.pool {
                    b.free(self.ledger);
                } else {
                    self.blocks.push(b);
                }
            }
        }
    }
}

/// Runs the mixed workload on `threads` threads × `ops` operations, in jobs named
/// `{prefix}_a`..`{prefix}_d` and `{prefix}_nested`, and asserts allocscope's figures equal the
/// test's own ledger exactly: each run's allocations, each job's allocated and retained
/// (exclusive and inclusive), callsite sums in `Every` mode, and the process live totals back
/// at their starting value once every block is freed. Needs a process where nothing else
/// allocates meanwhile.
pub fn exact_under_concurrency(prefix: &str, threads: usize, ops: usize, mode: StackMode) {
    allocscope::set_stack_mode(mode);
    let _wd = watchdog("exact_under_concurrency", 600);
    let names: [String; ALL_JOBS] =
        std::array::from_fn(|i| format!("{prefix}_{}", ["a", "b", "c", "d", "nested"][i]));
    // Leaked before `start` is taken, so it is part of the constant baseline.
    let ledger: &'static Ledger = Box::leak(Box::new(Ledger::new()));
    let workload = Workload {
        names: names.clone(),
        threads,
        ops_per_thread: ops,
        ops_per_run: 500,
        max_size: 64 * 1024,
        max_align: 4096,
        pool: 128,
    };
    let exchange = Arc::new(Exchange::new(256));

    // Warm up everything that allocates once per process (thread spawning, report building,
    // symbolization caches), so the starting live figure is stable.
    std::thread::spawn(|| ()).join().unwrap();
    drop(report());
    let start_totals = report().totals;
    let start = start_totals.live;

    let results = workload.run(ledger, &exchange);
    let runs: u64 = results.iter().map(|r| r.runs).sum();
    assert!(runs as usize >= threads * ops / 500);

    // Blocks still held: in the workers' pools and in the exchange table.
    let mut left: Vec<Block> = results.into_iter().flat_map(|r| r.blocks).collect();
    left.extend(exchange.drain());
    assert!(
        !left.is_empty(),
        "the check below should see retained blocks"
    );

    let r = report();
    for (i, name) in names.iter().enumerate() {
        let j = r.job(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            j.exclusive.allocated,
            ledger.allocated(i),
            "{name} allocated"
        );
        assert_eq!(j.exclusive.retained, ledger.retained(i), "{name} retained");
        if i != 0 {
            assert_eq!(
                j.allocated, j.exclusive.allocated,
                "{name} has no nested jobs"
            );
        }
        assert_eq!(j.active_runs, 0);
    }
    // Job 0 includes the nested job.
    let a = r.job(&names[0]).unwrap();
    assert_eq!(a.allocated, ledger.allocated(0) + ledger.allocated(NESTED));
    assert_eq!(a.retained, ledger.retained(0) + ledger.retained(NESTED));
    let jobs_runs: u64 = names[..ROOT_JOBS]
        .iter()
        .map(|n| r.job(n).unwrap().runs)
        .sum();
    assert_eq!(jobs_runs, runs, "every root run is counted once");
    if mode == StackMode::Every {
        assert_eq!(r.tracker.stacks_dropped, 0, "no callsite lost");
        // Exact callsites: a job's callsites add up to the job.
        for name in &names {
            let j = r.job(name).unwrap();
            let sites: Usage = j
                .callsites
                .iter()
                .fold(Usage::default(), |acc, c| acc + c.allocated);
            assert_eq!(sites, j.allocated, "{name}: callsites sum to the job");
            let held: Usage = j
                .callsites
                .iter()
                .fold(Usage::default(), |acc, c| acc + c.retained);
            assert_eq!(
                held, j.retained,
                "{name}: retained callsites sum to the job"
            );
        }
    }
    drop(r);

    // Free everything (unscoped, on this thread): charged back to the owning jobs.
    for b in left {
        b.free(ledger);
    }
    let r = report();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(ledger.retained(i), Usage::default());
        let j = r.job(name).unwrap();
        assert_eq!(
            j.retained,
            Usage::default(),
            "{name} retains nothing once all is freed"
        );
        // Callsite counters, exact or sampled (weighted), come back to zero exactly too.
        for c in &j.callsites {
            assert_eq!(c.retained, Usage::default(), "{name}: callsite {c:?}");
        }
        if mode != StackMode::Off {
            assert!(!j.callsites.is_empty(), "{name}: no callsite recorded");
        }
    }
    // With the `malloc` feature, glibc's own blocks are counted too: the thread-local storage
    // it keeps with the stacks of exited threads (cached for the next threads) stays live,
    // unscoped. Every job is still exact (above).
    #[cfg(not(feature = "malloc"))]
    assert_eq!(
        r.totals.live, start,
        "process live figures back to the start"
    );
    #[cfg(feature = "malloc")]
    assert_eq!(
        r.totals.live.bytes - r.totals.unscoped_live.bytes,
        start.bytes - start_totals.unscoped_live.bytes,
        "scoped live bytes back to the start"
    );
    drop(exchange); // allocated before `start` was taken
}
