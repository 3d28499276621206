//! Writes a checkpoint: tensors go into safetensors shards of a bounded size, with
//! `model.safetensors.index.json` when there is more than one. Everything is written into a temporary
//! directory beside the target (`.<target>.moe-quant-tmp-<pid>.<n>`) and renamed into place only by
//! [`CheckpointWriter::finish`], so a failure never leaves a half-written output:
//!
//! - a failed write, flush, sync, create or rename removes the temporary directory before the error is
//!   returned; one caused by the file system's state (disk full, file-size limit, read-only file system, quota)
//!   is `E_OUTPUT_WRITE`, any other `E_IO`;
//! - dropping an unfinished writer (an error elsewhere, cancellation) removes it too;
//! - a process killed outright (SIGKILL, power loss) leaves it behind: the next writer for the same target
//!   removes the temporary directories of processes that no longer exist.
//!
//! Every file is synced before the directory is renamed into place, so a published output is complete on
//! disk, and a file system that reports a full disk only when data is flushed (NFS, some quotas) is caught.
//!
//! Tensors are written one of two ways, with the same bytes in the end:
//! - added one by one, each shard's tensors wait (in memory, then in a spill file) until the shard is full,
//!   because its header, which comes first, needs all of them;
//! - declared up front ([`CheckpointWriter::declare`]: names, dtypes and shapes, in the order they would be
//!   added), every shard's header is written at once and each tensor's bytes go straight to their place in
//!   their shard whenever it is added, in any order: nothing is held back or written twice, and a finished
//!   shard starts going to disk while the rest is still being produced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;

use super::source::read_exact_at;
use super::{Dtype, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};
use crate::limits::{open_regular, MAX_HEADER_BYTES};

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

/// Buffer of each output file (and of copies): large writes go straight through.
const WRITE_BUFFER: usize = 1 << 20;

/// How to write the output.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Largest shard, in bytes of tensor data; a single tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
    /// Replace an existing non-empty target directory.
    pub overwrite: bool,
    /// The checkpoint being read, which the output must never touch.
    pub input_dir: Option<PathBuf>,
    /// Most tensor bytes of the shard being filled kept in memory; the rest waits in a spill file beside it
    /// until the shard is written (a shard's header, which comes first, needs all its tensors). Bounds the
    /// writer's memory whatever the shard size.
    pub max_buffer_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { max_shard_bytes: 5_000_000_000, overwrite: false, input_dir: None, max_buffer_bytes: 512 << 20 }
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    /// Every file of the output, relative name → size in bytes.
    pub files: BTreeMap<String, u64>,
    /// Sum of the tensors' data bytes (the index's `total_size`).
    pub tensor_bytes: u64,
    pub shard_count: usize,
}

/// A file-system operation of the writer on its output, as a fault hook sees it (tests only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputOp {
    /// Creating a directory inside the temporary directory.
    CreateDir,
    /// Creating a file.
    CreateFile,
    /// One `write` call on a file (buffered: one per megabyte, or per larger tensor).
    Write,
    /// Syncing a finished file to disk.
    Sync,
    /// Renaming a shard to its final name, or the temporary directory into place.
    Rename,
}

/// Called before every [`OutputOp`] with the path it touches; an error it returns is what the operation
/// fails with (tests only: it simulates a full disk or a read-only file system where neither can be made).
type FaultHook = Box<dyn FnMut(OutputOp, &Path) -> io::Result<()> + Send>;

struct PendingTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: PendingData,
}

/// Where a pending tensor's bytes wait: in memory, or at a range of the shard's spill file.
enum PendingData {
    Memory(Vec<u8>),
    Spilled { offset: u64, len: usize },
}

impl PendingTensor {
    fn len(&self) -> usize {
        match &self.data {
            PendingData::Memory(bytes) => bytes.len(),
            PendingData::Spilled { len, .. } => *len,
        }
    }
}

/// A tensor to be written, as [`CheckpointWriter::declare`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Where a declared tensor's bytes go.
struct Placement {
    shard: usize,
    /// Byte offset in the shard file.
    offset: u64,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// A shard whose header is on disk, waiting for its declared tensors. Its file is opened for each write
/// rather than held open: a run with many shards holds no descriptors, and the file system keeps no writer
/// between them.
struct LaidOutShard {
    path: PathBuf,
    /// Declared tensors not added yet.
    missing: usize,
}

/// The spill file of the shard being filled.
struct Spill {
    path: PathBuf,
    file: File,
    len: u64,
}

/// A checkpoint being written. Call [`finish`](Self::finish) to publish it.
pub struct CheckpointWriter {
    target: PathBuf,
    tmp: PathBuf,
    options: WriterOptions,
    pending: BTreeMap<String, PendingTensor>,
    pending_bytes: u64,
    /// Bytes of `pending` held in memory.
    buffered_bytes: u64,
    spill: Option<Spill>,
    /// Tensor names of each shard written so far (temporary file names are `shard-<k>`).
    shards: Vec<Vec<String>>,
    names: HashSet<String>,
    tensor_bytes: u64,
    /// Declared tensors (see [`declare`](Self::declare)) and the shards laid out for them.
    declared: HashMap<String, Placement>,
    laid_out: Vec<LaidOutShard>,
    /// Published, or discarded after a failed write: the temporary directory is no longer ours to remove.
    closed: bool,
    fault: Option<FaultHook>,
}

impl CheckpointWriter {
    /// Checks the target and creates the temporary directory beside it. A target that is a symbolic link to a
    /// directory is written where the link points (the link stays); a link to nothing is refused.
    pub fn create(target: impl AsRef<Path>, options: WriterOptions) -> Result<Self> {
        #[cfg(unix)]
        ignore_sigxfsz();
        let target = resolve_target(&absolute(target.as_ref())?)?;
        let invalid = |message: String| Error::OutputInvalid { path: target.clone(), message };
        let name =
            target.file_name().and_then(|n| n.to_str()).ok_or_else(|| invalid("not a usable directory name".into()))?;
        if name.len() > NAME_MAX {
            return Err(invalid(format!(
                "the directory name is {} bytes long, more than the {NAME_MAX} a file system allows",
                name.len()
            )));
        }
        if let Some(input) = &options.input_dir {
            let input = absolute(input)?;
            let input = input.canonicalize().unwrap_or(input);
            let resolved = resolve_existing_prefix(&target);
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
        match std::fs::metadata(&target) {
            Ok(meta) if !meta.is_dir() => return Err(invalid("exists and is not a directory".into())),
            Ok(_) => {
                let non_empty = std::fs::read_dir(&target).with_path(&target)?.next().is_some();
                if non_empty && !options.overwrite {
                    return Err(invalid("exists and is not empty; pass overwrite to replace it".into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path: target, source: e }),
        }
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
        Ok(CheckpointWriter {
            target,
            tmp,
            options,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            buffered_bytes: 0,
            spill: None,
            shards: Vec::new(),
            names: HashSet::new(),
            tensor_bytes: 0,
            declared: HashMap::new(),
            laid_out: Vec::new(),
            closed: false,
            fault: None,
        })
    }

    /// The temporary directory being written (removed unless `finish` succeeds).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Test support: `hook` is called before every file-system operation on the output from now on, and
    /// an error it returns is what that operation fails with. Not part of the API.
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: impl FnMut(OutputOp, &Path) -> io::Result<()> + Send + 'static) {
        self.fault = Some(Box::new(hook));
    }

    /// Declares every tensor the output will hold, in the order they would be added one by one (which
    /// decides the shards, exactly as adding them would), before any is added. The shards' headers are
    /// written now; [`add_tensor`](Self::add_tensor) then writes each tensor's bytes straight to its place,
    /// in any order, and accepts only declared tensors with their declared dtype and shape. `finish` fails if
    /// one was never added.
    pub fn declare(&mut self, tensors: &[TensorLayout]) -> Result<()> {
        self.ensure_open()?;
        if !self.names.is_empty() || !self.shards.is_empty() {
            return Err(Error::internal(format!(
                "{}: tensors must be declared before any is added, and once",
                self.target.display()
            )));
        }
        let declared = self.declare_inner(tensors);
        self.discard_on_error(declared)
    }

    fn declare_inner(&mut self, tensors: &[TensorLayout]) -> Result<()> {
        let mut groups: Vec<Vec<(&TensorLayout, usize)>> = Vec::new();
        let mut group_bytes = 0u64;
        let mut seen = HashSet::new();
        for tensor in tensors {
            if !seen.insert(tensor.name.as_str()) {
                return Err(Error::internal(format!("tensor {} was declared twice", tensor.name)));
            }
            let len = tensor.dtype.byte_len(&tensor.shape).ok_or_else(|| Error::ShapeInvalid {
                tensor: tensor.name.clone(),
                shape: tensor.shape.clone(),
                message: "holds more than usize::MAX bytes".into(),
            })?;
            // The rule of `add_tensor`: a shard is full when the next tensor would take it past the limit.
            match groups.last_mut() {
                Some(group) if group_bytes + len as u64 <= self.options.max_shard_bytes => {
                    group.push((tensor, len));
                    group_bytes += len as u64;
                }
                _ => {
                    groups.push(vec![(tensor, len)]);
                    group_bytes = len as u64;
                }
            }
        }
        for group in groups {
            let k = self.shards.len();
            let path = self.tmp.join(format!("shard-{k}"));
            let entries: Vec<HeaderEntry<'_>> = group
                .iter()
                .map(|(t, len)| HeaderEntry { name: &t.name, dtype: t.dtype, shape: &t.shape, len: *len })
                .collect();
            let (header, order) = shard_header(&entries, &path)?;
            let data_start = 8 + header.len() as u64;
            let mut offset = data_start;
            for &i in &order {
                let (tensor, len) = group[i];
                let placement = Placement { shard: k, offset, dtype: tensor.dtype, shape: tensor.shape.clone() };
                self.declared.insert(tensor.name.clone(), placement);
                offset += len as u64;
            }
            (|| {
                check(&mut self.fault, OutputOp::CreateFile, &path)?;
                let file = File::options().write(true).create_new(true).open(&path)?;
                check(&mut self.fault, OutputOp::Write, &path)?;
                let mut head = Vec::with_capacity(data_start as usize);
                head.extend_from_slice(&(header.len() as u64).to_le_bytes());
                head.extend_from_slice(&header);
                write_all_at(&file, &head, 0)?;
                // The full size at once: tensors are written at their offsets, in any order.
                file.set_len(offset)
            })()
            .map_err(|e| output_error(&path, e))?;
            self.laid_out.push(LaidOutShard { path, missing: group.len() });
            self.shards.push(group.iter().map(|(t, _)| t.name.clone()).collect());
        }
        Ok(())
    }

    /// Writes a declared tensor's bytes at their place in its shard; starts writing the shard back to disk
    /// once its last tensor is in.
    fn write_declared(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Result<()> {
        let Some(placement) = self.declared.get(name) else {
            return Err(Error::internal(format!("tensor {name} was not declared before the output was written")));
        };
        if placement.dtype != dtype || placement.shape != shape {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!(
                    "{dtype} {shape:?} does not match the declared {} {:?}",
                    placement.dtype, placement.shape
                ),
            });
        }
        let shard = &mut self.laid_out[placement.shard];
        shard.missing -= 1;
        let complete = shard.missing == 0;
        check(&mut self.fault, OutputOp::Write, &shard.path)
            .and_then(|()| File::options().write(true).open(&shard.path))
            .and_then(|file| {
                write_all_at(&file, data, placement.offset)?;
                if complete {
                    start_writeback(&file);
                }
                Ok(())
            })
            .map_err(|e| output_error(&shard.path, e))
    }

    /// Adds one tensor (row-major little-endian bytes). Shards are flushed to disk as they fill.
    pub fn add_tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Result<()> {
        self.ensure_open()?;
        let expected = dtype.byte_len(shape);
        if expected != Some(data.len()) {
            let expected = expected.map_or("more than usize::MAX bytes".into(), |n| format!("{n} bytes"));
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!("{dtype} data of {} bytes does not fill the shape ({expected})", data.len()),
            });
        }
        if !self.names.insert(name.to_string()) {
            return Err(Error::internal(format!("tensor {name} was written twice")));
        }
        let size = data.len() as u64;
        if !self.declared.is_empty() {
            let written = self.write_declared(name, dtype, shape, &data);
            self.discard_on_error(written)?;
            self.tensor_bytes += size;
            return Ok(());
        }
        if !self.pending.is_empty() && self.pending_bytes + size > self.options.max_shard_bytes {
            let flushed = self.flush_shard();
            self.discard_on_error(flushed)?;
        }
        self.pending_bytes += size;
        self.tensor_bytes += size;
        let data = if self.buffered_bytes + size > self.options.max_buffer_bytes {
            let spilled = self.spill_tensor(&data);
            self.discard_on_error(spilled)?
        } else {
            self.buffered_bytes += size;
            PendingData::Memory(data)
        };
        self.pending.insert(name.to_string(), PendingTensor { dtype, shape: shape.to_vec(), data });
        Ok(())
    }

    /// Appends `data` to the current shard's spill file (created on first use).
    fn spill_tensor(&mut self, data: &[u8]) -> Result<PendingData> {
        if self.spill.is_none() {
            let path = self.tmp.join(format!("shard-{}.spill", self.shards.len()));
            let file = check(&mut self.fault, OutputOp::CreateFile, &path)
                .and_then(|()| File::options().read(true).write(true).create_new(true).open(&path))
                .map_err(|e| output_error(&path, e))?;
            self.spill = Some(Spill { path, file, len: 0 });
        }
        let Some(spill) = self.spill.as_mut() else { unreachable!("created above") };
        let offset = spill.len;
        check(&mut self.fault, OutputOp::Write, &spill.path)
            .and_then(|()| spill.file.write_all(data))
            .map_err(|e| output_error(&spill.path, e))?;
        spill.len += data.len() as u64;
        Ok(PendingData::Spilled { offset, len: data.len() })
    }

    /// Writes a non-tensor file (config, metadata) into the output.
    pub fn write_file(&mut self, relative: &str, bytes: &[u8]) -> Result<()> {
        self.ensure_open()?;
        let written = self.write_file_inner(relative, bytes);
        self.discard_on_error(written)
    }

    fn write_file_inner(&mut self, relative: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(relative);
        self.create_parent(&path)?;
        write_new_file(&path, &mut self.fault, |out| out.write_all(bytes))
    }

    /// Copies a file of the input (tokenizer, generation config …) into the output unchanged. A failure to
    /// read names the source, a failure to write the copy.
    pub fn copy_file(&mut self, source: &Path, relative: &str) -> Result<()> {
        self.ensure_open()?;
        let copied = self.copy_file_inner(source, relative);
        self.discard_on_error(copied)
    }

    fn copy_file_inner(&mut self, source: &Path, relative: &str) -> Result<()> {
        let mut input = open_regular(source)?;
        let path = self.tmp.join(relative);
        self.create_parent(&path)?;
        let mut read_error = None;
        let written = write_new_file(&path, &mut self.fault, |out| {
            let mut buffer = vec![0u8; WRITE_BUFFER];
            loop {
                let n = match input.read(&mut buffer) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        read_error = Some(e);
                        return Err(io::Error::other("reading the source failed"));
                    }
                };
                out.write_all(&buffer[..n])?;
            }
        });
        match read_error {
            Some(source_error) => Err(Error::Io { path: source.to_path_buf(), source: source_error }),
            None => written,
        }
    }

    /// Creates the directories above `path` inside the temporary directory.
    fn create_parent(&mut self, path: &Path) -> Result<()> {
        match path.parent() {
            Some(parent) if parent != self.tmp => check(&mut self.fault, OutputOp::CreateDir, parent)
                .and_then(|()| std::fs::create_dir_all(parent))
                .map_err(|e| output_error(parent, e)),
            _ => Ok(()),
        }
    }

    fn flush_shard(&mut self) -> Result<()> {
        let path = self.tmp.join(format!("shard-{}", self.shards.len()));
        let tensors = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.buffered_bytes = 0;
        let spill = self.spill.take();
        let entries: Vec<HeaderEntry<'_>> = tensors
            .iter()
            .map(|(name, t)| HeaderEntry { name, dtype: t.dtype, shape: &t.shape, len: t.len() })
            .collect();
        let (header, order) = shard_header(&entries, &path)?;
        let all: Vec<&PendingTensor> = tensors.values().collect();
        let order: Vec<&PendingTensor> = order.into_iter().map(|i| all[i]).collect();
        write_new_file(&path, &mut self.fault, |out| {
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            let mut chunk = Vec::new();
            for tensor in order {
                match (&tensor.data, &spill) {
                    (PendingData::Memory(bytes), _) => out.write_all(bytes)?,
                    (&PendingData::Spilled { offset, len }, Some(spill)) => {
                        // Copied back in pieces, so memory stays bounded by the piece.
                        let mut done = 0;
                        while done < len {
                            let piece = (len - done).min(WRITE_BUFFER * 16);
                            chunk.resize(piece, 0);
                            read_exact_at(&spill.file, offset + done as u64, &mut chunk)?;
                            out.write_all(&chunk)?;
                            done += piece;
                        }
                    }
                    (PendingData::Spilled { .. }, None) => {
                        return Err(io::Error::other("a spilled tensor has no spill file"));
                    }
                }
            }
            Ok(())
        })?;
        if let Some(spill) = spill {
            drop(spill.file);
            std::fs::remove_file(&spill.path).map_err(|e| output_error(&spill.path, e))?;
        }
        self.shards.push(tensors.into_keys().collect());
        Ok(())
    }

    /// Writes the last shard and the index, then renames the temporary directory into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        self.ensure_open()?;
        let finished = self.finish_inner();
        self.discard_on_error(finished)
    }

    fn finish_inner(&mut self) -> Result<WriteSummary> {
        if !self.declared.is_empty() {
            let mut missing: Vec<&String> = self.declared.keys().filter(|name| !self.names.contains(*name)).collect();
            if !missing.is_empty() {
                missing.sort();
                return Err(Error::internal(format!(
                    "{} declared tensor(s) were never written, first {}",
                    missing.len(),
                    missing[0]
                )));
            }
            for shard in std::mem::take(&mut self.laid_out) {
                check(&mut self.fault, OutputOp::Sync, &shard.path)
                    .and_then(|()| File::options().write(true).open(&shard.path))
                    .and_then(|file| file.sync_all())
                    .map_err(|e| output_error(&shard.path, e))?;
            }
        } else if !self.pending.is_empty() || self.shards.is_empty() {
            self.flush_shard()?;
        }
        let count = self.shards.len();
        let mut weight_map = BTreeMap::new();
        for (k, tensors) in self.shards.iter().enumerate() {
            let final_name = if count == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", k + 1)
            };
            let from = self.tmp.join(format!("shard-{k}"));
            let to = self.tmp.join(&final_name);
            check(&mut self.fault, OutputOp::Rename, &from)
                .and_then(|()| std::fs::rename(&from, &to))
                .map_err(|e| output_error(&from, e))?;
            for tensor in tensors {
                weight_map.insert(tensor.clone(), final_name.clone());
            }
        }
        if count > 1 {
            let index = serde_json::json!({
                "metadata": { "total_size": self.tensor_bytes },
                "weight_map": weight_map,
            });
            let text = serde_json::to_string_pretty(&index).map_err(|e| Error::internal(e.to_string()))?;
            self.write_file_inner(INDEX_FILE, format!("{text}\n").as_bytes())?;
        }
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.tmp).with_path(&self.tmp)? {
            let entry = entry.with_path(&self.tmp)?;
            let metadata = entry.metadata().with_path(&entry.path())?;
            if metadata.is_file() {
                files.insert(entry.file_name().to_string_lossy().into_owned(), metadata.len());
            }
        }
        sync_dir(&self.tmp);
        self.publish()?;
        Ok(WriteSummary { files, tensor_bytes: self.tensor_bytes, shard_count: count })
    }

    /// Moves the finished temporary directory to the target in one atomic step. The decision about what is
    /// at the target holds at this moment, not only when the writer was created:
    /// - without `overwrite`, the rename itself refuses a target that is not an empty directory (one that
    ///   appeared during the run, another run's output …), which is left as it is;
    /// - with `overwrite`, an existing directory is swapped with the new one in one step (Linux
    ///   `RENAME_EXCHANGE`; elsewhere renamed away first and put back if the move fails) and deleted after;
    ///   anything else at the target (a file, a link) is refused.
    fn publish(&mut self) -> Result<()> {
        check(&mut self.fault, OutputOp::Rename, &self.tmp).map_err(|e| output_error(&self.tmp, e))?;
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
            Some(meta) if self.options.overwrite && meta.is_dir() => self.replace_existing()?,
            Some(meta) if self.options.overwrite => {
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

    fn ensure_open(&self) -> Result<()> {
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
    fn discard_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() && !self.closed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            self.closed = true;
        }
        result
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.closed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Runs the fault hook, if any, for one operation.
fn check(fault: &mut Option<FaultHook>, op: OutputOp, path: &Path) -> io::Result<()> {
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
fn write_new_file(
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

/// One tensor of a shard, as its header describes it.
struct HeaderEntry<'a> {
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    /// Bytes of data.
    len: usize,
}

/// The safetensors header of a shard and the order of its tensors in the file (indices into `entries`),
/// exactly as `safetensors::serialize_to_file` lays them out (tensors by descending dtype alignment, then by
/// name; the JSON padded with spaces to a multiple of 8; `{"format": "pt"}` metadata), so outputs keep the
/// same bytes; written here so that every write goes through [`OutputFile`].
fn shard_header(entries: &[HeaderEntry<'_>], path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.dtype.to_safetensors().cmp(&a.dtype.to_safetensors()).then(a.name.cmp(b.name))
    });
    let mut offset = 0;
    let mut infos = Vec::with_capacity(order.len());
    for &i in &order {
        let entry = &entries[i];
        let end = offset + entry.len;
        infos.push((
            entry.name.to_string(),
            safetensors::tensor::TensorInfo {
                dtype: entry.dtype.to_safetensors(),
                shape: entry.shape.to_vec(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let internal = |e: &dyn std::fmt::Display| Error::internal(format!("serializing {}: {e}", path.display()));
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let metadata = Metadata::new(Some(metadata), infos).map_err(|e| internal(&e))?;
    let mut header = serde_json::to_string(&metadata).map_err(|e| internal(&e))?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(internal(&format!("the header is {} bytes, more than safetensors allows", header.len())));
    }
    Ok((header, order))
}

/// `pwrite` of all of `data` at `offset`.
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
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

/// Asks the kernel to start writing a finished file's dirty pages to disk now, without waiting, so that
/// the sync before publishing finds little left to do. A hint: nothing happens where it is not available.
fn start_writeback(file: &File) {
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
fn output_error(path: &Path, source: io::Error) -> Error {
    match write_failure_reason(&source) {
        Some(reason) => Error::OutputWrite { path: path.to_path_buf(), reason, source },
        None => Error::Io { path: path.to_path_buf(), source },
    }
}

/// Syncs a directory's entries (a rename is durable only then). Best effort: some file systems refuse to
/// sync directories, and the files themselves were synced already.
fn sync_dir(dir: &Path) {
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
fn ignore_sigxfsz() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_have_the_bytes_of_safetensors_serialize_whether_buffered_or_spilled() {
        let entries: [(&str, Dtype, &[usize]); 5] = [
            ("b.weight", Dtype::U8, &[3, 5]),
            ("a.weight", Dtype::BF16, &[2, 3]),
            ("a.scale", Dtype::F32, &[]),
            ("c", Dtype::F8E4M3, &[7]),
            ("z", Dtype::F64, &[1]),
        ];
        let tensors = tensors_of(&entries);
        let views = tensors.iter().map(|(name, dtype, shape, data)| {
            (name, safetensors::tensor::TensorView::new(dtype.to_safetensors(), shape.clone(), data).unwrap())
        });
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        let theirs = safetensors::serialize(views, metadata).unwrap();
        // Everything in memory, everything spilled, and a mix (the first 20 bytes buffered).
        for max_buffer_bytes in [u64::MAX, 0, 20] {
            let tmp = tempfile::tempdir().unwrap();
            let target = tmp.path().join("out");
            let options = WriterOptions { max_buffer_bytes, ..WriterOptions::default() };
            let mut writer = CheckpointWriter::create(&target, options).unwrap();
            let mut spilled = false;
            for (name, dtype, shape, data) in &tensors {
                writer.add_tensor(name, *dtype, shape, data.clone()).unwrap();
                spilled |= writer.spill.is_some();
            }
            assert_eq!(spilled, max_buffer_bytes != u64::MAX);
            let summary = writer.finish().unwrap();
            assert_eq!(std::fs::read(target.join(SINGLE_FILE)).unwrap(), theirs, "budget {max_buffer_bytes}");
            assert_eq!(summary.files.keys().collect::<Vec<_>>(), [SINGLE_FILE], "no spill file is left");
        }
    }

    /// Each (name, dtype, shape) with distinct bytes.
    fn tensors_of(entries: &[(&str, Dtype, &[usize])]) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        entries
            .iter()
            .enumerate()
            .map(|(k, &(name, dtype, shape))| {
                let len = shape.iter().product::<usize>() * dtype.size();
                (name.to_string(), dtype, shape.to_vec(), (0..len).map(|i| (i * 7 + k * 31) as u8).collect())
            })
            .collect()
    }

    /// The declaration of `tensors`, in their order.
    fn layout_of(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<TensorLayout> {
        tensors
            .iter()
            .map(|(name, dtype, shape, _)| TensorLayout { name: name.clone(), dtype: *dtype, shape: shape.clone() })
            .collect()
    }

    /// Tensors of several dtypes and sizes (names out of order), with distinct bytes.
    fn sample_tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        tensors_of(&[
            ("m.b.weight", Dtype::U8, &[3, 5]),
            ("m.a.weight", Dtype::BF16, &[2, 3]),
            ("m.a.scale", Dtype::F32, &[]),
            ("c", Dtype::F8E4M3, &[7]),
            ("z", Dtype::F64, &[1]),
            ("big", Dtype::F32, &[6, 4]),
            ("e.input_scale", Dtype::F32, &[]),
            ("d", Dtype::BF16, &[9]),
        ])
    }

    /// Every file of a published output, name → bytes.
    fn output_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect()
    }

    #[test]
    fn declared_tensors_written_in_any_order_give_the_bytes_of_adding_them_in_order() {
        let tensors = sample_tensors();
        let layout = layout_of(&tensors);
        // One shard, and shards of at most 40 bytes (several, one tensor alone in its own).
        for max_shard_bytes in [u64::MAX, 40] {
            let tmp = tempfile::tempdir().unwrap();
            let options = WriterOptions { max_shard_bytes, ..WriterOptions::default() };
            let added = tmp.path().join("added");
            let mut writer = CheckpointWriter::create(&added, options.clone()).unwrap();
            for (name, dtype, shape, data) in &tensors {
                writer.add_tensor(name, *dtype, shape, data.clone()).unwrap();
            }
            let expected = writer.finish().unwrap();
            assert_eq!(expected.shard_count > 1, max_shard_bytes == 40);
            for order in [vec![0usize, 1, 2, 3, 4, 5, 6, 7], vec![7, 5, 3, 1, 0, 2, 4, 6], vec![4, 6, 7, 0, 5, 1, 3, 2]]
            {
                let declared = tmp.path().join(format!("declared-{order:?}"));
                let mut writer = CheckpointWriter::create(&declared, options.clone()).unwrap();
                writer.declare(&layout).unwrap();
                for &i in &order {
                    let (name, dtype, shape, data) = &tensors[i];
                    writer.add_tensor(name, *dtype, shape, data.clone()).unwrap();
                }
                let summary = writer.finish().unwrap();
                assert_eq!(summary.files, expected.files, "{max_shard_bytes} {order:?}");
                assert_eq!(summary.tensor_bytes, expected.tensor_bytes);
                assert_eq!(output_files(&declared), output_files(&added), "{max_shard_bytes} {order:?}");
            }
        }
    }

    #[test]
    fn declared_output_refuses_strangers_mismatches_and_gaps() {
        let tensors = sample_tensors();
        let layout = layout_of(&tensors);
        let tmp = tempfile::tempdir().unwrap();
        let fresh = |name: &str| {
            let mut writer = CheckpointWriter::create(tmp.path().join(name), WriterOptions::default()).unwrap();
            writer.declare(&layout).unwrap();
            writer
        };
        let (name, dtype, shape, data) = &tensors[0];

        let mut writer = fresh("stranger");
        let error = writer.add_tensor("not.declared", Dtype::U8, &[2], vec![0, 1]).unwrap_err();
        assert!(error.to_string().contains("not.declared was not declared"), "{error}");
        assert!(!writer.tmp_dir().exists(), "a failed writer removes its temporary directory");

        let mut writer = fresh("dtype");
        let error = writer.add_tensor(name, Dtype::F8E4M3, shape, data.clone()).unwrap_err();
        assert_eq!(error.code(), "E_TENSOR_SHAPE");
        let mut writer = fresh("shape");
        let error = writer.add_tensor(name, *dtype, &[5, 3], data.clone()).unwrap_err();
        assert_eq!(error.code(), "E_TENSOR_SHAPE", "{error}");

        let mut writer = fresh("gap");
        for (name, dtype, shape, data) in tensors.iter().skip(1) {
            writer.add_tensor(name, *dtype, shape, data.clone()).unwrap();
        }
        let tmp_dir = writer.tmp_dir().to_path_buf();
        let error = writer.finish().unwrap_err();
        assert!(error.to_string().contains("1 declared tensor(s) were never written, first m.b.weight"), "{error}");
        assert!(!tmp_dir.exists() && !tmp.path().join("gap").exists(), "nothing published");

        let mut writer = CheckpointWriter::create(tmp.path().join("late"), WriterOptions::default()).unwrap();
        writer.add_tensor(name, *dtype, shape, data.clone()).unwrap();
        assert!(writer.declare(&layout).is_err(), "declared after a tensor was added");
        let mut writer = CheckpointWriter::create(tmp.path().join("twice"), WriterOptions::default()).unwrap();
        let doubled: Vec<TensorLayout> = layout.iter().chain(&layout[..1]).cloned().collect();
        assert!(writer.declare(&doubled).unwrap_err().to_string().contains("declared twice"));
    }

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
