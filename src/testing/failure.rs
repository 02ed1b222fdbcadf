//! Why a check failed: the limits, the violations and the text a person reads.
//!
//! Rules: pure formatting of [`Figures`]; no tables are read here.

use std::fmt::{self, Write as _};

use super::figures::Figures;
use crate::callsite::StackMode;
pub use crate::model::{Limit, Violation};
use crate::report::text::{grouped, human_bytes};
use crate::report::{Frame, Usage};
use crate::thread::untracked;

/// Frames shown per callsite in a failure message.
const SHOWN_FRAMES: usize = 6;

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::RetainedObjects => "retained objects",
            Limit::RetainedBytes => "retained bytes",
            Limit::PeakBytes => "peak bytes",
            Limit::AllocatedObjects => "allocated objects",
            Limit::AllocatedBytes => "allocated bytes",
        })
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limit.is_bytes() {
            write!(
                f,
                "{}: {} measured, limit {}",
                self.limit,
                bytes_text(self.measured),
                bytes_text(self.max)
            )
        } else {
            write!(
                f,
                "{}: {} measured, limit {}",
                self.limit,
                grouped(self.measured),
                grouped(self.max)
            )
        }
    }
}

/// Why a check failed. `Display` is the report a person needs; `Debug` prints the same, so
/// `.unwrap()` and `?` in tests show it readably.
#[non_exhaustive]
pub enum CheckFailure {
    /// The measured run exceeded one or more limits.
    Exceeded {
        /// What was measured.
        figures: Box<Figures>,
        /// The limits exceeded, in the order retained, peak, allocated.
        violations: Vec<Violation>,
        /// How many callsites the message lists.
        shown_callsites: usize,
    },
    /// No [`TrackingAllocator`](crate::TrackingAllocator) is the global allocator, so nothing
    /// can be measured. The job was not run.
    NotInstalled {
        /// The check's name.
        check: String,
        /// The test (thread) name.
        test: String,
    },
    /// A callsite filter needs exact stacks ([`StackMode::Every`]) but another mode is in
    /// effect. The job was not run.
    ExactStacksRequired {
        /// The check's name.
        check: String,
        /// The test (thread) name.
        test: String,
        /// The stack mode in effect.
        mode: StackMode,
        /// The filters set.
        filters: Vec<String>,
    },
    /// The measured run's peak could not be measured and the check has a peak limit: every one
    /// of allocscope's run slots was in use when the run started (see
    /// [`RunReport::unmeasured`](crate::RunReport::unmeasured)). Its allocated and retained
    /// figures are still exact (they come from the check's own job), but the peak is unknown,
    /// so the check fails rather than pass on a guess.
    Unmeasured {
        /// The check's name.
        check: String,
        /// The test (thread) name.
        test: String,
        /// The job the run ran as.
        job: String,
    },
    /// Runs `runs` or more runs older than the measured (newest) one still hold memory
    /// ([`MemoryCheck::no_retention_older_than`](super::MemoryCheck::no_retention_older_than)).
    OldRunsRetain {
        /// What the measured run did.
        figures: Box<Figures>,
        /// The age, in runs, from which nothing may be held.
        runs: u64,
        /// What those runs still hold.
        held: Usage,
    },
}

impl CheckFailure {
    /// The measured figures, when the check ran.
    pub fn figures(&self) -> Option<&Figures> {
        match self {
            CheckFailure::Exceeded { figures, .. }
            | CheckFailure::OldRunsRetain { figures, .. } => Some(figures),
            _ => None,
        }
    }

    /// The limits exceeded (empty when the check could not run).
    pub fn violations(&self) -> &[Violation] {
        match self {
            CheckFailure::Exceeded { violations, .. } => violations,
            _ => &[],
        }
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = untracked(|| match self {
            CheckFailure::Exceeded {
                figures,
                violations,
                shown_callsites,
            } => exceeded_text(figures, violations, *shown_callsites),
            CheckFailure::NotInstalled { check, test } => format!(
                "allocscope: memory check {check:?} in test `{test}` cannot measure anything: \
                 allocscope::TrackingAllocator is not this program's global allocator, so no \
                 allocation is counted and the check would pass whatever the job does.\n\
                 To fix it, install the tracking allocator once in this test binary: at the top \
                 of the integration test file (tests/<name>.rs), in a module every test file \
                 includes (tests/common/mod.rs, with `mod common;`), or for unit tests in the \
                 crate root under #[cfg(test)]:\n\n    \
                 #[global_allocator]\n    \
                 static ALLOC: allocscope::TrackingAllocator = \
                 allocscope::TrackingAllocator::system();\n"
            ),
            CheckFailure::ExactStacksRequired {
                check,
                test,
                mode,
                filters,
            } => format!(
                "allocscope: memory check {check:?} in test `{test}` ignores callsites ({}), \
                 which needs exact stacks, but the stack mode is {mode:?}.\n\
                 To fix it, call allocscope::set_stack_mode(allocscope::StackMode::Every) at \
                 the start of every test in this binary (the mode is process-wide: don't \
                 switch it between tests of one binary), or run the tests with \
                 ALLOCSCOPE_STACKS=every.\n",
                filters.join(", ")
            ),
            CheckFailure::OldRunsRetain {
                figures,
                runs,
                held,
            } => format!(
                "allocscope: memory check {:?} in test `{}` failed: runs {runs} or more runs \
                 older than the newest still hold {} in {} objects (job {:?}); a run's blocks \
                 must be freed within {runs} later runs (no_retention_older_than({runs})).\n",
                figures.check,
                figures.test,
                bytes_text(held.bytes),
                grouped(held.objects),
                figures.job,
            ),
            CheckFailure::Unmeasured { check, test, job } => format!(
                "allocscope: memory check {check:?} in test `{test}` could not measure its \
                 run's peak (job {job:?}): all 65,535 of allocscope's run slots were in use \
                 when it started, so the run has no peak figure and the check's peak limit \
                 cannot pass.\n\
                 A run's slot is given back when its closure returns or panics, or when its \
                 tracked future completes or is dropped; a `.track_scope()` future that is \
                 never finished, or is forgotten (std::mem::forget), keeps its slot for good. \
                 To fix it, drop or finish those futures (`report().tracker.runs_overflowed` \
                 counts the runs that found no slot).\n"
            ),
        });
        f.write_str(&text)
    }
}

impl fmt::Debug for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CheckFailure {}

pub(super) fn exceeded_text(fig: &Figures, violations: &[Violation], shown: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "allocscope: memory check {:?} failed in test `{}`:",
        fig.check, fig.test
    );
    for v in violations {
        let _ = writeln!(out, "  {v}");
    }
    let _ = writeln!(out, "measured run of job {:?}: {fig}", fig.job);
    if !fig.ignore_filters.is_empty() {
        let _ = writeln!(
            out,
            "ignored callsites ({}) held {}",
            fig.ignore_filters.join(", "),
            usage_text(fig.ignored)
        );
    }
    let retained_limited = violations
        .iter()
        .any(|v| matches!(v.limit, Limit::RetainedObjects | Limit::RetainedBytes));
    if fig.retained.is_zero() {
        // Nothing held: no callsites to show.
    } else if fig.stack_mode == StackMode::Off {
        if retained_limited {
            let _ = writeln!(
                out,
                "(stacks are off, so the code holding the memory is not known: call \
                 allocscope::set_stack_mode(allocscope::StackMode::Every) at the start of \
                 every test in this binary, or run with ALLOCSCOPE_STACKS=every)"
            );
        }
    } else if fig.holding.is_empty() {
        let _ = writeln!(out, "(no callsite recorded for the memory still held)");
    } else {
        let kind = if fig.stack_mode == StackMode::Every {
            "exact"
        } else {
            "sampled estimates"
        };
        let _ = writeln!(
            out,
            "callsites still holding memory ({kind}; {} of {}):",
            shown.min(fig.holding.len()),
            fig.holding.len()
        );
        for h in fig.holding.iter().take(shown) {
            let c = &h.callsite;
            let mark = if h.ignored { " [ignored]" } else { "" };
            let _ = writeln!(
                out,
                "  {} in {} object{}{mark}",
                bytes_text(c.retained.bytes),
                grouped(c.retained.objects),
                if c.retained.objects == 1 { "" } else { "s" },
            );
            let frames = &c.frames;
            for (i, fr) in frames.iter().take(SHOWN_FRAMES).enumerate() {
                let lead = if i == 0 { "at" } else { "by" };
                let _ = writeln!(out, "      {lead} {}", frame_text(fr));
            }
            if frames.len() > SHOWN_FRAMES {
                let _ = writeln!(out, "      ... {} more", frames.len() - SHOWN_FRAMES);
            }
        }
        let shown_sum = fig
            .holding
            .iter()
            .fold(Usage::default(), |a, h| a + h.callsite.retained);
        if shown_sum.bytes < fig.retained.bytes {
            let _ = writeln!(
                out,
                "  ({} held without a recorded callsite)",
                bytes_text(fig.retained.bytes - shown_sum.bytes)
            );
        }
    }
    for n in &fig.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

pub(super) fn frame_text(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.function),
        (Some(file), None) => format!("{} ({file})", f.function),
        _ => f.function.to_string(),
    }
}

pub(super) fn usage_text(u: Usage) -> String {
    format!(
        "{} object{} / {}",
        grouped(u.objects),
        if u.objects == 1 { "" } else { "s" },
        bytes_text(u.bytes)
    )
}

pub(super) fn bytes_text(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else {
        format!("{} B ({})", grouped(b), human_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_read_in_the_unit_of_their_limit() {
        let bytes = Violation {
            limit: Limit::RetainedBytes,
            max: 0,
            measured: 4096,
        };
        assert_eq!(
            bytes.to_string(),
            "retained bytes: 4,096 B (4.0 KiB) measured, limit 0 B"
        );
        let objects = Violation {
            limit: Limit::AllocatedObjects,
            max: 1000,
            measured: 12_345,
        };
        assert_eq!(
            objects.to_string(),
            "allocated objects: 12,345 measured, limit 1,000"
        );
    }

    #[test]
    fn usage_and_frames_as_text() {
        assert_eq!(usage_text(Usage::new(1, 13)), "1 object / 13 B");
        assert_eq!(
            usage_text(Usage::new(2, 2048)),
            "2 objects / 2,048 B (2.0 KiB)"
        );
        let f = |file: Option<&str>, line| Frame {
            function: "app::f".into(),
            file: file.map(Into::into),
            line,
        };
        assert_eq!(
            frame_text(&f(Some("src/a.rs"), Some(3))),
            "app::f (src/a.rs:3)"
        );
        assert_eq!(frame_text(&f(Some("src/a.rs"), None)), "app::f (src/a.rs)");
        assert_eq!(frame_text(&f(None, None)), "app::f");
    }
}
