//! Writes a checkpoint: tensors go into safetensors shards of a bounded size, with
//! `model.safetensors.index.json` when there is more than one. Everything is written into a temporary
//! directory beside the target and renamed into place only by [`CheckpointWriter::finish`]; dropping an
//! unfinished writer removes the temporary directory, so a failure never leaves a half-written output.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::View;

use super::{Dtype, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};

/// Marker in the names of temporary output directories (`.<target>.moe-quant-tmp-<pid>.<n>`).
const TMP_MARKER: &str = ".moe-quant-tmp-";

/// How to write the output.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Largest shard, in bytes of tensor data; a single tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
    /// Replace an existing non-empty target directory.
    pub overwrite: bool,
    /// The checkpoint being read, which the output must never touch.
    pub input_dir: Option<PathBuf>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { max_shard_bytes: 5_000_000_000, overwrite: false, input_dir: None }
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

struct PendingTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &PendingTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A checkpoint being written. Call [`finish`](Self::finish) to publish it.
pub struct CheckpointWriter {
    target: PathBuf,
    tmp: PathBuf,
    options: WriterOptions,
    pending: BTreeMap<String, PendingTensor>,
    pending_bytes: u64,
    /// Tensor names of each shard written so far (temporary file names are `shard-<k>`).
    shards: Vec<Vec<String>>,
    names: HashSet<String>,
    tensor_bytes: u64,
    file_permissions: std::fs::Permissions,
    finished: bool,
}

impl CheckpointWriter {
    /// Checks the target and creates the temporary directory beside it.
    pub fn create(target: impl AsRef<Path>, options: WriterOptions) -> Result<Self> {
        let target = absolute(target.as_ref())?;
        let invalid = |message: String| Error::OutputInvalid { path: target.clone(), message };
        let name =
            target.file_name().and_then(|n| n.to_str()).ok_or_else(|| invalid("not a usable directory name".into()))?;
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path: target, source: e }),
        }
        let parent = target.parent().ok_or_else(|| invalid("has no parent directory".into()))?.to_path_buf();
        std::fs::create_dir_all(&parent).with_path(&parent)?;
        remove_stale_tmp_dirs(&parent, name);
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}{TMP_MARKER}{}.{sequence}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_path(&tmp)?;
        }
        std::fs::create_dir(&tmp).with_path(&tmp)?;
        // The permissions a newly created file gets here (umask applied); shards written through a temporary
        // file would otherwise be private to the owner.
        let probe = tmp.join(".permissions");
        std::fs::File::create(&probe).with_path(&probe)?;
        let file_permissions = std::fs::metadata(&probe).with_path(&probe)?.permissions();
        std::fs::remove_file(&probe).with_path(&probe)?;
        Ok(CheckpointWriter {
            target,
            tmp,
            options,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            shards: Vec::new(),
            names: HashSet::new(),
            tensor_bytes: 0,
            file_permissions,
            finished: false,
        })
    }

    /// The temporary directory being written (removed unless `finish` succeeds).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Adds one tensor (row-major little-endian bytes). Shards are flushed to disk as they fill.
    pub fn add_tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Result<()> {
        // Checked: a shape from an untrusted descriptor must not overflow into a panic.
        let expected = shape.iter().try_fold(dtype.size(), |bytes, &dim| bytes.checked_mul(dim));
        if expected != Some(data.len()) {
            let expected = expected.map_or("more than usize::MAX bytes".into(), |n| format!("{n} bytes"));
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!("{dtype} data of {} bytes does not fill the shape ({expected})", data.len()),
            });
        }
        if !self.names.insert(name.to_string()) {
            return Err(Error::Internal(format!("tensor {name} was written twice")));
        }
        let size = data.len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + size > self.options.max_shard_bytes {
            self.flush_shard()?;
        }
        self.pending_bytes += size;
        self.tensor_bytes += size;
        self.pending.insert(name.to_string(), PendingTensor { dtype, shape: shape.to_vec(), data });
        Ok(())
    }

    /// Writes a non-tensor file (config, metadata) into the output.
    pub fn write_file(&mut self, relative: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_path(parent)?;
        }
        std::fs::write(&path, bytes).with_path(&path)
    }

    /// Copies a file of the input (tokenizer, generation config …) into the output unchanged.
    pub fn copy_file(&mut self, source: &Path, relative: &str) -> Result<()> {
        let path = self.tmp.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_path(parent)?;
        }
        std::fs::copy(source, &path).with_path(source)?;
        Ok(())
    }

    fn flush_shard(&mut self) -> Result<()> {
        let path = self.tmp.join(format!("shard-{}", self.shards.len()));
        let tensors = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), metadata, &path).map_err(|e| {
            match e {
                safetensors::SafeTensorError::IoError(source) => Error::Io { path: path.clone(), source },
                other => Error::Internal(format!("serializing {}: {other}", path.display())),
            }
        })?;
        std::fs::set_permissions(&path, self.file_permissions.clone()).with_path(&path)?;
        self.shards.push(tensors.into_keys().collect());
        Ok(())
    }

    /// Writes the last shard and the index, then renames the temporary directory into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if !self.pending.is_empty() || self.shards.is_empty() {
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
            std::fs::rename(&from, &to).with_path(&from)?;
            for tensor in tensors {
                weight_map.insert(tensor.clone(), final_name.clone());
            }
        }
        if count > 1 {
            let index = serde_json::json!({
                "metadata": { "total_size": self.tensor_bytes },
                "weight_map": weight_map,
            });
            let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Internal(e.to_string()))?;
            self.write_file(INDEX_FILE, format!("{text}\n").as_bytes())?;
        }
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.tmp).with_path(&self.tmp)? {
            let entry = entry.with_path(&self.tmp)?;
            let metadata = entry.metadata().with_path(&entry.path())?;
            if metadata.is_file() {
                files.insert(entry.file_name().to_string_lossy().into_owned(), metadata.len());
            }
        }
        self.publish()?;
        Ok(WriteSummary { files, tensor_bytes: self.tensor_bytes, shard_count: count })
    }

    /// Moves the finished temporary directory to the target, replacing an old one only now.
    fn publish(&mut self) -> Result<()> {
        if self.target.exists() {
            let old = self.tmp.with_extension("replaced");
            std::fs::rename(&self.target, &old).with_path(&self.target)?;
            std::fs::rename(&self.tmp, &self.target).with_path(&self.tmp)?;
            std::fs::remove_dir_all(&old).with_path(&old)?;
        } else {
            std::fs::rename(&self.tmp, &self.target).with_path(&self.tmp)?;
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
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
    let prefix = format!(".{name}{TMP_MARKER}");
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
