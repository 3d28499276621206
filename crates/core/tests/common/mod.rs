//! Helpers shared by the checkpoint integration tests: temp directories, hand-assembled safetensors files
//! (for malformed input), valid ones through the safetensors crate, index files, tensors declared and
//! written through the checkpoint writer, and error assertions.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod forward;
pub mod quantize;

use std::collections::BTreeMap;
use std::path::Path;

use moe_quant_core::checkpoint::TensorLayout;
use moe_quant_core::{CheckpointWriter, Dtype, Error};

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Every file of `dir` with its bytes, by name.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().into_string().unwrap(), std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// The bytes of a safetensors file: 8-byte little-endian header length, the header, then `data`.
/// The header is written verbatim, so it may be anything (invalid JSON, wrong offsets …).
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Writes a hand-assembled safetensors file (see [`raw_safetensors`]).
pub fn write_raw(path: &Path, header: &str, data: &[u8]) {
    std::fs::write(path, raw_safetensors(header, data)).unwrap();
}

/// One tensor to write: name, dtype, shape and row-major little-endian bytes.
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Self {
        assert_eq!(data.len(), shape.iter().product::<usize>() * dtype.size(), "test tensor {name}");
        Tensor { name: name.to_string(), dtype, shape: shape.to_vec(), data }
    }

    /// A tensor filled with a byte pattern that differs per `seed`.
    pub fn patterned(name: &str, dtype: Dtype, shape: &[usize], seed: u8) -> Self {
        let len = shape.iter().product::<usize>() * dtype.size();
        Self::new(name, dtype, shape, pattern(len, seed))
    }

    /// The tensor as a writer's declaration lists it.
    pub fn layout(&self) -> TensorLayout {
        TensorLayout { name: self.name.clone(), dtype: self.dtype, shape: self.shape.clone() }
    }

    /// Writes the tensor's bytes to `writer`, which must have declared it.
    pub fn write_to(&self, writer: &mut CheckpointWriter) -> moe_quant_core::Result<()> {
        writer.write(&self.name, self.dtype, &self.shape, &self.data)
    }
}

/// Declares `tensors` to `writer` in their order, then writes them last first (the order of the writes is
/// free).
pub fn declare_and_write(writer: &mut CheckpointWriter, tensors: &[Tensor]) {
    writer.declare(&tensors.iter().map(Tensor::layout).collect::<Vec<_>>()).unwrap();
    for tensor in tensors.iter().rev() {
        tensor.write_to(writer).unwrap();
    }
}

/// `len` bytes that differ per position and per `seed` (never all zero).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 8) as u8)).collect()
}

/// Writes a valid safetensors file with the safetensors crate itself.
pub fn write_valid(path: &Path, tensors: &[Tensor]) {
    let views = tensors.iter().map(|t| {
        let view = safetensors::tensor::TensorView::new(t.dtype.to_safetensors(), t.shape.clone(), &t.data).unwrap();
        (t.name.as_str(), view)
    });
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes `model.safetensors.index.json` with the given tensor → file map.
pub fn write_index(dir: &Path, weight_map: &[(&str, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> =
        weight_map.iter().map(|(t, f)| (t.to_string(), serde_json::Value::from(*f))).collect();
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

/// Asserts the error's stable code and that its message mentions every needle (file names, tensor names).
pub fn assert_error(error: &Error, code: &str, needles: &[&str]) {
    let message = error.to_string();
    assert_eq!(error.code(), code, "wrong code for error: {message}");
    for needle in needles {
        assert!(message.contains(needle), "message {message:?} does not mention {needle:?}");
    }
}

/// Unwraps the error of a result whose success type need not be `Debug`.
pub fn expect_err<T>(result: moe_quant_core::Result<T>) -> Error {
    match result {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e,
    }
}

/// `count` deterministic values uniform in [−0.5, 0.5) (an xorshift generator started from `seed`).
pub fn unit_noise(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
