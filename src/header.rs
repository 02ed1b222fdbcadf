//! Per-block metadata: the header stored in front of every block.
//!
//! Every block handed out by [`TrackingAllocator`](crate::TrackingAllocator) is laid out as
//!
//! ```text
//! base                                          user pointer (aligned to layout.align())
//! |<---------------- offset ------------------->|
//! [ padding (align > 16) | extension? | word ][ user bytes (layout.size()) ]
//! ```
//!
//! * **The word** (8 bytes, just before the user pointer) is in every block: the run token in
//!   bits 0–31, the path in bits 32–47 (paths are below `registry::MAX_PATHS` = 2¹⁶), bit 63
//!   the `WIDE` flag. Bits 48–62 are zero.
//! * **The extension** (8 bytes before the word) is there, and the `WIDE` flag set, exactly
//!   when the block has room for it: the callsite id (bits 0–31) and the sampling weight (the
//!   `f32` bits, 32–63), both 0 for a block with no callsite.
//! * Offsets: a **narrow** block (alignment ≤ 8, allocated on the fast path: no callsite)
//!   has `offset = 8`; a **wide** block has `offset = 16` for alignments ≤ 16 and `offset =
//!   align` above. Blocks with alignment > 8 are always wide; a block of alignment ≤ 8 is wide
//!   when the allocator's slow path made it (a sampled or `Every`-mode block, the tracker's own,
//!   a thread's first), so `dealloc` finds the offset from the layout and the `WIDE` bit.
//!   `realloc` keeps the offset (the inner allocator moves the header with the bytes).
//! * The inner allocator is asked for `size + offset` bytes aligned to `max(align, 8)`, so the
//!   header words are 8-byte aligned.
//!
//! Overhead is therefore 8 bytes for most Rust allocations (alignment ≤ 8: a glibc chunk of 24
//! user bytes holds 16 of them, where a 16-byte header left 8), 16 for sampled blocks and
//! alignment 16, `align` above. Because the header records which path (job nesting), run and
//! callsite own the block, a free needs no global address map.
//!
//! Everything here is plain arithmetic, small enough to be checked exhaustively: the unit tests
//! at the bottom (sizes 0–300 and boundaries × alignments 1–65,536, narrow and wide),
//! `tests/ub_layouts.rs` through the real allocator (every byte written and read back, realloc,
//! zeroed blocks), and that suite under valgrind's memcheck (RELIABILITY.md). There is no Miri
//! run: the project builds on the stable toolchain only.

use core::alloc::Layout;

/// Size of the header of a narrow block (the word only): the usual per-block overhead.
pub(crate) const HEADER_SIZE: usize = 8;
/// Size of the header of a wide block (extension + word).
pub(crate) const WIDE_HEADER_SIZE: usize = 16;

/// Minimum alignment requested from the inner allocator, so the header words are 8-aligned.
const MIN_ALIGN: usize = 8;

/// The word's flag: the extension is present (and the offset of an alignment-≤ 8 block is 16).
const WIDE: u64 = 1 << 63;
/// Bits of the word that hold the path.
const PATH_SHIFT: u32 = 32;
const PATH_MASK: u64 = 0xFFFF;

/// What the tracker remembers about one block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Header {
    /// Scope path (job nesting) that allocated the block; see `registry`.
    pub path: u32,
    /// Callsite (path × stack) id, 0 when no stack was recorded for this block.
    pub site: u32,
    /// Run token (slot and generation), 0 when the block was allocated outside a run.
    pub run: u32,
    /// Sampling weight (1/p) the block added to its callsite; 0 when `site == 0`.
    pub weight: f32,
}

/// The word of a narrow header with `path` and `run` (what the fast paths write and compare).
#[inline(always)]
pub(crate) const fn narrow_word(path: u32, run: u32) -> u64 {
    ((path as u64 & PATH_MASK) << PATH_SHIFT) | run as u64
}

/// Whether a header word belongs to a wide block.
#[inline(always)]
pub(crate) const fn is_wide(word: u64) -> bool {
    word & WIDE != 0
}

#[inline(always)]
fn offset_for(align: usize, wide: bool) -> usize {
    if align <= MIN_ALIGN && !wide {
        HEADER_SIZE
    } else if align <= WIDE_HEADER_SIZE {
        WIDE_HEADER_SIZE
    } else {
        align
    }
}

/// The layout to request from the inner allocator for a user `layout` and the offset of the
/// user pointer from the block's base, for a narrow block when `wide` is false and the layout
/// allows it (alignment ≤ 8), a wide one otherwise. `None` when the enlarged layout would
/// overflow.
#[inline(always)]
pub(crate) fn wrap_as(layout: Layout, wide: bool) -> Option<(Layout, usize)> {
    let align = layout.align();
    if align <= MIN_ALIGN {
        // Most Rust allocations: `size + offset` bytes aligned to 8, valid when
        // `size + offset <= isize::MAX - 7` (no overflow: a layout's size is at most
        // `isize::MAX`). Kept separate so that the inner allocator sees a constant alignment
        // (`System` then calls `malloc` directly).
        let offset = if wide { WIDE_HEADER_SIZE } else { HEADER_SIZE };
        if layout.size() > isize::MAX as usize - (MIN_ALIGN - 1) - offset {
            return None;
        }
        // SAFETY: 8 is a power of two and the size was just checked against the bound.
        let wrapped =
            unsafe { Layout::from_size_align_unchecked(layout.size() + offset, MIN_ALIGN) };
        return Some((wrapped, offset));
    }
    let offset = offset_for(align, true);
    let wrapped_align = align.max(MIN_ALIGN);
    let size = layout.size().checked_add(offset)?;
    // `Layout::from_size_align`'s own condition, checked here so that the power-of-two test it
    // would repeat (the alignment comes from a valid layout) stays off the hot path.
    if size > isize::MAX as usize - (wrapped_align - 1) {
        return None;
    }
    // SAFETY: `wrapped_align` is a power of two (the maximum of a valid layout's alignment and
    // 8), and `size` rounded up to it does not exceed `isize::MAX`, as just checked.
    let wrapped = unsafe { Layout::from_size_align_unchecked(size, wrapped_align) };
    Some((wrapped, offset))
}

/// [`wrap_as`] for a narrow block where possible: the allocation fast path's layout.
#[inline(always)]
pub(crate) fn wrap(layout: Layout) -> Option<(Layout, usize)> {
    wrap_as(layout, false)
}

/// `wrap_as` for a block that was allocated with `layout` and whose header word is `word`
/// (so `wrap_as` succeeded for it then), as `dealloc` and `realloc` receive: the same result
/// without the overflow checks.
///
/// # Safety
/// `word` must be the header word of a live block allocated with `layout` (the `GlobalAlloc`
/// contract guarantees `wrap_as` succeeded for the layout of a live block).
#[inline(always)]
pub(crate) unsafe fn wrap_allocated(layout: Layout, word: u64) -> (Layout, usize) {
    let align = layout.align();
    let offset = offset_for(align, is_wide(word));
    // SAFETY: the caller guarantees `wrap_as(layout, wide)` succeeded, which checked exactly
    // that this size and alignment form a valid layout.
    let wrapped = unsafe {
        Layout::from_size_align_unchecked(layout.size().wrapping_add(offset), align.max(MIN_ALIGN))
    };
    (wrapped, offset)
}

/// The header word of the block whose user pointer is `user`.
///
/// # Safety
/// `user` must be a pointer returned by `TrackingAllocator` (so at least `HEADER_SIZE` bytes
/// of the same allocation precede it, 8-aligned, written by one of the `write` functions).
#[inline(always)]
pub(crate) unsafe fn read_word(user: *mut u8) -> u64 {
    let user = launder(user);
    // SAFETY: the caller guarantees the 8 bytes before `user` are the block's header word.
    unsafe { user.sub(HEADER_SIZE).cast::<u64>().read() }
}

/// `user`, with its provenance hidden from the optimiser. Every pointer the tracker derives
/// from a user pointer (its header, its base) must come from this: the compiler knows that a
/// block from `__rust_alloc*` (or `malloc`) starts at the user pointer, so once the allocator
/// is inlined into the caller it may treat the header before it as outside any object and
/// fold its load (to 0 for a block it knows is zeroed), or the base as out of bounds. An empty
/// `asm!` that may change the register makes them real loads and real arithmetic. It emits no
/// instruction.
#[inline(always)]
pub(crate) fn launder<T>(mut user: *mut T) -> *mut T {
    // SAFETY: an empty asm block (a comment): it writes no memory, no stack and no flags, and
    // leaves the register holding `user` unchanged. Declared `readonly` (not `nomem`) because
    // a pointer passed to it may be read through; it reads nothing.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) user, options(pure, readonly, nostack, preserves_flags));
    }
    user
}

/// The whole header of the block whose user pointer is `user` and whose word is `word`.
///
/// # Safety
/// As for [`read_word`], and `word` must be that block's word.
#[inline(always)]
pub(crate) unsafe fn read(user: *mut u8, word: u64) -> Header {
    let (site, weight) = if is_wide(word) {
        // SAFETY: a wide block has the extension in the 8 bytes before its word.
        let ext = unsafe { launder(user).sub(WIDE_HEADER_SIZE).cast::<u64>().read() };
        (ext as u32, f32::from_bits((ext >> 32) as u32))
    } else {
        (0, 0.0)
    };
    Header {
        path: ((word >> PATH_SHIFT) & PATH_MASK) as u32,
        site,
        run: word as u32,
        weight,
    }
}

/// Writes the header `h` of the block at `user`: wide (word with the flag, and the extension)
/// when `offset` leaves room for it (≥ 16), narrow otherwise. A narrow block cannot hold a
/// callsite: the caller passes `h.site == 0` there (checked in debug builds; in release the
/// callsite is dropped from the header, never written out of bounds).
///
/// # Safety
/// `user` must be the user pointer of a block whose `offset` header bytes before it are ours
/// to write (8-aligned).
#[inline(always)]
pub(crate) unsafe fn write(user: *mut u8, offset: usize, h: Header) {
    let word = narrow_word(h.path, h.run);
    if offset >= WIDE_HEADER_SIZE {
        let ext = u64::from(h.site) | (u64::from(h.weight.to_bits()) << 32);
        // SAFETY: the caller guarantees the 16 bytes before `user` are ours, 8-aligned.
        unsafe {
            user.sub(WIDE_HEADER_SIZE)
                .cast::<[u64; 2]>()
                .write([ext, word | WIDE]);
        }
    } else {
        debug_assert_eq!(h.site, 0, "a narrow header has no room for a callsite");
        // SAFETY: the caller guarantees the 8 bytes before `user` are ours, 8-aligned.
        unsafe { user.sub(HEADER_SIZE).cast::<u64>().write(word) };
    }
}

/// Writes the header of a block with no callsite (the fast paths' only kind): one store for a
/// narrow block.
///
/// # Safety
/// As for [`write`].
#[inline(always)]
pub(crate) unsafe fn write_unsited(user: *mut u8, offset: usize, path: u32, run: u32) {
    // SAFETY: forwarded.
    unsafe {
        write(
            user,
            offset,
            Header {
                path,
                site: 0,
                run,
                weight: 0.0,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class × every alignment up to 64 KiB, narrow and wide: the user pointer is
    /// aligned, the header fits between base and user pointer, the user bytes fit in the
    /// block, and `wrap_allocated` finds the same layout from the written word.
    #[test]
    fn wrap_is_sound_for_sizes_and_alignments() {
        let sizes = (0..=300usize).chain([4095, 4096, 4097, 65535, 65536, 1 << 20, (1 << 20) + 3]);
        for size in sizes {
            for shift in 0..=16 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                for wide in [false, true] {
                    let (wrapped, offset) = wrap_as(layout, wide).unwrap();
                    let header = if offset >= WIDE_HEADER_SIZE {
                        WIDE_HEADER_SIZE
                    } else {
                        HEADER_SIZE
                    };
                    assert_eq!(offset % align, 0, "user pointer must stay aligned");
                    assert_eq!(offset % MIN_ALIGN, 0, "header must be 8-aligned");
                    assert!(wrapped.align() >= align && wrapped.align() >= MIN_ALIGN);
                    assert_eq!(wrapped.size(), size + offset);
                    for base in [0usize, wrapped.align(), wrapped.align() * 7] {
                        let user = base + offset;
                        assert_eq!(user % align, 0);
                        assert!(user - header >= base);
                        assert!(user + size <= base + wrapped.size());
                    }
                    // 8 bytes for a narrow block of alignment ≤ 8, 16 up to align 16, `align`
                    // beyond; alignments above 8 are always wide.
                    let expected = match (align <= 8, wide) {
                        (true, false) => 8,
                        _ => align.max(16),
                    };
                    assert_eq!(offset, expected);
                    // The word written for this block gives `wrap_allocated` the same answer.
                    let word = if offset >= WIDE_HEADER_SIZE {
                        narrow_word(3, 4) | WIDE
                    } else {
                        narrow_word(3, 4)
                    };
                    // SAFETY: `wrap_as` succeeded for `layout`.
                    assert_eq!(unsafe { wrap_allocated(layout, word) }, (wrapped, offset));
                }
            }
        }
    }

    #[test]
    fn wrap_rejects_overflow() {
        let huge = Layout::from_size_align(isize::MAX as usize - 4, 1).unwrap();
        assert!(wrap(huge).is_none());
        assert!(wrap_as(huge, true).is_none());
        // The largest size whose narrow block (size + 8) still fits is isize::MAX - 15.
        let fits = Layout::from_size_align(isize::MAX as usize - 15, 1).unwrap();
        assert!(wrap(fits).is_some());
        assert!(wrap_as(fits, true).is_none());
        // The largest size whose wrapped block (size + 4096) still fits is isize::MAX - 8191;
        // one byte more must be rejected, and that one must be accepted.
        let fits = Layout::from_size_align(isize::MAX as usize - 8191, 4096).unwrap();
        assert!(wrap(fits).is_some());
        let huge_aligned = Layout::from_size_align(isize::MAX as usize - 8190, 4096).unwrap();
        assert!(wrap(huge_aligned).is_none());
    }

    #[test]
    fn header_round_trips_through_memory() {
        let mut buf = [0u64; 8];
        // SAFETY: 32 bytes into a 64-byte buffer: in bounds.
        let user = unsafe { (buf.as_mut_ptr() as *mut u8).add(32) };
        let sited = Header {
            path: 7,
            site: 9,
            run: 0x0001_0002,
            weight: 3.5,
        };
        // SAFETY: `user` is 32 bytes into a 64-byte buffer, so 16 bytes precede it.
        unsafe {
            write(user, 16, sited);
            let word = read_word(user);
            assert!(is_wide(word));
            assert_eq!(read(user, word), sited);
        }
        // Narrow and wide headers with no callsite, at the extremes of every field, read back
        // the same whatever was there before.
        for (path, run) in [(7, 0x0001_0002), (0xFFFF, u32::MAX), (0, 0)] {
            for offset in [8, 16] {
                // SAFETY: as above.
                unsafe {
                    buf = [u64::MAX; 8];
                    let user = (buf.as_mut_ptr() as *mut u8).add(32);
                    write_unsited(user, offset, path, run);
                    let word = read_word(user);
                    assert_eq!(is_wide(word), offset == 16);
                    let expected = Header {
                        path,
                        site: 0,
                        run,
                        weight: 0.0,
                    };
                    assert_eq!(read(user, word), expected);
                    assert_eq!(word & !WIDE, narrow_word(path, run));
                }
            }
        }
    }
}
