//! Checkpoint I/O: reading Hugging Face safetensors checkpoints (single file or sharded, with positioned
//! reads and a layer of read-ahead; weights stored as MXFP4 or block-scaled FP8 read dequantized) and writing
//! sharded ones atomically.

mod bytes;
mod header;
mod prequant;
mod reader;
mod source;
mod view;
mod writer;

pub use crate::numerics::Dtype;
pub use header::{header_prefix_len, parse_safetensors, parse_safetensors_prefix, ParsedHeader};
pub use prequant::StoredForm;
pub use reader::{Checkpoint, TensorData, TensorInfo};
pub use source::{AheadBytes, SharedBytes};
pub use view::{bytes_to_f32, TensorView};
pub use writer::{CheckpointWriter, OutputOp, TensorLayout, WriteSummary, WriterOptions};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
