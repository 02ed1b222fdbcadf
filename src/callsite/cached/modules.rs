//! Module discovery: the snapshot of loaded modules with copies of their `.eh_frame_hdr` and
//! `.eh_frame`, found through `dl_iterate_phdr`, published behind an atomic pointer and rebuilt
//! when a return address outside every known module is met (rules at the top of
//! `cached/mod.rs`).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};
use std::sync::Arc;

use framehop::x86_64::UnwinderX86_64;
use framehop::{ExplicitModuleSectionInfo, MayAllocateDuringUnwind, Module, Unwinder};
use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection};
use parking_lot::Mutex;

/// A copied section.
type Data = Arc<[u8]>;
/// framehop's unwinder over the copied sections.
pub(super) type ArchUnwinder = UnwinderX86_64<Data, MayAllocateDuringUnwind>;

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
pub(super) struct Snapshot {
    /// Distinguishes snapshots in the fast rule tables (a module may be loaded where
    /// another one was).
    pub(super) gen: u32,
    pub(super) unwinder: ArchUnwinder,
    /// Sorted, non-overlapping run-time code ranges of `modules`.
    ranges: Vec<(u64, u64)>,
    modules: Vec<Arc<ModuleData>>,
}

impl Snapshot {
    pub(super) fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        let r = *self.ranges.get(i.checked_sub(1)?)?;
        (addr < r.1).then_some(r)
    }

    /// Whether the module holding `addr` has a frame description entry covering it.
    /// framehop unwinds a frame without one with the frame-pointer rule; without frame
    /// pointers that rule reads whatever `bp` holds, so such a frame ends the stack here
    /// instead (as libgcc's unwinder ends it).
    pub(super) fn has_fde(&self, addr: u64) -> bool {
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
/// Pages (address >> 12, plus 1) found in no module at the last rescan.
static UNKNOWN: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// The current snapshot, building the first one if needed.
#[inline]
pub(super) fn snapshot() -> Option<&'static Snapshot> {
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
pub(super) fn refresh(addr: u64) -> Option<(&'static Snapshot, (u64, u64))> {
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
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
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
    let hdr_bytes = unsafe { core::slice::from_raw_parts(hdr_avma as *const u8, hdr_len as usize) };
    // The header gives the run-time address of `.eh_frame` (gimli decodes its pointer encoding,
    // relative to the header's own run-time address).
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_avma);
    let parsed = EhFrameHdr::new(hdr_bytes, LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    let eh_avma = parsed.eh_frame_ptr().direct().ok()?;
    let eh_svma = eh_avma.wrapping_sub(bias);
    let eh_end = segment_end(eh_svma)?;
    // The section's length: its records up to the zero terminator (or the segment's end).
    let mut at = eh_svma;
    while at + 4 <= eh_end {
        // SAFETY: `at + 4 <= eh_end`, inside the mapped segment.
        let len = unsafe { core::ptr::read_unaligned(bias.wrapping_add(at) as *const u32) } as u64;
        if len == 0 {
            break;
        }
        let (len, head) = if len == 0xffff_ffff {
            if at + 12 > eh_end {
                break;
            }
            // SAFETY: `at + 12 <= eh_end`, inside the mapped segment.
            let l = unsafe { core::ptr::read_unaligned(bias.wrapping_add(at + 4) as *const u64) };
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
    let eh_bytes = unsafe { core::slice::from_raw_parts(eh_avma as *const u8, eh_len as usize) };
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // gimli's reading of the header points at a section that starts with a CIE (id 0).
        let m = snap
            .modules
            .iter()
            .find(|m| m.code.0 <= here && here < m.code.1)
            .unwrap();
        assert_eq!(&m.eh_frame[4..8], &[0, 0, 0, 0]);
        assert!(snap.has_fde(here));
    }
}
