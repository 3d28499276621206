//! MXFP8 (`quant_algo: "MXFP8"`, group size 32, ModelOpt's `MXFP8_DEFAULT_CFG`), as ModelOpt 0.47's unified HF export
//! writes it (`MXFP8QTensor`): weights and activations both MX-scaled, the activations dynamically by the engine, so
//! the export is a function of the weights alone (no calibration, no `input_scale`).
//!
//! Per row and block of 32 along K:
//! - `amax` = max |W| (exact in the weight's dtype), `d = amax / 448` in f32;
//! - the E8M0 exponent `e = ceil(log2 d)`, −127 where `d` is 0, clamped to [−127, 127]: the scale is `d` rounded
//!   up to a power of two. torch takes `log2` in f32, which rounds just above a power of two down onto it; the
//!   f32 rounding of the exact logarithm reproduces that;
//! - `weight_scale` = `e + 127` (U8 `[N, K/32]`);
//! - `weight = e4m3(clamp(W · 2^−e, ±448))` in f32 (exact: a power of two), rounded to nearest even, F8_E4M3 `[N, K]`.
//!
//! K must be a multiple of 32 (ModelOpt's export asserts it and writes nothing otherwise).

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::mx::{check_blocks, check_scales, exponent_above, power_of_two, MX_BLOCK};
use crate::formats::{FormatName, OutputTensor, QuantFormat, QuantizedWeight, WeightInput};
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};

/// FP8 E4M3 weights with one power-of-two (E8M0) scale per 32 elements of a row; activations MX-scaled at run time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mxfp8;

/// The biased E8M0 exponent of a block whose largest magnitude is `amax` (see the module documentation).
pub fn e8m0_exponent(amax: f32) -> u8 {
    let exponent = exponent_above(amax, E4M3_MAX).map_or(-127, |e| e.clamp(-127, 127));
    (exponent + 127) as u8
}

impl QuantFormat for Mxfp8 {
    fn name(&self) -> FormatName {
        FormatName::Mxfp8
    }

    fn quant_algo(&self) -> &'static str {
        "MXFP8"
    }

    fn group_size(&self) -> Option<usize> {
        Some(MX_BLOCK)
    }

    /// 8 bits a weight and an 8-bit scale per 32.
    fn bits_per_weight(&self) -> f64 {
        8.25
    }

    /// MX scales belong to blocks of 32; there is no per-tensor one.
    fn weight_scale(&self, name: &str, _amax: f32) -> Result<f32> {
        Err(Error::internal(format!("{name}: MXFP8 has one scale per block of {MX_BLOCK}, not per tensor")))
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
        check_blocks(weight, "MXFP8")?;
        let [rows, cols] = weight.shape;
        let mut codes =
            crate::memory::try_zeroed(weight.values.len(), || format!("the MXFP8 codes of {}", weight.name))?;
        let mut scales = crate::memory::try_zeroed(weight.values.len() / MX_BLOCK, || {
            format!("the MXFP8 scales of {}", weight.name)
        })?;
        let blocks = weight.values.chunks_exact(MX_BLOCK).zip(codes.chunks_exact_mut(MX_BLOCK)).zip(scales.iter_mut());
        for ((block, out), scale) in blocks {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            *scale = e8m0_exponent(amax);
            let multiplier = power_of_two(254 - i32::from(*scale));
            for (byte, &value) in out.iter_mut().zip(block) {
                *byte = f32_to_e4m3((value * multiplier).clamp(-E4M3_MAX, E4M3_MAX));
            }
        }
        Ok(QuantizedWeight {
            tensors: vec![
                OutputTensor { suffix: "weight", dtype: Dtype::F8E4M3, shape: vec![rows, cols], data: codes },
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
        vec![("weight", Dtype::F8E4M3, vec![rows, cols]), ("weight_scale", Dtype::U8, vec![rows, cols / MX_BLOCK])]
    }

    /// An F8_E4M3 weight with a U8 (E8M0) `weight_scale` beside it.
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::F8E4M3), Some(Dtype::U8)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, scale] = parts else {
            return Err(Error::internal(format!("{name}: MXFP8 dequantizes a weight and its scales")));
        };
        let [rows, cols] = crate::formats::matrix_shape(weight.name, weight.shape)?;
        check_scales(name, [rows, cols], scale)?;
        let mut values = Vec::with_capacity(weight.data.len());
        for (block, &biased) in weight.data.chunks_exact(MX_BLOCK).zip(scale.data) {
            let multiplier = power_of_two(i32::from(biased));
            values.extend(block.iter().map(|&b| e4m3_to_f32(b) * multiplier));
        }
        Ok(([rows, cols], values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest e with amax ≤ 448·2^e, by exact arithmetic (what ceil(log2(amax/448)) means for bf16 values).
    fn exact_exponent(amax: f32) -> u8 {
        if amax / E4M3_MAX == 0.0 {
            return 0;
        }
        let mut e = -127i32;
        while e < 127 && f64::from(amax) > 448.0 * 2f64.powi(e) {
            e += 1;
        }
        (e + 127) as u8
    }

    #[test]
    fn the_exponent_of_every_bf16_amax_is_the_scale_rounded_up_to_a_power_of_two() {
        for bits in 0u16..0x7F80 {
            let amax = half::bf16::from_bits(bits).to_f32();
            assert_eq!(e8m0_exponent(amax), exact_exponent(amax), "amax {amax:e} ({bits:#06x})");
        }
        assert_eq!(e8m0_exponent(448.0), 127);
        assert_eq!(e8m0_exponent(1.75 * 2f32.powi(-4)), 115, "448·2^-12 exactly");
        assert_eq!(e8m0_exponent((1.75 + 2f32.powi(-7)) * 2f32.powi(-4)), 116, "one bf16 step above");
        assert_eq!(e8m0_exponent(0.0), 0);
    }

    #[test]
    fn blocks_are_scaled_by_powers_of_two_and_read_back_within_e4m3_rounding() {
        let values: Vec<f32> = (0..4 * 64)
            .map(|i| {
                half::bf16::from_f32(((i * 37 % 101) as f32 / 101.0 - 0.5) * if i % 64 < 32 { 0.01 } else { 3.0 })
                    .to_f32()
            })
            .collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[4, 64], &values).unwrap();
        let q = Mxfp8.quantize(&weight, 0.0).unwrap();
        let scales = &q.get("weight_scale").unwrap().data;
        assert_eq!(q.get("weight_scale").unwrap().shape, [4, 2]);
        for (block, &biased) in values.chunks_exact(32).zip(scales.iter()) {
            assert_eq!(biased, exact_exponent(block.iter().fold(0f32, |m, v| m.max(v.abs()))));
        }
        let (_, restored) = Mxfp8.dequantize("w", &q.views()).unwrap();
        for (i, (a, b)) in restored.iter().zip(&values).enumerate() {
            let step = power_of_two(i32::from(scales[i / 32])) / 512.0;
            assert!((a - b).abs() <= b.abs() / 16.0 + step, "{i}: {a} vs {b}");
        }
        let odd = WeightInput::new("w", Dtype::BF16, &[1, 48], &values[..48]).unwrap();
        assert!(matches!(Mxfp8.quantize(&odd, 0.0), Err(Error::ShapeInvalid { .. })));
    }
}
