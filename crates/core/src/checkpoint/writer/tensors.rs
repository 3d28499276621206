//! Writing a declared tensor's bytes at their place in its shard: given whole, or in parts.

use std::fs::File;

use super::fs::{check, output_error, start_writeback, write_all_at};
use super::{CheckpointWriter, OutputOp};
use crate::checkpoint::Dtype;
use crate::error::{Error, Result};

impl CheckpointWriter {
    /// Writes one declared tensor (row-major little-endian bytes) at its place in its shard, and starts writing
    /// the shard back to disk every [`WRITEBACK_EVERY`](super::layout::WRITEBACK_EVERY) bytes and once its last
    /// tensor is in. Data that does not fill the shape, or a tensor written a second time, is refused and the
    /// writer stays usable; any other failure discards it.
    pub fn write(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Result<()> {
        let len = self.unwritten_len(name, dtype, shape)?;
        if data.len() != len {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!("{dtype} data of {} bytes does not fill the shape ({len} bytes)", data.len()),
            });
        }
        let written = self.write_declared(name, dtype, shape, len, |put| put(data));
        self.staging.discard_on_error(written)
    }

    /// Writes one declared tensor handed over in parts: `parts` gives `put` its bytes in order, a part at a time,
    /// so that a tensor never has to be whole in memory (a copied embedding). Checked and written back as
    /// [`write`](Self::write) does; once its place is taken, any failure (a part past the shape's end, parts that
    /// fall short of it, or an error of `parts` itself) discards the writer.
    pub fn write_parts(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        parts: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let len = self.unwritten_len(name, dtype, shape)?;
        let written = self.write_declared(name, dtype, shape, len, parts);
        self.staging.discard_on_error(written)
    }

    /// The byte length of a tensor of `dtype` and `shape` not written yet; the writer stays usable when refused.
    fn unwritten_len(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<usize> {
        self.staging.ensure_open()?;
        let Some(len) = dtype.byte_len(shape) else {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!("{dtype} data of this shape would take more than usize::MAX bytes"),
            });
        };
        if self.layout.as_ref().is_some_and(|layout| layout.is_written(name)) {
            return Err(Error::internal(format!("tensor {name} was written twice")));
        }
        Ok(len)
    }

    /// Takes the tensor's place and writes the `len` bytes that `parts` gives, starting the shard's write-back where
    /// [`Layout::wrote`](super::layout::Layout::wrote) says, part by part.
    fn write_declared(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        len: usize,
        parts: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let Some(layout) = self.layout.as_mut() else {
            return Err(Error::internal(format!("tensor {name} was not declared before the output was written")));
        };
        let slot = layout.claim(name, dtype, shape)?;
        let (path, offset, shard) = (slot.path.to_path_buf(), slot.offset, slot.shard);
        let file = check(&mut self.fault, OutputOp::Write, &path)
            .and_then(|()| File::options().write(true).open(&path))
            .map_err(|e| output_error(&path, e))?;
        let mut written = 0usize;
        parts(&mut |part: &[u8]| {
            if part.is_empty() {
                return Ok(());
            }
            if part.len() > len - written {
                return Err(parts_mismatch(name, dtype, shape, written + part.len(), len));
            }
            write_all_at(&file, part, offset + written as u64).map_err(|e| output_error(&path, e))?;
            written += part.len();
            if layout.wrote(shard, part.len() as u64, written == len) {
                start_writeback(&file);
            }
            Ok(())
        })?;
        if written != len {
            return Err(parts_mismatch(name, dtype, shape, written, len));
        }
        // An empty tensor has no part that completes it.
        if len == 0 && layout.wrote(shard, 0, true) {
            start_writeback(&file);
        }
        Ok(())
    }
}

/// The error for parts of `given` bytes where the tensor takes `len`.
fn parts_mismatch(name: &str, dtype: Dtype, shape: &[usize], given: usize, len: usize) -> Error {
    Error::ShapeInvalid {
        tensor: name.to_string(),
        shape: shape.to_vec(),
        message: format!("{dtype} data given in parts of {given} bytes does not fill the shape ({len} bytes)"),
    }
}
