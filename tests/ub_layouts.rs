//! The header arithmetic through the real allocator, exhaustively over sizes × alignments:
//! every block is aligned, every user byte is writable and keeps its value (so the header never
//! overlaps user bytes), `realloc` up and down preserves contents, `alloc_zeroed` is zeroed,
//! failed requests return null without being counted, and the figures are exact. (The pure
//! arithmetic is unit-tested in `src/header.rs`; this is the same contract end to end, and the
//! binary valgrind runs — RELIABILITY.md.)

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, GlobalAlloc, Layout};

use allocscope::{report, track_scope_run, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=130).collect();
    for base in [
        255usize, 256, 511, 512, 1023, 1024, 4095, 4096, 8191, 65_535, 65_536,
    ] {
        v.extend([base - 1, base, base + 1]);
    }
    v.extend([(1 << 20) - 1, 1 << 20, (1 << 20) + 17]);
    v.sort_unstable();
    v.dedup();
    v
}

const MAX_ALIGN_SHIFT: u32 = 16; // 1 ..= 65,536

fn pattern(i: usize, seed: usize) -> u8 {
    (i.wrapping_mul(31) ^ seed) as u8
}

/// Fills every byte and checks them all back.
///
/// # Safety
/// `p` points to `len` writable bytes.
unsafe fn fill_and_check(p: *mut u8, len: usize, seed: usize) {
    // SAFETY: per the caller.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(i, seed);
    }
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(*b, pattern(i, seed));
    }
}

/// Checks the first `len` bytes still hold the pattern.
///
/// # Safety
/// `p` points to `len` readable bytes.
unsafe fn check(p: *const u8, len: usize, seed: usize, what: &str) {
    // SAFETY: per the caller.
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(*b, pattern(i, seed), "{what}: byte {i} of {len}");
    }
}

#[test]
fn every_size_and_alignment_round_trips() {
    let sizes = sizes();
    let ((objects, bytes), run) = track_scope_run("ub_sizes_aligns", || {
        let mut objects = 0u64;
        let mut bytes = 0u64;
        for &size in &sizes {
            for shift in 0..=MAX_ALIGN_SHIFT {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                let seed = size ^ align;
                // SAFETY: non-zero sizes; every pointer is used within its layout and freed
                // with the layout it currently has.
                unsafe {
                    let p = alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{layout:?}");
                    fill_and_check(p, size, seed);
                    // Grow: contents kept, new tail writable.
                    let bigger = size * 2 + 13;
                    let q = realloc(p, layout, bigger);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc up {layout:?}");
                    check(q, size, seed, "realloc up");
                    fill_and_check(q, bigger, seed + 1);
                    // Shrink: the prefix kept.
                    let smaller = (size / 2).max(1);
                    let grown = Layout::from_size_align(bigger, align).unwrap();
                    let r = realloc(q, grown, smaller);
                    assert!(!r.is_null());
                    assert_eq!(r as usize % align, 0, "realloc down {layout:?}");
                    check(r, smaller, seed + 1, "realloc down");
                    dealloc(r, Layout::from_size_align(smaller, align).unwrap());
                    // Zeroed: every byte, even when the inner allocator reuses a dirty block.
                    let z = alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0);
                    assert!(
                        std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0),
                        "alloc_zeroed {layout:?}"
                    );
                    fill_and_check(z, size, seed + 2);
                    dealloc(z, layout);
                }
                objects += 4;
                bytes += (size + bigger_of(size) + (size / 2).max(1) + size) as u64;
            }
        }
        (objects, bytes)
    });
    assert_eq!(run.allocated, Usage::new(objects, bytes));
    assert_eq!(run.retained_at_finish, Usage::default());
    let j = report().job("ub_sizes_aligns").cloned().unwrap();
    assert_eq!(j.allocated, Usage::new(objects, bytes));
    assert_eq!(j.retained, Usage::default());
}

fn bigger_of(size: usize) -> usize {
    size * 2 + 13
}

#[test]
fn failed_requests_return_null_and_are_not_counted() {
    let ((), run) = track_scope_run("ub_failures", || {
        // SAFETY: failing requests return null and touch nothing; the successful block is
        // freed with its layout.
        unsafe {
            // Sizes whose header-enlarged layout overflows: rejected before the inner
            // allocator is asked.
            for (size, align) in [
                (isize::MAX as usize - 4, 1),
                (isize::MAX as usize - 8191, 4096),
            ] {
                let l = Layout::from_size_align(size, align).unwrap();
                assert!(alloc(l).is_null());
                assert!(alloc_zeroed(l).is_null());
                assert!(ALLOC.alloc(l).is_null());
            }
            // A size the system cannot provide.
            let huge = Layout::from_size_align(1 << 62, 8).unwrap();
            assert!(alloc(huge).is_null());
            // A failed realloc leaves the old block intact and still owned.
            let l = Layout::from_size_align(64, 16).unwrap();
            let p = alloc(l);
            fill_and_check(p, 64, 5);
            assert!(realloc(p, l, 1 << 62).is_null());
            assert!(realloc(p, l, isize::MAX as usize - 20).is_null());
            check(p, 64, 5, "after failed realloc");
            dealloc(p, l);
        }
    });
    assert_eq!(
        run.allocated,
        Usage::new(1, 64),
        "only the successful block"
    );
    assert_eq!(run.retained_at_finish, Usage::default());
}

/// Narrow (8-byte) and wide (16-byte) headers meet across stack modes: blocks allocated in one
/// mode are grown and shrunk in another (a narrow block whose realloc records a stack moves to
/// a wide one; a wide block stays wide), contents kept, figures exact, callsites balanced.
#[test]
fn headers_survive_mode_changes_between_alloc_and_realloc() {
    use allocscope::{set_stack_mode, StackMode};
    let modes = [
        StackMode::Off,
        StackMode::Every,
        StackMode::Sampled { mean_bytes: 64 },
    ];
    let sizes: Vec<usize> = (1..=70).chain([255, 4096, 65_537]).collect();
    let ((objects, bytes), run) = track_scope_run("ub_modes", || {
        let mut objects = 0u64;
        let mut bytes = 0u64;
        for a in modes {
            for b in modes {
                for &size in &sizes {
                    for shift in [0u32, 3, 4, 6] {
                        let align = 1usize << shift;
                        let layout = Layout::from_size_align(size, align).unwrap();
                        let seed = size ^ align ^ 0x55;
                        // SAFETY: as in `every_size_and_alignment_round_trips`.
                        unsafe {
                            set_stack_mode(a);
                            let p = alloc(layout);
                            assert!(!p.is_null());
                            fill_and_check(p, size, seed);
                            set_stack_mode(b);
                            let bigger = bigger_of(size);
                            let q = realloc(p, layout, bigger);
                            assert!(!q.is_null());
                            assert_eq!(q as usize % align, 0);
                            check(q, size, seed, "realloc up across modes");
                            fill_and_check(q, bigger, seed + 1);
                            set_stack_mode(a);
                            let smaller = (size / 2).max(1);
                            let grown = Layout::from_size_align(bigger, align).unwrap();
                            let r = realloc(q, grown, smaller);
                            assert!(!r.is_null());
                            check(r, smaller, seed + 1, "realloc down across modes");
                            set_stack_mode(b);
                            dealloc(r, Layout::from_size_align(smaller, align).unwrap());
                        }
                        objects += 3;
                        bytes += (size + bigger_of(size) + (size / 2).max(1)) as u64;
                    }
                }
            }
        }
        set_stack_mode(StackMode::Off);
        (objects, bytes)
    });
    assert_eq!(run.allocated, Usage::new(objects, bytes));
    assert_eq!(run.retained_at_finish, Usage::default());
    let r = report();
    let j = r.job("ub_modes").cloned().unwrap();
    assert_eq!(j.retained, Usage::default());
    // Every callsite's sampled figures went back to zero live: no sample was lost or doubled.
    for c in &j.callsites {
        assert_eq!(c.retained.bytes, 0, "{:?}", c.frames.first());
    }
}
