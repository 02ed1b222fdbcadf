//! The report's notes about itself: figures that are probably lost, with the cause and the fix
//! ([`Report::diagnostics`]).
//!
//! Rules:
//! * A note is computed when the report is built, from the report's own figures and the
//!   counters the scope sources keep (`sources`); renderers only print it.
//! * Each note fires on a documented threshold and names what to change. Thresholds:
//!   - **unscoped heap**: at least one job run finished, and memory allocated outside any job
//!     that is still live is more than [`Diagnostic::UNSCOPED_PERCENT`] % of the live heap and at
//!     least [`Diagnostic::UNSCOPED_MIN_BYTES`];
//!   - **spans not selected**, per installed (live) `tracing::ScopeLayer`: it selected no span,
//!     or fewer than 1 in [`Diagnostic::SPANS_RATIO`] of the spans it has seen, after at least
//!     [`Diagnostic::SPANS_MIN_SEEN`]. The note names the most verbose level the filters
//!     enable: spans above it are never created, for any layer (tracing's macros skip them).

use serde::{Deserialize, Serialize};

use super::text::{grouped, human_bytes, stack_text};
use super::{CallsiteReport, JobReport, Totals};
use crate::sources::{self, Verbosity};

/// A note the report makes about its own figures: memory likely charged to no job, or jobs
/// likely missing, with the cause and the fix. Printed by the text and HTML reports; see
/// the thresholds in the README ("Job frameworks").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Diagnostic {
    /// Most of the live heap was allocated outside any job while jobs ran: work a job
    /// started probably ran outside its scope (a spawned task, a layer that spawns before the
    /// one naming the job, a thread pool), or state was built outside jobs.
    UnscopedHeap {
        /// Live bytes allocated outside any scope.
        unscoped_live_bytes: u64,
        /// Every live byte (the tracker's own excluded).
        live_bytes: u64,
        /// Finished runs of all jobs.
        runs: u64,
        /// The unscoped callsite holding the most, as the text report shows it, with its
        /// retained bytes (when stacks were recorded).
        top_callsite: Option<(String, u64)>,
    },
    /// A `tracing::ScopeLayer` selected no span, or far fewer than it has seen.
    SpansNotSelected {
        /// The layer's rules in words.
        rules: String,
        /// Spans created that reached the layer.
        seen: u64,
        /// Of them, the ones it selected (runs).
        selected: u64,
        /// Span callsites registered so far that its rules match (0: the rules match no
        /// span the program has created or declared yet).
        matching_callsites: u64,
        /// The most verbose level any filter enables (`"INFO"`, `"OFF"`), when known.
        max_level: Option<String>,
    },
    /// A kind of note this version does not know (read from a newer report).
    #[serde(other)]
    Other,
}

impl Diagnostic {
    /// [`UnscopedHeap`](Self::UnscopedHeap) fires above this share of the live heap
    /// (percent) …
    pub const UNSCOPED_PERCENT: u64 = 50;
    /// … from this many unscoped live bytes on.
    pub const UNSCOPED_MIN_BYTES: u64 = 64 << 10;
    /// [`SpansNotSelected`](Self::SpansNotSelected) fires when a layer selected fewer than
    /// one span in this many it has seen …
    pub const SPANS_RATIO: u64 = 1000;
    /// … once it has seen at least this many.
    pub const SPANS_MIN_SEEN: u64 = 1000;
}

/// The per-layer filter that keeps a log filter off the scope layer.
const FIX: &str = "registry().with(fmt::layer().with_filter(EnvFilter::new(\"info\"))).with(allocscope::tracing::ScopeLayer::new()...)";

fn level_name(v: Verbosity) -> &'static str {
    match v {
        0 => "OFF",
        1 => "ERROR",
        2 => "WARN",
        3 => "INFO",
        4 => "DEBUG",
        _ => "TRACE",
    }
}

/// The notes of a report with these figures. Runs untracked (it reads the sources' lists).
pub(crate) fn diagnose(
    totals: &Totals,
    jobs: &[JobReport],
    callsites: &[CallsiteReport],
) -> Vec<Diagnostic> {
    let runs: u64 = jobs.iter().map(|j| j.runs).sum();
    let mut notes: Vec<Diagnostic> = unscoped_note(totals, runs, callsites).into_iter().collect();
    for layer in sources::span_layers() {
        let few = layer.seen >= Diagnostic::SPANS_MIN_SEEN
            && layer.selected.saturating_mul(Diagnostic::SPANS_RATIO) < layer.seen;
        if layer.selected == 0 || few {
            notes.push(Diagnostic::SpansNotSelected {
                rules: layer.rules,
                seen: layer.seen,
                selected: layer.selected,
                matching_callsites: layer.matched_callsites,
                max_level: layer.max_level.map(|l| level_name(l).to_owned()),
            });
        }
    }
    notes
}

/// The unscoped-heap note, when its thresholds are met.
fn unscoped_note(totals: &Totals, runs: u64, callsites: &[CallsiteReport]) -> Option<Diagnostic> {
    let (unscoped, live) = (totals.unscoped_live.bytes, totals.live.bytes);
    let fires = runs > 0
        && unscoped >= Diagnostic::UNSCOPED_MIN_BYTES
        && unscoped.saturating_mul(100) > live.saturating_mul(Diagnostic::UNSCOPED_PERCENT);
    fires.then(|| Diagnostic::UnscopedHeap {
        unscoped_live_bytes: unscoped,
        live_bytes: live,
        runs,
        top_callsite: callsites
            .iter()
            .filter(|c| c.scope.is_empty() && c.retained.bytes > 0)
            .max_by_key(|c| c.retained.bytes)
            .map(|c| (stack_text(&c.frames), c.retained.bytes)),
    })
}

impl Diagnostic {
    /// The note as text: a first line saying what is wrong, then causes and fixes (lines
    /// indented by six spaces), as the text report prints it after `note: `.
    pub fn to_text(&self) -> String {
        match self {
            Diagnostic::UnscopedHeap {
                unscoped_live_bytes,
                live_bytes,
                runs,
                top_callsite,
            } => {
                let pct = unscoped_live_bytes
                    .saturating_mul(100)
                    .checked_div(*live_bytes)
                    .unwrap_or(100);
                let mut s = format!(
                    "{} of the {} live heap ({pct}%) was allocated outside any job, while jobs \
                     ran ({} runs).\n\
                     Work a job started that ran outside its scope is charged to no job:\n\
                     - tokio::spawn inside a job: spawn fut.in_current_scope() \
                     (allocscope::FutureExt);\n\
                     - a layer that spawns (apalis .parallelize(tokio::spawn), a tower Buffer) \
                     before the layer that names the job:\n  put allocscope::tower::JobLayer \
                     (or the tracing layer) after it;\n\
                     - a thread pool: ScopeHandle::wrap, allocscope::rayon::{{join, spawn}}, \
                     allocscope::spawn;\n\
                     - state built outside jobs (start-up, background tasks): wrap it in \
                     track_scope(\"startup\") to name it.",
                    human_bytes(*unscoped_live_bytes),
                    human_bytes(*live_bytes),
                    grouped(*runs),
                );
                if let Some((site, bytes)) = top_callsite {
                    s.push_str(&format!(
                        "\nLargest unscoped callsite: {site}, {} retained.",
                        human_bytes(*bytes)
                    ));
                }
                s
            }
            Diagnostic::SpansNotSelected {
                rules,
                seen,
                selected,
                matching_callsites,
                max_level,
            } => {
                let mut s = if *selected == 0 {
                    format!(
                        "tracing ScopeLayer ({rules}) has seen {} spans and selected none: \
                         no job comes from it.",
                        grouped(*seen)
                    )
                } else {
                    format!(
                        "tracing ScopeLayer ({rules}) selected {} of the {} spans it has seen.",
                        grouped(*selected),
                        grouped(*seen)
                    )
                };
                if let Some(max) = max_level.as_deref().filter(|l| *l != "TRACE") {
                    s.push_str(&format!(
                        "\nThe filters enable spans up to {max} only: more verbose spans are never \
                         created, for any layer (apalis's `task` spans are DEBUG).\n\
                         A global filter (EnvFilter::new(\"info\"), RUST_LOG=info) does this; give \
                         it to the log layer only:\n  {FIX}"
                    ));
                } else {
                    if *matching_callsites == 0 {
                        s.push_str("\nNo span the program has used matches its rules.");
                    }
                    s.push_str(
                        "\nCheck the rules: span names are exact (#[instrument] names a span \
                         after its function), targets are module paths.",
                    );
                }
                s
            }
            Diagnostic::Other => "a note of a kind this version does not know".to_owned(),
        }
    }
}

/// The notes as the text report prints them: `note: ` and the first line, the rest indented.
pub(crate) fn text_notes(notes: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in notes {
        for (i, line) in d.to_text().lines().enumerate() {
            out.push_str(if i == 0 { "note: " } else { "      " });
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The notes as the HTML report shows them, under the memory cards (nothing when empty).
pub(crate) fn html_notes(notes: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in notes {
        out.push_str("<pre class=\"diagnostic\">");
        out.push_str(&super::html::esc(&d.to_text()));
        out.push_str("</pre>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Usage;

    fn totals(unscoped: u64, live: u64) -> Totals {
        let usage = |bytes| Usage { objects: 1, bytes };
        Totals {
            live: usage(live),
            allocated: usage(live),
            unscoped_live: usage(unscoped),
            unscoped_allocated: usage(unscoped),
        }
    }

    #[test]
    fn the_unscoped_note_fires_on_its_thresholds_only() {
        let min = Diagnostic::UNSCOPED_MIN_BYTES;
        // More than half of the live heap, at least the minimum, and runs finished.
        assert!(unscoped_note(&totals(min, 2 * min - 1), 1, &[]).is_some());
        // Exactly half is not most.
        assert!(unscoped_note(&totals(min, 2 * min), 1, &[]).is_none());
        // Below the minimum in bytes.
        assert!(unscoped_note(&totals(min - 1, min), 1, &[]).is_none());
        // No run finished: nothing could have been lost from a job.
        assert!(unscoped_note(&totals(min, min), 0, &[]).is_none());
        let note = unscoped_note(&totals(3 * min, 4 * min), 7, &[]).unwrap();
        let text = note.to_text();
        assert!(
            text.starts_with("192 KiB of the 256 KiB live heap (75%)"),
            "{text}"
        );
        assert!(text.contains("(7 runs)"), "{text}");
    }

    #[test]
    fn notes_print_as_indented_lines_and_read_back() {
        let note = unscoped_note(&totals(1 << 20, 1 << 20), 1, &[]).unwrap();
        let text = text_notes(std::slice::from_ref(&note));
        assert!(text.starts_with("note: 1.0 MiB of the 1.0 MiB"), "{text}");
        assert!(
            text.lines().skip(1).all(|l| l.starts_with("      ")),
            "{text}"
        );
        let json = serde_json::to_string(&note).unwrap();
        assert!(json.contains("\"kind\":\"unscoped_heap\""), "{json}");
        assert_eq!(serde_json::from_str::<Diagnostic>(&json).unwrap(), note);
        let newer: Diagnostic = serde_json::from_str(r#"{"kind":"from_the_future"}"#).unwrap();
        assert_eq!(newer, Diagnostic::Other);
    }
}
