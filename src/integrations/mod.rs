//! Scopes from what programs already have: `tracing` spans, `tower` requests, `rayon` tasks.
//!
//! Each integration is an optional cargo feature with its own optional dependencies; the core
//! crate never depends on them. All of them build on the same two pieces of `scope`:
//! an `OwnedRun` (a run entered from many places, finished once) and `ScopeHandle`'s
//! enter/leave, the machinery `Tracked` futures use. Rules shared by every integration:
//!
//! * one unit of work (a selected span, a request, a task) is one **run** of its job, from its
//!   start to its end; every piece of it, on any thread, enters that run's scope and leaves it;
//! * the integration's own bookkeeping (span extensions, name strings, stacks) runs with
//!   tracking suspended: tracker overhead, never charged to a job;
//! * job names come from bounded sets (span names, a chosen field, matched routes), never raw
//!   URIs or ids: beyond `MAX_JOBS` names go to `(other jobs)`.

#[cfg(feature = "rayon")]
pub mod rayon;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "tracing")]
pub mod tracing;
