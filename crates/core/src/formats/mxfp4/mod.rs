//! MXFP4 out (`quant_algo: "mxfp4"`, ModelOpt's `MXFP4_DEFAULT_CFG`), as ModelOpt 0.47's unified HF export writes it
//! (`MXFP4QTensor`): E2M1 weights with one power-of-two (E8M0) scale per 32 inputs; activations MX-scaled
//! dynamically, so the export depends on the weights alone (no calibration, no `input_scale`, no `group_size`).
//!
//! Per row and block of 32 along K:
//! - `e = ceil(log2(amax / 6))` with the quotient and the logarithm in f32 (as torch takes them), at least −127 (an
//!   all-zero block gets −127), no upper clamp; `weight_scale` = `e + 127` (U8 `[N, K/32]`);
//! - each value `x = W / 2^e` (f32, exact but for underflow) becomes an E2M1 code: the magnitude index counts the
//!   midpoints {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5} that |x| exceeds (round to nearest, ties toward zero — unlike
//!   NVFP4's ties to even — saturating at 6), and the sign bit is set for every x ≤ 0, zero included
//!   (`(2 − sign(x)) // 2`): a zero weight is code 0x8;
//! - two codes a byte, the even element in the low nibble (U8 `[N, K/2]`).

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::mx::{check_blocks, check_scales, exponent_above, power_of_two, MX_BLOCK};
use crate::formats::{FormatName, OutputTensor, QuantFormat, QuantizedWeight, WeightInput};
use crate::numerics::e2m1::{e2m1_to_f32, E2M1_MAX};

/// E2M1 weights with one power-of-two (E8M0) scale per 32 elements of a row; activations MX-scaled at run time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mxfp4;

/// The biased E8M0 exponent of a block whose largest magnitude is `amax` (see the module documentation).
pub fn mxfp4_exponent(amax: f32) -> u8 {
    let exponent = exponent_above(amax, E2M1_MAX).map_or(-127, |e| e.max(-127));
    (exponent + 127).clamp(0, 255) as u8
}

/// ModelOpt's MXFP4 code of a value already divided by its scale (see the module documentation).
pub fn mxfp4_code(x: f32) -> u8 {
    let a = x.abs();
    let magnitude = [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0].iter().filter(|&&midpoint| a > midpoint).count() as u8;
    let sign = if x > 0.0 { 0 } else { 0x8 };
    sign | magnitude
}

impl QuantFormat for Mxfp4 {
    fn name(&self) -> FormatName {
        FormatName::Mxfp4
    }

    /// Lower case, as ModelOpt 0.47 writes it.
    fn quant_algo(&self) -> &'static str {
        "mxfp4"
    }

    fn group_size(&self) -> Option<usize> {
        Some(MX_BLOCK)
    }

    /// 4 bits a weight and an 8-bit scale per 32.
    fn bits_per_weight(&self) -> f64 {
        4.25
    }

    /// MX scales belong to blocks of 32; there is no per-tensor one.
    fn weight_scale(&self, name: &str, _amax: f32) -> Result<f32> {
        Err(Error::internal(format!("{name}: MXFP4 has one scale per block of {MX_BLOCK}, not per tensor")))
    }

    fn calibrated(&self) -> bool {
        false
    }

    /// Never written (the engine scales activations per block at run time); the per-tensor FP8 rule for callers
    /// that ask anyway.
    fn input_scale(&self, amax: f32) -> f32 {
        crate::formats::Fp8::default().input_scale(amax)
    }

    /// Each block with its own scale; the per-tensor `amax` is not used.
    fn quantize(&self, weight: &WeightInput, _amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        check_blocks(weight, "MXFP4")?;
        let [rows, cols] = weight.shape;
        let mut packed =
            crate::memory::try_zeroed(weight.values.len() / 2, || format!("the MXFP4 codes of {}", weight.name))?;
        let mut scales = crate::memory::try_zeroed(weight.values.len() / MX_BLOCK, || {
            format!("the MXFP4 scales of {}", weight.name)
        })?;
        let blocks =
            weight.values.chunks_exact(MX_BLOCK).zip(packed.chunks_exact_mut(MX_BLOCK / 2)).zip(scales.iter_mut());
        for ((block, out), scale) in blocks {
            *scale = mxfp4_exponent(block.iter().fold(0f32, |m, v| m.max(v.abs())));
            let divisor = power_of_two(i32::from(*scale));
            for (byte, pair) in out.iter_mut().zip(block.chunks_exact(2)) {
                *byte = mxfp4_code(pair[0] / divisor) | (mxfp4_code(pair[1] / divisor) << 4);
            }
        }
        Ok(QuantizedWeight {
            tensors: vec![
                OutputTensor { suffix: "weight", dtype: Dtype::U8, shape: vec![rows, cols / 2], data: packed },
                OutputTensor {
                    suffix: "weight_scale",
                    dtype: Dtype::U8,
                    shape: vec![rows, cols / MX_BLOCK],
                    data: scales,
                },
            ],
        })
    }

    fn output_layout(&self, [rows, cols]: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![("weight", Dtype::U8, vec![rows, cols / 2]), ("weight_scale", Dtype::U8, vec![rows, cols / MX_BLOCK])]
    }

    /// U8 codes with a U8 (E8M0) `weight_scale` beside them, and no `weight_scale_2` (NVFP4's).
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::U8), Some(Dtype::U8)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, scale] = parts else {
            return Err(Error::internal(format!("{name}: MXFP4 dequantizes codes and their scales")));
        };
        let [rows, half] = crate::formats::matrix_shape(weight.name, weight.shape)?;
        let cols = 2 * half;
        check_scales(name, [rows, cols], scale)?;
        let mut values = Vec::with_capacity(rows * cols);
        for (block, &biased) in weight.data.chunks_exact(MX_BLOCK / 2).zip(scale.data) {
            let multiplier = power_of_two(i32::from(biased));
            for &byte in block {
                values.push(e2m1_to_f32(byte & 0x0F) * multiplier);
                values.push(e2m1_to_f32(byte >> 4) * multiplier);
            }
        }
        Ok(([rows, cols], values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_ties_toward_zero_and_mark_zero_negative() {
        // Midpoints go down, unlike NVFP4 (0.75 → 0.5, 1.75 → 1.5, 3.5 → 3); above 5 saturates at 6.
        let cases =
            [(0.75f32, 1u8), (0.76, 2), (1.75, 3), (3.5, 5), (3.6, 6), (5.0, 6), (5.1, 7), (100.0, 7), (0.1, 0)];
        for (x, magnitude) in cases {
            assert_eq!(mxfp4_code(x), magnitude, "{x}");
            assert_eq!(mxfp4_code(-x), 0x8 | magnitude, "{}", -x);
        }
        assert_eq!((mxfp4_code(0.0), mxfp4_code(-0.0)), (0x8, 0x8));
    }

    #[test]
    fn the_exponent_is_the_smallest_with_the_block_max_within_six_times_it() {
        for bits in 0u16..0x7F80 {
            let amax = half::bf16::from_bits(bits).to_f32();
            let mut e = -127i32;
            while f64::from(amax) > 6.0 * 2f64.powi(e) {
                e += 1;
            }
            assert_eq!(mxfp4_exponent(amax), (e + 127) as u8, "amax {amax:e}");
        }
    }

    #[test]
    fn blocks_read_back_within_e2m1_rounding_and_widths_must_divide() {
        let values: Vec<f32> = (0..2 * 64).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.04).collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[2, 64], &values).unwrap();
        let q = Mxfp4.quantize(&weight, 0.0).unwrap();
        assert_eq!(q.get("weight").unwrap().shape, [2, 32]);
        assert_eq!(q.get("weight_scale").unwrap().shape, [2, 2]);
        let scales = q.get("weight_scale").unwrap().data.clone();
        let (_, restored) = Mxfp4.dequantize("w", &q.views()).unwrap();
        for (i, (a, b)) in restored.iter().zip(&values).enumerate() {
            let step = power_of_two(i32::from(scales[i / 32]));
            assert!((a - b).abs() <= step, "{i}: {a} vs {b}");
        }
        let odd = WeightInput::new("w", Dtype::BF16, &[1, 48], &values[..48]).unwrap();
        assert!(matches!(Mxfp4.quantize(&odd, 0.0), Err(Error::ShapeInvalid { .. })));
    }
}
