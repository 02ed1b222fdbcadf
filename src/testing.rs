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
//! * **Peak**: the run's highest live bytes while it ran ([`RunReport::peak_bytes`]): exact
//!   for work on one thread; for work on several threads, combined from each thread's own
//!   peak whenever it hands its figures over (scope exit, end of a poll).
//! * **Allocated**: every block the run allocated, objects and bytes.
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
//!   This needs exact stacks: [`StackMode::Every`]. With another mode the check fails
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

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use core::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;

use crate::callsite::StackMode;
use crate::report::text::{grouped, human_bytes};
use crate::report::{CallsiteReport, Frame, RunReport, Usage};
use crate::scope::track_scope_run;
use crate::thread::untracked;

/// Callsites shown in a failure message unless [`MemoryCheck::show_callsites`] says otherwise.
pub const DEFAULT_SHOWN_CALLSITES: usize = 5;
/// Frames shown per callsite in a failure message.
const SHOWN_FRAMES: usize = 6;
/// Check slots (`[check k]` job names) kept per check name before slots holding memory are
/// reused.
const SLOTS_PER_NAME: u32 = 8;

type Predicate = Arc<dyn Fn(&CallsiteReport) -> bool + Send + Sync>;

/// How callsites are chosen to be ignored.
#[derive(Clone)]
enum Ignore {
    Matching(String),
    Where(String, Predicate),
}

impl Ignore {
    fn describe(&self) -> String {
        match self {
            Ignore::Matching(p) => format!("matching {p:?}"),
            Ignore::Where(d, _) => d.clone(),
        }
    }

    /// Whether the filter ignores `c`. `caller` are the functions of the stack that called
    /// the check: they and closures defined in them (the closure passed to the check) are the
    /// test's code, never matched by a pattern — a test named `known_cache_is_ignored` must
    /// not ignore everything its closure allocates because of a pattern `"known_cache"`.
    fn matches(&self, c: &CallsiteReport, caller: &[&str]) -> bool {
        match self {
            Ignore::Matching(p) => c
                .frames
                .iter()
                .filter(|f| !is_allocscope(&f.function) && !is_test_code(&f.function, caller))
                .any(|f| {
                    f.function.contains(p.as_str())
                        || f.file
                            .as_deref()
                            .is_some_and(|file| file.contains(p.as_str()))
                }),
            Ignore::Where(_, pred) => pred(c),
        }
    }
}

/// A memory check: a job name, limits, warm-up and callsite filters. Build it, then
/// [`run`](Self::run) it (a `Result`) or [`assert`](Self::assert) it (a panic on failure).
///
/// Without limits a check only measures (and still fails if the allocator is not installed).
///
/// ```
/// # #[global_allocator]
/// # static ALLOC: allocscope::TrackingAllocator = allocscope::TrackingAllocator::system();
/// use allocscope::testing::MemoryCheck;
///
/// static CACHE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
/// fn lookup(i: usize) -> u64 {
///     CACHE.get_or_init(|| (0..1000).collect())[i] // fills once, on the first call
/// }
///
/// # fn main() {
/// let figures = MemoryCheck::new("lookup")
///     .warmup(1) // the first run fills the cache
///     .no_leaks() // later runs keep nothing
///     .assert(|| lookup(7));
/// assert_eq!(figures.warmup[0].retained_at_finish.bytes, 8000);
/// assert_eq!(figures.retained.bytes, 0);
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a check does nothing until `run` or `assert` is called"]
pub struct MemoryCheck {
    name: String,
    warmup: u32,
    max_retained_objects: Option<u64>,
    max_retained_bytes: Option<u64>,
    max_peak_bytes: Option<u64>,
    max_allocated_objects: Option<u64>,
    max_allocated_bytes: Option<u64>,
    ignore: Vec<Ignore>,
    show_callsites: usize,
}

impl fmt::Debug for MemoryCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCheck")
            .field("name", &self.name)
            .field("warmup", &self.warmup)
            .field("max_retained_objects", &self.max_retained_objects)
            .field("max_retained_bytes", &self.max_retained_bytes)
            .field("max_peak_bytes", &self.max_peak_bytes)
            .field("max_allocated_objects", &self.max_allocated_objects)
            .field("max_allocated_bytes", &self.max_allocated_bytes)
            .field(
                "ignore",
                &self.ignore.iter().map(Ignore::describe).collect::<Vec<_>>(),
            )
            .field("show_callsites", &self.show_callsites)
            .finish()
    }
}

impl MemoryCheck {
    /// A check of the job `name` (shown in reports and failure messages), without limits.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryCheck {
            name: name.into(),
            warmup: 0,
            max_retained_objects: None,
            max_retained_bytes: None,
            max_peak_bytes: None,
            max_allocated_objects: None,
            max_allocated_bytes: None,
            ignore: Vec::new(),
            show_callsites: DEFAULT_SHOWN_CALLSITES,
        }
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the job `runs` times before the measured run (default 0), so that what fills once
    /// (caches, lazy statics, pools) is in place; the limits apply to the measured run only.
    pub fn warmup(mut self, runs: u32) -> Self {
        self.warmup = runs;
        self
    }

    /// Fails if the measured run still held more than `objects` blocks when it returned.
    pub fn max_retained_objects(mut self, objects: u64) -> Self {
        self.max_retained_objects = Some(objects);
        self
    }

    /// Fails if the measured run still held more than `bytes` bytes when it returned.
    pub fn max_retained_bytes(mut self, bytes: u64) -> Self {
        self.max_retained_bytes = Some(bytes);
        self
    }

    /// Fails if the measured run still held anything when it returned: the same as
    /// `.max_retained_objects(0).max_retained_bytes(0)`.
    pub fn no_leaks(self) -> Self {
        self.max_retained_objects(0).max_retained_bytes(0)
    }

    /// Fails if the measured run's live bytes went above `bytes` while it ran.
    pub fn max_peak_bytes(mut self, bytes: u64) -> Self {
        self.max_peak_bytes = Some(bytes);
        self
    }

    /// Fails if the measured run allocated more than `objects` blocks in total.
    pub fn max_allocated_objects(mut self, objects: u64) -> Self {
        self.max_allocated_objects = Some(objects);
        self
    }

    /// Fails if the measured run allocated more than `bytes` bytes in total.
    pub fn max_allocated_bytes(mut self, bytes: u64) -> Self {
        self.max_allocated_bytes = Some(bytes);
        self
    }

    /// Does not count what callsites still hold whose stack has a frame whose function name or
    /// source file contains `pattern` (a plain substring, case-sensitive, e.g.
    /// `"known_cache"`, `"mycrate::cache::"` or `"src/cache.rs"`). In optimized builds with
    /// line tables only, inlined frames carry short function names (`insert` rather than
    /// `mycrate::cache::Cache::insert`); their file paths are complete, so a file pattern works
    /// in every profile.
    ///
    /// Only the job's code is matched: not allocscope's own frames, nor the test function that
    /// runs the check, the closure given to it, and the harness below (so a test named
    /// `known_cache_is_ignored` does not ignore all it allocates). Name a function the job
    /// calls. May be given several times (any pattern ignores).
    ///
    /// Needs [`StackMode::Every`] (exact callsites); otherwise the check fails with
    /// [`CheckFailure::ExactStacksRequired`].
    pub fn ignore_callsites_matching(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(Ignore::Matching(pattern.into()));
        self
    }

    /// Does not count what callsites for which `predicate` returns `true` still hold. It sees
    /// the callsite's scope and its symbolized stack ([`CallsiteReport::frames`], innermost
    /// first) down to the check, as in [`HeldCallsite::callsite`]. `description` names the filter in failure messages. Needs
    /// [`StackMode::Every`], like [`ignore_callsites_matching`](Self::ignore_callsites_matching).
    pub fn ignore_callsites_where(
        mut self,
        description: impl Into<String>,
        predicate: impl Fn(&CallsiteReport) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.ignore
            .push(Ignore::Where(description.into(), Arc::new(predicate)));
        self
    }

    /// How many callsites a failure message lists (default [`DEFAULT_SHOWN_CALLSITES`]).
    pub fn show_callsites(mut self, callsites: usize) -> Self {
        self.show_callsites = callsites;
        self
    }

    /// Runs the warm-up runs, then the measured run, and checks the limits.
    ///
    /// Returns the measured figures, or a [`CheckFailure`] whose `Display` (and `Debug`, so
    /// that `.unwrap()` prints it readably) is the whole report: the limits exceeded, the
    /// measured values, the check's and the test's names, and the callsites still holding
    /// memory when stacks are on. If the job panics, the panic is resumed unchanged.
    ///
    /// Fails without running the job if the tracking allocator is not installed, or if a
    /// callsite filter is set and the stack mode is not [`StackMode::Every`].
    pub fn run<R>(&self, mut job: impl FnMut() -> R) -> Result<Figures, CheckFailure> {
        let test = untracked(test_name);
        let caller = untracked(caller_ips);
        if !crate::is_installed() {
            return Err(untracked(|| CheckFailure::NotInstalled {
                check: self.name.clone(),
                test,
            }));
        }
        let mode = crate::stack_mode();
        if !self.ignore.is_empty() && mode != StackMode::Every {
            return Err(untracked(|| CheckFailure::ExactStacksRequired {
                check: self.name.clone(),
                test,
                mode,
                filters: self.ignore.iter().map(Ignore::describe).collect(),
            }));
        }

        let (warmup_name, mut warmup) = untracked(|| {
            (
                format!("{} [warm-up]", self.name),
                Vec::with_capacity(self.warmup as usize),
            )
        });
        for _ in 0..self.warmup {
            let ((), run) = track_scope_run(&warmup_name, || drop(job()));
            untracked(|| warmup.push(run));
        }

        let mut lease = Lease::acquire(&self.name);
        let ((), run) = track_scope_run(&lease.job, || drop(job()));
        let mut held = untracked(|| self.held(&lease, mode, &run, &caller));
        // Another thread may free the run's blocks just after it finished (a runtime dropping
        // its reference to a finished task after the join handle got the output). Those are
        // not kept: before failing a retained limit, give such frees a moment (≤ 63 ms).
        let mut wait_ms = 1;
        while lease.baseline.is_none() && wait_ms <= 32 && self.retained_exceeded(&held) {
            std::thread::sleep(std::time::Duration::from_millis(wait_ms));
            wait_ms *= 2;
            held = untracked(|| self.held(&lease, mode, &run, &caller));
        }
        lease.clean = held.retained.is_zero();
        drop(lease);

        untracked(|| {
            let figures = Figures {
                check: self.name.clone(),
                job: run.job.clone(),
                test,
                allocated: run.allocated,
                peak_bytes: run.peak_bytes,
                retained: held.retained,
                ignored: held.ignored,
                ignore_filters: self.ignore.iter().map(Ignore::describe).collect(),
                holding: held.holding,
                stack_mode: mode,
                warmup,
                run,
                notes: held.notes,
            };
            let violations = self.violations(&figures);
            if violations.is_empty() {
                return Ok(figures);
            }
            Err(CheckFailure::Exceeded {
                figures: Box::new(figures),
                violations,
                shown_callsites: self.show_callsites,
            })
        })
    }

    /// Like [`run`](Self::run), but panics with the failure's message; returns the figures.
    #[track_caller]
    pub fn assert<R>(&self, job: impl FnMut() -> R) -> Figures {
        match self.run(job) {
            Ok(figures) => figures,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// What the finished measured run still holds, and where (untracked).
    fn held(&self, lease: &Lease, mode: StackMode, run: &RunReport, caller: &[usize]) -> Held {
        let mut held = Held {
            retained: run.retained_at_finish,
            ignored: Usage::default(),
            holding: Vec::new(),
            notes: Vec::new(),
        };
        if held.retained.is_zero() {
            return held;
        }
        if run.job != lease.job {
            held.notes.push(format!(
                "the job table is full, so this run was counted as {:?}: its callsites cannot \
                 be told apart from other jobs' and none are ignored",
                run.job
            ));
            return held;
        }
        let Some((now, callsites)) = crate::report::job_snapshot(&lease.job) else {
            return held;
        };
        if lease.baseline.is_none() {
            // The job holds only what this run left (earlier runs of this job name left
            // nothing): what other threads freed since the run finished is not held any more.
            held.retained = Usage::new(
                held.retained.objects.min(now.objects),
                held.retained.bytes.min(now.bytes),
            );
        } else {
            held.notes.push(format!(
                "job {:?} still held memory from an earlier check of the same name; it was \
                 subtracted from the callsites",
                lease.job
            ));
        }
        if mode == StackMode::Off || callsites.is_empty() {
            return held;
        }
        let caller = crate::report::symbolize::symbolize(caller);
        let caller_fns: Vec<&str> = caller.iter().map(|f| f.function.as_str()).collect();
        for c in callsites {
            let before = lease
                .baseline
                .as_ref()
                .and_then(|b| b.get(&(c.scope.clone(), c.frames.clone())))
                .copied()
                .unwrap_or_default();
            let retained = Usage::new(
                c.retained.objects.saturating_sub(before.objects),
                c.retained.bytes.saturating_sub(before.bytes),
            );
            if retained.is_zero() {
                continue;
            }
            let callsite = CallsiteReport {
                retained,
                frames: job_frames(c.frames, &caller),
                ..c
            };
            let ignored = self
                .ignore
                .iter()
                .any(|i| i.matches(&callsite, &caller_fns));
            if ignored {
                held.ignored += retained;
            }
            held.holding.push(HeldCallsite { callsite, ignored });
        }
        held.holding.sort_by(|a, b| {
            b.callsite
                .retained
                .bytes
                .cmp(&a.callsite.retained.bytes)
                .then(
                    b.callsite
                        .retained
                        .objects
                        .cmp(&a.callsite.retained.objects),
                )
        });
        // What is ignored is part of what is retained, never more.
        held.ignored = Usage::new(
            held.ignored.objects.min(held.retained.objects),
            held.ignored.bytes.min(held.retained.bytes),
        );
        let dropped = crate::callsite::intern::DROPPED.load(Relaxed);
        if dropped > 0 {
            held.notes.push(format!(
                "{dropped} stacks were not recorded because the callsite tables are full; \
                 callsites may be missing"
            ));
        }
        held
    }

    fn retained_exceeded(&self, held: &Held) -> bool {
        let counted = Usage::new(
            held.retained.objects.saturating_sub(held.ignored.objects),
            held.retained.bytes.saturating_sub(held.ignored.bytes),
        );
        self.max_retained_objects
            .is_some_and(|m| counted.objects > m)
            || self.max_retained_bytes.is_some_and(|m| counted.bytes > m)
    }

    fn violations(&self, f: &Figures) -> Vec<Violation> {
        let checked = f.retained_checked();
        [
            (
                Limit::RetainedObjects,
                self.max_retained_objects,
                checked.objects,
            ),
            (Limit::RetainedBytes, self.max_retained_bytes, checked.bytes),
            (Limit::PeakBytes, self.max_peak_bytes, f.peak_bytes),
            (
                Limit::AllocatedObjects,
                self.max_allocated_objects,
                f.allocated.objects,
            ),
            (
                Limit::AllocatedBytes,
                self.max_allocated_bytes,
                f.allocated.bytes,
            ),
        ]
        .into_iter()
        .filter_map(|(limit, max, measured)| {
            max.filter(|&m| measured > m).map(|max| Violation {
                limit,
                max,
                measured,
            })
        })
        .collect()
    }
}

/// The figures of a check's measured run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Figures {
    /// The check's name ([`MemoryCheck::new`]).
    pub check: String,
    /// The job the measured run ran as (`"{check} [check k]"`, see the module docs).
    pub job: String,
    /// The test: the name of the thread that ran the check (the test harness names each
    /// test's thread after the test).
    pub test: String,
    /// Everything the measured run allocated.
    pub allocated: Usage,
    /// The measured run's highest live bytes.
    pub peak_bytes: u64,
    /// What the measured run still held when the closure had returned (its value dropped),
    /// less what other threads freed right after (see the module docs).
    pub retained: Usage,
    /// The part of `retained` held by ignored callsites.
    pub ignored: Usage,
    /// Descriptions of the callsite filters (e.g. `matching "known_cache"`).
    pub ignore_filters: Vec<String>,
    /// Callsites still holding memory from the measured run, largest first; empty when
    /// stacks are off or nothing was retained. Figures are exact in [`StackMode::Every`] and
    /// estimates in sampled mode.
    pub holding: Vec<HeldCallsite>,
    /// The stack mode in effect.
    pub stack_mode: StackMode,
    /// The warm-up runs, in order.
    pub warmup: Vec<RunReport>,
    /// The measured run's own report.
    pub run: RunReport,
    /// Caveats about these figures (e.g. why callsites are missing).
    pub notes: Vec<String>,
}

impl Figures {
    /// What the retained limits are checked against: `retained` minus `ignored`.
    pub fn retained_checked(&self) -> Usage {
        Usage::new(
            self.retained.objects.saturating_sub(self.ignored.objects),
            self.retained.bytes.saturating_sub(self.ignored.bytes),
        )
    }
}

impl fmt::Display for Figures {
    /// One line: allocated, peak, retained (and ignored), warm-up runs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocated {}, peak {}, retained {}",
            usage_text(self.allocated),
            bytes_text(self.peak_bytes),
            usage_text(self.retained),
        )?;
        if !self.ignored.is_zero() {
            write!(
                f,
                " (of which ignored {}, counted {})",
                usage_text(self.ignored),
                usage_text(self.retained_checked())
            )?;
        }
        if !self.warmup.is_empty() {
            let runs = if self.warmup.len() == 1 {
                "run"
            } else {
                "runs"
            };
            write!(
                f,
                "; after {} warm-up {runs} that retained ",
                self.warmup.len()
            )?;
            for (i, w) in self.warmup.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{}", usage_text(w.retained_at_finish))?;
            }
        }
        Ok(())
    }
}

/// What a finished run still holds, and where.
struct Held {
    retained: Usage,
    ignored: Usage,
    holding: Vec<HeldCallsite>,
    notes: Vec<String>,
}

/// A callsite still holding memory from the measured run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeldCallsite {
    /// The callsite; its `retained` is what it holds from the measured run, and its `frames`
    /// are the job's: from the allocation down to the check, without the frames of the test
    /// and the harness below it (allocations on other threads keep their whole stack).
    pub callsite: CallsiteReport,
    /// Whether a filter ignores it.
    pub ignored: bool,
}

/// A limit a check can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`MemoryCheck::max_retained_objects`].
    RetainedObjects,
    /// [`MemoryCheck::max_retained_bytes`].
    RetainedBytes,
    /// [`MemoryCheck::max_peak_bytes`].
    PeakBytes,
    /// [`MemoryCheck::max_allocated_objects`].
    AllocatedObjects,
    /// [`MemoryCheck::max_allocated_bytes`].
    AllocatedBytes,
}

impl Limit {
    fn is_bytes(self) -> bool {
        matches!(
            self,
            Limit::RetainedBytes | Limit::PeakBytes | Limit::AllocatedBytes
        )
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::RetainedObjects => "retained objects",
            Limit::RetainedBytes => "retained bytes",
            Limit::PeakBytes => "peak bytes",
            Limit::AllocatedObjects => "allocated objects",
            Limit::AllocatedBytes => "allocated bytes",
        })
    }
}

/// One limit exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which limit.
    pub limit: Limit,
    /// The limit's value.
    pub max: u64,
    /// The measured value (above `max`).
    pub measured: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limit.is_bytes() {
            write!(
                f,
                "{}: {} measured, limit {}",
                self.limit,
                bytes_text(self.measured),
                bytes_text(self.max)
            )
        } else {
            write!(
                f,
                "{}: {} measured, limit {}",
                self.limit,
                grouped(self.measured),
                grouped(self.max)
            )
        }
    }
}

/// Why a check failed. `Display` is the report a person needs; `Debug` prints the same, so
/// `.unwrap()` and `?` in tests show it readably.
#[non_exhaustive]
pub enum CheckFailure {
    /// The measured run exceeded one or more limits.
    Exceeded {
        /// What was measured.
        figures: Box<Figures>,
        /// The limits exceeded, in the order retained, peak, allocated.
        violations: Vec<Violation>,
        /// How many callsites the message lists.
        shown_callsites: usize,
    },
    /// No [`TrackingAllocator`](crate::TrackingAllocator) is the global allocator, so nothing
    /// can be measured. The job was not run.
    NotInstalled {
        /// The check's name.
        check: String,
        /// The test (thread) name.
        test: String,
    },
    /// A callsite filter needs exact stacks ([`StackMode::Every`]) but another mode is in
    /// effect. The job was not run.
    ExactStacksRequired {
        /// The check's name.
        check: String,
        /// The test (thread) name.
        test: String,
        /// The stack mode in effect.
        mode: StackMode,
        /// The filters set.
        filters: Vec<String>,
    },
}

impl CheckFailure {
    /// The measured figures, when the check ran.
    pub fn figures(&self) -> Option<&Figures> {
        match self {
            CheckFailure::Exceeded { figures, .. } => Some(figures),
            _ => None,
        }
    }

    /// The limits exceeded (empty when the check could not run).
    pub fn violations(&self) -> &[Violation] {
        match self {
            CheckFailure::Exceeded { violations, .. } => violations,
            _ => &[],
        }
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = untracked(|| match self {
            CheckFailure::Exceeded {
                figures,
                violations,
                shown_callsites,
            } => exceeded_text(figures, violations, *shown_callsites),
            CheckFailure::NotInstalled { check, test } => format!(
                "allocscope: memory check {check:?} in test `{test}` cannot measure anything: \
                 allocscope::TrackingAllocator is not this program's global allocator, so no \
                 allocation is counted and the check would pass whatever the job does.\n\
                 To fix it, install the tracking allocator once in this test binary: at the top \
                 of the integration test file (tests/<name>.rs), in a module every test file \
                 includes (tests/common/mod.rs, with `mod common;`), or for unit tests in the \
                 crate root under #[cfg(test)]:\n\n    \
                 #[global_allocator]\n    \
                 static ALLOC: allocscope::TrackingAllocator = \
                 allocscope::TrackingAllocator::system();\n"
            ),
            CheckFailure::ExactStacksRequired {
                check,
                test,
                mode,
                filters,
            } => format!(
                "allocscope: memory check {check:?} in test `{test}` ignores callsites ({}), \
                 which needs exact stacks, but the stack mode is {mode:?}.\n\
                 To fix it, call allocscope::set_stack_mode(allocscope::StackMode::Every) at \
                 the start of every test in this binary (the mode is process-wide: don't \
                 switch it between tests of one binary), or run the tests with \
                 ALLOCSCOPE_STACKS=every.\n",
                filters.join(", ")
            ),
        });
        f.write_str(&text)
    }
}

impl fmt::Debug for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CheckFailure {}

fn exceeded_text(fig: &Figures, violations: &[Violation], shown: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "allocscope: memory check {:?} failed in test `{}`:",
        fig.check, fig.test
    );
    for v in violations {
        let _ = writeln!(out, "  {v}");
    }
    let _ = writeln!(out, "measured run of job {:?}: {fig}", fig.job);
    if !fig.ignore_filters.is_empty() {
        let _ = writeln!(
            out,
            "ignored callsites ({}) held {}",
            fig.ignore_filters.join(", "),
            usage_text(fig.ignored)
        );
    }
    let retained_limited = violations
        .iter()
        .any(|v| matches!(v.limit, Limit::RetainedObjects | Limit::RetainedBytes));
    if fig.retained.is_zero() {
        // Nothing held: no callsites to show.
    } else if fig.stack_mode == StackMode::Off {
        if retained_limited {
            let _ = writeln!(
                out,
                "(stacks are off, so the code holding the memory is not known: call \
                 allocscope::set_stack_mode(allocscope::StackMode::Every) at the start of \
                 every test in this binary, or run with ALLOCSCOPE_STACKS=every)"
            );
        }
    } else if fig.holding.is_empty() {
        let _ = writeln!(out, "(no callsite recorded for the memory still held)");
    } else {
        let kind = if fig.stack_mode == StackMode::Every {
            "exact"
        } else {
            "sampled estimates"
        };
        let _ = writeln!(
            out,
            "callsites still holding memory ({kind}; {} of {}):",
            shown.min(fig.holding.len()),
            fig.holding.len()
        );
        for h in fig.holding.iter().take(shown) {
            let c = &h.callsite;
            let mark = if h.ignored { " [ignored]" } else { "" };
            let _ = writeln!(
                out,
                "  {} in {} object{}{mark}",
                bytes_text(c.retained.bytes),
                grouped(c.retained.objects),
                if c.retained.objects == 1 { "" } else { "s" },
            );
            let frames = &c.frames;
            for (i, fr) in frames.iter().take(SHOWN_FRAMES).enumerate() {
                let lead = if i == 0 { "at" } else { "by" };
                let _ = writeln!(out, "      {lead} {}", frame_text(fr));
            }
            if frames.len() > SHOWN_FRAMES {
                let _ = writeln!(out, "      ... {} more", frames.len() - SHOWN_FRAMES);
            }
        }
        let shown_sum = fig
            .holding
            .iter()
            .fold(Usage::default(), |a, h| a + h.callsite.retained);
        if shown_sum.bytes < fig.retained.bytes {
            let _ = writeln!(
                out,
                "  ({} held without a recorded callsite)",
                bytes_text(fig.retained.bytes - shown_sum.bytes)
            );
        }
    }
    for n in &fig.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn frame_text(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.function),
        (Some(file), None) => format!("{} ({file})", f.function),
        _ => f.function.clone(),
    }
}

fn usage_text(u: Usage) -> String {
    format!(
        "{} object{} / {}",
        grouped(u.objects),
        if u.objects == 1 { "" } else { "s" },
        bytes_text(u.bytes)
    )
}

fn bytes_text(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else {
        format!("{} B ({})", grouped(b), human_bytes(b))
    }
}

/// Whether `function` is one of the `caller` functions or a closure defined in one.
fn is_test_code(function: &str, caller: &[&str]) -> bool {
    caller.iter().any(|&g| {
        function
            .strip_prefix(g)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::{"))
    })
}

/// Whether a function is allocscope's own.
fn is_allocscope(function: &str) -> bool {
    function.starts_with("allocscope::") || function.starts_with("<allocscope::")
}

/// The instruction pointers of the calling thread's stack (the check's caller, the test, the
/// harness), to tell them from the job's frames in callsites.
fn caller_ips() -> Vec<usize> {
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
fn job_frames(mut frames: Vec<Frame>, caller: &[Frame]) -> Vec<Frame> {
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

fn test_name() -> String {
    let t = std::thread::current();
    t.name().unwrap_or("<unnamed thread>").to_string()
}

// ---------------------------------------------------------------------------------------------
// Check slots: the `[check k]` job names
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct NameSlots {
    /// Slots whose last run left nothing behind.
    free: Vec<u32>,
    /// Slots whose last run left memory behind (or panicked).
    held: Vec<u32>,
    /// Slots handed out so far.
    count: u32,
}

type Baseline = HashMap<(Vec<String>, Vec<Frame>), Usage>;

static SLOTS: OnceLock<Mutex<HashMap<String, NameSlots>>> = OnceLock::new();

fn slots() -> &'static Mutex<HashMap<String, NameSlots>> {
    SLOTS.get_or_init(|| {
        // Registered before the table is published: its lock is always covered.
        crate::fork::register(&SLOTS_AT_FORK);
        Mutex::new(HashMap::new())
    })
}

/// The check-slot table's lock around `fork()`.
struct SlotsAtFork;

impl crate::fork::AtFork for SlotsAtFork {
    fn prepare(&self) {
        if let Some(m) = SLOTS.get() {
            m.prepare();
        }
    }

    unsafe fn release(&self, child: bool) {
        if let Some(m) = SLOTS.get() {
            // SAFETY: per the trait.
            unsafe { m.release(child) };
        }
    }
}

static SLOTS_AT_FORK: SlotsAtFork = SlotsAtFork;

/// A check slot in use: the measured run's job name, and what that job still held before
/// (when the slot is reused while holding memory). Given back when dropped.
struct Lease {
    name: String,
    slot: u32,
    job: String,
    /// What the job held at each callsite when the slot was taken, if it held anything.
    baseline: Option<Baseline>,
    /// Set when the measured run left nothing behind (the slot can be reused as is).
    clean: bool,
}

impl Lease {
    fn acquire(name: &str) -> Lease {
        untracked(|| {
            let lease = |slot: u32, baseline| Lease {
                name: name.to_string(),
                slot,
                job: format!("{name} [check {slot}]"),
                baseline,
                clean: false,
            };
            let held = {
                let mut map = slots().lock();
                let e = map.entry(name.to_string()).or_default();
                if let Some(slot) = e.free.pop() {
                    return lease(slot, None);
                }
                if e.count < SLOTS_PER_NAME || e.held.is_empty() {
                    e.count += 1;
                    return lease(e.count, None);
                }
                std::mem::take(&mut e.held)
            };
            // Every slot of this name holds memory (or is in use). Reuse the one holding the
            // least (nothing, if its memory has been freed since), remembering what it holds.
            let mut snapshots: Vec<(u32, Usage, Vec<CallsiteReport>)> = held
                .iter()
                .map(|&slot| {
                    let (retained, callsites) =
                        crate::report::job_snapshot(&format!("{name} [check {slot}]"))
                            .unwrap_or_default();
                    (slot, retained, callsites)
                })
                .collect();
            snapshots.sort_by_key(|(slot, retained, _)| (retained.bytes, retained.objects, *slot));
            let (best, retained, callsites) = snapshots.swap_remove(0);
            {
                let mut map = slots().lock();
                let e = map.entry(name.to_string()).or_default();
                e.held.extend(snapshots.iter().map(|(slot, _, _)| *slot));
            }
            let baseline: Baseline = if retained.is_zero() {
                Baseline::new()
            } else {
                callsites
                    .into_iter()
                    .filter(|c| !c.retained.is_zero())
                    .map(|c| ((c.scope, c.frames), c.retained))
                    .collect()
            };
            lease(best, (!retained.is_zero()).then_some(baseline))
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        untracked(|| {
            let mut map = slots().lock();
            let e = map.entry(std::mem::take(&mut self.name)).or_default();
            if self.clean && self.baseline.is_none() {
                e.free.push(self.slot);
            } else {
                e.held.push(self.slot);
            }
            drop(map);
            self.baseline = None;
            self.job = String::new();
        });
    }
}

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
