//! Memory assertions for tests: "this job leaves nothing behind".
//!
//! A [`MemoryCheck`] runs a closure as one run of a job scope and checks what that run did:
//! what it still held when it returned (objects and bytes), its peak, and what it allocated in
//! total. Scopes are per thread and per run, so **any number of checks can run in one test
//! binary, in parallel** (`cargo test`'s default), each measuring only its own job — also when
//! the job spawns threads with [`spawn`](crate::spawn) or runs futures with
//! [`FutureExt`](crate::FutureExt).
//!
//! ```
//! use allocscope::testing::MemoryCheck;
//! use allocscope::{assert_memory, assert_no_leaks};
//!
//! // The one thing to do: install the tracking allocator in the test binary.
//! #[global_allocator]
//! static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
//!
//! fn parse(input: &str) -> Vec<String> {
//!     input.split(',').map(str::to_owned).collect()
//! }
//!
//! # fn main() {
//! // The job may allocate what it likes, as long as nothing is left when it returns.
//! // (What the closure returns is dropped inside the run: see "What is measured".)
//! assert_no_leaks!("parse", || parse("a,b,c"));
//!
//! // Several limits at once, with the builder...
//! let figures = MemoryCheck::new("parse")
//!     .max_retained_bytes(0)
//!     .max_peak_bytes(1 << 20)
//!     .max_allocated_objects(10)
//!     .run(|| parse("a,b,c"))
//!     .unwrap(); // or `?` in a test returning Result; or `.assert(...)`, which panics
//! assert_eq!(figures.allocated.objects, 4); // the Vec and three Strings
//! // ...or with the macro, whose options are the builder's methods.
//! assert_memory!("parse", || parse("a,b,c"), max_peak_bytes = 1 << 20, max_retained_bytes = 0);
//! # }
//! ```
//!
//! # The one thing to do: install the allocator in the test binary
//!
//! Each test binary (each `tests/*.rs` file, and the library's own unit tests) needs
//! [`TrackingAllocator`](crate::TrackingAllocator) as its global allocator — at the top of the
//! integration test file, or in a `tests/common/mod.rs` that every test file includes with
//! `mod common;`:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
//! # fn main() {}
//! ```
//!
//! Without it nothing is counted, and a check would pass whatever the job does; so a check
//! **fails** instead ([`CheckFailure::NotInstalled`]) with a message that says exactly this.
//!
//! # What is measured
//!
//! * **Retained**: what the measured run had allocated — on the calling thread, and on the
//!   threads and futures that carry its scope — and not freed, by whichever thread, when the
//!   closure returned. The closure's **return value is dropped
//!   inside the run**, so a function that returns what it built is checked for what it leaves
//!   behind besides its result. To count a result as retained, move it out of the closure
//!   (push it into a `Vec` the closure captures). Another thread may free a block of the run
//!   just after it finished (a runtime dropping its reference to a finished task after the
//!   join handle got the output): before a retained limit fails, the check looks again for up
//!   to about 60 ms, and what was freed meanwhile is not counted.
//! * **Peak**: the run's highest live bytes while it ran ([`RunReport::peak_bytes`](crate::RunReport::peak_bytes)): exact
//!   for work on one thread; for work on several threads, combined from each thread's own
//!   peak whenever it hands its figures over (scope exit, end of a poll).
//! * **Allocated**: every block the run allocated, objects and bytes.
//!
//! When every one of allocscope's run slots is taken (65,535 runs active: `.track_scope()`
//! futures never finished, or forgotten, keep theirs), the measured run has no figures of its
//! own; a check then takes allocated and retained from its job (whose figures are the run's:
//! no other run uses a check's job name), notes why in [`Figures::notes`], and fails with
//! [`CheckFailure::Unmeasured`] only if it has a peak limit.
//!
//! Bytes are what the program asked for (no allocator overhead), the same figures as in
//! reports. A realloc is a free plus an allocation in the current job: a shared collection
//! that *grows* during the check is charged to it (and so is the test harness's capture
//! buffer when the job prints under `cargo test`: print outside the check).
//!
//! # Caches that fill once, and known caches
//!
//! * [`warmup(n)`](MemoryCheck::warmup) runs the job `n` times before the measured run, so a
//!   cache that fills on the first run and stays the same size afterwards passes a
//!   zero-retention check: the check then requires that retention does not grow after the
//!   warm-up. Warm-up runs are reported in [`Figures::warmup`].
//! * [`ignore_callsites_matching(pattern)`](MemoryCheck::ignore_callsites_matching) subtracts
//!   what callsites still hold whose stack has a frame whose function name or source file
//!   contains `pattern` ([`Figures::ignored`]). The limits apply to the rest ([`Figures::retained_checked`]).
//!   This needs exact stacks: [`StackMode::Every`](crate::StackMode::Every). With another mode the check fails
//!   ([`CheckFailure::ExactStacksRequired`]) rather than guess.
//!
//! # Which code still holds the memory
//!
//! When stacks are on and the measured run retained anything, [`Figures::holding`] lists the
//! callsites still holding memory, and a failure message shows the top ones (function,
//! `file:line`, objects, bytes), from the allocation down to the closure given to the check:
//!
//! ```text
//! allocscope: memory check "handle" failed in test `handle_request_keeps_nothing`:
//!   retained objects: 1 measured, limit 0
//!   retained bytes: 13 B measured, limit 0 B
//! measured run of job "handle [check 1]": allocated 2 objects / 26 B, peak 26 B, retained 1 object / 13 B; after 1 warm-up run that retained 2 objects / 109 B
//! callsites still holding memory (exact; 1 of 1):
//!   13 B in 1 object
//!       at app::remember (src/handler.rs:6)
//!       by app::handle (src/handler.rs:9)
//!       by tests::handle_request_keeps_nothing::{{closure}} (src/handler.rs:15)
//! ```
//!
//! Turn exact stacks on at the start of **every** test of the
//! binary — the mode is process-wide, so don't switch it between tests of one binary:
//!
//! ```
//! fn exact_stacks() {
//!     static ONCE: std::sync::Once = std::sync::Once::new();
//!     ONCE.call_once(|| allocscope::set_stack_mode(allocscope::StackMode::Every));
//! }
//! ```
//!
//! (or run the tests with `ALLOCSCOPE_STACKS=every`).
//!
//! # Job names
//!
//! The measured run runs as job `"{name} [check k]"` and warm-up runs as `"{name} [warm-up]"`,
//! so a check's callsites are never mixed with another test's. `k` starts at 1 and is
//! reused by the next check of the same name once the previous one left nothing behind; a
//! check that ran concurrently with another of the same name, or left memory behind, gets the
//! next `k` (up to 8 per name; then the slot holding the least is reused, its memory still
//! held being subtracted). So a test binary adds a bounded number of jobs however often its
//! checks run.
//!
//! Limitations: a job that keeps threads or tasks running in its scope after it returns
//! (detached) can be charged for what they do after the check; and jobs nested inside the
//! check count in it (inclusive figures), as everywhere in allocscope.

//! # Layout
//! * `check` — [`MemoryCheck`]: the builder; runs the job and applies the limits;
//! * `held` — what the measured run still holds and where: callsites, ignore filters, older
//!   runs' holdings ([`HeldCallsite`]);
//! * `figures` — [`Figures`], what a check measured;
//! * `lease` — the `[check k]` job names and their reuse;
//! * `failure` — [`CheckFailure`], [`Violation`] and the failure text;
//! * the macros below; the frame heuristics (which frames are the test's, which the job's)
//!   live with the symbolizer's, in `report::symbolize`.

mod check;
mod failure;
mod figures;
mod held;
mod lease;

pub use check::MemoryCheck;
pub use failure::{CheckFailure, Limit, Violation};
pub use figures::Figures;
pub use held::HeldCallsite;

/// Callsites shown in a failure message unless [`MemoryCheck::show_callsites`] says otherwise.
pub const DEFAULT_SHOWN_CALLSITES: usize = 5;

// ---------------------------------------------------------------------------------------------
// Macros
// ---------------------------------------------------------------------------------------------

/// Asserts that a job leaves nothing behind: runs it as a [`MemoryCheck`] with
/// [`no_leaks`](MemoryCheck::no_leaks) and panics with the failure report otherwise. Returns
/// the [`Figures`].
///
/// Forms: `assert_no_leaks!(job)`, where the check is named after the file and line, and
/// `assert_no_leaks!(name, job, option = value, ...)`, where each option is a
/// [`MemoryCheck`] builder method called with that value (`warmup = 1`,
/// `ignore_callsites_matching = "known_cache"`, `max_peak_bytes = 1 << 20`, ...). `job` is a
/// closure (`FnMut`, called once per warm-up run and once measured); its return value is
/// dropped inside the run.
///
/// ```
/// # #[global_allocator]
/// # static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
/// use allocscope::assert_no_leaks;
/// # fn main() {
/// assert_no_leaks!(|| vec![1, 2, 3].iter().sum::<i32>());
/// let figures = assert_no_leaks!("sum", || vec![1, 2, 3].iter().sum::<i32>(), warmup = 1);
/// assert_eq!(figures.allocated.objects, 1);
/// # }
/// ```
#[macro_export]
macro_rules! assert_no_leaks {
    ($job:expr $(, $option:ident = $value:expr)* $(,)?) => {
        $crate::testing::MemoryCheck::new(::core::concat!(
            ::core::file!(),
            ":",
            ::core::line!()
        ))
        .no_leaks()
        $(.$option($value))*
        .assert($job)
    };
    ($name:expr, $job:expr $(, $option:ident = $value:expr)* $(,)?) => {
        $crate::testing::MemoryCheck::new($name)
            .no_leaks()
            $(.$option($value))*
            .assert($job)
    };
}

/// Asserts memory limits on a job: runs it as a [`MemoryCheck`] named `name` with the given
/// options and panics with the failure report if a limit is exceeded. Returns the
/// [`Figures`].
///
/// Each option is a [`MemoryCheck`] builder method called with that value:
/// `max_retained_objects`, `max_retained_bytes`, `max_peak_bytes`, `max_allocated_objects`,
/// `max_allocated_bytes`, `warmup`, `ignore_callsites_matching`, `show_callsites`.
///
/// ```
/// # #[global_allocator]
/// # static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
/// use allocscope::assert_memory;
/// # fn main() {
/// let figures = assert_memory!(
///     "buffer",
///     || vec![0u8; 4096],
///     max_peak_bytes = 8192,
///     max_allocated_objects = 1,
///     max_retained_bytes = 0,
/// );
/// assert_eq!(figures.peak_bytes, 4096);
/// # }
/// ```
#[macro_export]
macro_rules! assert_memory {
    ($name:expr, $job:expr $(, $option:ident = $value:expr)* $(,)?) => {
        $crate::testing::MemoryCheck::new($name)
            $(.$option($value))*
            .assert($job)
    };
}
