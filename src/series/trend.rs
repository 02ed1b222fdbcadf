//! The retention trend of a job: is it leaking, filling a cache, or steady?
//!
//! **The series.** After each finished run, the job's retained bytes (inclusive of nested
//! jobs, read from the shared counters of the job's scope paths under the job's lock) are one
//! point `(i, y_i)`, `i` counting the job's runs in the order they finished. This is "what the
//! job holds after each run": a leak adds about the same every run; a cache adds and then
//! stops; a healthy job comes back to where it was. Unlike a run's own `retained_at_finish`, it
//! goes down when a later run frees what an earlier one kept (a job that replaces last run's
//! result is not a leak). Allocations still pending in other threads' counters (runs in
//! progress elsewhere) are not in it, so with concurrent runs each point is off by at most
//! what the in-progress runs hold; the least-squares slope absorbs that.
//!
//! **The summary** keeps every run, compactly: at most [`SEGMENTS`] segments of consecutive
//! runs, each holding its count, first and last run index, first and last value, means and
//! co-moments (Chan's parallel update, numerically stable). When the segments are full,
//! neighbours are merged pairwise, so segments double in length and the summary stays
//! `SEGMENTS` × 80 bytes per job (1.3 KiB) for any number of runs. Regression sums over any
//! run of segments are exact (merging loses no information for the slope and residuals).
//!
//! **The rule** (constants below):
//! * the first [`WARMUP_RUNS`] run(s) are warm-up and not considered (initialisation, first
//!   connection, lazily built statics);
//! * fewer than [`MIN_RUNS_CONSIDERED`] runs after the warm-up → `NotEnoughRuns`;
//! * the *late window* is the most recent half of the considered runs (whole segments, at
//!   least half); its least-squares slope `s` and residual standard deviation `σ` are computed;
//! * **Growing** when the late window still grows: `s > 0` and `s × (its span in runs) ≥
//!   max(`[`MIN_GROWTH_BYTES`]`, 3σ)` — it grows by clearly more than its noise, and by at
//!   least 4 KiB, over the last half of the runs;
//! * **Saturating** when it does not grow any more but grew before: the late window's mean is
//!   above the first considered run's value by at least `max(MIN_GROWTH_BYTES, 3 ×` the late
//!   window's standard deviation`)`;
//! * **Steady** otherwise (including a job whose retention shrinks);
//! * **the row it is printed on**: a report shows the trend beside what the job retains *now*,
//!   and the verdict is of that series — the points after each run, then now. Growing or
//!   saturating also needs the job to still hold the growth: its retained bytes now are above
//!   the first considered run's value by the same margin as the saturating rule. When they are
//!   not (the growth was freed since: per-thread buffers grown inside runs and freed when their
//!   threads exited), the verdict is steady, so a row never reads `0 B` and `saturating`.
//!
//! `bytes_per_run` is always the least-squares slope over all considered runs, and
//! `runs_considered` their number.

use serde::{Deserialize, Serialize};

/// What a job's retention after each run looks like over all its runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendKind {
    /// Retention keeps growing by about the same amount per run: a leak, or a cache without
    /// a bound.
    Growing,
    /// Retention grew, then stopped growing: a cache or pool that filled up.
    Saturating,
    /// Retention does not grow (a healthy job returns to where it was).
    Steady,
    /// Too few runs past the warm-up to tell.
    #[default]
    NotEnoughRuns,
    /// Runs older than [`LEAK_AGE_RUNS`] keep what they allocated and never free any of it,
    /// and so do the recent runs: every run leaves something behind for good (from the
    /// retained-by-run ledger).
    Leaking,
    /// Only the newest runs (the latest, or the one before) hold memory: each run replaces
    /// what the previous one kept (a "latest result" or a replaced cache; from the ledger).
    Replaced,
}

impl TrendKind {
    /// The kind as the text report prints it (`growing`, `saturating`, `steady`, `-`).
    pub fn as_str(&self) -> &'static str {
        match self {
            TrendKind::Growing => "growing",
            TrendKind::Saturating => "saturating",
            TrendKind::Steady => "steady",
            TrendKind::NotEnoughRuns => "-",
            TrendKind::Leaking => "leaking",
            TrendKind::Replaced => "replaced",
        }
    }
}

/// A job's retention trend, computed from all its runs (see
/// [`timeline`](crate::timeline) (and this module's `trend` docs) for the rule and its thresholds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Trend {
    /// The verdict.
    pub kind: TrendKind,
    /// Growth of the job's retained bytes per run: the least-squares slope over the runs
    /// considered (negative when it shrinks).
    pub bytes_per_run: f64,
    /// Runs the verdict is based on: every finished run after the warm-up.
    pub runs_considered: u64,
}

/// Runs at the start of a job not considered by the trend.
pub const WARMUP_RUNS: u64 = 1;
/// Runs after the warm-up needed for a verdict.
pub const MIN_RUNS_CONSIDERED: u64 = 4;
/// Smallest growth (bytes, over the late window for `Growing`, since the warm-up for
/// `Saturating`) that counts.
pub const MIN_GROWTH_BYTES: f64 = 4096.0;
/// Segments kept per job.
pub const SEGMENTS: usize = 16;

/// Age in runs (0 = the job's newest finished run) from which a run that still holds what it
/// allocated counts as "old" for the `leaking` verdict.
pub const LEAK_AGE_RUNS: u64 = 8;

/// What one finished run of a job still holds, for the ledger's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunHeld {
    /// Runs since (0 = the newest finished run).
    pub age: u64,
    /// Bytes its blocks still hold.
    pub bytes: u64,
    /// Whether any of its blocks was freed after it finished.
    pub freed_since: bool,
}

/// The verdict the retained-by-run ledger gives, when it can tell: `Leaking` when the job has
/// finished at least `LEAK_AGE_RUNS + 2` runs, at least two runs older than `LEAK_AGE_RUNS`
/// hold memory they never freed any of, they are at least half of the old runs in the
/// ledger's window, and at least half of the recent runs (ages 1 to `LEAK_AGE_RUNS - 1`) hold
/// memory too (a warm-up's old runs hold, its recent ones do not); `Replaced` when the job has
/// finished at least 3 runs, holds memory, and only runs of age 0 or 1 hold any (nothing in
/// `older_bytes`, the runs beyond the window). `None` otherwise: the series' verdict stands.
/// `runs` lists the window's finished runs (all of them: `window` = how many there are).
pub(crate) fn ledger_verdict(
    runs: &[RunHeld],
    window: u64,
    finished: u64,
    older_bytes: u64,
) -> Option<TrendKind> {
    let holders = || runs.iter().filter(|r| r.bytes > 0);
    if finished >= LEAK_AGE_RUNS + 2 {
        let old_runs = window.saturating_sub(LEAK_AGE_RUNS);
        let old_keepers = holders()
            .filter(|r| r.age >= LEAK_AGE_RUNS && !r.freed_since)
            .count() as u64;
        let recent_runs = (LEAK_AGE_RUNS - 1).min(window.saturating_sub(1));
        let recent_holders = holders()
            .filter(|r| r.age >= 1 && r.age < LEAK_AGE_RUNS)
            .count() as u64;
        if old_keepers >= 2 && old_keepers * 2 >= old_runs && recent_holders * 2 >= recent_runs {
            return Some(TrendKind::Leaking);
        }
    }
    if finished >= 3 && older_bytes == 0 && holders().count() > 0 && holders().all(|r| r.age <= 1) {
        return Some(TrendKind::Replaced);
    }
    None
}

/// Regression statistics of a run of consecutive points.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Seg {
    n: u64,
    x_first: f64,
    x_last: f64,
    y_first: f64,
    y_last: f64,
    mx: f64,
    my: f64,
    cxx: f64,
    cyy: f64,
    cxy: f64,
}

impl Seg {
    fn point(x: f64, y: f64) -> Seg {
        Seg {
            n: 1,
            x_first: x,
            x_last: x,
            y_first: y,
            y_last: y,
            mx: x,
            my: y,
            ..Seg::default()
        }
    }

    /// `self` followed by `b` (Chan et al.'s pairwise update of means and co-moments).
    fn merge(&self, b: &Seg) -> Seg {
        if self.n == 0 {
            return *b;
        }
        if b.n == 0 {
            return *self;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        let n = na + nb;
        let dx = b.mx - self.mx;
        let dy = b.my - self.my;
        let w = na * nb / n;
        Seg {
            n: self.n + b.n,
            x_first: self.x_first,
            x_last: b.x_last,
            y_first: self.y_first,
            y_last: b.y_last,
            mx: self.mx + dx * nb / n,
            my: self.my + dy * nb / n,
            cxx: self.cxx + b.cxx + dx * dx * w,
            cyy: self.cyy + b.cyy + dy * dy * w,
            cxy: self.cxy + b.cxy + dx * dy * w,
        }
    }

    fn slope(&self) -> f64 {
        if self.n < 2 || self.cxx <= 0.0 {
            0.0
        } else {
            self.cxy / self.cxx
        }
    }

    /// Standard deviation of the residuals around the least-squares line.
    fn residual_sd(&self) -> f64 {
        if self.n < 3 || self.cxx <= 0.0 {
            return 0.0;
        }
        let ss = self.cyy - self.cxy * self.cxy / self.cxx;
        (ss.max(0.0) / (self.n as f64 - 2.0)).sqrt()
    }

    /// Standard deviation of the values.
    fn sd(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.cyy.max(0.0) / (self.n as f64 - 1.0)).sqrt()
        }
    }
}

/// A job's compact running summary of retention after each run.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrendSummary {
    /// Points seen, warm-up included.
    runs: u64,
    /// Points per segment before the next merge (1, 2, 4, …).
    seg_len: u64,
    segs: Vec<Seg>,
}

impl TrendSummary {
    /// Adds the retained bytes after the next run.
    pub(crate) fn add(&mut self, retained_bytes: u64) {
        self.runs += 1;
        if self.runs <= WARMUP_RUNS {
            return;
        }
        let p = Seg::point(self.runs as f64, retained_bytes as f64);
        if self.seg_len == 0 {
            self.seg_len = 1;
        }
        match self.segs.last_mut() {
            Some(last) if last.n < self.seg_len => *last = last.merge(&p),
            _ => {
                if self.segs.len() == SEGMENTS {
                    let merged: Vec<Seg> = self
                        .segs
                        .chunks(2)
                        .map(|c| c.iter().fold(Seg::default(), |a, b| a.merge(b)))
                        .collect();
                    self.segs = merged;
                    self.seg_len *= 2;
                }
                if self.segs.capacity() == 0 {
                    self.segs.reserve_exact(SEGMENTS);
                }
                self.segs.push(p);
            }
        }
    }

    /// The verdict over every run seen so far, for a job that retains `retained_now` bytes
    /// now (see the module rules: growth freed since is not growth).
    pub(crate) fn trend(&self, retained_now: u64) -> Trend {
        let all = self.segs.iter().fold(Seg::default(), |a, b| a.merge(b));
        let n = all.n;
        let mut trend = Trend {
            kind: TrendKind::NotEnoughRuns,
            bytes_per_run: all.slope(),
            runs_considered: n,
        };
        if n < MIN_RUNS_CONSIDERED {
            return trend;
        }
        // The late window: whole segments from the end until they hold at least half.
        let mut late = Seg::default();
        for s in self.segs.iter().rev() {
            if late.n * 2 >= n {
                break;
            }
            late = s.merge(&late);
        }
        let late_growth = late.slope() * (late.x_last - late.x_first);
        let held_margin = MIN_GROWTH_BYTES.max(3.0 * late.sd());
        trend.kind = if retained_now as f64 - all.y_first < held_margin {
            TrendKind::Steady
        } else if late.slope() > 0.0
            && late_growth >= MIN_GROWTH_BYTES.max(3.0 * late.residual_sd())
        {
            TrendKind::Growing
        } else if late.my - all.y_first >= held_margin {
            TrendKind::Saturating
        } else {
            TrendKind::Steady
        };
        trend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ages_bytes: &[(u64, u64)]) -> Vec<RunHeld> {
        ages_bytes
            .iter()
            .map(|&(age, bytes)| RunHeld {
                age,
                bytes,
                freed_since: false,
            })
            .collect()
    }

    #[test]
    fn ledger_tells_leaks_replacements_and_warm_ups_apart() {
        // 20 runs, each keeping 1 KiB: leaking.
        let leak = held(&(0..20).map(|a| (a, 1024)).collect::<Vec<_>>());
        assert_eq!(ledger_verdict(&leak, 20, 20, 0), Some(TrendKind::Leaking));
        // Only the newest run holds: replaced (also after the window slid).
        let mut replaced = held(&(0..20).map(|a| (a, 0)).collect::<Vec<_>>());
        replaced[0].bytes = 1024;
        assert_eq!(
            ledger_verdict(&replaced, 20, 20, 0),
            Some(TrendKind::Replaced)
        );
        assert_eq!(
            ledger_verdict(&replaced, 20, 200, 0),
            Some(TrendKind::Replaced)
        );
        // Runs 1-3 of 20 (ages 17-19) hold: a warm-up, neither.
        let warm = held(
            &(0..20)
                .map(|a| (a, if a >= 17 { 4096 } else { 0 }))
                .collect::<Vec<_>>(),
        );
        assert_eq!(ledger_verdict(&warm, 20, 20, 0), None);
        // ... also when those runs are just old enough (11 runs finished).
        let warm = held(
            &(0..11)
                .map(|a| (a, if a >= 8 { 4096 } else { 0 }))
                .collect::<Vec<_>>(),
        );
        assert_eq!(ledger_verdict(&warm, 11, 11, 0), None);
        // Old runs that drain (their blocks are freed later): not a leak.
        let mut drain = leak.clone();
        for r in drain.iter_mut().filter(|r| r.age >= 8) {
            r.freed_since = true;
        }
        assert_eq!(ledger_verdict(&drain, 20, 20, 0), None);
        // Too few runs, or something older than the window: no verdict from the ledger.
        assert_eq!(ledger_verdict(&leak[..5], 5, 5, 0), None);
        assert_eq!(ledger_verdict(&replaced, 20, 200, 1), None);
        assert_eq!(ledger_verdict(&held(&[(0, 0), (1, 0)]), 2, 2, 0), None);
    }

    /// The summary of `values`, and the last of them (what the job holds now when nothing
    /// changed after its last run).
    fn summary(values: impl IntoIterator<Item = u64>) -> Held {
        let mut s = TrendSummary::default();
        let mut last = 0;
        for v in values {
            s.add(v);
            last = v;
        }
        Held(s, last)
    }

    struct Held(TrendSummary, u64);

    impl Held {
        fn trend(&self) -> Trend {
            self.0.trend(self.1)
        }
    }

    #[test]
    fn exact_leak_is_growing_with_its_slope() {
        let t = summary((1..=30).map(|i| i * 10240)).trend();
        assert_eq!(t.kind, TrendKind::Growing);
        assert_eq!(t.runs_considered, 29);
        assert!((t.bytes_per_run - 10240.0).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn merged_segments_keep_the_exact_slope() {
        // 1,000,000 points go through 16 segments merged again and again.
        let t = summary((1..=1_000_000u64).map(|i| 5_000_000 + i * 24)).trend();
        assert_eq!(t.kind, TrendKind::Growing);
        assert_eq!(t.runs_considered, 999_999);
        assert!((t.bytes_per_run - 24.0).abs() < 1e-6, "{t:?}");
        let s = summary((1..=1_000_000u64).map(|i| 5_000_000 + i * 24));
        assert!(s.0.segs.len() <= SEGMENTS);
    }

    #[test]
    fn cache_filled_in_three_runs_is_saturating() {
        let t = summary((1..=30).map(|i| i.min(3) * 65536)).trend();
        assert_eq!(t.kind, TrendKind::Saturating, "{t:?}");
    }

    #[test]
    fn growth_freed_since_the_runs_is_steady() {
        // A cache filled in three runs, then emptied (its threads exited): the row reads what
        // the job holds now, and the verdict agrees with it.
        let cache = summary((1..=30).map(|i| i.min(3) * 65536));
        assert_eq!(cache.0.trend(0).kind, TrendKind::Steady);
        assert_eq!(cache.0.trend(65536 * 3).kind, TrendKind::Saturating);
        // Down to the first considered run's level: nothing of the growth held.
        assert_eq!(cache.0.trend(65536 * 2).kind, TrendKind::Steady);
        let leak = summary((1..=30).map(|i| i * 10240));
        assert_eq!(leak.0.trend(0).kind, TrendKind::Steady);
        assert_eq!(leak.0.trend(30 * 10240).kind, TrendKind::Growing);
        // The slope over the runs is still reported.
        assert!((leak.0.trend(0).bytes_per_run - 10240.0).abs() < 1e-6);
    }

    #[test]
    fn flat_is_steady_and_noise_is_not_growth() {
        assert_eq!(summary([0; 30]).trend().kind, TrendKind::Steady);
        // ±64 KiB of noise around 1 MiB, no growth.
        let noisy = (0..200u64).map(|i| (1 << 20) + (i * 7919 % 17) * 8192);
        assert_eq!(summary(noisy).trend().kind, TrendKind::Steady);
        // Shrinking is steady.
        assert_eq!(
            summary((0..30u64).map(|i| 1_000_000 - i * 10_000))
                .trend()
                .kind,
            TrendKind::Steady
        );
    }

    #[test]
    fn few_runs_are_not_enough() {
        assert_eq!(summary([0, 10240]).trend().kind, TrendKind::NotEnoughRuns);
        assert_eq!(summary([0, 1, 2, 3]).trend().kind, TrendKind::NotEnoughRuns);
        assert_eq!(summary([0; 5]).trend().kind, TrendKind::Steady);
    }

    #[test]
    fn small_growth_below_the_floor_is_steady() {
        // 100 B/run over 20 runs: 1 KiB in the late window, under 4 KiB.
        assert_eq!(
            summary((0..20u64).map(|i| i * 100)).trend().kind,
            TrendKind::Steady
        );
    }
}
