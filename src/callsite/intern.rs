//! Lock-free interning of stacks and sites (path × stack), for the allocation hot path.
//!
//! Both tables are fixed-capacity open-addressing hash tables of atomics in `static` memory
//! (zero pages until touched). An entry is claimed by a compare-and-swap of its key from 0;
//! keys are never removed, so a key found is final. Readers never wait for a writer: a site
//! whose stack frames are still being copied simply shows no frames until they are published.
//! Equality is by a 64-bit hash of the instruction pointers (and the path), so two distinct
//! stacks merge only on a 64-bit collision.
//!
//! A dashmap would take a shard lock on every allocation (a deadlock in a forked child whose
//! parent held it) and allocate on insert; these tables do neither.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::model::AtomicCounters;

/// Distinct stacks kept (power of two). 4 MiB of address space.
pub(crate) const STACK_CAP: usize = 1 << 18;
/// Total frames stored across all stacks. 64 MiB of address space, touched as used.
pub(crate) const FRAME_ARENA: usize = 1 << 23;
/// Distinct sites (path × stack) kept (power of two). 16 MiB of address space (one 64-byte
/// line per site, so a site's key and counters never straddle two lines).
pub(crate) const SITE_CAP: usize = 1 << 18;
/// Probes before giving up on a full table.
const MAX_PROBES: usize = 128;

struct StackEntry {
    hash: AtomicU64,
    /// `offset << 8 | len` in the frame arena, 0 until published.
    frames: AtomicU64,
}

static STACKS: [StackEntry; STACK_CAP] = [const {
    StackEntry {
        hash: AtomicU64::new(0),
        frames: AtomicU64::new(0),
    }
}; STACK_CAP];
static ARENA: [AtomicUsize; FRAME_ARENA] = [const { AtomicUsize::new(0) }; FRAME_ARENA];
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);
static STACK_COUNT: AtomicUsize = AtomicUsize::new(0);

/// One site: a stack under one path, with live counters.
///
/// Object counts are fixed-point (`OBJ_ONE` = one object) so that sampled blocks can carry a
/// fractional weight; bytes are rounded per block. A free subtracts exactly what its
/// allocation added (computed from the weight stored in the block header), so counters return
/// to zero exactly.
#[repr(align(64))]
pub(crate) struct SiteEntry {
    key: AtomicU64,
    pub path: AtomicU32,
    pub stack: AtomicU32,
    pub ready: AtomicBool,
    pub estimated: AtomicBool,
    /// The site's ring of live figures by run (`callsite::ages`), 0 until its first block.
    pub ring: AtomicU32,
    /// Objects in `OBJ_ONE` units, bytes rounded per block.
    pub counters: AtomicCounters,
    /// Highest live bytes (`alloc_bytes - free_bytes`) seen right after one of the site's
    /// allocations. Exact on one thread; with frees racing on other threads it may be off by
    /// the frees in flight (a Relaxed read of `free_bytes`).
    pub peak_bytes: AtomicU64,
}

/// Fixed-point unit of one object in site counters.
pub(crate) const OBJ_ONE: u64 = 1 << 16;

const _: () = assert!(core::mem::size_of::<SiteEntry>() == 64);

static SITES: [SiteEntry; SITE_CAP] = [const {
    SiteEntry {
        key: AtomicU64::new(0),
        path: AtomicU32::new(0),
        stack: AtomicU32::new(0),
        ready: AtomicBool::new(false),
        estimated: AtomicBool::new(false),
        ring: AtomicU32::new(0),
        counters: AtomicCounters::new(),
        peak_bytes: AtomicU64::new(0),
    }
}; SITE_CAP];
/// Indices of claimed sites, in claim order (so reports need not scan the whole table).
static SITE_LIST: [AtomicU32; SITE_CAP] = [const { AtomicU32::new(0) }; SITE_CAP];
static SITE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Samples whose stack could not be stored because a table was full.
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// One step of the stack hash. Frames are folded in from the outermost one (`main`'s side)
/// inwards, so stacks that share their bottom share the hash of it: the caching unwinder keeps
/// that partial hash with each frame it records and reuses it with the frames.
#[inline(always)]
pub(crate) fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95)
}

#[inline]
fn finish(h: u64) -> u64 {
    let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h ^ (h >> 32)) | 1
}

/// Starting value of the stack hash.
pub(crate) const HASH_START: u64 = 0x243F_6A88_85A3_08D3;

/// The stack hash of `len` frames whose instruction pointers were folded into `h` with `mix`
/// (never 0).
#[inline]
pub(crate) fn hash_finish(h: u64, len: usize) -> u64 {
    finish(mix(h, len as u64))
}

/// Hash of a stack (never 0), given innermost frame first: the same value `capture` returns.
#[inline]
pub(crate) fn hash_stack(ips: &[usize]) -> u64 {
    let mut h = HASH_START;
    for &ip in ips.iter().rev() {
        h = mix(h, ip as u64);
    }
    hash_finish(h, ips.len())
}

fn intern_stack(hash: u64, ips: &[usize]) -> Option<u32> {
    let mask = STACK_CAP - 1;
    let mut i = hash as usize & mask;
    for _ in 0..MAX_PROBES {
        // Index 0 is reserved for "no stack".
        if i != 0 {
            let e = &STACKS[i];
            let k = e.hash.load(Acquire);
            if k == hash {
                return Some(i as u32);
            }
            if k == 0 && e.hash.compare_exchange(0, hash, AcqRel, Acquire).is_ok() {
                STACK_COUNT.fetch_add(1, Relaxed);
                let len = ips.len().min(255);
                let off = ARENA_USED.fetch_add(len, Relaxed);
                if off + len <= FRAME_ARENA {
                    for (j, &ip) in ips[..len].iter().enumerate() {
                        ARENA[off + j].store(ip, Relaxed);
                    }
                    e.frames.store(((off as u64) << 8) | len as u64, Release);
                } else {
                    DROPPED.fetch_add(1, Relaxed);
                }
                return Some(i as u32);
            }
            if e.hash.load(Acquire) == hash {
                return Some(i as u32);
            }
        }
        i = (i + 1) & mask;
    }
    None
}

/// The site id for `ips` (whose `hash_stack` is `sh`) allocated under `path`, creating it if
/// needed; 0 when the tables are full (counted in `DROPPED`).
#[inline]
pub(crate) fn intern_site(path: u32, ips: &[usize], sh: u64) -> u32 {
    let key = finish(mix(sh, path as u64 + 1));
    let mask = SITE_CAP - 1;
    let mut i = key as usize & mask;
    for _ in 0..MAX_PROBES {
        if i != 0 {
            let e = &SITES[i];
            let k = e.key.load(Acquire);
            if k == key {
                return i as u32;
            }
            if k == 0 && e.key.compare_exchange(0, key, AcqRel, Acquire).is_ok() {
                let stack = intern_stack(sh, ips).unwrap_or(0);
                e.path.store(path, Relaxed);
                e.stack.store(stack, Relaxed);
                e.ready.store(true, Release);
                let n = SITE_COUNT.fetch_add(1, Relaxed);
                if n < SITE_CAP {
                    SITE_LIST[n].store(i as u32, Release);
                }
                return i as u32;
            }
            if e.key.load(Acquire) == key {
                return i as u32;
            }
        }
        i = (i + 1) & mask;
    }
    DROPPED.fetch_add(1, Relaxed);
    0
}

/// The site entry for an id read from a header (masked so a corrupt id cannot index out of
/// bounds).
#[inline]
pub(crate) fn site(id: u32) -> &'static SiteEntry {
    &SITES[id as usize & (SITE_CAP - 1)]
}

/// Fixed-point objects and rounded bytes a block of `size` bytes with `weight` adds.
#[inline]
pub(crate) fn weighted(size: u64, weight: f32) -> (u64, u64) {
    if weight == 1.0 {
        // Every block of `StackMode::Every`: no floating point (`round` is a libm call).
        return (OBJ_ONE, size);
    }
    let w = weight as f64;
    (
        (w * OBJ_ONE as f64).round() as u64,
        (w * size as f64).round() as u64,
    )
}

/// Charges an allocation of run `run` (token) to a site. Inlined into the allocator's
/// `every`/`sample` (already out of line): a call here cost a full prologue per block.
#[inline(always)]
pub(crate) fn site_alloc(id: u32, run: u32, size: u64, weight: f32) {
    let s = site(id);
    let (o, b) = weighted(size, weight);
    super::ages::on_alloc(s, run, o, b);
    let live = s
        .counters
        .add_alloc(o, b)
        .saturating_sub(s.counters.free_bytes.load(Relaxed));
    // Same cache line as the counters just written; the read-modify-write only when higher.
    if live > s.peak_bytes.load(Relaxed) {
        s.peak_bytes.fetch_max(live, Relaxed);
    }
    if weight != 1.0 && !s.estimated.load(Relaxed) {
        s.estimated.store(true, Relaxed);
    }
}

/// Charges a free of a block of run `run` (token) back to the site that allocated it. Out of line: it is reached only
/// for blocks that have a site, and inlining its floating point into every `dealloc` cost
/// registers (saved and restored on every free) in the common case without a site.
#[inline(never)]
pub(crate) fn site_free(id: u32, run: u32, size: u64, weight: f32) {
    let s = site(id);
    let (o, b) = weighted(size, weight);
    super::ages::on_free(s, run, o, b);
    s.counters.add_free(o, b);
}

/// Ids of all published sites.
pub(crate) fn site_ids() -> impl Iterator<Item = u32> {
    let n = SITE_COUNT.load(Acquire).min(SITE_CAP);
    (0..n)
        .map(|i| SITE_LIST[i].load(Acquire))
        .filter(|&id| id != 0)
}

/// The frames of a stack id (empty while not yet published, or for id 0).
pub(crate) fn stack_frames(id: u32) -> Vec<usize> {
    if id == 0 || id as usize >= STACK_CAP {
        return Vec::new();
    }
    let meta = STACKS[id as usize].frames.load(Acquire);
    let (off, len) = ((meta >> 8) as usize, (meta & 0xFF) as usize);
    if meta == 0 || off + len > FRAME_ARENA {
        return Vec::new();
    }
    (0..len).map(|j| ARENA[off + j].load(Relaxed)).collect()
}

/// Table occupancy, for the tracker's own statistics.
pub(crate) fn usage() -> (usize, usize, usize) {
    (
        STACK_COUNT.load(Relaxed),
        SITE_COUNT.load(Relaxed),
        ARENA_USED.load(Relaxed).min(FRAME_ARENA),
    )
}
