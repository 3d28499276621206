//! INT4 weights in blocks of 128 (`quant_algo: "W4A16_AWQ"`, and `"W4A8_AWQ"` with FP8 activations), as ModelOpt
//! 0.47's unified HF export writes a weight its AWQ search has already smoothed (`awq`'s `pre_quant_scale` is
//! written beside it by the caller):
//!
//! - per block of 128 along K: `weight_scale = block_amax / 7`, F32 `[N, K/128]` (an all-zero block: 1);
//! - `q = round_half_even(W / weight_scale)` in f32, clamped to `[-8, 7]` (signed, no zero point);
//! - two output rows per byte: `byte[r, c] = q[2r, c] & 0xF | (q[2r+1, c] & 0xF) << 4`, U8 `[N/2, K]`;
//! - W4A8 adds `weight_scale_2 = amax / 448` (F32 0-d, the largest |W| of the linears sharing the input) and a
//!   calibrated `input_scale = amax / 448`.

use super::{
    sanitize_input_amax, sanitize_weight_amax, shape_error, FormatName, OutputTensor, QuantFormat, QuantizedWeight,
    WeightInput,
};
use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::numerics::e4m3::E4M3_MAX;

/// Elements per block scale.
pub const INT4_BLOCK: usize = 128;
/// The largest code (the scale maps a block's amax to it); codes run from −8 to 7.
const INT4_MAX: f32 = 7.0;

/// INT4 AWQ weights: activations in 16 bits (`W4A16_AWQ`) or FP8 with a calibrated scale (`W4A8_AWQ`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Int4Awq {
    pub fp8_activations: bool,
}

impl Int4Awq {
    /// The block maxima `[N, K/128]` of a weight, row major.
    pub fn block_amax(weight: &WeightInput) -> Vec<f32> {
        weight.values.chunks_exact(INT4_BLOCK).map(|block| block.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect()
    }

    /// Quantizes `weight` with the given block maxima (`[N, K/128]`; gate and up of a routed expert share the
    /// larger of theirs) and per-tensor amax (W4A8's `weight_scale_2`).
    pub fn quantize_blocks(&self, weight: &WeightInput, block_amax: &[f32], amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let [rows, cols] = weight.shape;
        check_shape(weight.name, weight.shape)?;
        if block_amax.len() != rows * cols / INT4_BLOCK {
            return Err(Error::internal(format!(
                "{}: {} block maxima for a weight [{rows}, {cols}]",
                weight.name,
                block_amax.len()
            )));
        }
        let scales: Vec<f32> =
            block_amax.iter().map(|&a| if a == 0.0 { 1.0 } else { a.max(f32::MIN_POSITIVE) / INT4_MAX }).collect();
        let blocks = cols / INT4_BLOCK;
        let code = |row: usize, col: usize| -> u8 {
            let q = round_half_even(weight.values[row * cols + col] / scales[row * blocks + col / INT4_BLOCK]);
            (q.clamp(-8.0, INT4_MAX) as i8 as u8) & 0x0F
        };
        let mut packed = Vec::with_capacity(rows / 2 * cols);
        for pair in 0..rows / 2 {
            packed.extend((0..cols).map(|col| code(2 * pair, col) | (code(2 * pair + 1, col) << 4)));
        }
        let mut tensors = vec![
            OutputTensor { suffix: "weight", dtype: Dtype::U8, shape: vec![rows / 2, cols], data: packed },
            OutputTensor {
                suffix: "weight_scale",
                dtype: Dtype::F32,
                shape: vec![rows, blocks],
                data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            },
        ];
        if self.fp8_activations {
            tensors.push(OutputTensor::scalar_f32("weight_scale_2", self.weight_scale(weight.name, amax)?));
        }
        Ok(QuantizedWeight { tensors })
    }
}

/// Round half to even, as torch's `round` does.
fn round_half_even(value: f32) -> f32 {
    let rounded = value.round();
    if (value - value.trunc()).abs() == 0.5 {
        2.0 * (value / 2.0).round()
    } else {
        rounded
    }
}

/// INT4 blocks need K a multiple of 128 (ModelOpt packs no partial block) and N even (two rows per byte).
fn check_shape(name: &str, [rows, cols]: [usize; 2]) -> Result<()> {
    if cols % INT4_BLOCK != 0 || rows % 2 != 0 {
        return Err(shape_error(
            name,
            &[rows, cols],
            format!(
                "INT4 AWQ quantizes blocks of {INT4_BLOCK} along the input dimension and packs two output rows per \
                 byte: K must be a multiple of {INT4_BLOCK} and N even; leave this tensor unquantized"
            ),
        ));
    }
    Ok(())
}

impl QuantFormat for Int4Awq {
    fn name(&self) -> FormatName {
        if self.fp8_activations {
            FormatName::W4a8Awq
        } else {
            FormatName::Int4Awq
        }
    }

    fn quant_algo(&self) -> &'static str {
        if self.fp8_activations {
            "W4A8_AWQ"
        } else {
            "W4A16_AWQ"
        }
    }

    fn group_size(&self) -> Option<usize> {
        Some(INT4_BLOCK)
    }

    fn bits_per_weight(&self) -> f64 {
        4.0 + 32.0 / INT4_BLOCK as f64
    }

    /// W4A8's `weight_scale_2`, `amax / 448`; W4A16 has no per-tensor scale.
    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        if !self.fp8_activations {
            return Err(Error::internal(format!("{name}: W4A16_AWQ has no per-tensor weight scale")));
        }
        Ok(sanitize_weight_amax(name, amax, E4M3_MAX)? / E4M3_MAX)
    }

    fn calibrated(&self) -> bool {
        self.fp8_activations
    }

    fn awq(&self) -> Option<super::AwqQuantizer> {
        Some(super::AwqQuantizer::Int4)
    }

    /// `amax / 448` (0 or NaN read as 448).
    fn input_scale(&self, amax: f32) -> f32 {
        sanitize_input_amax(amax, E4M3_MAX) / E4M3_MAX
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        check_shape(weight.name, weight.shape)?;
        self.quantize_blocks(weight, &Self::block_amax(weight), amax)
    }

    fn output_layout(&self, [rows, cols]: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        let mut layout = vec![
            ("weight", Dtype::U8, vec![rows / 2, cols]),
            ("weight_scale", Dtype::F32, vec![rows, cols / INT4_BLOCK]),
        ];
        if self.fp8_activations {
            layout.push(("weight_scale_2", Dtype::F32, Vec::new()));
        }
        layout
    }

    /// U8 codes beside F32 block scales (W4A8: and its F32 `weight_scale_2`). W4A16 is asked about its two tensors
    /// only, so it also takes a W4A8 weight: both dequantize alike (`weight_scale_2` scales activations' FP8 codes).
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        match dtypes {
            [Some(Dtype::U8), Some(Dtype::F32)] => !self.fp8_activations,
            [Some(Dtype::U8), Some(Dtype::F32), Some(Dtype::F32)] => self.fp8_activations,
            _ => false,
        }
    }

    /// Codes `[N/2, K]` beside block scales `[N, K/128]`.
    fn recognizes_shapes(&self, shapes: &[Option<&[usize]>]) -> bool {
        match shapes {
            [Some(&[half, cols]), Some(&[rows, blocks]), ..] => rows == 2 * half && blocks * INT4_BLOCK == cols,
            _ => false,
        }
    }

    /// The smoothed weight `q · weight_scale` (what multiplies the input once scaled by `pre_quant_scale`).
    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let (weight, scale) = match parts {
            [weight, scale] | [weight, scale, _] => (weight, scale),
            _ => return Err(Error::internal(format!("{name}: INT4 dequantizes codes and their block scales"))),
        };
        let [half, cols] = crate::formats::matrix_shape(weight.name, weight.shape)?;
        let rows = 2 * half;
        let blocks = cols / INT4_BLOCK;
        if cols % INT4_BLOCK != 0 || scale.shape != [rows, blocks] || scale.dtype != Dtype::F32 {
            return Err(shape_error(
                scale.name,
                scale.shape,
                format!("{name}: INT4 block scales must be F32 [{rows}, {blocks}] for codes [{half}, {cols}]"),
            ));
        }
        let scales: Vec<f32> =
            scale.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let signed = |nibble: u8| ((nibble << 4) as i8 >> 4) as f32;
        let mut values = vec![0.0f32; rows * cols];
        for (pair, bytes) in weight.data.chunks_exact(cols).enumerate() {
            for (col, &byte) in bytes.iter().enumerate() {
                for (offset, nibble) in [(0, byte & 0x0F), (1, byte >> 4)] {
                    let row = 2 * pair + offset;
                    values[row * cols + col] = signed(nibble) * scales[row * blocks + col / INT4_BLOCK];
                }
            }
        }
        Ok(([rows, cols], values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_scales_and_packing_by_hand() {
        // Row 0: a block whose amax is 7 (scale 1), row 1: amax 3.5 (scale 0.5), both with ties.
        let mut values = vec![0.0f32; 2 * 128];
        values[0] = 7.0;
        values[1] = 2.5; // tie → 2
        values[2] = -3.5; // tie → −4
        values[3] = -7.0;
        values[128] = 3.5; // 7
        values[129] = -0.25; // −0.5 → tie → 0
        values[130] = 0.75; // 1.5 → 2
        let weight = WeightInput::new("w", Dtype::BF16, &[2, 128], &values).unwrap();
        let q = Int4Awq::default().quantize(&weight, 7.0).unwrap();
        let codes = &q.get("weight").unwrap().data;
        assert_eq!(q.get("weight").unwrap().shape, [1, 128]);
        assert_eq!(codes[0], 0x7 | (0x7 << 4));
        assert_eq!(codes[1], 0x2); // 2, and 0 in the high nibble
        assert_eq!(codes[2], 0xC | (0x2 << 4)); // −4 = 0b1100
        assert_eq!(codes[3], 0x9); // −7 = 0b1001
        let scales: Vec<f32> =
            q.get("weight_scale").unwrap().data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(scales, [1.0, 0.5]);
        assert!(q.get("weight_scale_2").is_none());
        let (shape, back) = Int4Awq::default().dequantize("w", &q.views()).unwrap();
        assert_eq!(shape, [2, 128]);
        assert_eq!(&back[..4], &[7.0, 2.0, -4.0, -7.0]);
        assert_eq!(&back[128..131], &[3.5, 0.0, 1.0]);
    }

    #[test]
    fn w4a8_adds_the_fp8_scales_and_zero_blocks_scale_one() {
        let values = vec![0.0f32; 4 * 256];
        let weight = WeightInput::new("w", Dtype::BF16, &[4, 256], &values).unwrap();
        let format = Int4Awq { fp8_activations: true };
        let q = format.quantize(&weight, 8.96).unwrap();
        let scale_2 = f32::from_le_bytes(q.get("weight_scale_2").unwrap().data.clone().try_into().unwrap());
        assert_eq!(scale_2, 8.96f32 / 448.0);
        assert!(q
            .get("weight_scale")
            .unwrap()
            .data
            .chunks(4)
            .all(|b| f32::from_le_bytes(b.try_into().unwrap()) == 1.0));
        assert_eq!((format.quant_algo(), format.input_scale(44.8)), ("W4A8_AWQ", 44.8f32 / 448.0));
        assert!(format.recognizes(&[Some(Dtype::U8), Some(Dtype::F32), Some(Dtype::F32)]));
        assert!(!format.recognizes(&[Some(Dtype::U8), Some(Dtype::F32), None]));
        assert!(Int4Awq::default().recognizes(&[Some(Dtype::U8), Some(Dtype::F32)]));
        assert!(!Int4Awq::default().recognizes(&[Some(Dtype::U8), Some(Dtype::U8)]));
    }

    #[test]
    fn refuses_partial_blocks_and_odd_rows() {
        for shape in [[2usize, 64], [3, 128]] {
            let values = vec![0.5f32; shape[0] * shape[1]];
            let weight = WeightInput::new("layers.0.mlp.down_proj.weight", Dtype::BF16, &shape, &values).unwrap();
            let error = Int4Awq::default().quantize(&weight, 0.5).unwrap_err();
            assert_eq!(error.code(), "E_TENSOR_SHAPE", "{error}");
            assert!(error.to_string().contains("down_proj"), "{error}");
        }
    }
}
