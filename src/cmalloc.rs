//! Feature `malloc` (Linux, glibc, 64-bit): the executable's own `malloc` family, so that C
//! code's blocks are charged to jobs like Rust's.
//!
//! The crate defines `malloc`, `calloc`, `realloc`, `reallocarray`, `free`, `posix_memalign`,
//! `aligned_alloc`, `memalign`, `valloc`, `pvalloc` and `malloc_usable_size` with C linkage.
//! Linked into an executable, these definitions come before libc's in symbol lookup, so every
//! caller — the executable's static C code, libc itself (`strdup`, `getline`, `fopen`), shared
//! libraries loaded at start or with `dlopen` later — calls them (the interposition glibc
//! supports for replacing malloc). They forward to glibc's own entry points (`__libc_malloc`,
//! `__libc_calloc`, `__libc_realloc`, `__libc_memalign`, `__libc_free`).
//!
//! # Rules
//!
//! * Everything here follows the hot path's rules (see `alloc`): no panic, no lock, no
//!   allocation, no recursion. Counting goes through `alloc`'s `record_*` entry points, which
//!   mark the thread busy while they capture a stack: a `malloc` made meanwhile (libgcc's
//!   unwinder, `pthread_getattr_np`, glibc's thread-exit list) is counted as the tracker's.
//! * **Nothing is counted twice.** `TrackingAllocator`'s calls into its inner allocator run
//!   with this thread's `IN_RUST` flag set ([`rust_inner`]): when `System` then calls `malloc`,
//!   the block is forwarded untouched (no header; the Rust header already counts it), and so
//!   are its `free` and `realloc`.
//! * **A C block** is `size + offset` bytes from glibc, `offset` = 32 for alignments up to 16
//!   (plain `malloc`), the alignment above that. The 32 bytes before the user pointer hold the
//!   requested size (at `user − 32`), the tracker's block header (through `header`, ending at
//!   `user − 8`) and a tag word at `user − 8`: a magic value, `log2(offset)`, and bit 3 set.
//! * **Blocks not allocated here** (made before a `TrackingAllocator` counted anything, by
//!   the dynamic loader before start-up, by `TrackingAllocator`'s inner calls, or by glibc
//!   through its internal `__libc_*` names) are told apart exactly: the word before a glibc
//!   chunk's user pointer is its size field, a multiple of 16 with flags in bits 0–2, so its bit
//!   3 is always clear; ours always has it set (and the magic). Such a block is freed,
//!   reallocated (it stays uncounted) and measured by glibc itself, never miscounted.
//! * **Counting starts when a `TrackingAllocator` is in use** (its first allocation sets
//!   `thread::INSTALLED`, before `main` in practice): until then, and in programs that link the
//!   feature without installing the tracker, every call is forwarded untouched.

use core::cell::Cell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::alloc::{record_alloc, record_free, record_realloc, recorded_header};
use crate::header::WIDE_HEADER_SIZE;

// glibc's own entry points (exported since GLIBC_2.2.5), which its `malloc` family wraps.
extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
}

/// Bytes before the user pointer of a block of alignment ≤ 16.
const SMALL_OFFSET: usize = 32;
/// The tag word's fixed bits: a magic value and bit 3 (never set in a glibc size field).
const TAG_BASE: u64 = 0xa11c_5c0e_0000_0008;
/// The tag's bits that hold `log2(offset)`.
const TAG_SHIFT_MASK: u64 = 0x3f0;

const _: () = assert!(
    WIDE_HEADER_SIZE + 16 <= SMALL_OFFSET,
    "size, header and tag fit"
);
const _: () = assert!(
    core::mem::size_of::<usize>() == 8,
    "glibc 64-bit chunk layout"
);

thread_local! {
    /// Set while `TrackingAllocator` calls its inner allocator (see [`rust_inner`]).
    static IN_RUST: Cell<bool> = const { Cell::new(false) };
    /// Set while a C block is being counted (see [`in_c`]).
    static IN_C: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is counting a C block. C code calls `malloc` while holding its own
/// locks — glibc's `pthread_getattr_np` holds the thread's lock while it allocates — so the
/// stack capture must not call back into such code: the frame-pointer walk then does not
/// look up a thread's stack bounds (it falls back to the DWARF unwinder until a Rust
/// allocation has looked them up).
#[inline(always)]
pub(crate) fn in_c() -> bool {
    IN_C.try_with(Cell::get).unwrap_or(true)
}

/// Runs `f` (the counting of a C block) with `IN_C` set.
#[inline(always)]
fn counting_c<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_C.try_with(|c| c.replace(true)).unwrap_or(true);
    let r = f();
    let _ = IN_C.try_with(|c| c.set(was));
    r
}

/// Runs `f` (a `TrackingAllocator`'s call into its inner allocator) with this thread's
/// `IN_RUST` flag set, so the `malloc` it may reach forwards the block without counting it.
#[inline(always)]
pub(crate) fn rust_inner<R>(f: impl FnOnce() -> R) -> R {
    // `try_with` cannot fail on a const, destructor-free thread-local; if it ever did, the
    // call still happens (the block would then be counted by both, never lost).
    let was = IN_RUST.try_with(|c| c.replace(true)).unwrap_or(false);
    let r = f();
    let _ = IN_RUST.try_with(|c| c.set(was));
    r
}

/// Whether this call should be counted: a tracker is in use and the call does not come from
/// `TrackingAllocator`'s inner allocator.
#[inline(always)]
fn counting() -> bool {
    crate::thread::INSTALLED.load(Relaxed) && !IN_RUST.try_with(Cell::get).unwrap_or(true)
}

/// The tag word of a block whose user pointer is `offset` bytes past its base.
#[inline(always)]
fn tag(offset: usize) -> u64 {
    TAG_BASE | (u64::from(offset.trailing_zeros()) << 4)
}

/// The offset of the block at `user` if this interposer allocated it, else `None`.
///
/// # Safety
/// `user` must be a non-null pointer returned by a `malloc`-family function of this process
/// (so the 8 bytes before it are readable: our tag, or glibc's chunk size field).
#[inline(always)]
unsafe fn ours(user: *mut u8) -> Option<usize> {
    // SAFETY: per the caller; the word is 8-aligned (user pointers are 16-aligned).
    let word = unsafe { user.sub(8).cast::<u64>().read() };
    if word & !TAG_SHIFT_MASK != TAG_BASE {
        return None;
    }
    Some(1usize << ((word & TAG_SHIFT_MASK) >> 4))
}

/// Where the tracker's header sits for the block at `user`: it ends at the tag word.
#[inline(always)]
fn anchor(user: *mut u8) -> *mut u8 {
    user.wrapping_sub(8)
}

/// Writes size and tag into a fresh block at `base` and counts it; returns the user pointer.
///
/// # Safety
/// `base` must be a fresh glibc block of at least `offset + size` bytes, `offset` ≥ 32 and a
/// power of two.
#[inline(always)]
unsafe fn finish_alloc(base: *mut u8, offset: usize, size: usize) -> *mut c_void {
    // SAFETY: the 32 bytes before `user` are inside the block (offset ≥ 32), 8-aligned.
    unsafe {
        let user = base.add(offset);
        user.sub(32).cast::<u64>().write(size as u64);
        user.sub(8).cast::<u64>().write(tag(offset));
        counting_c(|| record_alloc(anchor(user), size as u64));
        user.cast()
    }
}

fn set_enomem() {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOMEM };
}

/// A counted block of `size` bytes and alignment ≤ 16, zeroed if `zeroed`.
unsafe fn alloc_small(size: usize, zeroed: bool) -> *mut c_void {
    let Some(total) = size.checked_add(SMALL_OFFSET) else {
        set_enomem();
        return core::ptr::null_mut();
    };
    // SAFETY: plain glibc allocation.
    let base = unsafe {
        if zeroed {
            __libc_calloc(1, total)
        } else {
            __libc_malloc(total)
        }
    };
    if base.is_null() {
        return base;
    }
    // SAFETY: a fresh block of `SMALL_OFFSET + size` bytes.
    unsafe { finish_alloc(base.cast(), SMALL_OFFSET, size) }
}

/// A block of `size` bytes aligned to `align` (a power of two), counted when `counting()`.
unsafe fn alloc_aligned(align: usize, size: usize) -> *mut c_void {
    if !counting() {
        // SAFETY: plain glibc allocation.
        return unsafe { __libc_memalign(align, size) };
    }
    if align <= 16 {
        // SAFETY: as in `malloc`.
        return unsafe { alloc_small(size, false) };
    }
    let Some(total) = size.checked_add(align) else {
        set_enomem();
        return core::ptr::null_mut();
    };
    // SAFETY: plain glibc allocation.
    let base = unsafe { __libc_memalign(align, total) };
    if base.is_null() {
        return base;
    }
    // SAFETY: a fresh block of `align + size` bytes, `align` ≥ 32 and a power of two.
    unsafe { finish_alloc(base.cast(), align, size) }
}

/// The alignment glibc's `memalign` would use: at least 16, rounded up to a power of two.
fn round_align(align: usize) -> Option<usize> {
    align.max(16).checked_next_power_of_two()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Frees a block (ours or not).
///
/// # Safety
/// As for C `free`.
#[inline(always)]
unsafe fn free_any(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let user = crate::header::launder(p.cast::<u8>());
    // SAFETY: `p` came from this process's malloc family (the C contract), so its tag word is
    // readable; our blocks have their size at `user - 32` and header before the tag.
    unsafe {
        match ours(user) {
            Some(offset) => {
                let size = user.sub(32).cast::<u64>().read();
                record_free(anchor(user), size);
                __libc_free(user.sub(offset).cast());
            }
            None => __libc_free(p),
        }
    }
}

/// C `malloc`.
///
/// # Safety
/// As for C `malloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if !counting() {
        // SAFETY: plain glibc allocation.
        return unsafe { __libc_malloc(size) };
    }
    // SAFETY: as above.
    unsafe { alloc_small(size, false) }
}

/// C `calloc`.
///
/// # Safety
/// As for C `calloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    if !counting() {
        // SAFETY: plain glibc allocation.
        return unsafe { __libc_calloc(n, size) };
    }
    let Some(bytes) = n.checked_mul(size) else {
        set_enomem();
        return core::ptr::null_mut();
    };
    // SAFETY: as above.
    unsafe { alloc_small(bytes, true) }
}

/// C `free`.
///
/// # Safety
/// As for C `free`.
#[no_mangle]
pub(crate) unsafe extern "C" fn free(p: *mut c_void) {
    if IN_RUST.try_with(Cell::get).unwrap_or(false) {
        // `TrackingAllocator` frees a block its inner allocator made: never one of ours.
        // SAFETY: as for C `free`.
        return unsafe { __libc_free(p) };
    }
    // SAFETY: as for C `free`.
    unsafe { free_any(p) }
}

/// C `realloc`: a counted block stays counted (the old size freed, the new one allocated in
/// the current scope, as for Rust); a block allocated before counting started stays uncounted.
///
/// # Safety
/// As for C `realloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if IN_RUST.try_with(Cell::get).unwrap_or(false) {
        // SAFETY: a block of the inner allocator's, resized by glibc.
        return unsafe { __libc_realloc(p, size) };
    }
    if p.is_null() {
        // SAFETY: as for C `malloc`.
        return unsafe { malloc(size) };
    }
    let user = crate::header::launder(p.cast::<u8>());
    // SAFETY: `p` is a live block of this process's malloc family (the C contract).
    let Some(offset) = (unsafe { ours(user) }) else {
        // SAFETY: not ours: glibc's own block, resized by glibc.
        return unsafe { __libc_realloc(p, size) };
    };
    if size == 0 {
        // glibc frees the block and returns null (REALLOC_ZERO_BYTES_FREES).
        // SAFETY: ours, freed once.
        unsafe { free_any(p) };
        return core::ptr::null_mut();
    }
    // SAFETY: ours: size at `user - 32`, header before the tag.
    let (old_size, old_header) = unsafe {
        (
            user.sub(32).cast::<u64>().read(),
            recorded_header(anchor(user)),
        )
    };
    if offset == SMALL_OFFSET {
        let Some(total) = size.checked_add(SMALL_OFFSET) else {
            set_enomem();
            return core::ptr::null_mut();
        };
        // SAFETY: `user - 32` is the base glibc returned for this block.
        let base = unsafe { __libc_realloc(user.sub(SMALL_OFFSET).cast(), total) };
        if base.is_null() {
            // The old block is untouched and still the caller's.
            return base;
        }
        // SAFETY: glibc kept the first `min(old, new) + 32` bytes (size, header, tag) and the
        // block has `32 + size` bytes.
        unsafe {
            let user = base.cast::<u8>().add(SMALL_OFFSET);
            user.sub(32).cast::<u64>().write(size as u64);
            counting_c(|| record_realloc(old_header, anchor(user), old_size, size as u64));
            return user.cast();
        }
    }
    // An over-aligned block: glibc's realloc would not keep the alignment, so move it (as
    // glibc does for a memalign'd block: the new block is only 16-aligned).
    // SAFETY: a fresh counted block, the old one's bytes copied, the old one freed once.
    unsafe {
        let new = alloc_small(size, false);
        if new.is_null() {
            return new;
        }
        core::ptr::copy_nonoverlapping(user, new.cast::<u8>(), size.min(old_size as usize));
        free_any(p);
        new
    }
}

/// C `reallocarray` (glibc ≥ 2.26): `realloc(p, n * size)` with an overflow check.
///
/// # Safety
/// As for C `reallocarray`.
#[no_mangle]
pub(crate) unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        set_enomem();
        return core::ptr::null_mut();
    };
    // SAFETY: as for C `realloc`.
    unsafe { realloc(p, bytes) }
}

/// C `posix_memalign`.
///
/// # Safety
/// As for C `posix_memalign`: `memptr` must be writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> libc::c_int {
    if align % core::mem::size_of::<usize>() != 0 || !align.is_power_of_two() {
        return libc::EINVAL;
    }
    // SAFETY: `align` is a power of two.
    let p = unsafe { alloc_aligned(align, size) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `memptr` is writable.
    unsafe { memptr.write(p) };
    0
}

/// C11 `aligned_alloc`.
///
/// # Safety
/// As for C `aligned_alloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as for C `memalign`.
    unsafe { memalign(align, size) }
}

/// C `memalign`: the alignment rounded up to a power of two, as glibc does.
///
/// # Safety
/// As for C `memalign`.
#[no_mangle]
pub(crate) unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = round_align(align) else {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return core::ptr::null_mut();
    };
    // SAFETY: `align` is a power of two.
    unsafe { alloc_aligned(align, size) }
}

/// C `valloc`: page-aligned.
///
/// # Safety
/// As for C `valloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: the page size is a power of two.
    unsafe { alloc_aligned(page_size(), size) }
}

/// C `pvalloc`: page-aligned, the size rounded up to whole pages (one page for 0).
///
/// # Safety
/// As for C `pvalloc`.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(rounded) = size.max(1).checked_next_multiple_of(page) else {
        set_enomem();
        return core::ptr::null_mut();
    };
    // SAFETY: as in `valloc`.
    unsafe { alloc_aligned(page, rounded) }
}

/// glibc's `malloc_usable_size`, found once with `dlsym(RTLD_NEXT)` (0: not looked up yet,
/// 1: not found).
static GLIBC_USABLE: AtomicUsize = AtomicUsize::new(0);

/// C `malloc_usable_size`: for a counted block, its requested size (every byte of it is
/// usable, and the tracker counts exactly these); for any other block, glibc's answer.
///
/// # Safety
/// As for C `malloc_usable_size`.
#[no_mangle]
pub(crate) unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    let user = crate::header::launder(p.cast::<u8>());
    // SAFETY: a live block of this process's malloc family (the C contract).
    if unsafe { ours(user) }.is_some() {
        // SAFETY: ours: the size is at `user - 32`.
        return unsafe { user.sub(32).cast::<u64>().read() } as usize;
    }
    let mut f = GLIBC_USABLE.load(Relaxed);
    if f == 0 {
        // Not on an allocation path: `dlsym` may call `malloc`, which is fine here.
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition after this object's.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
        f = if sym.is_null() { 1 } else { sym as usize };
        GLIBC_USABLE.store(f, Relaxed);
    }
    if f == 1 {
        return 0;
    }
    type Usable = unsafe extern "C" fn(*mut c_void) -> usize;
    // SAFETY: `f` is the address of glibc's `size_t malloc_usable_size(void *)`.
    unsafe { core::mem::transmute::<usize, Usable>(f)(p) }
}
