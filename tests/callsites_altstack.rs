//! Stack capture on a stack that is not the thread's own (a signal's alternate stack): the
//! frame-pointer walk must not run across unmapped memory; the DWARF unwinder takes over.

mod common;

use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

use allocscope::{report, track_scope, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

static KEPT: AtomicPtr<[u8; 100]> = AtomicPtr::new(std::ptr::null_mut());

#[inline(never)]
fn allocate_on_the_alternate_stack() {
    let b = track_scope("altstack_job", || Box::new([7u8; 100]));
    KEPT.store(Box::into_raw(b), SeqCst);
}

extern "C" fn on_signal(_: libc::c_int) {
    // Raised synchronously by `raise` below, outside any allocator call, so allocating here
    // cannot interrupt the allocator.
    allocate_on_the_alternate_stack();
}

#[test]
fn allocating_on_an_alternate_signal_stack_is_recorded_without_faulting() {
    common::every();
    // A heap buffer as the alternate stack: far from this thread's own stack.
    let mut alt = vec![0u8; 256 * 1024];
    // SAFETY: plain libc calls with valid, initialised arguments; the alternate stack buffer
    // outlives the signal (it is unregistered before being freed), and the handler is a valid
    // `extern "C" fn(c_int)`.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: alt.len(),
        };
        assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::raise(libc::SIGUSR1), 0);
        let disable = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        assert_eq!(libc::sigaltstack(&disable, std::ptr::null_mut()), 0);
    }
    drop(alt);
    let r = report();
    let job = r.job("altstack_job").expect("the handler ran the job");
    assert_eq!(job.allocated, Usage::new(1, 100));
    let site: Usage = job
        .callsites
        .iter()
        .fold(Usage::default(), |a, c| a + c.allocated);
    assert_eq!(site, Usage::new(1, 100), "the block has a callsite");
    // SAFETY: the pointer came from Box::into_raw above and is freed once.
    drop(unsafe { Box::from_raw(KEPT.load(SeqCst)) });
    assert_eq!(
        report().job("altstack_job").unwrap().retained,
        Usage::new(0, 0)
    );
}
