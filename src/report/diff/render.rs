//! Rendering a [`ReportDiff`]: the text growth table with each growing job's fastest-growing
//! callsites, JSON, differential folded stacks and the differential flamegraph.
//!
//! Rules: everything here reads the diff only (never the two reports). Job names go through
//! `job_display_name`; a job's callsite rows name their scope path whenever the job's
//! callsites come from more than one path (a job's callsites include its nested jobs'), so
//! two rows never read the same unless they are the same callsite.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use super::{difference, CallsiteDiff, JobDiff, ReportDiff};
use crate::error::Error;
use crate::report::escape::job_display_name;
use crate::report::flame::{render, scale_shift, stack_line};
use crate::report::text::{grouped_wide, human_bytes, stack_text};
use crate::report::{FlameMetric, FlameOptions, AGE_BUCKETS};

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

/// A scope path as text: job names as every output shows them, outermost first, joined by
/// ` > ` (a name containing ` > ` is quoted by `job_display_name`); `(unscoped)` when empty.
fn path_text(scope: &[String]) -> String {
    if scope.is_empty() {
        return "(unscoped)".to_string();
    }
    let names: Vec<_> = scope.iter().map(|n| job_display_name(n)).collect();
    names.join(" > ")
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
                let parts: Vec<String> = AGE_BUCKETS
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
                // A job's callsites include its nested jobs': when the rows come from more
                // than one scope path, each names its path, so that the same stack under two
                // paths is two rows that read differently.
                let paths = growing.iter().map(|c| &c.scope).collect::<BTreeSet<_>>();
                let show_path = paths.len() > 1;
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
                    let path = if show_path {
                        format!("  in {}", path_text(&c.scope))
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "  {:>11}  {:>12}  {:>10}  {}{path}",
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
    let esc = crate::report::escape::xml_escape;
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
}
