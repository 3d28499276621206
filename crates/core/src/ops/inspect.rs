//! Header-only listing of a checkpoint for the TypeScript side, which detects the architecture and expert
//! layout from it: the config text, the files and every tensor's name, dtype and shape. No tensor data is
//! read.

use std::path::Path;

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, IoContext, Result};
use crate::limits::{read_small_text, MAX_CONFIG_BYTES};

/// One tensor as listed in a header.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct TensorHeader {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// File name relative to the checkpoint directory.
    pub file: String,
    /// Size of the data in bytes.
    pub bytes: u64,
}

/// Everything inspect needs, read from headers only.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct HeaderListing {
    pub dir: String,
    /// config.json, verbatim.
    pub config: String,
    /// safetensors files with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    pub tensors: Vec<TensorHeader>,
    /// Other regular files of the directory, symbolic links followed (export copies those it knows).
    pub other_files: Vec<String>,
}

/// Lists config.json and the tensors of the checkpoint in `dir`.
pub fn inspect_headers(dir: impl AsRef<Path>) -> Result<HeaderListing> {
    let dir = dir.as_ref();
    let config_path = dir.join("config.json");
    if dir.is_dir() && !config_path.exists() {
        return Err(Error::ConfigMissing { dir: dir.to_path_buf() });
    }
    let checkpoint = Checkpoint::open(dir)?;
    let config = read_small_text(&config_path, MAX_CONFIG_BYTES, |message| Error::ConfigInvalid {
        path: config_path.clone(),
        message,
    })?;
    let files = checkpoint.files().iter().map(|f| (f.name.clone(), f.size)).collect::<Vec<_>>();
    let tensors = checkpoint
        .tensors()
        .iter()
        .map(|t| TensorHeader {
            name: t.name.clone(),
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
            file: checkpoint.files()[t.file].name.clone(),
            bytes: (t.end - t.start) as u64,
        })
        .collect();
    let mut other_files = Vec::new();
    for entry in std::fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_weights = files.iter().any(|(f, _)| f == &name) || name == crate::checkpoint::INDEX_FILE;
        // Links are followed: in the Hugging Face cache every file of a snapshot is a link into `blobs/`. A
        // link to nothing, a FIFO or a device is not a file to copy.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|meta| meta.is_file());
        if !is_weights && is_file {
            other_files.push(name);
        }
    }
    other_files.sort();
    Ok(HeaderListing { dir: dir.display().to_string(), config, files, tensors, other_files })
}
