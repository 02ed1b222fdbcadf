//! Automatic dumps: after runs that retained at least the threshold, at `finish()`, with a
//! bounded number of files; configured in code or through `ALLOCSCOPE_DIR`.
//!
//! The dump settings are process-wide, so the tests of this binary take turns (`SERIAL`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use allocscope::{track_scope, AutoDump, Report, StackMode, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

static SERIAL: Mutex<()> = Mutex::new(());
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs job `name` once, keeping `bytes` bytes.
fn run_keeping(name: &str, bytes: usize) {
    KEPT.lock().unwrap().reserve(1);
    track_scope(name, || {
        KEPT.lock().unwrap().push(black_box(vec![1u8; bytes]))
    });
}

/// Dump files in `dir`, sorted by name.
fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn runs_above_the_threshold_are_dumped_and_old_dumps_pruned() {
    let _s = serial();
    allocscope::set_stack_mode(StackMode::Off);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dumps"); // created on first dump
    allocscope::set_auto_dump(Some(
        AutoDump::new(&out).threshold_bytes(100_000).max_files(3),
    ));
    assert_eq!(allocscope::auto_dump().unwrap().max_files, 3);

    run_keeping("auto_small", 99_999);
    assert!(dumps(&out).is_empty(), "below the threshold: no dump");

    run_keeping("auto_big", 100_000);
    let names = dumps(&out);
    assert_eq!(names.len(), 1, "{names:?}");
    let pid = format!("-p{}-", std::process::id());
    assert!(
        names[0].starts_with("allocscope-20") && names[0].contains(&pid),
        "{names:?}"
    );
    assert!(names[0].ends_with("-auto_big-run1.json"), "{names:?}");
    let r = Report::read_json(out.join(&names[0])).unwrap();
    let job = r.job("auto_big").expect("the dump has the job");
    assert_eq!(job.runs, 1);
    assert!(job.retained.bytes >= 100_000);

    for _ in 0..4 {
        run_keeping("auto_big", 200_000);
    }
    let names = dumps(&out);
    assert_eq!(names.len(), 3, "{names:?}");
    for (name, run) in names.iter().zip([3, 4, 5]) {
        let tail = format!("-auto_big-run{run}.json");
        assert!(name.ends_with(&tail), "the 3 newest are kept: {names:?}");
    }

    // finish() writes a final report whatever the threshold, and prunes too.
    let exit = allocscope::finish().unwrap().expect("dumps are on");
    assert!(exit
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("-exit.json"));
    assert!(Report::read_json(&exit).unwrap().job("auto_big").is_some());
    let names = dumps(&out);
    assert_eq!(names.len(), 3);
    assert!(
        names[2].ends_with("-exit.json"),
        "names sort oldest first: {names:?}"
    );

    // Unrelated files in the folder are never touched.
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    std::fs::write(out.join("allocscope-notes.txt"), "keep me").unwrap();
    run_keeping("auto_big", 200_000);
    assert!(out.join("notes.txt").exists() && out.join("allocscope-notes.txt").exists());

    allocscope::set_auto_dump(None);
    assert_eq!(
        allocscope::finish().unwrap(),
        None,
        "off: finish writes nothing"
    );
    let before = dumps(&out);
    run_keeping("auto_big", 200_000);
    assert_eq!(dumps(&out), before, "off: no more dumps");
}

#[test]
fn job_names_are_sanitized_in_file_names() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    allocscope::set_auto_dump(Some(AutoDump::new(dir.path()).threshold_bytes(0)));
    run_keeping("../etc/passwd: a job/with *odd* name", 10);
    allocscope::set_auto_dump(None);
    let names = dumps(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].ends_with("-_.._etc_passwd__a_job_with__odd__name-run1.json"),
        "{names:?}"
    );
}

#[test]
fn finish_reports_a_folder_it_cannot_create() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let target: PathBuf = file.join("dumps");
    allocscope::set_dump_dir(Some(target.clone()));
    let err = allocscope::finish().expect_err("a file is in the way");
    allocscope::set_auto_dump(None);
    match err {
        allocscope::Error::Io { path, .. } => assert_eq!(path, target.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// The child half of `environment_variables_configure_dumps`: does nothing unless spawned by it.
#[test]
fn env_child() {
    if std::env::var_os("ALLOCSCOPE_TEST_CHILD").is_none() {
        return;
    }
    let cfg = allocscope::auto_dump().expect("ALLOCSCOPE_DIR turns dumps on");
    assert_eq!(cfg.threshold_bytes, 2048);
    assert_eq!(
        cfg.max_files,
        allocscope::AutoDump::DEFAULT_MAX_DUMPS,
        "invalid KEEP: the default"
    );
    run_keeping("env_small", 1000);
    run_keeping("env_big", 4096);
    run_keeping("env_big", 4096);
    allocscope::finish().unwrap();
}

#[test]
fn environment_variables_configure_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "env_child", "--test-threads", "1", "--nocapture"])
        .env("ALLOCSCOPE_TEST_CHILD", "1")
        .env("ALLOCSCOPE_DIR", dir.path())
        .env("ALLOCSCOPE_DUMP_THRESHOLD", "2k")
        .env("ALLOCSCOPE_DUMP_KEEP", "zero")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert_eq!(
        stderr.matches("ALLOCSCOPE_DUMP_KEEP=\"zero\"").count(),
        1,
        "the invalid value is reported once: {stderr}"
    );
    let names = dumps(dir.path());
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].ends_with("-env_big-run1.json"), "{names:?}");
    assert!(names[1].ends_with("-env_big-run2.json"), "{names:?}");
    assert!(names[2].ends_with("-exit.json"), "{names:?}");
}

/// The child half of `a_file_as_dump_folder_is_reported_once`.
#[test]
fn file_dir_child() {
    if std::env::var_os("ALLOCSCOPE_TEST_FILE_CHILD").is_none() {
        return;
    }
    assert_eq!(
        allocscope::auto_dump(),
        None,
        "not a folder: dumps stay off"
    );
    run_keeping("file_dir_job", 4096);
    assert_eq!(allocscope::finish().unwrap(), None);
}

#[test]
fn a_file_as_dump_folder_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file_dir_child",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env("ALLOCSCOPE_TEST_FILE_CHILD", "1")
        .env("ALLOCSCOPE_DIR", &file)
        .env("ALLOCSCOPE_DUMP_THRESHOLD", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert_eq!(
        stderr
            .matches("is not a folder; automatic dumps are off")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "the file is untouched"
    );
}
