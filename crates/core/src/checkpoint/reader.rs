//! Opens a Hugging Face checkpoint directory: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`. Every file's header is validated by
//! [`parse_safetensors_prefix`](super::header::parse_safetensors_prefix) before any tensor is touched;
//! tensors are then read with positioned reads (see [`source`](super::source)), a layer ahead when asked.
//!
//! The tensors it lists and reads are the logical ones: weights stored pre-quantized in a form transformers
//! dequantizes on load (GPT-OSS' MXFP4, FP8 with block scales) appear dequantized, as [`prequant`](super::prequant)
//! describes; [`Checkpoint::stored_tensors`] lists the files' own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::header::{header_prefix_len, parse_safetensors_prefix, too_short};
use super::prequant::{self, StoredForm};
use super::source::{AheadBytes, ReadAhead, ShardSource, SharedBytes, Wanted};
use super::{Dtype, TensorView, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};
use crate::limits::{open_regular, read_small_text, MAX_INDEX_BYTES};

mod partial;

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// The dtype it is read in (for a dequantized tensor, not the stored one).
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Byte range inside the file (absolute, header included); of the stored codes for a dequantized tensor.
    pub start: usize,
    pub end: usize,
    /// How it is stored: as listed, or quantized in a form dequantized on read.
    pub form: StoredForm,
}

impl TensorInfo {
    /// Bytes of the tensor as read.
    pub fn bytes(&self) -> usize {
        match self.form {
            StoredForm::Plain => self.end - self.start,
            _ => self.dtype.byte_len(&self.shape).unwrap_or(usize::MAX),
        }
    }
}

/// One safetensors file of the checkpoint.
#[derive(Debug)]
pub struct ShardFile {
    /// File name relative to the checkpoint directory.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// `__metadata__` of the header, if any.
    pub metadata: BTreeMap<String, String>,
}

/// An opened checkpoint: every tensor of every shard, by name.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<ShardFile>,
    /// The open files, in the order of `files`.
    sources: Arc<Vec<ShardSource>>,
    /// The tensors as read (pre-quantized ones dequantized).
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    /// The tensors as the files hold them, when some are read dequantized (else they are `tensors`).
    stored: Option<(Vec<TensorInfo>, HashMap<String, usize>)>,
    /// The `metadata` object of the index file, when sharded.
    index_metadata: Option<serde_json::Value>,
    ahead: Arc<ReadAhead>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("dir", &self.dir).field("files", &self.files).finish_non_exhaustive()
    }
}

/// One tensor's bytes as stored (little endian, row major), read from the checkpoint and owned.
#[derive(Debug, Clone)]
pub struct TensorData {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: SharedBytes,
}

impl TensorData {
    /// The tensor `info` describes, holding `data`.
    fn of(info: &TensorInfo, data: SharedBytes) -> Self {
        TensorData { name: info.name.clone(), dtype: info.dtype, shape: info.shape.clone(), data }
    }

    /// A borrowed view, for the conversions of [`TensorView`].
    pub fn view(&self) -> TensorView<'_> {
        TensorView { name: &self.name, dtype: self.dtype, shape: &self.shape, data: &self.data }
    }

    /// The values converted to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.view().to_f32()
    }

    /// The `index`-th slice along the first dimension (one expert of a fused `[E, …]` tensor), sharing the
    /// bytes.
    pub fn slice_first(&self, index: usize) -> Result<TensorData> {
        let slice = self.view().slice_first(index)?;
        let stride = slice.data.len();
        Ok(TensorData {
            name: self.name.clone(),
            dtype: self.dtype,
            shape: slice.shape,
            data: self.data.slice(index * stride..(index + 1) * stride),
        })
    }
}

impl Checkpoint {
    /// Opens the checkpoint in `dir` (single file or sharded), validating every header.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let meta = std::fs::metadata(&dir).with_path(&dir)?;
        if !meta.is_dir() {
            return Err(Error::Io {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        // `exists` (links followed), not `is_file`: an index or a weights file that is a FIFO or a device is
        // refused as such, not taken for missing.
        if index_path.exists() {
            Self::open_sharded(dir, &index_path)
        } else if single_path.exists() {
            let mut checkpoint = Self::empty(dir.clone());
            let mut sources = Vec::new();
            let file = open_shard(&dir, SINGLE_FILE)?;
            checkpoint.add_file(file, None, &mut sources)?;
            checkpoint.finish(sources)
        } else {
            Err(Error::NoWeights { dir })
        }
    }

    fn empty(dir: PathBuf) -> Self {
        Checkpoint {
            dir,
            files: Vec::new(),
            sources: Arc::new(Vec::new()),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            stored: None,
            index_metadata: None,
            ahead: Arc::new(ReadAhead::default()),
        }
    }

    fn open_sharded(dir: PathBuf, index_path: &Path) -> Result<Self> {
        let invalid = |message: String| Error::IndexInvalid { path: index_path.to_path_buf(), message };
        let text = read_small_text(index_path, MAX_INDEX_BYTES, invalid)?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let weight_map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| invalid("no \"weight_map\" object".into()))?;
        if weight_map.is_empty() {
            return Err(Error::NoWeights { dir });
        }
        // Shard name → tensors the index places there (shards opened in name order).
        let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tensor, shard) in weight_map {
            let shard = shard.as_str().ok_or_else(|| invalid(format!("weight_map[{tensor:?}] is not a file name")))?;
            check_relative_name(shard).map_err(|m| invalid(format!("weight_map[{tensor:?}] = {shard:?}: {m}")))?;
            shards.entry(shard.to_string()).or_default().push(tensor.clone());
        }
        let mut checkpoint = Self::empty(dir.clone());
        checkpoint.index_metadata = index.get("metadata").cloned();
        let mut sources = Vec::with_capacity(shards.len());
        for (shard, expected) in shards {
            // `try_exists`: a symlink loop or an unreadable directory is an I/O error, not a missing shard.
            let shard_path = dir.join(&shard);
            if !shard_path.try_exists().with_path(&shard_path)? {
                return Err(Error::ShardMissing {
                    index: index_path.to_path_buf(),
                    shard,
                    tensor: expected.first().cloned().unwrap_or_default(),
                });
            }
            let file = open_shard(&dir, &shard)?;
            checkpoint.add_file(file, Some((index_path, &expected)), &mut sources)?;
        }
        checkpoint.finish(sources)
    }

    /// Keeps the open files and lists the tensors as read, when they differ from the stored ones.
    fn finish(mut self, sources: Vec<ShardSource>) -> Result<Self> {
        self.sources = Arc::new(sources);
        let paths: Vec<&Path> = self.files.iter().map(|f| f.path.as_path()).collect();
        if let Some(logical) = prequant::logical_tensors(&self.dir, &self.tensors, &paths)? {
            let by_name = logical.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
            let stored = std::mem::replace(&mut self.tensors, logical);
            self.stored = Some((stored, std::mem::replace(&mut self.by_name, by_name)));
        }
        Ok(self)
    }

    /// Registers a file's tensors; with an index, checks that the tensors it lists are really there.
    fn add_file(
        &mut self,
        parsed: ParsedShard,
        index: Option<(&Path, &[String])>,
        sources: &mut Vec<ShardSource>,
    ) -> Result<()> {
        let file_index = self.files.len();
        if let Some((index_path, expected)) = index {
            // A set, so that an index listing a million names costs a million lookups, not a million scans.
            let held: HashSet<&str> = parsed.tensors.iter().map(|t| t.name.as_str()).collect();
            for tensor in expected {
                if !held.contains(tensor.as_str()) {
                    return Err(Error::IndexInvalid {
                        path: index_path.to_path_buf(),
                        message: format!(
                            "tensor {tensor} is listed in {} but that file does not hold it",
                            parsed.file.name
                        ),
                    });
                }
            }
        }
        for mut info in parsed.tensors {
            if let Some(&previous) = self.by_name.get(&info.name) {
                let first = self.files[self.tensors[previous].file].path.clone();
                return Err(Error::TensorDuplicate { tensor: info.name, first, second: parsed.file.path });
            }
            info.file = file_index;
            self.by_name.insert(info.name.clone(), self.tensors.len());
            self.tensors.push(info);
        }
        self.files.push(parsed.file);
        sources.push(parsed.source);
        Ok(())
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, in the order they were opened.
    pub fn files(&self) -> &[ShardFile] {
        &self.files
    }

    /// Every tensor as read, in file order then offset order (a dequantized tensor where its codes are).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Every tensor as the files store it (pre-quantized ones as codes and scales).
    pub fn stored_tensors(&self) -> &[TensorInfo] {
        self.stored.as_ref().map_or(&self.tensors, |(stored, _)| stored)
    }

    /// A stored tensor that a tensor as read is made of.
    fn stored_info(&self, name: &str) -> Result<&TensorInfo> {
        let (tensors, by_name) = self.stored.as_ref().map_or((&self.tensors, &self.by_name), |(t, b)| (t, b));
        by_name.get(name).map(|&i| &tensors[i]).ok_or_else(|| Error::TensorNotFound { tensor: name.to_string() })
    }

    /// The stored tensors `info` is read from.
    fn parts<'a>(&'a self, info: &'a TensorInfo) -> Vec<&'a TensorInfo> {
        let names: Vec<&str> = match &info.form {
            StoredForm::Plain => return vec![info],
            StoredForm::Mxfp4 { blocks, scales } => vec![blocks, scales],
            StoredForm::Fp8Block { scale_inv, .. } => vec![&info.name, scale_inv],
        };
        names.into_iter().filter_map(|name| self.stored_info(name).ok()).collect()
    }

    /// The index file's `metadata` object, when the checkpoint is sharded.
    pub fn index_metadata(&self) -> Option<&serde_json::Value> {
        self.index_metadata.as_ref()
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Where a tensor lives and what it holds.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::TensorNotFound { tensor: name.to_string() })
    }

    /// Starts reading every tensor whose name starts with one of `prefixes` on a background thread (the next
    /// layer, while the current one computes), in large requests in file order. Forgets what an earlier call
    /// read and nobody took, unless it asked for the very same tensors and none was taken yet: that read-ahead
    /// goes on. Returns at once; a failed read-ahead only means the tensor is read when asked for.
    pub fn prefetch(&self, prefixes: &[&str]) {
        self.ahead.start(Arc::clone(&self.sources), self.wanted(prefixes));
    }

    /// The stored parts of every tensor whose name starts with one of `prefixes`, as the read-ahead fetches them.
    fn wanted(&self, prefixes: &[&str]) -> Vec<Wanted> {
        self.tensors
            .iter()
            .filter(|t| prefixes.iter().any(|prefix| t.name.starts_with(prefix)))
            .flat_map(|t| self.parts(t))
            .map(|t| Wanted { name: t.name.clone(), file: t.file, range: t.start as u64..t.end as u64 })
            .collect()
    }

    /// Queues the tensors whose names start with one of `prefixes` behind what the current read-ahead still has
    /// to read, keeping what it holds: the next layer, asked for as the current one starts loading, so that the
    /// disk goes on while this layer is converted and copied to the device. Returns at once.
    pub fn prefetch_next(&self, prefixes: &[&str]) {
        self.ahead.queue(Arc::clone(&self.sources), self.wanted(prefixes));
    }

    /// Ends one [`share_read_ahead`](Self::share_read_ahead) of each of `prefixes`, and forgets what the read-ahead
    /// holds or has still to read of the tensors under them that no share left covers (a loaded layer's leftovers:
    /// fused tensors its slices were cut from).
    pub fn release_read_ahead(&self, prefixes: &[&str]) {
        self.ahead.release(prefixes);
    }

    /// Hands what the read-ahead holds of the tensors whose names start with one of `prefixes` to every reader
    /// until [`release_read_ahead`](Self::release_read_ahead) has named the same prefixes as often (shares are
    /// counted): one read of a layer that several devices load, or of an embedding both looked up in and copied.
    pub fn share_read_ahead(&self, prefixes: &[&str]) {
        self.ahead.share(prefixes);
    }

    /// The tensors stored as listed (not pre-quantized) under one of `prefixes`, and a handle through which another
    /// thread gets their bytes from the read-ahead, leaving them for this checkpoint's readers.
    pub fn plain_read_ahead(&self, prefixes: &[&str]) -> (Vec<TensorInfo>, AheadBytes) {
        let wanted = |t: &&TensorInfo| t.form == StoredForm::Plain && prefixes.iter().any(|p| t.name.starts_with(p));
        (self.tensors.iter().filter(wanted).cloned().collect(), AheadBytes::new(Arc::clone(&self.ahead)))
    }

    /// Tensors read ahead and not yet taken (or still on their way).
    pub fn prefetched(&self) -> usize {
        self.ahead.outstanding()
    }

    /// The tensor's bytes (dequantized when stored pre-quantized): from the read-ahead when it fetched them (each
    /// once), else read now.
    ///
    /// Errors: `E_TENSOR_NOT_FOUND`; `E_INPUT_CHANGED` when the file is shorter than when it was opened or
    /// was modified since; `E_IO`.
    pub fn read(&self, name: &str) -> Result<TensorData> {
        let info = self.info(name)?;
        let data = match &info.form {
            StoredForm::Plain => return Ok(TensorData::of(info, self.read_stored(info)?)),
            StoredForm::Mxfp4 { blocks, scales } => {
                let (blocks, scales) = (self.stored_info(blocks)?, self.stored_info(scales)?);
                let dims = [blocks.shape[0], blocks.shape[1], blocks.shape[2]];
                prequant::decode_mxfp4(&self.read_stored(blocks)?, &self.read_stored(scales)?, dims, info.dtype)?
            }
            StoredForm::Fp8Block { scale_inv, block } => {
                let (weight, scale) = (self.stored_info(&info.name)?, self.stored_info(scale_inv)?);
                let scales = prequant::scale_values(scale.dtype, &self.read_stored(scale)?);
                prequant::decode_fp8_block(&self.read_stored(weight)?, &scales, &info.shape, *block, info.dtype)?
            }
        };
        Ok(TensorData::of(info, SharedBytes::new(data)))
    }

    /// A stored tensor's bytes, from the read-ahead when it fetched them (each once), else read now.
    fn read_stored(&self, info: &TensorInfo) -> Result<SharedBytes> {
        match self.ahead.take(&info.name) {
            Some(bytes) => Ok(bytes),
            None => Ok(SharedBytes::new(self.sources[info.file].read_range(info.start as u64..info.end as u64)?)),
        }
    }

    /// Fails with `E_INPUT_CHANGED` when any file changed size or was modified since it was opened (checked
    /// before an output is published, so a run never writes a mix of two inputs).
    pub fn check_unchanged(&self) -> Result<()> {
        self.sources.iter().try_for_each(ShardSource::check_unchanged)
    }
}

impl Drop for Checkpoint {
    /// A read-ahead still under way stops at its next request: nobody can take what it reads.
    fn drop(&mut self) {
        self.ahead.cancel();
    }
}

/// Whether `file` is a blob of the Hugging Face download cache that the snapshot directory `dir` links to:
/// the cache keeps `<repo>/snapshots/<revision>/<file>` as symlinks into `<repo>/blobs/`. Any other link
/// leaving the model directory is refused.
fn is_hub_cache_blob(dir: &Path, file: &Path) -> bool {
    let Some(snapshots) = dir.parent() else { return false };
    let Some(repo) = snapshots.parent() else { return false };
    snapshots.file_name().is_some_and(|n| n == "snapshots") && file.parent() == Some(repo.join("blobs").as_path())
}

/// A validated file and its tensors (file index not yet assigned).
struct ParsedShard {
    file: ShardFile,
    source: ShardSource,
    tensors: Vec<TensorInfo>,
}

/// Rejects names that would leave the checkpoint directory.
fn check_relative_name(name: &str) -> std::result::Result<(), &'static str> {
    let path = Path::new(name);
    if name.is_empty() {
        return Err("empty file name");
    }
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("file names must stay inside the model directory");
    }
    Ok(())
}

fn open_shard(dir: &Path, name: &str) -> Result<ParsedShard> {
    let path = dir.join(name);
    let canonical_dir = dir.canonicalize().with_path(dir)?;
    let canonical = path.canonicalize().with_path(&path)?;
    if !canonical.starts_with(&canonical_dir) && !is_hub_cache_blob(&canonical_dir, &canonical) {
        return Err(Error::IndexInvalid {
            path,
            message: format!("resolves to {}, outside the model directory", canonical.display()),
        });
    }
    // A FIFO, device or directory is refused without blocking on it.
    let handle = open_regular(&path)?;
    let source = ShardSource::new(path.clone(), handle)?;
    let size = source.size();
    if size < 8 {
        return Err(too_short(&path, size));
    }
    let mut first = [0u8; 8];
    source.read_at(0, &mut first)?;
    // The header as the length field declares it, capped at the header limit and at the file's size.
    let prefix_len = (header_prefix_len(first) as u64).min(size) as usize;
    let mut prefix = vec![0u8; prefix_len];
    source.read_at(0, &mut prefix)?;
    let parsed = parse_safetensors_prefix(&path, &prefix, size)?;
    Ok(ParsedShard {
        file: ShardFile { name: name.to_string(), path, size, metadata: parsed.metadata },
        source,
        tensors: parsed.tensors,
    })
}
