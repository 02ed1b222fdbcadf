//! `allocscope diff` with one stack under two scope paths: a job's callsites include its
//! nested jobs', so `outer`'s list has the stack once under `outer > a` and once under
//! `outer > b`. The two rows must read differently (each names its path); they read the same
//! before. Two report files, through the library and the `allocscope` binary.

mod common;

use allocscope::{CallsiteReport, Frame, JobReport, Report, Usage};

/// A callsite of the one shared stack under `scope`, holding `bytes`.
fn site(scope: &[&str], bytes: u64) -> CallsiteReport {
    let mut c = CallsiteReport::default();
    c.scope = scope.iter().map(|s| s.to_string()).collect();
    c.frames = vec![
        Frame::new("app::cache::insert", Some("src/cache.rs"), Some(42)),
        Frame::new("app::handle", Some("src/main.rs"), Some(7)),
    ]
    .into();
    c.allocated = Usage::new(bytes / 64, bytes);
    c.retained = Usage::new(bytes / 64, bytes);
    c
}

fn job(name: &str, runs: u64, sites: Vec<CallsiteReport>) -> JobReport {
    let mut j = JobReport::default();
    j.name = name.to_string();
    j.runs = runs;
    j.retained = sites.iter().fold(Usage::default(), |u, c| u + c.retained);
    j.allocated = j.retained;
    j.callsites = sites;
    j
}

/// A report in which `outer > a` holds `a` bytes and `outer > b` holds `b` bytes, both at the
/// same stack.
fn snapshot(at_ms: u64, a: u64, b: u64) -> Report {
    let (sa, sb) = (site(&["outer", "a"], a), site(&["outer", "b"], b));
    let mut r = Report::default();
    r.timestamp_unix_ms = at_ms;
    r.jobs = vec![
        job("outer", at_ms / 1000, vec![sa.clone(), sb.clone()]),
        job("a", at_ms / 1000, vec![sa.clone()]),
        job("b", at_ms / 1000, vec![sb.clone()]),
    ];
    r.callsites = vec![sa, sb];
    r
}

fn check(text: &str) {
    let outer = text
        .split("\nouter — fastest-growing callsites")
        .nth(1)
        .unwrap_or_else(|| panic!("no callsites of outer:\n{text}"));
    let rows: Vec<&str> = outer
        .lines()
        .filter(|l| l.contains("app::cache::insert"))
        .collect();
    let rows = &rows[..2.min(rows.len())];
    assert_eq!(rows.len(), 2, "{text}");
    assert_ne!(rows[0], rows[1], "two paths, identical rows:\n{text}");
    assert!(rows[0].ends_with("in outer > a"), "{text}");
    assert!(rows[1].ends_with("in outer > b"), "{text}");
    // A job whose rows all come from one path names none.
    let a = text
        .split("\na — fastest-growing callsites")
        .nth(1)
        .unwrap_or_else(|| panic!("no callsites of a:\n{text}"));
    let row = a
        .lines()
        .find(|l| l.contains("app::cache::insert"))
        .unwrap();
    assert!(!row.contains(" in "), "{text}");
}

#[test]
fn rows_from_different_scope_paths_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.json"), dir.path().join("new.json"));
    // The same growth under both paths: without the path the two rows are identical.
    snapshot(10_000, 1 << 20, 1 << 20).write_json(&old).unwrap();
    snapshot(70_000, 3 << 20, 3 << 20).write_json(&new).unwrap();
    let diff = Report::read_json(&new)
        .unwrap()
        .diff(&Report::read_json(&old).unwrap());
    let text = diff.to_text();
    println!("{text}");
    check(&text);
    let outer = diff.jobs.iter().find(|j| j.name == "outer").unwrap();
    let scopes: Vec<&[String]> = outer.callsites.iter().map(|c| c.scope.as_slice()).collect();
    assert_eq!(
        scopes,
        [
            &["outer".to_string(), "a".to_string()][..],
            &["outer".to_string(), "b".to_string()][..]
        ]
    );

    #[cfg(feature = "cli")]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_allocscope"))
            .arg("diff")
            .args([&old, &new])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli = String::from_utf8(out.stdout).unwrap();
        check(&cli);
        common::golden("cli", "diff_paths.txt", &cli);
    }
}
