//! Check slots: the `[check k]` job names a check runs as, reused once clean.
//!
//! Rules: a name's slots are bounded (`SLOTS_PER_NAME`); a slot still holding memory is reused
//! only when all are taken, with what it holds remembered as a baseline and subtracted.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::fork::AtFork;
use crate::model::SharedFrames;
use crate::report::{CallsiteReport, Usage};
use crate::thread::untracked;

/// Check slots (`[check k]` job names) kept per check name before slots holding memory are
/// reused.
const SLOTS_PER_NAME: u32 = 8;

#[derive(Default)]
struct NameSlots {
    /// Slots whose last run left nothing behind.
    free: Vec<u32>,
    /// Slots whose last run left memory behind (or panicked).
    held: Vec<u32>,
    /// Slots handed out so far.
    count: u32,
}

pub(super) type Baseline = HashMap<(Vec<String>, SharedFrames), Usage>;

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

impl AtFork for SlotsAtFork {
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
pub(super) struct Lease {
    name: String,
    slot: u32,
    /// The measured run's job name.
    pub(super) job: String,
    /// What the job held at each callsite when the slot was taken, if it held anything.
    pub(super) baseline: Option<Baseline>,
    /// Set when the measured run left nothing behind (the slot can be reused as is).
    pub(super) clean: bool,
}

impl Lease {
    pub(super) fn acquire(name: &str) -> Lease {
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
