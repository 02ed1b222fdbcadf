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
        let text = read_small("/proc/self/statm\0", &mut buf)?;
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

/// Reads a small file into `buf` with raw `open`/`read` (no allocation: the sampler calls it
/// at a high rate), returning its text.
#[cfg(target_os = "linux")]
fn read_small<'a>(path_nul: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    debug_assert!(path_nul.ends_with('\0'));
    // SAFETY: `path_nul` is NUL-terminated (all callers pass literals ending in "\0").
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
    std::str::from_utf8(&buf[..len]).ok()
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

/// glibc's arena statistics: (free bytes in arenas, bytes obtained from the OS, method).
fn glibc_stats() -> Option<(u64, u64, &'static str)> {
    let g = glibc();
    if let Some(f) = g.mallinfo2 {
        // SAFETY: glibc's `mallinfo2` takes no arguments and only reads malloc's state under
        // its own locks.
        let m = unsafe { f() };
        return Some((
            m.fordblks as u64,
            (m.arena as u64).saturating_add(m.hblkhd as u64),
            "mallinfo2",
        ));
    }
    if let Some(f) = g.mallinfo {
        // SAFETY: as above, for the older `mallinfo`.
        let m = unsafe { f() };
        let u = |v: libc::c_int| v as u32 as u64;
        return Some((
            u(m.fordblks),
            u(m.arena).saturating_add(u(m.hblkhd)),
            "mallinfo",
        ));
    }
    None
}

/// Whether glibc malloc serves the blocks the tracker forwards to its inner allocator,
/// probed once: a 64 MiB block (above glibc's largest mmap threshold, so glibc always maps it,
/// and left untouched, so it costs no RSS) allocated through the global allocator must raise
/// glibc's count of mapped blocks (`hblks`) by exactly one and its mapped bytes (`hblkhd`) by
/// 64 MiB to 64 MiB + 64 KiB. Another thread mapping or unmapping a block at that instant can
/// spoil one attempt (never make a non-glibc allocator look like glibc, short of mapping the
/// same size at the same instant), so up to five attempts are made.
fn inner_is_glibc() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        const PROBE: usize = 64 << 20;
        let g = glibc();
        let mapped = || -> Option<(u64, u64)> {
            if let Some(f) = g.mallinfo2 {
                // SAFETY: as in `glibc_stats`.
                let m = unsafe { f() };
                return Some((m.hblks as u64, m.hblkhd as u64));
            }
            let f = g.mallinfo?;
            // SAFETY: as in `glibc_stats`.
            let m = unsafe { f() };
            Some((m.hblks as u32 as u64, m.hblkhd as u32 as u64))
        };
        (0..5).any(|_| {
            let Some((n0, b0)) = mapped() else {
                return false;
            };
            let block: Vec<u8> = std::hint::black_box(Vec::with_capacity(PROBE));
            let after = mapped();
            drop(block);
            matches!(after, Some((n1, b1)) if n1 == n0 + 1
                && b1 >= b0 + PROBE as u64
                && b1 - b0 <= PROBE as u64 + (64 << 10))
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

/// The process's memory now, given the tracker's live heap (all tracked live bytes) and the
/// tracker's own live bytes. Call with tracking suspended.
pub(crate) fn process_memory(heap_live_bytes: u64, tracker_bytes: u64) -> ProcessMemory {
    let stats = if allocator_name() == "glibc malloc" {
        glibc_stats()
    } else {
        None
    };
    memory_from(heap_live_bytes, tracker_bytes, stats)
}

/// glibc's statistics for the sampler, refreshed at most once per 100× their own cost:
/// `mallinfo2` walks every free chunk of every arena (about 0.3 ms on a heap churned by the
/// benchmarks), so at a 1 ms interval it would cost a third of a core. In between, samples
/// reuse the last figures (RSS and the live heap are always fresh).
#[derive(Default)]
pub(crate) struct StatsCache {
    next: Option<std::time::Instant>,
    last: Option<(u64, u64, &'static str)>,
}

/// [`process_memory`] for the sampler, with glibc's statistics from `cache` when fresh enough.
pub(crate) fn process_memory_cached(
    heap_live_bytes: u64,
    tracker_bytes: u64,
    cache: &mut StatsCache,
) -> ProcessMemory {
    if allocator_name() != "glibc malloc" {
        return memory_from(heap_live_bytes, tracker_bytes, None);
    }
    let now = std::time::Instant::now();
    if cache.next.map_or(true, |next| now >= next) {
        cache.last = glibc_stats();
        let cost = now.elapsed();
        cache.next = Some(now + cost * 100);
    }
    memory_from(heap_live_bytes, tracker_bytes, cache.last)
}

fn memory_from(
    heap_live_bytes: u64,
    tracker_bytes: u64,
    stats: Option<(u64, u64, &'static str)>,
) -> ProcessMemory {
    let (rss, shared) = statm().unwrap_or((0, 0));
    let (not_returned, mapped, method) = match stats {
        Some((free, mapped, method)) => {
            // Anonymous resident memory no live block explains: an upper bound of what free
            // chunks can occupy (file-backed pages — code, mapped debug info — are not heap).
            let unexplained = if rss == 0 {
                free
            } else {
                rss.saturating_sub(shared).saturating_sub(heap_live_bytes)
            };
            (free.min(unexplained), mapped, method)
        }
        None => (0, 0, "unavailable"),
    };
    ProcessMemory {
        rss_bytes: rss,
        heap_live_bytes,
        tracker_bytes,
        not_returned_bytes: not_returned,
        allocator: allocator_name().to_string(),
        not_returned_method: method.to_string(),
        allocator_mapped_bytes: mapped,
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
        let p = process_memory(0, 0);
        assert_eq!(p.not_returned_method, "mallinfo2");
        assert!(p.not_returned_bytes <= p.rss_bytes);
    }
}
