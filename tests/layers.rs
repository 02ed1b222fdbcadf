//! The import graph points one way (ARCHITECTURE.md): a grep over `src/` that fails when a
//! lower layer names a higher one. Comment lines (docs linking to items) are ignored.
//!
//! Layers, bottom up: `model`, `config`, `fork`, `error` (leaves) → `header`, `registry`,
//! `thread`, `callsite`, `alloc` (the hot path and its tables) → `scope`, `future` → `report`
//! (snapshot and renderers) → `testing`. The crate root wires them together.

use std::fs;
use std::path::{Path, PathBuf};

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
fn module_files(name: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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

/// Items the crate root re-exports from `module`: naming them through the root is reaching
/// into that module too.
fn root_reexports(module: &str) -> Vec<String> {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut names = Vec::new();
    let mut rest = lib.as_str();
    let prefix = format!("pub use {module}::");
    while let Some(i) = rest.find(&prefix) {
        let tail = &rest[i + prefix.len()..];
        let end = tail.find(';').unwrap();
        let list = tail[..end].trim_start_matches('{').trim_end_matches('}');
        names.extend(
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s != "self"),
        );
        rest = &tail[end..];
    }
    names
}

/// Code lines of `file` that name `crate::<target>` (directly, in a `use crate::{..}` group,
/// or through a root re-export of the target's items).
fn offending_lines(file: &Path, target: &str) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let reexports = root_reexports(target);
    let mut out = Vec::new();
    let mut in_group = false;
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut hit = code.contains(&format!("crate::{target}::"))
            || code.contains(&format!("crate::{target};"))
            || code.contains(&format!("crate::{target}}}"))
            || code.contains(&format!("crate::{target},"))
            || reexports
                .iter()
                .any(|name| code.contains(&format!("crate::{name}")) && !name.is_empty());
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

fn assert_no_imports(modules: &[&str], forbidden: &[&str]) {
    let mut bad = Vec::new();
    for m in modules {
        for f in module_files(m) {
            for t in forbidden {
                bad.extend(offending_lines(&f, t));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports that point up the layers (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_hot_path_and_its_tables_import_nothing_above_them() {
    assert_no_imports(
        &[
            "registry", "thread", "header", "alloc", "callsite", "sources",
        ],
        &["report", "scope", "future", "testing"],
    );
}

#[test]
fn reports_import_nothing_from_scopes_or_tests() {
    assert_no_imports(&["report"], &["scope", "future", "testing"]);
}

#[test]
fn the_leaves_import_no_other_layer() {
    let above = [
        "report", "scope", "future", "testing", "registry", "thread", "header", "alloc", "callsite",
    ];
    assert_no_imports(&["model", "fork"], &[&above[..], &["config"]].concat());
    assert_no_imports(&["config"], &above);
}

#[test]
fn what_is_recorded_over_time_sits_below_the_tables() {
    // `series` (trend summaries, run events, samples) is used by the registry and by scopes:
    // it may import only the leaves.
    assert_no_imports(
        &["series"],
        &[
            "report", "scope", "future", "testing", "registry", "thread", "header", "alloc",
            "callsite", "timeline",
        ],
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    // The check itself must be able to fail: a line naming a higher layer is found.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    fs::write(
        &f,
        "/// [`x`](crate::report::Report)\nuse crate::report::Frame;\nuse crate::{\n    model,\n    scope,\n};\nfn f() { crate::track_scope(\"a\", || ()); }\n",
    )
    .unwrap();
    assert_eq!(offending_lines(&f, "report").len(), 1);
    assert_eq!(offending_lines(&f, "scope").len(), 2);
    assert!(offending_lines(&f, "testing").is_empty());
}

#[test]
fn nothing_below_the_integrations_imports_them() {
    // src/integrations/ (tracing, tower, rayon) sits on top of scope and future.
    assert_no_imports(
        &[
            "model", "config", "fork", "registry", "thread", "header", "alloc", "callsite",
            "scope", "future", "report", "testing",
        ],
        &["integrations"],
    );
}
