//! Feature `malloc`: C allocations charged to jobs, exactly.
//!
//! Real C code: `tests/c/heap_job.c` compiled at test time with the `cc` crate into a shared
//! library loaded with `dlopen` (after start-up), libc's own allocations (`strdup`), glibc
//! blocks that did not come through the interposer, the aligned family, frees on other
//! threads and outside the job, `fork()`, and 8 threads mixing Rust and C blocks.
//! The SQLite test is in `tests/c_heap_sqlite.rs` (its own process: SQLite's figures are
//! process-wide).
//!
//! Runs in its own `cargo test --features malloc` invocation (see `.ci/run`): with the
//! feature, C allocations made by the test harness and by glibc itself (thread creation) are
//! counted too, which the rest of the suite's exact figures do not expect.

use std::ffi::c_void;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::OnceLock;

use allocscope::{report, track_scope, StackMode, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

extern "C" {
    // glibc's own entry points: blocks that never pass through the interposer.
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    // Not declared by the libc crate.
    fn valloc(size: usize) -> *mut c_void;
    fn pvalloc(size: usize) -> *mut c_void;
}

type HeapJob = unsafe extern "C" fn(*mut *mut c_void) -> i32;
type FreeOnThread = unsafe extern "C" fn(*mut c_void) -> i32;
type CFree = unsafe extern "C" fn(*mut c_void);
type CMalloc = unsafe extern "C" fn(usize) -> *mut c_void;

/// The C library's functions.
struct CLib {
    heap_job: HeapJob,
    free_on_thread: FreeOnThread,
    c_free: CFree,
    c_malloc: CMalloc,
    leaky_c_callsite: CMalloc,
}

fn target() -> String {
    let arch = if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else {
        "aarch64"
    };
    format!("{arch}-unknown-linux-gnu")
}

/// Compiles `tests/c/heap_job.c` with the `cc` crate into a shared library and loads it with
/// `dlopen` (once per process).
fn clib() -> &'static CLib {
    static LIB: OnceLock<CLib> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_heap");
        std::fs::create_dir_all(&dir).unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/heap_job.c");
        let mut build = cc::Build::new();
        build
            .file(&src)
            .target(&target())
            .host(&target())
            .opt_level(1)
            .debug(true)
            .pic(true)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .flag("-fno-omit-frame-pointer")
            .out_dir(&dir);
        let objects = build.compile_intermediates();
        let so = dir.join(format!("libheap_job_{}.so", std::process::id()));
        let status = build
            .get_compiler()
            .to_command()
            .arg("-shared")
            .arg("-o")
            .arg(&so)
            .args(&objects)
            .arg("-lpthread")
            .status()
            .unwrap();
        assert!(status.success(), "linking {so:?}");
        let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
        // SAFETY: loading a library we just built; it stays loaded for the process.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!h.is_null(), "dlopen {so:?}");
        let sym = |name: &str| {
            let n = std::ffi::CString::new(name).unwrap();
            // SAFETY: a loaded library and a NUL-terminated name.
            let p = unsafe { libc::dlsym(h, n.as_ptr()) };
            assert!(!p.is_null(), "{name}");
            p
        };
        // SAFETY: each symbol is the C function of that name in heap_job.c, with the
        // signature written here.
        unsafe {
            CLib {
                heap_job: std::mem::transmute::<*mut c_void, HeapJob>(sym("heap_job")),
                free_on_thread: std::mem::transmute::<*mut c_void, FreeOnThread>(sym(
                    "free_on_thread",
                )),
                c_free: std::mem::transmute::<*mut c_void, CFree>(sym("c_free")),
                c_malloc: std::mem::transmute::<*mut c_void, CMalloc>(sym("c_malloc")),
                leaky_c_callsite: std::mem::transmute::<*mut c_void, CMalloc>(sym(
                    "leaky_c_callsite",
                )),
            }
        }
    })
}

fn job(name: &str) -> (Usage, Usage) {
    let r = report();
    let j = r.job(name).unwrap_or_else(|| panic!("job {name}"));
    (j.allocated, j.retained)
}

fn setup() {
    allocscope::set_stack_mode(StackMode::Every);
    assert!(allocscope::is_installed());
}

#[test]
fn c_file_allocations_are_charged_exactly() {
    setup();
    let lib = clib();
    let mut kept = [std::ptr::null_mut::<c_void>(); 3];
    let rc = track_scope("c_file_job", || {
        // SAFETY: `kept` has room for the three pointers the function stores.
        unsafe { (lib.heap_job)(kept.as_mut_ptr()) }
    });
    assert_eq!(rc, 0);
    let (allocated, retained) = job("c_file_job");
    assert_eq!(
        allocated,
        Usage::new(5, 1074),
        "malloc, calloc, realloc, strdup, posix_memalign"
    );
    assert_eq!(retained, Usage::new(3, 774));
    // The C callsites are named: the strdup'd block's stack goes through heap_job.
    let r = report();
    let j = r.job("c_file_job").unwrap();
    assert!(
        j.callsites
            .iter()
            .any(|c| c.frames.iter().any(|f| f.function.contains("heap_job"))),
        "{:#?}",
        j.callsites
    );
    // malloc_usable_size answers for our block: its requested size.
    // SAFETY: a live block of ours.
    assert_eq!(unsafe { libc::malloc_usable_size(kept[1]) }, 18);
    // One block freed outside the job, one on another thread (inside another job: a free is
    // charged back to the block's own job whatever the current one), one by Rust code
    // through libc's free.
    // SAFETY: each kept block is freed once.
    unsafe { (lib.c_free)(kept[0]) };
    let rc = track_scope("c_other_job", || {
        // SAFETY: as above.
        unsafe { (lib.free_on_thread)(kept[1]) }
    });
    assert_eq!(rc, 0);
    // SAFETY: as above.
    unsafe { libc::free(kept[2]) };
    let (allocated, retained) = job("c_file_job");
    assert_eq!(allocated, Usage::new(5, 1074));
    assert_eq!(retained, Usage::new(0, 0));
}

#[test]
fn rust_blocks_are_counted_once() {
    setup();
    let kept = track_scope("rust_only_job", || {
        let v: Vec<u8> = black_box(vec![1u8; 1000]);
        let mut s = String::with_capacity(10);
        s.push_str("abc");
        let grown = {
            let mut g = Vec::<u64>::with_capacity(4);
            g.extend_from_slice(&[1, 2, 3, 4, 5]);
            g
        };
        (v, s, grown)
    });
    let (allocated, retained) = job("rust_only_job");
    // 1000 + 10 + 32, then the realloc to 8 × 8 = 64 (a free of 32 and an alloc of 64).
    assert_eq!(allocated, Usage::new(4, 1000 + 10 + 32 + 64));
    assert_eq!(retained, Usage::new(3, 1000 + 10 + 64));
    drop(kept);
    assert_eq!(job("rust_only_job").1, Usage::new(0, 0));
}

#[test]
fn libc_allocations_and_the_whole_family() {
    setup();
    let kept = track_scope("libc_family_job", || unsafe {
        // SAFETY: plain C calls with valid arguments; every result is checked below and
        // freed once.
        let dup = libc::strdup(c"twelve bytes".as_ptr()).cast::<c_void>();
        let m = libc::memalign(128, 40);
        let a = libc::aligned_alloc(32, 64);
        let v = valloc(10);
        let pv = pvalloc(10);
        let ra = libc::reallocarray(std::ptr::null_mut(), 3, 7);
        let z = libc::malloc(0);
        // A memalign'd block grown by realloc (moved: glibc would not keep the alignment).
        let m2 = libc::realloc(libc::memalign(64, 16), 48);
        [dup, m, a, v, pv, ra, z, m2]
    });
    for p in kept {
        assert!(!p.is_null());
    }
    assert_eq!(kept[1] as usize % 128, 0);
    assert_eq!(kept[2] as usize % 32, 0);
    assert_eq!(kept[3] as usize % 4096, 0);
    assert_eq!(kept[4] as usize % 4096, 0);
    let (allocated, retained) = job("libc_family_job");
    // 13 + 40 + 64 + 10 + 4096 + 21 + 0 + 16 (the memalign'd block) + 48 (its move).
    assert_eq!(
        allocated,
        Usage::new(9, 13 + 40 + 64 + 10 + 4096 + 21 + 16 + 48)
    );
    assert_eq!(retained, Usage::new(8, 13 + 40 + 64 + 10 + 4096 + 21 + 48));
    // realloc to 0 frees (glibc's behaviour); the rest with free.
    // SAFETY: each block freed once.
    unsafe {
        assert!(libc::realloc(kept[0], 0).is_null());
        for p in &kept[1..] {
            libc::free(*p);
        }
    }
    assert_eq!(job("libc_family_job").1, Usage::new(0, 0));
    // Overflowing sizes fail without counting anything.
    let failed = track_scope("overflow_job", || unsafe {
        // SAFETY: calls that must fail and return null.
        [
            libc::calloc(usize::MAX / 2, 3).is_null(),
            libc::reallocarray(std::ptr::null_mut(), usize::MAX / 2, 3).is_null(),
            libc::malloc(usize::MAX - 8).is_null(),
        ]
    });
    assert_eq!(failed, [true; 3]);
    assert_eq!(job("overflow_job").0, Usage::new(0, 0));
}

#[test]
fn blocks_from_outside_the_interposer_are_never_miscounted() {
    setup();
    let outside = track_scope("foreign_job", || unsafe {
        // SAFETY: glibc's own allocations, bypassing the interposer.
        [
            __libc_malloc(100),
            __libc_memalign(64, 100),
            __libc_malloc(1 << 20), // mmapped by glibc
        ]
    });
    assert_eq!(
        job("foreign_job").0,
        Usage::new(0, 0),
        "not ours: not counted"
    );
    track_scope("foreign_job", || unsafe {
        // SAFETY: live glibc blocks; the interposer must hand them to glibc untouched.
        assert!(libc::malloc_usable_size(outside[0]) >= 100);
        assert!(libc::malloc_usable_size(outside[2]) >= 1 << 20);
        let grown = libc::realloc(outside[0], 5000);
        assert!(!grown.is_null());
        libc::free(grown);
        libc::free(outside[1]);
        libc::free(outside[2]);
    });
    let (allocated, retained) = job("foreign_job");
    assert_eq!((allocated, retained), (Usage::new(0, 0), Usage::new(0, 0)));
}

#[test]
fn c_leak_is_found_by_its_c_callsite() {
    setup();
    let lib = clib();
    let leaked = track_scope("c_leaky_job", || {
        // SAFETY: plain C allocations, freed below.
        let keep = unsafe { (lib.leaky_c_callsite)(4096) };
        let tmp = unsafe { (lib.c_malloc)(64) };
        unsafe { (lib.c_free)(tmp) };
        keep
    });
    let r = report();
    let j = r.job("c_leaky_job").unwrap();
    assert_eq!(j.retained, Usage::new(1, 4096));
    let site = j
        .callsites
        .iter()
        .find(|c| c.retained.bytes == 4096)
        .expect("the leak's callsite");
    assert!(
        site.frames
            .first()
            .is_some_and(|f| f.function.starts_with("leaky_c_callsite")),
        "the first frame is the C function that called malloc: {:#?}",
        site.frames
    );
    // SAFETY: freed once.
    unsafe { (lib.c_free)(leaked) };
}

#[test]
fn eight_threads_mix_rust_and_c_for_a_million_operations() {
    setup();
    const THREADS: usize = 8;
    const OPS: usize = 1_000_000 / THREADS;
    // Each thread: a fixed pseudo-random sequence of Rust and C allocations and frees, its own
    // ledger of what it allocated and what it still holds; the holdings of each thread are
    // freed by another thread after all have finished, outside any job.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                // Room for every live block, allocated before the job (not in its figures).
                let mut live: Vec<(usize, usize, bool)> = Vec::with_capacity(1024);
                let mut ledger = (0u64, 0u64); // (objects, bytes) allocated
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
                track_scope("mixed_job", || {
                    for _ in 0..OPS {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let size = 1 + (rng % 512) as usize;
                        if live.len() == live.capacity() || (rng >> 40) % 3 == 0 {
                            if let Some((p, n, c)) = live.pop() {
                                free_block(p, n, c);
                            }
                            continue;
                        }
                        let c = (rng >> 20) & 1 == 1;
                        let p = alloc_block(size, c);
                        ledger.0 += 1;
                        ledger.1 += size as u64;
                        live.push((p, size, c));
                    }
                });
                (ledger, live)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let allocated = results
        .iter()
        .fold((0, 0), |a, ((o, b), _)| (a.0 + o, a.1 + b));
    let held: (u64, u64) = results
        .iter()
        .flat_map(|(_, l)| l.iter())
        .fold((0, 0), |a, &(_, n, _)| (a.0 + 1, a.1 + n as u64));
    let (a, r) = job("mixed_job");
    assert_eq!(a, Usage::new(allocated.0, allocated.1));
    assert_eq!(r, Usage::new(held.0, held.1));
    assert!(held.0 > 0 && results.iter().all(|(_, l)| l.iter().any(|b| b.2)));
    // Every thread's holdings freed by other threads, outside the job.
    let frees: Vec<_> = results
        .into_iter()
        .map(|(_, live)| {
            std::thread::spawn(move || {
                for (p, n, c) in live {
                    free_block(p, n, c);
                }
            })
        })
        .collect();
    for f in frees {
        f.join().unwrap();
    }
    assert_eq!(job("mixed_job").1, Usage::new(0, 0));
}

fn alloc_block(size: usize, c: bool) -> usize {
    if c {
        // SAFETY: plain malloc, freed by `free_block`.
        let p = unsafe { libc::malloc(size) };
        assert!(!p.is_null());
        p as usize
    } else {
        let b: Box<[u8]> = vec![0u8; size].into_boxed_slice();
        Box::into_raw(b) as *mut u8 as usize
    }
}

fn free_block(p: usize, size: usize, c: bool) {
    if c {
        // SAFETY: a block from `alloc_block`'s malloc, freed once.
        unsafe { libc::free(p as *mut c_void) };
    } else {
        // SAFETY: the box `alloc_block` made, of `size` bytes, dropped once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut u8, size)) });
    }
}

#[test]
fn a_forked_child_counts_its_c_blocks() {
    setup();
    // SAFETY: the child only allocates, reports and exits with `_exit`; allocscope's fork
    // handlers make its locks usable in the child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let p = track_scope("forked_c_job", || unsafe {
            // SAFETY: plain C allocations; the second is freed in the job.
            let p = libc::malloc(300);
            libc::free(libc::strdup(c"seven!".as_ptr()).cast());
            p
        });
        let r = report();
        let ok = r.job("forked_c_job").map(|j| (j.allocated, j.retained))
            == Some((Usage::new(2, 307), Usage::new(1, 300)));
        // SAFETY: freed once; `_exit` skips the parent's atexit handlers.
        unsafe {
            libc::free(p);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's figures were exact"
    );
}
