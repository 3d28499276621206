//! Reading part of a tensor: one slice along its first axis (an expert of a fused `[E, …]` tensor), or the whole
//! tensor a part at a time (a kept tensor copied to the output).

use super::{Checkpoint, TensorData, TensorInfo};
use crate::checkpoint::prequant::{self, StoredForm};
use crate::checkpoint::source::SharedBytes;
use crate::checkpoint::TensorView;
use crate::error::Result;

impl Checkpoint {
    /// The tensor's bytes (dequantized when stored pre-quantized) handed to `part` in order, at most `part_bytes`
    /// at a time: from the read-ahead when it fetched them, else read from disk a part at a time, so that a
    /// large tensor (an embedding being copied) is never whole in memory. A pre-quantized tensor is decoded whole.
    ///
    /// Errors: those of [`read`](Self::read), and whatever `part` returns (which ends the read).
    pub fn read_in_parts(
        &self,
        name: &str,
        part_bytes: usize,
        part: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let info = self.info(name)?;
        let part_bytes = part_bytes.max(1);
        let whole = match info.form {
            StoredForm::Plain => self.ahead.take(&info.name),
            _ => Some(self.read(name)?.data),
        };
        if let Some(bytes) = whole {
            return bytes.chunks(part_bytes).try_for_each(part);
        }
        let (source, end) = (&self.sources[info.file], info.end as u64);
        let mut at = info.start as u64;
        while at < end {
            let next = end.min(at + part_bytes as u64);
            part(&source.read_range(at..next)?)?;
            at = next;
        }
        Ok(())
    }

    /// Slice `index` along the first dimension of a tensor (one expert of a fused `[E, …]` tensor), reading
    /// only its bytes, or sharing them when the whole tensor was read ahead (which then stays until the next
    /// read-ahead, for the other slices). Of an MXFP4 tensor only that expert's codes are read and decoded.
    pub fn read_slice_first(&self, name: &str, index: usize) -> Result<TensorData> {
        let info = self.info(name)?;
        let bounds = TensorView { name: &info.name, dtype: info.dtype, shape: &info.shape, data: &[] };
        let count = info.shape.first().copied().unwrap_or(0);
        if info.shape.is_empty() || index >= count {
            // The view reports the error with the tensor's name and shape.
            bounds.slice_first(index)?;
        }
        let shape = info.shape[1..].to_vec();
        let data = match &info.form {
            StoredForm::Plain => self.stored_slice(info, index)?,
            StoredForm::Mxfp4 { blocks, scales } => {
                let (blocks, scales) = (self.stored_info(blocks)?, self.stored_info(scales)?);
                let dims = [1, blocks.shape[1], blocks.shape[2]];
                let (codes, exponents) = (self.stored_slice(blocks, index)?, self.stored_slice(scales, index)?);
                SharedBytes::new(prequant::decode_mxfp4(&codes, &exponents, dims, info.dtype)?)
            }
            StoredForm::Fp8Block { scale_inv, block } if info.shape.len() > 2 => {
                let (weight, scale) = (self.stored_info(&info.name)?, self.stored_info(scale_inv)?);
                let scales = prequant::scale_values(scale.dtype, &self.stored_slice(scale, index)?);
                let codes = self.stored_slice(weight, index)?;
                SharedBytes::new(prequant::decode_fp8_block(&codes, &scales, &shape, *block, info.dtype)?)
            }
            StoredForm::Fp8Block { .. } => return self.read(name)?.slice_first(index),
        };
        Ok(TensorData { name: info.name.clone(), dtype: info.dtype, shape, data })
    }

    /// Slice `index` along the first dimension of a stored tensor (in range), shared with a read-ahead of the
    /// whole tensor or read alone.
    fn stored_slice(&self, info: &TensorInfo, index: usize) -> Result<SharedBytes> {
        let count = info.shape.first().copied().unwrap_or(1).max(1);
        let stride = (info.end - info.start) / count;
        if let Some(whole) = self.ahead.get(&info.name) {
            return Ok(whole.slice(index * stride..(index + 1) * stride));
        }
        let start = (info.start + index * stride) as u64;
        Ok(SharedBytes::new(self.sources[info.file].read_range(start..start + stride as u64)?))
    }
}
