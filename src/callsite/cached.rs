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
//!   records no stack). A slot's caches are allocated on its first capture (about 60 KiB,
//!   tracker overhead) and reused by the slot's later owners. A thread without a slot uses
//!   libgcc instead.
//! * **Our own rule table in front of framehop's.** framehop's cache is direct-mapped on
//!   `address % 509`: two return addresses of a hot stack that collide there evict each other
//!   on every capture, and each miss re-evaluates the CFI (thousands of instructions; it made
//!   the threads benchmark 31× instead of ~7×); and running its generic rule through the
//!   `read_stack` closure costs ~130 instructions a frame. So each return address's rule is
//!   kept in a 2048-entry, 2-way set-associative table indexed by a multiplicative hash (a
//!   direct-mapped table let two hot addresses that shared a slot evict each other on every
//!   stack: +35% instructions on churn after an unrelated layout change), in one form
//!   (`CFA = sp|bp + offset`, return address at `CFA - 8`, bp unchanged or at `CFA + offset`),
//!   and executed inline. The rule is learnt once per address by letting framehop unwind that
//!   frame on a synthetic stack (`probe`), checked by a second probe; a frame whose rule does
//!   not fit that form (a DWARF expression) is unwound by framehop every time. Evaluation on a
//!   framehop miss may allocate (gimli's heap storage): the thread is busy, so that is tracker
//!   overhead. Evaluation on a miss
//!   may allocate (gimli's heap storage): the thread is busy, so that is tracker overhead.
//! * **Never a crash**: the only memory read during an unwind outside our own copies is the
//!   stack, through `read_stack`, which accepts only 8-aligned addresses between the current
//!   frame and the top of this thread's stack. A frame with no unwind information (a module
//!   without `.eh_frame_hdr`, or a function without a frame description entry in a module that
//!   has one), an unknown module, or a failed read ends the stack. When running on another stack than the thread's
//!   own (a signal's alternate stack) the caller falls back to libgcc.
//! * Supported on Linux x86_64; elsewhere [`walk`] returns `None` and libgcc is used.

/// Whether the caching unwinder works on this target.
pub(crate) const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use imp::walk;

/// On unsupported targets: never walks (the caller uses libgcc).
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub(crate) fn walk(
    _t: &crate::thread::ThreadState,
    _buf: &mut [core::mem::MaybeUninit<usize>],
) -> Option<(usize, u64)> {
    None
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use core::ffi::{c_int, c_void};
    use core::mem::MaybeUninit;
    use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};
    use std::sync::Arc;

    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{
        ExplicitModuleSectionInfo, FrameAddress, MayAllocateDuringUnwind, Module, Unwinder,
    };
    use parking_lot::Mutex;

    use crate::callsite::intern;
    use crate::thread::{self, ThreadState, MAX_THREADS};

    type Data = Arc<[u8]>;
    type Cache = CacheX86_64<MayAllocateDuringUnwind>;
    type ArchUnwinder = UnwinderX86_64<Data, MayAllocateDuringUnwind>;

    /// A slot's caches: the fast rule table, and framehop's cache for the rules it computes.
    struct Caches {
        fast: Box<[Fast]>,
        framehop: Cache,
    }

    /// Entries of the per-slot fast rule table (2-way set-associative on a hash of the
    /// address: 1024 sets of 2).
    const FAST_ENTRIES: usize = 2048;
    const FAST_EMPTY: u8 = 0;
    /// CFA = sp + cfa_off.
    const FAST_SP: u8 = 1;
    /// CFA = bp + cfa_off.
    const FAST_BP: u8 = 2;
    /// No caller frame (end of the stack, or a frame that cannot be unwound).
    const FAST_END: u8 = 3;
    /// Not expressible here: ask framehop each time.
    const FAST_SLOW: u8 = 4;

    /// One cached unwind rule, in the form every rule framehop caches on x86_64 reduces to:
    /// `CFA = (sp or bp) + cfa_off`, return address at `CFA - 8`, caller's sp = CFA, caller's
    /// bp unchanged or read at `CFA + bp_off`.
    #[derive(Clone, Copy)]
    struct Fast {
        /// Lookup address (return address - 1).
        key: u64,
        /// Snapshot generation the rule was computed in.
        gen: u32,
        kind: u8,
        bp_saved: bool,
        cfa_off: i32,
        bp_off: i32,
    }

    const FAST_NONE: Fast = Fast {
        key: 0,
        gen: 0,
        kind: FAST_EMPTY,
        bp_saved: false,
        cfa_off: 0,
        bp_off: 0,
    };

    #[inline]
    fn fast_index(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FAST_ENTRIES.trailing_zeros())) as usize
    }

    /// Computes the fast rule of a return address by letting framehop unwind that one frame
    /// on a synthetic stack whose every word holds its own address (plus a tag): where the
    /// caller's sp lands, where the return address and the caller's bp were read from, give
    /// the rule. A second probe with other register values must agree, or the frame is left
    /// to framehop (`FAST_SLOW`: e.g. a CFA computed by a DWARF expression).
    #[cold]
    #[inline(never)]
    fn probe(snap: &Snapshot, address: FrameAddress, cache: &mut Cache, key: u64) -> Fast {
        const TAG: u64 = 0x4000_0000_0000_0000;
        let mut read = |a: u64| -> Result<u64, ()> { Ok(a.wrapping_add(TAG)) };
        let run =
            |sp: u64, bp: u64, cache: &mut Cache, read: &mut dyn FnMut(u64) -> Result<u64, ()>| {
                let mut regs = UnwindRegsX86_64::new(0, sp, bp);
                let r = snap
                    .unwinder
                    .unwind_frame(address, &mut regs, cache, &mut |a| read(a));
                (r, regs.sp(), regs.bp())
            };
        let mut out = Fast {
            key,
            gen: snap.gen,
            ..FAST_NONE
        };
        let (s1, b1) = (0x1000_0000_0000u64, 0x2000_0000_0000u64);
        let (r, sp, bp) = run(s1, b1, cache, &mut read);
        let ret = match r {
            Ok(Some(ret)) => ret,
            _ => {
                out.kind = FAST_END;
                return out;
            }
        };
        let off = |v: u64, base: u64| i32::try_from(v.wrapping_sub(base) as i64).ok();
        let slow = Fast {
            kind: FAST_SLOW,
            ..out
        };
        let (kind, cfa_off) = match (off(sp, s1), off(sp, b1)) {
            (Some(o), _) => (FAST_SP, o),
            (_, Some(o)) => (FAST_BP, o),
            _ => return slow,
        };
        if ret != sp.wrapping_sub(8).wrapping_add(TAG) {
            return slow;
        }
        out.kind = kind;
        out.cfa_off = cfa_off;
        if bp != b1 {
            match off(bp.wrapping_sub(TAG), sp) {
                Some(o) => {
                    out.bp_saved = true;
                    out.bp_off = o;
                }
                None => return slow,
            }
        }
        if kind == FAST_BP
            && cfa_off == 16
            && out.bp_saved
            && out.bp_off == -16
            && !snap.has_fde(key)
        {
            out.kind = FAST_END;
            return out;
        }
        // The second probe: other registers, the same rule must predict the result.
        let (s2, b2) = (0x1800_0000_0000u64, 0x2800_0000_0000u64);
        let (r2, sp2, bp2) = run(s2, b2, cache, &mut read);
        let cfa2 = if kind == FAST_SP { s2 } else { b2 }.wrapping_add(cfa_off as i64 as u64);
        let bp_expect = if out.bp_saved {
            cfa2.wrapping_add(out.bp_off as i64 as u64)
                .wrapping_add(TAG)
        } else {
            b2
        };
        let ok = matches!(r2, Ok(Some(r)) if r == cfa2.wrapping_sub(8).wrapping_add(TAG))
            && sp2 == cfa2
            && bp2 == bp_expect;
        if ok {
            out
        } else {
            slow
        }
    }

    /// One loaded module's unwind data, copied out of its mapping.
    struct ModuleData {
        name: String,
        /// Load bias (`dlpi_addr`): run-time address = file address + bias.
        bias: u64,
        /// Run-time range of its executable segments.
        code: (u64, u64),
        hdr_svma: u64,
        hdr: Data,
        eh_frame_svma: u64,
        eh_frame: Data,
    }

    /// An immutable set of known modules and the unwinder built from them.
    struct Snapshot {
        /// Distinguishes snapshots in the fast rule tables (a module may be loaded where
        /// another one was).
        gen: u32,
        unwinder: ArchUnwinder,
        /// Sorted, non-overlapping run-time code ranges of `modules`.
        ranges: Vec<(u64, u64)>,
        modules: Vec<Arc<ModuleData>>,
    }

    impl Snapshot {
        fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
            let i = self.ranges.partition_point(|r| r.0 <= addr);
            let r = *self.ranges.get(i.checked_sub(1)?)?;
            (addr < r.1).then_some(r)
        }

        /// Whether the module holding `addr` has a frame description entry covering it.
        /// framehop unwinds a frame without one with the frame-pointer rule; without frame
        /// pointers that rule reads whatever `bp` holds, so such a frame ends the stack here
        /// instead (as libgcc's unwinder ends it).
        fn has_fde(&self, addr: u64) -> bool {
            use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection};
            let i = self.ranges.partition_point(|r| r.0 <= addr);
            let Some(m) = i.checked_sub(1).and_then(|i| self.modules.get(i)) else {
                return false;
            };
            if addr >= m.code.1 {
                return false;
            }
            let bases = BaseAddresses::default()
                .set_eh_frame_hdr(m.hdr_svma)
                .set_eh_frame(m.eh_frame_svma);
            let Ok(hdr) = EhFrameHdr::new(&m.hdr, LittleEndian).parse(&bases, 8) else {
                return false;
            };
            let Some(table) = hdr.table() else {
                return false;
            };
            let eh = EhFrame::new(&m.eh_frame, LittleEndian);
            let svma = addr.wrapping_sub(m.bias);
            table
                .fde_for_address(&eh, &bases, svma, EhFrame::cie_from_offset)
                .is_ok()
        }
    }

    static SNAPSHOT: AtomicPtr<Snapshot> = AtomicPtr::new(core::ptr::null_mut());
    /// Serialises snapshot rebuilds (cold; only `try_lock`ed from the allocation path).
    static BUILD: Mutex<()> = Mutex::new(());
    /// The rule caches of each thread slot, allocated on the slot's first capture.
    static CACHES: [AtomicPtr<Caches>; MAX_THREADS] =
        [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];
    /// Pages (address >> 12, plus 1) found in no module at the last rescan.
    static UNKNOWN: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

    /// Records up to `buf.len()` return addresses, starting with the caller of this function,
    /// and their running hash. `None` when this thread cannot use the caching unwinder now
    /// (no slot, not on its own stack, no module data): the caller falls back to libgcc.
    #[inline(never)]
    pub(crate) fn walk(t: &ThreadState, buf: &mut [MaybeUninit<usize>]) -> Option<(usize, u64)> {
        let slot = thread::slot_index(t)?;
        let (stack_lo, hi) = super::super::capture::thread_stack(t)?;
        let (pc, sp, bp): (u64, u64, u64);
        // SAFETY: reads the instruction pointer, stack pointer and frame-pointer register into
        // locals; no memory is touched.
        unsafe {
            core::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags)
            );
        }
        let lo = sp as usize;
        // On another stack than the thread's own (a signal's alternate stack): let libgcc,
        // which knows signal frames, do it.
        if lo < stack_lo || lo >= hi {
            return None;
        }
        let mut snap = snapshot()?;
        let caches = cache_for(slot)?;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let a = addr as usize;
            if a < lo || a % 8 != 0 || a > hi.saturating_sub(8) {
                return Err(());
            }
            // SAFETY: `lo <= a` and `a + 8 <= hi`: inside this thread's mapped stack, from the
            // current frame to its top, and 8-aligned.
            Ok(unsafe { core::ptr::read_volatile(a as *const u64) })
        };
        let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
        let mut address = FrameAddress::from_instruction_pointer(pc);
        let mut n = 0;
        let mut h = intern::HASH_START;
        // The code range of the last frame's module: consecutive frames are usually in the
        // same module, so most frames skip the search.
        let mut known = snap.range_of(pc).unwrap_or((0, 0));
        while n < buf.len() {
            // The cached rule of a return address; the first frame (the current pc) has none.
            let fast = if address.is_return_address() {
                let key = address.address_for_lookup();
                let set = fast_index(key) & !1;
                let Some([w0, w1]) = caches.fast.get_mut(set..set + 2) else {
                    break;
                };
                let hit = |w: &Fast| w.key == key && w.gen == snap.gen;
                let e: Fast = if hit(w0) {
                    *w0
                } else if hit(w1) {
                    *w1
                } else {
                    // Two ways: the newcomer takes way 0, the previous way 0 moves to way 1,
                    // so two addresses sharing a set never evict each other.
                    *w1 = *w0;
                    *w0 = probe(snap, address, &mut caches.framehop, key);
                    *w0
                };
                Some(e)
            } else {
                None
            };
            let ret = match fast {
                Some(e) if e.kind == FAST_END => break,
                Some(e) if e.kind == FAST_SP || e.kind == FAST_BP => {
                    let base = if e.kind == FAST_SP {
                        regs.sp()
                    } else {
                        regs.bp()
                    };
                    let cfa = base.wrapping_add(e.cfa_off as i64 as u64);
                    if cfa <= regs.sp() {
                        break;
                    }
                    let Ok(ret) = read_stack(cfa.wrapping_sub(8)) else {
                        break;
                    };
                    if e.bp_saved {
                        let Ok(bp) = read_stack(cfa.wrapping_add(e.bp_off as i64 as u64)) else {
                            break;
                        };
                        regs.set_bp(bp);
                    }
                    regs.set_sp(cfa);
                    ret
                }
                // The first frame, or a rule the fast form cannot express: framehop, every
                // time.
                _ => match snap.unwinder.unwind_frame(
                    address,
                    &mut regs,
                    &mut caches.framehop,
                    &mut read_stack,
                ) {
                    Ok(Some(ret)) => ret,
                    _ => break,
                },
            };
            if ret == 0 {
                break;
            }
            buf[n] = MaybeUninit::new(ret as usize);
            h = intern::mix(h, ret);
            n += 1;
            if ret < known.0 || ret >= known.1 {
                match snap.range_of(ret) {
                    Some(r) => known = r,
                    None => match refresh(ret) {
                        Some((s, r)) => {
                            snap = s;
                            known = r;
                        }
                        // No module has it: this frame cannot be unwound, the stack ends.
                        None => break,
                    },
                }
            }
            match FrameAddress::from_return_address(ret) {
                Some(a) => address = a,
                None => break,
            }
        }
        Some((n, h))
    }

    /// The current snapshot, building the first one if needed.
    #[inline]
    fn snapshot() -> Option<&'static Snapshot> {
        let p = SNAPSHOT.load(Acquire);
        if p.is_null() {
            return first_snapshot();
        }
        // SAFETY: non-null snapshots are leaked boxes, published with Release after being
        // fully built, and never freed or mutated.
        Some(unsafe { &*p })
    }

    #[cold]
    #[inline(never)]
    fn first_snapshot() -> Option<&'static Snapshot> {
        let _guard = BUILD.try_lock()?;
        let p = SNAPSHOT.load(Acquire);
        if !p.is_null() {
            // SAFETY: as in `snapshot`.
            return Some(unsafe { &*p });
        }
        Some(publish(build(&[])))
    }

    /// A return address outside every known module: rescan the loaded modules and, if one
    /// contains it, publish a new snapshot.
    #[cold]
    #[inline(never)]
    fn refresh(addr: u64) -> Option<(&'static Snapshot, (u64, u64))> {
        let page = (addr >> 12) + 1;
        let slot = &UNKNOWN[(page % UNKNOWN.len() as u64) as usize];
        if slot.load(Relaxed) == page {
            return None;
        }
        let _guard = BUILD.try_lock()?;
        // SAFETY: as in `snapshot` (a snapshot exists: `walk` got one before calling this).
        let current = unsafe { SNAPSHOT.load(Acquire).as_ref()? };
        if let Some(r) = current.range_of(addr) {
            // Another thread already rebuilt.
            return Some((current, r));
        }
        let next = build(&current.modules);
        match next.range_of(addr) {
            Some(r) => {
                for u in &UNKNOWN {
                    u.store(0, Relaxed);
                }
                Some((publish(next), r))
            }
            None => {
                slot.store(page, Relaxed);
                None
            }
        }
    }

    fn publish(mut s: Snapshot) -> &'static Snapshot {
        static GEN: AtomicU64 = AtomicU64::new(1);
        s.gen = GEN.fetch_add(1, Relaxed) as u32;
        let s: &'static Snapshot = Box::leak(Box::new(s));
        // The previous snapshot is left in place for threads still reading it (see the module
        // rules: never freed).
        SNAPSHOT.store(s as *const Snapshot as *mut Snapshot, Release);
        s
    }

    /// This slot's rule caches, allocated on first use.
    #[inline]
    fn cache_for(slot: usize) -> Option<&'static mut Caches> {
        let cell = CACHES.get(slot)?;
        let mut p = cell.load(Relaxed);
        if p.is_null() {
            p = new_cache(cell);
        }
        // SAFETY: the cache is a leaked box owned by this slot; the slot's single owner thread
        // is the only user, and not reentrantly (capture runs with the thread marked busy).
        unsafe { p.as_mut() }
    }

    #[cold]
    #[inline(never)]
    fn new_cache(cell: &AtomicPtr<Caches>) -> *mut Caches {
        let p = Box::into_raw(Box::new(Caches {
            fast: vec![FAST_NONE; FAST_ENTRIES].into_boxed_slice(),
            framehop: Cache::new(),
        }));
        cell.store(p, Relaxed);
        p
    }

    /// Builds a snapshot of the currently loaded modules, reusing the copied data of modules
    /// already in `previous` (same name, bias and code range).
    fn build(previous: &[Arc<ModuleData>]) -> Snapshot {
        let mut found: Vec<ModuleData> = Vec::new();
        // SAFETY: `collect` matches the `dl_iterate_phdr` callback signature and only reads
        // the `dl_phdr_info` it is given, during the call; `data` is `&mut found`.
        unsafe {
            libc::dl_iterate_phdr(Some(collect), (&mut found as *mut Vec<ModuleData>).cast());
        }
        let mut modules: Vec<Arc<ModuleData>> = found
            .into_iter()
            .map(|m| {
                previous
                    .iter()
                    .find(|p| p.name == m.name && p.bias == m.bias && p.code == m.code)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(m))
            })
            .collect();
        modules.sort_by_key(|m| m.code.0);
        // Overlapping ranges would make `range_of` ambiguous: keep the first.
        modules.dedup_by(|b, a| b.code.0 < a.code.1);
        let mut unwinder = ArchUnwinder::new();
        for m in &modules {
            let hdr_len = m.hdr.len() as u64;
            let eh_len = m.eh_frame.len() as u64;
            unwinder.add_module(Module::new(
                m.name.clone(),
                m.code.0..m.code.1,
                m.bias,
                ExplicitModuleSectionInfo {
                    base_svma: 0,
                    eh_frame_hdr_svma: Some(m.hdr_svma..m.hdr_svma + hdr_len),
                    eh_frame_hdr: Some(m.hdr.clone()),
                    eh_frame_svma: Some(m.eh_frame_svma..m.eh_frame_svma + eh_len),
                    eh_frame: Some(m.eh_frame.clone()),
                    ..Default::default()
                },
            ));
        }
        Snapshot {
            gen: 0,
            unwinder,
            ranges: modules.iter().map(|m| m.code).collect(),
            modules,
        }
    }

    /// `dl_iterate_phdr` callback: copies one module's unwind sections into `data`.
    unsafe extern "C" fn collect(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the call, and
        // `data` is the `&mut Vec<ModuleData>` given to `dl_iterate_phdr` by `build`.
        unsafe {
            let out = &mut *data.cast::<Vec<ModuleData>>();
            if let Some(m) = module_data(&*info) {
                out.push(m);
            }
        }
        0
    }

    /// Reads one module's program headers and copies its `.eh_frame_hdr` and `.eh_frame`.
    ///
    /// # Safety
    /// `info` must describe a module currently loaded (as `dl_iterate_phdr` guarantees during
    /// its callback): its program headers and `PT_LOAD` segments are mapped.
    unsafe fn module_data(info: &libc::dl_phdr_info) -> Option<ModuleData> {
        if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
            return None;
        }
        let bias = info.dlpi_addr;
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers (caller's guarantee).
        let phdrs =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let mut code = (u64::MAX, 0u64);
        let mut hdr = None;
        for ph in phdrs {
            match ph.p_type {
                libc::PT_LOAD if ph.p_flags & libc::PF_X != 0 => {
                    code.0 = code.0.min(bias.wrapping_add(ph.p_vaddr));
                    code.1 = code.1.max(bias.wrapping_add(ph.p_vaddr + ph.p_memsz));
                }
                libc::PT_GNU_EH_FRAME => hdr = Some((ph.p_vaddr, ph.p_memsz)),
                _ => {}
            }
        }
        let (hdr_svma, hdr_len) = hdr?;
        if code.0 >= code.1 || hdr_len < 8 {
            return None;
        }
        // The end of the readable segment holding an address: reads stay inside it.
        let segment_end = |svma: u64| {
            phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD)
                .find(|p| p.p_vaddr <= svma && svma < p.p_vaddr + p.p_memsz)
                .map(|p| p.p_vaddr + p.p_filesz.min(p.p_memsz))
        };
        let hdr_end = segment_end(hdr_svma)?;
        if hdr_svma + hdr_len > hdr_end {
            return None;
        }
        let hdr_avma = bias.wrapping_add(hdr_svma);
        // SAFETY: the header lies inside a mapped PT_LOAD segment (checked just above).
        let hdr_bytes =
            unsafe { core::slice::from_raw_parts(hdr_avma as *const u8, hdr_len as usize) };
        // .eh_frame_hdr: version 1, eh_frame_ptr encoding, count encoding, table encoding, then
        // eh_frame_ptr.
        if hdr_bytes[0] != 1 {
            return None;
        }
        let eh_avma = read_encoded(hdr_bytes[1], &hdr_bytes[4..], hdr_avma + 4)?;
        let eh_svma = eh_avma.wrapping_sub(bias);
        let eh_end = segment_end(eh_svma)?;
        // The section's length: its records up to the zero terminator (or the segment's end).
        let mut at = eh_svma;
        while at + 4 <= eh_end {
            // SAFETY: `at + 4 <= eh_end`, inside the mapped segment.
            let len =
                unsafe { core::ptr::read_unaligned(bias.wrapping_add(at) as *const u32) } as u64;
            if len == 0 {
                break;
            }
            let (len, head) = if len == 0xffff_ffff {
                if at + 12 > eh_end {
                    break;
                }
                // SAFETY: `at + 12 <= eh_end`, inside the mapped segment.
                let l =
                    unsafe { core::ptr::read_unaligned(bias.wrapping_add(at + 4) as *const u64) };
                (l, 12)
            } else {
                (len, 4)
            };
            match at.checked_add(head).and_then(|a| a.checked_add(len)) {
                Some(next) if next <= eh_end => at = next,
                _ => break,
            }
        }
        let eh_len = at - eh_svma;
        if eh_len == 0 {
            return None;
        }
        // SAFETY: `[eh_svma, at)` was checked to lie inside a mapped segment.
        let eh_bytes =
            unsafe { core::slice::from_raw_parts(eh_avma as *const u8, eh_len as usize) };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader,
            // valid during the callback.
            unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        Some(ModuleData {
            name,
            bias,
            code,
            hdr_svma,
            hdr: Arc::from(hdr_bytes),
            eh_frame_svma: eh_svma,
            eh_frame: Arc::from(eh_bytes),
        })
    }

    /// Decodes a `DW_EH_PE_*` encoded pointer at the start of `bytes`, found at run-time
    /// address `at` (for pc-relative encodings). Only the encodings `.eh_frame_hdr` uses.
    fn read_encoded(enc: u8, bytes: &[u8], at: u64) -> Option<u64> {
        let value = match enc & 0x0f {
            0x03 => u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as u64,
            0x0b => i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as i64 as u64,
            0x04 | 0x0c => u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(value),
            0x10 => Some(at.wrapping_add(value)),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encoded_pointers() {
            assert_eq!(read_encoded(0x1b, &(-16i32).to_le_bytes(), 100), Some(84));
            assert_eq!(read_encoded(0x03, &7u32.to_le_bytes(), 100), Some(7));
            assert_eq!(read_encoded(0x1c, &8u64.to_le_bytes(), 100), Some(108));
            assert_eq!(read_encoded(0x3b, &8u32.to_le_bytes(), 100), None);
            assert_eq!(read_encoded(0x1b, &[1, 2], 100), None);
        }

        #[test]
        fn finds_this_module() {
            let snap = build(&[]);
            let here = finds_this_module as *const () as usize as u64;
            assert!(
                snap.range_of(here).is_some(),
                "{} modules",
                snap.modules.len()
            );
            assert!(snap.modules.iter().all(|m| !m.eh_frame.is_empty()));
        }
    }
}
