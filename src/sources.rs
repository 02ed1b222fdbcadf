//! What the scope sources saw: counters the span layers (`integrations::tracing`) keep about
//! the units of work offered to them and the ones they turned into runs, read by reports to
//! say why jobs are missing.
//!
//! Rules:
//! * A source registers its [`SpanLayerStats`] once, when it is installed; the list only
//!   grows and is bounded by [`MAX_SPAN_LAYERS`] (later layers are not listed).
//! * Counting is relaxed atomics on the span-creation path of the layer (never on the
//!   alloc/free path); the list of layers is written with tracking suspended, under a lock
//!   registered with `fork`, and holds them weakly: a dropped layer is no longer listed.
//! * This module names no higher layer: the level filter is read through a function pointer
//!   the source hands over ([`SpanLayerStats::max_level`]).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Once, Weak};

use parking_lot::Mutex;

use crate::fork;

/// Live span layers listed at most (a process has one or two).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) const MAX_SPAN_LAYERS: usize = 16;

/// Verbosity of a span level: 1 = ERROR … 5 = TRACE; 0 = off (as a maximum).
pub(crate) type Verbosity = u8;

/// One span layer's counters.
#[derive(Debug)]
pub(crate) struct SpanLayerStats {
    /// The layer's rules in words (`spans named "task"`).
    pub(crate) rules: String,
    /// Spans created that reached the layer.
    pub(crate) seen: AtomicU64,
    /// Of them, the ones it selected (each one run).
    pub(crate) selected: AtomicU64,
    /// Span callsites registered whose metadata the rules select.
    pub(crate) matched_callsites: AtomicU64,
    /// The most verbose level enabled anywhere in the process now (the global filter's
    /// hint), or `None` if the source cannot tell.
    pub(crate) max_level: fn() -> Option<Verbosity>,
}

#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
impl SpanLayerStats {
    pub(crate) fn new(rules: String, max_level: fn() -> Option<Verbosity>) -> Self {
        SpanLayerStats {
            rules,
            seen: AtomicU64::new(0),
            selected: AtomicU64::new(0),
            matched_callsites: AtomicU64::new(0),
            max_level,
        }
    }
}

/// A layer's figures, as a report reads them.
#[derive(Clone, Debug)]
pub(crate) struct SpanLayerFigures {
    pub(crate) rules: String,
    pub(crate) seen: u64,
    pub(crate) selected: u64,
    pub(crate) matched_callsites: u64,
    pub(crate) max_level: Option<Verbosity>,
}

static LAYERS: Mutex<Vec<Weak<SpanLayerStats>>> = Mutex::new(Vec::new());

fn layers() -> &'static Mutex<Vec<Weak<SpanLayerStats>>> {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| fork::register(&LAYERS));
    &LAYERS
}

/// Lists an installed span layer. Call with tracking suspended.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn register_span_layer(stats: &Arc<SpanLayerStats>) {
    let mut list = layers().lock();
    list.retain(|s| s.strong_count() > 0);
    if list.len() < MAX_SPAN_LAYERS {
        list.push(Arc::downgrade(stats));
    }
}

/// Every installed span layer's figures now. Call with tracking suspended.
pub(crate) fn span_layers() -> Vec<SpanLayerFigures> {
    let list: Vec<Arc<SpanLayerStats>> = layers().lock().iter().filter_map(Weak::upgrade).collect();
    list.iter()
        .map(|s| SpanLayerFigures {
            rules: s.rules.clone(),
            seen: s.seen.load(Relaxed),
            selected: s.selected.load(Relaxed),
            matched_callsites: s.matched_callsites.load(Relaxed),
            max_level: (s.max_level)(),
        })
        .collect()
}
