//! Workloads shared by every bench binary (`benches/system.rs`, `benches/allocscope.rs`,
//! `benches/dhat.rs`) and by `examples/bench_workload.rs` (the heaptrack run), included with a
//! `#[path]` module so that each binary measures exactly the same code under its own
//! `#[global_allocator]`.
//!
//! All workloads are deterministic (a fixed-seed generator), so every allocator sees the same
//! sequence of allocations. Each returns a checksum that the caller passes to `black_box`.

// Each including binary uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Full-size parameters (the workloads BENCHMARKS.md reports).
pub const CHURN_ITERS: usize = 400_000;
/// Integers in one `job` run.
pub const JOB_INTS: usize = 3_000_000;
/// Blocks sent through channels in the `threads` workloads (split over the pairs).
pub const THREAD_MSGS: usize = 400_000;
/// Divisor for the reduced sizes used with the slow peers (dhat-rs, DWARF unwinding), which
/// `System` is also measured at, so each ratio compares equal work.
pub const SMALL: usize = 10;

/// A tiny deterministic generator (SplitMix64): no allocation, same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// One thread, many small short-lived allocations: per iteration a `Box<u64>`, a `String` of
/// 8–120 bytes kept in a small ring (so frees are not strictly last-in-first-out), a `HashMap`
/// insert/remove, and every 16th iteration a `Vec` grown by `push` from empty (reallocs).
/// About 4.2 allocation events per iteration.
pub fn churn(iters: usize) -> u64 {
    let mut rng = Rng::new(0xC0FFEE);
    let mut ring: Vec<String> = (0..64).map(|_| String::new()).collect();
    let mut map: HashMap<u64, Box<[u8; 24]>> = HashMap::with_capacity(1024);
    let mut sum = 0u64;
    for i in 0..iters {
        let b = black_box(Box::new(i as u64));
        sum = sum.wrapping_add(*b);
        drop(b);

        let len = rng.range(8, 120) as usize;
        let s = "x".repeat(len);
        sum = sum.wrapping_add(s.len() as u64);
        ring[i & 63] = s;

        let key = rng.range(0, 511);
        if map.remove(&key).is_none() {
            map.insert(key, Box::new([i as u8; 24]));
        }

        if i % 16 == 0 {
            let mut v = Vec::new();
            for j in 0..200u32 {
                v.push(j);
            }
            sum = sum.wrapping_add(black_box(&v).len() as u64);
        }
    }
    sum.wrapping_add(map.len() as u64)
}

/// The batch job: `n` pseudo-random integers in 1..=1000 rendered to `String`s,
/// joined with `_`, split, parsed back and summed.
pub fn job(n: usize) -> u64 {
    let mut rng = Rng::new(42);
    let strings: Vec<String> = (0..n).map(|_| rng.range(1, 1000).to_string()).collect();
    let joined = strings.join("_");
    drop(strings);
    joined
        .split('_')
        .map(|s| s.parse::<u64>().unwrap_or(0))
        .sum()
}

/// Spawns a thread; benches pass `std::thread::spawn` or `allocscope::spawn`.
pub type Spawner = fn(Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64>;

/// `std::thread::spawn` as a `Spawner`.
pub fn std_spawn(f: Box<dyn FnOnce() -> u64 + Send>) -> JoinHandle<u64> {
    std::thread::spawn(f)
}

/// Local churn done by both sides of a channel between messages.
fn local_churn(rng: &mut Rng, keep: &mut [Vec<u8>; 8], i: usize) -> u64 {
    let b = black_box(Box::new(i as u64));
    let len = rng.range(8, 120) as usize;
    keep[i & 7] = vec![i as u8; len];
    *b
}

/// Blocks per channel message in the `threads` workloads: batching keeps the measurement about
/// allocation and cross-thread frees rather than about waking (or spinning for) the other
/// thread, which on a loaded 2-core machine swung the time of a run by 2-3x.
pub const BATCH: usize = 256;

/// `threads` producer/consumer pairs (`threads` is even): each producer allocates blocks of
/// 16–256 bytes and sends them, `BATCH` at a time, over a bounded channel; its consumer frees
/// them (cross-thread frees). Both sides also churn locally (a `Box<u64>` and a 8–120 byte
/// `Vec` per block). `msgs` blocks in total, split over the pairs.
pub fn threads(threads: usize, msgs: usize, spawn: Spawner) -> u64 {
    let pairs = (threads / 2).max(1);
    let batches = msgs / pairs / BATCH;
    let mut handles = Vec::with_capacity(pairs * 2);
    for p in 0..pairs {
        let (tx, rx) = mpsc::sync_channel::<Vec<Vec<u8>>>(8);
        handles.push(spawn(Box::new(move || {
            let mut rng = Rng::new(p as u64 + 1);
            let mut keep: [Vec<u8>; 8] = Default::default();
            let mut sum = 0u64;
            let mut i = 0;
            for _ in 0..batches {
                let mut batch = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    let len = rng.range(16, 256) as usize;
                    batch.push(vec![i as u8; len]);
                    sum = sum.wrapping_add(local_churn(&mut rng, &mut keep, i));
                    i += 1;
                }
                if tx.send(batch).is_err() {
                    break;
                }
            }
            sum
        })));
        handles.push(spawn(Box::new(move || {
            let mut rng = Rng::new(p as u64 + 1001);
            let mut keep: [Vec<u8>; 8] = Default::default();
            let mut sum = 0u64;
            let mut i = 0;
            while let Ok(batch) = rx.recv() {
                for block in batch {
                    sum = sum.wrapping_add(block.len() as u64);
                    drop(block);
                    sum = sum.wrapping_add(local_churn(&mut rng, &mut keep, i));
                    i += 1;
                }
            }
            sum
        })));
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or(0))
        .fold(0, u64::wrapping_add)
}

/// One measured case: a workload at one size.
pub struct Case {
    /// Criterion group name (`target/criterion/<name>/<config>/`).
    pub name: &'static str,
    /// Runs the workload once, spawning threads with the given spawner.
    pub run: fn(Spawner) -> u64,
}

/// The workloads at full size.
pub const FULL: &[Case] = &[
    Case {
        name: "churn",
        run: |_| churn(CHURN_ITERS),
    },
    Case {
        name: "job",
        run: |_| job(JOB_INTS),
    },
    Case {
        name: "threads2",
        run: |s| threads(2, THREAD_MSGS, s),
    },
    Case {
        name: "threads4",
        run: |s| threads(4, THREAD_MSGS, s),
    },
    Case {
        name: "threads8",
        run: |s| threads(8, THREAD_MSGS, s),
    },
];

/// The same workloads at 1/`SMALL` size, for the slow configurations (dhat-rs, DWARF).
pub const REDUCED: &[Case] = &[
    Case {
        name: "churn_small",
        run: |_| churn(CHURN_ITERS / SMALL),
    },
    Case {
        name: "job_small",
        run: |_| job(JOB_INTS / SMALL),
    },
    Case {
        name: "threads2_small",
        run: |s| threads(2, THREAD_MSGS / SMALL, s),
    },
];

/// Looks a case up by name (for `examples/bench_workload.rs`).
pub fn case(name: &str) -> Option<&'static Case> {
    FULL.iter().chain(REDUCED).find(|c| c.name == name)
}

/// CPU time consumed by this process so far.
pub fn process_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
