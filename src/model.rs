//! The model: plain data shared by every layer — figures, runs, frames, stack modes.
//!
//! Rules: nothing here knows about the allocator, the tables or the renderers, and this
//! module imports nothing from the crate. The registry stores [`RunReport`]s, the
//! snapshot builds reports from [`Counters`], the renderers print them: all from here, so data
//! flows one way (allocator → thread counters → registry → snapshot → renderers) and every
//! layer can name the same types.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A number of objects (blocks) and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Number of blocks.
    pub objects: u64,
    /// Bytes the program asked for (header overhead excluded).
    pub bytes: u64,
}

impl Usage {
    /// A usage of `objects` blocks totalling `bytes`.
    pub const fn new(objects: u64, bytes: u64) -> Self {
        Usage { objects, bytes }
    }

    /// Whether nothing is counted.
    pub const fn is_zero(&self) -> bool {
        self.objects == 0 && self.bytes == 0
    }
}

impl core::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage::new(
            self.objects.saturating_add(o.objects),
            self.bytes.saturating_add(o.bytes),
        )
    }
}

impl core::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        *self = *self + o;
    }
}

/// `self - o`, each field clamped at 0 (a difference of figures never goes negative: what was
/// freed meanwhile makes it a lower bound).
impl core::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage::new(
            self.objects.saturating_sub(o.objects),
            self.bytes.saturating_sub(o.bytes),
        )
    }
}

impl core::ops::SubAssign for Usage {
    fn sub_assign(&mut self, o: Usage) {
        *self = *self - o;
    }
}

/// One finished run of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The job's name (as stored: see [`MAX_JOB_NAME_BYTES`]), shared with the job's entry
    /// and every other run of it, never copied per run.
    #[serde(deserialize_with = "read_job_name")]
    pub job: SharedStr,
    /// The run's number within its job, from 1.
    pub run: u64,
    /// Wall time from the start of the run to its end, in nanoseconds.
    pub duration_ns: u64,
    /// When the run finished, in milliseconds since the Unix epoch.
    pub finished_unix_ms: u64,
    /// What the run allocated (inclusive of nested jobs).
    pub allocated: Usage,
    /// Highest live bytes of the run while it ran.
    pub peak_bytes: u64,
    /// What the run had allocated and not freed when it finished.
    pub retained_at_finish: Usage,
    /// Whether the run ended by a panic (or its future was dropped during one).
    pub panicked: bool,
    /// `true` when the run could not be measured: every run slot was in use when it started
    /// (65,535 runs active at once — typically `.track_scope()` futures that were never
    /// finished or were forgotten with `std::mem::forget`, which keep their slots). The run
    /// is still counted in its job's figures, but `allocated`, `peak_bytes` and
    /// `retained_at_finish` are 0 and mean nothing. Absent from JSON when `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unmeasured: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RunReport {
    /// The run's wall time.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.duration_ns)
    }
}

/// A limit on one figure of a run: the limits of [`MemoryCheck`](crate::testing::MemoryCheck)
/// in tests and of [`Budget`](crate::budget::Budget)s in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Limit {
    /// Objects the run still held when it finished
    /// ([`MemoryCheck::max_retained_objects`](crate::testing::MemoryCheck::max_retained_objects)).
    RetainedObjects,
    /// Bytes the run still held when it finished
    /// ([`MemoryCheck::max_retained_bytes`](crate::testing::MemoryCheck::max_retained_bytes)).
    RetainedBytes,
    /// The run's highest live bytes
    /// ([`MemoryCheck::max_peak_bytes`](crate::testing::MemoryCheck::max_peak_bytes)).
    PeakBytes,
    /// Objects the run allocated
    /// ([`MemoryCheck::max_allocated_objects`](crate::testing::MemoryCheck::max_allocated_objects)).
    AllocatedObjects,
    /// Bytes the run allocated
    /// ([`MemoryCheck::max_allocated_bytes`](crate::testing::MemoryCheck::max_allocated_bytes)).
    AllocatedBytes,
}

impl Limit {
    /// Every limit, in the order violations are listed: retained, peak, allocated.
    pub const ALL: [Limit; 5] = [
        Limit::RetainedObjects,
        Limit::RetainedBytes,
        Limit::PeakBytes,
        Limit::AllocatedObjects,
        Limit::AllocatedBytes,
    ];

    /// Whether the figure is in bytes (else objects).
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Limit::RetainedBytes | Limit::PeakBytes | Limit::AllocatedBytes
        )
    }

    /// The name in metrics labels and the `ALLOCSCOPE_BUDGETS` syntax: `retained_objects`,
    /// `retained_bytes`, `peak_bytes`, `allocated_objects`, `allocated_bytes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::RetainedObjects => "retained_objects",
            Limit::RetainedBytes => "retained_bytes",
            Limit::PeakBytes => "peak_bytes",
            Limit::AllocatedObjects => "allocated_objects",
            Limit::AllocatedBytes => "allocated_bytes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One limit exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which limit.
    pub limit: Limit,
    /// The limit's value.
    pub max: u64,
    /// The measured value (above `max`).
    pub measured: u64,
}

/// A set of limits on a run's figures: the one implementation behind
/// [`MemoryCheck`](crate::testing::MemoryCheck) and [`Budget`](crate::budget::Budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    max: [Option<u64>; 5],
}

impl Limits {
    /// Sets `limit` to `max`.
    pub(crate) fn set(&mut self, limit: Limit, max: u64) {
        self.max[limit.index()] = Some(max);
    }

    /// The value of `limit`, if set.
    pub(crate) fn get(&self, limit: Limit) -> Option<u64> {
        self.max[limit.index()]
    }

    /// Whether no limit is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.max.iter().all(Option::is_none)
    }

    /// The limits set, in [`Limit::ALL`] order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL
            .into_iter()
            .filter_map(|l| self.get(l).map(|m| (l, m)))
    }

    /// The limits the figures exceed, in [`Limit::ALL`] order (a figure equal to its limit
    /// passes).
    pub(crate) fn violations(
        &self,
        retained: Usage,
        peak_bytes: u64,
        allocated: Usage,
    ) -> Vec<Violation> {
        self.iter()
            .filter_map(|(limit, max)| {
                let measured = match limit {
                    Limit::RetainedObjects => retained.objects,
                    Limit::RetainedBytes => retained.bytes,
                    Limit::PeakBytes => peak_bytes,
                    Limit::AllocatedObjects => allocated.objects,
                    Limit::AllocatedBytes => allocated.bytes,
                };
                (measured > max).then_some(Violation {
                    limit,
                    max,
                    measured,
                })
            })
            .collect()
    }
}

/// One finished run of a job, as a marker on the timeline: what [`RunReport`] says of the run,
/// placed in time ([`RunEvent::from`] a run report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RunEvent {
    /// The job's name (as stored: see [`MAX_JOB_NAME_BYTES`]), shared with every other event
    /// of the job.
    #[serde(deserialize_with = "read_job_name")]
    pub job: SharedStr,
    /// The run's number within its job, from 1.
    pub run: u64,
    /// When the run started, in milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// When the run finished, in milliseconds since the Unix epoch.
    pub finish_unix_ms: u64,
    /// Wall time of the run, in nanoseconds.
    pub duration_ns: u64,
    /// What the run allocated (inclusive of nested jobs).
    pub allocated: Usage,
    /// Highest live bytes of the run while it ran.
    pub peak_bytes: u64,
    /// What the run still held when it finished.
    pub retained_at_finish: Usage,
    /// Whether the run ended by a panic.
    pub panicked: bool,
}

/// The event of a run: its name is the run report's, shared (a reference count, no copy and
/// no allocation).
impl From<&RunReport> for RunEvent {
    fn from(r: &RunReport) -> Self {
        RunEvent {
            job: r.job.clone(),
            run: r.run,
            start_unix_ms: r.finished_unix_ms.saturating_sub(r.duration_ns / 1_000_000),
            finish_unix_ms: r.finished_unix_ms,
            duration_ns: r.duration_ns,
            allocated: r.allocated,
            peak_bytes: r.peak_bytes,
            retained_at_finish: r.retained_at_finish,
            panicked: r.panicked,
        }
    }
}

/// The longest job name stored, in bytes. A longer name is stored cut (see
/// [`stored_job_name`]): every output — text, JSON, HTML, `/metrics` labels, pprof, DHAT,
/// folded stacks, dumps — shows the stored name, and looking a job up by its full name
/// ([`Report::job`](crate::Report::job)) finds it.
pub const MAX_JOB_NAME_BYTES: usize = 256;

/// The name a job called `name` is stored and shown under: `name` itself when it is at most
/// [`MAX_JOB_NAME_BYTES`] bytes long; else its first bytes, cut at a character boundary,
/// followed by a marker with the full length and a 64-bit hash of the full name, so that two
/// long names that differ anywhere stay two jobs (and the same name gives the same stored
/// name in every process and version):
/// `"{prefix}…[1048576 bytes #0123456789abcdef]"`, at most [`MAX_JOB_NAME_BYTES`] bytes in
/// all. A stored name is its own stored name.
///
/// ```
/// use allocscope::{stored_job_name, MAX_JOB_NAME_BYTES};
/// assert_eq!(stored_job_name("import_users"), "import_users");
/// let long = "x".repeat(1 << 20);
/// let stored = stored_job_name(&long);
/// assert!(stored.len() <= MAX_JOB_NAME_BYTES);
/// assert!(stored.ends_with("]") && stored.contains("…[1048576 bytes #"));
/// assert_eq!(stored_job_name(&stored), stored);
/// assert_ne!(stored_job_name(&format!("{long}y")), stored);
/// ```
pub fn stored_job_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= MAX_JOB_NAME_BYTES {
        return std::borrow::Cow::Borrowed(name);
    }
    // FNV-1a's step over 8-byte little-endian words, then the tail bytes: stable across
    // processes, platforms and Rust versions, and a word at a time (names of megabytes are
    // hashed at every scope entry).
    let step = |h: u64, w: u64| (h ^ w).wrapping_mul(0x0100_0000_01b3);
    let words = name.as_bytes().chunks_exact(8);
    let tail = words.remainder();
    let hash = words.fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        step(h, u64::from_le_bytes(w.try_into().unwrap_or_default()))
    });
    let hash = tail.iter().fold(hash, |h, &b| step(h, u64::from(b)));
    let marker = format!("…[{} bytes #{hash:016x}]", name.len());
    let mut end = MAX_JOB_NAME_BYTES - marker.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{marker}", &name[..end]))
}

/// `deserialize_with` of a job name: read names are stored names too ([`stored_job_name`]),
/// so a report from elsewhere renders under the same rule as one built here.
pub(crate) fn read_job_name<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let name = String::deserialize(d)?;
    Ok(T::from(match stored_job_name(&name) {
        std::borrow::Cow::Borrowed(_) => name,
        std::borrow::Cow::Owned(cut) => cut,
    }))
}

/// `deserialize_with` of a scope (job names, outermost first): each name as [`read_job_name`].
pub(crate) fn read_job_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    let mut names = Vec::<String>::deserialize(d)?;
    for name in &mut names {
        if let std::borrow::Cow::Owned(cut) = stored_job_name(name) {
            *name = cut;
        }
    }
    Ok(names)
}

/// One stack frame of a callsite.
///
/// Its strings are [`SharedStr`]s: every callsite of a report (and of every later report)
/// that passes through the same code shares one copy of the function name and file, so
/// building or cloning a report copies no frame text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function name (or the address, if it could not be resolved).
    pub function: SharedStr,
    /// Source file, when debug info has it.
    pub file: Option<SharedStr>,
    /// Source line, when debug info has it.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame of `function` (a `&str`, `String` or [`SharedStr`]), in `file` at `line` when
    /// known.
    ///
    /// ```
    /// use allocscope::Frame;
    /// let f = Frame::new("app::load", Some("src/app.rs"), Some(12));
    /// assert_eq!(f.function, "app::load");
    /// assert_eq!(f.file.as_deref(), Some("src/app.rs"));
    /// ```
    pub fn new(function: impl Into<SharedStr>, file: Option<&str>, line: Option<u32>) -> Self {
        Frame {
            function: function.into(),
            file: file.map(SharedStr::from),
            line,
        }
    }
}

/// The four monotonic counters of anything that allocates: allocations and frees, objects and
/// bytes. Live figures are `alloc - free` (saturating: a reader may see a free before its
/// allocation when the two were counted on different threads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) alloc_objects: u64,
    pub(crate) alloc_bytes: u64,
    pub(crate) free_objects: u64,
    pub(crate) free_bytes: u64,
}

impl Counters {
    /// `objects` allocations of `bytes` in all, nothing freed.
    #[inline(always)]
    pub(crate) const fn of_allocs(objects: u64, bytes: u64) -> Counters {
        Counters {
            alloc_objects: objects,
            alloc_bytes: bytes,
            free_objects: 0,
            free_bytes: 0,
        }
    }

    /// `objects` frees of `bytes` in all, nothing allocated.
    #[inline(always)]
    pub(crate) const fn of_frees(objects: u64, bytes: u64) -> Counters {
        Counters {
            alloc_objects: 0,
            alloc_bytes: 0,
            free_objects: objects,
            free_bytes: bytes,
        }
    }

    /// Whether nothing was allocated or freed.
    #[inline(always)]
    pub(crate) fn is_zero(&self) -> bool {
        self.alloc_objects | self.alloc_bytes | self.free_objects | self.free_bytes == 0
    }

    /// Net live bytes, `alloc_bytes - free_bytes` as a signed figure (wrapping): negative when
    /// these counters saw frees of blocks counted elsewhere.
    #[inline(always)]
    pub(crate) fn net_bytes(&self) -> i64 {
        self.alloc_bytes.wrapping_sub(self.free_bytes) as i64
    }

    /// Adds `o` field by field (saturating).
    pub(crate) fn add(&mut self, o: Counters) {
        self.alloc_objects = self.alloc_objects.saturating_add(o.alloc_objects);
        self.alloc_bytes = self.alloc_bytes.saturating_add(o.alloc_bytes);
        self.free_objects = self.free_objects.saturating_add(o.free_objects);
        self.free_bytes = self.free_bytes.saturating_add(o.free_bytes);
    }

    /// What was allocated.
    pub(crate) fn allocated(&self) -> Usage {
        Usage::new(self.alloc_objects, self.alloc_bytes)
    }

    /// What was allocated and not freed.
    pub(crate) fn retained(&self) -> Usage {
        Usage::new(
            self.alloc_objects.saturating_sub(self.free_objects),
            self.alloc_bytes.saturating_sub(self.free_bytes),
        )
    }
}

/// The storage of [`Counters`] that threads add to: a path's, a run's, a callsite's, a thread
/// slot's pending figures, a finished run's ledger entry. Each field is monotonic and accessed
/// `Relaxed`: a reader that needs the four read as one set brings its own protocol (a slot's
/// sequence number, a ledger entry's run stamp, the snapshot's order of reads).
///
/// Two ways to write: [`add`](Self::add) and friends (`fetch_add`, any thread) and the
/// owner-only [`bump_alloc`](Self::bump_alloc) / [`bump_free`](Self::bump_free) (a plain load
/// and store, no locked instruction: only for counters one thread writes, a thread slot's).
/// Nothing here allocates, locks or panics: usable inside `GlobalAlloc`.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) alloc_objects: AtomicU64,
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) free_objects: AtomicU64,
    pub(crate) free_bytes: AtomicU64,
}

impl AtomicCounters {
    /// All zero (usable in `static` initialisers).
    pub(crate) const fn new() -> Self {
        AtomicCounters {
            alloc_objects: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            free_objects: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
        }
    }

    /// The four figures now (each read `Relaxed`, allocations first).
    #[inline]
    pub(crate) fn load(&self) -> Counters {
        Counters {
            alloc_objects: self.alloc_objects.load(Relaxed),
            alloc_bytes: self.alloc_bytes.load(Relaxed),
            free_objects: self.free_objects.load(Relaxed),
            free_bytes: self.free_bytes.load(Relaxed),
        }
    }

    /// Adds `c` (any thread). A pair that is zero costs no read-modify-write.
    #[inline]
    pub(crate) fn add(&self, c: Counters) {
        if c.alloc_objects | c.alloc_bytes != 0 {
            self.add_alloc(c.alloc_objects, c.alloc_bytes);
        }
        if c.free_objects | c.free_bytes != 0 {
            self.add_free(c.free_objects, c.free_bytes);
        }
    }

    /// Adds allocations (any thread); returns the allocated bytes including these.
    #[inline]
    pub(crate) fn add_alloc(&self, objects: u64, bytes: u64) -> u64 {
        self.alloc_objects.fetch_add(objects, Relaxed);
        self.alloc_bytes
            .fetch_add(bytes, Relaxed)
            .wrapping_add(bytes)
    }

    /// Adds frees (any thread).
    #[inline]
    pub(crate) fn add_free(&self, objects: u64, bytes: u64) {
        self.free_objects.fetch_add(objects, Relaxed);
        self.free_bytes.fetch_add(bytes, Relaxed);
    }

    /// Owner-only: adds allocations with plain loads and stores; returns the allocated bytes
    /// including these. Only for counters a single thread writes (a lost update otherwise).
    #[inline(always)]
    pub(crate) fn bump_alloc(&self, objects: u64, bytes: u64) -> u64 {
        bump(&self.alloc_objects, objects);
        let ab = self.alloc_bytes.load(Relaxed).wrapping_add(bytes);
        self.alloc_bytes.store(ab, Relaxed);
        ab
    }

    /// Owner-only: adds frees with plain loads and stores (see [`bump_alloc`](Self::bump_alloc)).
    #[inline(always)]
    pub(crate) fn bump_free(&self, objects: u64, bytes: u64) {
        bump(&self.free_objects, objects);
        bump(&self.free_bytes, bytes);
    }

    /// Sets all four to zero.
    #[inline]
    pub(crate) fn clear(&self) {
        for a in [
            &self.alloc_objects,
            &self.alloc_bytes,
            &self.free_objects,
            &self.free_bytes,
        ] {
            a.store(0, Relaxed);
        }
    }

    /// Live bytes now, never above the true figure: `free_bytes` is read after `alloc_bytes`,
    /// so a racing free can only make it lower (saturating at zero).
    #[inline]
    pub(crate) fn live_bytes(&self) -> u64 {
        self.alloc_bytes
            .load(Relaxed)
            .saturating_sub(self.free_bytes.load(Relaxed))
    }
}

/// Owner-only increment: a plain load and store, no locked instruction.
#[inline(always)]
pub(crate) fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
}

/// Which allocations record a stack (a callsite).
///
/// Per-job counts (objects, bytes, peak, retained) are exact in every mode; the mode only
/// decides how callsites are attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum StackMode {
    /// No stacks: per-job counts only. The cheapest mode.
    Off,
    /// Sample allocations by bytes: the gap between samples is exponentially distributed with
    /// mean `mean_bytes`, so an allocation of `s` bytes is sampled with probability
    /// `p = 1 - exp(-s / mean_bytes)`. Each sampled block stands for `1/p` blocks in callsite
    /// figures, which are then unbiased **estimates** (marked as such in reports).
    Sampled {
        /// Mean number of bytes between samples (default 512 KiB). One rule for every way of
        /// setting it, as Go's `MemProfileRate`: **0 means no stacks** (like
        /// [`StackMode::Off`]) and **1 means every allocation** (like [`StackMode::Every`]);
        /// [`stack_mode`](crate::stack_mode) then reports `Off` or `Every`.
        mean_bytes: u64,
    },
    /// A stack for every allocation: callsite figures are exact.
    Every,
}

/// Default mean sampling interval: 512 KiB, as Go's `MemProfileRate` and jemalloc.
pub const DEFAULT_SAMPLE_BYTES: u64 = 512 * 1024;

impl Default for StackMode {
    /// `Sampled { mean_bytes: 512 KiB }`: cheap enough for production.
    fn default() -> Self {
        StackMode::Sampled {
            mean_bytes: DEFAULT_SAMPLE_BYTES,
        }
    }
}

/// [`StackMode::Off`] as one number (see [`StackMode::encode`]).
pub(crate) const MODE_OFF: u64 = 0;
/// [`StackMode::Every`] as one number; any larger number is the mean of a sampled mode.
pub(crate) const MODE_EVERY: u64 = 1;

impl StackMode {
    /// The mode as one number: `MODE_OFF`, `MODE_EVERY`, n ≥ 2 = sampled with mean n.
    pub(crate) fn encode(self) -> u64 {
        match self {
            StackMode::Off => MODE_OFF,
            StackMode::Every => MODE_EVERY,
            // The rule of `mean_bytes`: 0 is off, 1 is every allocation.
            StackMode::Sampled { mean_bytes } => mean_bytes,
        }
    }

    /// The inverse of [`encode`](Self::encode).
    pub(crate) fn decode(v: u64) -> StackMode {
        match v {
            MODE_OFF => StackMode::Off,
            MODE_EVERY => StackMode::Every,
            mean_bytes => StackMode::Sampled { mean_bytes },
        }
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970): the time stamps of
/// runs, reports, marks and dump names.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A UTC date and time: the one calendar conversion behind every date allocscope prints
/// (report headers, marks, dump file names, the chart's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Utc {
    /// The UTC time `unix_ms` milliseconds after the Unix epoch (proleptic Gregorian calendar,
    /// H. Hinnant's `civil_from_days`).
    pub(crate) fn from_unix_ms(unix_ms: u64) -> Utc {
        let secs = unix_ms / 1000;
        let rem = (secs % 86_400) as u32;
        let z = (secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            millis: (unix_ms % 1000) as u32,
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as reports print a time.
impl core::fmt::Display for Utc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_differences_clamp_at_zero() {
        assert_eq!(Usage::new(5, 100) - Usage::new(2, 40), Usage::new(3, 60));
        assert_eq!(Usage::new(1, 10) - Usage::new(2, 40), Usage::new(0, 0));
        let mut u = Usage::new(4, 4);
        u -= Usage::new(1, 5);
        assert_eq!(u, Usage::new(3, 0));
    }

    #[test]
    fn utc_dates() {
        let t = Utc::from_unix_ms(0);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.millis),
            (1970, 1, 1, 0, 0)
        );
        // 2023-11-14 22:13:20.123 UTC; and a leap day.
        let t = Utc::from_unix_ms(1_700_000_000_123);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis),
            (2023, 11, 14, 22, 13, 20, 123)
        );
        let t = Utc::from_unix_ms(951_782_400_000);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }

    #[test]
    fn counters_retained_saturates() {
        let mut c = Counters::default();
        c.add(Counters {
            alloc_objects: 2,
            alloc_bytes: 10,
            free_objects: 3,
            free_bytes: 4,
        });
        assert_eq!(c.allocated(), Usage::new(2, 10));
        assert_eq!(c.retained(), Usage::new(0, 6));
    }

    #[test]
    fn a_mean_of_zero_is_off_and_one_is_every() {
        assert_eq!(
            StackMode::decode(StackMode::Sampled { mean_bytes: 0 }.encode()),
            StackMode::Off
        );
        assert_eq!(
            StackMode::decode(StackMode::Sampled { mean_bytes: 1 }.encode()),
            StackMode::Every
        );
    }

    #[test]
    fn stack_mode_encoding_round_trips() {
        for m in [
            StackMode::Off,
            StackMode::Every,
            StackMode::Sampled { mean_bytes: 4096 },
        ] {
            assert_eq!(StackMode::decode(m.encode()), m);
        }
    }
}

/// An immutable string shared by reference count (an `Arc<String>`: one pointer wide, so a
/// [`Frame`] is 24 bytes): the function names and
/// files of [`Frame`]s, stored once per distinct frame in the process and shared by every
/// report that shows it.
///
/// It reads like a `&str` (it derefs to `str`, so `frame.function.contains("parse")`,
/// `frame.function.as_str()`, `&*frame.function` and `frame.file.as_deref()` work), compares
/// equal to `str`, `&str` and `String`, prints as the string, and is written to and read
/// from JSON as a plain string. Build one with `.into()` from a `String` or `&str`.
///
/// ```
/// use allocscope::SharedStr;
/// let s: SharedStr = "worker::import_users".into();
/// assert_eq!(s, "worker::import_users");
/// assert!(s.ends_with("import_users"));
/// let copy = s.clone(); // a reference-count increment, no copy of the text
/// assert_eq!(copy.as_str(), s.as_str());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedStr(std::sync::Arc<String>);

impl SharedStr {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One copy of each distinct string: what [`SharedStrings::frame`] returns has the strings of
/// equal ones met before (the stack table and the file reader keep one each).
#[derive(Default)]
pub(crate) struct SharedStrings(std::collections::HashSet<SharedStr>);

impl SharedStrings {
    /// `s`, as this set's one copy of its text.
    pub(crate) fn get(&mut self, s: &SharedStr) -> SharedStr {
        if let Some(seen) = self.0.get(s.as_str()) {
            return seen.clone();
        }
        self.0.insert(s.clone());
        s.clone()
    }

    /// `f` with its function name and file as this set's copies.
    pub(crate) fn frame(&mut self, mut f: Frame) -> Frame {
        f.function = self.get(&f.function);
        f.file = f.file.as_ref().map(|file| self.get(file));
        f
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        SharedStr::from("")
    }
}

impl core::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl core::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self.as_str(), f)
    }
}

impl core::fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(std::sync::Arc::new(s.to_string()))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(std::sync::Arc::new(s))
    }
}

impl From<&String> for SharedStr {
    fn from(s: &String) -> Self {
        SharedStr(std::sync::Arc::new(s.clone()))
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        std::sync::Arc::try_unwrap(s.0).unwrap_or_else(|shared| shared.to_string())
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o.as_str()
    }
}

impl PartialEq<SharedStr> for str {
    fn eq(&self, o: &SharedStr) -> bool {
        self == o.as_str()
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, o: &SharedStr) -> bool {
        *self == o.as_str()
    }
}

impl PartialEq<SharedStr> for String {
    fn eq(&self, o: &SharedStr) -> bool {
        self.as_str() == o.as_str()
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SharedStr::from)
    }
}

/// A callsite's stack: its frames, innermost first, shared — every callsite of the same stack
/// (in a report's list, in each job's list, in a report read from a file) holds one copy, and
/// cloning is a reference-count increment.
///
/// It reads like a slice of [`Frame`]s (`.iter()`, `.len()`, `.first()`, indexing,
/// `for f in &frames`, `== vec`), and is made from a `Vec<Frame>` with `.into()`.
///
/// ```
/// use allocscope::{Frame, SharedFrames};
/// let frames: SharedFrames = vec![Frame::new("app::load", None, None)].into();
/// let copy = frames.clone(); // shares the frames
/// assert_eq!(copy.len(), 1);
/// assert_eq!(frames[0].function, "app::load");
/// for f in &frames {
///     assert!(f.file.is_none());
/// }
/// assert_eq!(frames, vec![Frame::new("app::load", None, None)]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedFrames(std::sync::Arc<[Frame]>);

impl SharedFrames {
    /// The frames.
    pub fn as_slice(&self) -> &[Frame] {
        &self.0
    }
}

impl Default for SharedFrames {
    fn default() -> Self {
        SharedFrames(std::sync::Arc::from(Vec::new()))
    }
}

impl core::ops::Deref for SharedFrames {
    type Target = [Frame];
    fn deref(&self) -> &[Frame] {
        &self.0
    }
}

/// Copy on write: changing the frames of one callsite copies them first if they are shared.
impl core::ops::DerefMut for SharedFrames {
    fn deref_mut(&mut self) -> &mut [Frame] {
        if std::sync::Arc::get_mut(&mut self.0).is_none() {
            self.0 = self.0.iter().cloned().collect();
        }
        // A fresh copy has no other owner: `get_mut` succeeds.
        std::sync::Arc::get_mut(&mut self.0).unwrap_or_default()
    }
}

impl AsRef<[Frame]> for SharedFrames {
    fn as_ref(&self) -> &[Frame] {
        &self.0
    }
}

impl core::borrow::Borrow<[Frame]> for SharedFrames {
    fn borrow(&self) -> &[Frame] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a SharedFrames {
    type Item = &'a Frame;
    type IntoIter = core::slice::Iter<'a, Frame>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<Frame>> for SharedFrames {
    fn from(v: Vec<Frame>) -> Self {
        SharedFrames(v.into())
    }
}

impl From<&[Frame]> for SharedFrames {
    fn from(v: &[Frame]) -> Self {
        SharedFrames(v.into())
    }
}

impl From<std::sync::Arc<[Frame]>> for SharedFrames {
    fn from(v: std::sync::Arc<[Frame]>) -> Self {
        SharedFrames(v)
    }
}

impl From<SharedFrames> for Vec<Frame> {
    fn from(f: SharedFrames) -> Self {
        f.0.to_vec()
    }
}

impl FromIterator<Frame> for SharedFrames {
    fn from_iter<I: IntoIterator<Item = Frame>>(iter: I) -> Self {
        SharedFrames(iter.into_iter().collect())
    }
}

impl core::fmt::Debug for SharedFrames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq<[Frame]> for SharedFrames {
    fn eq(&self, o: &[Frame]) -> bool {
        *self.0 == *o
    }
}

impl PartialEq<&[Frame]> for SharedFrames {
    fn eq(&self, o: &&[Frame]) -> bool {
        *self.0 == **o
    }
}

impl PartialEq<Vec<Frame>> for SharedFrames {
    fn eq(&self, o: &Vec<Frame>) -> bool {
        *self.0 == **o
    }
}

impl Serialize for SharedFrames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedFrames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Frame>::deserialize(d).map(SharedFrames::from)
    }
}
