//! The caching unwinder (`Unwinder::Cached`): DWARF call-frame information without libgcc's
//! per-frame cost, for builds without frame pointers (a user's default).
//!
//! Built on `framehop` (the unwinder of the samply profiler): each loaded module's
//! `.eh_frame_hdr` and `.eh_frame` are found once through `dl_iterate_phdr`, and the unwind rule
//! of each return address is computed once and then cached, so a cached frame costs a table
//! lookup and one or two stack reads instead of libgcc's FDE search and CFI interpretation.
//!
//! # Rules
//! * **No lock on the allocation path once a module is known.** The known modules form an
//!   immutable *snapshot* behind an atomic pointer; unwinding reads it without locking. A
//!   snapshot is replaced (never freed: readers hold no reference count) only when a return
//!   address outside every known module is met and `dl_iterate_phdr` finds a module containing
//!   it (a library loaded later with `dlopen`). That rebuild is the one cold path that locks:
//!   it uses `try_lock` (a thread that cannot take the builder lock ends its stack there instead
//!   of waiting, so no lock-order cycle with the dynamic loader's lock is possible) and takes the
//!   loader's lock inside `dl_iterate_phdr`. Addresses that belong to no module (JIT code) are
//!   remembered in a small table so they do not trigger a rescan every time.
//! * **Memory**: a module's unwind sections are copied once (untracked: counted as tracker
//!   overhead, never charged to a job), so a module unloaded later can never leave the unwinder
//!   reading unmapped memory. Retired snapshots are kept: the memory they hold is bounded by
//!   the number of module loads seen (each rebuild follows a new module).
//! * **Rule caches are per thread slot** (`thread::slot_index`): a slot has one owner thread at
//!   a time and capture runs with the thread marked busy, so a cache is never used by two
//!   unwinds at once (a signal handler's allocation during a capture is the tracker's own and
//!   records no stack). A slot's tables are mapped on its first capture (about 48 KiB of
//!   anonymous memory, outside the program's heap so that they do not move its allocator's
//!   top chunk) and reused by the slot's later owners.
//! * **Our own rule table in front of framehop's** (`rules`). framehop's cache is
//!   direct-mapped on `address % 509`, so two return addresses of a hot stack that collide
//!   there evict each other on every capture, and each miss re-evaluates the CFI; running its
//!   generic rule through the `read_stack` closure costs several times an inline rule per
//!   frame. So each return address's rule is kept in a 2048-entry, 2-way
//!   set-associative table indexed by a multiplicative hash (two hot addresses that share a set
//!   never evict each other), in one form (`CFA = sp|bp + offset`, return address at
//!   `CFA - 8`, bp unchanged or at `CFA + offset`), and executed inline. The rule is learnt once
//!   per address by letting framehop unwind that frame on a synthetic stack (`probe`), checked
//!   by a second probe; a frame whose rule does not fit that form (a DWARF expression) is
//!   unwound by framehop every time. The walk's own first frame is looked up the same way
//!   (keyed by its program counter). Evaluation on a miss may allocate (gimli's heap storage):
//!   the thread is busy, so that is tracker overhead. What these choices cost and save is
//!   measured in BENCHMARKS.md.
//! * **The walk memo** (`rules::Memo`): each slot keeps its previous walk — per frame, the
//!   state before it (lookup address, sp, bp), the stack words its rule read and their
//!   values, its return address and the stack hash from it to the end. Unwinding is a
//!   deterministic function of the state, the rules and those words, so a walk that reaches
//!   a state the previous one passed through takes the previous frames for as long as their
//!   words still hold the same values (a load and a compare per word instead of a rule
//!   lookup and its execution), then unwinds on from where a word differs. Consecutive
//!   allocations share the bottom of their stacks, so only the frames above the allocating
//!   function are unwound; the stack hash is folded from the outermost frame in
//!   (`intern::mix`), so the shared bottom's hash is reused too.
//! * **Modules** (`modules`): each snapshot holds every loaded module's code range and copied
//!   unwind sections; the header's pointer to `.eh_frame` is decoded by gimli
//!   (`EhFrameHdr::parse`), as is the check that a frame has a frame description entry.
//! * **Never a crash**: the only memory read during an unwind outside our own copies is the
//!   stack, through `rules::Bounds`, which accepts only 8-aligned addresses between the current
//!   frame and the top of this thread's stack. A frame with no unwind information (a module
//!   without `.eh_frame_hdr`, or a function without a frame description entry in a module that
//!   has one), an unknown module, or a failed read ends the stack. When running on another
//!   stack than the thread's own (a signal's alternate stack) the caller falls back to libgcc.
//! * Supported on Linux x86_64; elsewhere [`walk`] returns `None` and libgcc is used.

/// Whether the caching unwinder works on this target.
pub(crate) const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod modules;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod rules;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use rules::walk;

/// On unsupported targets: never walks (the caller uses libgcc).
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub(crate) fn walk(
    _t: &crate::thread::ThreadState,
    _buf: &mut [core::mem::MaybeUninit<usize>],
) -> Option<(usize, u64)> {
    None
}
