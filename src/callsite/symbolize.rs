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

/// Whether a function belongs to the allocation machinery above the user's code.
pub(crate) fn is_machinery(function: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "allocscope::",
        "<allocscope::",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "alloc::",
        "<alloc::",
        "core::alloc::",
        "<core::alloc::",
        "std::alloc::",
        "<std::alloc::",
        "backtrace::",
        "<backtrace::",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Symbolized, trimmed frames of a captured stack (innermost first).
pub(crate) fn symbolize(ips: &[usize]) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(ips.len());
    for &ip in ips {
        out.extend(resolve_ip(ip).iter().cloned());
    }
    let first_user = out
        .iter()
        .position(|f| !is_machinery(&f.function))
        .unwrap_or(out.len());
    // Keep the machinery if the whole stack is machinery (better than an empty stack).
    if first_user < out.len() {
        out.drain(..first_user);
    }
    // Drop the runtime frames below `main` or a thread's entry (the same for every stack).
    if let Some(entry) = out.iter().position(|f| is_program_entry(&f.function)) {
        out.truncate(entry.max(1));
    }
    out
}

fn is_program_entry(function: &str) -> bool {
    function.starts_with("std::rt::lang_start")
        || function.starts_with("std::sys::backtrace::__rust_begin_short_backtrace")
}
