//! Comparing two reports: what grew between two snapshots, per job and per callsite.
//!
//! The "delta" view of heap-snapshot tools: take a report, let the program run, take another,
//! and [`Report::diff`] the two. Whatever keeps growing — a job that retains more at every
//! snapshot, a callsite whose live bytes only go up — comes first.
//!
//! Rules: this module computes the diff (plain data, serde, exact `i128` changes) and knows
//! nothing of how it is shown; [`render`] turns a [`ReportDiff`] into text, folded stacks and
//! SVG, from the diff alone. Callsites are matched by scope path and frames: the same stack
//! under two paths is two callsites, and every rendering tells them apart.

mod render;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{CallsiteReport, Frame, JobReport, ProcessMemory, Report, Usage};

pub use render::DiffTextOptions;

/// A signed change of objects and bytes (newer minus older).
///
/// The fields are `i128` so that the difference of any two `u64` figures is exact: from
/// `-(2^64 - 1)` to `2^64 - 1`, never clamped or wrapped. In JSON they are plain integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// Change in the number of objects.
    pub objects: i128,
    /// Change in bytes.
    pub bytes: i128,
}

/// Whether every change is zero (the per-age split is left out of the JSON then).
fn no_change(changes: &[Change; 5]) -> bool {
    changes.iter().all(Change::is_zero)
}

/// `newer - older` of two `u64` figures, exactly.
pub(crate) fn difference(older: u64, newer: u64) -> i128 {
    i128::from(newer) - i128::from(older)
}

impl Change {
    /// `newer - older`, field by field, exact for any `u64` figures.
    pub fn between(older: Usage, newer: Usage) -> Change {
        Change {
            objects: difference(older.objects, newer.objects),
            bytes: difference(older.bytes, newer.bytes),
        }
    }

    /// Whether nothing changed.
    pub fn is_zero(&self) -> bool {
        self.objects == 0 && self.bytes == 0
    }
}

/// How one callsite (a stack in a scope) changed between two reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallsiteDiff {
    /// The scope the stack allocated in: job names, outermost first (empty: unscoped).
    pub scope: Vec<String>,
    /// The stack, innermost first.
    pub frames: Vec<Frame>,
    /// Live at the older report (zero if the callsite was not in it).
    pub older_retained: Usage,
    /// Live at the newer report (zero if the callsite is not in it).
    pub newer_retained: Usage,
    /// `newer_retained - older_retained`: the growth this diff is sorted by.
    pub retained_change: Change,
    /// Allocated in total, at the older report.
    pub older_allocated: Usage,
    /// Allocated in total, at the newer report.
    pub newer_allocated: Usage,
    /// `newer_allocated - older_allocated` (what was allocated in between, when both reports
    /// come from the same process).
    pub allocated_change: Change,
    /// Whether either side's figures are estimates from sampled stacks.
    pub estimated: bool,
}

impl CallsiteDiff {
    /// The first frame's function name, or `"?"`.
    pub fn top_function(&self) -> &str {
        self.frames.first().map_or("?", |f| f.function.as_str())
    }
}

/// How one job changed between two reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobDiff {
    /// The job's name.
    pub name: String,
    /// Whether the job is in the older report (`false`: it first ran in between).
    pub in_older: bool,
    /// Whether the job is in the newer report.
    pub in_newer: bool,
    /// Finished runs at the older report.
    pub older_runs: u64,
    /// Finished runs at the newer report.
    pub newer_runs: u64,
    /// `newer_runs - older_runs`, exact for any run counts.
    #[serde(default)]
    pub runs_change: i128,
    /// What the job held at the older report (inclusive of nested jobs).
    pub older_retained: Usage,
    /// What the job holds at the newer report.
    pub newer_retained: Usage,
    /// `newer_retained - older_retained`: the growth this diff is sorted by.
    pub retained_change: Change,
    /// Change in what the job allocated in total.
    pub allocated_change: Change,
    /// The job's callsites (inclusive of nested jobs), by retained growth, largest first.
    pub callsites: Vec<CallsiteDiff>,
    /// The change in what the job retains by age of the run that allocated it, in the
    /// buckets of [`AGE_BUCKETS`](crate::JobReport::AGE_BUCKETS) (runs since each report's newest
    /// finished run; see [`JobReport::retained_by_age`]): a leak grows the old buckets, a
    /// replaced result only the newest. All zero when neither report has the split.
    #[serde(default, skip_serializing_if = "no_change")]
    pub retained_change_by_age: [Change; 5],
    /// Whether either report has the split by run (files written before it have not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_ages: bool,
}

/// The difference between two reports: per job and per callsite, the change in retained
/// objects and bytes, largest growth first. Made by [`Report::diff`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReportDiff {
    /// When the older report was taken (ms since the Unix epoch).
    pub older_timestamp_unix_ms: u64,
    /// When the newer report was taken.
    pub newer_timestamp_unix_ms: u64,
    /// Every live block (tracker excluded), at the older report.
    pub older_live: Usage,
    /// Every live block, at the newer report.
    pub newer_live: Usage,
    /// `newer_live - older_live`.
    pub live_change: Change,
    /// Jobs present in either report, by retained growth (bytes, then objects), largest
    /// first; jobs that shrank come last.
    pub jobs: Vec<JobDiff>,
    /// Every callsite present in either report, by retained growth, largest first.
    pub callsites: Vec<CallsiteDiff>,
    /// The older report's process memory (RSS, not returned to the OS; zeros for version-1
    /// reports).
    #[serde(default)]
    pub older_process: ProcessMemory,
    /// The newer report's process memory.
    #[serde(default)]
    pub newer_process: ProcessMemory,
}

impl Report {
    /// What changed from `older` to this report: per job and per callsite, the change in
    /// retained objects and bytes, sorted by growth (largest first).
    ///
    /// Jobs are matched by name, callsites by scope and frames, so the two reports can come
    /// from different processes (two workers, two versions, two days). Something present on
    /// one side only counts as zero on the other.
    ///
    /// ```
    /// static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    /// let before = allocscope::report();
    /// allocscope::track_scope("grows", || KEPT.lock().unwrap().push(vec![0u8; 1000]));
    /// let diff = allocscope::report().diff(&before);
    /// # if allocscope::is_installed() {
    /// assert_eq!(diff.jobs[0].name, "grows");
    /// assert_eq!(diff.jobs[0].retained_change.bytes, 1000);
    /// # }
    /// print!("{diff}");
    /// ```
    pub fn diff(&self, older: &Report) -> ReportDiff {
        crate::thread::untracked(|| {
            let older_jobs: HashMap<&str, &JobReport> =
                older.jobs.iter().map(|j| (j.name.as_str(), j)).collect();
            let newer_jobs: HashMap<&str, &JobReport> =
                self.jobs.iter().map(|j| (j.name.as_str(), j)).collect();
            let mut names: Vec<&str> = older_jobs
                .keys()
                .chain(newer_jobs.keys())
                .copied()
                .collect();
            names.sort_unstable();
            names.dedup();
            let mut jobs: Vec<JobDiff> = names
                .into_iter()
                .map(|name| {
                    let o = older_jobs.get(name).copied();
                    let n = newer_jobs.get(name).copied();
                    let retained =
                        |j: Option<&JobReport>| j.map_or(Usage::default(), |j| j.retained);
                    let allocated =
                        |j: Option<&JobReport>| j.map_or(Usage::default(), |j| j.allocated);
                    JobDiff {
                        name: name.to_string(),
                        in_older: o.is_some(),
                        in_newer: n.is_some(),
                        older_runs: o.map_or(0, |j| j.runs),
                        newer_runs: n.map_or(0, |j| j.runs),
                        runs_change: difference(o.map_or(0, |j| j.runs), n.map_or(0, |j| j.runs)),
                        older_retained: retained(o),
                        newer_retained: retained(n),
                        retained_change: Change::between(retained(o), retained(n)),
                        allocated_change: Change::between(allocated(o), allocated(n)),
                        callsites: diff_sites(
                            o.map_or(&[], |j| j.callsites.as_slice()),
                            n.map_or(&[], |j| j.callsites.as_slice()),
                        ),
                        retained_change_by_age: {
                            let ages = |j: Option<&JobReport>| {
                                j.map(|j| j.retained_by_age()).unwrap_or_default()
                            };
                            let (a, b) = (ages(o), ages(n));
                            core::array::from_fn(|i| Change::between(a[i], b[i]))
                        },
                        has_ages: [o, n]
                            .iter()
                            .flatten()
                            .any(|j| !j.retained_by_run.is_empty()),
                    }
                })
                .collect();
            jobs.sort_by(|a, b| {
                b.retained_change
                    .bytes
                    .cmp(&a.retained_change.bytes)
                    .then(b.retained_change.objects.cmp(&a.retained_change.objects))
                    .then(b.allocated_change.bytes.cmp(&a.allocated_change.bytes))
                    .then_with(|| a.name.cmp(&b.name))
            });
            ReportDiff {
                older_timestamp_unix_ms: older.timestamp_unix_ms,
                newer_timestamp_unix_ms: self.timestamp_unix_ms,
                older_live: older.totals.live,
                newer_live: self.totals.live,
                live_change: Change::between(older.totals.live, self.totals.live),
                jobs,
                callsites: diff_sites(&older.callsites, &self.callsites),
                older_process: older.process.clone(),
                newer_process: self.process.clone(),
            }
        })
    }
}

type SiteKey<'a> = (&'a [String], &'a [Frame]);

/// Matches callsites by (scope, frames); entries with the same key on one side (rare: a
/// report already merges them) are summed, saturating at `u64::MAX` like every [`Usage`] sum.
fn diff_sites(older: &[CallsiteReport], newer: &[CallsiteReport]) -> Vec<CallsiteDiff> {
    #[derive(Default)]
    struct Sides {
        older: (Usage, Usage),
        newer: (Usage, Usage),
        estimated: bool,
    }
    let mut map: BTreeMap<SiteKey<'_>, Sides> = BTreeMap::new();
    for (side, list) in [(0, older), (1, newer)] {
        for c in list {
            let e = map.entry((&c.scope, &c.frames)).or_default();
            let s = if side == 0 {
                &mut e.older
            } else {
                &mut e.newer
            };
            s.0 += c.retained;
            s.1 += c.allocated;
            e.estimated |= c.estimated;
        }
    }
    let mut out: Vec<CallsiteDiff> = map
        .into_iter()
        .map(|((scope, frames), s)| CallsiteDiff {
            scope: scope.to_vec(),
            frames: frames.to_vec(),
            older_retained: s.older.0,
            newer_retained: s.newer.0,
            retained_change: Change::between(s.older.0, s.newer.0),
            older_allocated: s.older.1,
            newer_allocated: s.newer.1,
            allocated_change: Change::between(s.older.1, s.newer.1),
            estimated: s.estimated,
        })
        .collect();
    // Stable sort over the key order: ties stay in (scope, frames) order.
    out.sort_by(|a, b| {
        b.retained_change
            .bytes
            .cmp(&a.retained_change.bytes)
            .then(b.retained_change.objects.cmp(&a.retained_change.objects))
            .then(b.allocated_change.bytes.cmp(&a.allocated_change.bytes))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_exact_for_any_u64() {
        let c = Change::between(Usage::new(0, 0), Usage::new(u64::MAX, 5));
        assert_eq!(
            c,
            Change {
                objects: u64::MAX.into(),
                bytes: 5
            }
        );
        let c = Change::between(Usage::new(u64::MAX, 5), Usage::new(0, 0));
        assert_eq!(
            c,
            Change {
                objects: -i128::from(u64::MAX),
                bytes: -5
            }
        );
    }
}
