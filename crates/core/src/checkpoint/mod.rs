//! Checkpoint I/O: reading Hugging Face safetensors checkpoints (single file or sharded, memory mapped)
//! and writing sharded ones atomically.

mod dtype;
mod header;
mod reader;
mod view;
mod writer;

pub use dtype::Dtype;
pub use header::{parse_safetensors, ParsedHeader};
pub use reader::{Checkpoint, TensorInfo};
pub use view::{bytes_to_f32, TensorView};
pub use writer::{CheckpointWriter, WriteSummary, WriterOptions};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
