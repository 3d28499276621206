//! The writer's file-system calls on its output: positioned and buffered writes, writeback hints and
//! syncs, the classification of their failures (`E_OUTPUT_WRITE` for the file system's state, `E_IO` for
//! anything else), and the fault hook through which tests fail any one of them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Buffer of each output file (and of copies): large writes go straight through.
pub(super) const WRITE_BUFFER: usize = 1 << 20;

/// A file-system operation of the writer on its output, as a fault hook sees it (tests only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputOp {
    /// Creating a directory inside the temporary directory.
    CreateDir,
    /// Creating a file.
    CreateFile,
    /// One `write` call on a file: a shard's header, one tensor, or one buffer of another file (one per
    /// megabyte, or per larger piece).
    Write,
    /// Syncing a finished file to disk.
    Sync,
    /// Renaming a shard to its final name, or the temporary directory into place.
    Rename,
}

/// Called before every [`OutputOp`] with the path it touches; an error it returns is what the operation
/// fails with (tests only: it simulates a full disk or a read-only file system where neither can be made).
pub(super) type FaultHook = Box<dyn FnMut(OutputOp, &Path) -> io::Result<()> + Send>;

/// Runs the fault hook, if any, for one operation.
pub(super) fn check(fault: &mut Option<FaultHook>, op: OutputOp, path: &Path) -> io::Result<()> {
    match fault {
        Some(hook) => hook(op, path),
        None => Ok(()),
    }
}

/// A file of the output being written, passing each write through the fault hook.
struct OutputFile<'a> {
    file: File,
    path: &'a Path,
    fault: &'a mut Option<FaultHook>,
}

impl Write for OutputFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check(self.fault, OutputOp::Write, self.path)?;
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Creates `path` (with the umask's permissions), writes it through `fill`, flushes and syncs it. Any
/// failure is reported for `path` (see [`output_error`]).
pub(super) fn write_new_file(
    path: &Path,
    fault: &mut Option<FaultHook>,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let written = (|| {
        check(fault, OutputOp::CreateFile, path)?;
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, OutputFile { file, path, fault });
        fill(&mut out)?;
        let inner = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        check(inner.fault, OutputOp::Sync, path)?;
        inner.file.sync_all()
    })();
    written.map_err(|e| output_error(path, e))
}

/// `pwrite` of all of `data` at `offset`.
pub(super) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, data, offset)
    }
    #[cfg(not(unix))]
    {
        let _ = (file, data, offset);
        Err(io::Error::new(io::ErrorKind::Unsupported, "positioned writes need a Unix system"))
    }
}

/// Asks the kernel to start writing a file's dirty pages to disk now, without waiting for the write to end,
/// so that the sync before publishing finds little left to do. A hint: nothing happens where it is not available.
pub(super) fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open descriptor; it neither reads nor writes our memory.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Why the file system refused to write, for the errors that come from its state rather than from a bug
/// or a bad path: these become `E_OUTPUT_WRITE`.
fn write_failure_reason(error: &io::Error) -> Option<&'static str> {
    match error.kind() {
        io::ErrorKind::StorageFull => Some("the disk is full"),
        io::ErrorKind::FileTooLarge => Some("a file-size limit was reached"),
        io::ErrorKind::ReadOnlyFilesystem => Some("the filesystem is read-only"),
        io::ErrorKind::QuotaExceeded => Some("the disk quota is exceeded"),
        _ => None,
    }
}

/// The error of a failed operation on the output file or directory `path`.
pub(super) fn output_error(path: &Path, source: io::Error) -> Error {
    match write_failure_reason(&source) {
        Some(reason) => Error::OutputWrite { path: path.to_path_buf(), reason, source },
        None => Error::Io { path: path.to_path_buf(), source },
    }
}

/// Syncs a directory's entries (a rename is durable only then). Best effort: some file systems refuse to
/// sync directories, and the files themselves were synced already.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// A write past the file-size limit (RLIMIT_FSIZE, `ulimit -f`) raises SIGXFSZ, whose default action
/// terminates the process (with a core dump) before the writer can report anything or remove its temporary
/// directory. Ignored, the write fails with EFBIG instead, which becomes `E_OUTPUT_WRITE` like a full disk.
/// Done once, when the first writer is created, and only while the disposition is the default: a handler
/// that the embedding program installed is left alone. (Node already ignores SIGXFSZ; this is for programs
/// that use the Rust library directly. Like any ignored signal, it stays ignored in child processes.)
#[cfg(unix)]
pub(super) fn ignore_sigxfsz() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sigaction` with a null new action only reads the current one into a zeroed struct that it
        // fully owns; `signal` with SIG_IGN installs no handler code. Neither touches Rust-managed memory.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGXFSZ, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn write_failures_of_the_file_system_are_classified() {
        for (errno, reason) in [
            (libc::ENOSPC, "the disk is full"),
            (libc::EFBIG, "a file-size limit was reached"),
            (libc::EROFS, "the filesystem is read-only"),
            (libc::EDQUOT, "the disk quota is exceeded"),
        ] {
            let error = output_error(Path::new("/out/shard-0"), io::Error::from_raw_os_error(errno));
            assert_eq!(error.code(), "E_OUTPUT_WRITE");
            let message = error.to_string();
            assert!(message.starts_with(&format!("/out/shard-0: cannot write the output ({reason}): ")), "{message}");
        }
        for errno in [libc::EIO, libc::EACCES, libc::ENOENT] {
            assert_eq!(output_error(Path::new("x"), io::Error::from_raw_os_error(errno)).code(), "E_IO");
        }
    }
}
