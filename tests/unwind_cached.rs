//! The caching unwinder (`Unwinder::Cached`), selected explicitly (this repository builds its
//! tests with frame pointers, so `Auto` would pick the frame-pointer walk):
//!
//! * its stacks equal libgcc's (`Unwinder::Dwarf`) for 24 stack shapes — each shape runs once
//!   under each unwinder, along the same code path, and the two jobs' callsites (symbolized
//!   frames and figures) must be identical;
//! * callsite figures in `Every` mode stay exact with it, with blocks freed on other threads;
//! * a stack through a C function without unwind information, in a library loaded with
//!   `dlopen` after the unwinder first ran, ends there (as libgcc's does) and never crashes;
//! * allocating in a signal handler (normal and alternate stack) and in a forked child works.
//!
//! The tests share the global unwinder setting, so they run one at a time (`SERIAL`).

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Mutex, MutexGuard};

use allocscope::{report, track_scope, TrackingAllocator, Unwinder, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::every();
    allocscope::set_max_frames(128);
    g
}

type Stack = Vec<(String, Option<String>, Option<u32>)>;

/// The callsites of `job` as (frames, allocated, retained), sorted.
fn callsites(job: &str) -> Vec<(Stack, Usage, Usage)> {
    let r = report();
    let Some(j) = r.job(job) else {
        panic!("no job {job}");
    };
    let mut v: Vec<_> = j
        .callsites
        .iter()
        .map(|c| {
            let frames = c
                .frames
                .iter()
                .map(|f| {
                    (
                        f.function.to_string(),
                        f.file.as_deref().map(str::to_string),
                        f.line,
                    )
                })
                .collect();
            (frames, c.allocated, c.retained)
        })
        .collect();
    v.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    v
}

/// Runs `shape` once with libgcc and once with the caching unwinder, along the same code path,
/// and checks that both record the same callsites, with a frame named `marker` in at least one.
fn same_stacks(name: &str, marker: &str, shape: &dyn Fn()) {
    let mut seen = Vec::new();
    for (label, unwinder) in [("dwarf", Unwinder::Dwarf), ("cached", Unwinder::Cached)] {
        allocscope::set_unwinder(unwinder);
        let job = format!("{name}_{label}");
        let fallbacks = report().tracker.unwinder_fallbacks;
        track_scope(&job, shape);
        allocscope::set_unwinder(Unwinder::Auto);
        assert_eq!(
            report().tracker.unwinder_fallbacks,
            fallbacks,
            "{name}: the caching unwinder fell back to libgcc"
        );
        seen.push(callsites(&job));
    }
    let (dwarf, cached) = (&seen[0], &seen[1]);
    assert!(!cached.is_empty(), "{name}: no callsite recorded");
    assert!(
        cached
            .iter()
            .any(|(frames, ..)| frames.iter().any(|f| f.0.contains(marker))),
        "{name}: no frame named {marker}: {cached:#?}"
    );
    if dwarf != cached {
        let show = |v: &[(Stack, Usage, Usage)]| {
            v.iter()
                .map(|(frames, a, r)| {
                    let f: Vec<String> = frames
                        .iter()
                        .map(|f| format!("{} ({:?})", f.0, f.2))
                        .collect();
                    format!("{a:?} {r:?}\n    {}", f.join("\n    "))
                })
                .collect::<Vec<_>>()
                .join("\n  ---\n")
        };
        panic!(
            "{name}: stacks differ\nlibgcc:\n  {}\ncached:\n  {}",
            show(dwarf),
            show(cached)
        );
    }
}

#[inline(never)]
fn leaf() {
    black_box(Box::new([1u8; 48]));
}

#[inline(never)]
fn recurse(depth: usize) {
    if depth == 0 {
        leaf();
    } else {
        recurse(black_box(depth - 1));
        black_box(depth);
    }
}

#[inline(never)]
fn ping(n: usize) {
    if n == 0 {
        leaf()
    } else {
        pong(n - 1)
    }
    black_box(n);
}

#[inline(never)]
fn pong(n: usize) {
    if n == 0 {
        leaf()
    } else {
        ping(n - 1)
    }
    black_box(n);
}

#[inline(never)]
fn with_closure<F: FnOnce() -> Vec<u64>>(f: F) {
    black_box(f());
}

#[inline(never)]
fn generic_alloc<T: Clone + Default>(n: usize) -> Vec<T> {
    black_box(vec![T::default(); n])
}

#[inline(always)]
fn inlined_c() {
    black_box(Box::new([3u8; 72]));
}

#[inline(always)]
fn inlined_b() {
    inlined_c();
}

#[inline(never)]
fn inlined_a() {
    inlined_b();
    black_box(1);
}

trait Shape {
    fn make(&self) -> Box<[u8]>;
}

struct Square(usize);

impl Shape for Square {
    #[inline(never)]
    fn make(&self) -> Box<[u8]> {
        vec![5u8; self.0].into_boxed_slice()
    }
}

struct AllocOnDrop;

impl Drop for AllocOnDrop {
    #[inline(never)]
    fn drop(&mut self) {
        black_box(vec![9u8; 33]);
    }
}

struct Shown(u32);

impl std::fmt::Display for Shown {
    #[inline(never)]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = black_box(format!("<{}>", self.0));
        f.write_str(&inner)
    }
}

#[inline(never)]
fn big_frame() {
    let mut big = [0u8; 64 * 1024];
    black_box(&mut big);
    leaf();
    black_box(&big);
}

#[inline(never)]
fn through_fn_pointer(f: fn()) {
    f();
    black_box(());
}

extern "C" fn c_abi_callback() {
    leaf();
}

#[inline(never)]
fn through_c_abi(f: extern "C" fn()) {
    f();
    black_box(());
}

#[test]
fn stacks_equal_libgcc_for_many_shapes() {
    let _g = serial();
    same_stacks("leaf", "leaf", &leaf);
    same_stacks("recursion5", "recurse", &|| recurse(5));
    same_stacks("recursion40", "recurse", &|| recurse(40));
    same_stacks("mutual", "ping", &|| ping(7));
    same_stacks("closure", "with_closure", &|| {
        let base = black_box(3u64);
        with_closure(move || (0..base).collect())
    });
    same_stacks("boxed_dyn_fn", "unwind_cached", &|| {
        let f: Box<dyn Fn()> = Box::new(leaf);
        f();
    });
    same_stacks("generic_u8", "generic_alloc", &|| {
        generic_alloc::<u8>(100);
    });
    same_stacks("generic_string", "generic_alloc", &|| {
        generic_alloc::<String>(10);
    });
    same_stacks("inlined", "inlined", &inlined_a);
    same_stacks("iterator", "unwind_cached", &|| {
        let v: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        black_box(v);
    });
    same_stacks("trait_object", "make", &|| {
        let s: &dyn Shape = black_box(&Square(17));
        black_box(s.make());
    });
    same_stacks("drop_glue", "drop", &|| drop(black_box(AllocOnDrop)));
    same_stacks("catch_unwind", "leaf", &|| {
        let _ = std::panic::catch_unwind(leaf);
    });
    same_stacks("sort_comparator", "leaf", &|| {
        let mut v = vec![3, 1, 2];
        let mut first = true;
        v.sort_by(|a, b| {
            if first {
                first = false;
                leaf();
            }
            a.cmp(b)
        });
        black_box(v);
    });
    same_stacks("hashmap_entry", "leaf", &|| {
        let mut m: HashMap<u32, u32> = HashMap::new();
        m.entry(1).or_insert_with(|| {
            leaf();
            2
        });
        black_box(m);
    });
    same_stacks("display", "fmt", &|| {
        black_box(Shown(42).to_string());
    });
    same_stacks("big_frame", "big_frame", &big_frame);
    same_stacks("fn_pointer", "through_fn_pointer", &|| {
        through_fn_pointer(leaf)
    });
    same_stacks("extern_c", "c_abi_callback", &|| {
        through_c_abi(c_abi_callback)
    });
    same_stacks("std_thread", "leaf", &|| {
        allocscope::spawn(leaf).join().unwrap();
    });
    // The scoped thread itself runs outside the job: the job records the spawn.
    same_stacks("scoped_thread", "scope", &|| {
        std::thread::scope(|s| {
            s.spawn(leaf);
        });
    });
    same_stacks("once", "leaf", &|| {
        let once = std::sync::Once::new();
        once.call_once(leaf);
    });
    same_stacks("option_map", "leaf", &|| {
        black_box(Some(1).map(|x| {
            leaf();
            x + 1
        }));
    });
    // A tokio task on a worker thread: the job is entered inside the task.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for (label, unwinder) in [("dwarf", Unwinder::Dwarf), ("cached", Unwinder::Cached)] {
        allocscope::set_unwinder(unwinder);
        let job = format!("tokio_task_{label}");
        let j = job.clone();
        rt.block_on(rt.spawn(async move { track_scope(&j, leaf) }))
            .unwrap();
        allocscope::set_unwinder(Unwinder::Auto);
        seen.push(callsites(&job));
    }
    assert!(!seen[1].is_empty() && seen[1][0].0.iter().any(|f| f.0.contains("leaf")));
    assert_eq!(seen[0], seen[1], "tokio task: stacks differ");
}

// Individual boxes are the point: each is one allocation at this callsite.
#[allow(clippy::vec_box)]
#[inline(never)]
fn keep_some(n: usize) -> Vec<Box<[u8; 24]>> {
    (0..n).map(|_| black_box(Box::new([7u8; 24]))).collect()
}

#[test]
fn callsite_figures_stay_exact() {
    let _g = serial();
    allocscope::set_unwinder(Unwinder::Cached);
    let kept = track_scope("cached_exact", || {
        let handles: Vec<_> = (0..4)
            .map(|_| allocscope::spawn(|| keep_some(2500)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    // Free half of the blocks on other threads, after the scope ended.
    let mut kept = kept.into_iter();
    let freed: Vec<_> = kept.by_ref().take(2).collect();
    std::thread::spawn(move || drop(freed)).join().unwrap();
    let r = report();
    let job = r.job("cached_exact").unwrap();
    let boxes: Usage = job
        .callsites
        .iter()
        .filter(|c| c.top_function().contains("keep_some") && c.allocated.bytes % 24 == 0)
        .filter(|c| c.allocated.objects >= 2500)
        .fold(Usage::default(), |a, c| a + c.allocated);
    assert_eq!(boxes, Usage::new(10_000, 240_000), "{:#?}", job.callsites);
    let live: Usage = job
        .callsites
        .iter()
        .filter(|c| c.top_function().contains("keep_some") && c.allocated.objects >= 2500)
        .fold(Usage::default(), |a, c| a + c.retained);
    assert_eq!(live, Usage::new(5_000, 120_000));
    let site_total = job
        .callsites
        .iter()
        .fold(Usage::default(), |a, c| a + c.allocated);
    assert_eq!(site_total, job.allocated, "every block has a callsite");
    drop(kept);
    allocscope::set_unwinder(Unwinder::Auto);
}

extern "C" fn on_signal(_: libc::c_int) {
    // Raised synchronously by `raise`, outside any allocator call.
    track_scope("cached_signal", || black_box(Box::new([4u8; 100])));
}

#[test]
fn signal_handlers_on_either_stack() {
    let _g = serial();
    allocscope::set_unwinder(Unwinder::Cached);
    let mut alt = vec![0u8; 256 * 1024];
    // SAFETY: plain libc calls with valid, initialised arguments; the handler is a valid
    // `extern "C" fn(c_int)`; the alternate stack outlives its registration.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        // On this thread's own stack: the unwind goes through the signal frame.
        assert_eq!(libc::raise(libc::SIGUSR2), 0);
        // On an alternate stack.
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: alt.len(),
        };
        assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
        sa.sa_flags = libc::SA_ONSTACK;
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::raise(libc::SIGUSR2), 0);
        let disable = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        assert_eq!(libc::sigaltstack(&disable, std::ptr::null_mut()), 0);
    }
    drop(alt);
    allocscope::set_unwinder(Unwinder::Auto);
    let r = report();
    let job = r.job("cached_signal").unwrap();
    assert_eq!(job.allocated, Usage::new(2, 200));
    let site: Usage = job
        .callsites
        .iter()
        .fold(Usage::default(), |a, c| a + c.allocated);
    assert_eq!(site, Usage::new(2, 200));
    assert!(job
        .callsites
        .iter()
        .all(|c| c.frames.iter().any(|f| f.function.contains("on_signal"))));
}

#[test]
fn forked_child_unwinds() {
    let _g = serial();
    allocscope::set_unwinder(Unwinder::Cached);
    track_scope("cached_before_fork", leaf);
    // SAFETY: the child only allocates, records and exits with `_exit`; no lock is held by
    // this thread at the fork (SERIAL is only held, not being acquired).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            track_scope("cached_in_child", || recurse(10));
            let r = report();
            let j = r.job("cached_in_child").expect("child job");
            j.callsites
                .iter()
                .any(|c| c.frames.iter().any(|f| f.function.contains("recurse")))
        });
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
    }
    assert!(pid > 0);
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    allocscope::set_unwinder(Unwinder::Auto);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
}

/// Builds `libNAME.so` from a C function compiled without unwind information and without
/// frame pointers; with `with_fdes`, the library also gets a function that has unwind
/// information, so it has an `.eh_frame_hdr` in which `call_back` has no entry. `None` when
/// there is no C compiler.
fn c_library(dir: &std::path::Path, name: &str, with_fdes: bool) -> Option<std::path::PathBuf> {
    let cc = |args: &[&str]| -> Option<()> {
        match std::process::Command::new("cc").args(args).status() {
            Ok(s) if s.success() => Some(()),
            Ok(s) => panic!("cc {args:?} failed: {s}"),
            Err(e) => {
                common::missing_tool("a C compiler (`cc`)", &e.to_string(), "gcc");
                None
            }
        }
    };
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(
        p("nounwind.c"),
        "void call_back(void (*f)(void)) { volatile int x = 1; f(); x += 1; }\n",
    )
    .unwrap();
    std::fs::write(p("helper.c"), "int helper(int x) { return x * 3 + 1; }\n").unwrap();
    let nounwind_o = p(&format!("{name}_nounwind.o"));
    cc(&[
        "-O1",
        "-c",
        "-fPIC",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-fomit-frame-pointer",
        "-fno-optimize-sibling-calls",
        "-o",
        &nounwind_o,
        &p("nounwind.c"),
    ])?;
    let lib = p(&format!("lib{name}.so"));
    let mut link = vec!["-shared", "-o", &lib, &nounwind_o];
    let helper_o = p(&format!("{name}_helper.o"));
    if with_fdes {
        cc(&[
            "-O1",
            "-c",
            "-fPIC",
            "-fasynchronous-unwind-tables",
            "-o",
            &helper_o,
            &p("helper.c"),
        ])?;
        link.push(&helper_o);
    }
    cc(&link)?;
    Some(lib.into())
}

/// `call_back` from a library built by `c_library`, loaded with `dlopen`.
fn load_call_back(lib: &std::path::Path) -> extern "C" fn(extern "C" fn()) {
    let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: loads a library we just built, whose `call_back` has the signature we cast to.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!h.is_null(), "dlopen failed");
        let sym = libc::dlsym(h, c"call_back".as_ptr());
        assert!(!sym.is_null());
        std::mem::transmute::<*mut libc::c_void, extern "C" fn(extern "C" fn())>(sym)
    }
}

/// A C function compiled without unwind information (and without frame pointers), in a
/// library loaded with `dlopen` after the unwinder first ran: the stack through it ends there
/// with both unwinders, and the figures stay exact. Both kinds: a library with no unwind
/// tables at all, and one whose tables lack only that function.
#[test]
fn c_frame_without_unwind_info_ends_the_stack() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // Let the caching unwinder build its module list before the libraries exist.
    allocscope::set_unwinder(Unwinder::Cached);
    track_scope("before_dlopen", leaf);
    allocscope::set_unwinder(Unwinder::Auto);
    for (name, with_fdes) in [("no_tables", false), ("no_fde", true)] {
        let Some(lib) = c_library(dir.path(), name, with_fdes) else {
            return;
        };
        let call_back = load_call_back(&lib);
        let job = format!("c_{name}");
        same_stacks(&job, "c_abi_callback", &|| call_back(c_abi_callback));
        let r = report();
        let j = r.job(&format!("{job}_cached")).unwrap();
        assert_eq!(j.allocated, Usage::new(1, 48), "{name}");
        // The stack ends at the C frame: nothing of the caller below it.
        assert!(
            j.callsites
                .iter()
                .all(|c| !c.frames.iter().any(|f| f.function.contains("same_stacks"))),
            "{name}: {:#?}",
            j.callsites
        );
    }
}
