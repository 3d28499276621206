//! Loading tensors from a checkpoint into f32 candle tensors, and the expert view: gate, up and down of
//! expert e in the standard `[out, in]` orientation from any stored layout, without rewriting the file.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::descriptor::{expert_name, ExpertLayout, ExpertTensors};
use super::stage::Staged;
use crate::checkpoint::{Checkpoint, TensorData};
use crate::error::{Error, Result};
use crate::formats;

/// Reads tensors of one checkpoint onto one device, in one compute dtype (f32 unless told otherwise).
pub struct WeightLoader<'a> {
    pub checkpoint: &'a Checkpoint,
    pub device: Device,
    pub dtype: DType,
    /// Keep bf16 / f16 / f32 tensors in their stored dtype instead of converting them to `dtype`.
    pub keep_stored: bool,
    /// The layer's tensors already copied to the device (see [`stage`](super::stage)), taken instead of the
    /// checkpoint's bytes.
    pub staged: Option<Arc<Staged>>,
}

/// The candle dtype a stored tensor is loaded in as it lies (bf16, f16, f32); anything else goes through f32.
pub(super) fn native_dtype(dtype: crate::checkpoint::Dtype) -> Option<DType> {
    use crate::checkpoint::Dtype as Stored;
    match dtype {
        Stored::BF16 => Some(DType::BF16),
        Stored::F16 => Some(DType::F16),
        Stored::F32 => Some(DType::F32),
        _ => None,
    }
}

impl<'a> WeightLoader<'a> {
    /// A loader producing f32 tensors.
    pub fn new(checkpoint: &'a Checkpoint, device: Device) -> Self {
        WeightLoader { checkpoint, device, dtype: DType::F32, keep_stored: false, staged: None }
    }

    /// A loader producing tensors of `dtype` (bf16 on the GPU).
    pub fn with_dtype(checkpoint: &'a Checkpoint, device: Device, dtype: DType) -> Self {
        WeightLoader { checkpoint, device, dtype, keep_stored: false, staged: None }
    }

    /// A loader on the same checkpoint and device that, when `keep` is set, keeps floating-point tensors in
    /// their stored dtype (half the memory of f32 for bf16 weights; users convert at the point of use).
    pub fn keeping_stored(&self, keep: bool) -> Self {
        WeightLoader {
            checkpoint: self.checkpoint,
            device: self.device.clone(),
            dtype: self.dtype,
            keep_stored: keep,
            staged: self.staged.clone(),
        }
    }

    /// Values as stored (bf16, f16, f32 copied as they are; anything else through f32) on the device, in the
    /// compute dtype.
    fn upload(&self, dtype: crate::checkpoint::Dtype, shape: &[usize], data: &[u8]) -> Result<Tensor> {
        let native = native_dtype(dtype);
        let tensor = match native {
            Some(native) => Tensor::from_raw_buffer(data, native, shape, &self.device)?,
            None => Tensor::from_vec(crate::checkpoint::bytes_to_f32(dtype, data), shape, &self.device)?,
        };
        self.stored(tensor, native.is_some())
    }

    /// A tensor as loaded, `as_stored` when it holds the stored values in their stored dtype: in the compute dtype,
    /// unless the loader keeps stored dtypes.
    fn stored(&self, tensor: Tensor, as_stored: bool) -> Result<Tensor> {
        if self.keep_stored && as_stored {
            return Ok(tensor);
        }
        Ok(tensor.to_dtype(self.dtype)?)
    }

    /// The whole tensor as f32. A weight stored quantized in ModelOpt's format (FP8, or NVFP4 with its
    /// scales beside it) comes back dequantized, with its logical shape `[N, K]`.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        if let Some((shape, values)) = formats::dequantize_stored(self.checkpoint, name)? {
            return Ok(Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?);
        }
        if let Some(staged) = self.staged.as_ref().and_then(|staged| staged.tensor(name)) {
            return self.stored(staged, true);
        }
        let tensor = self.checkpoint.read(name)?;
        self.upload(tensor.dtype, &tensor.shape, &tensor.data)
    }

    /// Rows `ids` of a 2-D tensor as read, gathered from its bytes before they are converted: `[ids.len(),
    /// columns]` in the compute dtype, the values that converting the whole tensor and selecting the rows gives,
    /// without the whole tensor converted (an f32 copy of a vocabulary-sized embedding on the CPU).
    pub fn rows(&self, tensor: &TensorData, ids: &[u32]) -> Result<Tensor> {
        let &[count, columns] = tensor.shape.as_slice() else {
            return Err(Error::internal(format!("rows of {} {:?}, which is not 2-D", tensor.name, tensor.shape)));
        };
        let row = tensor.data.len().checked_div(count).unwrap_or(0);
        let mut bytes = Vec::with_capacity(ids.len() * row);
        for &id in ids {
            let id = id as usize;
            if id >= count {
                return Err(Error::internal(format!("row {id} of {} {:?}", tensor.name, tensor.shape)));
            }
            bytes.extend_from_slice(&tensor.data[id * row..(id + 1) * row]);
        }
        self.upload(tensor.dtype, &[ids.len(), columns], &bytes)
    }

    /// Whether `name` is a weight stored quantized in ModelOpt's form, and when it is not, `E_TENSOR_SHAPE` unless
    /// its (logical) shape is `shape`. A quantized weight's stored shape is not its logical one (NVFP4 packs two
    /// values per byte): its shape is known once it is dequantized.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<bool> {
        if formats::stored_format(self.checkpoint, name)?.is_some() {
            return Ok(true);
        }
        let info = self.checkpoint.info(name)?;
        if info.shape != shape {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: info.shape.clone(),
                message: format!("expected shape {shape:?}"),
            });
        }
        Ok(false)
    }

    /// The tensor, checking its (logical) shape.
    pub fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        let tensor = self.tensor(name)?;
        if tensor.dims() != shape {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: tensor.dims().to_vec(),
                message: format!("expected shape {shape:?} once dequantized"),
            });
        }
        Ok(tensor)
    }

    /// `<module>.weight`.
    pub fn weight(&self, module: &str) -> Result<Tensor> {
        self.tensor(&format!("{module}.weight"))
    }

    /// `<module>.bias` when `present`.
    pub fn bias(&self, module: &str, present: bool) -> Result<Option<Tensor>> {
        if present {
            Ok(Some(self.tensor(&format!("{module}.bias"))?))
        } else {
            Ok(None)
        }
    }

    /// One expert's slice `[…]` of a fused `[E, …]` tensor.
    fn expert_slice(&self, name: &str, expert: usize) -> Result<Tensor> {
        if let Some(staged) = self.staged.as_ref().and_then(|staged| staged.slice(name, expert)) {
            return self.stored(staged, true);
        }
        let slice = self.checkpoint.read_slice_first(name, expert)?;
        self.upload(slice.dtype, &slice.shape, &slice.data)
    }

    /// Expert `e` of a MoE layer: `gate_up [2I, H]` (gate rows first), `down [H, I]`, and biases
    /// (`gate_up_bias [2I]`, `down_bias [H]`) when the layout has them.
    /// Ungated experts (no gate projection) come back with `gate_up` holding up alone, `[I, H]`.
    pub fn expert(&self, moe: &ExpertTensors, expert: usize) -> Result<ExpertWeights> {
        if !moe.gated() {
            return self.ungated_expert(moe, expert);
        }
        let missing = |what: &str| Error::internal(format!("the experts of {} have no {what} tensor", moe.down));
        let per_expert = |pattern: &Option<String>, what: &str| -> Result<Tensor> {
            let pattern = pattern.as_ref().ok_or_else(|| missing(what))?;
            self.tensor(&expert_name(pattern, expert))
        };
        let (gate_up, down) = match moe.layout {
            ExpertLayout::PerExpert => {
                let mut gate = per_expert(&moe.gate, "gate")?;
                let mut up = per_expert(&moe.up, "up")?;
                // Stored in different dtypes (kept as stored on the CPU): both in the compute dtype, where
                // they are used anyway.
                if gate.dtype() != up.dtype() {
                    (gate, up) = (gate.to_dtype(self.dtype)?, up.to_dtype(self.dtype)?);
                }
                let down = self.tensor(&expert_name(&moe.down, expert))?;
                (Tensor::cat(&[gate, up], 0)?, down)
            }
            ExpertLayout::Fused => {
                let gate_up = self.expert_slice(moe.gate_up.as_ref().ok_or_else(|| missing("gate_up"))?, expert)?;
                (gate_up, self.expert_slice(&moe.down, expert)?)
            }
            ExpertLayout::FusedTransposed | ExpertLayout::FusedInterleaved => {
                // Stored [H, 2I] and [I, H]: transpose to [out, in].
                let gate_up = self.expert_slice(moe.gate_up.as_ref().ok_or_else(|| missing("gate_up"))?, expert)?;
                let gate_up = gate_up.t()?.contiguous()?;
                let down = self.expert_slice(&moe.down, expert)?.t()?.contiguous()?;
                let gate_up = if moe.layout == ExpertLayout::FusedInterleaved {
                    deinterleave_rows(&gate_up, moe.intermediate)?
                } else {
                    gate_up
                };
                (gate_up, down)
            }
        };
        let gate_up_bias = match &moe.gate_up_bias {
            Some(name) => {
                let bias = self.expert_slice(name, expert)?;
                Some(if moe.layout == ExpertLayout::FusedInterleaved {
                    deinterleave_rows(&bias.unsqueeze(1)?, moe.intermediate)?.squeeze(1)?
                } else {
                    bias
                })
            }
            None => None,
        };
        let down_bias = match &moe.down_bias {
            Some(name) => Some(self.expert_slice(name, expert)?),
            None => None,
        };
        Ok(ExpertWeights { gate_up, down, gate_up_bias, down_bias })
    }

    /// Expert `e` of ungated experts: `gate_up` is up `[I, H]`, `down` `[H, I]`, from per-expert tensors or
    /// from stacks `[E, I, H]` / `[E, H, I]` (transposed: `[E, H, I]` / `[E, I, H]`).
    fn ungated_expert(&self, moe: &ExpertTensors, expert: usize) -> Result<ExpertWeights> {
        let up = moe.up.as_ref().ok_or_else(|| {
            Error::internal(format!("the experts of {} have neither a gate nor an up tensor", moe.down))
        })?;
        let (up, down) = match moe.layout {
            ExpertLayout::PerExpert => {
                (self.tensor(&expert_name(up, expert))?, self.tensor(&expert_name(&moe.down, expert))?)
            }
            ExpertLayout::Fused => (self.expert_slice(up, expert)?, self.expert_slice(&moe.down, expert)?),
            ExpertLayout::FusedTransposed => (
                self.expert_slice(up, expert)?.t()?.contiguous()?,
                self.expert_slice(&moe.down, expert)?.t()?.contiguous()?,
            ),
            ExpertLayout::FusedInterleaved => {
                return Err(Error::internal(format!(
                    "the experts of {}: an interleaved gate/up layout needs a gate",
                    moe.down
                )))
            }
        };
        if moe.gate_up_bias.is_some() || moe.down_bias.is_some() {
            return Err(Error::internal(format!("the ungated experts of {} are read without biases", moe.down)));
        }
        Ok(ExpertWeights { gate_up: up, down, gate_up_bias: None, down_bias: None })
    }
}

/// Reorders interleaved rows (gate at even rows, up at odd) into gate rows then up rows.
fn deinterleave_rows(xs: &Tensor, intermediate: usize) -> Result<Tensor> {
    let cols = xs.dim(1)?;
    let pairs = xs.reshape((intermediate, 2, cols))?;
    Ok(pairs.transpose(0, 1)?.contiguous()?.reshape((2 * intermediate, cols))?)
}

/// One expert's weights in the standard orientation.
pub struct ExpertWeights {
    /// `[2I, H]`, gate rows then up rows (ungated experts: up alone, `[I, H]`).
    pub gate_up: Tensor,
    /// `[H, I]`.
    pub down: Tensor,
    pub gate_up_bias: Option<Tensor>,
    pub down_bias: Option<Tensor>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Dtype;

    /// A checkpoint with `table` ([5, 3], bf16 values that f32 holds exactly) and `wide` (the same in f32).
    fn checkpoint() -> (tempfile::TempDir, Checkpoint) {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) * 0.375).collect();
        let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let f32: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = [("table", Dtype::BF16, &bf16), ("wide", Dtype::F32, &f32)].map(|(name, dtype, bytes)| {
            (name, safetensors::tensor::TensorView::new(dtype.to_safetensors(), vec![5, 3], bytes).unwrap())
        });
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        (dir, checkpoint)
    }

    #[test]
    fn rows_gathered_before_the_conversion_are_the_rows_of_the_converted_tensor() {
        let (_dir, checkpoint) = checkpoint();
        let ids = [4u32, 0, 4, 2];
        for (name, dtype) in [("table", DType::F32), ("table", DType::BF16), ("wide", DType::BF16)] {
            let loader = WeightLoader::with_dtype(&checkpoint, Device::Cpu, dtype);
            let rows = loader.rows(&checkpoint.read(name).unwrap(), &ids).unwrap();
            let whole = loader.tensor(name).unwrap();
            let selected = whole.index_select(&Tensor::new(&ids, &Device::Cpu).unwrap(), 0).unwrap();
            assert_eq!((rows.dims(), rows.dtype()), (&[4, 3][..], dtype), "{name} in {dtype:?}");
            let [rows, selected] = [rows, selected].map(|t| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
            assert_eq!(rows, selected, "{name} in {dtype:?}");
            assert_eq!(rows[1], [-2.625, -2.25, -1.875], "{name}: row 0 as written");
        }
        let loader = WeightLoader::new(&checkpoint, Device::Cpu);
        let error = loader.rows(&checkpoint.read("table").unwrap(), &[5]).unwrap_err();
        assert!(error.to_string().contains("row 5 of table [5, 3]"), "{error}");
    }
}
