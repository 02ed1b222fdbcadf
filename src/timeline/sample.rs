//! What one sample reads of the counters, at a cost bounded whatever the number of jobs.
//!
//! Rules:
//! * A sample reads the shared counters of at most [`SAMPLE_PATHS`] scope paths — a window
//!   that moves on from sample to sample (all paths every sample while there are at most that
//!   many) — plus every thread's pending figures, as one consistent read
//!   (`report::snapshot::read_window`). The other paths keep the figures of their last read,
//!   so with more paths each one is at most `ceil(paths / SAMPLE_PATHS)` samples old; the
//!   sampler's figures are then a moving estimate (a flush since a path's last read can only
//!   make it *lower*, never count a figure twice).
//! * Per job and per process totals are kept **incrementally**: a path read adds the change
//!   since its last read to the process total and to each job on its path. Finding the
//!   [`TOP_JOBS`](crate::series::TOP_JOBS) jobs is one pass over a plain array of per-job
//!   figures (no atomics; at most `registry::MAX_JOBS` = 16,384 entries).
//! * Nothing here allocates once the path and job arrays have grown to the registry's size;
//!   a new path's job chain is read once, when the path first appears (paths never change).
//!
//! So a sample costs at most: `SAMPLE_PATHS` path reads, one read per thread slot in use
//! (at most `thread::MAX_THREADS`), the new paths' chains, and the per-job pass.

use core::sync::atomic::{AtomicUsize, Ordering::*};

use crate::model::Counters;
use crate::registry::{self, PATH_TRACKER};
use crate::report::snapshot::{read_window, Rollup};
use crate::series::TOP_JOBS;
use crate::thread::Pending;

/// The most scope paths whose shared counters one sample reads.
pub const SAMPLE_PATHS: usize = 4096;

/// The most paths any sample has read so far (for the bound's test).
static MOST_PATHS_READ: AtomicUsize = AtomicUsize::new(0);

/// The most scope paths one sample has read since the process started (at most
/// [`SAMPLE_PATHS`]).
#[doc(hidden)]
pub fn most_paths_read_per_sample() -> usize {
    MOST_PATHS_READ.load(Relaxed)
}

/// The sampler's running figures (owned by the sampler thread).
#[derive(Default)]
pub(crate) struct Reader {
    /// Where the next window starts.
    cursor: u32,
    /// Each path's shared counters at its last read.
    paths: Vec<Counters>,
    /// Each path's jobs: `chain_jobs[chain_at[p]..chain_at[p + 1]]`.
    chain_at: Vec<u32>,
    chain_jobs: Vec<u32>,
    /// Live bytes per job id (inclusive), from the paths' last reads (wrapping sums).
    job_live: Vec<u64>,
    /// Every path but the tracker's, from their last reads (wrapping sums).
    all: Counters,
    /// Scratch: the window's counters and the threads' pending figures.
    window: Vec<Counters>,
    pending: Vec<Pending>,
    scratch: Vec<u32>,
}

/// `a + b - c` per field, wrapping (running sums stay exact as long as the true value fits).
fn replace(total: &mut Counters, old: &Counters, new: &Counters) {
    total.alloc_objects = total
        .alloc_objects
        .wrapping_add(new.alloc_objects.wrapping_sub(old.alloc_objects));
    total.alloc_bytes = total
        .alloc_bytes
        .wrapping_add(new.alloc_bytes.wrapping_sub(old.alloc_bytes));
    total.free_objects = total
        .free_objects
        .wrapping_add(new.free_objects.wrapping_sub(old.free_objects));
    total.free_bytes = total
        .free_bytes
        .wrapping_add(new.free_bytes.wrapping_sub(old.free_bytes));
}

fn live_bytes(c: &Counters) -> u64 {
    c.alloc_bytes.wrapping_sub(c.free_bytes)
}

impl Reader {
    /// Reads one window of paths and the threads' pending figures. Returns the process roll-up
    /// (`all`, `tracker`; no per-job vectors) and the jobs holding the most, largest first.
    /// Runs untracked.
    pub(crate) fn read(&mut self) -> (Rollup, [(u32, u64); TOP_JOBS]) {
        let count = registry::PATH_COUNT.load(Acquire);
        self.learn_paths(count);
        let start = if self.cursor >= count { 0 } else { self.cursor };
        let end = count.min(start.saturating_add(SAMPLE_PATHS as u32));
        read_window(start..end, &mut self.window, &mut self.pending);
        self.cursor = if end >= count { 0 } else { end };
        MOST_PATHS_READ.fetch_max((end - start) as usize, Relaxed);

        let mut tracker = Counters::default();
        for (i, new) in self.window.iter().enumerate() {
            let p = start + i as u32;
            let old = self.paths[p as usize];
            if p == PATH_TRACKER {
                self.paths[p as usize] = *new;
                continue;
            }
            replace(&mut self.all, &old, new);
            let delta = live_bytes(new).wrapping_sub(live_bytes(&old));
            if delta != 0 {
                let (a, b) = self.chain(p);
                for &j in &self.chain_jobs[a..b] {
                    if let Some(l) = self.job_live.get_mut(j as usize) {
                        *l = l.wrapping_add(delta);
                    }
                }
            }
            self.paths[p as usize] = *new;
        }
        // The tracker's own path is read every sample (one path).
        if let Some(t) = self.paths.get_mut(PATH_TRACKER as usize) {
            *t = registry::path(PATH_TRACKER).counters.load();
            tracker = *t;
        }

        // Pending figures count for this sample only (their paths' shared figures are read
        // with them or earlier, so none is counted twice).
        let mut all = self.all;
        self.apply_pending(true);
        for p in &self.pending {
            if p.path == PATH_TRACKER {
                tracker.add(p.counters);
            } else {
                all.add(p.counters);
            }
        }
        let top = top_jobs(&self.job_live);
        self.apply_pending(false);
        let rollup = Rollup {
            all,
            tracker,
            ..Rollup::default()
        };
        (rollup, top)
    }

    /// Adds (or takes back) the pending figures' live bytes to their paths' jobs.
    fn apply_pending(&mut self, add: bool) {
        for i in 0..self.pending.len() {
            let (path, live) = (self.pending[i].path, live_bytes(&self.pending[i].counters));
            if path == PATH_TRACKER || path as usize >= self.paths.len() || live == 0 {
                continue;
            }
            let (a, b) = self.chain(path);
            for &j in &self.chain_jobs[a..b] {
                if let Some(l) = self.job_live.get_mut(j as usize) {
                    *l = if add {
                        l.wrapping_add(live)
                    } else {
                        l.wrapping_sub(live)
                    };
                }
            }
        }
    }

    fn chain(&self, path: u32) -> (usize, usize) {
        let p = path as usize;
        (self.chain_at[p] as usize, self.chain_at[p + 1] as usize)
    }

    /// Reads the job chains of paths created since the last sample (once per path).
    fn learn_paths(&mut self, count: u32) {
        if self.chain_at.is_empty() {
            self.chain_at.push(0);
        }
        while (self.paths.len() as u32) < count {
            let p = self.paths.len() as u32;
            registry::path_jobs(p, &mut self.scratch);
            for &j in &self.scratch {
                if self.job_live.len() <= j as usize {
                    self.job_live.resize(j as usize + 1, 0);
                }
            }
            self.chain_jobs.extend_from_slice(&self.scratch);
            self.chain_at.push(self.chain_jobs.len() as u32);
            self.paths.push(Counters::default());
        }
    }
}

/// The `TOP_JOBS` jobs with the most live bytes (above 0), largest first; unused entries
/// are `(0, 0)`.
fn top_jobs(job_live: &[u64]) -> [(u32, u64); TOP_JOBS] {
    let mut top = [(0u32, 0u64); TOP_JOBS];
    let mut n_top = 0usize;
    for (j, &live) in job_live.iter().enumerate() {
        let live = live as i64;
        if live <= 0 {
            continue;
        }
        let live = live as u64;
        if n_top == TOP_JOBS && top[TOP_JOBS - 1].1 >= live {
            continue;
        }
        // Insertion into the small sorted array (largest first).
        let mut i = n_top;
        while i > 0 && top[i - 1].1 < live {
            if i < TOP_JOBS {
                top[i] = top[i - 1];
            }
            i -= 1;
        }
        if i < TOP_JOBS {
            top[i] = (j as u32, live);
            n_top = (n_top + 1).min(TOP_JOBS);
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_jobs_are_the_largest_first() {
        let live = [5u64, 0, 9, 1, 7, u64::MAX, 3, 9, 2];
        let top = top_jobs(&live);
        assert_eq!(top, [(2, 9), (7, 9), (4, 7), (0, 5), (6, 3)]);
        assert_eq!(top_jobs(&[0, 4]), [(1, 4), (0, 0), (0, 0), (0, 0), (0, 0)]);
    }
}
