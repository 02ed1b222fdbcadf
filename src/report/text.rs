//! The text rendering: a job table like `ps`/`top`, and each job's top callsites.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::escape::{frame_text, job_display_name};
use super::{CallsiteReport, Frame, JobReport, ProcessMemory, Report, TrendKind};
use crate::callsite::StackMode;

/// Bytes in human units (B, KiB, MiB, GiB, TiB, PiB, EiB): any `u64` has a unit.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // Rounded as printed: a figure that would print as 1024 of a unit is 1.0 of the next
    // (1,048,575 B is "1.0 MiB", never "1024 KiB"), and one that rounds to 100 loses its
    // decimal ("100 KiB", never "100.0 KiB").
    if v.round() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if (v * 10.0).round() >= 1000.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// An integer with thousands separators.
pub(crate) fn grouped(n: u64) -> String {
    grouped_wide(n.into())
}

/// [`grouped`] for the wider integers of differences and sums.
pub(crate) fn grouped_wide(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The stack mode in words, as every output states it: `off`, `every allocation (exact)`,
/// `sampled, one per 512 KiB (estimates)`.
pub(crate) fn stack_mode_words(mode: StackMode) -> String {
    match mode {
        StackMode::Off => "off".into(),
        StackMode::Every => "every allocation (exact)".into(),
        StackMode::Sampled { mean_bytes } => {
            format!("sampled, one per {} (estimates)", human_bytes(mean_bytes))
        }
    }
}

/// Which figure orders (and selects) the callsites listed under each job in text output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallsiteOrder {
    /// Bytes still live (the default): where the job's retained memory was allocated.
    #[default]
    Retained,
    /// Bytes allocated in total: where a job that retains nothing spends its allocations.
    Allocated,
    /// Each callsite's highest live bytes ([`CallsiteReport::peak_bytes`]): what made the
    /// job's memory peak, even if it was freed since.
    Peak,
}

impl CallsiteOrder {
    /// The name used on the command line: `retained`, `allocated` or `peak`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallsiteOrder::Retained => "retained",
            CallsiteOrder::Allocated => "allocated",
            CallsiteOrder::Peak => "peak",
        }
    }

    /// Parses a name as produced by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Result<CallsiteOrder, crate::error::Error> {
        match s {
            "retained" => Ok(CallsiteOrder::Retained),
            "allocated" => Ok(CallsiteOrder::Allocated),
            "peak" => Ok(CallsiteOrder::Peak),
            other => Err(crate::error::Error::InvalidConfig(format!(
                "unknown callsite order {other:?}: expected retained, allocated or peak"
            ))),
        }
    }

    /// The callsite figure this order sorts by.
    fn key(self, c: &CallsiteReport) -> u64 {
        match self {
            CallsiteOrder::Retained => c.retained.bytes,
            CallsiteOrder::Allocated => c.allocated.bytes,
            // Never below what it holds now (reports written before peaks were recorded
            // have 0).
            CallsiteOrder::Peak => c.peak_bytes.max(c.retained.bytes),
        }
    }

    /// The job figure callsites of this order add up to (for peak: the job's peak).
    fn job_total(self, j: &JobReport) -> u64 {
        match self {
            CallsiteOrder::Retained => j.retained.bytes,
            CallsiteOrder::Allocated => j.allocated.bytes,
            CallsiteOrder::Peak => j.peak_bytes.max(j.retained.bytes),
        }
    }
}

/// The order of the job table ([`TextOptions::sort`], CLI `show --sort`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortBy {
    /// Retained bytes, largest first (the default).
    #[default]
    Retained,
    /// Allocated objects, most first: the jobs that churn the allocator.
    AllocatedObjects,
    /// Highest run peak, largest first.
    Peak,
    /// Growing jobs first (fastest growth first), then saturating, steady, and jobs with too
    /// few runs.
    Trend,
}

impl SortBy {
    /// Parses `retained`, `allocated-objects`, `peak` or `trend`.
    pub fn parse(text: &str) -> Option<SortBy> {
        match text {
            "retained" => Some(SortBy::Retained),
            "allocated-objects" => Some(SortBy::AllocatedObjects),
            "peak" => Some(SortBy::Peak),
            "trend" => Some(SortBy::Trend),
            _ => None,
        }
    }
}

/// Jobs whose runs allocate more objects than this on average are flagged by default
/// ([`TextOptions::flag_objects_per_run`]).
pub(crate) const DEFAULT_FLAG_OBJECTS_PER_RUN: u64 = 1_000_000;

/// Freed-but-kept memory the text advises about: at least this much ...
const ADVICE_MIN_BYTES: u64 = 16 << 20;
/// ... and at least this share of RSS (percent).
const ADVICE_MIN_PERCENT: u64 = 25;
/// Heap outside Rust's allocator the text points at the `malloc` feature for: at least
/// `ADVICE_MIN_BYTES` and this share of RSS (percent).
const C_HEAP_ADVICE_PERCENT: u64 = 10;

/// Options for [`Report::to_text_with`].
#[derive(Clone, Debug)]
pub struct TextOptions {
    /// Show only this job (and its callsites).
    pub job: Option<String>,
    /// Callsites listed under each job (0: none).
    pub top_callsites: usize,
    /// Show at most this many jobs (`None`: all), the first ones in [`sort`](Self::sort) order.
    pub max_jobs: Option<usize>,
    /// Which callsites are listed, largest first: by retained (default), allocated or peak
    /// bytes (CLI: `show --callsites-by`).
    pub callsites_by: CallsiteOrder,
    /// The order of the job table.
    pub sort: SortBy,
    /// Flag jobs whose runs allocate more than this many objects per run on average
    /// (allocated objects / finished runs), the way APM tools flag allocation-heavy
    /// transactions; `u64::MAX` turns it off. Default
    /// [`DEFAULT_FLAG_OBJECTS_PER_RUN`](Self::DEFAULT_FLAG_OBJECTS_PER_RUN).
    pub flag_objects_per_run: u64,
}

impl TextOptions {
    /// The default [`flag_objects_per_run`](Self::flag_objects_per_run): one million.
    pub const DEFAULT_FLAG_OBJECTS_PER_RUN: u64 = DEFAULT_FLAG_OBJECTS_PER_RUN;
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            job: None,
            top_callsites: 5,
            max_jobs: None,
            callsites_by: CallsiteOrder::Retained,
            sort: SortBy::Retained,
            flag_objects_per_run: DEFAULT_FLAG_OBJECTS_PER_RUN,
        }
    }
}

/// Why a job with memory (retained, allocated or at its peak, as `order` says) lists no
/// callsite, and how to get callsites; `None` when it has callsites for that figure (or no
/// such memory). The text report prints it under the job table; other renderings (HTML)
/// reuse it.
pub(crate) fn missing_callsites_hint(
    mode: StackMode,
    j: &JobReport,
    order: CallsiteOrder,
) -> Option<String> {
    let total = order.job_total(j);
    if total == 0 || j.callsites.iter().any(|c| order.key(c) > 0) {
        return None;
    }
    let what = match order {
        CallsiteOrder::Retained => "retains",
        CallsiteOrder::Allocated => "allocated",
        CallsiteOrder::Peak => "peaked at",
    };
    let name = job_display_name(&j.name);
    let size = human_bytes(total);
    Some(match mode {
        StackMode::Sampled { mean_bytes } => {
            // A mean at most an eighth of the figure samples it ~8 times on average.
            let smaller = (total / 8).clamp(1, mean_bytes.saturating_sub(1).max(1));
            let smaller = 1u64 << (63 - smaller.leading_zeros());
            format!(
                "{name} {what} {size} but no callsite of it was sampled (one sample per {} \
                 on average); for callsites, run with ALLOCSCOPE_STACKS=every (exact) or a \
                 smaller mean such as ALLOCSCOPE_STACKS={}",
                human_bytes(mean_bytes),
                short_bytes(smaller),
            )
        }
        StackMode::Off => format!(
            "{name} {what} {size}; stacks are off, so no callsite was recorded: run with \
             ALLOCSCOPE_STACKS=every (exact) or ALLOCSCOPE_STACKS=sampled for callsites"
        ),
        StackMode::Every => format!(
            "{name} {what} {size} but no callsite of it was recorded (stacks were turned on \
             after it allocated, or the stack table was full); set ALLOCSCOPE_STACKS=every \
             before the program starts"
        ),
    })
}

/// A byte count in the `ALLOCSCOPE_STACKS` syntax: `512`, `64k`, `2m`.
fn short_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}m", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}k", n >> 10),
        n => n.to_string(),
    }
}

/// The AGE column: which runs hold what the job retains (`JobReport::retained_by_run`):
/// `only the latest run`, `runs 1–3`, `27 runs hold 120 KiB each` (four or more runs holding
/// within 25% of each other), `5 runs, 3–40`, with `+ older` when runs beyond the ledger's
/// window (or no finished run) hold some too; `-` when nothing is held or the report has no
/// ledger (older files).
pub(crate) fn age_text(j: &JobReport) -> String {
    let held = j.retained_by_run.as_slice();
    let older = !j.retained_older.is_zero();
    let mut text = match held {
        [] if older => return "older runs".to_string(),
        [] => return "-".to_string(),
        [one] if one.run == j.runs => "only the latest run".to_string(),
        [one] => format!("run {}", one.run),
        [first, .., last] => {
            let n = held.len() as u64;
            let bytes = held.iter().map(|r| r.retained.bytes);
            let (min, max) = (bytes.clone().min().unwrap_or(0), bytes.max().unwrap_or(0));
            if n >= 4 && max - min <= min / 4 {
                let avg = held.iter().map(|r| r.retained.bytes).sum::<u64>() / n;
                format!("{n} runs hold {} each", human_bytes(avg))
            } else if last.run - first.run + 1 == n {
                format!("runs {}\u{2013}{}", first.run, last.run)
            } else {
                format!("{n} runs, {}\u{2013}{}", first.run, last.run)
            }
        }
    };
    if older {
        text.push_str(" + older");
    }
    text
}

/// Average objects allocated per finished run.
fn objects_per_run(j: &JobReport) -> u64 {
    j.allocated.objects.checked_div(j.runs).unwrap_or(0)
}

/// Sorts jobs for the table.
fn sort_jobs(jobs: &mut [&JobReport], by: SortBy) {
    let rank = |k: TrendKind| match k {
        TrendKind::Leaking => 0,
        TrendKind::Growing => 1,
        TrendKind::Saturating => 2,
        TrendKind::Replaced => 3,
        TrendKind::Steady => 4,
        TrendKind::NotEnoughRuns => 5,
    };
    jobs.sort_by(|a, b| {
        let primary = match by {
            SortBy::Retained => b.retained.bytes.cmp(&a.retained.bytes),
            SortBy::AllocatedObjects => b.allocated.objects.cmp(&a.allocated.objects),
            SortBy::Peak => b.peak_bytes.cmp(&a.peak_bytes),
            SortBy::Trend => rank(a.trend.kind).cmp(&rank(b.trend.kind)).then(
                b.trend
                    .bytes_per_run
                    .partial_cmp(&a.trend.bytes_per_run)
                    .unwrap_or(std::cmp::Ordering::Equal),
            ),
        };
        primary
            .then(b.retained.bytes.cmp(&a.retained.bytes))
            .then(b.allocated.bytes.cmp(&a.allocated.bytes))
            .then(a.name.cmp(&b.name))
    });
}

/// The memory header line: RSS, live heap, not returned to the OS, tracker.
pub(crate) fn memory_line(p: &ProcessMemory) -> String {
    if p.allocator.is_empty() {
        return "memory: RSS unavailable (not recorded: a version-1 report)".into();
    }
    let rss = if p.rss_bytes == 0 {
        "RSS unavailable".to_string()
    } else {
        format!("RSS {}", human_bytes(p.rss_bytes))
    };
    let not_returned = if p.not_returned_method == "unavailable" {
        format!("not returned to the OS: unknown ({})", p.allocator)
    } else {
        format!(
            "not returned to the OS ~{} ({})",
            human_bytes(p.not_returned_bytes),
            p.allocator
        )
    };
    format!(
        "memory: {rss}, live heap {}, {not_returned}, tracker {}",
        human_bytes(p.heap_live_bytes),
        human_bytes(p.tracker_bytes),
    )
}

/// The RSS breakdown line: the parts that add up to RSS, or why there are none.
pub(crate) fn breakdown_line(p: &ProcessMemory) -> Option<String> {
    if p.allocator.is_empty() {
        return None;
    }
    let Some(b) = &p.breakdown else {
        // A glibc report without one was written before breakdowns existed (or `/proc` was
        // unreadable): nothing to say. Another allocator: say why there is none.
        if p.allocator == "glibc malloc" {
            return None;
        }
        return Some(format!(
            "RSS breakdown: unavailable (needs glibc malloc and /proc/self/smaps; allocator: {})",
            p.allocator
        ));
    };
    Some(format!(
        "RSS {} = Rust heap {} + C heap (malloc outside Rust) {} + freed, not returned ~{} \
         + tracker {}\n      + file-backed (code, mapped files) {} + thread stacks {} + other \
         anonymous {}",
        human_bytes(b.total_bytes()),
        human_bytes(b.rust_heap_bytes),
        human_bytes(b.c_heap_bytes),
        human_bytes(b.not_returned_bytes),
        human_bytes(b.tracker_bytes),
        human_bytes(b.file_backed_bytes),
        human_bytes(b.thread_stacks_bytes),
        human_bytes(b.other_anon_bytes),
    ))
}

/// Advice when the heap allocated outside Rust's allocator (C libraries calling `malloc`) is
/// a large part of RSS: no job is charged for it unless the `malloc` feature is on.
pub(crate) fn c_heap_advice(p: &ProcessMemory) -> Option<String> {
    let c = p.breakdown.as_ref()?.c_heap_bytes;
    if p.rss_bytes == 0 || c < ADVICE_MIN_BYTES || c * 100 < p.rss_bytes * C_HEAP_ADVICE_PERCENT {
        return None;
    }
    let how = "build with allocscope's `malloc` feature (Linux/glibc) to charge C allocations \
               to the jobs\n      that made them, with their C stacks";
    Some(format!(
        "note: {c_h} of RSS ({pct}%) is heap allocated outside Rust's allocator (C libraries \
         calling malloc):\n      no job is charged for it; {how}.",
        c_h = human_bytes(c),
        pct = c * 100 / p.rss_bytes,
    ))
}

/// Advice when freed memory the allocator kept is a large part of RSS: what it is, how much
/// `release_free_memory` would give back, and the settings that prevent it.
pub(crate) fn memory_advice(p: &ProcessMemory) -> Option<String> {
    let nr = p.not_returned_bytes;
    if p.rss_bytes == 0 || nr < ADVICE_MIN_BYTES || nr * 100 < p.rss_bytes * ADVICE_MIN_PERCENT {
        return None;
    }
    Some(format!(
        "note: ~{nr_h} of RSS ({pct}%) is memory the program freed that {alloc} has not \
         returned\n      to the OS: not a leak, no job holds it. \
         allocscope::release_free_memory() (malloc_trim)\n      would give back up to about \
         {nr_h} now. To keep it from building up: MALLOC_ARENA_MAX=2\n      (fewer glibc \
         arenas), or jemalloc (background_thread:true, a short dirty_decay_ms) or mimalloc\n      \
         as the inner allocator: they return free pages to the OS on their own.",
        nr_h = human_bytes(nr),
        pct = nr * 100 / p.rss_bytes,
        alloc = p.allocator,
    ))
}

impl Report {
    /// The job table and each job's top callsites, as text.
    pub fn to_text(&self) -> String {
        self.to_text_with(&TextOptions::default())
    }

    /// The text rendering with options (one job, how many callsites, how many jobs).
    pub fn to_text_with(&self, opts: &TextOptions) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let _ = writeln!(
            out,
            "allocscope: {} live in {} objects ({} unscoped); stacks: {}",
            human_bytes(t.live.bytes),
            grouped(t.live.objects),
            human_bytes(t.unscoped_live.bytes),
            stack_mode_words(self.stack_mode),
        );
        let _ = writeln!(out, "{}", memory_line(&self.process));
        if let Some(line) = breakdown_line(&self.process) {
            let _ = writeln!(out, "{line}");
        }
        if let Some(t) = &self.trigger {
            let _ = writeln!(out, "written because: {}", t.message);
            for a in &t.active {
                let _ = writeln!(
                    out,
                    "  running then: {} ({} run{} since {})",
                    crate::report::escape::job_display_name(&a.job),
                    a.active_runs,
                    if a.active_runs == 1 { "" } else { "s" },
                    crate::model::Utc::from_unix_ms(a.since_unix_ms)
                );
            }
        }
        if let Some(advice) = memory_advice(&self.process) {
            let _ = writeln!(out, "{advice}");
        }
        if let Some(advice) = c_heap_advice(&self.process) {
            let _ = writeln!(out, "{advice}");
        }
        if !self.tracker.installed {
            let _ = writeln!(
                out,
                "warning: no allocation went through allocscope::TrackingAllocator; \
                 install it with #[global_allocator] to see figures"
            );
        }
        // Labels say what happened per callsite: the mode may have changed while the program ran.
        let estimated = self.callsites.iter().filter(|c| c.estimated).count();
        if estimated > 0 && !matches!(self.stack_mode, StackMode::Sampled { .. }) {
            let _ = writeln!(
                out,
                "note: {} of {} callsites were recorded while stacks were sampled: their \
                 figures are estimates (marked ~), the others exact",
                grouped(estimated as u64),
                grouped(self.callsites.len() as u64)
            );
        }
        if self.tracker.runs_overflowed > 0 {
            let _ = writeln!(
                out,
                "warning: {} runs found every run slot in use and were not measured: they are \
                 counted per job, but have no per-run figures (PEAK misses them); \
                 `.track_scope()` futures never finished or forgotten keep their slots",
                grouped(self.tracker.runs_overflowed)
            );
        }
        out.push_str(&super::diagnose::text_notes(&self.diagnostics));
        let mut jobs: Vec<&JobReport> = self
            .jobs
            .iter()
            .filter(|j| opts.job.as_deref().map_or(true, |name| j.name == name))
            .collect();
        sort_jobs(&mut jobs, opts.sort);
        jobs.truncate(opts.max_jobs.unwrap_or(usize::MAX));
        if jobs.is_empty() {
            let _ = writeln!(out, "\n(no jobs)");
            return out;
        }
        // Names as every output shows them (quoted and escaped when not plain), never
        // truncated: two jobs must not look alike. Longer names push their row to the right.
        let names: Vec<_> = jobs.iter().map(|j| job_display_name(&j.name)).collect();
        let width = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(3)
            .clamp(3, 40);
        let ages: Vec<String> = jobs.iter().map(|j| age_text(j)).collect();
        let age_width = ages
            .iter()
            .map(|a| a.chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>7}  {:>12}  {:>10}  {:>10}  {:>12}  {:>10}  {:<age_width$}  TREND",
            "JOB", "RUNS", "ALLOC OBJS", "ALLOC", "PEAK", "RETAIN OBJS", "RETAINED", "AGE",
        );
        let flagged = |j: &JobReport| objects_per_run(j) > opts.flag_objects_per_run;
        for ((j, name), age) in jobs.iter().zip(&names).zip(&ages) {
            let objs = if flagged(j) {
                format!("{}!", grouped(j.allocated.objects))
            } else {
                grouped(j.allocated.objects)
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>7}  {:>12}  {:>10}  {:>10}  {:>12}  {:>10}  {:<age_width$}  {}",
                name,
                grouped(j.runs),
                objs,
                human_bytes(j.allocated.bytes),
                human_bytes(j.peak_bytes),
                grouped(j.retained.objects),
                human_bytes(j.retained.bytes),
                age,
                j.trend.label(),
            );
        }
        for j in jobs.iter().filter(|j| flagged(j)) {
            let _ = writeln!(
                out,
                "! {}: {} objects allocated per run on average (flagged above {}): \
                 allocator churn costs CPU even when nothing is retained",
                job_display_name(&j.name),
                grouped(objects_per_run(j)),
                grouped(opts.flag_objects_per_run),
            );
        }
        if opts.top_callsites > 0 {
            let order = opts.callsites_by;
            let mut hints = Vec::new();
            for (j, name) in jobs.iter().zip(&names) {
                if let Some(hint) = missing_callsites_hint(self.stack_mode, j, order) {
                    if self.stack_mode != StackMode::Off {
                        hints.push(hint);
                    } else if hints.is_empty() {
                        // Stacks off: one note for all jobs.
                        hints.push(
                            "no callsites: stacks are off; run with ALLOCSCOPE_STACKS=every \
                             (exact) or ALLOCSCOPE_STACKS=sampled to see where jobs allocate"
                                .to_string(),
                        );
                    }
                    continue;
                }
                if order.job_total(j) == 0 {
                    continue;
                }
                let _ = writeln!(out, "\n{name} — top callsites by {} bytes", order.as_str());
                write_callsites(
                    &mut out,
                    &j.callsites,
                    order.job_total(j),
                    opts.top_callsites,
                    order,
                );
            }
            for hint in hints {
                let _ = writeln!(out, "\nnote: {hint}");
            }
        }
        out
    }
}

fn write_callsites(
    out: &mut String,
    sites: &[CallsiteReport],
    total: u64,
    top: usize,
    order: CallsiteOrder,
) {
    // One row per label: stacks that differ only below the top frame read the same here.
    let mut listed = merge_alike(sites.iter().filter(|c| order.key(c) > 0), |c| {
        stack_text(&c.frames)
    });
    // Stable: ties keep the report's order (retained, then allocated bytes).
    listed.sort_by_key(|(c, _, _)| std::cmp::Reverse(order.key(c)));
    listed.truncate(top);
    // Shares divide like by like: when any callsite's figure is an estimate, the whole is the
    // sum of the job's callsite figures (the estimated whole), never the job's exact total,
    // so a row's share stays within 100%.
    let whole = estimated_whole(sites, order);
    let total = whole.unwrap_or(total);
    // Retained by age of run, where the callsites have it: what runs 2 or more runs ago still
    // hold (a leak's or a warm-up's stacks), beside the figure that includes the current runs.
    let aged = order == CallsiteOrder::Retained && listed.iter().any(|(c, _, _)| c.has_ages());
    let pct = |v: u64| {
        if total == 0 {
            0.0
        } else {
            v as f64 * 100.0 / total as f64
        }
    };
    if order == CallsiteOrder::Peak {
        // Peaks of distinct callsites happen at different times: no cumulative column.
        let _ = writeln!(
            out,
            "  {:>10}  {:>10}  {:>10}  CALLSITE",
            "PEAK", "RETAINED", "ALLOC"
        );
    } else {
        let _ = writeln!(
            out,
            "  {:>10}  {:>10}  {:>6}  {:>6}  {}CALLSITE",
            "OBJECTS",
            "BYTES",
            "%",
            "CUM%",
            if aged { "  2+ RUNS AGO  " } else { "" }
        );
    }
    let mut cum = 0u64;
    for (c, stacks, label) in &listed {
        let est = if c.estimated { "~" } else { "" };
        let site = match stacks {
            1 => label.clone(),
            n => format!("{label} ({n} stacks)"),
        };
        if order == CallsiteOrder::Peak {
            let _ = writeln!(
                out,
                "  {:>10}  {:>10}  {:>10}  {site}",
                format!("{est}{}", human_bytes(order.key(c))),
                format!("{est}{}", human_bytes(c.retained.bytes)),
                format!("{est}{}", human_bytes(c.allocated.bytes)),
            );
            continue;
        }
        let u = match order {
            CallsiteOrder::Allocated => c.allocated,
            _ => c.retained,
        };
        cum = cum.saturating_add(u.bytes);
        let old = if aged {
            format!(
                "  {:>12}  ",
                human_bytes(c.retained_aged(super::OLD_AGE).bytes)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:>10}  {:>10}  {:>5.1}%  {:>5.1}%  {old}{site}",
            format!("{est}{}", grouped(u.objects)),
            format!("{est}{}", human_bytes(u.bytes)),
            pct(u.bytes),
            pct(cum),
        );
    }
    match whole {
        Some(whole) if order != CallsiteOrder::Peak => {
            let _ = writeln!(
                out,
                "  (~ marks estimates from sampled stacks; % are shares of the callsites' \
                 estimated sum, ~{}, not of the job's exact figure)",
                human_bytes(whole)
            );
        }
        _ if listed.iter().any(|(c, _, _)| c.estimated) => {
            let _ = writeln!(out, "  (~ marks estimates from sampled stacks)");
        }
        _ => {}
    }
}

/// Callsites a view shows alike (`label`: what it shows of one) as one row each: figures summed
/// (peaks too: an upper bound, as for stacks folded into one callsite), estimated if any part
/// is, the frames of the first. Each row comes with the number of callsites in it and its
/// label; rows keep the order of their first callsite.
pub(crate) fn merge_alike<'a>(
    sites: impl IntoIterator<Item = &'a CallsiteReport>,
    label: impl Fn(&CallsiteReport) -> String,
) -> Vec<(CallsiteReport, usize, String)> {
    use crate::model::Usage;
    let add = |a: Usage, b: Usage| Usage {
        objects: a.objects.saturating_add(b.objects),
        bytes: a.bytes.saturating_add(b.bytes),
    };
    let mut rows: Vec<(CallsiteReport, usize, String)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for c in sites {
        let key = label(c);
        match index.get(&key) {
            Some(&i) => {
                let (row, n, _) = &mut rows[i];
                row.allocated = add(row.allocated, c.allocated);
                row.retained = add(row.retained, c.retained);
                row.peak_bytes = row.peak_bytes.saturating_add(c.peak_bytes);
                row.estimated |= c.estimated;
                for (a, &b) in row.retained_by_age.iter_mut().zip(&c.retained_by_age) {
                    *a = add(*a, b);
                }
                *n += 1;
            }
            None => {
                index.insert(key.clone(), rows.len());
                rows.push((c.clone(), 1, key));
            }
        }
    }
    rows
}

/// The estimated whole a job's callsite shares divide by: the sum of its callsites' figures
/// for `order` when any of them is an estimate, `None` when all are exact (shares then divide
/// the job's exact figure, which also counts what no callsite recorded).
fn estimated_whole(sites: &[CallsiteReport], order: CallsiteOrder) -> Option<u64> {
    sites
        .iter()
        .any(|c| c.estimated && order.key(c) > 0)
        .then(|| {
            sites
                .iter()
                .map(|c| order.key(c))
                .fold(0, u64::saturating_add)
        })
}

/// A stack as one line of text: its top function (short name) and ` (file:line)`, control
/// characters escaped; `?` for a stack without frames.
pub(crate) fn stack_text(frames: &[Frame]) -> String {
    let top = frames.first().map_or("?", |f| f.function.as_str());
    let loc = frames
        .first()
        .and_then(|f| {
            Some(format!(
                " ({}:{})",
                frame_text(super::labels::short_file(f.file.as_deref()?)),
                f.line?
            ))
        })
        .unwrap_or_default();
    format!("{}{loc}", super::labels::short_name(&frame_text(top)))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(3 << 50), "3.0 PiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        // Just below a unit: the next unit, never "1024 KiB".
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_bytes((1 << 20) - 512), "1.0 MiB");
        assert_eq!(human_bytes((1 << 20) - 600), "1023 KiB");
        assert_eq!(human_bytes((1 << 30) - 1), "1.0 GiB");
        assert_eq!(human_bytes(1023 * 1024 + 1000), "1.0 MiB");
        // Just below 100 of a unit: printed as it rounds, without a decimal.
        assert_eq!(human_bytes(100 * 1024 - 10), "100 KiB");
        assert_eq!(human_bytes(99 * 1024 + 900), "99.9 KiB");
        for shift in [10u32, 20, 30, 40, 50, 60] {
            for delta in 1..(1u64 << shift).min(4096) {
                let text = human_bytes((1u64 << shift) - delta);
                assert!(!text.starts_with("1024 "), "{text}");
                assert!(!text.starts_with("100.0 "), "{text}");
            }
        }
    }

    fn site(function: &str, retained: u64, estimated: bool) -> CallsiteReport {
        CallsiteReport {
            scope: vec!["job".into()],
            frames: vec![Frame {
                function: function.into(),
                file: None,
                line: None,
            }]
            .into(),
            allocated: crate::model::Usage {
                objects: 1,
                bytes: retained,
            },
            retained: crate::model::Usage {
                objects: 1,
                bytes: retained,
            },
            peak_bytes: retained,
            estimated,
            retained_by_age: Default::default(),
        }
    }

    /// The percentages of the rows `write_callsites` prints.
    fn shares(text: &str) -> Vec<(f64, f64)> {
        text.lines()
            .filter(|l| l.contains('%') && !l.contains("CUM%") && !l.contains("(~"))
            .map(|l| {
                let p: Vec<f64> = l
                    .split_whitespace()
                    .filter_map(|w| w.strip_suffix('%')?.parse().ok())
                    .collect();
                (p[0], p[1])
            })
            .collect()
    }

    #[test]
    fn estimates_are_shares_of_the_estimated_whole() {
        // A job retaining 312 KiB (exact) with one sampled callsite estimated at 512 KiB.
        let sites = [site("app::big", 512 << 10, true)];
        let mut out = String::new();
        write_callsites(&mut out, &sites, 312 << 10, 5, CallsiteOrder::Retained);
        assert_eq!(shares(&out), [(100.0, 100.0)], "{out}");
        assert!(out.contains("~512 KiB"), "{out}");
        assert!(
            out.contains("% are shares of the callsites' estimated sum, ~512 KiB"),
            "{out}"
        );
        // Several estimates and an exact callsite: every share and the running sum stay
        // within 100%, and the listed shares of all callsites add up to 100%.
        let sites = [
            site("app::a", 512 << 10, true),
            site("app::b", 256 << 10, true),
            site("app::c", 100, false),
        ];
        let mut out = String::new();
        write_callsites(&mut out, &sites, 312 << 10, 5, CallsiteOrder::Retained);
        let s = shares(&out);
        assert_eq!(s.len(), 3, "{out}");
        assert!(
            s.iter().all(|&(p, cum)| p <= 100.0 && cum <= 100.0),
            "{out}"
        );
        assert_eq!(s[2].1, 100.0, "{out}");
        // All exact: shares of the job's exact figure (what no callsite recorded included).
        let sites = [site("app::a", 100 << 10, false)];
        let mut out = String::new();
        write_callsites(&mut out, &sites, 400 << 10, 5, CallsiteOrder::Retained);
        assert_eq!(shares(&out), [(25.0, 25.0)], "{out}");
        assert!(!out.contains('~'), "{out}");
    }

    #[test]
    fn thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(grouped_wide(1 << 64), "18,446,744,073,709,551,616");
    }
}
