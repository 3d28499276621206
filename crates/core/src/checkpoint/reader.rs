//! Opens a Hugging Face checkpoint directory: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`. Files are memory mapped; every file is validated by
//! [`parse_safetensors`](super::header::parse_safetensors) before any tensor is touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;

use super::header::{parse_safetensors, too_short};
use super::{Dtype, TensorView, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};
use crate::limits::{not_a_regular_file, read_small_text, MAX_INDEX_BYTES};

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Byte range inside the file (absolute, header included).
    pub start: usize,
    pub end: usize,
}

/// One memory-mapped safetensors file.
#[derive(Debug)]
pub struct ShardFile {
    /// File name relative to the checkpoint directory.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// `__metadata__` of the header, if any.
    pub metadata: BTreeMap<String, String>,
    mmap: Mmap,
}

/// An opened checkpoint: every tensor of every shard, by name.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<ShardFile>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    /// The `metadata` object of the index file, when sharded.
    index_metadata: Option<serde_json::Value>,
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
        if index_path.is_file() {
            Self::open_sharded(dir, &index_path)
        } else if single_path.is_file() {
            let mut checkpoint = Self::empty(dir.clone());
            let file = open_shard(&dir, SINGLE_FILE)?;
            checkpoint.add_file(file, None)?;
            Ok(checkpoint)
        } else {
            Err(Error::NoWeights { dir })
        }
    }

    fn empty(dir: PathBuf) -> Self {
        Checkpoint { dir, files: Vec::new(), tensors: Vec::new(), by_name: HashMap::new(), index_metadata: None }
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
            checkpoint.add_file(file, Some((index_path, &expected)))?;
        }
        Ok(checkpoint)
    }

    /// Registers a file's tensors; with an index, checks that the tensors it lists are really there.
    fn add_file(&mut self, parsed: ParsedShard, index: Option<(&Path, &[String])>) -> Result<()> {
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

    /// Every tensor, in file order then offset order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
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

    /// Asks the kernel to start reading the bytes of every tensor whose name starts with `prefix` (readahead
    /// of the next layer while the current one computes). Returns at once; failures only cost the readahead.
    pub fn prefetch(&self, prefix: &str) {
        const PAGE: usize = 4096;
        for info in self.tensors.iter().filter(|t| t.name.starts_with(prefix)) {
            let start = info.start - info.start % PAGE;
            #[cfg(unix)]
            let _ = self.files[info.file].mmap.advise_range(memmap2::Advice::WillNeed, start, info.end - start);
        }
    }

    /// The tensor's bytes, borrowed from the memory map (no copy).
    pub fn view(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self.info(name)?;
        let file = &self.files[info.file];
        Ok(TensorView {
            name: &info.name,
            dtype: info.dtype,
            shape: &info.shape,
            data: &file.mmap[info.start..info.end],
        })
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
    // Checked before opening: opening a FIFO would block forever, and a directory cannot be mapped.
    if !std::fs::metadata(&canonical).with_path(&path)?.is_file() {
        return Err(not_a_regular_file(&path));
    }
    let handle = File::open(&path).with_path(&path)?;
    let size = handle.metadata().with_path(&path)?.len();
    if size < 8 {
        return Err(too_short(&path, size));
    }
    // SAFETY: the map is read only. A file changed by another process while mapped is the user's
    // responsibility, as with every memory-mapped checkpoint reader.
    #[allow(unsafe_code)]
    let mmap = unsafe { Mmap::map(&handle) }.with_path(&path)?;
    let parsed = parse_safetensors(&path, &mmap)?;
    Ok(ParsedShard {
        file: ShardFile { name: name.to_string(), path, size, metadata: parsed.metadata, mmap },
        tensors: parsed.tensors,
    })
}
