//! The crate's one error type, declared once in the [`errors!`] table below: each variant's stable code
//! (`E_…`, `err.code` in TypeScript), its message (naming the file, tensor and shapes involved) and its fields,
//! which cross to TypeScript as `err.details` through [`ErrorPayload`].

use std::path::{Path, PathBuf};

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Declares [`Error`], [`ErrorCode`] (the codes as a serde/ts-rs enum), `Error::CODES`, `Error::code()` and
/// `Error::details()` from one list of `Variant { fields } = "E_CODE", "message";`.
macro_rules! errors {
    ($( $(#[doc = $doc:tt])* $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })? = $code:tt, $message:tt; )*) => {
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum Error {
            $( $(#[doc = $doc])* #[error($message)] $variant $({ $($field: $ty),* })?, )*
        }

        /// Every code a native error can carry (TypeScript's `NativeErrorCode`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
        pub enum ErrorCode {
            $( #[serde(rename = $code)] $variant, )*
        }

        impl Error {
            /// Every code a variant can carry, in declaration order.
            pub const CODES: &'static [&'static str] = &[$($code),*];

            /// The stable code of this error.
            pub fn code(&self) -> &'static str {
                match self { $( Error::$variant { .. } => $code, )* }
            }

            /// The code as the contract's enum.
            pub fn error_code(&self) -> ErrorCode {
                match self { $( Error::$variant { .. } => ErrorCode::$variant, )* }
            }

            /// The variant's fields as JSON values, keyed by [`detail_key`] of the field name.
            pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
                #[allow(unused_mut)]
                let mut details = serde_json::Map::new();
                match self {
                    $( Error::$variant $({ $($field),* })? => {
                        $($( details.insert(detail_key(stringify!($field)), Detail::value($field)); )*)?
                    } )*
                }
                details
            }
        }
    };
}

errors! {
    ConfigMissing { dir: PathBuf } = "E_CONFIG_MISSING", "{dir}: no config.json in the model directory";
    ConfigInvalid { path: PathBuf, message: String } = "E_CONFIG_INVALID", "{path}: {message}";
    NoWeights { dir: PathBuf } = "E_CHECKPOINT_NO_WEIGHTS",
        "{dir}: no weights found (expected model.safetensors or model.safetensors.index.json)";
    IndexInvalid { path: PathBuf, message: String } = "E_CHECKPOINT_INDEX_INVALID", "{path}: {message}";
    ShardMissing { index: PathBuf, shard: String, tensor: String } = "E_CHECKPOINT_SHARD_MISSING",
        "{index}: shard {shard} (holding tensor {tensor}) does not exist";
    Truncated { path: PathBuf, message: String } = "E_CHECKPOINT_TRUNCATED", "{path}: {message}";
    HeaderInvalid { path: PathBuf, message: String } = "E_CHECKPOINT_HEADER_INVALID",
        "{path}: invalid safetensors header: {message}";
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String, supported: String } = "E_CHECKPOINT_DTYPE_UNSUPPORTED",
        "{path}: tensor {tensor} has dtype {dtype}, which moe-quant does not read (supported: {supported})";
    TensorNotFound { tensor: String } = "E_TENSOR_NOT_FOUND", "tensor {tensor} not found in the checkpoint";
    TensorDuplicate { tensor: String, first: PathBuf, second: PathBuf } = "E_TENSOR_DUPLICATE",
        "tensor {tensor} appears twice: in {first} and in {second}";
    ShapeInvalid { tensor: String, shape: Vec<usize>, message: String } = "E_TENSOR_SHAPE",
        "tensor {tensor} with shape {shape:?}: {message}";
    OutputInvalid { path: PathBuf, message: String } = "E_OUTPUT_INVALID", "{path}: {message}";
    Io { path: PathBuf, source: std::io::Error } = "E_IO", "{path}: {source}";
    Cancelled = "E_CANCELLED", "the operation was cancelled";
    /// A broken invariant of moe-quant itself (or a panic caught at the binding).
    Internal { message: String } = "E_INTERNAL", "internal error: {message}";
    TokenizerMissing { dir: PathBuf } = "E_TOKENIZER_MISSING",
        "{dir}: no tokenizer.json in the model directory (needed to tokenize calibration text; pass pre-tokenized ids instead)";
    TokenizerInvalid { path: PathBuf, message: String } = "E_TOKENIZER_INVALID", "{path}: {message}";
    /// `input` is a file or "calibration documents", `place` a line or a document.
    CalibrationInvalid { input: String, place: String, message: String } = "E_CALIBRATION_INVALID",
        "{input}, {place}: {message}";
    CalibrationEmpty { input: String, tokens: usize, needed: usize } = "E_CALIBRATION_EMPTY",
        "{input}: yielded {tokens} tokens, fewer than the {needed} needed for one sequence";
    CalibrationIdRange { input: String, sample: usize, position: usize, id: u32, vocab_size: usize } = "E_CALIBRATION_ID_RANGE",
        "{input}: sample {sample}, position {position}: token id {id} is outside the vocabulary (vocab_size {vocab_size})";
    CalibrationOptions { message: String } = "E_CALIBRATION_OPTIONS", "calibration options: {message}";
    /// `context` says what the value was needed for (`, which cannot be quantized` …).
    NonFinite { tensor: String, index: usize, context: String } = "E_TENSOR_NON_FINITE",
        "tensor {tensor}: element {index} is NaN or infinite{context}";
    DeviceUnavailable { message: String } = "E_DEVICE_UNAVAILABLE", "device unavailable: {message}";
    InputChanged { path: PathBuf, message: String } = "E_INPUT_CHANGED",
        "{path}: the input file changed during the run ({message}); the output was not written";
    OutputWrite { path: PathBuf, reason: &'static str, source: std::io::Error } = "E_OUTPUT_WRITE",
        "{path}: cannot write the output ({reason}): {source}";
    /// The calibration forward produced a NaN or an infinity: `location` is the decoder layer (or the
    /// embedding), `tensor` the first activation found not finite, `detail` how it was found.
    ActivationNonFinite { location: String, tensor: String, detail: String } = "E_ACTIVATION_NON_FINITE",
        "calibration stopped at {location}: {tensor} is NaN or infinite ({detail}); check this layer's weights and config.json (rope_theta, rms_norm_eps, the scaling factors)";
    OutOfMemory { what: String, bytes: u64 } = "E_OUT_OF_MEMORY",
        "out of memory: {bytes} bytes for {what} could not be allocated (the machine's memory, or the process's address-space limit, is exhausted)";
}

/// An error as it crosses to TypeScript: `MoeQuantError { code, message, details }`.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct ErrorPayload {
    pub code: ErrorCode,
    pub message: String,
    /// The variant's fields (`file` for a path, `tensor`, `shape`, …), for programs that react to errors.
    #[ts(type = "Record<string, unknown>")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<&Error> for ErrorPayload {
    fn from(error: &Error) -> Self {
        ErrorPayload { code: error.error_code(), message: error.to_string(), details: error.details() }
    }
}

/// The details key of a field: `path` is the file involved (`file`, as TypeScript's errors name it), the
/// rest in camelCase (`vocab_size` → `vocabSize`).
fn detail_key(field: &str) -> String {
    if field == "path" {
        return "file".into();
    }
    let mut key = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            key.extend(c.to_uppercase());
            upper = false;
        } else {
            key.push(c);
        }
    }
    key
}

/// A field value as JSON.
trait Detail {
    fn value(&self) -> serde_json::Value;
}

impl Detail for PathBuf {
    fn value(&self) -> serde_json::Value {
        self.display().to_string().into()
    }
}

impl Detail for String {
    fn value(&self) -> serde_json::Value {
        self.as_str().into()
    }
}

impl Detail for &'static str {
    fn value(&self) -> serde_json::Value {
        (*self).into()
    }
}

impl Detail for std::io::Error {
    fn value(&self) -> serde_json::Value {
        self.to_string().into()
    }
}

impl Detail for Vec<usize> {
    fn value(&self) -> serde_json::Value {
        self.iter().map(|&d| serde_json::Value::from(d)).collect()
    }
}

macro_rules! number_details {
    ($($ty:ty),*) => { $( impl Detail for $ty { fn value(&self) -> serde_json::Value { (*self).into() } } )* };
}
number_details!(usize, u32, u64);

impl Error {
    /// A broken invariant: `Error::Internal` with this message.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal { message: message.into() }
    }
}

impl From<candle_core::Error> for Error {
    fn from(error: candle_core::Error) -> Self {
        // candle appends a backtrace when RUST_BACKTRACE is set; the first line says what failed.
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default();
        Error::internal(format!("tensor computation failed: {first}"))
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

    #[test]
    fn the_payload_carries_code_message_and_fields() {
        let error = Error::ShapeInvalid { tensor: "w".into(), shape: vec![3, 40], message: "odd".into() };
        let payload = serde_json::to_value(ErrorPayload::from(&error)).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "code": "E_TENSOR_SHAPE",
                "message": "tensor w with shape [3, 40]: odd",
                "details": { "tensor": "w", "shape": [3, 40], "message": "odd" },
            })
        );
        let range = Error::CalibrationIdRange { input: "ids".into(), sample: 1, position: 2, id: 9, vocab_size: 8 };
        let details = range.details();
        assert_eq!(details["vocabSize"], 8);
        assert_eq!(details["id"], 9);
        let io = Error::Io { path: "/x/config.json".into(), source: std::io::Error::other("gone") };
        assert_eq!(io.details()["file"], "/x/config.json");
        assert_eq!(io.details()["source"], "gone");
        assert!(Error::Cancelled.details().is_empty());
        // Every code serializes to the string `code()` returns.
        for error in [error, range, io, Error::Cancelled, Error::internal("x")] {
            assert_eq!(serde_json::to_value(error.error_code()).unwrap(), error.code());
        }
    }
}
