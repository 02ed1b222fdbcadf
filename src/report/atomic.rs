//! The one file writer of the crate and its CLI: atomic, and only over regular files.
//!
//! Rules:
//! * The content goes to a temporary file in the destination's folder (`.allocscope-*.tmp`),
//!   which is flushed to disk (`fsync`) and renamed over the destination; the folder is then
//!   synced, so the rename survives a power loss. A reader, a crash, a full disk or a
//!   `kill -9` at any moment leaves either the previous file or the complete new one, never a
//!   torn one; on failure the temporary file is removed.
//! * Only a regular file, or nothing, is replaced. A directory, FIFO, socket, character or
//!   block device (`/dev/null`!) at the destination is refused with an [`Error::Io`] naming
//!   the path and what it is, and left untouched.
//! * A symbolic link is **written through**: the link stays, and its final target (links
//!   followed to the end) is replaced atomically, under the same rule (it must be a regular
//!   file). A link whose target does not exist, or a loop, is refused.
//! * An existing file's permissions are kept; a new file is readable by its owner only
//!   (reports name the program's functions and files). A file with several hard links gets
//!   a new inode under this name; its other names keep the previous content.
//! * Between the check and the rename, another process could put something else at the
//!   path; the rename then replaces that (as `mv` would). The rule guards against mistakes,
//!   not against an adversary who can write to the folder.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::thread::untracked;

/// Writes `bytes` to `path` atomically, replacing only a regular file (or nothing); a
/// symbolic link is written through to its target. See the module rules; this is the writer
/// of [`Report::write_json`](crate::Report::write_json), automatic dumps and every `-o` of
/// the `allocscope` command.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.svg");
/// allocscope::write_file_atomic(&path, b"<svg/>").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"<svg/>");
/// # #[cfg(unix)]
/// assert!(allocscope::write_file_atomic("/dev/null", b"x").is_err());
/// ```
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
    let path = path.as_ref();
    untracked(|| write_atomic_with(path, |w| w.write_all(bytes)))
}

/// [`write_file_atomic`] with the content streamed by `write` into a buffered temporary file.
/// Must run untracked.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&fs::File>) -> io::Result<()>,
) -> Result<(), Error> {
    let io_err = |source: io::Error| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let target = destination(path).map_err(io_err)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".allocscope-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err)?;
    if let Ok(meta) = fs::metadata(&target) {
        // Keep the mode of the file we replace (best effort: a failure leaves owner-only).
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    {
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file());
        write(&mut w).map_err(io_err)?;
        w.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    // On failure the temporary file is removed when the returned handle drops.
    tmp.persist(&target).map_err(|e| io_err(e.error))?;
    sync_dir(dir).map_err(io_err)
}

/// The file to replace for `path`: itself, or the final target of a symbolic link; an error
/// for anything but a regular file or nothing.
fn destination(path: &Path) -> io::Result<PathBuf> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(e),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        let target = fs::canonicalize(path).map_err(|e| {
            refuse(format!(
                "a symbolic link whose target cannot be resolved ({e}); refusing to write"
            ))
        })?;
        let meta = fs::metadata(&target)?;
        if !meta.is_file() {
            return Err(refuse(format!(
                "a symbolic link to {} ({}), not a regular file; refusing to replace it",
                target.display(),
                kind(&meta)
            )));
        }
        return Ok(target);
    }
    if !meta.is_file() {
        return Err(refuse(format!(
            "{}, not a regular file; refusing to replace it",
            kind(&meta)
        )));
    }
    Ok(path.to_path_buf())
}

fn refuse(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// What a non-regular file is, in words.
fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Folders cannot be opened for syncing here; the rename is as durable as the OS makes it.
    Ok(())
}
