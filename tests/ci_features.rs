//! The test command runs every feature but `malloc` in one invocation (README, `.ci/run`):
//! a feature added to Cargo.toml must be added to that list, or its tests would silently not
//! run. (`malloc` has its own invocation: see `.ci/run`.)

use std::collections::BTreeSet;

fn read(rel: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn features() -> BTreeSet<String> {
    let toml = read("Cargo.toml");
    let section = toml
        .split("\n[features]\n")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .map(|l| l.split(" = ").next().unwrap().trim().to_string())
        .filter(|f| f != "default" && f != "malloc")
        .collect()
}

/// The feature list of the first `cargo test --features <list>` line of `text`.
fn listed(text: &str) -> BTreeSet<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("cargo test --features "))
        .expect("a `cargo test --features <every feature but malloc>` line");
    let list = line
        .trim_start()
        .trim_start_matches("cargo test --features ")
        .split_whitespace()
        .next()
        .unwrap();
    list.split(',').map(str::to_string).collect()
}

#[test]
fn the_test_command_names_every_feature_but_malloc() {
    let all = features();
    assert!(all.contains("http") && !all.contains("malloc"), "{all:?}");
    assert_eq!(listed(&read(".ci/run")), all, ".ci/run");
    assert_eq!(listed(&read("README.md")), all, "README.md's test command");
}
