//! Memory over time, as reports read it: the process's memory next to the live heap
//! (`process`), the timeline of samples and the job run events with their names resolved
//! (`history`), each job's retention trend, and the chart (`chart`, feature `chart`).
//!
//! Rules:
//! * the model types here are plain data (serde); every field added carries `#[serde(default)]`
//!   at its use in [`Report`](super::Report) / [`JobReport`](super::JobReport), so version-1
//!   files (which have none of it) still read;
//! * the stores the history reads and the trend summaries live in `series`, below the
//!   registry; the background sampler that fills the timeline is `crate::timeline`, above the
//!   reports: nothing here starts or names it.

use crate::model::SharedStr;
use serde::{Deserialize, Serialize};

#[cfg(feature = "chart")]
mod chart;
mod history;
mod process;

#[cfg(feature = "chart")]
pub use chart::TimelineOptions;
pub(crate) use history::history;
pub use process::release_free_memory;
pub(crate) use process::{
    process_memory, process_memory_cached, read_raw, rss_bytes, tracked_live, StatsCache,
};

pub use crate::model::RunEvent;
pub use crate::series::{Trend, TrendKind};

/// The process's memory as the operating system and the allocator see it, next to the live
/// heap the tracker counts.
///
/// `rss_bytes − heap_live_bytes` is memory that no live block explains: code, stacks, libraries,
/// the allocator's own metadata, and — usually the large part after a batch that freed most of
/// what it allocated — freed memory the allocator kept instead of returning it to the OS
/// ([`not_returned_bytes`](Self::not_returned_bytes)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProcessMemory {
    /// Resident set size of the process (Linux: `/proc/self/statm`). 0 when it cannot be read
    /// (another OS, `/proc` not mounted); the text then says "RSS unavailable".
    pub rss_bytes: u64,
    /// Every byte the tracker counts as live: jobs, unscoped blocks and the tracker's own
    /// blocks (requested sizes; the per-block headers are not included).
    pub heap_live_bytes: u64,
    /// Live bytes of the tracker's own allocations (tables, reports, symbol caches).
    pub tracker_bytes: u64,
    /// Estimate of memory the program freed but the allocator still holds resident instead of
    /// returning it to the OS.
    ///
    /// With glibc malloc: the free bytes inside glibc's arenas (`mallinfo2().fordblks`: free
    /// chunks, fastbins and the top chunk, in every arena), capped at the anonymous resident
    /// memory no live block explains (`/proc/self/statm` resident − shared − `heap_live_bytes`).
    /// The cap matters after `malloc_trim`, which returns free pages with `MADV_DONTNEED` but
    /// leaves the chunks on glibc's free lists: they are no longer resident, so they are not
    /// counted. What the cap still lets in: thread stacks and allocator metadata, when free
    /// chunks exceed them (an estimate, not an exact figure). Freed blocks of 128 KiB or more (glibc's
    /// mmap threshold) are unmapped at once and are never in this figure. With another
    /// allocator: 0, and [`not_returned_method`](Self::not_returned_method) says it is unknown.
    pub not_returned_bytes: u64,
    /// The inner allocator, as far as it can be known: `"glibc malloc"`, `"musl malloc"`,
    /// `"unknown (not glibc malloc)"`, `"unknown"`. Empty in version-1 reports.
    pub allocator: String,
    /// How [`not_returned_bytes`](Self::not_returned_bytes) was obtained: `"mallinfo2"`,
    /// `"mallinfo"` (older glibc, figures wrap at 4 GiB), or `"unavailable"`.
    pub not_returned_method: String,
    /// Bytes glibc malloc has obtained from the OS and not given back (`mallinfo2().arena +
    /// hblkhd`: arena space plus mmapped blocks); 0 when unknown.
    pub allocator_mapped_bytes: u64,
    /// What the resident memory is made of, in parts that add up to RSS; `None` ("unavailable")
    /// unless glibc malloc serves the heap and `/proc/self/smaps` can be read (Linux with
    /// glibc; not musl, macOS, or a tracker wrapping jemalloc/mimalloc). See [`RssBreakdown`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<RssBreakdown>,
}

/// The process's resident memory split into parts that add up to RSS.
///
/// How each part is measured (Linux, glibc malloc), from one read of `/proc/self/smaps`
/// and one of glibc's `mallinfo2`:
///
/// * the mappings are classified first: **file-backed** (a mapping of a file, or the kernel's
///   `[vdso]`: code, shared libraries, mapped files, their private copied pages), **thread
///   stacks** (`[stack]`, and every anonymous read-write mapping directly above a `PROT_NONE`
///   guard mapping, which is how glibc lays out thread stacks, including its cache of exited
///   threads' stacks), and the rest, the **anonymous pool** (the brk heap, glibc's arenas and
///   mmapped blocks, static data, other anonymous maps);
/// * the anonymous pool is then split, each part capped at what is left of it, in this order:
///   **tracker** (the tracker's live blocks), **Rust heap** (every other tracked live block),
///   **C heap** (glibc's in-use bytes, `uordblks + hblkhd`, minus what the tracker accounts
///   for), **not returned** (glibc's free bytes, `fordblks`), and **other anonymous** (what
///   remains: static data, the tracker's static tables, glibc's own metadata, maps made
///   without malloc).
///
/// Tracked blocks are counted with their headers and glibc's 8-byte chunk word; glibc's
/// rounding of each chunk to 16 bytes is not known per block and lands in the C heap (at most
/// 15 bytes per live block). Tracked figures count requested bytes, so a reservation never
/// written (`Vec::with_capacity` untouched) is not resident: the caps then move it out of the
/// parts that follow, and the sum stays RSS.
///
/// **Tolerance**: the parts add up to the sum of `Rss:` over `/proc/self/smaps` exactly;
/// [`ProcessMemory::rss_bytes`] is read a moment earlier from `/proc/self/statm`, so the two
/// differ by what the process mapped or touched in between — in a quiet process less than
/// 1% of RSS or 1 MiB, whichever is larger (the test `rss_breakdown` checks that bound on a
/// process where each part is known).
///
/// With the `malloc` feature, C blocks allocated through the interposed `malloc` are tracked:
/// they are in **Rust heap** (as "tracked heap", charged to jobs) and the C heap is what glibc
/// holds for blocks allocated before the interposer or past it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RssBreakdown {
    /// Resident bytes of the live blocks allocscope tracks (jobs and unscoped), headers
    /// included: the heap the job table explains.
    pub rust_heap_bytes: u64,
    /// Heap allocated outside Rust's allocator: glibc's in-use bytes that allocscope does not
    /// track (C libraries calling `malloc` themselves). The `malloc` feature charges these to
    /// jobs.
    pub c_heap_bytes: u64,
    /// Memory the program freed that glibc keeps instead of returning it to the OS (the same
    /// estimate as [`ProcessMemory::not_returned_bytes`]).
    pub not_returned_bytes: u64,
    /// The tracker's own live blocks, headers included.
    pub tracker_bytes: u64,
    /// Resident pages of file mappings: the executable, shared libraries, mapped files, and
    /// the kernel's vDSO.
    pub file_backed_bytes: u64,
    /// Resident pages of thread stacks (the main thread's and every glibc thread stack,
    /// including cached stacks of exited threads).
    pub thread_stacks_bytes: u64,
    /// The rest of the anonymous memory: static data (`.bss`, the tracker's static tables),
    /// glibc's metadata, maps made without malloc.
    pub other_anon_bytes: u64,
}

impl RssBreakdown {
    /// The part names, in order, as the `/metrics` family
    /// `allocscope_rss_breakdown_bytes{part="..."}` labels them.
    pub const PARTS: [&'static str; 7] = [
        "rust_heap",
        "c_heap",
        "not_returned",
        "tracker",
        "file_backed",
        "thread_stacks",
        "other_anon",
    ];

    /// Each part's name (as in [`PARTS`](Self::PARTS)) and bytes, in that order.
    pub fn parts(&self) -> [(&'static str, u64); 7] {
        let v = [
            self.rust_heap_bytes,
            self.c_heap_bytes,
            self.not_returned_bytes,
            self.tracker_bytes,
            self.file_backed_bytes,
            self.thread_stacks_bytes,
            self.other_anon_bytes,
        ];
        let mut out = [("", 0u64); 7];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (Self::PARTS[i], v[i]);
        }
        out
    }

    /// A breakdown from parts in [`PARTS`](Self::PARTS) order.
    pub fn from_parts(v: [u64; 7]) -> Self {
        RssBreakdown {
            rust_heap_bytes: v[0],
            c_heap_bytes: v[1],
            not_returned_bytes: v[2],
            tracker_bytes: v[3],
            file_backed_bytes: v[4],
            thread_stacks_bytes: v[5],
            other_anon_bytes: v[6],
        }
    }

    /// The sum of the parts: RSS, as `/proc/self/smaps` counted it.
    pub fn total_bytes(&self) -> u64 {
        self.parts()
            .iter()
            .fold(0u64, |a, &(_, b)| a.saturating_add(b))
    }
}

/// The live bytes of one job at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobLive {
    /// The job's name (as stored: see [`MAX_JOB_NAME_BYTES`](crate::MAX_JOB_NAME_BYTES)),
    /// shared with every other sample and event of the job.
    #[serde(deserialize_with = "crate::model::read_job_name")]
    pub job: SharedStr,
    /// Its live bytes (inclusive of nested jobs), as its RETAINED column would show then.
    pub live_bytes: u64,
}

/// One point of the memory timeline, taken by the background sampler
/// ([`timeline::start`](crate::timeline::start)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TimelineSample {
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Resident set size then (0 when unavailable).
    pub rss_bytes: u64,
    /// All tracked live bytes then (jobs + unscoped + tracker).
    pub heap_live_bytes: u64,
    /// The not-returned estimate then (see [`ProcessMemory::not_returned_bytes`]).
    pub not_returned_bytes: u64,
    /// RSS by part then (see [`RssBreakdown`]); `None` where unavailable. The sampler refreshes
    /// the smaps and glibc figures it rests on at most once per 100× their cost, so between
    /// refreshes the file-backed, stack and C-heap parts repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<RssBreakdown>,
    /// The live bytes of the jobs that held the most then, largest first (at most
    /// [`timeline::TOP_JOBS`](crate::timeline::TOP_JOBS)).
    pub top_jobs: Vec<JobLive>,
    /// How many raw samples this one stands for: 1 for a sample at the sampler's interval;
    /// older samples are coarsened (see [`timeline`](crate::timeline)), and a coarse sample is
    /// the one with the highest RSS among the raw samples it replaces, so peaks survive.
    pub merged: u64,
}

/// Counters of the bounded timeline and run-event stores: what was kept and what was dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TimelineStats {
    /// The sampler's interval in milliseconds when the report was taken; 0 when it was not
    /// running.
    pub interval_ms: u64,
    /// Samples taken since the process started.
    pub samples_taken: u64,
    /// Samples dropped because even the coarsest level was full (the oldest go first).
    pub samples_dropped: u64,
    /// The most samples the timeline keeps ([`timeline::MAX_SAMPLES`](crate::timeline::MAX_SAMPLES)).
    pub max_samples: u64,
    /// Runs finished since the process started (every job).
    pub run_events_total: u64,
    /// Of those, runs whose event is not in [`Report::run_events`](super::Report::run_events)
    /// (see [`timeline`](crate::timeline) for which are kept).
    pub run_events_dropped: u64,
}

impl Trend {
    /// The trend as the TREND column prints it: `growing +12.3 KiB/run`, `leaking +12.3
    /// KiB/run`, `saturating`, `replaced`, `steady`, or `-` (not enough runs).
    pub fn label(&self) -> String {
        match self.kind {
            TrendKind::Growing | TrendKind::Leaking => format!(
                "{} +{}/run",
                self.kind.as_str(),
                super::text::human_bytes(self.bytes_per_run.max(0.0).round() as u64)
            ),
            k => k.as_str().to_string(),
        }
    }
}
