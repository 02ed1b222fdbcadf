//! Exports of a [`Report`] to the formats of existing tools.
//!
//! * [`Report::to_pprof`] (cargo feature `pprof`): a gzipped `profile.proto`, the format of
//!   `go tool pprof` and of continuous-profiling backends (Pyroscope, Parca, Grafana), with
//!   Go's four heap sample types and the job as a sample label.
//! * [`Report::to_dhat_json`] (always available): the JSON of `valgrind --tool=dhat` and
//!   dhat-rs, viewable in DHAT's `dh_view.html`.
//!
//! Both are built from the report's callsites ([`Report::callsites`], every scope and
//! unscoped), so they need a report taken with stacks on ([`StackMode::Every`] for exact
//! figures, [`StackMode::Sampled`] for estimates). A report without any callsite (stacks
//! off) is still exported, with one entry per job holding its exclusive figures and one for
//! unscoped memory, each under a pseudo-frame naming the job instead of a stack.
//!
//! Job names are written as [`job_display_name`](crate::job_display_name) shows them (in
//! pprof labels and pseudo-frames, DHAT job frames), so distinct jobs stay distinct and a
//! job named `(unscoped)` or `""` is not taken for unscoped memory or a missing label.
//!
//! [`StackMode::Every`]: crate::StackMode::Every
//! [`StackMode::Sampled`]: crate::StackMode::Sampled

mod dhat;
#[cfg(feature = "pprof")]
mod pprof;
#[cfg(feature = "http")]
pub(crate) use pprof::{live_pprof, PprofDefault};
#[cfg(feature = "pprof")]
mod proto;

use std::borrow::Cow;

use super::escape::{job_display_name, UNSCOPED};
use super::{Frame, Report, Usage};
use crate::model::StackMode;

/// One exported stack: a callsite, or a job's figures when the report has no callsites.
struct Entry<'a> {
    /// Job names, outermost first (empty: unscoped).
    scope: Vec<&'a str>,
    /// Innermost first; empty for the per-job fallback.
    frames: Frames<'a>,
    allocated: Usage,
    retained: Usage,
    /// The callsite's highest live bytes (at least `retained`; just `retained` for the
    /// per-job fallback, which has no peak of its own).
    peak_bytes: u64,
}

impl Entry<'_> {
    /// The innermost job as outputs show it ([`job_display_name`]), or `(unscoped)`: a job
    /// named `(unscoped)`, `""` or `a;b` keeps a label of its own.
    fn job(&self) -> Cow<'_, str> {
        self.scope
            .last()
            .map_or(Cow::Borrowed(UNSCOPED), |s| job_display_name(s))
    }

    /// The whole scope path, `outer > inner` (display names, which never contain ` > `), or
    /// `(unscoped)`.
    #[cfg(feature = "pprof")]
    fn scope_path(&self) -> String {
        if self.scope.is_empty() {
            UNSCOPED.to_string()
        } else {
            let names: Vec<Cow<'_, str>> = self.scope.iter().map(|s| job_display_name(s)).collect();
            names.join(" > ")
        }
    }
}

/// The frames of an exported stack: a report callsite's, or frame ids of the stack table
/// (the live profile, built without copying frames out; see `pprof::live_pprof`).
#[derive(Clone, Copy)]
enum Frames<'a> {
    Slice(&'a [Frame]),
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Table {
        ids: &'a [u32],
        table: &'a [Frame],
    },
}

impl<'a> Frames<'a> {
    fn len(self) -> usize {
        match self {
            Frames::Slice(s) => s.len(),
            Frames::Table { ids, .. } => ids.len(),
        }
    }

    #[cfg_attr(not(feature = "pprof"), allow(dead_code))]
    fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Each frame, innermost first, with its id in the stack table when it has one.
    fn iter(self) -> impl Iterator<Item = (Option<u32>, &'a Frame)> {
        let (slice, ids, table): (&'a [Frame], &'a [u32], &'a [Frame]) = match self {
            Frames::Slice(s) => (s, &[], &[]),
            Frames::Table { ids, table } => (&[], ids, table),
        };
        slice.iter().map(|f| (None, f)).chain(
            ids.iter()
                .filter_map(move |&id| Some((Some(id), table.get(id as usize)?))),
        )
    }
}

/// What the exports are built from: the callsites, or (none recorded) per-job figures.
/// Entries with nothing allocated are left out.
fn entries(report: &Report) -> Vec<Entry<'_>> {
    if !report.callsites.is_empty() {
        return report
            .callsites
            .iter()
            .filter(|c| !(c.allocated.is_zero() && c.retained.is_zero()))
            .map(|c| Entry {
                scope: c.scope.iter().map(String::as_str).collect(),
                frames: Frames::Slice(&c.frames),
                allocated: c.allocated,
                retained: c.retained,
                peak_bytes: c.peak_bytes.max(c.retained.bytes),
            })
            .collect();
    }
    let mut out: Vec<Entry<'_>> = report
        .jobs
        .iter()
        .filter(|j| !j.exclusive.allocated.is_zero())
        .map(|j| Entry {
            scope: vec![j.name.as_str()],
            frames: Frames::Slice(&[]),
            allocated: j.exclusive.allocated,
            retained: j.exclusive.retained,
            peak_bytes: j.exclusive.retained.bytes,
        })
        .collect();
    if !report.totals.unscoped_allocated.is_zero() {
        out.push(Entry {
            scope: Vec::new(),
            frames: Frames::Slice(&[]),
            allocated: report.totals.unscoped_allocated,
            retained: report.totals.unscoped_live,
            peak_bytes: report.totals.unscoped_live.bytes,
        });
    }
    out
}

/// Whether any exported figure is an estimate from sampled stacks.
fn estimated(report: &Report) -> bool {
    report.callsites.iter().any(|c| c.estimated)
}

/// The stack mode in words, for comments in exported files (`stacks: every allocation
/// (exact)`, the words of every output).
fn describe_stack_mode(mode: StackMode) -> String {
    format!("stacks: {}", super::text::stack_mode_words(mode))
}
