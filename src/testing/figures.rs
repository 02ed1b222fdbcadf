//! [`Figures`]: what a check measured, and its one-line summary.

use std::fmt;

use super::failure::{bytes_text, usage_text};
use super::held::HeldCallsite;
use crate::callsite::StackMode;
use crate::report::{RunReport, Usage};

/// The figures of a check's measured run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Figures {
    /// The check's name ([`MemoryCheck::new`](super::MemoryCheck::new)).
    pub check: String,
    /// The job the measured run ran as (`"{check} [check k]"`, see the module docs).
    pub job: String,
    /// The test: the name of the thread that ran the check (the test harness names each
    /// test's thread after the test).
    pub test: String,
    /// Everything the measured run allocated.
    pub allocated: Usage,
    /// The measured run's highest live bytes.
    pub peak_bytes: u64,
    /// What the measured run still held when the closure had returned (its value dropped),
    /// less what other threads freed right after (see the module docs).
    pub retained: Usage,
    /// The part of `retained` held by ignored callsites.
    pub ignored: Usage,
    /// Descriptions of the callsite filters (e.g. `matching "known_cache"`).
    pub ignore_filters: Vec<String>,
    /// Callsites still holding memory from the measured run, largest first; empty when
    /// stacks are off or nothing was retained. Figures are exact in [`StackMode::Every`] and
    /// estimates in sampled mode.
    pub holding: Vec<HeldCallsite>,
    /// The stack mode in effect.
    pub stack_mode: StackMode,
    /// The warm-up runs, in order.
    pub warmup: Vec<RunReport>,
    /// The measured run's own report.
    pub run: RunReport,
    /// Caveats about these figures (e.g. why callsites are missing).
    pub notes: Vec<String>,
}

impl Figures {
    /// What the retained limits are checked against: `retained` minus `ignored`.
    pub fn retained_checked(&self) -> Usage {
        self.retained - self.ignored
    }
}

impl fmt::Display for Figures {
    /// One line: allocated, peak, retained (and ignored), warm-up runs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocated {}, peak {}, retained {}",
            usage_text(self.allocated),
            bytes_text(self.peak_bytes),
            usage_text(self.retained),
        )?;
        if !self.ignored.is_zero() {
            write!(
                f,
                " (of which ignored {}, counted {})",
                usage_text(self.ignored),
                usage_text(self.retained_checked())
            )?;
        }
        if !self.warmup.is_empty() {
            let runs = if self.warmup.len() == 1 {
                "run"
            } else {
                "runs"
            };
            write!(
                f,
                "; after {} warm-up {runs} that retained ",
                self.warmup.len()
            )?;
            for (i, w) in self.warmup.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{}", usage_text(w.retained_at_finish))?;
            }
        }
        Ok(())
    }
}
