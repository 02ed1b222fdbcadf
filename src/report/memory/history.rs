//! The timeline and the run events a report carries, read from the `series` stores with job
//! names resolved.

use std::sync::Arc;

use super::{JobLive, RssBreakdown, RunEvent, TimelineSample, TimelineStats};
use crate::model::SharedStr;
use crate::registry::{self, JobEntry};
use crate::series::{self, MAX_SAMPLES};

/// What a report carries of the timeline.
pub(crate) struct History {
    pub timeline: Vec<TimelineSample>,
    pub run_events: Vec<RunEvent>,
    pub stats: TimelineStats,
}

/// The timeline and run events, with job names resolved (`jobs`: every job entry, by id).
pub(crate) fn history(jobs: &[Arc<JobEntry>]) -> History {
    // Each name is the job entry's one copy, shared by every event and sample that names it.
    let other = SharedStr::from(registry::OTHER_JOBS_NAME);
    let name = |id: u32| -> SharedStr {
        jobs.get(id as usize)
            .map_or_else(|| other.clone(), |j| j.name.clone())
    };
    let (stored, total) = series::events();
    let run_events: Vec<RunEvent> = stored.into_iter().map(|(_, event)| event).collect();
    let (raw_samples, taken, dropped) = series::samples();
    let timeline = raw_samples
        .iter()
        .map(|s| TimelineSample {
            unix_ms: s.unix_ms,
            rss_bytes: s.rss,
            heap_live_bytes: s.heap,
            not_returned_bytes: s.not_returned,
            breakdown: (s.parts_kib != [0; 7])
                .then(|| RssBreakdown::from_parts(s.parts_kib.map(|k| u64::from(k) * 1024))),
            top_jobs: s.top[..s.n_top as usize]
                .iter()
                .map(|&(j, b)| JobLive {
                    job: name(j),
                    live_bytes: b,
                })
                .collect(),
            merged: s.merged,
        })
        .collect();
    History {
        timeline,
        stats: TimelineStats {
            interval_ms: series::sampler_interval_ns() / 1_000_000,
            samples_taken: taken,
            samples_dropped: dropped,
            max_samples: MAX_SAMPLES as u64,
            run_events_total: total,
            run_events_dropped: total.saturating_sub(run_events.len() as u64),
        },
        run_events,
    }
}
