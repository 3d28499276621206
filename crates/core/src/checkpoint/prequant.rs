//! Checkpoints stored pre-quantized in a form transformers dequantizes when it loads them, read as the tensors
//! transformers gets (`dequantize=True`, the bf16 path), so detection, the forward, quantization and the copy of
//! kept tensors see the same values:
//!
//! - **MXFP4**, as OpenAI ships GPT-OSS' experts: `<p>_blocks` U8 `[E, R, G, 16]` with `<p>_scales` U8
//!   `[E, R, G]` read as `<p>` `[E, G·32, R]` (transformers' `convert_moe_packed_tensors`: the 32 values of each
//!   block along the last dimension, then dimensions 1 and 2 swapped), in the model's dtype;
//! - **FP8 with block scales**, as DeepSeek-V3/R1, Kimi-K2 and the "-FP8" releases ship: `<m>.weight` F8_E4M3
//!   `[…, N, K]` with `<m>.weight_scale_inv` `[…, ⌈N/bn⌉, ⌈K/bk⌉]` (F32, BF16, F16, or E8M0 bytes as U8), block
//!   `[bn, bk]` from config.json's `quantization_config.weight_block_size` (default `[128, 128]`), read as
//!   `<m>.weight` in the model's dtype: the E4M3 value times its block's scale in f32, then rounded to the dtype,
//!   as transformers' `Fp8Dequantize` computes it. The blocks are the format's, the last one partial where a
//!   dimension is not a multiple of the block (transformers' load-time dequantization derives the block from the
//!   grid instead, which is the same whenever the dimensions are multiples of the block).
//!   `weight_scale_inv` (and a static `activation_scale`) leave the listing.
//!
//! The model's dtype is config.json's `dtype` (or `torch_dtype`) when it is bfloat16, float16 or float32, else
//! bfloat16. Everything else is read as stored. The forms are recognised from the tensors; config.json is read
//! only when one of them is there.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::view::bytes_to_f32;
use super::{Dtype, TensorInfo};
use crate::error::{Error, Result};
use crate::limits::{read_small_text, MAX_CONFIG_BYTES};
use crate::numerics::e4m3::e4m3_to_f32;
use crate::numerics::mxfp4::{e8m0_to_f32, mxfp4_value, MXFP4_BLOCK, MXFP4_BLOCK_BYTES};

/// How a tensor of the listing is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredForm {
    /// As listed.
    Plain,
    /// MXFP4 codes `blocks` and E8M0 exponents `scales`, dequantized and transposed.
    Mxfp4 { blocks: String, scales: String },
    /// FP8 E4M3 under the same name, times the scales `scale_inv` of `[rows, columns]` blocks.
    Fp8Block { scale_inv: String, block: [usize; 2] },
}

impl StoredForm {
    /// A short description for listings, `None` for a plain tensor.
    pub fn describe(&self) -> Option<String> {
        match self {
            StoredForm::Plain => None,
            StoredForm::Mxfp4 { .. } => Some("MXFP4".into()),
            StoredForm::Fp8Block { block: [rows, cols], .. } => {
                Some(format!("FP8 E4M3 with {rows}x{cols} block scales (weight_scale_inv)"))
            }
        }
    }
}

/// What config.json says that decoding needs.
struct DecodeConfig {
    block: [usize; 2],
    dtype: Dtype,
}

impl DecodeConfig {
    const DEFAULT_BLOCK: [usize; 2] = [128, 128];

    /// Reads config.json of `dir`; defaults when there is none.
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let defaults = DecodeConfig { block: Self::DEFAULT_BLOCK, dtype: Dtype::BF16 };
        if !path.exists() {
            return Ok(defaults);
        }
        let invalid = |message: String| Error::ConfigInvalid { path: path.clone(), message };
        let text = read_small_text(&path, MAX_CONFIG_BYTES, invalid)?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let dtype = ["dtype", "torch_dtype"]
            .iter()
            .find_map(|key| config.get(key).and_then(|v| v.as_str()))
            .and_then(|name| match name.trim_start_matches("torch.") {
                "bfloat16" => Some(Dtype::BF16),
                "float16" => Some(Dtype::F16),
                "float32" => Some(Dtype::F32),
                _ => None,
            })
            .unwrap_or(defaults.dtype);
        let block = match config.pointer("/quantization_config/weight_block_size") {
            None | Some(serde_json::Value::Null) => Self::DEFAULT_BLOCK,
            Some(value) => block_size(value).ok_or_else(|| {
                invalid(format!("quantization_config.weight_block_size must be two positive integers, got {value}"))
            })?,
        };
        Ok(DecodeConfig { block, dtype })
    }
}

fn block_size(value: &serde_json::Value) -> Option<[usize; 2]> {
    let sizes = value.as_array()?;
    let size = |v: &serde_json::Value| v.as_u64().and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0);
    match sizes.as_slice() {
        [rows, cols] => Some([size(rows)?, size(cols)?]),
        _ => None,
    }
}

/// The tensors as read from the `stored` ones of the checkpoint in `dir`: pre-quantized weights replaced by
/// their dequantized form (at the position of their codes), the tensors they consumed left out; `None` when
/// nothing is stored pre-quantized (the tensors are read as stored).
///
/// Errors: `E_TENSOR_SHAPE` when codes and scales do not fit together; `E_CHECKPOINT_DTYPE_UNSUPPORTED` for
/// block scales of another dtype; `E_CONFIG_INVALID` for a config.json that is not JSON or an invalid block size;
/// `E_TENSOR_DUPLICATE` when a dequantized name is also stored.
pub(super) fn logical_tensors(dir: &Path, stored: &[TensorInfo], files: &[&Path]) -> Result<Option<Vec<TensorInfo>>> {
    let candidates = stored.iter().any(|t| t.name.ends_with("_blocks") || t.name.ends_with("_scale_inv"));
    if !candidates {
        return Ok(None);
    }
    let config = DecodeConfig::read(dir)?;
    let by_name: HashMap<&str, &TensorInfo> = stored.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut decoded: HashMap<&str, TensorInfo> = HashMap::new();
    let mut consumed: HashSet<&str> = HashSet::new();
    for tensor in stored {
        let logical = if let Some(base) = tensor.name.strip_suffix("_blocks") {
            mxfp4_tensor(tensor, base, &by_name, &config, files)?
        } else {
            fp8_block_tensor(tensor, &by_name, &config, files)?
        };
        let Some(logical) = logical else { continue };
        match &logical.form {
            StoredForm::Mxfp4 { scales, .. } => consumed.insert(by_name[scales.as_str()].name.as_str()),
            StoredForm::Fp8Block { scale_inv, .. } => {
                if let Some(activation) = tensor.name.strip_suffix(".weight").map(|m| format!("{m}.activation_scale")) {
                    if let Some(t) = by_name.get(activation.as_str()) {
                        consumed.insert(t.name.as_str());
                    }
                }
                consumed.insert(by_name[scale_inv.as_str()].name.as_str())
            }
            StoredForm::Plain => false,
        };
        decoded.insert(tensor.name.as_str(), logical);
    }
    if decoded.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        stored
            .iter()
            .filter(|t| !consumed.contains(t.name.as_str()))
            .map(|t| decoded.remove(t.name.as_str()).unwrap_or_else(|| t.clone()))
            .collect(),
    ))
}

fn shape_error(tensor: &TensorInfo, message: String) -> Error {
    Error::ShapeInvalid { tensor: tensor.name.clone(), shape: tensor.shape.clone(), message }
}

/// `<base>_blocks` U8 `[E, R, G, 16]` beside `<base>_scales` U8 `[E, R, G]` as the tensor `<base>` `[E, G·32, R]`.
fn mxfp4_tensor(
    blocks: &TensorInfo,
    base: &str,
    by_name: &HashMap<&str, &TensorInfo>,
    config: &DecodeConfig,
    files: &[&Path],
) -> Result<Option<TensorInfo>> {
    let scales_name = format!("{base}_scales");
    let Some(scales) = by_name.get(scales_name.as_str()) else { return Ok(None) };
    if blocks.dtype != Dtype::U8 || scales.dtype != Dtype::U8 {
        return Ok(None);
    }
    let [experts, rows, groups, MXFP4_BLOCK_BYTES] = blocks.shape[..] else {
        return Err(shape_error(
            blocks,
            format!("MXFP4 blocks must be [experts, rows, groups, {MXFP4_BLOCK_BYTES}] (GPT-OSS' layout)"),
        ));
    };
    if scales.shape != [experts, rows, groups] {
        return Err(shape_error(
            blocks,
            format!("its scales {scales_name} are {:?}, not [{experts}, {rows}, {groups}]", scales.shape),
        ));
    }
    if let Some(other) = by_name.get(base) {
        return Err(Error::TensorDuplicate {
            tensor: base.to_string(),
            first: files[other.file].to_path_buf(),
            second: files[blocks.file].to_path_buf(),
        });
    }
    Ok(Some(TensorInfo {
        name: base.to_string(),
        dtype: config.dtype,
        shape: vec![experts, groups * MXFP4_BLOCK, rows],
        form: StoredForm::Mxfp4 { blocks: blocks.name.clone(), scales: scales_name },
        ..blocks.clone()
    }))
}

/// Dtypes block scales are read from.
const SCALE_DTYPES: [Dtype; 4] = [Dtype::F32, Dtype::BF16, Dtype::F16, Dtype::U8];

/// An F8_E4M3 `[…, N, K]` tensor beside `<name>_scale_inv` `[…, ⌈N/bn⌉, ⌈K/bk⌉]`, read in the model's dtype.
fn fp8_block_tensor(
    weight: &TensorInfo,
    by_name: &HashMap<&str, &TensorInfo>,
    config: &DecodeConfig,
    files: &[&Path],
) -> Result<Option<TensorInfo>> {
    let scale_name = format!("{}_scale_inv", weight.name);
    let Some(scale) = by_name.get(scale_name.as_str()) else { return Ok(None) };
    if weight.dtype != Dtype::F8E4M3 {
        return Ok(None);
    }
    if !SCALE_DTYPES.contains(&scale.dtype) {
        return Err(Error::UnsupportedDtype {
            path: files[scale.file].to_path_buf(),
            tensor: scale.name.clone(),
            dtype: scale.dtype.name().to_string(),
            supported: "F32, BF16, F16, U8 (E8M0) for block scales".into(),
        });
    }
    let [bn, bk] = config.block;
    let rank = weight.shape.len();
    let grid = match weight.shape[..] {
        [.., n, k] if rank <= 3 => [&weight.shape[..rank - 2], &[n.div_ceil(bn), k.div_ceil(bk)][..]].concat(),
        _ => return Err(shape_error(weight, "FP8 weights with block scales must be 2-D or 3-D".into())),
    };
    if scale.shape != grid {
        return Err(shape_error(
            weight,
            format!("its block scales {scale_name} are {:?}, not {grid:?} ({bn}x{bk} blocks)", scale.shape),
        ));
    }
    Ok(Some(TensorInfo {
        dtype: config.dtype,
        form: StoredForm::Fp8Block { scale_inv: scale_name, block: config.block },
        ..weight.clone()
    }))
}

/// Decodes MXFP4 `blocks` `[E, R, G, 16]` and `scales` `[E, R, G]` (`dims` = `[E, R, G]`) into `[E, G·32, R]`
/// elements of `dtype` (bf16, f16 or f32), transposed as transformers does.
pub(super) fn decode_mxfp4(blocks: &[u8], scales: &[u8], dims: [usize; 3], dtype: Dtype) -> Result<Vec<u8>> {
    let [experts, rows, groups] = dims;
    let cols = groups * MXFP4_BLOCK;
    let size = dtype.size();
    let count = experts * rows * groups;
    if blocks.len() != count * MXFP4_BLOCK_BYTES || scales.len() != count {
        return Err(Error::internal(format!(
            "MXFP4 decode of {dims:?} given {} and {} bytes",
            blocks.len(),
            scales.len()
        )));
    }
    let write = float_writer(dtype)?;
    // Every (scale, code) value in the output dtype, once.
    let mut table = vec![0u8; 256 * 16 * size];
    for (i, slot) in table.chunks_exact_mut(size).enumerate() {
        write(mxfp4_value((i % 16) as u8, (i / 16) as u8), slot);
    }
    let mut out = crate::memory::try_zeroed(experts * cols * rows * size, || format!("dequantizing MXFP4 {dims:?}"))?;
    for (block_index, (codes, &scale)) in blocks.chunks_exact(MXFP4_BLOCK_BYTES).zip(scales).enumerate() {
        let (expert, row, group) = (block_index / (rows * groups), block_index / groups % rows, block_index % groups);
        let values = &table[usize::from(scale) * 16 * size..][..16 * size];
        for (j, &byte) in codes.iter().enumerate() {
            for (half, code) in [byte & 0x0F, byte >> 4].into_iter().enumerate() {
                let col = group * MXFP4_BLOCK + 2 * j + half;
                let at = ((expert * cols + col) * rows + row) * size;
                out[at..at + size].copy_from_slice(&values[usize::from(code) * size..][..size]);
            }
        }
    }
    Ok(out)
}

fn float_writer(dtype: Dtype) -> Result<fn(f32, &mut [u8])> {
    dtype.float_writer().ok_or_else(|| {
        Error::internal(format!("pre-quantized weights are dequantized to bf16, f16 or f32, not {dtype}"))
    })
}

/// The f32 values of block scales stored as `dtype` (E8M0 for U8, as transformers reads them).
pub(super) fn scale_values(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    if dtype == Dtype::U8 {
        data.iter().map(|&b| e8m0_to_f32(b)).collect()
    } else {
        bytes_to_f32(dtype, data)
    }
}

/// Decodes FP8 E4M3 `weight` of `shape` `[…, N, K]` with `scales` (f32, `[…, ⌈N/bn⌉, ⌈K/bk⌉]`) into elements of
/// `dtype`.
pub(super) fn decode_fp8_block(
    weight: &[u8],
    scales: &[f32],
    shape: &[usize],
    block: [usize; 2],
    dtype: Dtype,
) -> Result<Vec<u8>> {
    let [.., n, k] = shape[..] else { return Err(Error::internal("FP8 block decode of a tensor below 2-D")) };
    let (grid_rows, grid_cols) = (n.div_ceil(block[0]), k.div_ceil(block[1]));
    let matrices = shape[..shape.len() - 2].iter().product::<usize>();
    if weight.len() != matrices * n * k || scales.len() != matrices * grid_rows * grid_cols {
        return Err(Error::internal(format!("FP8 block decode of {shape:?} given {} values", weight.len())));
    }
    let (size, write) = (dtype.size(), float_writer(dtype)?);
    let mut out = crate::memory::try_zeroed(weight.len() * size, || format!("dequantizing FP8 {shape:?}"))?;
    for (index, (codes, slots)) in weight.chunks_exact(k).zip(out.chunks_exact_mut(k * size)).enumerate() {
        let (matrix, row) = (index / n, index % n);
        let row_scales = &scales[(matrix * grid_rows + row / block[0]) * grid_cols..][..grid_cols];
        for (col, (&code, slot)) in codes.iter().zip(slots.chunks_exact_mut(size)).enumerate() {
            // The product in f32, then one more rounding to the dtype, as `(q * s).to(dtype)` in torch.
            write(e4m3_to_f32(code) * row_scales[col / block[1]], slot);
        }
    }
    Ok(out)
}
