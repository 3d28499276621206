//! moe-quant core: checkpoint I/O, expert layouts, calibration forward, quantization formats and export.
//!
//! The TypeScript side decides *what* to do (architecture, layout, which tensors); this crate does the
//! work on the descriptor it is given. The crate root only lists modules and re-exports entry points.

pub mod awq;
pub mod calib;
pub mod checkpoint;
pub mod contract;
pub mod cuda;
pub mod device;
pub mod error;
pub mod export;
pub mod formats;
pub mod limits;
pub mod memory;
pub mod model;
pub mod numerics;
pub mod ops;
pub mod threads;

pub use checkpoint::{
    Checkpoint, CheckpointWriter, Dtype, StoredForm, TensorData, TensorInfo, TensorView, WriterOptions,
};
pub use error::{Error, ErrorPayload, Result};
pub use ops::inspect::{inspect_headers, HeaderListing};
