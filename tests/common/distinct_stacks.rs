//! Many distinct stacks on demand, for tests and examples that need thousands of callsites:
//! a recursion through one of two call sites per level ([`rec_a`], [`rec_b`]), following the
//! bits of a number, so each number below `2^levels` reaches [`leaf`] by its own stack. The
//! blocks are raw allocations (align 8) whose addresses are collected, to free with
//! [`free_blocks`].
//!
//! Shared by `tests/stress.rs`, `tests/report_wire.rs`, `tests/report_cache.rs` and
//! `examples/report_cost.rs` (each through `#[path]`).
#![allow(dead_code)]

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;

/// Allocates one block of `size` bytes (non-zero) and collects its address.
#[inline(never)]
pub fn leaf(out: &mut Vec<usize>, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: `size` is non-zero (`from_size_align` accepts 0, so callers keep to the rule);
    // freed by `free_blocks` with the same layout.
    let p = unsafe { alloc(layout) };
    assert!(!p.is_null());
    out.push(p as usize);
    black_box(p);
}

/// One level of the recursion through the first call site; `levels` more levels follow, then
/// [`leaf`] allocates `size` bytes.
#[inline(never)]
pub fn rec_a(levels: u32, bits: u32, size: usize, out: &mut Vec<usize>) {
    if levels == 0 {
        leaf(out, size);
    } else if bits & 1 == 0 {
        rec_a(levels - 1, bits >> 1, size, out);
    } else {
        rec_b(levels - 1, bits >> 1, size, out);
    }
    // Work after the calls: no tail calls, so every level keeps its frame.
    black_box(levels);
}

/// One level through the second call site; see [`rec_a`].
#[inline(never)]
pub fn rec_b(levels: u32, bits: u32, size: usize, out: &mut Vec<usize>) {
    if levels == 0 {
        leaf(out, size);
    } else if bits & 1 == 0 {
        rec_a(levels - 1, bits >> 1, size, out);
    } else {
        rec_b(levels - 1, bits >> 1, size, out);
    }
    black_box(levels + 1);
}

/// Frees blocks that [`leaf`] allocated with `size` bytes.
pub fn free_blocks(blocks: impl IntoIterator<Item = usize>, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for p in blocks {
        // SAFETY: allocated by `leaf` with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout) };
    }
}
