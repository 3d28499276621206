//! Opens a Hugging Face checkpoint directory: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`. Files are memory mapped; every header is validated by the safetensors
//! crate before any tensor is touched, and its errors are turned into ones that name the file and tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError};
use safetensors::SafeTensors;
use serde::Deserialize;

use super::{Dtype, TensorView, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};

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
        let text = std::fs::read_to_string(index_path).with_path(index_path)?;
        let invalid = |message: String| Error::IndexInvalid { path: index_path.to_path_buf(), message };
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
            if !dir.join(&shard).exists() {
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
            for tensor in expected {
                if !parsed.tensors.iter().any(|t| &t.name == tensor) {
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
    let handle = File::open(&path).with_path(&path)?;
    let size = handle.metadata().with_path(&path)?.len();
    if size < 8 {
        return Err(Error::Truncated {
            path,
            message: format!("{size} bytes is too short for a safetensors file (the header length alone is 8 bytes)"),
        });
    }
    // SAFETY: the map is read only. A file changed by another process while mapped is the user's
    // responsibility, as with every memory-mapped checkpoint reader.
    #[allow(unsafe_code)]
    let mmap = unsafe { Mmap::map(&handle) }.with_path(&path)?;
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| describe(&path, &mmap, e))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for (tensor_name, info) in metadata.tensors() {
        let dtype = Dtype::from_safetensors(info.dtype).ok_or_else(|| Error::UnsupportedDtype {
            path: path.clone(),
            tensor: tensor_name.clone(),
            dtype: format!("{:?}", info.dtype),
            supported: Dtype::SUPPORTED.to_string(),
        })?;
        tensors.push(TensorInfo {
            name: tensor_name,
            dtype,
            shape: info.shape.clone(),
            file: 0,
            start: data_start + info.data_offsets.0,
            end: data_start + info.data_offsets.1,
        });
    }
    tensors.sort_by_key(|t| t.start);
    let header_metadata = metadata.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok(ParsedShard { file: ShardFile { name: name.to_string(), path, size, metadata: header_metadata, mmap }, tensors })
}

/// Turns a safetensors parse error into one that says what is wrong with which file.
fn describe(path: &Path, bytes: &[u8], error: SafeTensorError) -> Error {
    let header_len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
    let header = usize::try_from(header_len).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?));
    let path = path.to_path_buf();
    let invalid = |message: String| Error::HeaderInvalid { path: path.clone(), message };
    match error {
        SafeTensorError::HeaderTooSmall => {
            Error::Truncated { path, message: "shorter than the 8-byte header length".into() }
        }
        SafeTensorError::InvalidHeaderLength => Error::Truncated {
            path,
            message: format!(
                "the header declares {header_len} bytes but the file holds only {} after the length",
                bytes.len() - 8
            ),
        },
        SafeTensorError::HeaderTooLarge => invalid(format!("header length {header_len} exceeds the 100 MB limit")),
        SafeTensorError::InvalidHeader(e) => invalid(format!("header is not UTF-8: {e}")),
        SafeTensorError::InvalidHeaderDeserialization(e) => match header.and_then(unknown_dtype) {
            Some((tensor, dtype)) => {
                Error::UnsupportedDtype { path, tensor, dtype, supported: Dtype::SUPPORTED.to_string() }
            }
            None => invalid(format!("header is not valid safetensors JSON: {e}")),
        },
        SafeTensorError::InvalidOffset(tensor) => {
            invalid(format!("tensor {tensor}: data_offsets overlap, leave a gap or run backwards"))
        }
        SafeTensorError::TensorInvalidInfo => {
            let tensor = header.and_then(mis_sized_tensor).map_or("a tensor".into(), |t| format!("tensor {t}"));
            invalid(format!("{tensor}: data_offsets do not match its dtype and shape"))
        }
        SafeTensorError::ValidationOverflow | SafeTensorError::MisalignedSlice => {
            let tensor = header.and_then(mis_sized_tensor).map_or("a tensor".into(), |t| format!("tensor {t}"));
            invalid(format!("{tensor}: shape is too large or not byte aligned"))
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let needed = header.and_then(|h| serde_json::from_slice::<Metadata>(h).ok()).map(|m| m.data_len());
            match needed {
                Some(needed) if 8 + header.map_or(0, <[u8]>::len) + needed > bytes.len() => Error::Truncated {
                    path,
                    message: format!(
                        "the header's offsets need {needed} bytes of tensor data but the file holds only {}",
                        bytes.len() - 8 - header.map_or(0, <[u8]>::len)
                    ),
                },
                _ => invalid("the file holds bytes past the last tensor".into()),
            }
        }
        other => invalid(other.to_string()),
    }
}

/// Finds a tensor whose dtype safetensors does not know, to report it by name.
fn unknown_dtype(header: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let known: [&str; 22] = [
        "BOOL",
        "F4",
        "F6_E2M3",
        "F6_E3M2",
        "U8",
        "I8",
        "F8_E5M2",
        "F8_E4M3",
        "F8_E8M0",
        "F8_E4M3FNUZ",
        "F8_E5M2FNUZ",
        "I16",
        "U16",
        "F16",
        "BF16",
        "I32",
        "U32",
        "F32",
        "C64",
        "F64",
        "I64",
        "U64",
    ];
    value.as_object()?.iter().filter(|(name, _)| *name != "__metadata__").find_map(|(name, entry)| {
        let dtype = entry.get("dtype")?.as_str()?;
        (!known.contains(&dtype)).then(|| (name.clone(), dtype.to_string()))
    })
}

/// Finds a tensor whose data_offsets disagree with dtype × shape (or whose size overflows), to report it by
/// name: safetensors' error does not say which. Sizes use checked arithmetic; nothing the header claims is allocated.
fn mis_sized_tensor(header: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    value.as_object()?.iter().filter(|(name, _)| *name != "__metadata__").find_map(|(name, entry)| {
        let info = safetensors::tensor::TensorInfo::deserialize(entry).ok()?;
        let bits = info.shape.iter().try_fold(info.dtype.bitsize(), |bits, &dim| bits.checked_mul(dim));
        let (start, end) = info.data_offsets;
        let consistent = bits.is_some_and(|bits| bits % 8 == 0 && end.checked_sub(start) == Some(bits / 8));
        (!consistent).then(|| name.clone())
    })
}
