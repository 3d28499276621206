//! Header-only listing of a checkpoint for the TypeScript side, which detects the architecture and expert
//! layout from it: the config text, the files and every tensor's name, dtype and shape, as the tensors are read
//! (weights stored as MXFP4 or block-scaled FP8 listed dequantized, with a summary of what was). No tensor data
//! is read.

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

/// Tensors stored pre-quantized in one form and listed dequantized.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct DequantizedTensors {
    /// The stored form: `"MXFP4"`, `"FP8 E4M3 with 128x128 block scales (weight_scale_inv)"`.
    pub form: String,
    /// The dtype they are read in (`"BF16"` …).
    pub dtype: String,
    /// How many tensors.
    pub count: usize,
    /// The first of them, as listed.
    pub example: String,
}

/// Everything inspect needs, read from headers only.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct HeaderListing {
    pub dir: String,
    /// config.json, verbatim.
    pub config: String,
    /// safetensors files with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    /// The tensors as read (pre-quantized weights dequantized).
    pub tensors: Vec<TensorHeader>,
    /// Which tensors are stored pre-quantized and read dequantized, by form (empty for most checkpoints).
    pub dequantized: Vec<DequantizedTensors>,
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
            bytes: t.bytes() as u64,
        })
        .collect();
    let mut dequantized: Vec<DequantizedTensors> = Vec::new();
    for t in checkpoint.tensors() {
        let Some(form) = t.form.describe() else { continue };
        let dtype = t.dtype.name().to_string();
        match dequantized.iter_mut().find(|d| d.form == form && d.dtype == dtype) {
            Some(group) => group.count += 1,
            None => dequantized.push(DequantizedTensors { form, dtype, count: 1, example: t.name.clone() }),
        }
    }
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
    Ok(HeaderListing { dir: dir.display().to_string(), config, files, tensors, dequantized, other_files })
}
