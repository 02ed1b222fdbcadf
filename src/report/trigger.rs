//! Why a report was written: the memory line crossed or the budget breached that made a
//! guardrail dump it, and the jobs running at that moment.
//!
//! Rules: plain serde data, absent from reports nothing triggered (`Report::trigger` is
//! `None` and not written), every field defaulted so older and newer files read.

use serde::{Deserialize, Serialize};

/// What made a guardrail write a report ([`Report::trigger`](crate::Report::trigger)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DumpTrigger {
    /// `memory_above` (the memory line of [`timeline::set_dump_above`](crate::timeline::set_dump_above)
    /// was crossed) or `budget` (a job's [`Budget`](crate::budget::Budget) was exceeded).
    pub reason: String,
    /// One line a person reads: what crossed what.
    pub message: String,
    /// The line in bytes (memory dumps; 0 for budgets).
    pub line_bytes: u64,
    /// The figure that crossed it: the larger of RSS and the cgroup's working set when the
    /// line is a share of a cgroup limit, else RSS.
    pub figure_bytes: u64,
    /// The process's RSS at the check.
    pub rss_bytes: u64,
    /// The cgroup's working set (usage less inactive file pages) at the check, 0 when not
    /// read.
    pub cgroup_working_set_bytes: u64,
    /// The memory limit (0 when unknown) and where it comes from.
    pub limit_bytes: u64,
    /// `cgroup v2 memory.max`, `cgroup v1 memory.limit_in_bytes` or `physical memory`.
    pub limit_source: String,
    /// The jobs with runs in progress at that moment, longest running first.
    pub active: Vec<ActiveJob>,
}

/// A job with runs in progress when a report was triggered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ActiveJob {
    /// The job's name.
    #[serde(deserialize_with = "crate::model::read_job_name")]
    pub job: String,
    /// Its runs in progress.
    pub active_runs: u64,
    /// Since when it has had runs in progress without a break (milliseconds since the Unix
    /// epoch): the start of its oldest run in progress when runs do not overlap, earlier when
    /// they do. 0 when unknown.
    pub since_unix_ms: u64,
}
