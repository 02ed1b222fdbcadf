//! The process's memory as the OS and the allocator see it: RSS, the allocator's free bytes,
//! and asking the allocator to give freed memory back.
//!
//! Rules: nothing here panics on a missing or odd `/proc`; unknown figures are 0 and say so
//! (`ProcessMemory::not_returned_method`, "RSS unavailable" in the text). The glibc entry
//! points (`mallinfo2`, `malloc_trim`) are looked up with `dlsym` at run time, so a binary
//! built here still starts on a glibc without them, and is not linked against them on musl.

use std::sync::OnceLock;

use super::ProcessMemory;

/// Resident set size in bytes from `/proc/self/statm` (second field × page size); `None` when
/// it cannot be read.
pub(crate) fn rss_bytes() -> Option<u64> {
    statm().map(|(resident, _)| resident)
}

/// (resident, resident file-backed and shared) bytes from `/proc/self/statm`.
fn statm() -> Option<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 128];
        let text = read_raw(b"/proc/self/statm\0", &mut buf)?;
        let mut fields = text.split_ascii_whitespace().skip(1);
        let resident: u64 = fields.next()?.parse().ok()?;
        let shared: u64 = fields.next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as u64 } else { 4096 };
        Some((resident.checked_mul(page)?, shared.checked_mul(page)?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Reads a small file into `buf` with raw `open`/`read` (no allocation: safe from the sampler
/// and the memory-line check, which run at a high rate), returning its text cut at the
/// buffer's size. `path_nul` must end with a NUL byte; anything else reads as `None`.
pub(crate) fn read_raw<'a>(path_nul: &[u8], buf: &'a mut [u8]) -> Option<&'a str> {
    if path_nul.last() != Some(&0) {
        return None;
    }
    // SAFETY: `path_nul` is NUL-terminated (checked above) and lives across the call.
    let fd = unsafe { libc::open(path_nul.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0usize;
    while len < buf.len() {
        // SAFETY: writes at most `buf.len() - len` bytes into `buf[len..]`, which we own.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    // A cut in the middle of a character only loses the last line.
    match std::str::from_utf8(&buf[..len]) {
        Ok(s) => Some(s),
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).ok(),
    }
}

/// glibc's `struct mallinfo2` (glibc ≥ 2.33): every field a `size_t`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

/// glibc's older `struct mallinfo`: `int` fields (wrap at 2–4 GiB).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct MallInfo {
    arena: libc::c_int,
    ordblks: libc::c_int,
    smblks: libc::c_int,
    hblks: libc::c_int,
    hblkhd: libc::c_int,
    usmblks: libc::c_int,
    fsmblks: libc::c_int,
    uordblks: libc::c_int,
    fordblks: libc::c_int,
    keepcost: libc::c_int,
}

/// The glibc malloc entry points this module uses, found at run time.
struct Glibc {
    mallinfo2: Option<unsafe extern "C" fn() -> MallInfo2>,
    mallinfo: Option<unsafe extern "C" fn() -> MallInfo>,
    malloc_trim: Option<unsafe extern "C" fn(usize) -> libc::c_int>,
}

fn glibc() -> &'static Glibc {
    static GLIBC: OnceLock<Glibc> = OnceLock::new();
    GLIBC.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let sym = |name: &str| {
                // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the loaded objects.
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
                (!p.is_null()).then_some(p)
            };
            // glibc declares these symbols with exactly these signatures (`struct mallinfo2
            // mallinfo2(void)`, `struct mallinfo mallinfo(void)`, `int malloc_trim(size_t)`),
            // and the structs above match glibc's layout.
            type Info2 = unsafe extern "C" fn() -> MallInfo2;
            type Info = unsafe extern "C" fn() -> MallInfo;
            type Trim = unsafe extern "C" fn(usize) -> libc::c_int;
            Glibc {
                // SAFETY: a non-null address of glibc's `mallinfo2`, of type `Info2`.
                mallinfo2: sym("mallinfo2\0")
                    .map(|p| unsafe { std::mem::transmute::<*mut libc::c_void, Info2>(p) }),
                // SAFETY: a non-null address of glibc's `mallinfo`, of type `Info`.
                mallinfo: sym("mallinfo\0")
                    .map(|p| unsafe { std::mem::transmute::<*mut libc::c_void, Info>(p) }),
                // SAFETY: a non-null address of glibc's `malloc_trim`, of type `Trim`.
                malloc_trim: sym("malloc_trim\0")
                    .map(|p| unsafe { std::mem::transmute::<*mut libc::c_void, Trim>(p) }),
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        {
            Glibc {
                mallinfo2: None,
                mallinfo: None,
                malloc_trim: None,
            }
        }
    })
}

/// glibc's arena statistics.
#[derive(Clone, Copy, Debug, Default)]
struct GlibcStats {
    /// Free bytes in the arenas (`fordblks`).
    free: u64,
    /// Bytes obtained from the OS and not given back (`arena + hblkhd`).
    mapped: u64,
    /// Bytes in use in chunks, chunk headers included (`uordblks + hblkhd`).
    in_use: u64,
    /// `"mallinfo2"` or `"mallinfo"`.
    method: &'static str,
}

fn glibc_stats() -> Option<GlibcStats> {
    let g = glibc();
    if let Some(f) = g.mallinfo2 {
        // SAFETY: glibc's `mallinfo2` takes no arguments and only reads malloc's state under
        // its own locks.
        let m = unsafe { f() };
        return Some(GlibcStats {
            free: m.fordblks as u64,
            mapped: (m.arena as u64).saturating_add(m.hblkhd as u64),
            in_use: (m.uordblks as u64).saturating_add(m.hblkhd as u64),
            method: "mallinfo2",
        });
    }
    if let Some(f) = g.mallinfo {
        // SAFETY: as above, for the older `mallinfo`.
        let m = unsafe { f() };
        let u = |v: libc::c_int| v as u32 as u64;
        return Some(GlibcStats {
            free: u(m.fordblks),
            mapped: u(m.arena).saturating_add(u(m.hblkhd)),
            in_use: u(m.uordblks).saturating_add(u(m.hblkhd)),
            method: "mallinfo",
        });
    }
    None
}

/// Resident bytes of the process's mappings by kind, from `/proc/self/smaps`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SmapsParts {
    /// File mappings and the kernel's `[vdso]`/`[vvar]`/`[vsyscall]`.
    pub file: u64,
    /// `[stack]` and anonymous read-write mappings directly above a `PROT_NONE` guard.
    pub stacks: u64,
    /// Every other anonymous mapping.
    pub anon: u64,
}

/// glibc's arenas (non-main heaps) start at multiples of this (`HEAP_MAX_SIZE` on 64-bit):
/// an anonymous read-write mapping there after a `PROT_NONE` one is the next arena, not a
/// stack above its guard.
const GLIBC_HEAP_ALIGN: u64 = 64 << 20;

/// Reads and classifies `/proc/self/smaps`; `None` when it cannot be read.
pub(crate) fn smaps_parts() -> Option<SmapsParts> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let parts = classify_smaps(&text);
    (parts != SmapsParts::default()).then_some(parts)
}

/// The classification of `smaps` text (see [`SmapsParts`]).
pub(crate) fn classify_smaps(text: &str) -> SmapsParts {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        File,
        Stack,
        Anon,
    }
    let mut parts = SmapsParts::default();
    let mut kind = Kind::Anon;
    // End address of the previous mapping, if it was an anonymous PROT_NONE one (a guard).
    let mut guard_end: Option<u64> = None;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if first.ends_with(':') {
            if first == "Rss:" {
                let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let bytes = kb.saturating_mul(1024);
                let slot = match kind {
                    Kind::File => &mut parts.file,
                    Kind::Stack => &mut parts.stacks,
                    Kind::Anon => &mut parts.anon,
                };
                *slot = slot.saturating_add(bytes);
            }
            continue;
        }
        // A mapping's header line: `start-end perms offset dev inode [path]`.
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let perms = fields.next().unwrap_or("");
        let _offset = fields.next();
        let _dev = fields.next();
        let inode = fields.next().unwrap_or("0");
        let path = fields.next().unwrap_or("");
        let anonymous = inode == "0" && !path.starts_with('/');
        kind = if !anonymous {
            Kind::File
        } else if path == "[stack]" {
            Kind::Stack
        } else if matches!(path, "[vdso]" | "[vvar]" | "[vsyscall]" | "[vvar_vclock]") {
            Kind::File
        } else if path.is_empty()
            && perms.starts_with("rw")
            && guard_end == Some(start)
            && start % GLIBC_HEAP_ALIGN != 0
        {
            Kind::Stack
        } else {
            Kind::Anon
        };
        guard_end = (anonymous && path.is_empty() && perms.starts_with("---")).then_some(end);
    }
    parts
}

/// Whether glibc malloc serves the blocks the tracker forwards to its inner allocator,
/// probed once with one 96 KiB block allocated (and freed, never written) through the global
/// allocator: above glibc's per-thread cache (1 KiB by default) and below its smallest mmap
/// threshold (128 KiB), glibc serves it from an arena, raising its in-use bytes (`uordblks`)
/// by the block's chunk (96 KiB plus headers and rounding); with the mmap threshold lowered
/// below it (`M_MMAP_THRESHOLD`), glibc maps it instead, raising its count of mapped blocks
/// (`hblks`) by one and their bytes (`hblkhd`) by the block rounded to pages. Another thread
/// allocating or freeing in glibc at that instant can spoil one attempt (never make another
/// allocator look like glibc, short of a glibc allocation of the same size at the same
/// instant), so up to five attempts are made. (A 64 MiB probe, above every mmap threshold,
/// showed as the tracker's peak in heap profilers.)
fn inner_is_glibc() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        const PROBE: u64 = 96 << 10;
        let g = glibc();
        // (in use in arenas, mapped blocks, mapped bytes)
        let read = || -> Option<(u64, u64, u64)> {
            if let Some(f) = g.mallinfo2 {
                // SAFETY: as in `glibc_stats`.
                let m = unsafe { f() };
                return Some((m.uordblks as u64, m.hblks as u64, m.hblkhd as u64));
            }
            let f = g.mallinfo?;
            // SAFETY: as in `glibc_stats`.
            let m = unsafe { f() };
            let u = |v: libc::c_int| v as u32 as u64;
            Some((u(m.uordblks), u(m.hblks), u(m.hblkhd)))
        };
        (0..5).any(|_| {
            let Some((used0, n0, mapped0)) = read() else {
                return false;
            };
            let block: Vec<u8> = std::hint::black_box(Vec::with_capacity(PROBE as usize));
            let after = read();
            drop(block);
            let Some((used1, n1, mapped1)) = after else {
                return false;
            };
            let in_arena = used1.wrapping_sub(used0);
            let mapped = mapped1.wrapping_sub(mapped0);
            (PROBE..=PROBE + 4096).contains(&in_arena)
                || (n1 == n0 + 1 && (PROBE..=PROBE + (64 << 10)).contains(&mapped))
        })
    })
}

/// The inner allocator's name, as far as it can be known.
pub(crate) fn allocator_name() -> &'static str {
    if cfg!(target_env = "musl") {
        // musl's malloc offers neither statistics nor trimming.
        return "musl malloc";
    }
    if glibc().mallinfo2.is_none() && glibc().mallinfo.is_none() {
        return "unknown";
    }
    if inner_is_glibc() {
        "glibc malloc"
    } else {
        "unknown (not glibc malloc)"
    }
}

/// What the tracker counts live, from a snapshot's roll-up, and the tracker's own blocks now
/// (its shared counters are always current): the breakdown uses the latter, so a report's
/// transient memory (debug info parsed while it symbolizes) is the tracker's, not "C heap".
pub(crate) fn tracked_live(r: &crate::report::snapshot::Rollup) -> TrackedLive {
    let now = crate::registry::path(crate::registry::PATH_TRACKER)
        .counters
        .load()
        .retained();
    let tracker = r.tracker.retained();
    let all = r.all.retained();
    TrackedLive {
        bytes: all.bytes.saturating_add(tracker.bytes),
        objects: all.objects.saturating_add(tracker.objects),
        tracker_bytes: tracker.bytes,
        tracker_objects: tracker.objects,
        tracker_now_bytes: now.bytes,
        tracker_now_objects: now.objects,
    }
}

/// What the tracker counts live, for the process-memory figures.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TrackedLive {
    /// Every tracked live byte: jobs, unscoped and the tracker's own.
    pub bytes: u64,
    /// Every tracked live block.
    pub objects: u64,
    /// The tracker's own live bytes.
    pub tracker_bytes: u64,
    /// The tracker's own live blocks.
    pub tracker_objects: u64,
    /// The tracker's own live bytes when the process figures are read.
    pub tracker_now_bytes: u64,
    /// The tracker's own live blocks then.
    pub tracker_now_objects: u64,
}

/// The process's memory now, given what the tracker counts live. Call with tracking
/// suspended. glibc's statistics and the smaps classification come from one cache shared by
/// every report (see [`StatsCache`]); RSS and the tracked heap are read each time.
pub(crate) fn process_memory(live: TrackedLive) -> ProcessMemory {
    if allocator_name() != "glibc malloc" {
        return memory_from(live, None, None);
    }
    static REPORTS: parking_lot::Mutex<StatsCache> =
        parking_lot::const_mutex(StatsCache::new(true));
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| crate::fork::register(&REPORTS));
    let (stats, smaps) = REPORTS.lock().stats();
    memory_from(live, stats, smaps)
}

/// Longest time glibc's statistics and the smaps classification are reused.
const MAX_STATS_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// `release_free_memory` calls so far: a trim makes cached statistics stale at once.
static TRIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// glibc's statistics and the smaps classification, reused between reads: `mallinfo2` walks
/// every free chunk of every arena holding each arena's lock (about 0.3 ms on a heap churned
/// by the benchmarks, stalling every thread that allocates meanwhile) and reading
/// `/proc/self/smaps` costs about as much per few hundred mappings, so neither is read per
/// report or per sample. They are read again when any of these holds:
/// * 100× their own last cost has passed (so they take at most 1% of a core), and at most
///   [`MAX_STATS_AGE`] (1 s);
/// * [`release_free_memory`] ran since;
/// * for reports (not the sampler, which would then read them at every tick while memory
///   grows): RSS (read each time from `/proc/self/statm`, cheap) moved by more than ½% or
///   512 KiB, whichever is larger, since they were read — half the breakdown's documented
///   tolerance, so a report's parts still add up to its RSS within it.
///
/// In between, RSS and the tracked heap are fresh and the figures built on glibc's and
/// smaps' (not-returned bytes, the breakdown's C heap, stacks and file-backed parts) are as
/// of the last read: memory C code takes from or gives back to glibc's free chunks without
/// moving RSS shows up to 1 s late.
pub(crate) struct StatsCache {
    next: Option<std::time::Instant>,
    last: Option<(Option<GlibcStats>, Option<SmapsParts>)>,
    /// Whether a move of RSS makes the figures stale (reports).
    follow_rss: bool,
    /// RSS and `TRIMS` when they were read.
    rss: u64,
    trims: u64,
}

impl Default for StatsCache {
    /// The sampler's cache (RSS moves do not force a read).
    fn default() -> Self {
        Self::new(false)
    }
}

impl StatsCache {
    pub(crate) const fn new(follow_rss: bool) -> Self {
        StatsCache {
            next: None,
            last: None,
            follow_rss,
            rss: 0,
            trims: 0,
        }
    }

    /// The statistics, read again when the rules above say so.
    fn stats(&mut self) -> (Option<GlibcStats>, Option<SmapsParts>) {
        use std::sync::atomic::Ordering::Acquire;
        let now = std::time::Instant::now();
        let rss = if self.follow_rss {
            rss_bytes().unwrap_or(0)
        } else {
            0
        };
        let trims = TRIMS.load(Acquire);
        let fresh = self.last.is_some()
            && self.next.is_some_and(|next| now < next)
            && self.trims == trims
            && rss.abs_diff(self.rss) <= (rss / 200).max(512 << 10);
        if !fresh {
            self.last = Some((glibc_stats(), smaps_parts()));
            let cost = now.elapsed();
            self.next = Some(now + (cost * 100).min(MAX_STATS_AGE));
            self.rss = rss;
            self.trims = trims;
        }
        self.last.unwrap_or_default()
    }
}

/// [`process_memory`] for the sampler, with glibc's statistics and the smaps classification
/// from its own `cache` (same rules).
pub(crate) fn process_memory_cached(live: TrackedLive, cache: &mut StatsCache) -> ProcessMemory {
    if allocator_name() != "glibc malloc" {
        return memory_from(live, None, None);
    }
    let (stats, smaps) = cache.stats();
    memory_from(live, stats, smaps)
}

/// Bytes glibc holds for one tracked block besides its requested size: the tracker's header
/// and glibc's chunk size word (its rounding to 16 bytes is not known per block).
const TRACKED_BLOCK_OVERHEAD: u64 = crate::header::HEADER_SIZE as u64 + 8;

fn memory_from(
    live: TrackedLive,
    stats: Option<GlibcStats>,
    smaps: Option<SmapsParts>,
) -> ProcessMemory {
    let (rss, shared) = statm().unwrap_or((0, 0));
    let heap_live_bytes = live.bytes;
    let (mut not_returned, mapped, method) = match stats {
        Some(g) => {
            // Anonymous resident memory no live block explains: an upper bound of what free
            // chunks can occupy (file-backed pages — code, mapped debug info — are not heap).
            let unexplained = if rss == 0 {
                g.free
            } else {
                rss.saturating_sub(shared).saturating_sub(heap_live_bytes)
            };
            (g.free.min(unexplained), g.mapped, g.method)
        }
        None => (0, 0, "unavailable"),
    };
    let breakdown = match (stats, smaps) {
        (Some(g), Some(s)) => {
            let b = breakdown(live, &g, &s);
            not_returned = b.not_returned_bytes;
            Some(b)
        }
        _ => None,
    };
    ProcessMemory {
        rss_bytes: rss,
        heap_live_bytes,
        tracker_bytes: live.tracker_bytes,
        not_returned_bytes: not_returned,
        allocator: allocator_name().to_string(),
        not_returned_method: method.to_string(),
        allocator_mapped_bytes: mapped,
        breakdown,
    }
}

/// Splits the anonymous pool among the heap's parts, each capped at what is left of it (see
/// [`RssBreakdown`](crate::RssBreakdown)); the parts add up to the smaps total.
fn breakdown(live: TrackedLive, g: &GlibcStats, s: &SmapsParts) -> crate::report::RssBreakdown {
    let tracker_need = live.tracker_now_bytes.saturating_add(
        live.tracker_now_objects
            .saturating_mul(TRACKED_BLOCK_OVERHEAD),
    );
    let rust_need = live
        .bytes
        .saturating_sub(live.tracker_bytes)
        .saturating_add(
            live.objects
                .saturating_sub(live.tracker_objects)
                .saturating_mul(TRACKED_BLOCK_OVERHEAD),
        );
    let c_need = g
        .in_use
        .saturating_sub(tracker_need.saturating_add(rust_need));
    let mut left = s.anon;
    let mut take = |need: u64| {
        let t = need.min(left);
        left -= t;
        t
    };
    let tracker_bytes = take(tracker_need);
    let rust_heap_bytes = take(rust_need);
    let c_heap_bytes = take(c_need);
    let not_returned_bytes = take(g.free);
    crate::report::RssBreakdown {
        rust_heap_bytes,
        c_heap_bytes,
        not_returned_bytes,
        tracker_bytes,
        file_backed_bytes: s.file,
        thread_stacks_bytes: s.stacks,
        other_anon_bytes: left,
    }
}

/// Asks the allocator to return freed memory to the OS and returns how much the RSS went down
/// (0 if it did not), or `None` when the allocator offers no way to do it.
///
/// With glibc malloc this is `malloc_trim(0)`: it releases the free top of every arena and
/// `MADV_DONTNEED`s every whole free page inside them. It takes glibc's arena locks while it
/// walks the free lists (milliseconds for hundreds of MiB), so call it between jobs, not in a
/// tight loop. With any other inner allocator (jemalloc, mimalloc, musl) it does nothing and
/// returns `None`: use that allocator's own settings (jemalloc `background_thread` and
/// `dirty_decay_ms`, mimalloc's `mi_collect`). When RSS cannot be read, the change is 0.
///
/// ```
/// if let Some(freed) = allocscope::release_free_memory() {
///     println!("returned {freed} bytes to the OS");
/// }
/// ```
pub fn release_free_memory() -> Option<u64> {
    crate::thread::untracked(|| {
        if allocator_name() != "glibc malloc" {
            return None;
        }
        let trim = glibc().malloc_trim?;
        let before = rss_bytes();
        // SAFETY: glibc's `malloc_trim(size_t pad)` has no preconditions.
        unsafe { trim(0) };
        TRIMS.fetch_add(1, std::sync::atomic::Ordering::Release);
        let after = rss_bytes();
        Some(match (before, after) {
            (Some(b), Some(a)) => b.saturating_sub(a),
            _ => 0,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn rss_is_read_on_linux() {
        let rss = rss_bytes().expect("/proc/self/statm is readable on Linux");
        assert!(rss > 0);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_is_detected_without_a_tracking_allocator() {
        // The unit-test binary uses System (glibc) as its global allocator.
        assert_eq!(allocator_name(), "glibc malloc");
        let p = process_memory(TrackedLive::default());
        assert_eq!(p.not_returned_method, "mallinfo2");
        assert!(p.not_returned_bytes <= p.rss_bytes);
        let b = p.breakdown.expect("smaps and mallinfo2 on linux-gnu");
        // Nothing is tracked here: the whole heap glibc serves is outside the tracker.
        assert_eq!(b.rust_heap_bytes, 0);
        assert!(b.c_heap_bytes > 0, "{b:?}");
        assert!(b.file_backed_bytes > 0, "{b:?}");
    }
}

#[cfg(test)]
mod smaps_tests {
    use super::*;

    const SAMPLE: &str = "\
55d0a0000000-55d0a0002000 r--p 00000000 fe:00 247282                     /usr/bin/worker
Rss:                   8 kB
55d0a0002000-55d0a0010000 rw-p 00000000 00:00 0 
Rss:                  16 kB
55d0a1000000-55d0a2000000 rw-p 00000000 00:00 0                          [heap]
Rss:                1024 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
7f0000021000-7f0004000000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f1000000000-7f1000001000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f1000001000-7f1000801000 rw-p 00000000 00:00 0 
Rss:                  24 kB
VmFlags: rd wr mr mw me ac sd
7f2000000000-7f2000001000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f2000001000-7f2000002000 r--p 00000000 00:00 0 
Rss:                   4 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  20 kB
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
";

    #[test]
    fn mappings_are_classified() {
        let p = classify_smaps(SAMPLE);
        // The executable and the vDSO.
        assert_eq!(p.file, 16 << 10);
        // The main stack and the thread stack above its guard (the read-only map after the
        // second guard is not a stack).
        assert_eq!(p.stacks, 44 << 10);
        // .bss, [heap], the 64 MiB-aligned arena, the read-only anonymous map.
        assert_eq!(p.anon, (16 + 1024 + 132 + 4) << 10);
    }

    #[test]
    fn an_arena_after_a_guard_is_not_a_stack() {
        let text = "\
7f0000000000-7f0004000000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f0004000000-7f0004021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
";
        let p = classify_smaps(text);
        assert_eq!((p.stacks, p.anon), (0, 132 << 10));
    }
}
