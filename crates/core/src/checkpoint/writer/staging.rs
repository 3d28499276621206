//! The temporary directory an output is written into, beside its target
//! (`.<target>.moe-quant-tmp-<pid>.<n>`), and the one rename that publishes it. Until then the target is
//! untouched; a failed or dropped writer removes its temporary directory, and one left by a killed process
//! is removed by the next writer for the same target.

use std::io;
use std::path::{Path, PathBuf};

use super::fs::{check, output_error, sync_dir, FaultHook, OutputOp};
use super::WriterOptions;
use crate::error::{Error, IoContext, Result};

/// Marker in the names of temporary output directories (`.<target>.moe-quant-tmp-<pid>.<n>`).
const TMP_MARKER: &str = ".moe-quant-tmp-";

/// The longest file name most file systems allow, in bytes.
const NAME_MAX: usize = 255;

/// `.<target>.moe-quant-tmp-`, the start of the temporary directories' names for the target named `name`:
/// a long name is cut (at a character boundary) so that the whole temporary name, with a process id and a
/// sequence number, stays within [`NAME_MAX`].
fn tmp_prefix(name: &str) -> String {
    // Room for the dot, the marker, a pid, a dot and a sequence number (each at most 20 digits).
    let room = NAME_MAX - 1 - TMP_MARKER.len() - 20 - 1 - 20;
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}{TMP_MARKER}", &name[..end])
}

/// An output's temporary directory, removed when dropped unless it was published.
pub(super) struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    /// Published, or discarded after a failure: the temporary directory is no longer ours to remove.
    closed: bool,
}

impl Staging {
    /// Checks the target and creates the temporary directory beside it. A target that is a symbolic link to a
    /// directory is written where the link points (the link stays); a link to nothing is refused.
    pub fn create(target: &Path, options: &WriterOptions) -> Result<Staging> {
        let target = resolve_target(&absolute(target)?)?;
        let invalid = |message: String| Error::OutputInvalid { path: target.clone(), message };
        let name =
            target.file_name().and_then(|n| n.to_str()).ok_or_else(|| invalid("not a usable directory name".into()))?;
        if name.len() > NAME_MAX {
            return Err(invalid(format!(
                "the directory name is {} bytes long, more than the {NAME_MAX} a file system allows",
                name.len()
            )));
        }
        check_target(&target, options)?;
        let parent = target.parent().ok_or_else(|| invalid("has no parent directory".into()))?.to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| output_error(&parent, e))?;
        remove_stale_tmp_dirs(&parent, name);
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!("{}{}.{sequence}", tmp_prefix(name), std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_path(&tmp)?;
        }
        std::fs::create_dir(&tmp).map_err(|e| output_error(&tmp, e))?;
        Ok(Staging { target, tmp, overwrite: options.overwrite, closed: false })
    }

    /// The temporary directory.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The directory the output is published as.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Refuses any further use once the output was published or discarded.
    pub fn ensure_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::internal(format!(
                "{}: the output writer was used after it failed or finished",
                self.target.display()
            )));
        }
        Ok(())
    }

    /// Removes the temporary directory when `result` is an error, before the error goes back to the caller;
    /// the writer cannot be used afterwards. Where the file system no longer allows it (read-only), the
    /// directory is left to the next run.
    pub fn discard_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() && !self.closed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            self.closed = true;
        }
        result
    }

    /// Moves the finished temporary directory to the target in one atomic step. The decision about what is
    /// at the target holds at this moment, not only when the writer was created:
    /// - without `overwrite`, the rename itself refuses a target that is not an empty directory (one that
    ///   appeared during the run, another run's output …), which is left as it is;
    /// - with `overwrite`, an existing directory is swapped with the new one in one step (Linux
    ///   `RENAME_EXCHANGE`; elsewhere renamed away first and put back if the move fails) and deleted after;
    ///   anything else at the target (a file, a link) is refused.
    pub fn publish(&mut self, fault: &mut Option<FaultHook>) -> Result<()> {
        check(fault, OutputOp::Rename, &self.tmp).map_err(|e| output_error(&self.tmp, e))?;
        let appeared = |what: &str, hint: &str| Error::OutputInvalid {
            path: self.target.clone(),
            message: format!(
                "{what} appeared there while the output was being written (another run writing the same output?); \
                 it was left as it is and nothing was written{hint}"
            ),
        };
        let existing = match std::fs::symlink_metadata(&self.target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Io { path: self.target.clone(), source: e }),
        };
        match existing {
            Some(meta) if self.overwrite && meta.is_dir() => self.replace_existing()?,
            Some(meta) if self.overwrite => {
                let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "a file" };
                return Err(appeared(what, ""));
            }
            _ => match std::fs::rename(&self.tmp, &self.target) {
                Ok(()) => self.closed = true,
                Err(e) if matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists) => {
                    return Err(appeared("another output", "; pass overwrite to replace it"))
                }
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(appeared("a file", "")),
                Err(e) => return Err(output_error(&self.tmp, e)),
            },
        }
        if let Some(parent) = self.target.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    /// Puts the new output in place of the existing directory at the target, then deletes the old one.
    fn replace_existing(&mut self) -> Result<()> {
        #[cfg(target_os = "linux")]
        match exchange(&self.tmp, &self.target) {
            Ok(()) => {
                // The old output is now where the temporary directory was: once it is in place, failing to
                // delete the old one is no error (named like this process's temporary directories, it is
                // removed by the next run for this target).
                self.closed = true;
                let _ = std::fs::remove_dir_all(&self.tmp);
                return Ok(());
            }
            // A file system without the exchange: the two renames below.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(output_error(&self.tmp, e)),
        }
        let old = self.tmp.with_extension("replaced");
        std::fs::rename(&self.target, &old).map_err(|e| output_error(&self.target, e))?;
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            let _ = std::fs::rename(&old, &self.target);
            return Err(output_error(&self.tmp, e));
        }
        self.closed = true;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

impl Drop for Staging {
    /// An unfinished output (an error elsewhere, cancellation) leaves nothing behind.
    fn drop(&mut self) {
        if !self.closed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Refuses a target inside or around the input checkpoint, a target that is not a directory, and a
/// non-empty one unless it may be overwritten.
fn check_target(target: &Path, options: &WriterOptions) -> Result<()> {
    let invalid = |message: String| Error::OutputInvalid { path: target.to_path_buf(), message };
    if let Some(input) = &options.input_dir {
        let input = absolute(input)?;
        let input = input.canonicalize().unwrap_or(input);
        let resolved = resolve_existing_prefix(target);
        if resolved.starts_with(&input) {
            return Err(invalid(format!(
                "is inside the input checkpoint {}; choose another output directory",
                input.display()
            )));
        }
        if input.starts_with(&resolved) {
            return Err(invalid(format!(
                "contains the input checkpoint {}; choose another output directory",
                input.display()
            )));
        }
    }
    match std::fs::metadata(target) {
        Ok(meta) if !meta.is_dir() => Err(invalid("exists and is not a directory".into())),
        Ok(_) => {
            let non_empty = std::fs::read_dir(target).with_path(target)?.next().is_some();
            if non_empty && !options.overwrite {
                return Err(invalid("exists and is not empty; pass overwrite to replace it".into()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { path: target.to_path_buf(), source: e }),
    }
}

/// Swaps two paths in one step (`renameat2` with `RENAME_EXCHANGE`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call; the call reads nothing else.
    let status =
        unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The directory an output path stands for: itself, or where it points when it is a symbolic link. A link
/// to nothing is refused up front (it would fail only when the finished output is moved into place).
fn resolve_target(target: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.file_type().is_symlink() => match target.canonicalize() {
            Ok(resolved) => Ok(resolved),
            Err(e) => {
                let points_to = std::fs::read_link(target).map(|p| p.display().to_string()).unwrap_or_default();
                Err(Error::OutputInvalid {
                    path: target.to_path_buf(),
                    message: format!(
                        "is a symbolic link to {points_to}, which cannot be used ({e}); create the directory it \
                         points to or choose another output"
                    ),
                })
            }
        },
        _ => Ok(target.to_path_buf()),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_path(path)
}

/// Canonicalizes the longest existing prefix of `path` (the target may not exist yet).
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    resolved
}

/// Removes temporary directories left for this target by runs that were killed (their process is gone).
fn remove_stale_tmp_dirs(parent: &Path, name: &str) {
    let prefix = tmp_prefix(name);
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let pid = rest.split('.').next().unwrap_or("");
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
