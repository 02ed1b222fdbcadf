//! What reports show in each build profile a user may have: a small user crate, built outside
//! this repository (so without its frame pointers: DWARF unwinding, as a user's default build)
//! with `debug = 0` (Cargo's release default), `"line-tables-only"`, `"limited"` and full debug
//! information, writes its text, HTML, flamegraph and pprof; the test reads them.
//!
//! The crate has two functions, `first` and `second`, each passing a closure (`{closure#0}` in
//! both) to one generic function `run` in the same file; the closures allocate 100,000 and
//! 300,000 bytes, kept. In every profile with debug information, every view names each closure
//! with the function it is written in, and `go tool pprof -top` lists them as two functions
//! with their own figures; with `debug = 0` there are no inlined frames and no file:line, and
//! the names still come as full paths (the symbol table).
//!
//! Cost: the four builds share one target directory (`target/build-profiles`), and only the
//! user crate's debug setting changes (its dependencies are built once, `debug = 0`): about a
//! minute for the first build on 2 cores, then a few seconds per profile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MAIN_RS: &str = r#"use allocscope::{track_scope, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

#[inline(never)]
fn run<T>(f: impl FnOnce() -> T) -> T {
    f()
}

#[inline(never)]
fn first(keep: &mut Vec<Vec<u8>>) {
    keep.push(run(|| std::hint::black_box(vec![1u8; 100_000])));
}

#[inline(never)]
fn second(keep: &mut Vec<Vec<u8>>) {
    keep.push(run(|| std::hint::black_box(vec![2u8; 300_000])));
}

fn main() {
    allocscope::set_stack_mode(StackMode::Every);
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("output directory"));
    let mut keep = Vec::with_capacity(2);
    track_scope("profiles", || {
        first(&mut keep);
        second(&mut keep);
    });
    let r = allocscope::report();
    std::fs::write(out.join("report.txt"), r.to_text()).unwrap();
    std::fs::write(out.join("report.html"), r.to_html()).unwrap();
    let svg = r.flamegraph_svg(&Default::default()).unwrap();
    std::fs::write(out.join("flame.svg"), svg).unwrap();
    std::fs::write(out.join("profile.pb.gz"), r.to_pprof().unwrap()).unwrap();
    drop(keep);
}
"#;

/// The user crate's manifest for one `debug` setting.
fn manifest(debug: &str) -> String {
    format!(
        r#"[package]
name = "profiles_user"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
allocscope = {{ path = {root:?}, features = ["pprof"] }}

[profile.release]
debug = {debug}

# Dependencies built once for all four profiles (only the user crate's setting changes).
[profile.release.package."*"]
debug = 0
"#,
        root = env!("CARGO_MANIFEST_DIR"),
    )
}

/// Builds and runs the user crate with `debug`, returning the directory of its outputs.
fn build_and_run(work: &Path, debug: &str, tag: &str) -> PathBuf {
    let krate = work.join(tag);
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("Cargo.toml"), manifest(debug)).unwrap();
    std::fs::write(krate.join("src/main.rs"), MAIN_RS).unwrap();
    // The repository's lock file: the same versions, nothing to resolve.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/build-profiles");
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        // A user's build: no frame pointers (this repository's config is not read from a
        // temporary directory; flags from the environment are dropped too).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building with debug = {debug} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "debug = {debug}: built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let outputs = work.join(format!("{tag}-out"));
    std::fs::create_dir_all(&outputs).unwrap();
    // Copied out first: the next profile's build replaces the binary.
    let exe = work.join(format!("{tag}-bin"));
    std::fs::copy(target.join("release/profiles_user"), &exe).unwrap();
    let run = Command::new(&exe).arg(&outputs).output().unwrap();
    assert!(
        run.status.success(),
        "the user program (debug = {debug}) failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    outputs
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// `go tool pprof -top` of the profile by retained bytes: (flat, name) per function.
fn pprof_top(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-sample_index=inuse_space",
            "-nodecount=1000",
        ])
        .arg(dir.join("profile.pb.gz"))
        .env("HOME", dir)
        .env("PPROF_TMPDIR", dir)
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<&str>>())
        // flat flat% sum% cum cum% name (a name may contain spaces)
        .filter(|cols| cols.len() >= 6)
        .map(|cols| (cols[0].to_string(), cols[5..].join(" ")))
        .collect()
}

#[test]
fn labels_and_pprof_names_in_every_build_profile() {
    let go = common::require_tool("go", &["version"], "golang-go");
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for (debug, tag) in [
        ("0", "debug0"),
        ("\"line-tables-only\"", "lines"),
        ("\"limited\"", "limited"),
        ("\"full\"", "full"),
    ] {
        let dir = build_and_run(work.path(), debug, tag);
        let text = read(&dir, "report.txt");
        let html = read(&dir, "report.html");
        let svg = read(&dir, "flame.svg");
        let callsites: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("top callsites"))
            .filter(|l| l.contains("KiB") && l.contains('%'))
            .collect();
        if debug == "0" {
            // No debug information: no file:line, no inlined frames (both closures were
            // inlined into `run`, so their rows read the same and are one row); the symbol
            // table still names each function by its full path.
            assert!(!callsites.is_empty(), "debug = 0:\n{text}");
            assert!(!text.contains("main.rs:"), "debug = 0:\n{text}");
            for l in &callsites {
                assert!(l.contains("profiles_user::"), "debug = 0: {l}\n{text}");
            }
            continue;
        }
        assert_eq!(callsites.len(), 2, "debug = {debug}:\n{text}");
        // File and line, and each closure named with the function it is written in.
        for (function, kib) in [("first", "97.7 KiB"), ("second", "293 KiB")] {
            let line = callsites
                .iter()
                .find(|l| l.contains(kib))
                .unwrap_or_else(|| panic!("debug = {debug}: no {kib} row in\n{text}"));
            assert!(
                line.contains(&format!("profiles_user::{function}::{{")),
                "debug = {debug}: {line}"
            );
            assert!(line.contains("(src/main.rs:"), "debug = {debug}: {line}");
            let closure = format!("{function}::{{");
            assert!(
                html.contains(&closure),
                "debug = {debug}: {closure} in HTML"
            );
            assert!(svg.contains(&closure), "debug = {debug}: {closure} in SVG");
        }
        if !go {
            continue;
        }
        // pprof: the two closures are two functions, each with its own figure, and no two
        // functions share a name.
        let top = pprof_top(&dir);
        let names: Vec<&str> = top.iter().map(|(_, n)| n.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "debug = {debug}: {top:?}");
        for (function, flat) in [("first", "97.66kB"), ("second", "292.97kB")] {
            let prefix = format!("profiles_user::{function}::{{");
            let entry = top
                .iter()
                .find(|(_, n)| n.starts_with(&prefix))
                .unwrap_or_else(|| panic!("debug = {debug}: no {prefix} in {top:?}"));
            assert_eq!(entry.0, flat, "debug = {debug}: {entry:?}");
        }
    }
    eprintln!(
        "four profiles built and checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
