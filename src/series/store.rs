//! The bounded stores behind `Report::timeline` and `Report::run_events`.
//!
//! Both hold job ids, not names (no allocation per sample or per run; names are resolved when a
//! report is built), in memory allocated once and reused.

use std::collections::VecDeque;

use crate::model::RunEvent;

/// Samples per resolution level.
pub(crate) const LEVEL_SAMPLES: usize = 128;
/// Resolution levels: level `i` holds samples standing for `2^i` raw samples each.
pub(crate) const LEVELS: usize = 16;
/// Most recent run events kept.
pub(crate) const RECENT_EVENTS: usize = 2048;
/// Run events kept for being among the largest ever, per measure (retained at finish, peak).
pub(crate) const LARGEST_EVENTS: usize = 64;

/// One sample, as stored.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawSample {
    pub unix_ms: u64,
    pub rss: u64,
    pub heap: u64,
    pub not_returned: u64,
    /// The RSS breakdown's parts in KiB, in `RssBreakdown::PARTS` order; all zero when
    /// unavailable (a real breakdown always has file-backed pages).
    pub parts_kib: [u32; 7],
    pub merged: u64,
    pub top: [(u32, u64); super::TOP_JOBS],
    pub n_top: u8,
}

/// The multi-resolution timeline: level 0 at the sampler's interval, each further level at
/// twice the previous one's spacing. When a level holds more than `LEVEL_SAMPLES`, its two
/// oldest samples become one (the one with the higher RSS, counting both) at the next level;
/// when the last level overflows, its oldest sample is dropped (and counted).
#[derive(Default)]
pub(crate) struct Samples {
    levels: Vec<VecDeque<RawSample>>,
    pub taken: u64,
    pub dropped: u64,
}

impl Samples {
    pub(crate) const fn new() -> Self {
        Samples {
            levels: Vec::new(),
            taken: 0,
            dropped: 0,
        }
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.levels.iter().map(|q| q.capacity()).sum::<usize>() * std::mem::size_of::<RawSample>()
            + self.levels.capacity() * std::mem::size_of::<VecDeque<RawSample>>()
    }

    pub(crate) fn push(&mut self, s: RawSample) {
        if self.levels.is_empty() {
            self.levels = (0..LEVELS).map(|_| VecDeque::with_capacity(0)).collect();
        }
        self.taken += 1;
        let mut carry = Some(s);
        for level in 0..LEVELS {
            let Some(s) = carry.take() else { break };
            let q = &mut self.levels[level];
            if q.capacity() == 0 {
                q.reserve_exact(LEVEL_SAMPLES + 1);
            }
            q.push_back(s);
            if q.len() <= LEVEL_SAMPLES {
                break;
            }
            let (Some(a), Some(b)) = (q.pop_front(), q.pop_front()) else {
                break;
            };
            let mut keep = if b.rss > a.rss || (b.rss == a.rss && b.heap >= a.heap) {
                b
            } else {
                a
            };
            keep.merged = a.merged.saturating_add(b.merged);
            if level + 1 == LEVELS {
                self.dropped = self.dropped.saturating_add(keep.merged);
            } else {
                carry = Some(keep);
            }
        }
    }

    /// Every sample, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RawSample> {
        self.levels.iter().rev().flat_map(|q| q.iter())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(|q| q.len()).sum()
    }
}

/// One run event, as stored: the job's id and the event (whose name is the job entry's,
/// shared).
pub(crate) type StoredEvent = (u32, RunEvent);

/// Recent runs (a ring of `RECENT_EVENTS`), plus the `LARGEST_EVENTS` runs with the largest
/// retained-at-finish bytes and the `LARGEST_EVENTS` with the largest peak since the process
/// started. A run can be in several sets; a report lists it once.
#[derive(Default)]
pub(crate) struct Events {
    recent: VecDeque<StoredEvent>,
    by_retained: Vec<StoredEvent>,
    by_peak: Vec<StoredEvent>,
    pub total: u64,
}

/// Keeps `e` in `set` if it is among the `LARGEST_EVENTS` largest by `key`.
fn keep_largest(set: &mut Vec<StoredEvent>, e: &StoredEvent, key: fn(&StoredEvent) -> u64) {
    if key(e) == 0 {
        return;
    }
    if set.len() < LARGEST_EVENTS {
        if set.capacity() == 0 {
            set.reserve_exact(LARGEST_EVENTS);
        }
        set.push(e.clone());
        return;
    }
    // Small fixed set: a linear scan for the smallest is cheaper than keeping a heap, and
    // runs only when `e` could enter (checked against the smallest first).
    let (i, min) = set
        .iter()
        .enumerate()
        .min_by_key(|(_, x)| key(x))
        .map(|(i, x)| (i, key(x)))
        .unwrap_or((0, u64::MAX));
    if key(e) > min {
        set[i] = e.clone();
    }
}

impl Events {
    pub(crate) const fn new() -> Self {
        Events {
            recent: VecDeque::new(),
            by_retained: Vec::new(),
            by_peak: Vec::new(),
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, e: StoredEvent) {
        self.total = self.total.saturating_add(1);
        if self.recent.capacity() == 0 {
            self.recent.reserve_exact(RECENT_EVENTS);
        }
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        keep_largest(&mut self.by_retained, &e, |(_, e)| {
            e.retained_at_finish.bytes
        });
        keep_largest(&mut self.by_peak, &e, |(_, e)| e.peak_bytes);
        self.recent.push_back(e);
    }

    /// Every kept event once, by finish time (then job, run).
    pub(crate) fn kept(&self) -> Vec<StoredEvent> {
        let mut all: Vec<StoredEvent> = self
            .recent
            .iter()
            .chain(&self.by_retained)
            .chain(&self.by_peak)
            .cloned()
            .collect();
        all.sort_by_key(|(job, e)| (e.finish_unix_ms, *job, e.run));
        all.dedup_by_key(|(job, e)| (*job, e.run));
        all
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        (self.recent.capacity() + self.by_retained.capacity() + self.by_peak.capacity())
            * std::mem::size_of::<StoredEvent>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Usage;

    fn sample(i: u64, rss: u64) -> RawSample {
        RawSample {
            unix_ms: i,
            rss,
            merged: 1,
            ..Default::default()
        }
    }

    #[test]
    fn samples_stay_bounded_and_keep_peaks() {
        let mut s = Samples::default();
        let n = 10_000_000u64;
        for i in 0..n {
            // One spike (within the last 8.4M samples the levels cover); it must survive every
            // coarsening. The first samples are dropped by then (counted).
            s.push(sample(i, if i == 3_000_000 { 1 << 40 } else { i % 1000 }));
            if i % 4096 == 0 {
                assert!(s.len() <= LEVELS * LEVEL_SAMPLES);
            }
        }
        assert_eq!(s.taken, n);
        let kept: u64 = s.iter().map(|x| x.merged).sum();
        assert_eq!(
            kept + s.dropped,
            n,
            "every raw sample is kept or counted as dropped"
        );
        assert!(s.dropped > 0 && s.dropped < n / 2, "{}", s.dropped);
        assert!(s.iter().any(|x| x.rss == 1 << 40), "the spike survived");
        let times: Vec<u64> = s.iter().map(|x| x.unix_ms).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first");
        // The newest LEVEL_SAMPLES samples are at full resolution.
        let newest: Vec<&RawSample> = s.iter().collect();
        assert!(newest[newest.len() - 100..].iter().all(|x| x.merged == 1));
    }

    #[test]
    fn a_stored_event_has_the_documented_size() {
        // The bound in `crate::timeline`'s docs: 2,176 events × 96 bytes (the name is shared).
        assert_eq!(std::mem::size_of::<StoredEvent>(), 96);
    }

    #[test]
    fn events_keep_recent_and_largest() {
        let mut ev = Events::default();
        for i in 0..100_000u64 {
            let big = i == 5; // an early leak, long out of the recent ring
            ev.push((
                1,
                RunEvent {
                    run: i + 1,
                    finish_unix_ms: i,
                    retained_at_finish: Usage::new(1, if big { 1 << 30 } else { i % 7 }),
                    peak_bytes: i % 11,
                    ..Default::default()
                },
            ));
        }
        let kept = ev.kept();
        assert!(kept.len() <= RECENT_EVENTS + 2 * LARGEST_EVENTS);
        assert!(kept.len() >= RECENT_EVENTS);
        assert!(
            kept.iter().any(|(_, e)| e.run == 6),
            "the largest run is kept"
        );
        assert_eq!(
            kept.last().unwrap().1.run,
            100_000,
            "the most recent run is kept"
        );
        assert_eq!(ev.total, 100_000);
    }
}
