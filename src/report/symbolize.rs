//! Symbolization at report time: instruction pointers to function, file and line.
//!
//! Runs only when a report is built, with tracking suspended (its allocations are the
//! tracker's). Results are cached per instruction pointer, so rendering a report twice
//! resolves each address once. Inlined frames are kept (one instruction pointer can expand to
//! several frames). The frames of the allocator machinery are trimmed from the top of each
//! stack, so the first frame a user sees is the code that asked for memory.
//!
//! **Names are full paths** in every build profile (see [`qualify_outermost`] and
//! [`qualify_inlined`]): the function an address was compiled into is named by its symbol
//! (`worker::main::{closure#0}`, keeping DWARF's closure index where DWARF has one); a frame
//! DWARF names only by a short name (an inlined frame under `debug = "line-tables-only"`) is
//! qualified by an outer frame of the same source file (a closure by the function calling from
//! the line closest before the closure's, a function by the nearest one's module), else by its file's crate and module for the standard library and
//! registry crates (`alloc::raw_vec::grow_one`), else made unique with its file
//! (`load [jobs/load.rs]`). The heuristics
//! that tell a memory check's job frames from its test's frames (`testing`) live here too,
//! beside the ones they build on.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use super::symtab;
use crate::fork::{self, AtFork};
use crate::model::Frame;

static CACHE: OnceLock<DashMap<usize, Arc<[Frame]>>> = OnceLock::new();
/// The symbol cache's shard locks around `fork()`.
struct CacheAtFork;

impl AtFork for CacheAtFork {
    fn prepare(&self) {
        if let Some(c) = CACHE.get() {
            c.prepare();
        }
    }

    unsafe fn release(&self, child: bool) {
        if let Some(c) = CACHE.get() {
            // SAFETY: per the trait.
            unsafe { c.release(child) };
        }
    }
}

static CACHE_AT_FORK: CacheAtFork = CacheAtFork;

/// Set when `backtrace` parsed debug info since the last [`release_debug_info`].
static PARSED: AtomicBool = AtomicBool::new(false);

/// Frames for one instruction pointer (innermost first), cached.
fn resolve_ip(ip: usize) -> Arc<[Frame]> {
    let cache = CACHE.get_or_init(|| {
        let map = DashMap::new();
        // Registered here, before the cache is published: all its locks are covered. The
        // stack table first: it is held while this cache is used (`stacks.rs`).
        super::stacks::register_for_fork();
        fork::register(&CACHE_AT_FORK);
        map
    });
    if let Some(f) = cache.get(&ip).map(|f| f.clone()) {
        return f;
    }
    let mut frames = Vec::new();
    PARSED.store(true, Relaxed);
    backtrace::resolve(ip as *mut core::ffi::c_void, |sym| {
        let function = sym
            .name()
            .map(|n| {
                let full = format!("{n:#}");
                if let Some(mangled) = n.as_str().filter(|m| is_mangled(m)) {
                    symtab::remember_system_name(&full, mangled);
                }
                full
            })
            .unwrap_or_else(|| format!("{ip:#x}"));
        frames.push(Frame {
            function: function.into(),
            file: sym.filename().map(|p| p.display().to_string().into()),
            line: sym.lineno(),
        });
    });
    if frames
        .iter()
        .all(|f| f.file.is_none() && f.function.starts_with("0x"))
    {
        // `backtrace` lists the loaded libraries once per process: a library loaded with
        // `dlopen` later (a plugin, a C library's module) is unknown to it. The dynamic
        // loader knows it: its exported symbol, with the library as the file.
        frames = vec![dynamic_symbol(ip).unwrap_or_else(|| Frame {
            function: format!("{ip:#x}").into(),
            file: None,
            line: None,
        })];
    }
    // The outermost frame is the function the address was compiled into: its symbol names it.
    if let Some(outer) = frames.last_mut() {
        let symbols = symtab::symbols_at(ip.saturating_sub(1));
        if let Some((full, mangled)) = qualify_outermost(&outer.function, &symbols) {
            symtab::remember_system_name(&full, &mangled);
            outer.function = full.into();
        }
    }
    let frames: Arc<[Frame]> = frames.into();
    cache.insert(ip, frames.clone());
    frames
}

/// The dynamic symbol containing `ip` and its library's path, from the dynamic loader
/// (`dladdr`); `None` when it knows none.
fn dynamic_symbol(ip: usize) -> Option<Frame> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `dladdr` only reads the loader's tables and fills `info`; the strings it
        // points to belong to loaded objects and are copied before returning.
        unsafe {
            let mut info: libc::Dl_info = core::mem::zeroed();
            if libc::dladdr(ip as *const libc::c_void, &mut info) == 0 || info.dli_sname.is_null() {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(info.dli_sname).to_string_lossy();
            let file = (!info.dli_fname.is_null())
                .then(|| std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy());
            Some(Frame::new(&*name, file.as_deref(), None))
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = ip;
        None
    }
}

/// Drops the debug information `backtrace` parsed and mapped to resolve new addresses (tens of
/// MB for a large binary, held until cleared). Called after each report: what was resolved
/// stays in our per-address cache, so a later report only parses again if it meets new
/// addresses, and the tracker's memory does not keep a whole binary's parsed DWARF.
pub(crate) fn release_debug_info() {
    if PARSED.swap(false, Relaxed) {
        backtrace::clear_symbol_cache();
        symtab::clear();
    }
}

/// Whether a symbol name is a mangled Rust name (legacy `_ZN…E` or v0 `_R…`).
fn is_mangled(name: &str) -> bool {
    rustc_demangle::try_demangle(name).is_ok()
}

/// A name's path segments, split at the `::` outside any `<…>` (`<a::B as c::D>::f` is
/// `<a::B as c::D>`, `f`).
fn segments(name: &str) -> Vec<&str> {
    let b = name.as_bytes();
    let mut depth = 0i32;
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && b[i - 1] == b'-' => {}
            b'>' => depth -= 1,
            b':' if depth == 0 && b.get(i + 1) == Some(&b':') => {
                out.push(&name[start..i]);
                i += 2;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&name[start..]);
    out
}

/// A name without a path: what DWARF gives for functions under `line-tables-only`. Not the
/// compiler's own symbols (`__rust_alloc`, `__rdl_alloc`: the allocator shims keep those
/// names wherever they are inlined) nor addresses.
fn is_short(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('<')
        && !name.starts_with("0x")
        && !name.starts_with("__")
        && segments(name).len() == 1
}

/// A closure, async block or coroutine segment (`{closure#0}`, `{{closure}}`).
fn is_closure(segment: &str) -> bool {
    segment.starts_with('{')
}

/// The full name of the outermost frame of an address, from the mangled `symbols` enclosing
/// it, and the symbol used; `None` when DWARF's name is already a path or no symbol matches
/// it (symbols that alias another function's code).
pub(crate) fn qualify_outermost(dwarf: &str, symbols: &[String]) -> Option<(String, String)> {
    if !is_short(dwarf) {
        return None;
    }
    let short = super::labels::short_name(dwarf);
    symbols.iter().find_map(|mangled| {
        let full = format!("{:#}", rustc_demangle::demangle(mangled));
        let segs = segments(&full);
        let (&last, parent) = segs.split_last()?;
        let same =
            super::labels::short_name(last) == short || (is_closure(last) && is_closure(dwarf));
        if !same {
            return None;
        }
        if !is_closure(dwarf) || parent.is_empty() {
            return Some((full.clone(), mangled.clone()));
        }
        // DWARF's own closure segment: it has the index (`{closure#1}`) the legacy mangling
        // lacks (`{{closure}}`); generic arguments go, as the symbol has none.
        Some((format!("{}::{short}", parent.join("::")), mangled.clone()))
    })
}

/// The module path of a qualified function (`worker::main::{closure#0}` → `worker`,
/// `<worker::Cache>::insert` → `worker`); `None` when it has none.
fn module_of(function: &str) -> Option<String> {
    let mut segs = segments(function);
    while segs.last().is_some_and(|s| is_closure(s)) {
        segs.pop();
    }
    segs.pop()?;
    if let Some(first) = segs.first().copied().filter(|s| s.starts_with('<')) {
        // A method: the module of its type (`<a::B as c::D>` → `a`).
        let inner = first.trim_start_matches('<').trim_end_matches('>');
        let ty = inner.split(" as ").next().unwrap_or(inner);
        let mut ty_segs = segments(ty);
        ty_segs.pop()?;
        return (!ty_segs.is_empty()).then(|| ty_segs.join("::"));
    }
    (!segs.is_empty()).then(|| segs.join("::"))
}

/// The crate and module of a source file whose crate is known from its path: the standard
/// library (`/library/alloc/src/raw_vec/mod.rs` → `alloc::raw_vec`) and crates from a registry
/// or vendored (`/serde_json-1.0.140/src/de.rs` → `serde_json::de`).
fn module_of_file(file: &str) -> Option<String> {
    let (krate, rest) = if let Some(i) = file.find("/library/") {
        let rest = &file[i + "/library/".len()..];
        let (krate, rest) = rest.split_once("/src/")?;
        (krate.to_string(), rest)
    } else {
        // `<name>-<version>/src/…`: the last such directory in the path.
        let i = file.rfind("/src/")?;
        let dir = file[..i].rsplit('/').next()?;
        let (name, version) = dir.rsplit_once('-')?;
        if !version.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        (name.replace('-', "_"), &file[i + "/src/".len()..])
    };
    let rest = rest.strip_suffix(".rs")?;
    let rest = rest
        .strip_suffix("/mod")
        .or_else(|| (rest == "lib" || rest == "main").then_some(""))
        .unwrap_or(rest);
    let mut path = krate;
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        path.push_str("::");
        path.push_str(part);
    }
    Some(path)
}

/// Gives every short-named frame of a stack (innermost first, before trimming) a full name;
/// see the module docs for the rule.
pub(crate) fn qualify_inlined(frames: &mut [Frame]) {
    for i in (0..frames.len()).rev() {
        if !is_short(&frames[i].function) {
            continue;
        }
        // Generic arguments go (DWARF's short names carry them): the path is what matters.
        let name = super::labels::short_name(&frames[i].function);
        let file = frames[i].file.clone();
        let same_file = |f: &&Frame| {
            file.is_some() && f.file.as_ref() == file.as_ref() && !is_short(&f.function)
        };
        let parent = if is_closure(&name) {
            // The function a closure is written in calls (something that calls) it from a
            // line at or above the closure's code: of the outer frames of its file, the one
            // whose line comes closest before it. A function it was passed to that sits in the
            // same file calls it from elsewhere in that file.
            let line = frames[i].line;
            frames[i + 1..]
                .iter()
                .filter(same_file)
                .filter(|f| f.line.is_some() && f.line <= line)
                .max_by_key(|f| f.line)
                .or_else(|| frames[i + 1..].iter().find(same_file))
        } else {
            frames[i + 1..].iter().find(same_file)
        };
        let qualified = match parent {
            Some(p) if is_closure(&name) => Some(format!("{}::{name}", p.function)),
            Some(p) => module_of(&p.function).map(|m| format!("{m}::{name}")),
            None => None,
        };
        let qualified = qualified.or_else(|| {
            let file = file.as_deref()?;
            Some(match module_of_file(file) {
                Some(m) => format!("{m}::{name}"),
                None => format!("{name} [{}]", super::labels::short_file(file)),
            })
        });
        if let Some(q) = qualified {
            frames[i].function = q.into();
        }
    }
}

/// This crate's own sources: frames from them, inlined or not, are the tracker's hot path.
const OWN_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");

fn file_of(f: &Frame) -> &str {
    f.file.as_deref().unwrap_or("")
}

/// The symbols through which every allocation enters the global allocator (the shims rustc
/// generates; they keep their names even when inlined).
fn is_entry_point(f: &Frame) -> bool {
    let name = f.function.strip_prefix("__rustc::").unwrap_or(&f.function);
    const PREFIXES: &[&str] = &[
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The tracker's own code: by name, or by source file for inlined frames, which carry only a
/// short name.
fn is_own(f: &Frame) -> bool {
    is_own_name(&f.function) || file_of(f).starts_with(OWN_SRC)
}

/// Allocation plumbing between the allocator entry and the user's code: the standard library
/// (boxes, vectors, strings growing, `format!`, iterator adapters collecting, hash maps
/// resizing). Trimmed too, so the first frame is the user's code that asked for memory.
pub(crate) fn is_machinery(f: &Frame) -> bool {
    const NAMES: &[&str] = &[
        "alloc::",
        "<alloc::",
        "core::",
        "<core::",
        "std::",
        "<std::",
        "hashbrown::",
        "<hashbrown::",
    ];
    // Sources of the standard library as rustc records them (inlined frames have short
    // names, so the file decides): /rustc/<hash>/library/... and its vendored crates.
    const FILES: &[&str] = &[
        "/library/alloc/",
        "/library/core/",
        "/library/std/",
        "/rust/deps/",
    ];
    let name = f.function.strip_prefix("__rustc::").unwrap_or(&f.function);
    let file = file_of(f);
    is_entry_point(f)
        || is_own(f)
        || NAMES.iter().any(|p| name.starts_with(p))
        || FILES.iter().any(|p| file.contains(p))
}

/// Symbolized, trimmed frames of a captured stack (innermost first).
pub(crate) fn symbolize(ips: &[usize]) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(ips.len());
    for &ip in ips {
        out.extend(resolve_ip(ip).iter().cloned());
    }
    qualify_inlined(&mut out);
    trim(&mut out);
    out
}

/// Removes the allocator's own frames from the top of a stack and the runtime's from the
/// bottom. Keeps everything if nothing would be left (better than an empty stack).
pub(crate) fn trim(frames: &mut Vec<Frame>) {
    // The first allocator entry point marks the boundary: above it is allocscope's hot path
    // (and the std code it calls); below it, allocation plumbing, then the user's code. Only
    // the first one counts: the user's code itself runs inside `track_scope`, deeper down.
    // Without an entry point symbol, the last frame of the tracker's own code at the top is
    // the boundary.
    let entry = frames.iter().position(is_entry_point).or_else(|| {
        let top = frames.iter().position(|f| !is_own(f) && !is_std(f))?;
        top.checked_sub(1)
    });
    if let Some(entry) = entry {
        if let Some(first_user) = frames[entry..].iter().position(|f| !is_machinery(f)) {
            frames.drain(..entry + first_user);
        }
    }
    // Drop the runtime frames below `main` or a thread's entry (the same for every stack),
    // then the call glue left just above them.
    if let Some(entry) = frames.iter().position(is_program_entry) {
        frames.truncate(entry.max(1));
        while frames.len() > 1 && frames.last().is_some_and(is_library) {
            frames.pop();
        }
    }
    // Closure-call and unwinding glue between the user's frames (track_scope's catch_unwind,
    // FnOnce::call_once) says nothing about who allocated; keep the user's frames only.
    if frames.len() > 1 {
        let keep_one = frames.first().cloned();
        frames.retain(|f| !is_glue(f));
        if frames.is_empty() {
            frames.extend(keep_one);
        }
    }
}

/// Frames of the standard library (by name or source file).
pub(crate) fn is_library(f: &Frame) -> bool {
    let name = f.function.strip_prefix("__rustc::").unwrap_or(&f.function);
    [
        "core::", "<core::", "std::", "<std::", "alloc::", "<alloc::",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || ["/library/core/", "/library/std/", "/library/alloc/"]
            .iter()
            .any(|p| file_of(f).contains(p))
}

/// allocscope's scope plumbing and the std glue it calls the user's closure through.
fn is_glue(f: &Frame) -> bool {
    const FILES: &[&str] = &[
        "/library/std/src/panicking.rs",
        "/library/std/src/panic.rs",
        "/library/core/src/panic/unwind_safe.rs",
        "/library/core/src/ops/function.rs",
    ];
    let name = f.function.as_str();
    is_own(f)
        || name == "__rust_try"
        || name.starts_with("std::panicking::")
        || name.starts_with("std::panic::catch_unwind")
        || name.starts_with("core::ops::function::")
        || name.starts_with("<core::panic::unwind_safe::AssertUnwindSafe")
        || FILES.iter().any(|p| file_of(f).contains(p))
}

/// Standard library frames (the tracker's hot path calls into thread-locals).
fn is_std(f: &Frame) -> bool {
    f.function.starts_with("std::") || file_of(f).contains("/library/std/src/")
}

fn is_program_entry(f: &Frame) -> bool {
    let name = f.function.as_str();
    let file = file_of(f);
    name.starts_with("std::rt::lang_start")
        || name.starts_with("std::sys::backtrace::__rust_begin_short_backtrace")
        || file.contains("/library/std/src/rt.rs")
        || file.contains("/library/std/src/sys/backtrace.rs")
}

// ---------------------------------------------------------------------------------------------
// Frames of a memory check (`testing`): which are the test's, which the job's
// ---------------------------------------------------------------------------------------------

/// Whether `function` is one of the `caller` functions or a closure defined in one.
pub(crate) fn is_test_code(function: &str, caller: &[&str]) -> bool {
    caller.iter().any(|&g| {
        function
            .strip_prefix(g)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::{"))
    })
}

/// Whether a function is allocscope's own, by name.
pub(crate) fn is_own_name(function: &str) -> bool {
    function.starts_with("allocscope::") || function.starts_with("<allocscope::")
}

/// The instruction pointers of the calling thread's stack (the check's caller, the test, the
/// harness), to tell them from the job's frames in callsites.
pub(crate) fn caller_ips() -> Vec<usize> {
    let mut ips = Vec::with_capacity(64);
    backtrace::trace(|frame| {
        ips.push(frame.ip() as usize);
        ips.len() < 256
    });
    ips
}

/// The frames of a callsite that belong to the job: without the frames it shares, at the
/// bottom, with the stack that called the check (the test function and the harness), and
/// without allocscope's own frames below the job.
pub(crate) fn job_frames(mut frames: Vec<Frame>, caller: &[Frame]) -> Vec<Frame> {
    let shared = frames
        .iter()
        .rev()
        .zip(caller.iter().rev())
        .take_while(|(a, b)| a.function == b.function)
        .count();
    frames.truncate((frames.len() - shared).max(1));
    if let Some(end) = frames.iter().position(|f| {
        f.function.starts_with("allocscope::testing::")
            || f.function.starts_with("<allocscope::testing::")
    }) {
        frames.truncate(end.max(1));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(1),
        }
    }

    #[test]
    fn trims_hot_path_and_plumbing_including_inlined_frames() {
        let std_local = "/rustc/abc/library/std/src/thread/local.rs";
        let alloc_rs = "/rustc/abc/library/alloc/src/alloc.rs";
        let mut frames = vec![
            frame("capture", &format!("{OWN_SRC}callsite/capture.rs")),
            frame("{closure#0}", &format!("{OWN_SRC}alloc.rs")),
            frame("try_with<allocscope::thread::ThreadState>", std_local),
            frame("on_alloc", &format!("{OWN_SRC}alloc.rs")),
            frame("realloc<std::alloc::System>", &format!("{OWN_SRC}alloc.rs")),
            frame("__rust_realloc", "/work/app/src/main.rs"),
            frame("alloc::alloc::realloc", alloc_rs),
            frame(
                "<alloc::raw_vec::RawVecInner>::reserve",
                "/rustc/abc/library/alloc/src/raw_vec/mod.rs",
            ),
            frame(
                "<core::fmt::Formatter>::pad_integral",
                "/rustc/abc/library/core/src/fmt/mod.rs",
            ),
            frame("app::sync_customers", "/work/app/src/main.rs"),
            frame(
                "allocscope::scope::track_scope_run",
                &format!("{OWN_SRC}scope.rs"),
            ),
            frame("app::main", "/work/app/src/main.rs"),
            frame(
                "std::rt::lang_start::{{closure}}",
                "/rustc/abc/library/std/src/rt.rs",
            ),
        ];
        trim(&mut frames);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["app::sync_customers", "app::main"]);
    }

    #[test]
    fn the_enclosing_symbol_names_the_outermost_frame() {
        let closure = "_ZN6worker4main28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE";
        let main = "_ZN6worker4main17h0123456789abcdefE";
        // DWARF's closure index is kept; the symbol gives the path.
        assert_eq!(
            qualify_outermost("{closure#1}", &[closure.to_string()]),
            Some(("worker::main::{closure#1}".to_string(), closure.to_string()))
        );
        assert_eq!(
            qualify_outermost("main", &[main.to_string()]).unwrap().0,
            "worker::main"
        );
        // Generic arguments in DWARF's name do not stop the match.
        let collect = "_ZN4core4iter6traits8iterator8Iterator7collect17h0123456789abcdefE";
        assert_eq!(
            qualify_outermost("collect<alloc::vec::Vec<u8>>", &[collect.to_string()])
                .unwrap()
                .0,
            "core::iter::traits::iterator::Iterator::collect"
        );
        // Already a path, or a symbol of another function (aliased code): unchanged.
        assert_eq!(qualify_outermost("worker::main", &[main.to_string()]), None);
        assert_eq!(qualify_outermost("other", &[main.to_string()]), None);
        assert_eq!(qualify_outermost("main", &[]), None);
    }

    #[test]
    fn short_inlined_names_are_qualified_by_their_file() {
        let f = |name: &str, file: &str, line: u32| Frame {
            function: name.into(),
            file: Some(file.into()),
            line: Some(line),
        };
        let src = "/app/src/jobs.rs";
        let raw_vec = "/rustc/abc/library/alloc/src/raw_vec/mod.rs";
        // Innermost first: two closures of two functions, both called through `run` (same
        // file, defined above them), and a library function inlined.
        let mut frames = vec![
            f("grow_one<u8>", raw_vec, 10),
            f("{closure#0}", src, 31),
            f("app::jobs::run", src, 5),
            f("app::jobs::second", src, 30),
            f("{closure#0}<u64>", src, 21),
            f("app::jobs::run", src, 5),
            f("app::jobs::first", src, 20),
            f("helper", src, 90),
            f("app::main", "/app/src/main.rs", 3),
            f(
                "load",
                "/home/u/.cargo/registry/src/x/serde_json-1.0.1/src/de.rs",
                7,
            ),
            f("mystery", "/app/src/other.rs", 1),
        ];
        qualify_inlined(&mut frames);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "alloc::raw_vec::grow_one",
                "app::jobs::second::{closure#0}",
                "app::jobs::run",
                "app::jobs::second",
                "app::jobs::first::{closure#0}",
                "app::jobs::run",
                "app::jobs::first",
                "helper [src/jobs.rs]",
                "app::main",
                "serde_json::de::load",
                "mystery [src/other.rs]",
            ]
        );
        // Nested closures: the outer one is qualified first.
        let mut frames = vec![
            f("{closure#0}", src, 12),
            f("{closure#1}", src, 11),
            f("app::jobs::main", src, 10),
        ];
        qualify_inlined(&mut frames);
        assert_eq!(
            frames[0].function.as_str(),
            "app::jobs::main::{closure#1}::{closure#0}"
        );
        // The allocator shims keep their names.
        let mut frames = vec![f("__rust_alloc", src, 1), f("app::jobs::main", src, 2)];
        qualify_inlined(&mut frames);
        assert_eq!(frames[0].function.as_str(), "__rust_alloc");
    }

    #[test]
    fn modules_of_functions_and_files() {
        assert_eq!(
            module_of("worker::main::{closure#0}").as_deref(),
            Some("worker")
        );
        assert_eq!(
            module_of("<worker::Cache>::insert").as_deref(),
            Some("worker")
        );
        assert_eq!(
            module_of("<a::b::C as core::ops::Drop>::drop").as_deref(),
            Some("a::b")
        );
        assert_eq!(module_of("main"), None);
        assert_eq!(
            module_of_file("/rustc/h/library/core/src/iter/adapters/map.rs").as_deref(),
            Some("core::iter::adapters::map")
        );
        assert_eq!(
            module_of_file("/rustc/h/library/alloc/src/lib.rs").as_deref(),
            Some("alloc")
        );
        assert_eq!(
            module_of_file("/x/hashbrown-0.15.2/src/raw/mod.rs").as_deref(),
            Some("hashbrown::raw")
        );
        assert_eq!(module_of_file("/app/src/main.rs"), None);
        assert_eq!(segments("<a::B<T> as c::D>::f"), ["<a::B<T> as c::D>", "f"]);
        assert_eq!(segments("f::<fn() -> u8>::g"), ["f", "<fn() -> u8>", "g"]);
    }

    #[test]
    fn closures_of_the_calling_test_are_test_code() {
        let caller = ["tests::leaks", "test::run_test"];
        assert!(is_test_code("tests::leaks", &caller));
        assert!(is_test_code("tests::leaks::{{closure}}", &caller));
        assert!(!is_test_code("tests::leaks_more", &caller));
        assert!(!is_test_code("app::cache::insert", &caller));
    }

    #[test]
    fn a_checks_job_frames_stop_at_the_shared_caller_frames_and_the_check() {
        let f = |name: &str| frame(name, "src/x.rs");
        let caller = vec![f("tests::leaks"), f("test::run_test"), f("main")];
        let frames = vec![
            f("app::remember"),
            f("tests::leaks::{{closure}}"),
            f("allocscope::testing::check::MemoryCheck::run"),
            f("tests::leaks"),
            f("test::run_test"),
            f("main"),
        ];
        let names: Vec<String> = job_frames(frames, &caller)
            .into_iter()
            .map(|f| f.function.to_string())
            .collect();
        assert_eq!(names, ["app::remember", "tests::leaks::{{closure}}"]);
        // Never empty.
        assert_eq!(job_frames(vec![f("main")], &[f("main")]).len(), 1);
    }
}
