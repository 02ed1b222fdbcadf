//! The stack table: every interned stack symbolized and trimmed **once**, kept as ids into a
//! table of unique frames, so that repeated reports only look stacks up.
//!
//! Rules:
//! * A stack (an id of the lock-free stack table, `callsite::intern`) is symbolized the first
//!   time a report meets it; its trimmed frames are stored as a list of frame ids and never
//!   recomputed (stacks are immutable once published). A stack whose frames are not published
//!   yet is symbolized (as no frames) but not remembered.
//! * Distinct stacks that trim to the same frames share one entry (a *trimmed stack*), so a
//!   report groups callsites by trimmed stack with integer keys.
//! * Order: each unique frame and each trimmed stack has a rank in the order of
//!   [`Frame`]'s `Ord` (function, file, line; stacks lexicographically), recomputed only
//!   when a report added entries. Sorting callsites by rank is sorting them by frames.
//! * Bounded: at most one entry per interned stack (`intern::STACK_CAP`, 262,144) and per
//!   distinct trimmed stack; frames are stored once per distinct (function, file, line), a
//!   number bounded by the program's code, and each distinct function name and file is held
//!   once (reports share these strings: building one copies no frame text). Four bytes per
//!   frame of each trimmed stack.
//! * One lock, held for a whole report build (reports are built one at a time); a fork
//!   participant (see `fork`), registered before the symbol cache, which is used while the
//!   table is held: the fork handlers take them in that order too. Runs untracked: its
//!   memory is the tracker's.

use std::collections::HashMap;
use std::sync::Once;

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};

use super::symbolize;
use crate::callsite::intern;
use crate::fork;
use crate::model::{Frame, SharedFrames, SharedStrings};

/// The table; see the module rules.
#[derive(Default)]
pub(crate) struct StackTable {
    /// Unique frames, by id.
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, u32>,
    /// Every distinct function name and file of `frames`, once.
    strings: SharedStrings,
    /// Trimmed stacks (frame ids, innermost first), by id.
    stacks: Vec<Box<[u32]>>,
    stack_ids: HashMap<Box<[u32]>, u32>,
    /// Interned stack id to trimmed stack id.
    of_stack: HashMap<u32, u32>,
    /// Rank of each trimmed stack in frame order; stale when `ranked < stacks.len()` or a
    /// frame was added.
    stack_rank: Vec<u32>,
    ranked: bool,
    /// Calls to the symbolizer (one per stack, plus retries of unpublished stacks).
    symbolized: u64,
}

static TABLE: Mutex<Option<StackTable>> = Mutex::new(None);

/// The table while locked.
pub(crate) type Locked = MappedMutexGuard<'static, StackTable>;

/// The table, locked (for a whole report build). Must run untracked.
pub(crate) fn table() -> Locked {
    register_for_fork();
    MutexGuard::map(TABLE.lock(), |t| t.get_or_insert_with(StackTable::default))
}

/// Registers the table's lock with `fork`, once, before it is first taken. The symbol cache
/// calls this before registering itself: the table is held while the symbol cache is used,
/// so the fork handlers must take the table first (the same order as every report).
pub(crate) fn register_for_fork() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| fork::register(&TABLE));
}

impl StackTable {
    /// The trimmed stack of interned stack `stack`, symbolizing it the first time.
    pub(crate) fn stack_of(&mut self, stack: u32) -> u32 {
        if let Some(&id) = self.of_stack.get(&stack) {
            return id;
        }
        let ips = intern::stack_frames(stack);
        let frames = symbolize::symbolize(&ips);
        self.symbolized += 1;
        let ids: Box<[u32]> = frames.into_iter().map(|f| self.frame_id(f)).collect();
        let id = match self.stack_ids.get(&ids) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.push(ids.clone());
                self.stack_ids.insert(ids, id);
                self.ranked = false;
                id
            }
        };
        if !ips.is_empty() {
            self.of_stack.insert(stack, id);
        }
        id
    }

    fn frame_id(&mut self, f: Frame) -> u32 {
        if let Some(&id) = self.frame_ids.get(&f) {
            return id;
        }
        // One copy of each function name and file for all frames (a function has a frame
        // per line it calls from; a file, one per function in it).
        let f = self.strings.frame(f);
        let id = self.frames.len() as u32;
        self.frames.push(f.clone());
        self.frame_ids.insert(f, id);
        self.ranked = false;
        id
    }

    /// Rank of each trimmed stack in frame order (lexicographic over [`Frame`]'s order).
    pub(crate) fn ranks(&mut self) -> &[u32] {
        if !self.ranked {
            let mut by_frame: Vec<u32> = (0..self.frames.len() as u32).collect();
            by_frame
                .sort_unstable_by(|&a, &b| self.frames[a as usize].cmp(&self.frames[b as usize]));
            let mut frame_rank = vec![0u32; self.frames.len()];
            for (rank, &id) in by_frame.iter().enumerate() {
                frame_rank[id as usize] = rank as u32;
            }
            let keys: Vec<Vec<u32>> = self
                .stacks
                .iter()
                .map(|s| s.iter().map(|&f| frame_rank[f as usize]).collect())
                .collect();
            let mut by_stack: Vec<u32> = (0..self.stacks.len() as u32).collect();
            by_stack.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
            self.stack_rank = vec![0u32; self.stacks.len()];
            for (rank, &id) in by_stack.iter().enumerate() {
                self.stack_rank[id as usize] = rank as u32;
            }
            self.ranked = true;
        }
        &self.stack_rank
    }

    /// (Stacks symbolized so far, distinct frames held.)
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.symbolized, self.frames.len() as u64)
    }

    /// The frame ids of trimmed stack `id` (innermost first), indexes of [`Self::frame_table`].
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn frame_ids(&self, id: u32) -> &[u32] {
        self.stacks.get(id as usize).map_or(&[], |s| s)
    }

    /// Every distinct frame, by frame id.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn frame_table(&self) -> &[Frame] {
        &self.frames
    }

    /// The frames of trimmed stack `id` (innermost first), one copy for every callsite of a
    /// report that has this stack.
    pub(crate) fn frames(&self, id: u32) -> SharedFrames {
        self.stacks
            .get(id as usize)
            .map_or_else(SharedFrames::default, |s| {
                s.iter().map(|&f| self.frames[f as usize].clone()).collect()
            })
    }
}
