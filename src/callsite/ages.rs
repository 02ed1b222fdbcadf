//! What each site still holds, by the run of its job that allocated it: a small ring per site.
//!
//! A run has no number until it finishes (numbers are given in finish order), so blocks are
//! keyed by the run's **start number** in its job (`seq`, from `JobEntry::started`, found from
//! the block's run token: `registry::run_seq` / `block_seq`). Each site that records a block
//! gets a **ring** of [`RING`] entries; entry `seq % RING` holds the live objects and bytes of
//! run `seq`'s blocks at this site, in two words that each carry the low 16 bits of `seq` as a
//! tag (bits 48–63) above a 48-bit count:
//!
//! * an allocation adds to its run's entry; if the entry holds an older run (or is unused), it
//!   takes the entry over: that run's blocks are no longer kept apart here (a report counts
//!   them as the oldest bucket). An entry of a *newer* run (up to `AHEAD` starts ahead, a run
//!   that started later) is never taken by an older one: the older run's block is then not
//!   kept apart;
//! * a free subtracts from its run's entry only while the entry still holds that run (tag
//!   compare in the same compare-and-swap), so a count is always exactly what its run's kept
//!   blocks hold.
//!
//! A report maps tags back to runs with the job's ledger (start number → run number) and
//! buckets them by age; the rest of the site's live figures is the oldest bucket, so the
//! buckets always sum to the site's figures. Exact for every run among the job's newest 16
//! finished ones and its runs in progress while each of them started fewer than `RING` = 32
//! runs of its job ago.
//!
//! Memory: a ring is 32 entries × 16 bytes = 512 bytes per site that recorded a block, taken
//! from a static arena in first-use order (dense pages), at most one per site (`SITE_CAP`),
//! plus a few rings lost to two threads claiming one site's ring at once (counted). Lock-free,
//! no allocation: the allocator calls it for every block with a callsite.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use super::intern::{SiteEntry, SITE_CAP};
use crate::registry;

/// Runs a site keeps apart (by start number modulo `RING`).
pub(crate) const RING: usize = 32;
/// Rings in the arena: one per site, and some spare for claims lost to a race.
const RINGS: usize = SITE_CAP + 4096;
const TAG_SHIFT: u32 = 48;
const COUNT_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// How many starts ahead of the allocating run an entry's run may be and still be taken as
/// newer (the runs of a job in progress at once, bounded); an entry further "ahead" is a
/// stale one 64,000-odd starts behind and is taken over.
const AHEAD: u64 = 1024;

/// One site's ring: entry `i` is `[objects, bytes]`, each `tag << 48 | count` (objects in the
/// site counters' fixed point).
struct Ring([[AtomicU64; 2]; RING]);

static ARENA: [Ring; RINGS] =
    [const { Ring([const { [AtomicU64::new(0), AtomicU64::new(0)] }; RING]) }; RINGS];
/// Rings handed out (ring ids start at 1; 0 = none).
static USED: AtomicU32 = AtomicU32::new(0);
/// Rings claimed by a thread that lost the race for its site (never used again).
pub(crate) static LOST: AtomicU64 = AtomicU64::new(0);

#[inline]
fn tag_of(seq: u64) -> u64 {
    seq & 0xFFFF
}

/// `cur` plus `delta` for the run tagged `tag`, taking the entry over from an older run;
/// `None` when the entry belongs to a newer run. Counts are not checked for overflow: a
/// count is what one run's blocks at one site hold *now* (below 2^48 bytes, 2^32 objects).
#[inline(always)]
fn added(cur: u64, tag: u64, delta: u64) -> Option<u64> {
    if cur >> TAG_SHIFT == tag && cur != 0 {
        return Some(cur.wrapping_add(delta));
    }
    taken(cur, tag, delta)
}

/// The entry `cur` taken over by the run tagged `tag` with `delta`, unless it belongs to a
/// newer run (up to `AHEAD` starts ahead).
#[cold]
fn taken(cur: u64, tag: u64, delta: u64) -> Option<u64> {
    let ahead = (cur >> TAG_SHIFT).wrapping_sub(tag) & 0xFFFF;
    if cur != 0 && ahead != 0 && ahead <= AHEAD {
        return None;
    }
    Some((tag << TAG_SHIFT) | (delta & COUNT_MASK))
}

#[inline(always)]
fn add(word: &AtomicU64, tag: u64, delta: u64) {
    let mut cur = word.load(Relaxed);
    while let Some(new) = added(cur, tag, delta) {
        match word.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(c) => cur = c,
        }
    }
}

#[inline(always)]
fn sub(word: &AtomicU64, tag: u64, delta: u64) {
    let mut cur = word.load(Relaxed);
    while cur >> TAG_SHIFT == tag && cur != 0 {
        let new = (tag << TAG_SHIFT) | (cur & COUNT_MASK).saturating_sub(delta);
        match word.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(c) => cur = c,
        }
    }
}

thread_local! {
    /// The last run token this thread looked up and its start number: a thread allocates in
    /// one run for many blocks, so the registry is read once per run (const, no destructor).
    static LAST_RUN: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

/// The start number of the active run `run`, through the thread's one-entry cache.
#[inline(always)]
fn seq_of_active(run: u32) -> Option<u64> {
    let (token, seq) = LAST_RUN.try_with(Cell::get).unwrap_or((0, 0));
    if token == run && token != 0 {
        return Some(seq);
    }
    look_up(run)
}

#[cold]
#[inline(never)]
fn look_up(run: u32) -> Option<u64> {
    let seq = registry::run_seq(run)?;
    let _ = LAST_RUN.try_with(|c| c.set((run, seq)));
    Some(seq)
}

fn ring(id: u32) -> Option<&'static Ring> {
    ARENA.get((id as usize).wrapping_sub(1))
}

/// The ring of site `s`, claimed on first use; `None` when the arena is used up.
#[inline]
fn ring_of(s: &SiteEntry) -> Option<&'static Ring> {
    let id = s.ring.load(Acquire);
    if id != 0 {
        return ring(id);
    }
    claim(s)
}

#[cold]
#[inline(never)]
fn claim(s: &SiteEntry) -> Option<&'static Ring> {
    if USED.load(Relaxed) as usize >= RINGS {
        return None;
    }
    let id = USED.fetch_add(1, Relaxed).wrapping_add(1);
    if id as usize > RINGS {
        return None;
    }
    match s.ring.compare_exchange(0, id, AcqRel, Acquire) {
        Ok(_) => ring(id),
        Err(other) => {
            LOST.fetch_add(1, Relaxed);
            ring(other)
        }
    }
}

/// A block of run `run` (token) charged to site `s`: `o` fixed-point objects, `b` bytes.
#[inline]
pub(crate) fn on_alloc(s: &SiteEntry, run: u32, o: u64, b: u64) {
    let Some(seq) = seq_of_active(run) else {
        return;
    };
    if let Some(r) = ring_of(s) {
        let e = &r.0[seq as usize % RING];
        add(&e[0], tag_of(seq), o);
        add(&e[1], tag_of(seq), b);
    }
}

/// The free of a block of run `run` (token) at site `s` (what its allocation added).
#[inline]
pub(crate) fn on_free(s: &SiteEntry, run: u32, o: u64, b: u64) {
    let id = s.ring.load(Acquire);
    if id == 0 {
        return;
    }
    let Some(r) = ring(id) else {
        return;
    };
    // A block of the thread's current run (the cache) or of any run the registry knows.
    let (token, cached) = LAST_RUN.try_with(Cell::get).unwrap_or((0, 0));
    let seq = if token == run && token != 0 {
        cached
    } else {
        match registry::block_seq(run) {
            Some(seq) => seq,
            None => return,
        }
    };
    let e = &r.0[seq as usize % RING];
    sub(&e[0], tag_of(seq), o);
    sub(&e[1], tag_of(seq), b);
}

/// What one ring entry holds now: (start-number tag, fixed-point objects) and (tag, bytes).
pub(crate) type EntryRead = [(u64, u64); 2];

/// Site `s`'s ring read now, entry by entry (`None`: the site has no ring).
pub(crate) fn read(s: &SiteEntry) -> Option<[EntryRead; RING]> {
    let r = ring(s.ring.load(Acquire))?;
    let mut out = [[(0, 0); 2]; RING];
    for (o, e) in out.iter_mut().zip(&r.0) {
        for (w, a) in o.iter_mut().zip(e) {
            let v = a.load(Relaxed);
            *w = (v >> TAG_SHIFT, v & COUNT_MASK);
        }
    }
    Some(out)
}

/// The full start number a ring entry `index` tagged `tag` stands for, given that the job has
/// started `started` runs: the most recent start number with that tag and index.
pub(crate) fn seq_of(index: usize, tag: u64, started: u64) -> Option<u64> {
    let back = started.wrapping_sub(tag) & 0xFFFF;
    let seq = started.checked_sub(back)?;
    (seq != 0 && seq as usize % RING == index).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_their_run() {
        let w = AtomicU64::new(0);
        add(&w, 5, 10);
        add(&w, 5, 7);
        sub(&w, 5, 3);
        assert_eq!(w.load(Relaxed), (5 << TAG_SHIFT) | 14);
        // A free of another run's block does not touch it.
        sub(&w, 37, 14);
        assert_eq!(w.load(Relaxed) & COUNT_MASK, 14);
        // An older run (started before) never takes a newer run's entry.
        add(&w, 4, 100);
        assert_eq!(w.load(Relaxed), (5 << TAG_SHIFT) | 14);
        // A newer one does; the older run's frees then leave it alone.
        add(&w, 37, 1);
        sub(&w, 5, 14);
        assert_eq!(w.load(Relaxed), (37 << TAG_SHIFT) | 1);
        // Across the tag's wrap: 65,535 then 0 (65,536), and an entry far "ahead" is stale.
        let w = AtomicU64::new((0xFFFF << TAG_SHIFT) | 9);
        add(&w, 0, 2);
        assert_eq!(w.load(Relaxed), 2);
        let w = AtomicU64::new((60_000 << TAG_SHIFT) | 9);
        add(&w, 10, 2);
        assert_eq!(w.load(Relaxed), (10 << TAG_SHIFT) | 2);
        // A free never takes a count below zero (nor into the tag).
        let w = AtomicU64::new((3 << TAG_SHIFT) | 5);
        sub(&w, 3, 10);
        assert_eq!(w.load(Relaxed), 3 << TAG_SHIFT);
    }

    #[test]
    fn tags_map_back_to_start_numbers() {
        assert_eq!(seq_of(5, 5, 10), Some(5));
        assert_eq!(seq_of(5, 37, 40), Some(37));
        assert_eq!(seq_of(6, 5, 10), None);
        assert_eq!(seq_of(5, 5, 3), None);
        let s = 3 * 65_536 + 100;
        assert_eq!(seq_of(s as usize % RING, tag_of(s), s + 7), Some(s));
        assert_eq!(seq_of(0, 0, 0), None);
    }
}
