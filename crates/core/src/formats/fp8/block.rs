//! FP8 in 128×128 blocks, weight-only (`quant_algo: "fp8_pb_wo"`, ModelOpt's `FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG`),
//! as ModelOpt 0.47's unified HF export writes it:
//!
//! - the weight `[N, K]` is cut into 128×128 tiles from the top left (the last row and column of tiles partial);
//! - per tile, `amax` = max |W| (exact in the weight's dtype), sanitized as `export_amax` does (0 → 448, so an
//!   all-zero tile has scale 1; below the dtype's smallest normal → that normal), `scale = amax / 448` in f32;
//! - `weight = e4m3(f32(W) / scale)` (F8_E4M3 `[N, K]`): torch divides by a non-0-d f32 tensor in f32, one
//!   rounding, and the cast saturates at ±448;
//! - `weight_scale` is F32 `[ceil(N/128), 1, ceil(K/128), 1]`, or 0-d when the weight is one tile.
//!
//! One exception to per-tile scales: the export's fusion step gives the linears that read one input (q/k/v,
//! gate/up) the maximum of their amaxes when the group's first weight is a single tile (ModelOpt checks only
//! `amax.numel() == 1` of the first); [`QuantFormat::shares_amax`] says when, and a single-tile weight then takes
//! the amax it is given. No activation scale is written: activations stay in 16 bits.

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::{sanitize_weight_amax, shape_error, FormatName, QuantFormat, QuantizedWeight, WeightInput};
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};

/// Rows and columns of one block.
pub const FP8_BLOCK: usize = 128;

/// FP8 E4M3 weights with one f32 scale per 128×128 block; activations left in 16 bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fp8Block;

impl Fp8Block {
    /// Blocks along the rows and the columns of a weight `[N, K]`.
    pub fn blocks([rows, cols]: [usize; 2]) -> [usize; 2] {
        [rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)]
    }

    /// The shape of `weight_scale` for a weight `[N, K]`: 0-d for one block, else `[N/128, 1, K/128, 1]` rounded
    /// up.
    pub fn scale_shape(shape: [usize; 2]) -> Vec<usize> {
        match Self::blocks(shape) {
            [1, 1] => Vec::new(),
            [row_blocks, col_blocks] => vec![row_blocks, 1, col_blocks, 1],
        }
    }

    /// `amax / 448` after ModelOpt's `export_amax` on a weight of `dtype`: 0 (or NaN) becomes 448, anything below
    /// the dtype's smallest normal is raised to it.
    fn scale(amax: f32, dtype: Dtype) -> f32 {
        let smallest_normal = match dtype {
            Dtype::F16 => 6.103_515_6e-5, // 2^-14
            _ => f32::MIN_POSITIVE,       // 2^-126, bf16's and f32's
        };
        let amax = if amax == 0.0 || amax.is_nan() { E4M3_MAX } else { amax.max(smallest_normal) };
        amax / E4M3_MAX
    }
}

impl QuantFormat for Fp8Block {
    fn name(&self) -> FormatName {
        FormatName::Fp8PbWo
    }

    /// Lower case, as ModelOpt 0.47 writes it.
    fn quant_algo(&self) -> &'static str {
        "fp8_pb_wo"
    }

    /// Blocks are two-dimensional and may be partial: no input dimension is refused.
    fn group_size(&self) -> Option<usize> {
        None
    }

    fn bits_per_weight(&self) -> f64 {
        8.0
    }

    /// The scale of a single-block weight with this amax (larger weights have one per block).
    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        Ok(sanitize_weight_amax(name, amax, E4M3_MAX)? / E4M3_MAX)
    }

    fn calibrated(&self) -> bool {
        false
    }

    /// Never written (activations stay in 16 bits); the per-tensor FP8 rule for callers that ask anyway.
    fn input_scale(&self, amax: f32) -> f32 {
        super::Fp8::default().input_scale(amax)
    }

    /// Each block with its own amax; a single-block weight with `amax` (its own, or its group's).
    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let cols = weight.shape[1];
        let [row_blocks, col_blocks] = Self::blocks(weight.shape);
        let mut scales = vec![0f32; row_blocks * col_blocks];
        if row_blocks * col_blocks == 1 {
            sanitize_weight_amax(weight.name, amax, E4M3_MAX)?;
            scales[0] = Self::scale(amax, weight.source_dtype);
        } else {
            let mut amaxes = vec![0f32; scales.len()];
            for (r, row) in weight.values.chunks_exact(cols.max(1)).enumerate() {
                for (c, value) in row.iter().enumerate() {
                    let block = &mut amaxes[(r / FP8_BLOCK) * col_blocks + c / FP8_BLOCK];
                    *block = block.max(value.abs());
                }
            }
            for (scale, amax) in scales.iter_mut().zip(amaxes) {
                *scale = Self::scale(amax, weight.source_dtype);
            }
        }
        let mut codes = crate::memory::try_zeroed(weight.values.len(), || format!("the FP8 codes of {}", weight.name))?;
        for (r, (row, out)) in
            weight.values.chunks_exact(cols.max(1)).zip(codes.chunks_exact_mut(cols.max(1))).enumerate()
        {
            let block_row = &scales[(r / FP8_BLOCK) * col_blocks..(r / FP8_BLOCK + 1) * col_blocks];
            for (c, (byte, &value)) in out.iter_mut().zip(row).enumerate() {
                *byte = f32_to_e4m3(value / block_row[c / FP8_BLOCK]);
            }
        }
        Ok(super::fp8_weight(weight.shape, codes, Self::scale_shape(weight.shape), &scales))
    }

    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![("weight", Dtype::F8E4M3, shape.to_vec()), ("weight_scale", Dtype::F32, Self::scale_shape(shape))]
    }

    /// ModelOpt's fusion step shares the group's amax only when the first weight (`first`: the group's first
    /// linear, or a routed expert's fused gate/up `[2I, H]`) is a single block.
    fn shares_amax(&self, first: [usize; 2]) -> bool {
        Self::blocks(first) == [1, 1]
    }

    /// An F8_E4M3 weight with an F32 `weight_scale`: read back through [`super::Fp8`], which takes block scales too.
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::F8E4M3), Some(Dtype::F32)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, scale] = parts else {
            return Err(Error::internal(format!("{name}: FP8 dequantizes a weight and its scale")));
        };
        let shape = crate::formats::matrix_shape(weight.name, weight.shape)?;
        Ok((shape, dequantize_fp8_blocks(name, shape, weight.data, scale)?))
    }
}

/// FP8 codes `[N, K]` times their 128×128 block scales (`[N/128, 1, K/128, 1]`, or 0-d for one block; or
/// compressed-tensors' `[N/128, K/128]`).
pub fn dequantize_fp8_blocks(name: &str, shape: [usize; 2], codes: &[u8], scale: &TensorView<'_>) -> Result<Vec<f32>> {
    let [rows, cols] = shape;
    let expected = Fp8Block::scale_shape(shape);
    let known = scale.shape == expected.as_slice() || scale.shape == Fp8Block::blocks(shape);
    if !known || !scale.dtype.is_float() || rows * cols != codes.len() {
        return Err(shape_error(
            scale.name,
            scale.shape,
            format!("expected {expected:?} floating-point block scales for {name} {shape:?}"),
        ));
    }
    let scales = scale.to_f32();
    let col_blocks = Fp8Block::blocks(shape)[1];
    let mut values = Vec::with_capacity(codes.len());
    for (r, row) in codes.chunks_exact(cols.max(1)).enumerate() {
        let block_row = &scales[(r / FP8_BLOCK) * col_blocks..];
        values.extend(row.iter().enumerate().map(|(c, &b)| e4m3_to_f32(b) * block_row[c / FP8_BLOCK]));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(values: &[f32], shape: [usize; 2]) -> QuantizedWeight {
        let input = WeightInput::new("w", Dtype::BF16, &shape, values).unwrap();
        Fp8Block.quantize(&input, 0.0).unwrap()
    }

    #[test]
    fn each_block_has_its_own_scale_and_partial_blocks_count() {
        // [200, 300]: 2 × 3 blocks, the last row of blocks 72 rows high, the last column 44 wide.
        let shape = [200usize, 300];
        let values: Vec<f32> = (0..200 * 300)
            .map(|i| {
                let (r, c) = (i / 300, i % 300);
                let block = (r / 128) * 3 + c / 128;
                half::bf16::from_f32(((i * 37 % 101) as f32 / 101.0 - 0.5) * (block + 1) as f32).to_f32()
            })
            .collect();
        let q = weight(&values, shape);
        let scale = q.get("weight_scale").unwrap();
        assert_eq!(scale.shape, [2, 1, 3, 1]);
        let scales: Vec<f32> = scale.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        for (block, &s) in scales.iter().enumerate() {
            let (br, bc) = (block / 3, block % 3);
            let amax = (0..200 * 300)
                .filter(|i| (i / 300) / 128 == br && (i % 300) / 128 == bc)
                .map(|i| values[i].abs())
                .fold(0f32, f32::max);
            assert_eq!(s, amax / 448.0, "block {block}");
        }
        // Each value divided by its block's scale in f32, once, then cast.
        let codes = &q.get("weight").unwrap().data;
        for i in [0usize, 299, 127 * 300 + 128, 199 * 300 + 299, 150 * 300 + 260] {
            let s = scales[((i / 300) / 128) * 3 + (i % 300) / 128];
            assert_eq!(codes[i], f32_to_e4m3(values[i] / s), "element {i}");
        }
        let (_, restored) = Fp8Block.dequantize("w", &q.views()).unwrap();
        let worst = restored.iter().zip(&values).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0f32, f32::max);
        assert!(worst < 0.07, "{worst}");
    }

    #[test]
    fn a_single_block_takes_the_amax_it_is_given_and_a_zero_block_has_scale_one() {
        let values: Vec<f32> = (0..64 * 96).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let input = WeightInput::new("w", Dtype::BF16, &[64, 96], &values).unwrap();
        let q = Fp8Block.quantize(&input, 2.0).unwrap();
        assert_eq!(q.get("weight_scale").unwrap().shape, Vec::<usize>::new());
        assert_eq!(q.get("weight_scale").unwrap().data, (2.0f32 / 448.0).to_le_bytes());
        let mut zeros = vec![0f32; 130 * 16];
        zeros[129 * 16] = 1.0;
        let q = weight(&zeros, [130, 16]);
        let scale = &q.get("weight_scale").unwrap().data;
        assert_eq!(q.get("weight_scale").unwrap().shape, [2, 1, 1, 1]);
        assert_eq!(scale[..4], 1.0f32.to_le_bytes(), "an all-zero block");
        assert_eq!(scale[4..], (1.0f32 / 448.0).to_le_bytes());
        assert!(Fp8Block.shares_amax([128, 128]) && !Fp8Block.shares_amax([129, 64]));
    }
}
