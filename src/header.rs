//! Per-block metadata: the 16-byte header stored in front of every block.
//!
//! Every block handed out by [`TrackingAllocator`](crate::TrackingAllocator) is laid out as
//!
//! ```text
//! base                                   user pointer (aligned to layout.align())
//! |<------------- offset ---------------->|
//! [ padding (only if align > 16) | Header ][ user bytes (layout.size()) ]
//! ```
//!
//! * `offset = 16` when `align <= 16`, otherwise `offset = align` (a multiple of the alignment,
//!   so the user pointer stays aligned). The header always sits in the 16 bytes just before the
//!   user pointer.
//! * The inner allocator is asked for `size + offset` bytes aligned to `max(align, 8)`, so the
//!   header itself is always 8-byte aligned.
//!
//! Overhead per block is therefore 16 bytes for the usual alignments (≤ 16) and `align` bytes
//! for over-aligned layouts. Because the header records which path (job nesting), callsite and
//! run own the block, a free needs no global address map.
//!
//! Everything here is plain arithmetic, small enough to be checked exhaustively: the unit tests
//! at the bottom (sizes 0–300 and boundaries × alignments 1–65,536), `tests/ub_layouts.rs`
//! through the real allocator (every byte written and read back, realloc, zeroed blocks), and
//! that suite under valgrind's memcheck (RELIABILITY.md). There is no Miri run: the project
//! builds on the stable toolchain only.

use core::alloc::Layout;

/// Size of the header in bytes.
pub(crate) const HEADER_SIZE: usize = 16;

/// Minimum alignment requested from the inner allocator, so the header is 8-byte aligned.
const MIN_ALIGN: usize = 8;

/// What the tracker remembers about one block.
#[repr(C)]
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

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(core::mem::align_of::<Header>() <= MIN_ALIGN);

/// The layout to request from the inner allocator for a user `layout`, and the offset of the
/// user pointer from the block's base. `None` when the enlarged layout would overflow.
#[inline]
pub(crate) fn wrap(layout: Layout) -> Option<(Layout, usize)> {
    let align = layout.align();
    if align <= MIN_ALIGN {
        // Most Rust allocations: the block is `size + 16` bytes aligned to 8, valid when
        // `size + 16 <= isize::MAX - 7` (the general case below with these constants; no
        // overflow since a layout's size is at most `isize::MAX`). Kept separate so that the
        // inner allocator sees a constant alignment (`System` then calls `malloc` directly).
        if layout.size() > isize::MAX as usize - (MIN_ALIGN - 1) - HEADER_SIZE {
            return None;
        }
        // SAFETY: 8 is a power of two and the size was just checked against the bound.
        let wrapped =
            unsafe { Layout::from_size_align_unchecked(layout.size() + HEADER_SIZE, MIN_ALIGN) };
        return Some((wrapped, HEADER_SIZE));
    }
    let offset = if align <= HEADER_SIZE {
        HEADER_SIZE
    } else {
        align
    };
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

/// `wrap` for a layout that a block was allocated with (so `wrap` succeeded for it then), as
/// `dealloc` and `realloc` receive: the same result without the overflow checks.
///
/// # Safety
/// `wrap(layout)` must have returned `Some` (the `GlobalAlloc` contract guarantees it for the
/// layout of a live block).
#[inline]
pub(crate) unsafe fn wrap_allocated(layout: Layout) -> (Layout, usize) {
    let align = layout.align();
    let offset = if align <= HEADER_SIZE {
        HEADER_SIZE
    } else {
        align
    };
    // SAFETY: the caller guarantees `wrap(layout)` succeeded, which checked exactly that this
    // size and alignment form a valid layout.
    let wrapped = unsafe {
        Layout::from_size_align_unchecked(layout.size().wrapping_add(offset), align.max(MIN_ALIGN))
    };
    (wrapped, offset)
}

/// Pointer to the header of the block whose user pointer is `user`.
///
/// # Safety
/// `user` must be a pointer returned by `TrackingAllocator` (so at least `HEADER_SIZE` bytes
/// of the same allocation precede it).
#[inline]
pub(crate) unsafe fn header_ptr(user: *mut u8) -> *mut Header {
    // SAFETY: the caller guarantees the 16 bytes before `user` belong to the same allocation.
    unsafe { user.sub(HEADER_SIZE).cast::<Header>() }
}

/// Writes, for the block whose user pointer is `user`, the header of a block with no callsite
/// (`Header { path, site: 0, run, weight: 0.0 }`, the allocation fast path's only kind) as two
/// 8-byte stores instead of four 4-byte ones.
///
/// # Safety
/// As for [`header_ptr`], and the 16 header bytes must be writable.
#[inline(always)]
pub(crate) unsafe fn write_unsited(user: *mut u8, path: u32, run: u32) {
    // On a little-endian target `path` (then `site` = 0) is the low (then high) half of the
    // first word, `run` (then the bits of `weight` = 0.0, all zero) of the second.
    #[cfg(target_endian = "little")]
    // SAFETY: the caller guarantees the 16 bytes are ours; the header is 8-aligned (`MIN_ALIGN`).
    unsafe {
        header_ptr(user)
            .cast::<[u64; 2]>()
            .write([u64::from(path), u64::from(run)]);
    }
    #[cfg(not(target_endian = "little"))]
    // SAFETY: as above.
    unsafe {
        header_ptr(user).write(Header {
            path,
            site: 0,
            run,
            weight: 0.0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class × every alignment up to 64 KiB: the user pointer is aligned, the
    /// header fits between base and user pointer, and the user bytes fit in the block.
    #[test]
    fn wrap_is_sound_for_sizes_and_alignments() {
        let sizes = (0..=300usize).chain([4095, 4096, 4097, 65535, 65536, 1 << 20, (1 << 20) + 3]);
        for size in sizes {
            for shift in 0..=16 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                let (wrapped, offset) = wrap(layout).unwrap();
                assert!(offset >= HEADER_SIZE);
                assert_eq!(offset % align, 0, "user pointer must stay aligned");
                assert_eq!(offset % MIN_ALIGN, 0, "header must be 8-aligned");
                assert!(wrapped.align() >= align && wrapped.align() >= MIN_ALIGN);
                assert_eq!(wrapped.size(), size + offset);
                // Any base aligned to wrapped.align() gives an aligned user pointer.
                for base in [0usize, wrapped.align(), wrapped.align() * 7] {
                    let user = base + offset;
                    assert_eq!(user % align, 0);
                    assert_eq!((user - HEADER_SIZE) % core::mem::align_of::<Header>(), 0);
                    assert!(user - HEADER_SIZE >= base);
                    assert!(user + size <= base + wrapped.size());
                }
                // Overhead is 16 bytes up to align 16, `align` beyond.
                assert_eq!(offset, align.max(HEADER_SIZE));
            }
        }
    }

    #[test]
    fn wrap_allocated_matches_wrap() {
        for size in (0..=300usize).chain([4095, 4096, 65536, (1 << 20) + 3]) {
            for shift in 0..=16 {
                let layout = Layout::from_size_align(size, 1 << shift).unwrap();
                let wrapped = wrap(layout).unwrap();
                // SAFETY: `wrap` succeeded for `layout`.
                assert_eq!(unsafe { wrap_allocated(layout) }, wrapped);
            }
        }
    }

    #[test]
    fn wrap_rejects_overflow() {
        let huge = Layout::from_size_align(isize::MAX as usize - 4, 1).unwrap();
        assert!(wrap(huge).is_none());
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
        let h = Header {
            path: 7,
            site: 9,
            run: 0x0001_0002,
            weight: 3.5,
        };
        // SAFETY: `user` is 32 bytes into an 64-byte buffer, so 16 bytes precede it.
        unsafe {
            header_ptr(user).write(h);
            assert_eq!(header_ptr(user).read(), h);
        }
        // The fast path's two-word write reads back as the same header with no callsite,
        // whatever was there before.
        for (path, run) in [(7, 0x0001_0002), (u32::MAX, u32::MAX), (0, 0)] {
            // SAFETY: as above.
            unsafe {
                write_unsited(user, path, run);
                let expected = Header {
                    path,
                    site: 0,
                    run,
                    weight: 0.0,
                };
                assert_eq!(header_ptr(user).read(), expected);
                assert_eq!(header_ptr(user).read().weight.to_bits(), 0);
            }
        }
    }
}
