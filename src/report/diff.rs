//! Comparing two reports: what grew between two snapshots, per job and per callsite.
//!
//! The "delta" view of heap-snapshot tools: take a report, let the program run, take another,
//! and [`Report::diff`] the two. Whatever keeps growing — a job that retains more at every
//! snapshot, a callsite whose live bytes only go up — comes first.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::escape::job_display_name;
use super::flame::{render, scale_shift, stack_line};
use super::text::{grouped_wide, human_bytes, stack_text};
use super::{
    CallsiteReport, FlameMetric, FlameOptions, Frame, JobReport, ProcessMemory, Report, Usage,
};
use crate::error::Error;

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

/// Options for [`ReportDiff::to_text_with`].
#[derive(Clone, Debug)]
pub struct DiffTextOptions {
    /// Show only this job (and its callsites).
    pub job: Option<String>,
    /// Show at most this many jobs, largest growth first (`None`: all that changed).
    pub max_jobs: Option<usize>,
    /// Growing callsites listed under each growing job (0: none).
    pub top_callsites: usize,
}

impl Default for DiffTextOptions {
    /// All jobs that changed, the 5 fastest-growing callsites of each growing job.
    fn default() -> Self {
        DiffTextOptions {
            job: None,
            max_jobs: None,
            top_callsites: 5,
        }
    }
}

/// Bytes with a sign, in human units: `+1.5 MiB`, `-200 B`, `0 B`. The magnitude of a
/// difference of two `u64` figures fits a `u64`; anything larger (impossible from
/// [`Report::diff`]) is shown saturated rather than wrapped.
fn signed_bytes(v: i128) -> String {
    let mag = |v: i128| human_bytes(u64::try_from(v.unsigned_abs()).unwrap_or(u64::MAX));
    match v {
        0 => "0 B".to_string(),
        v if v > 0 => format!("+{}", mag(v)),
        v => format!("-{}", mag(v)),
    }
}

/// A count with a sign and thousands separators: `+1,000`, `-3`, `0` (exact for any `i128`).
fn signed_count(v: i128) -> String {
    match v {
        0 => "0".to_string(),
        v if v > 0 => format!("+{}", grouped_wide(v.unsigned_abs())),
        v => format!("-{}", grouped_wide(v.unsigned_abs())),
    }
}

fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{:01} s", s, ms % 1000 / 100),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

impl ReportDiff {
    /// The RSS and not-returned change line of the text diff.
    fn memory_change_line(&self) -> String {
        let (o, n) = (&self.older_process, &self.newer_process);
        if o.allocator.is_empty() && n.allocator.is_empty() {
            return "memory: RSS not recorded (version-1 reports)".into();
        }
        let d = |a: u64, b: u64| signed_bytes(difference(a, b));
        let rss = if o.rss_bytes == 0 || n.rss_bytes == 0 {
            "RSS unavailable in one report".to_string()
        } else {
            format!(
                "RSS {} -> {} ({})",
                human_bytes(o.rss_bytes),
                human_bytes(n.rss_bytes),
                d(o.rss_bytes, n.rss_bytes)
            )
        };
        let nr = if o.not_returned_method.is_empty()
            || n.not_returned_method.is_empty()
            || o.not_returned_method == "unavailable"
            || n.not_returned_method == "unavailable"
        {
            "not returned to the OS: unknown in one report".to_string()
        } else {
            format!(
                "not returned to the OS {} -> {} ({})",
                human_bytes(o.not_returned_bytes),
                human_bytes(n.not_returned_bytes),
                d(o.not_returned_bytes, n.not_returned_bytes)
            )
        };
        format!("memory: {rss}; {nr}")
    }

    /// The growth table and each growing job's fastest-growing callsites, as text.
    pub fn to_text(&self) -> String {
        self.to_text_with(&DiffTextOptions::default())
    }

    /// The text rendering with options (one job, how many jobs, how many callsites).
    pub fn to_text_with(&self, opts: &DiffTextOptions) -> String {
        let mut out = String::new();
        let (o, n) = (self.older_timestamp_unix_ms, self.newer_timestamp_unix_ms);
        let when = if n >= o {
            format!("over {}", span(n - o))
        } else {
            format!(
                "note: the newer report was taken {} BEFORE the older one (arguments swapped?)",
                span(o - n)
            )
        };
        let _ = writeln!(
            out,
            "allocscope diff: live {} -> {} ({}, {} objects), {when}",
            human_bytes(self.older_live.bytes),
            human_bytes(self.newer_live.bytes),
            signed_bytes(self.live_change.bytes),
            signed_count(self.live_change.objects),
        );
        let _ = writeln!(out, "{}", self.memory_change_line());
        let changed = |j: &&JobDiff| {
            !j.retained_change.is_zero()
                || !j.allocated_change.is_zero()
                || j.older_runs != j.newer_runs
        };
        let unchanged = self.jobs.iter().filter(|j| !changed(j)).count();
        let shown: Vec<&JobDiff> = self
            .jobs
            .iter()
            .filter(|j| match &opts.job {
                Some(name) => &j.name == name,
                None => changed(j),
            })
            .take(opts.max_jobs.unwrap_or(usize::MAX))
            .collect();
        if shown.is_empty() {
            let _ = match &opts.job {
                Some(name) => writeln!(
                    out,
                    "\n(no job named {} in either report)",
                    job_display_name(name)
                ),
                None => writeln!(out, "\n(no job changed)"),
            };
            return out;
        }
        // Names as every output shows them (quoted and escaped when not plain), never
        // truncated: two jobs must not look alike. Longer names push their row to the right.
        let names: Vec<_> = shown.iter().map(|j| job_display_name(&j.name)).collect();
        let width = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(3)
            .clamp(3, 40);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>7}  {:>12}  {:>12}  {:>11}  {:>12}  {:>12}",
            "JOB", "RUNS", "OLD RETAINED", "NEW RETAINED", "CHANGE", "OBJS CHANGE", "ALLOC CHANGE",
        );
        for (j, name) in shown.iter().zip(&names) {
            let status = match (j.in_older, j.in_newer) {
                (false, _) => " (new)",
                (_, false) => " (gone)",
                _ => "",
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>7}  {:>12}  {:>12}  {:>11}  {:>12}  {:>12}{status}",
                name,
                signed_count(difference(j.older_runs, j.newer_runs)),
                human_bytes(j.older_retained.bytes),
                human_bytes(j.newer_retained.bytes),
                signed_bytes(j.retained_change.bytes),
                signed_count(j.retained_change.objects),
                signed_bytes(j.allocated_change.bytes),
            );
            if j.has_ages && j.retained_change_by_age.iter().any(|c| !c.is_zero()) {
                let parts: Vec<String> = super::AGE_BUCKETS
                    .iter()
                    .zip(&j.retained_change_by_age)
                    .filter(|(_, c)| !c.is_zero())
                    .map(|(age, c)| format!("{age} {}", signed_bytes(c.bytes)))
                    .collect();
                let _ = writeln!(out, "  by age of run (runs ago): {}", parts.join(", "));
            }
        }
        if opts.job.is_none() && unchanged > 0 {
            let s = if unchanged == 1 { "" } else { "s" };
            let _ = writeln!(out, "({unchanged} unchanged job{s} not shown)");
        }
        if opts.top_callsites > 0 {
            for j in &shown {
                let growing: Vec<&CallsiteDiff> = j
                    .callsites
                    .iter()
                    .filter(|c| c.retained_change.bytes > 0 || c.retained_change.objects > 0)
                    .take(opts.top_callsites)
                    .collect();
                if growing.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "\n{} — fastest-growing callsites (retained)",
                    job_display_name(&j.name)
                );
                let _ = writeln!(
                    out,
                    "  {:>11}  {:>12}  {:>10}  CALLSITE",
                    "CHANGE", "OBJS CHANGE", "NEW"
                );
                for c in &growing {
                    let est = if c.estimated { "~" } else { "" };
                    let _ = writeln!(
                        out,
                        "  {:>11}  {:>12}  {:>10}  {}",
                        format!("{est}{}", signed_bytes(c.retained_change.bytes)),
                        format!("{est}{}", signed_count(c.retained_change.objects)),
                        format!("{est}{}", human_bytes(c.newer_retained.bytes)),
                        stack_text(&c.frames),
                    );
                }
                if growing.iter().any(|c| c.estimated) {
                    let _ = writeln!(out, "  (~ marks estimates from sampled stacks)");
                }
            }
        }
        out
    }

    /// The diff as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        crate::thread::untracked(|| {
            serde_json::to_string_pretty(self).expect("allocscope: a diff always serializes")
        })
    }

    /// Differential folded stacks: `root;caller;callee OLDER NEWER` per stack, sorted — the
    /// input format of differential flamegraphs (inferno's `flamegraph` and Brendan Gregg's
    /// `difffolded.pl` output). Stacks are built as in [`Report::folded`] (and leave unscoped
    /// memory out when [`FlameOptions::include_unscoped`] is off); stacks that are zero on
    /// both sides are left out. Figures of stacks that fold alike are summed exactly.
    pub fn folded(&self, opts: &FlameOptions) -> String {
        let mut out = String::new();
        for (stack, (older, newer)) in self.folded_lines(opts) {
            let _ = writeln!(out, "{stack} {older} {newer}");
        }
        out
    }

    fn folded_lines(&self, opts: &FlameOptions) -> BTreeMap<String, (u128, u128)> {
        let sites: &[CallsiteDiff] = match &opts.job {
            Some(name) => self
                .jobs
                .iter()
                .find(|j| &j.name == name)
                .map_or(&[], |j| j.callsites.as_slice()),
            None => &self.callsites,
        };
        let mut lines: BTreeMap<String, (u128, u128)> = BTreeMap::new();
        for c in sites.iter().filter(|c| opts.keeps(&c.scope)) {
            let (older, newer) = match opts.metric {
                FlameMetric::RetainedBytes => (c.older_retained.bytes, c.newer_retained.bytes),
                FlameMetric::RetainedObjects => {
                    (c.older_retained.objects, c.newer_retained.objects)
                }
                FlameMetric::AllocatedBytes => (c.older_allocated.bytes, c.newer_allocated.bytes),
                FlameMetric::AllocatedObjects => {
                    (c.older_allocated.objects, c.newer_allocated.objects)
                }
            };
            if older == 0 && newer == 0 {
                continue;
            }
            let stack = stack_line(&c.scope, &c.frames, opts);
            let e = lines.entry(stack).or_insert((0, 0));
            e.0 += u128::from(older);
            e.1 += u128::from(newer);
        }
        lines
    }

    /// A differential flamegraph of growth, rendered by inferno: frame widths are the newer
    /// report's figures; red frames grew since the older report, blue ones shrank, with
    /// stronger colours for larger changes. (A callsite that dropped to zero has no width;
    /// [`folded`](Self::folded) still lists it.) An empty diff gives a valid SVG saying so.
    /// Any figures render (very large ones scaled, as the subtitle then says), and the SVG is
    /// well-formed XML whatever the names.
    pub fn flamegraph_svg(&self, opts: &FlameOptions) -> Result<String, Error> {
        crate::thread::untracked(|| {
            let lines = self.folded_lines(opts);
            let title = opts.title_or("change in ");
            if lines.values().all(|&(_, newer)| newer == 0) {
                return Ok(empty_svg(&title));
            }
            let older_total: u128 = lines.values().map(|v| v.0).sum();
            let newer_total: u128 = lines.values().map(|v| v.1).sum();
            let shift = scale_shift(older_total.max(newer_total));
            let mut folded = String::new();
            for (stack, (older, newer)) in &lines {
                let _ = writeln!(folded, "{stack} {} {}", older >> shift, newer >> shift);
            }
            let mut options = inferno::flamegraph::Options::default();
            options.title = title;
            options.subtitle = Some("widths: newer report; red: grew, blue: shrank".to_string());
            options.count_name = opts.metric.unit().to_string();
            options.deterministic = true;
            render(options, &folded, shift, opts, "differential flamegraph")
        })
    }
}

fn empty_svg(title: &str) -> String {
    let esc = super::escape::xml_escape;
    format!(
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="100" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="rgb(240,240,240)"/>
<text x="600" y="30" font-size="17" font-family="Verdana" text-anchor="middle">{}</text>
<text x="600" y="65" font-size="14" font-family="Verdana" text-anchor="middle">Nothing to show: no callsite has this figure in the newer report.</text>
</svg>
"#,
        esc(title)
    )
}

impl fmt::Display for ReportDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_figures() {
        assert_eq!(signed_bytes(0), "0 B");
        assert_eq!(signed_bytes(1536), "+1.5 KiB");
        assert_eq!(signed_bytes(-200), "-200 B");
        // The extremes of a difference of two u64 figures.
        assert_eq!(signed_bytes(-i128::from(u64::MAX)), "-16.0 EiB");
        assert_eq!(signed_bytes(i128::from(u64::MAX)), "+16.0 EiB");
        assert_eq!(signed_count(1000), "+1,000");
        assert_eq!(signed_count(-3), "-3");
        assert_eq!(
            signed_count(difference(1, u64::MAX)),
            "+18,446,744,073,709,551,614"
        );
        assert_eq!(
            signed_count(difference(u64::MAX, 0)),
            "-18,446,744,073,709,551,615"
        );
    }

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
