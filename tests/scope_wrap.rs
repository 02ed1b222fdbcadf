//! `ScopeHandle::wrap` (no feature needed): a closure called on other threads stays charged to
//! the scope that wrapped it; `ScopeHandle::current` carries "no scope" too.

use std::hint::black_box;

use allocscope::{current_scope, report, track_scope, ScopeHandle, TrackingAllocator, Usage};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[test]
fn wrapped_closure_is_charged_to_its_scope_on_any_thread() {
    let (f, kept) = track_scope("wrap_owner", || {
        let h = current_scope().unwrap();
        (
            h.wrap(|n: usize| black_box(vec![0u8; n])),
            black_box(Box::new(1u8)),
        )
    });
    // Called on 4 threads, inside another job: still wrap_owner's.
    let blocks: Vec<Vec<u8>> = track_scope("wrap_caller", || {
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = (1..=4).map(|i| s.spawn(move || f(i * 10))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    let owner = report().job("wrap_owner").cloned().unwrap();
    assert_eq!(owner.allocated, Usage::new(5, 1 + 100));
    assert_eq!(owner.retained, Usage::new(5, 101));
    // An unwrapped closure called the same way is not the owner's.
    let plain = |n: usize| black_box(vec![0u8; n]);
    let more: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=4).map(|i| s.spawn(move || plain(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        report().job("wrap_owner").unwrap().allocated,
        owner.allocated
    );
    drop(more);
    drop((blocks, kept));
    assert_eq!(
        report().job("wrap_owner").unwrap().retained,
        Usage::new(0, 0)
    );
}

#[test]
fn current_handle_outside_any_scope_means_unscoped() {
    let unscoped = ScopeHandle::current();
    assert!(current_scope().is_none());
    let b = track_scope("wrap_host", || {
        unscoped.enter(|| black_box(Box::new([0u8; 33])))
    });
    assert_eq!(
        report().job("wrap_host").unwrap().allocated,
        Usage::new(0, 0)
    );
    drop(b);
}
