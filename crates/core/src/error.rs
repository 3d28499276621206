//! The crate's one error type. Every variant carries a stable code (`E_…`) that reaches TypeScript as
//! `err.code`, and a message naming the file, tensor and shapes involved.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{dir}: no config.json in the model directory")]
    ConfigMissing { dir: PathBuf },

    #[error("{path}: {message}")]
    ConfigInvalid { path: PathBuf, message: String },

    #[error("{dir}: no weights found (expected model.safetensors or model.safetensors.index.json)")]
    NoWeights { dir: PathBuf },

    #[error("{path}: {message}")]
    IndexInvalid { path: PathBuf, message: String },

    #[error("{index}: shard {shard} (holding tensor {tensor}) does not exist")]
    ShardMissing { index: PathBuf, shard: String, tensor: String },

    #[error("{path}: {message}")]
    Truncated { path: PathBuf, message: String },

    #[error("{path}: invalid safetensors header: {message}")]
    HeaderInvalid { path: PathBuf, message: String },

    #[error("{path}: tensor {tensor} has dtype {dtype}, which moe-quant does not read (supported: {supported})")]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String, supported: String },

    #[error("tensor {tensor} not found in the checkpoint")]
    TensorNotFound { tensor: String },

    #[error("tensor {tensor} appears twice: in {first} and in {second}")]
    TensorDuplicate { tensor: String, first: PathBuf, second: PathBuf },

    #[error("tensor {tensor} with shape {shape:?}: {message}")]
    ShapeInvalid { tensor: String, shape: Vec<usize>, message: String },

    #[error("{path}: {message}")]
    OutputInvalid { path: PathBuf, message: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("the operation was cancelled")]
    Cancelled,

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Every code a variant can carry, in a stable order; TypeScript keeps the same list (tested).
    pub const CODES: &'static [&'static str] = &[
        "E_CONFIG_MISSING",
        "E_CONFIG_INVALID",
        "E_CHECKPOINT_NO_WEIGHTS",
        "E_CHECKPOINT_INDEX_INVALID",
        "E_CHECKPOINT_SHARD_MISSING",
        "E_CHECKPOINT_TRUNCATED",
        "E_CHECKPOINT_HEADER_INVALID",
        "E_CHECKPOINT_DTYPE_UNSUPPORTED",
        "E_TENSOR_NOT_FOUND",
        "E_TENSOR_DUPLICATE",
        "E_TENSOR_SHAPE",
        "E_OUTPUT_INVALID",
        "E_IO",
        "E_CANCELLED",
        "E_INTERNAL",
    ];

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ConfigMissing { .. } => "E_CONFIG_MISSING",
            Error::ConfigInvalid { .. } => "E_CONFIG_INVALID",
            Error::NoWeights { .. } => "E_CHECKPOINT_NO_WEIGHTS",
            Error::IndexInvalid { .. } => "E_CHECKPOINT_INDEX_INVALID",
            Error::ShardMissing { .. } => "E_CHECKPOINT_SHARD_MISSING",
            Error::Truncated { .. } => "E_CHECKPOINT_TRUNCATED",
            Error::HeaderInvalid { .. } => "E_CHECKPOINT_HEADER_INVALID",
            Error::UnsupportedDtype { .. } => "E_CHECKPOINT_DTYPE_UNSUPPORTED",
            Error::TensorNotFound { .. } => "E_TENSOR_NOT_FOUND",
            Error::TensorDuplicate { .. } => "E_TENSOR_DUPLICATE",
            Error::ShapeInvalid { .. } => "E_TENSOR_SHAPE",
            Error::OutputInvalid { .. } => "E_OUTPUT_INVALID",
            Error::Io { .. } => "E_IO",
            Error::Cancelled => "E_CANCELLED",
            Error::Internal(_) => "E_INTERNAL",
        }
    }
}

/// Attaches the path an I/O operation touched.
pub trait IoContext<T> {
    fn with_path(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_listed() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Error::CODES {
            assert!(seen.insert(*code), "duplicate code {code}");
            assert!(code.starts_with("E_"));
        }
        let sample = Error::Truncated { path: "a".into(), message: "b".into() };
        assert!(Error::CODES.contains(&sample.code()));
        assert!(Error::CODES.contains(&Error::Cancelled.code()));
    }
}
