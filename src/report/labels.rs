//! Frame labels a person can read: generic arguments stripped, and standard-library frames
//! between two user frames folded away.
//!
//! Rules:
//! * every rendering (flamegraph SVG, HTML, text) labels frames with [`short_name`] by default;
//!   the full name stays where a reader can reach it (the SVG and HTML tooltip). pprof and
//!   DHAT exports keep full names (their tools do their own shortening);
//! * [`short_name`] removes generic argument lists (`Vec<T, A>` → `Vec`, `collect::<Vec<_>>`
//!   → `collect`) but keeps qualified-path brackets (`<Vec<u8> as Drop>::drop` →
//!   `<Vec as Drop>::drop`, `<impl Foo>`), so the label still says whose method it is;
//! * [`fold_std`] drops `std`/`core`/`alloc` frames that sit between two user frames (the
//!   iterator adapters and closure shims between `worker::render` and the closure it passes),
//!   and keeps the library frames at either end (where the allocation happens, how the thread
//!   started). [`FlameOptions::keep_std`](crate::FlameOptions::keep_std) turns folding off;
//! * a frame's file is shown by [`short_file`] (its last two path components) wherever a view
//!   shows it short (text, HTML); the full path stays in tooltips and in JSON.

use super::symbolize::is_library;
use crate::model::Frame;

/// `name` without generic argument lists (see the module rules). Unbalanced brackets are kept
/// as they are.
pub(crate) fn short_name(name: &str) -> String {
    if !name.contains('<') {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    strip_into(name, &mut out);
    out
}

/// The index of the `>` closing the `<` at `open`, skipping `->` (function types).
fn closing(s: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for i in open..s.len() {
        match s[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && s[i - 1] == b'-' => {}
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `inner` (what is between `<` and `>`) is a qualified path (`X as Y`, `impl X`)
/// rather than generic arguments.
fn is_qualified(inner: &str) -> bool {
    if inner.starts_with("impl ") {
        return true;
    }
    // " as " outside any nested brackets.
    let b = inner.as_bytes();
    let mut depth = 0i32;
    for i in 0..b.len() {
        match b[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && b[i - 1] == b'-' => {}
            b'>' => depth -= 1,
            b' ' if depth == 0 && inner[i..].starts_with(" as ") => return true,
            _ => {}
        }
    }
    false
}

fn strip_into(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            // Copy up to the next bracket (UTF-8 safe: '<' is ASCII).
            let next = s[i..].find('<').map_or(s.len(), |n| i + n);
            out.push_str(&s[i..next]);
            i = next;
            continue;
        }
        let Some(close) = closing(b, i) else {
            out.push_str(&s[i..]);
            return;
        };
        let inner = &s[i + 1..close];
        let prev = out.chars().last();
        let after_ident = prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '}');
        let turbofish = out.ends_with("::");
        if !after_ident && (!turbofish || is_qualified(inner)) {
            // A qualified path: keep its brackets, shorten inside.
            out.push('<');
            strip_into(inner, out);
            out.push('>');
        } else if turbofish {
            out.truncate(out.len() - 2);
        }
        i = close + 1;
    }
}

/// The last two components of a path (`src/main.rs`, `vec/mod.rs`): enough to find the file,
/// short enough to read. The one rule for every view that shortens a file.
pub(crate) fn short_file(path: &str) -> &str {
    let mut idx = path.len();
    for _ in 0..2 {
        match path[..idx].rfind('/') {
            Some(i) => idx = i,
            None => return path,
        }
    }
    &path[idx + 1..]
}

/// The frames of a stack (innermost first) with standard-library frames that sit between two
/// user frames removed.
pub(crate) fn fold_std(frames: &[Frame]) -> Vec<&Frame> {
    let user: Vec<bool> = frames.iter().map(|f| !is_library(f)).collect();
    let (Some(first), Some(last)) = (user.iter().position(|&u| u), user.iter().rposition(|&u| u))
    else {
        return frames.iter().collect();
    };
    frames
        .iter()
        .enumerate()
        .filter(|&(i, _)| user[i] || i < first || i > last)
        .map(|(_, f)| f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_arguments_go_qualified_paths_stay() {
        let cases = [
            ("worker::render_report", "worker::render_report"),
            (
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                "alloc::raw_vec::RawVec::grow_one",
            ),
            (
                "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop",
                "<alloc::vec::Vec as core::ops::drop::Drop>::drop",
            ),
            (
                "<core::iter::adapters::map::Map<I,F> as core::iter::traits::iterator::Iterator>::fold",
                "<core::iter::adapters::map::Map as core::iter::traits::iterator::Iterator>::fold",
            ),
            ("core::ptr::drop_in_place<alloc::vec::Vec<u8>>", "core::ptr::drop_in_place"),
            (
                "core::iter::traits::iterator::Iterator::collect::<alloc::vec::Vec<_>>",
                "core::iter::traits::iterator::Iterator::collect",
            ),
            ("core::ptr::<impl *mut T>::add", "core::ptr::<impl *mut T>::add"),
            (
                "<F as core::ops::function::FnOnce<()>>::call_once",
                "<F as core::ops::function::FnOnce>::call_once",
            ),
            (
                "std::thread::local::LocalKey<T>::with::<fn() -> u8>",
                "std::thread::local::LocalKey::with",
            ),
            ("worker::main::{{closure}}", "worker::main::{{closure}}"),
            ("broken<unclosed", "broken<unclosed"),
            ("0x55d0c0ffee", "0x55d0c0ffee"),
        ];
        for (full, short) in cases {
            assert_eq!(short_name(full), short, "{full}");
        }
    }

    #[test]
    fn short_paths() {
        assert_eq!(short_file("/a/b/c/d.rs"), "c/d.rs");
        assert_eq!(short_file("d.rs"), "d.rs");
        assert_eq!(short_file("c/d.rs"), "c/d.rs");
        assert_eq!(short_file("/d.rs"), "/d.rs");
    }

    fn f(name: &str) -> Frame {
        Frame {
            function: name.into(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn library_frames_between_user_frames_fold() {
        // Innermost first.
        let frames = [
            f("alloc::alloc::alloc"),
            f("alloc::vec::Vec<T>::push"),
            f("worker::render::{{closure}}"),
            f("core::iter::adapters::map::map_fold::{{closure}}"),
            f("<core::ops::range::Range<usize> as core::iter::traits::iterator::Iterator>::fold"),
            f("worker::render"),
            f("worker::main"),
            f("std::rt::lang_start"),
        ];
        let names: Vec<&str> = fold_std(&frames)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "alloc::alloc::alloc",
                "alloc::vec::Vec<T>::push",
                "worker::render::{{closure}}",
                "worker::render",
                "worker::main",
                "std::rt::lang_start",
            ]
        );
        // Only library frames: nothing to fold.
        let lib = [f("alloc::alloc::alloc"), f("std::rt::lang_start")];
        assert_eq!(fold_std(&lib).len(), 2);
    }
}
