//! `/metrics`: a [`Report`] in the Prometheus text exposition format, version 0.0.4.
//!
//! Rules: one `# HELP` and `# TYPE` per family, then its samples; base units in names
//! (`_bytes`), counters end in `_total`; label values escaped (`\\`, `\"`, `\n`); at most
//! `max_jobs` jobs get series, by retained bytes, the rest summed under `job="(other)"`. Pure:
//! report in, text out (the report is taken without callsites, see `report_figures`).
//!
//! Label values are job names as they are, except names starting with `"` or `(`, which are
//! written as every other output shows them ([`job_display_name`]: a job named `(other)` is
//! `"(other)"`). Plain names never start with either, quoted display names always start with
//! `"`, and `(other)` is only the summed series: distinct jobs never share a series.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::report::{job_display_name, Report, AGE_BUCKETS};

/// The label value of the jobs beyond the top N.
pub(crate) const OTHER: &str = "(other)";

/// The content type of the format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One series' figures.
#[derive(Clone, Default)]
struct JobFigures {
    runs: u64,
    allocated_bytes: u64,
    allocated_objects: u64,
    retained_bytes: u64,
    retained_objects: u64,
    peak_bytes: u64,
    /// Retained bytes by `AGE_BUCKETS`.
    retained_by_age: [u64; 5],
}

impl JobFigures {
    fn add(&mut self, o: &JobFigures) {
        self.runs = self.runs.saturating_add(o.runs);
        self.allocated_bytes = self.allocated_bytes.saturating_add(o.allocated_bytes);
        self.allocated_objects = self.allocated_objects.saturating_add(o.allocated_objects);
        self.retained_bytes = self.retained_bytes.saturating_add(o.retained_bytes);
        self.retained_objects = self.retained_objects.saturating_add(o.retained_objects);
        self.peak_bytes = self.peak_bytes.max(o.peak_bytes);
        for (a, b) in self.retained_by_age.iter_mut().zip(o.retained_by_age) {
            *a = a.saturating_add(b);
        }
    }
}

/// A label value escaped per the text format: backslash, double quote and line feed.
pub(crate) fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The `job` label value of job `name` (before escaping); see the module rules.
fn label_of(name: &str) -> Cow<'_, str> {
    if name.starts_with(['"', '(']) {
        job_display_name(name)
    } else {
        Cow::Borrowed(name)
    }
}

/// The report's figures as Prometheus text, with at most `max_jobs` job series (plus
/// `(other)`).
pub(crate) fn render(report: &Report, max_jobs: usize) -> String {
    // `report.jobs` is sorted by retained bytes, largest first.
    let mut series: Vec<(String, JobFigures)> = Vec::new();
    let mut other: Option<JobFigures> = None;
    for j in &report.jobs {
        let f = JobFigures {
            runs: j.runs,
            allocated_bytes: j.allocated.bytes,
            allocated_objects: j.allocated.objects,
            retained_bytes: j.retained.bytes,
            retained_objects: j.retained.objects,
            peak_bytes: j.peak_bytes,
            retained_by_age: j.retained_by_age().map(|u| u.bytes),
        };
        if series.len() < max_jobs {
            series.push((escape_label(&label_of(&j.name)), f));
        } else {
            other.get_or_insert_with(JobFigures::default).add(&f);
        }
    }
    if let Some(o) = other {
        series.push((OTHER.to_string(), o));
    }

    let mut out = String::with_capacity(256 + series.len() * 6 * 80);
    type Get = fn(&JobFigures) -> u64;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "allocscope_job_runs_total",
            "counter",
            "Finished runs of the job.",
            |f| f.runs,
        ),
        (
            "allocscope_job_allocated_bytes_total",
            "counter",
            "Bytes the job's runs allocated (nested jobs included).",
            |f| f.allocated_bytes,
        ),
        (
            "allocscope_job_allocated_objects_total",
            "counter",
            "Blocks the job's runs allocated (nested jobs included).",
            |f| f.allocated_objects,
        ),
        (
            "allocscope_job_retained_bytes",
            "gauge",
            "Bytes the job's runs allocated that are still live. Per job, the series without \
             `age` is the total and the five with `age` split it by the age in runs of the run \
             that allocated them (0, 1, 2-3, 4-7, 8+: runs since the job's newest finished \
             run; 8+ includes older runs and runs in progress), so a sum over the family counts \
             every job twice: totals are `allocscope_job_retained_bytes{age=\"\"}`, the split \
             `allocscope_job_retained_bytes{age!=\"\"}`.",
            |f| f.retained_bytes,
        ),
        (
            "allocscope_job_retained_objects",
            "gauge",
            "Blocks the job's runs allocated that are still live.",
            |f| f.retained_objects,
        ),
        (
            "allocscope_job_peak_bytes",
            "gauge",
            "Highest live bytes of any single finished run of the job.",
            |f| f.peak_bytes,
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (job, f) in &series {
            let _ = writeln!(out, "{name}{{job=\"{job}\"}} {}", get(f));
        }
        if name == "allocscope_job_retained_bytes" {
            // Five more series per job, in the same family: they sum to the one without `age`.
            for (job, f) in &series {
                for (age, bytes) in AGE_BUCKETS.iter().zip(f.retained_by_age) {
                    let _ = writeln!(out, "{name}{{job=\"{job}\",age=\"{age}\"}} {bytes}");
                }
            }
        }
    }

    let process: [(&str, &str, u64); 4] = [
        (
            "allocscope_heap_live_bytes",
            "Bytes of every live tracked block: jobs, unscoped and the tracker's own.",
            report.process.heap_live_bytes,
        ),
        (
            "allocscope_rss_bytes",
            "Resident set size of the process (0 when it cannot be read).",
            report.process.rss_bytes,
        ),
        (
            "allocscope_not_returned_bytes",
            "Estimate of freed memory the allocator keeps resident instead of returning it.",
            report.process.not_returned_bytes,
        ),
        (
            "allocscope_tracker_bytes",
            "Bytes allocscope itself holds (tables, reports, symbol caches).",
            report.process.tracker_bytes,
        ),
    ];
    for (name, help, v) in process {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    // RSS by part (parts add up to RSS); absent where the breakdown is unavailable.
    if let Some(b) = &report.process.breakdown {
        let name = "allocscope_rss_breakdown_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Resident memory by part; the parts add up to RSS (rust_heap: tracked \
             live blocks; c_heap: malloc outside Rust's allocator; not_returned: freed, kept by \
             glibc; tracker; file_backed; thread_stacks; other_anon)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (part, v) in b.parts() {
            let _ = writeln!(out, "{name}{{part=\"{part}\"}} {v}");
        }
    }
    render_guardrails(&mut out, report, &series);
    out
}

/// The trend and guardrail families: each job's retention slope and trend kind (for the jobs
/// with their own series), dumps written by reason.
fn render_guardrails(out: &mut String, report: &Report, series: &[(String, JobFigures)]) {
    let trends: Vec<(&str, &crate::series::Trend)> = report
        .jobs
        .iter()
        .zip(series)
        .filter(|(_, (label, _))| label != OTHER)
        .map(|(j, (label, _))| (label.as_str(), &j.trend))
        .collect();
    let _ = writeln!(
        out,
        "# HELP allocscope_job_retained_growth_bytes_per_run Growth of the job's retained bytes \
         per run: the least-squares slope over its runs after the warm-up (the TREND column)."
    );
    let _ = writeln!(
        out,
        "# TYPE allocscope_job_retained_growth_bytes_per_run gauge"
    );
    for (job, t) in &trends {
        let v = if t.bytes_per_run.is_finite() {
            t.bytes_per_run
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "allocscope_job_retained_growth_bytes_per_run{{job=\"{job}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP allocscope_job_trend The job's retention trend: 1 for its current kind \
         (growing, saturating, steady, not_enough_runs)."
    );
    let _ = writeln!(out, "# TYPE allocscope_job_trend gauge");
    for (job, t) in &trends {
        let kind = serde_json::to_value(t.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        let _ = writeln!(
            out,
            "allocscope_job_trend{{job=\"{job}\",trend=\"{kind}\"}} 1"
        );
    }
    let _ = writeln!(
        out,
        "# HELP allocscope_job_budget_breaches_total Finished runs of the job over a limit of \
         its budget (allocscope::budget), by limit."
    );
    let _ = writeln!(out, "# TYPE allocscope_job_budget_breaches_total counter");
    for (job, limit, n) in crate::budget::breach_counts() {
        let _ = writeln!(
            out,
            "allocscope_job_budget_breaches_total{{job=\"{}\",limit=\"{}\"}} {n}",
            escape_label(&label_of(&job)),
            limit.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP allocscope_dumps_total Reports written to disk by allocscope, by reason (run: \
         after a run retained the threshold; exit: finish(); memory_above: the memory line was \
         crossed; budget: a job exceeded its budget)."
    );
    let _ = writeln!(out, "# TYPE allocscope_dumps_total counter");
    for (reason, n) in crate::report::dump::dumps_written() {
        let _ = writeln!(
            out,
            "allocscope_dumps_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("<script>"), "<script>");
    }

    #[test]
    fn retained_bytes_by_age_sum_to_the_total() {
        let mut report = crate::report::report_figures();
        report.jobs.clear();
        let held = |run, bytes| crate::report::RunRetained {
            run,
            retained: crate::model::Usage::new(1, bytes),
        };
        report.jobs.push(crate::report::JobReport {
            name: "aged".to_string(),
            runs: 20,
            active_runs: 0,
            panicked_runs: 0,
            allocated: crate::model::Usage::new(9, 10_000),
            retained: crate::model::Usage::new(6, 1_111_111),
            peak_bytes: 0,
            exclusive: Default::default(),
            recent_runs: Vec::new(),
            callsites: Vec::new(),
            trend: Default::default(),
            // Ages 17, 12, 6, 3, 1, 0 (and 1 older).
            retained_by_run: vec![
                held(3, 1),
                held(8, 10),
                held(14, 100),
                held(17, 1000),
                held(19, 10_000),
                held(20, 100_000),
            ],
            retained_older: crate::model::Usage::new(1, 1_000_000),
        });
        let text = render(&report, 100);
        for (age, bytes) in [
            ("0", 100_000),
            ("1", 10_000),
            ("2-3", 1000),
            ("4-7", 100),
            ("8+", 1_000_011),
        ] {
            let line =
                format!("allocscope_job_retained_bytes{{job=\"aged\",age=\"{age}\"}} {bytes}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("allocscope_job_retained_bytes{job=\"aged\"} 1111111"));
        // The family holds the total and its split: its HELP names the query for each.
        let help = text
            .lines()
            .find(|l| l.starts_with("# HELP allocscope_job_retained_bytes "))
            .unwrap();
        assert!(
            help.contains("allocscope_job_retained_bytes{age=\"\"}"),
            "{help}"
        );
        assert!(
            help.contains("allocscope_job_retained_bytes{age!=\"\"}"),
            "{help}"
        );
        assert!(help.contains("counts every job twice"), "{help}");
    }

    #[test]
    fn jobs_named_like_the_summed_series_keep_their_own() {
        let mut report = crate::report::report_figures();
        report.jobs.clear();
        let names = [
            "(other)",
            "\"(other)\"",
            "(other jobs)",
            "plain",
            "new\nline",
            "(x",
        ];
        for (i, name) in names.iter().enumerate() {
            report.jobs.push(crate::report::JobReport {
                name: name.to_string(),
                runs: 1,
                active_runs: 0,
                panicked_runs: 0,
                allocated: crate::model::Usage::new(1, 100 + i as u64),
                retained: crate::model::Usage::new(1, 100 + i as u64),
                peak_bytes: 0,
                exclusive: Default::default(),
                recent_runs: Vec::new(),
                callsites: Vec::new(),
                trend: Default::default(),
                retained_by_run: Vec::new(),
                retained_older: Default::default(),
            });
        }
        let text = render(&report, 100);
        let labels: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("allocscope_job_runs_total{job=\""))
            .map(|l| l.rsplit_once("\"} ").unwrap().0)
            .collect();
        assert_eq!(
            labels,
            [
                r#"\"(other)\""#,
                r#"\"\\\"(other)\\\"\""#,
                "(other jobs)",
                "plain",
                "new\\nline",
                r#"\"(x\""#
            ]
        );
        // Six jobs, six series, and no summed series (none beyond the top 100).
        assert!(!text.contains("job=\"(other)\"}"));
        // Beyond the top N, they are summed under the bare `(other)`.
        let summed = render(&report, 2);
        assert!(
            summed.contains("allocscope_job_runs_total{job=\"(other)\"} 4"),
            "{summed}"
        );
    }

    #[test]
    fn trends_have_a_slope_and_one_kind_per_job_but_not_for_the_summed_series() {
        let mut report = crate::report::report_figures();
        report.jobs.clear();
        for (i, (name, kind, slope)) in [
            ("leaky", crate::series::TrendKind::Growing, 4096.5),
            ("cache", crate::series::TrendKind::Saturating, 0.0),
            ("late", crate::series::TrendKind::Steady, -3.0),
        ]
        .into_iter()
        .enumerate()
        {
            report.jobs.push(crate::report::JobReport {
                name: name.to_string(),
                runs: 9,
                active_runs: 0,
                panicked_runs: 0,
                allocated: crate::model::Usage::new(1, 1000 - i as u64),
                retained: crate::model::Usage::new(1, 1000 - i as u64),
                peak_bytes: 0,
                exclusive: Default::default(),
                recent_runs: Vec::new(),
                callsites: Vec::new(),
                trend: crate::series::Trend {
                    kind,
                    bytes_per_run: slope,
                    runs_considered: 8,
                },
                retained_by_run: Vec::new(),
                retained_older: Default::default(),
            });
        }
        let text = render(&report, 2);
        let lines = |prefix: &str| -> Vec<&str> {
            text.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        assert_eq!(
            lines("allocscope_job_retained_growth_bytes_per_run{"),
            [
                "allocscope_job_retained_growth_bytes_per_run{job=\"leaky\"} 4096.5",
                "allocscope_job_retained_growth_bytes_per_run{job=\"cache\"} 0",
            ]
        );
        assert_eq!(
            lines("allocscope_job_trend{"),
            [
                "allocscope_job_trend{job=\"leaky\",trend=\"growing\"} 1",
                "allocscope_job_trend{job=\"cache\",trend=\"saturating\"} 1",
            ]
        );
        assert_eq!(lines("allocscope_dumps_total{").len(), 4);
        assert!(text.contains("# TYPE allocscope_job_budget_breaches_total counter\n"));
    }
}
