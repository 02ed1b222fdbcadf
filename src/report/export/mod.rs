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
//! [`StackMode::Every`]: crate::StackMode::Every
//! [`StackMode::Sampled`]: crate::StackMode::Sampled

mod dhat;
#[cfg(feature = "pprof")]
mod pprof;
#[cfg(feature = "http")]
pub(crate) use pprof::PprofDefault;
#[cfg(feature = "pprof")]
mod proto;

use super::{Frame, Report, Usage};
use crate::StackMode;

/// The job name used for memory allocated outside any scope.
const UNSCOPED: &str = "(unscoped)";

/// One exported stack: a callsite, or a job's figures when the report has no callsites.
struct Entry<'a> {
    /// Job names, outermost first (empty: unscoped).
    scope: Vec<&'a str>,
    /// Innermost first; empty for the per-job fallback.
    frames: &'a [Frame],
    allocated: Usage,
    retained: Usage,
}

impl Entry<'_> {
    /// The innermost job, or `(unscoped)`.
    fn job(&self) -> &str {
        self.scope.last().copied().unwrap_or(UNSCOPED)
    }

    /// The whole scope path, `outer > inner`, or `(unscoped)`.
    #[cfg(feature = "pprof")]
    fn scope_path(&self) -> String {
        if self.scope.is_empty() {
            UNSCOPED.to_string()
        } else {
            self.scope.join(" > ")
        }
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
                frames: &c.frames,
                allocated: c.allocated,
                retained: c.retained,
            })
            .collect();
    }
    let mut out: Vec<Entry<'_>> = report
        .jobs
        .iter()
        .filter(|j| !j.exclusive.allocated.is_zero())
        .map(|j| Entry {
            scope: vec![j.name.as_str()],
            frames: &[],
            allocated: j.exclusive.allocated,
            retained: j.exclusive.retained,
        })
        .collect();
    if !report.totals.unscoped_allocated.is_zero() {
        out.push(Entry {
            scope: Vec::new(),
            frames: &[],
            allocated: report.totals.unscoped_allocated,
            retained: report.totals.unscoped_live,
        });
    }
    out
}

/// Whether any exported figure is an estimate from sampled stacks.
fn estimated(report: &Report) -> bool {
    report.callsites.iter().any(|c| c.estimated)
}

/// The stack mode in words, for comments in exported files.
fn describe_stack_mode(mode: StackMode) -> String {
    match mode {
        StackMode::Off => "stacks off".to_string(),
        StackMode::Every => "a stack for every allocation".to_string(),
        StackMode::Sampled { mean_bytes } => {
            format!("sampled stacks, one per {mean_bytes} bytes on average")
        }
    }
}
