//! The RSS breakdown on a process where each part is known: a Rust heap, a C heap (plain
//! `malloc`, past the tracker), freed memory glibc keeps, touched thread stacks, a mapped file
//! read through, and an anonymous map. Each part must grow by what was added (within a few
//! MiB of what the tracker's own report and the test harness move meanwhile), and the parts
//! must add up to RSS within the documented tolerance.
//!
//! One test in its own binary, so no other test's allocations move the RSS meanwhile.

use std::hint::black_box;
use std::io::Write as _;
use std::sync::{Arc, Barrier};

use allocscope::{report, track_scope, RssBreakdown, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const MIB: u64 = 1 << 20;

/// The documented tolerance between the parts' sum and `rss_bytes`.
fn tolerance(rss: u64) -> u64 {
    (rss / 100).max(MIB)
}

fn breakdown() -> (u64, RssBreakdown) {
    let r = report();
    let p = &r.process;
    let b = p.breakdown.expect("a breakdown on linux-gnu");
    let sum = b.total_bytes();
    assert!(
        sum.abs_diff(p.rss_bytes) <= tolerance(p.rss_bytes),
        "the parts add up to RSS: sum {sum} vs RSS {} ({b:?})",
        p.rss_bytes
    );
    (p.rss_bytes, b)
}

/// Touches every page of `len` bytes at `p`.
fn touch(p: *mut u8, len: usize) {
    for off in (0..len).step_by(4096) {
        // SAFETY: callers pass blocks of at least `len` writable bytes.
        unsafe { p.add(off).write_volatile(1) };
    }
}

#[test]
fn each_part_grows_by_what_was_added() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        eprintln!("skipped: the breakdown needs glibc malloc and /proc/self/smaps");
        return;
    }
    allocscope::set_stack_mode(allocscope::StackMode::Off);
    // Warm up everything a report allocates once (tables, caches), so the baseline has them.
    let _ = report();
    let (_, before) = breakdown();

    // Rust heap: 32 MiB in 8 KiB vectors (arena chunks), every page written.
    let rust: Vec<Vec<u8>> = track_scope("rust_part", || {
        (0..4096).map(|i| black_box(vec![i as u8; 8192])).collect()
    });
    // C heap: 32 MiB of 16 KiB blocks from plain malloc (not tracked), every page written.
    let c_blocks: Vec<usize> = (0..2048)
        .map(|_| {
            // SAFETY: plain malloc; the block is written within its size and freed below.
            let p = unsafe { libc::malloc(16 << 10) }.cast::<u8>();
            assert!(!p.is_null());
            touch(p, 16 << 10);
            p as usize
        })
        .collect();
    // Freed, not returned: 48 MiB of 4 KiB blocks, all freed but the last (which keeps the
    // free space away from the top of the heap, so glibc cannot trim it).
    let freed: Vec<usize> = (0..12288)
        .map(|_| {
            // SAFETY: as above.
            let p = unsafe { libc::malloc(4000) }.cast::<u8>();
            assert!(!p.is_null());
            touch(p, 4000);
            p as usize
        })
        .collect();
    for &p in &freed[..freed.len() - 1] {
        // SAFETY: each block came from malloc above and is freed once.
        unsafe { libc::free(p as *mut libc::c_void) };
    }
    // Thread stacks: 4 threads with 8 MiB stacks, 4 MiB of each written, alive while the
    // report is taken.
    let ready = Arc::new(Barrier::new(5));
    let done = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (ready, done) = (ready.clone(), done.clone());
            std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn(move || {
                    let mut buf = [0u8; 4 << 20];
                    touch(black_box(buf.as_mut_ptr()), buf.len());
                    black_box(&mut buf);
                    ready.wait();
                    done.wait();
                    black_box(&buf);
                })
                .unwrap()
        })
        .collect();
    ready.wait();
    // File-backed: a 16 MiB file, mapped and read through.
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&vec![7u8; 16 << 20]).unwrap();
    file.flush().unwrap();
    use std::os::fd::AsRawFd as _;
    // SAFETY: a private read-only map of a file we own, of its length; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            16 << 20,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let mut sum = 0u64;
    for off in (0..16usize << 20).step_by(4096) {
        // SAFETY: inside the 16 MiB map.
        sum += u64::from(unsafe { map.cast::<u8>().add(off).read_volatile() });
    }
    assert_eq!(sum, 7 * 4096);
    // Other anonymous: an 8 MiB anonymous map made without malloc, every page written.
    // SAFETY: a fresh private anonymous map; unmapped below.
    let anon = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(anon, libc::MAP_FAILED);
    touch(anon.cast(), 8 << 20);

    let (rss, after) = breakdown();
    println!("before: {before:?}\nafter:  {after:?}\nRSS {rss}");
    let grew = |name: &str, a: u64, b: u64, expected: u64, slack: u64| {
        let d = b as i64 - a as i64;
        assert!(
            d.abs_diff(expected as i64) <= slack,
            "{name} grew by {d}, expected {expected} ± {slack}\nbefore {before:?}\nafter  {after:?}"
        );
    };
    // Requested bytes plus 24 per block (header and glibc's chunk word) plus the Vec of them.
    let rust_expected = 4096 * (8192 + 24) + 4096 * 24 + 24;
    grew(
        "rust_heap",
        before.rust_heap_bytes,
        after.rust_heap_bytes,
        rust_expected,
        MIB,
    );
    grew(
        "c_heap",
        before.c_heap_bytes,
        after.c_heap_bytes,
        32 * MIB,
        2 * MIB,
    );
    grew(
        "not_returned",
        before.not_returned_bytes,
        after.not_returned_bytes,
        48 * MIB,
        3 * MIB,
    );
    grew(
        "thread_stacks",
        before.thread_stacks_bytes,
        after.thread_stacks_bytes,
        16 * MIB,
        2 * MIB,
    );
    grew(
        "file_backed",
        before.file_backed_bytes,
        after.file_backed_bytes,
        16 * MIB,
        2 * MIB,
    );
    grew(
        "other_anon",
        before.other_anon_bytes,
        after.other_anon_bytes,
        8 * MIB,
        3 * MIB,
    );

    // The text, the metrics-facing names and the HTML cards carry it.
    let r = report();
    let text = r.to_text();
    assert!(text.contains("+ C heap (malloc outside Rust) "), "{text}");
    assert!(text.contains("thread stacks "), "{text}");
    // The C heap is 32 MiB of a ~200 MiB RSS: above the note's threshold (16 MiB and 10%).
    assert!(
        text.contains("heap allocated outside Rust's allocator"),
        "{text}"
    );
    assert!(text.contains("`malloc` feature"), "{text}");
    let html = r.to_html();
    for part in RssBreakdown::PARTS {
        assert!(
            html.contains(&format!("data-part=\"{part}\"")),
            "card for {part}"
        );
    }

    done.wait();
    for t in threads {
        t.join().unwrap();
    }
    // SAFETY: the maps made above, unmapped once; the blocks freed once.
    unsafe {
        libc::munmap(map, 16 << 20);
        libc::munmap(anon, 8 << 20);
        libc::free(*freed.last().unwrap() as *mut libc::c_void);
        for p in c_blocks {
            libc::free(p as *mut libc::c_void);
        }
    }
    drop(rust);
}
