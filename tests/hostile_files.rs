//! The one atomic writer (`write_json`, `write_file_atomic`, every
//! CLI `-o`) replaces only a regular file or nothing; a symbolic link is written through to its
//! target; a failed write (file size limit, like a full disk) leaves the previous file intact.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
#[cfg(feature = "cli")]
use std::process::Command;

use allocscope::{Error, Report, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// A character device node like /dev/null (1, 3), if this process may create one.
fn mknod_null(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    rc == 0
}

/// Every kind of non-regular file the writer must refuse, made in `dir`: (path, what).
fn specials(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    out.push((fifo, "FIFO"));
    let sub = dir.join("folder");
    fs::create_dir(&sub).unwrap();
    out.push((sub, "directory"));
    let sock = dir.join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::mem::forget(listener);
    out.push((sock, "socket"));
    let dev = dir.join("null");
    if mknod_null(&dev) {
        out.push((dev, "character device"));
    } else {
        eprintln!("skipping the device-node case: mknod not permitted here");
    }
    let link_to_fifo = dir.join("link-to-fifo");
    std::os::unix::fs::symlink(dir.join("fifo"), &link_to_fifo).unwrap();
    out.push((link_to_fifo, "FIFO"));
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink(dir.join("nothing-here"), &dangling).unwrap();
    out.push((dangling, "symbolic link"));
    out
}

/// What is at `path`, without following a link: (is_fifo, is_dir, is_socket, is_char, is_link).
fn kind(path: &Path) -> (bool, bool, bool, bool, bool) {
    let t = fs::symlink_metadata(path).unwrap().file_type();
    (
        t.is_fifo(),
        t.is_dir(),
        t.is_socket(),
        t.is_char_device(),
        t.is_symlink(),
    )
}

fn no_temporaries(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with(".allocscope-"), "temporary left: {name}");
    }
}

#[test]
fn write_json_refuses_to_replace_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let report = allocscope::report();
    for (path, what) in specials(dir.path()) {
        let before = kind(&path);
        let err = report
            .write_json(&path)
            .expect_err(&format!("{} ({what}) must be refused", path.display()));
        let msg = err.to_string();
        assert!(matches!(err, Error::Io { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(what) || msg.contains("refusing"), "{msg}");
        assert_eq!(kind(&path), before, "{} was changed: {msg}", path.display());
        let err = allocscope::write_file_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert_eq!(kind(&path), before);
    }
    no_temporaries(dir.path());
}

#[test]
fn a_symlink_is_written_through_to_its_target_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("reports");
    fs::create_dir(&real_dir).unwrap();
    let target = real_dir.join("2026.json");
    fs::write(&target, "old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let old_inode = fs::metadata(&target).unwrap().ino();
    // A chain of two links, the first one relative.
    let middle = dir.path().join("middle.json");
    std::os::unix::fs::symlink(&target, &middle).unwrap();
    let link = dir.path().join("latest.json");
    std::os::unix::fs::symlink("middle.json", &link).unwrap();

    let report = allocscope::report();
    report.write_json(&link).unwrap();
    // The links are still links; the target has the report, under a new inode (renamed into
    // place), with its permissions kept.
    assert!(kind(&link).4 && kind(&middle).4);
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("middle.json"));
    let meta = fs::metadata(&target).unwrap();
    assert!(meta.is_file());
    assert_ne!(meta.ino(), old_inode);
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(Report::read_json(&link).unwrap(), report);
    no_temporaries(dir.path());
    no_temporaries(&real_dir);
}

#[cfg(feature = "cli")]
fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allocscope"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[cfg(feature = "cli")]
const NEW: &str = "tests/data/cli/worker_new.json";
#[cfg(feature = "cli")]
const OLD: &str = "tests/data/cli/worker_old.json";

#[cfg(feature = "cli")]
/// Every command line that writes a file, with `OUT` standing for the output.
fn writers() -> Vec<Vec<&'static str>> {
    vec![
        vec!["flamegraph", NEW, "-o", "OUT"],
        vec!["export", NEW, "--format", "pprof", "-o", "OUT"],
        vec!["export", NEW, "--format", "dhat", "-o", "OUT"],
        vec!["export", NEW, "--format", "folded", "-o", "OUT"],
        vec!["diff", OLD, NEW, "--flamegraph", "OUT"],
    ]
}

#[cfg(feature = "cli")]
fn args(cmd: &[&str], out: &Path) -> Vec<String> {
    cmd.iter()
        .map(|a| {
            if *a == "OUT" {
                out.display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

#[cfg(feature = "cli")]
#[test]
fn cli_outputs_refuse_special_files_and_replace_regular_ones_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let specials = specials(dir.path());
    for cmd in writers() {
        for (path, what) in &specials {
            let before = kind(path);
            let out = cli().args(args(&cmd, path)).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} on a {what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("refusing"), "{stderr}");
            assert_eq!(kind(path), before, "{cmd:?} changed the {what}");
        }
        // A regular file is replaced by rename (a new inode), keeping its permissions.
        let file = dir.path().join("out.file");
        fs::write(&file, "previous").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o604)).unwrap();
        let inode = fs::metadata(&file).unwrap().ino();
        let out = cli().args(args(&cmd, &file)).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        let meta = fs::metadata(&file).unwrap();
        assert_ne!(meta.ino(), inode, "{cmd:?} wrote in place, not atomically");
        assert_eq!(meta.permissions().mode() & 0o777, 0o604);
        assert_ne!(fs::read(&file).unwrap(), b"previous");
        fs::remove_file(&file).unwrap();
    }
    no_temporaries(dir.path());
}

/// A write that fails half-way (here: the file size limit, as a full disk would) leaves the
/// previous file whole, for every CLI output.
#[cfg(feature = "cli")]
#[test]
fn cli_output_that_fails_midway_keeps_the_previous_file() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    for cmd in writers() {
        let file = dir.path().join("out.file");
        let previous = "previous content, which must survive\n".repeat(10);
        fs::write(&file, &previous).unwrap();
        let mut c = cli();
        c.args(args(&cmd, &file));
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            previous,
            "{cmd:?} lost the previous file"
        );
        no_temporaries(dir.path());
    }
}
