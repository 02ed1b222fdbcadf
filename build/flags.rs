//! Reading rustc's `-C force-frame-pointers` from `CARGO_ENCODED_RUSTFLAGS` (used by `build.rs`;
//! also compiled into `tests/build_flags.rs`, which checks every spelling rustc accepts).

/// Whether the flags (as `CARGO_ENCODED_RUSTFLAGS` splits them, on `\x1f`) turn frame pointers
/// on. rustc's syntax: `-C force-frame-pointers[=value]` (also `-Cforce-frame-pointers`,
/// `--codegen force-frame-pointers`, `--codegen=force-frame-pointers`); no value means yes;
/// `yes`/`y`/`on`/`true`/`always` mean yes; the last occurrence wins.
pub fn frame_pointers(args: &[&str]) -> bool {
    let mut fp = false;
    for (i, a) in args.iter().enumerate() {
        let option = if let Some(o) = a.strip_prefix("-C").filter(|o| !o.is_empty()) {
            Some(o)
        } else if let Some(o) = a.strip_prefix("--codegen=") {
            Some(o)
        } else if i > 0 && matches!(args[i - 1], "-C" | "--codegen") {
            Some(*a)
        } else {
            None
        };
        let Some(option) = option else {
            continue;
        };
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        if name.trim() == "force-frame-pointers" {
            fp = match value.map(str::trim) {
                None => true,
                Some(v) => matches!(v, "yes" | "y" | "on" | "true" | "always"),
            };
        }
    }
    fp
}
