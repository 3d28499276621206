//! The output being written: the checkpoint writer with its declared tensors, the bytes handed to it so far
//! (for progress), and the files beside the tensors.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::plan::{ExportPlan, KeptTensor};
use super::quantizer::QuantizedLinear;
use super::{compressed, Encoding};
use crate::checkpoint::{Checkpoint, CheckpointWriter, Dtype};
use crate::error::{Error, Result};

/// The most bytes of a kept tensor read and written at once: [`Output::copy_kept`].
pub const COPY_PART: usize = 64 << 20;

/// The output being written.
pub struct Output<'a> {
    pub writer: CheckpointWriter,
    /// Bytes handed to the writer so far: read by progress events without taking the output's lock, which
    /// the writing thread holds while a finished shard goes to disk.
    pub bytes_written: &'a AtomicU64,
    pub quantized_tensors: usize,
    pub encoding: Encoding,
}

impl<'a> Output<'a> {
    pub fn new(writer: CheckpointWriter, bytes_written: &'a AtomicU64, encoding: Encoding) -> Self {
        Output { writer, bytes_written, quantized_tensors: 0, encoding }
    }

    /// The plan's metadata files, the input's files it copies, and `extra` (checked against the plan's names).
    pub fn add_files(&mut self, dir: &Path, plan: &ExportPlan, extra: Vec<(String, Vec<u8>)>) -> Result<()> {
        for (name, text) in &plan.files {
            self.writer.write_file(name, text.as_bytes())?;
        }
        for name in &plan.copy {
            self.writer.copy_file(&dir.join(name), name)?;
        }
        for (name, bytes) in extra {
            check_extra_name(&name, plan)?;
            self.writer.write_file(&name, &bytes)?;
        }
        Ok(())
    }

    fn add(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Result<()> {
        self.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.writer.write(name, dtype, shape, data)
    }

    /// The tensors the plan keeps as they are (embeddings, norms, lm_head), copied from the checkpoint (joined
    /// where the plan joins them) a part of at most [`COPY_PART`] bytes at a time, so that a vocabulary-sized
    /// tensor is never whole in memory for the copy. Of `shared`, tensors the read-ahead holds and shares with
    /// another reader, each is let go once the tensor that reads it is copied; those are copied first.
    pub fn copy_kept(&mut self, checkpoint: &Checkpoint, plan: &ExportPlan, shared: &[&str]) -> Result<()> {
        // Each kept tensor with the shared names it reads; those reading some first (the sort is stable).
        let mut copies: Vec<(&KeptTensor, Vec<&str>)> = plan
            .keep
            .iter()
            .map(|kept| (kept, shared.iter().copied().filter(|&name| kept.reads(name)).collect()))
            .collect();
        copies.sort_by_key(|(_, done)| done.is_empty());
        for (kept, done) in copies {
            let (dtype, shape) = kept.layout(checkpoint)?;
            let bytes_written = self.bytes_written;
            self.writer.write_parts(&kept.output, dtype, &shape, |put| {
                kept.read_in_parts(checkpoint, COPY_PART, &mut |part| {
                    bytes_written.fetch_add(part.len() as u64, Ordering::Relaxed);
                    put(part)
                })
            })?;
            if !done.is_empty() {
                checkpoint.release_read_ahead(&done);
            }
        }
        Ok(())
    }

    /// Queues a KV cache scale: a 0-d f32 tensor, or in compressed-tensors' form BF16 `[1]`.
    pub fn queue_scalar(&mut self, name: &str, value: f32) -> Result<()> {
        let (dtype, shape) = compressed::scalar_layout(self.encoding);
        let data = match dtype {
            Dtype::BF16 => half::bf16::from_f32(value).to_le_bytes().to_vec(),
            _ => value.to_le_bytes().to_vec(),
        };
        self.add(name, dtype, &shape, &data)
    }

    /// Queues one quantized linear's tensors and its `input_scale`, if it has one (in compressed-tensors' form
    /// where the output is written so).
    pub fn queue(&mut self, quantized: QuantizedLinear) -> Result<()> {
        let mut tensors = quantized.weight.tensors;
        tensors.extend(quantized.input_scale);
        let counted = quantized.quantized;
        for tensor in tensors {
            let tensor = match self.encoding {
                Encoding::ModelOpt => tensor,
                Encoding::CompressedTensors => compressed::encode(quantized.format, &quantized.output, tensor)?,
            };
            self.add(
                &quantized.naming.tensor(&quantized.output, tensor.suffix),
                tensor.dtype,
                &tensor.shape,
                &tensor.data,
            )?;
        }
        if counted {
            self.quantized_tensors += 1;
        }
        Ok(())
    }
}

/// Checks the name of an extra file: a plain file name the checkpoint does not use.
fn check_extra_name(name: &str, plan: &ExportPlan) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let taken = plan.files.contains_key(name)
        || plan.copy.iter().any(|f| f == name)
        || name.ends_with(".safetensors")
        || name == crate::checkpoint::INDEX_FILE;
    if !plain || taken {
        return Err(Error::internal(format!("{name:?} cannot be added to the output (not a plain name, or taken)")));
    }
    Ok(())
}
