//! The symbol tables of the loaded objects: which function symbol encloses an address.
//!
//! The symbolizer asks it for the *enclosing symbol* of an instruction pointer: the function
//! the code was compiled into, named by its full mangled path. DWARF gives only a short name
//! (`{closure#0}`, `append_to_cache`) under `debug = "line-tables-only"`; the symbol table
//! gives the path (`worker::main::{{closure}}`) in every profile, `debug = 0` included (Cargo
//! keeps the symbol table unless `strip = "symbols"`).
//!
//! Rules:
//! * report time only (never on the allocation path); the callers run untracked, so what this
//!   reads is the tracker's memory;
//! * an object file's table is read the first time an address in it is looked up: function
//!   symbols of `.symtab` (`.dynsym` when the file has no `.symtab`), sorted by address, names
//!   kept mangled; the file is mapped read-only while it is read, and unmapped after;
//! * the tables are dropped by [`clear`] with the symbolizer's other parsed debug information
//!   (after each report): resolved addresses stay in the symbolizer's cache;
//! * one lock, a `fork` participant registered before its first use, after the stack table (held
//!   while it is taken).

use std::collections::HashMap;
use std::path::PathBuf;

use std::sync::Once;

use parking_lot::{Mutex, MutexGuard};

/// A loaded object: where it is mapped and which file it came from.
struct Loaded {
    /// Run-time address = file address + bias.
    bias: usize,
    /// Run-time ranges of its `PT_LOAD` segments.
    ranges: Vec<(usize, usize)>,
    path: PathBuf,
}

/// One object's function symbols, sorted by address: (address, size, mangled name).
type Table = Vec<(u64, u64, Box<str>)>;

#[derive(Default)]
pub(crate) struct State {
    loaded: Vec<Loaded>,
    /// By index in `loaded`; `None` when the file could not be read.
    tables: HashMap<usize, Option<Table>>,
    /// Full function names (as frames show them) to the mangled symbol they were read from,
    /// for pprof's `system_name`; kept across [`clear`] (one entry per function met).
    system: HashMap<Box<str>, Box<str>>,
}

/// The state, behind the one lock (see the module rules).
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The state, locked; its lock is registered with `fork` before its first use, after the stack
/// table's (held while this one is taken: the fork handlers take them in that order too).
fn state() -> MutexGuard<'static, Option<State>> {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        super::stacks::register_for_fork();
        crate::fork::register(&STATE);
    });
    STATE.lock()
}

/// The mangled names of the function symbols enclosing `addr` (an address inside the code,
/// not a return address: the caller subtracts one), several when symbols alias one address.
/// Empty when no loaded object's symbol table covers it.
pub(crate) fn symbols_at(addr: usize) -> Vec<String> {
    let mut guard = state();
    let state = guard.get_or_insert_with(State::default);
    let mut index = state.find(addr);
    if index.is_none() {
        // A library loaded since the last scan (or the first lookup).
        state.loaded = loaded_objects();
        state.tables.clear();
        index = state.find(addr);
    }
    let Some(index) = index else {
        return Vec::new();
    };
    let svma = (addr - state.loaded[index].bias) as u64;
    let path = state.loaded[index].path.clone();
    let table = state
        .tables
        .entry(index)
        .or_insert_with(|| read_table(&path));
    let Some(table) = table else {
        return Vec::new();
    };
    // The last symbol starting at or before `svma`, and the others at its address.
    let end = table.partition_point(|s| s.0 <= svma);
    let Some(last) = end.checked_sub(1) else {
        return Vec::new();
    };
    let start = table[last].0;
    table[..end]
        .iter()
        .rev()
        .take_while(|s| s.0 == start)
        .filter(|s| s.1 == 0 || svma < s.0 + s.1)
        .map(|s| s.2.to_string())
        .collect()
}

/// Remembers that frames named `function` come from the mangled symbol `mangled`.
pub(crate) fn remember_system_name(function: &str, mangled: &str) {
    let mut guard = state();
    let state = guard.get_or_insert_with(State::default);
    if !state.system.contains_key(function) {
        state.system.insert(function.into(), mangled.into());
    }
}

/// The mangled symbol a function name was read from, when this process symbolized it.
#[cfg_attr(not(feature = "pprof"), allow(dead_code))]
pub(crate) fn system_name(function: &str) -> Option<String> {
    state()
        .as_ref()
        .and_then(|s| s.system.get(function))
        .map(|m| m.to_string())
}

/// Drops the symbol tables read so far (see the module rules).
pub(crate) fn clear() {
    if let Some(state) = state().as_mut() {
        state.tables = HashMap::new();
    }
}

impl State {
    fn find(&self, addr: usize) -> Option<usize> {
        self.loaded
            .iter()
            .position(|l| l.ranges.iter().any(|&(a, b)| a <= addr && addr < b))
    }
}

/// The objects loaded now: none where `dl_iterate_phdr` and 64-bit ELF are not what the
/// platform has (names then stay as DWARF gives them).
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn loaded_objects() -> Vec<Loaded> {
    Vec::new()
}

/// The objects loaded now (`dl_iterate_phdr`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn loaded_objects() -> Vec<Loaded> {
    unsafe extern "C" fn collect(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec<Loaded>` passed to `dl_iterate_phdr` below, used by
        // nothing else during the call; `info` is valid for the duration of the callback.
        let (out, info) = unsafe { (&mut *data.cast::<Vec<Loaded>>(), &*info) };
        let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of a loaded object.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
        };
        let bias = info.dlpi_addr as usize;
        let ranges: Vec<(usize, usize)> = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| {
                let start = bias.wrapping_add(p.p_vaddr as usize);
                (start, start.wrapping_add(p.p_memsz as usize))
            })
            .collect();
        let name = if info.dlpi_name.is_null() {
            Vec::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader,
            // valid during the callback.
            unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }
                .to_bytes()
                .to_vec()
        };
        // The main program has an empty name.
        let path = if name.is_empty() {
            std::fs::read_link("/proc/self/exe").unwrap_or_default()
        } else {
            use std::os::unix::ffi::OsStringExt;
            PathBuf::from(std::ffi::OsString::from_vec(name))
        };
        if !ranges.is_empty() {
            out.push(Loaded { bias, ranges, path });
        }
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: `collect` matches the callback signature and only reads what the loader passes
    // it; `out` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<Loaded>).cast());
    }
    out
}

/// The function symbols of the file at `path`; `None` when it cannot be read (the vDSO has
/// no file, a library may have been replaced on disk).
fn read_table(path: &std::path::Path) -> Option<Table> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let file = std::fs::File::open(path).ok()?;
    let map = Mapped::new(&file)?;
    let obj = object::File::parse(map.bytes()).ok()?;
    let mut symbols: Vec<_> = obj.symbols().collect();
    if symbols.is_empty() {
        symbols = obj.dynamic_symbols().collect();
    }
    let mut table: Table = symbols
        .into_iter()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.into())))
        .collect();
    table.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    table.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    Some(table)
}

/// A file mapped read-only, unmapped on drop.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(file: &std::fs::File) -> Option<Mapped> {
        use std::os::unix::io::AsRawFd;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a private read-only mapping of an open file; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { core::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_symbol() -> usize {
        std::hint::black_box(7)
    }

    #[test]
    fn finds_the_enclosing_symbol_of_an_address() {
        let addr = a_function_with_a_symbol as *const () as usize + 1;
        let names = symbols_at(addr);
        let demangled: Vec<String> = names
            .iter()
            .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
            .collect();
        assert!(
            demangled
                .iter()
                .any(|n| n.ends_with("symtab::tests::a_function_with_a_symbol")),
            "{demangled:?}"
        );
        clear();
        assert_eq!(symbols_at(addr), names);
        assert!(symbols_at(8).is_empty());
    }
}
