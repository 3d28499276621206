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

    /// `context` says what the value was needed for (`, which cannot be quantized` …).
    #[error("tensor {tensor}: element {index} is NaN or infinite{context}")]
    NonFinite { tensor: String, index: usize, context: String },

    /// The calibration forward produced a NaN or an infinity: `location` is the decoder layer (or the
    /// embedding), `tensor` the first activation found not finite, `detail` how it was found.
    #[error("out of memory: {bytes} bytes for {what} could not be allocated (the machine's memory, or the process's address-space limit, is exhausted)")]
    OutOfMemory { what: String, bytes: u64 },

    #[error("calibration stopped at {location}: {tensor} is NaN or infinite ({detail}); check this layer's weights and config.json (rope_theta, rms_norm_eps, the scaling factors)")]
    ActivationNonFinite { location: String, tensor: String, detail: String },

    #[error("internal error: {0}")]
    Internal(String),

    #[error("{dir}: no tokenizer.json in the model directory (needed to tokenize calibration text; pass pre-tokenized ids instead)")]
    TokenizerMissing { dir: PathBuf },

    #[error("{path}: {message}")]
    TokenizerInvalid { path: PathBuf, message: String },

    /// `input` is a file or "calibration documents", `place` a line or a document.
    #[error("{input}, {place}: {message}")]
    CalibrationInvalid { input: String, place: String, message: String },

    #[error("{input}: yielded {tokens} tokens, fewer than the {needed} needed for one sequence")]
    CalibrationEmpty { input: String, tokens: usize, needed: usize },

    #[error("{input}: sample {sample}, position {position}: token id {id} is outside the vocabulary (vocab_size {vocab_size})")]
    CalibrationIdRange { input: String, sample: usize, position: usize, id: u32, vocab_size: usize },

    #[error("calibration options: {message}")]
    CalibrationOptions { message: String },

    #[error("device unavailable: {message}")]
    DeviceUnavailable { message: String },

    #[error("{path}: the input file changed during the run ({message}); the output was not written")]
    InputChanged { path: PathBuf, message: String },

    #[error("{path}: cannot write the output ({reason}): {source}")]
    OutputWrite { path: PathBuf, reason: &'static str, source: std::io::Error },
}

impl From<candle_core::Error> for Error {
    fn from(error: candle_core::Error) -> Self {
        // candle appends a backtrace when RUST_BACKTRACE is set; the first line says what failed.
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default();
        Error::Internal(format!("tensor computation failed: {first}"))
    }
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
        "E_TOKENIZER_MISSING",
        "E_TOKENIZER_INVALID",
        "E_CALIBRATION_INVALID",
        "E_CALIBRATION_EMPTY",
        "E_CALIBRATION_ID_RANGE",
        "E_CALIBRATION_OPTIONS",
        "E_TENSOR_NON_FINITE",
        "E_DEVICE_UNAVAILABLE",
        "E_INPUT_CHANGED",
        "E_OUTPUT_WRITE",
        "E_ACTIVATION_NON_FINITE",
        "E_OUT_OF_MEMORY",
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
            Error::NonFinite { .. } => "E_TENSOR_NON_FINITE",
            Error::TokenizerMissing { .. } => "E_TOKENIZER_MISSING",
            Error::TokenizerInvalid { .. } => "E_TOKENIZER_INVALID",
            Error::CalibrationInvalid { .. } => "E_CALIBRATION_INVALID",
            Error::CalibrationEmpty { .. } => "E_CALIBRATION_EMPTY",
            Error::CalibrationIdRange { .. } => "E_CALIBRATION_ID_RANGE",
            Error::CalibrationOptions { .. } => "E_CALIBRATION_OPTIONS",
            Error::DeviceUnavailable { .. } => "E_DEVICE_UNAVAILABLE",
            Error::InputChanged { .. } => "E_INPUT_CHANGED",
            Error::OutputWrite { .. } => "E_OUTPUT_WRITE",
            Error::ActivationNonFinite { .. } => "E_ACTIVATION_NON_FINITE",
            Error::OutOfMemory { .. } => "E_OUT_OF_MEMORY",
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
