//! Spans as scopes (feature `tracing`): [`ScopeLayer`], a `tracing_subscriber` layer.
//!
//! Rules:
//! * A **selected** span is one run of a job: the run begins when the span is created and
//!   finishes when it closes (its last handle is dropped). Every enter of the span — on any
//!   thread, any number of times, as `Instrument` does around each poll — enters that run's
//!   scope; the matching exit leaves it. Allocations made while no thread has the span entered
//!   are not the span's.
//! * A span is selected when its name is one of [`ScopeLayer::spans_named`], its target starts
//!   with a [`ScopeLayer::target_prefix`], the [`ScopeLayer::predicate`] accepts its metadata,
//!   or it has the [`ScopeLayer::job_field`]. With no rule, no span is selected.
//! * Job name: the value of the job field when the span records one at creation, else the
//!   span's name.
//! * Nesting: a span created where another scope is current (a selected span entered, a
//!   `track_scope`) nests in it; a span with an explicit parent nests in its nearest selected
//!   ancestor (else in the scope current where it is created).
//! * Per-span state (the run) lives in the span's extensions. Unselected spans are filtered
//!   on enter and exit by one probe into a per-layer table of counters (hash of the span id),
//!   so they cost a few nanoseconds; only spans that may be selected look up their extensions.
//! * Enters and exits are stacked per thread; an exit out of order (guards dropped out of
//!   order) restores the right scope when the last of them exits.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use ::tracing_core::field::{Field, Visit};
use ::tracing_core::span::{Attributes, Id};
use ::tracing_core::{Metadata, Subscriber};
use ::tracing_subscriber::layer::Context;
use ::tracing_subscriber::registry::LookupSpan;
use ::tracing_subscriber::Layer;

use crate::scope::OwnedRun;
use crate::thread::{self, untracked};

/// Counters in the per-layer selected-span filter (a power of two).
const FILTER_SLOTS: usize = 4096;

type Predicate = Arc<dyn Fn(&Metadata<'_>) -> bool + Send + Sync + 'static>;

/// A [`tracing_subscriber::Layer`] that turns selected spans into allocscope job runs.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(allocscope::tracing::ScopeLayer::new().spans_named(["process_job", "import"]));
/// # drop(subscriber);
/// ```
///
/// See the [module documentation](self) for the rules.
pub struct ScopeLayer {
    names: Vec<String>,
    target_prefixes: Vec<String>,
    predicate: Option<Predicate>,
    job_field: Option<String>,
    /// How many selected spans hash to each counter; zero means "no selected span here".
    filter: Box<[AtomicU32]>,
}

impl Default for ScopeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ScopeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeLayer")
            .field("names", &self.names)
            .field("target_prefixes", &self.target_prefixes)
            .field("predicate", &self.predicate.is_some())
            .field("job_field", &self.job_field)
            .finish()
    }
}

impl ScopeLayer {
    /// A layer that selects no span yet; add rules with the builder methods.
    pub fn new() -> Self {
        ScopeLayer {
            names: Vec::new(),
            target_prefixes: Vec::new(),
            predicate: None,
            job_field: None,
            filter: (0..FILTER_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Selects spans with one of these names (`#[instrument]` names a span after its function).
    pub fn spans_named<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.names.extend(names.into_iter().map(Into::into));
        self
    }

    /// Selects spans whose target (by default the module path where the span is created)
    /// starts with `prefix`, e.g. `"my_service::jobs"`. May be called several times.
    pub fn target_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.target_prefixes.push(prefix.into());
        self
    }

    /// Selects spans whose metadata (name, target, level, fields, ...) `predicate` accepts.
    /// It is called once per span creation, so keep it cheap; a later call replaces it.
    pub fn predicate<P>(mut self, predicate: P) -> Self
    where
        P: Fn(&Metadata<'_>) -> bool + Send + Sync + 'static,
    {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Names jobs by the value of this field, and selects every span that has it:
    /// `info_span!("worker", job = %job.kind())` becomes a run of the job `job.kind()`.
    /// The value is the one recorded when the span is created (a field declared `Empty` and
    /// recorded later is ignored, and the span's name is used). Pick a field with few distinct
    /// values (a job type, not an id).
    pub fn job_field(mut self, field: impl Into<String>) -> Self {
        self.job_field = Some(field.into());
        self
    }

    /// Whether spans of this callsite are selected.
    fn selects(&self, meta: &Metadata<'_>) -> bool {
        self.names.iter().any(|n| n == meta.name())
            || self
                .target_prefixes
                .iter()
                .any(|p| meta.target().starts_with(p.as_str()))
            || self
                .job_field
                .as_deref()
                .is_some_and(|f| meta.fields().field(f).is_some())
            || self.predicate.as_ref().is_some_and(|p| p(meta))
    }

    #[inline]
    fn filter_slot(&self, id: &Id) -> &AtomicU32 {
        let h = id.into_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.filter[h as usize & (FILTER_SLOTS - 1)]
    }

    /// False only if no selected span has this id.
    #[inline]
    fn maybe_selected(&self, id: &Id) -> bool {
        self.filter_slot(id).load(Relaxed) != 0
    }

    /// The job name of a selected span.
    fn job_name(&self, attrs: &Attributes<'_>) -> String {
        if let Some(field) = self.job_field.as_deref() {
            let mut visit = FieldValue { field, value: None };
            attrs.record(&mut visit);
            if let Some(value) = visit.value {
                return value;
            }
        }
        attrs.metadata().name().to_owned()
    }
}

/// Per-span state of a selected span, in the span's extensions.
struct SpanRun(OwnedRun);

/// Extracts one field's value as text.
struct FieldValue<'a> {
    field: &'a str,
    value: Option<String>,
}

impl Visit for FieldValue<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.field {
            self.value = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == self.field {
            self.value = Some(format!("{value:?}"));
        }
    }
}

thread_local! {
    /// Selected spans entered on this thread, innermost last: (span id, context to restore).
    static ENTERED: RefCell<Vec<(u64, (u32, u32))>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for ScopeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.selects(attrs.metadata()) {
            return;
        }
        untracked(|| {
            let Some(span) = ctx.span(id) else { return };
            // Contextual spans nest in what is current here; explicit parents in their
            // nearest selected ancestor.
            let parent = if attrs.is_contextual() {
                None
            } else {
                span.scope()
                    .skip(1)
                    .find_map(|s| s.extensions().get::<SpanRun>().map(|r| r.0.handle()))
            };
            let parent = parent.map_or_else(thread::current_context, |h| h.parts());
            let run = OwnedRun::begin(&self.job_name(attrs), parent);
            span.extensions_mut().insert(SpanRun(run));
            self.filter_slot(id).fetch_add(1, Relaxed);
        });
    }

    #[inline]
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.maybe_selected(id) {
            self.enter_slow(id, ctx);
        }
    }

    #[inline]
    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if self.maybe_selected(id) {
            exit_slow(id);
        }
    }

    #[inline]
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.maybe_selected(&id) {
            self.close_slow(id, ctx);
        }
    }
}

impl ScopeLayer {
    /// `on_enter` of a span that may be selected: enter its run's scope.
    #[cold]
    #[inline(never)]
    fn enter_slow<S>(&self, id: &Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        let Some(handle) = span.extensions().get::<SpanRun>().map(|r| r.0.handle()) else {
            return;
        };
        drop(span);
        let _ = ENTERED.try_with(|stack| {
            let Ok(mut stack) = stack.try_borrow_mut() else {
                return;
            };
            if stack.len() == stack.capacity() {
                untracked(|| stack.reserve(8));
            }
            // Switch only once the push cannot allocate (it would be charged to the span).
            let prev = handle.enter_guard().into_previous();
            stack.push((id.into_u64(), prev));
        });
    }

    /// `on_close` of a span that may be selected: finish its run.
    #[cold]
    #[inline(never)]
    fn close_slow<S>(&self, id: Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(&id) else { return };
        let run = span.extensions_mut().remove::<SpanRun>();
        drop(span);
        if let Some(SpanRun(run)) = run {
            self.filter_slot(&id).fetch_sub(1, Relaxed);
            drop(run); // finishes the run (as panicked during unwinding)
        }
    }
}

/// `on_exit` of a span that may be selected: restore the scope its enter replaced.
#[cold]
#[inline(never)]
fn exit_slow(id: &Id) {
    let id = id.into_u64();
    let _ = ENTERED.try_with(|stack| {
        let Ok(mut stack) = stack.try_borrow_mut() else {
            return;
        };
        let Some(pos) = stack.iter().rposition(|e| e.0 == id) else {
            return;
        };
        let (_, prev) = stack.remove(pos);
        if pos == stack.len() {
            thread::switch_context(prev.0, prev.1);
        } else {
            // Exited out of order: the entry above it now restores what this one would.
            stack[pos].1 = prev;
        }
    });
}
