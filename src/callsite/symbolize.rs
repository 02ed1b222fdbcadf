//! Symbolization at report time: instruction pointers to function, file and line.
//!
//! Runs only when a report is built, with tracking suspended (its allocations are the
//! tracker's). Results are cached per instruction pointer, so rendering a report twice
//! resolves each address once. Inlined frames are kept (one instruction pointer can expand to
//! several frames). The frames of the allocator machinery are trimmed from the top of each
//! stack, so the first frame a user sees is the code that asked for memory.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use crate::report::Frame;

static CACHE: OnceLock<DashMap<usize, Arc<[Frame]>>> = OnceLock::new();

/// Frames for one instruction pointer (innermost first), cached.
fn resolve_ip(ip: usize) -> Arc<[Frame]> {
    let cache = CACHE.get_or_init(DashMap::new);
    if let Some(f) = cache.get(&ip) {
        return f.clone();
    }
    let mut frames = Vec::new();
    backtrace::resolve(ip as *mut core::ffi::c_void, |sym| {
        let function = sym
            .name()
            .map(|n| format!("{n:#}"))
            .unwrap_or_else(|| format!("{ip:#x}"));
        frames.push(Frame {
            function,
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            function: format!("{ip:#x}"),
            file: None,
            line: None,
        });
    }
    let frames: Arc<[Frame]> = frames.into();
    cache.insert(ip, frames.clone());
    frames
}

/// Entry points of the allocator: everything above the last of these in a stack is
/// allocscope's own code (and the standard library code it calls, such as thread-locals).
fn is_allocator_entry(function: &str) -> bool {
    let function = function.strip_prefix("__rustc::").unwrap_or(function);
    const PREFIXES: &[&str] = &[
        "allocscope::",
        "<allocscope::",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "alloc::alloc::",
        "<alloc::alloc::",
        "std::alloc::",
        "<std::alloc::",
        "core::alloc::",
        "<core::alloc::",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// The functions through which every allocation enters the global allocator.
fn is_entry_point(function: &str) -> bool {
    let function = function.strip_prefix("__rustc::").unwrap_or(function);
    const PREFIXES: &[&str] = &[
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "<allocscope::alloc::TrackingAllocator",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Allocation plumbing between the allocator entry and the user's code (vectors, strings,
/// boxes growing or being built); trimmed too, so the first frame is the code that asked.
pub(crate) fn is_machinery(function: &str) -> bool {
    is_allocator_entry(function)
        || function.starts_with("alloc::")
        || function.starts_with("<alloc::")
}

/// Symbolized, trimmed frames of a captured stack (innermost first).
pub(crate) fn symbolize(ips: &[usize]) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(ips.len());
    for &ip in ips {
        out.extend(resolve_ip(ip).iter().cloned());
    }
    trim(&mut out);
    out
}

/// Removes the allocator's own frames from the top of a stack and the runtime's from the
/// bottom. Keeps everything if nothing would be left (better than an empty stack).
pub(crate) fn trim(frames: &mut Vec<Frame>) {
    // The first allocator entry point marks the boundary: above it is allocscope's hot path
    // (and the std code it calls); below it, allocation plumbing, then the user's code. Only
    // the first one counts: the user's code itself runs inside `track_scope`, deeper down.
    if let Some(entry) = frames.iter().position(|f| is_entry_point(&f.function)) {
        if let Some(first_user) = frames[entry..]
            .iter()
            .position(|f| !is_machinery(&f.function))
        {
            frames.drain(..entry + first_user);
        }
    }
    // Drop the runtime frames below `main` or a thread's entry (the same for every stack).
    if let Some(entry) = frames.iter().position(|f| is_program_entry(&f.function)) {
        frames.truncate(entry.max(1));
    }
}

fn is_program_entry(function: &str) -> bool {
    function.starts_with("std::rt::lang_start")
        || function.starts_with("std::sys::backtrace::__rust_begin_short_backtrace")
}
