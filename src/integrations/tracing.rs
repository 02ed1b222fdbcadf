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
//! * Job name, first that applies: the [`ScopeLayer::job_name_fn`] function (given the span
//!   and its ancestors); the value of the [`ScopeLayer::job_field`] when the span records one
//!   at creation; the value of the [`ScopeLayer::ancestor_job_field`] recorded by the nearest
//!   ancestor span that has it; the span's name. Ancestors that only give a name are not
//!   selected by that: they are not runs (a span per worker names its tasks' jobs without
//!   becoming a one-run job itself).
//! * Nesting: a span created where another scope is current (a selected span entered, a
//!   `track_scope`) nests in it; a span with an explicit parent nests in its nearest selected
//!   ancestor (else in the scope current where it is created).
//! * Per-span state (the run) lives in the span's extensions. Unselected spans are filtered
//!   on enter and exit by one probe into a per-layer table of counters (hash of the span id),
//!   so they cost a few nanoseconds; only spans that may be selected look up their extensions.
//! * Enters and exits are stacked per thread; an exit out of order (guards dropped out of
//!   order) restores the right scope when the last of them exits.
//! * A span's run finishes once, when the span closes. A thread still inside the span's scope
//!   then (its guard forgotten with `std::mem::forget(span.enter())`, or the span exited on
//!   another thread with `Dispatch::exit`) is restored to the scope it had before entering
//!   the span: at once if the span closes on that thread (before the run finishes, so the
//!   run's figures include that thread's), otherwise at that thread's next allocation (the closing thread
//!   sets a word in its counter slot, which the allocation fast path reads with one relaxed
//!   load, sending it to the slow path to switch back) or next scope operation — entering,
//!   exiting, creating or closing a selected span, `track_scope`, `ScopeHandle::enter` (so
//!   any tracked future's poll), `current_scope()` — whichever comes first. A thread without
//!   a counter slot (beyond `MAX_THREADS`) leaves at its next scope operation only. Figures that thread had not flushed
//!   when the run finished go to the job's totals, not to the run's. A span whose run was not
//!   measured (the run table full, see `TrackerStats`) is not detected this way.
//! * Once installed, the layer counts the spans it has seen and selected, and the span
//!   callsites its rules match (`sources`): reports say when it selected none or far fewer
//!   than it has seen, and when a level filter disables the spans it would select.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use ::tracing_core::field::{Field, Visit};
use ::tracing_core::span::{Attributes, Id};
use ::tracing_core::subscriber::Interest;
use ::tracing_core::{Level, LevelFilter, Metadata, Subscriber};
use ::tracing_subscriber::layer::Context;
use ::tracing_subscriber::registry::LookupSpan;
use ::tracing_subscriber::Layer;

use crate::registry;
use crate::scope::{self, OwnedRun};
use crate::sources::{self, SpanLayerStats, Verbosity};
use crate::thread::{self, untracked};

/// Counters in the per-layer selected-span filter (a power of two).
const FILTER_SLOTS: usize = 4096;

type Predicate = Arc<dyn Fn(&Metadata<'_>) -> bool + Send + Sync + 'static>;
type NameFn = Arc<dyn Fn(&SpanLineage<'_>) -> Option<String> + Send + Sync + 'static>;

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
    ancestor_job_field: Option<String>,
    name_fn: Option<NameFn>,
    /// How many selected spans hash to each counter; zero means "no selected span here".
    filter: Box<[AtomicU32]>,
    /// Seen and selected spans, once the layer is installed (`on_layer`).
    stats: Option<Arc<SpanLayerStats>>,
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
            .field("ancestor_job_field", &self.ancestor_job_field)
            .field("job_name_fn", &self.name_fn.is_some())
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
            ancestor_job_field: None,
            name_fn: None,
            filter: (0..FILTER_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            stats: None,
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

    /// Names a selected span's job by the value of this field recorded by its nearest ancestor
    /// span that has it, when the span itself has no [`job_field`](Self::job_field) value. The
    /// ancestor is **not** selected by this (it is not a run): a framework's spans, all alike,
    /// take their job from a span the program opens around each worker.
    ///
    /// With apalis, whose `.enable_tracing()` gives every task a span `task` (fields `task_id`,
    /// `attempt`; level DEBUG) nested in the span current where the worker calls its service:
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let subscriber = tracing_subscriber::registry().with(
    ///     allocscope::tracing::ScopeLayer::new()
    ///         .spans_named(["task"])
    ///         .ancestor_job_field("job"),
    /// );
    /// // Each worker runs in its own span:
    /// //   worker.run().instrument(tracing::info_span!("worker", job = "send_email"))
    /// # drop(subscriber);
    /// ```
    pub fn ancestor_job_field(mut self, field: impl Into<String>) -> Self {
        self.ancestor_job_field = Some(field.into());
        self
    }

    /// Names a selected span's job with `name`, given the span and its ancestors (nearest
    /// first); `None` falls back to the other rules. Called once per selected span, with
    /// tracking suspended. Return names from a small set (a worker, a task type — not an id).
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// // Each task span is a run of the job named after the span around its worker,
    /// // e.g. `info_span!("email_worker")`.
    /// let layer = allocscope::tracing::ScopeLayer::new()
    ///     .spans_named(["task"])
    ///     .job_name_fn(|span| span.ancestors().first().map(|a| a.name().to_owned()));
    /// # drop(tracing_subscriber::registry().with(layer));
    /// ```
    pub fn job_name_fn<F>(mut self, name: F) -> Self
    where
        F: Fn(&SpanLineage<'_>) -> Option<String> + Send + Sync + 'static,
    {
        self.name_fn = Some(Arc::new(name));
        self
    }

    /// The rules in words, for the report's notes.
    fn rules_text(&self) -> String {
        let mut rules = Vec::new();
        if !self.names.is_empty() {
            rules.push(format!("spans named {:?}", self.names));
        }
        if !self.target_prefixes.is_empty() {
            rules.push(format!("targets starting with {:?}", self.target_prefixes));
        }
        if self.predicate.is_some() {
            rules.push("a predicate".to_owned());
        }
        if let Some(f) = &self.job_field {
            rules.push(format!("spans with the field {f:?}"));
        }
        if rules.is_empty() {
            "no rule".to_owned()
        } else {
            rules.join(", ")
        }
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

    /// The job name of a selected span. Runs untracked.
    fn job_name<S>(&self, attrs: &Attributes<'_>, span: &SpanRef<'_, S>) -> String
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(name_fn) = &self.name_fn {
            let mut fields = AllFields(Vec::new());
            attrs.record(&mut fields);
            let ancestors: Vec<_> = span.scope().skip(1).map(|s| s.metadata()).collect();
            let lineage = SpanLineage {
                span: attrs.metadata(),
                ancestors: &ancestors,
                fields: &fields.0,
            };
            if let Some(name) = name_fn(&lineage) {
                return name;
            }
        }
        if let Some(field) = self.job_field.as_deref() {
            if let Some(value) = field_value(attrs, field) {
                return value;
            }
        }
        if self.ancestor_job_field.is_some() {
            let inherited = span
                .scope()
                .skip(1)
                .find_map(|s| s.extensions().get::<AncestorJob>().map(|a| a.0.clone()));
            if let Some(name) = inherited {
                return name;
            }
        }
        attrs.metadata().name().to_owned()
    }
}

/// A selected span and its ancestors, given to [`ScopeLayer::job_name_fn`].
#[derive(Debug)]
pub struct SpanLineage<'a> {
    span: &'static Metadata<'static>,
    ancestors: &'a [&'static Metadata<'static>],
    fields: &'a [(&'static str, String)],
}

impl<'a> SpanLineage<'a> {
    /// The span's metadata (name, target, level, field names).
    pub fn metadata(&self) -> &'static Metadata<'static> {
        self.span
    }

    /// The span's ancestors, nearest (its parent) first.
    pub fn ancestors(&self) -> &'a [&'static Metadata<'static>] {
        self.ancestors
    }

    /// The value of the span's field `name` recorded at its creation, as text (`Display` of
    /// strings, `Debug` of other values).
    pub fn field(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

type SpanRef<'a, S> = ::tracing_subscriber::registry::SpanRef<'a, S>;

/// Per-span state of a selected span, in the span's extensions.
struct SpanRun(OwnedRun);

/// The [`ScopeLayer::ancestor_job_field`] value of a span that has it, in its extensions.
struct AncestorJob(String);

/// The value of field `field` recorded at creation, as text.
fn field_value(attrs: &Attributes<'_>, field: &str) -> Option<String> {
    let mut visit = FieldValue { field, value: None };
    attrs.record(&mut visit);
    visit.value
}

/// Every field recorded at creation, as text.
struct AllFields(Vec<(&'static str, String)>);

impl Visit for AllFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

/// A level's verbosity (1 = ERROR … 5 = TRACE).
fn verbosity(level: Level) -> Verbosity {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The most verbose level any filter of the process enables now (0: none).
fn max_level() -> Option<Verbosity> {
    Some(LevelFilter::current().into_level().map_or(0, verbosity))
}

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

/// One selected span entered on this thread.
#[derive(Clone, Copy)]
struct Entered {
    /// The span's id.
    id: u64,
    /// The context entering it set (path, run token or 0).
    ctx: thread::Context,
    /// The context to restore when it is exited (or closes).
    prev: thread::Context,
}

thread_local! {
    /// Selected spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
}

/// Leaves the scopes of finished spans this thread is still inside: while the innermost
/// entered span is the thread's current context and `finished` says so, pops it and restores
/// the context it replaced (one switch for all of them). An entry below a live one waits until
/// that one exits.
fn leave_finished(stack: &mut Vec<Entered>, finished: impl Fn(&Entered) -> bool) {
    let mut current = thread::current_context();
    let mut target = None;
    while let Some(top) = stack.last() {
        if !finished(top) {
            break;
        }
        if top.ctx == current {
            current = top.prev;
            target = Some(top.prev);
        } else if top.prev != current {
            break;
        } // else: the allocation path already restored it (`thread::leave_if_asked`).
        stack.pop();
    }
    if let Some(prev) = target {
        thread::switch_context(prev);
    }
    publish_innermost(stack);
}

/// Tells the allocation path what to restore should the innermost entered span close on
/// another thread while this thread is inside it (`thread::ask_to_leave`).
fn publish_innermost(stack: &[Entered]) {
    match stack.last() {
        Some(e) => thread::set_leave_target(e.ctx.run, e.prev),
        None => thread::set_leave_target(0, thread::Context::UNSCOPED),
    }
}

/// Whether an entered span's run has finished (the span closed).
fn closed(e: &Entered) -> bool {
    e.ctx.run != 0 && !registry::run_active(e.ctx.run)
}

/// The hook `scope::context` calls when this thread's run has finished: leave closed spans.
fn leave_closed_spans() {
    let _ = ENTERED.try_with(|stack| {
        if let Ok(mut stack) = stack.try_borrow_mut() {
            leave_finished(&mut stack, closed);
        }
    });
}

impl<S> Layer<S> for ScopeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_layer(&mut self, _subscriber: &mut S) {
        scope::set_leave_finished(leave_closed_spans);
        if self.stats.is_none() {
            untracked(|| {
                let stats = Arc::new(SpanLayerStats::new(self.rules_text(), max_level));
                sources::register_span_layer(&stats);
                self.stats = Some(stats);
            });
        }
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() && self.selects(meta) {
            if let Some(stats) = &self.stats {
                stats.matched_callsites.fetch_add(1, Relaxed);
            }
        }
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(stats) = &self.stats {
            stats.seen.fetch_add(1, Relaxed);
        }
        let selected = self.selects(attrs.metadata());
        let names_descendants = self
            .ancestor_job_field
            .as_deref()
            .is_some_and(|f| attrs.metadata().fields().field(f).is_some());
        if !selected && !names_descendants {
            return;
        }
        untracked(|| {
            let Some(span) = ctx.span(id) else { return };
            if names_descendants {
                let field = self.ancestor_job_field.as_deref().unwrap_or_default();
                if let Some(value) = field_value(attrs, field) {
                    span.extensions_mut().insert(AncestorJob(value));
                }
            }
            if !selected {
                return;
            }
            if let Some(stats) = &self.stats {
                stats.selected.fetch_add(1, Relaxed);
            }
            // Contextual spans nest in what is current here; explicit parents in their
            // nearest selected ancestor.
            let parent = if attrs.is_contextual() {
                None
            } else {
                span.scope()
                    .skip(1)
                    .find_map(|s| s.extensions().get::<SpanRun>().map(|r| r.0.handle()))
            };
            let parent = parent.map_or_else(scope::context, |h| h.parts());
            let run = OwnedRun::begin(&self.job_name(attrs, &span), parent);
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
            leave_finished(&mut stack, closed);
            if stack.len() == stack.capacity() {
                untracked(|| stack.reserve(8));
            }
            // Switch only once the push cannot allocate (it would be charged to the span).
            let prev = handle.enter_guard().into_previous();
            stack.push(Entered {
                id: id.into_u64(),
                ctx: thread::current_context(),
                prev,
            });
            publish_innermost(&stack);
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
            // Still inside it on this thread (a forgotten guard): leave first, so this
            // thread's figures are flushed into the run before it finishes.
            let (span_id, token) = (id.into_u64(), run.handle().parts().run);
            let _ = ENTERED.try_with(|stack| {
                if let Ok(mut stack) = stack.try_borrow_mut() {
                    leave_finished(&mut stack, |e| {
                        (e.id == span_id && e.ctx.run == token) || closed(e)
                    });
                }
            });
            drop(run); // finishes the run (as panicked during unwinding)
            leave_closed_spans();
            // Threads still inside it elsewhere leave at their next allocation.
            thread::ask_to_leave(token);
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
        let Some(pos) = stack.iter().rposition(|e| e.id == id) else {
            leave_finished(&mut stack, closed);
            return;
        };
        let Entered { prev, .. } = stack.remove(pos);
        if pos == stack.len() {
            thread::switch_context(prev);
        } else {
            // Exited out of order: the entry above it now restores what this one would.
            stack[pos].prev = prev;
        }
        // A closed span under the one exited is left now.
        leave_finished(&mut stack, closed);
    });
}
