//! The import graph points one way (ARCHITECTURE.md): a check over `src/` that fails when a
//! module names one in a higher layer (directly or in a `use crate::{..}` group), or names
//! anything through the crate root: a function defined there or any name it re-exports (the
//! root declares and re-exports the modules; code below it names the owning module). Comment lines (docs linking to items) are
//! ignored. Every module under `src/` must be in the table, so a new module cannot escape it.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom up. A module may name modules of its own layer and of the layers below.
const LAYERS: &[(&str, &[&str])] = &[
    ("leaves", &["model", "error", "config", "fork"]),
    ("records over time", &["series"]),
    (
        "hot path and tables",
        &[
            "header", "thread", "registry", "callsite", "alloc", "sources", "cmalloc",
        ],
    ),
    ("reports", &["report"]),
    ("outlets", &["timeline", "http", "budget"]),
    ("start-up from the environment", &["startup"]),
    ("scopes", &["scope", "future"]),
    ("built on scopes", &["integrations", "testing"]),
    ("the command-line tool", &["bin"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Files of a module (`src/<name>.rs` or `src/<name>/**.rs`).
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        files.push(file);
    }
    let dir = src.join(name);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    assert!(!files.is_empty(), "no module {name}");
    files
}

/// The modules under `src` (files and folders beside `lib.rs`), sorted.
fn modules_in(src: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "lib" && n != "main")
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Modules under `src` that the layer table does not place.
fn unplaced_modules(src: &Path, layers: &[(&str, &[&str])]) -> Vec<String> {
    modules_in(src)
        .into_iter()
        .filter(|m| !layers.iter().any(|(_, ms)| ms.contains(&m.as_str())))
        .collect()
}

/// Items the crate root (`lib`) re-exports from `module`: naming them through the root is
/// reaching into that module too.
fn root_reexports(lib: &str, module: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = lib;
    let prefix = format!("pub use {module}::");
    while let Some(i) = rest.find(&prefix) {
        let tail = &rest[i + prefix.len()..];
        let end = tail.find(';').unwrap();
        let list = tail[..end].trim_start_matches('{').trim_end_matches('}');
        names.extend(
            list.split(',')
                .map(|s| s.trim().rsplit("::").next().unwrap().to_string())
                .filter(|s| !s.is_empty() && s != "self"),
        );
        rest = &tail[end..];
    }
    names
}

/// Functions defined in the crate root: code below it never calls them.
fn root_functions(lib: &str) -> Vec<String> {
    lib.lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| {
            let l = l
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let rest = l.strip_prefix("fn ")?;
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
            Some(rest[..end].to_string())
        })
        .collect()
}

/// Whether `code` names `name` as a whole identifier after `crate::`.
fn names_through_root(code: &str, name: &str) -> bool {
    let needle = format!("crate::{name}");
    code.match_indices(&needle).any(|(i, _)| {
        let after = code[i + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Code lines of `file` that name `crate::<target>` (directly, in a `use crate::{..}` group,
/// or through a root re-export of the target's items), given the root's text `lib`.
fn offending_lines(file: &Path, lib: &str, target: &str) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let reexports = root_reexports(lib, target);
    let mut out = Vec::new();
    let mut in_group = false;
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut hit = names_through_root(code, target)
            || reexports.iter().any(|name| names_through_root(code, name));
        if code.contains("use crate::{") {
            in_group = true;
        }
        if in_group {
            // Inside `use crate::{ .. }`: a path that starts with the target.
            let part = code.split_once("crate::{").map_or(code, |(_, r)| r);
            hit |= part
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .any(|w| w == target || w.starts_with(&format!("{target}::")));
            if code.contains(';') {
                in_group = false;
            }
        }
        if hit {
            out.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
        }
    }
    out
}

/// Modules the crate root declares (`mod x;`, `pub mod x;`).
fn root_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .map(str::trim_start)
        .filter_map(|l| {
            let l = l
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            Some(
                l.strip_prefix("mod ")?
                    .trim_end_matches(';')
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// Names of the crate root a module must not use: the root's own functions, and every name it
/// re-exports (code below the root names the owning module instead, so the root imports
/// everything and nothing imports the root).
fn root_names(lib: &str) -> Vec<String> {
    let modules = root_modules(lib);
    let mut names = root_functions(lib);
    for m in &modules {
        names.extend(root_reexports(lib, m));
    }
    names.retain(|n| !modules.contains(n));
    names.sort();
    names.dedup();
    names
}

/// The first path segment of each item of every `use crate::{..}` group in `text`, with the
/// group's line number (from 1).
fn group_heads(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (start, _) in text.match_indices("use crate::{") {
        let line = text[..start].matches('\n').count() + 1;
        if text[..start]
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.trim_start().starts_with("//"))
        {
            continue;
        }
        let body = &text[start + "use crate::{".len()..];
        let (mut depth, mut item) = (0usize, String::new());
        for c in body.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push((line, std::mem::take(&mut item)));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        out.push((line, item));
    }
    for (_, item) in &mut out {
        let head = item.trim().split([':', ' ', '{']).next().unwrap_or("");
        *item = head.to_string();
    }
    out
}

/// Code lines of `file` that call a function defined in the crate root or name an item
/// through the root's re-exports (also inside a `use crate::{..}` group).
fn root_calls(file: &Path, lib: &str) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let names = root_names(lib);
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| names.iter().any(|f| names_through_root(l, f)))
        .map(|(n, l)| format!("{}:{}: {}", file.display(), n + 1, l.trim()))
        .collect();
    for (n, head) in group_heads(&text) {
        let found = format!("{}:{}: {}", file.display(), n, lines[n - 1].trim());
        if names.contains(&head) && !out.contains(&found) {
            out.push(found);
        }
    }
    out
}

/// Every line under `src` that points up the layer table, or calls into the root.
fn violations(src: &Path, layers: &[(&str, &[&str])]) -> Vec<String> {
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let mut bad = Vec::new();
    for (i, (_, modules)) in layers.iter().enumerate() {
        let above: Vec<&str> = layers[i + 1..]
            .iter()
            .flat_map(|(_, ms)| ms.iter().copied())
            .collect();
        for m in modules.iter() {
            if !src.join(format!("{m}.rs")).exists() && !src.join(m).is_dir() {
                continue;
            }
            for f in module_files(src, m) {
                for t in &above {
                    bad.extend(offending_lines(&f, &lib, t));
                }
                bad.extend(root_calls(&f, &lib));
            }
        }
    }
    bad
}

#[test]
fn every_module_is_in_the_layer_table() {
    let unplaced = unplaced_modules(&src(), LAYERS);
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to LAYERS here and to ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn no_import_points_up_the_layers() {
    let bad = violations(&src(), LAYERS);
    assert!(
        bad.is_empty(),
        "imports that point up the layers (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn model_and_fork_import_no_other_leaf_but_error() {
    // Within the leaves: `config` parses into `model` types and `error`; `model` and `fork`
    // stand alone.
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut bad = Vec::new();
    for m in ["model", "fork"] {
        for f in module_files(&src(), m) {
            bad.extend(offending_lines(&f, &lib, "config"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_architecture_page_names_every_module() {
    let page =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    for m in modules_in(&src()) {
        assert!(
            page.contains(&format!("`{m}`")),
            "ARCHITECTURE.md does not name `{m}`"
        );
        assert!(
            lib.contains(&format!("`{m}`")) || (m == "bin" && lib.contains("src/bin/")),
            "the module map in lib.rs does not name `{m}`"
        );
    }
}

#[test]
fn the_check_can_fail() {
    // A small tree where each kind of upward reference appears once: the check finds each.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::write(
        src.join("lib.rs"),
        "mod low;\nmod high;\nmod top;\npub use high::{Thing, deep::Other};\n\
         pub use low::Base;\npub(crate) fn wire_up() {}\n",
    )
    .unwrap();
    fs::write(
        src.join("low.rs"),
        "/// [`x`](crate::high::Thing) in a comment is fine\n\
         use crate::high::Thing;\n\
         use crate::{\n    model,\n    high,\n};\n\
         use crate::{low::{Base, More}, Thing};\n\
         fn f() { crate::Thing::new(); crate::Other::new(); crate::wire_up(); crate::top::go(); }\n\
         fn g() { crate::Things::new(); crate::lowly::x(); }\n",
    )
    .unwrap();
    fs::create_dir(src.join("high")).unwrap();
    fs::write(
        src.join("high/mod.rs"),
        "use crate::low::Base;\nfn h() { crate::Base::new(); }\n",
    )
    .unwrap();
    fs::write(src.join("top.rs"), "use crate::high::Thing;\n").unwrap();
    let layers: &[(&str, &[&str])] = &[("low", &["low"]), ("high", &["high"])];
    let bad = violations(src, layers);
    // In low.rs: `use crate::high::Thing`, the group's `high`, the line with `crate::Thing`,
    // `crate::Other` (up) and `crate::wire_up()` (into the root), the group's `Thing` (through
    // the root; not `Base` inside `low::{..}`); not the comment, `Things` or `lowly`. In
    // high/mod.rs: `crate::Base`, a lower item named through the root.
    assert_eq!(bad.len(), 6, "{bad:#?}");
    let in_low = bad.iter().filter(|l| l.contains("low.rs")).count();
    assert_eq!(in_low, 5, "{bad:#?}");
    assert!(bad.iter().any(|l| l.contains("low.rs:7:")), "{bad:#?}");
    assert!(bad[5].contains("high/mod.rs:2"), "{bad:#?}");
    assert_eq!(unplaced_modules(src, layers), ["top"]);
    let all: &[(&str, &[&str])] = &[("low", &["low"]), ("high", &["high"]), ("top", &["top"])];
    assert!(unplaced_modules(src, all).is_empty());
    // `top` above `low`: the call into it is found too.
    assert_eq!(violations(src, all).len(), 7);
    let reversed: &[(&str, &[&str])] = &[("top", &["top"]), ("high", &["high"]), ("low", &["low"])];
    let bad = violations(src, reversed);
    assert!(
        bad.iter().any(|l| l.contains("high/mod.rs")) && bad.iter().any(|l| l.contains("top.rs")),
        "{bad:#?}"
    );
}
