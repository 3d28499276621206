//! FP8 E4M3 with bf16 scales, for checkpoints in the compressed-tensors form (`float-quantized`), whose scales are
//! stored in the model's 16-bit dtype as llm-compressor writes them. The arithmetic is llm-compressor's (its
//! observers and `calculate_qparams` run in the weight's dtype):
//!
//! - per group (the tensor, a row, or a 128×128 block), `scale = bf16(amax / 448)`, with amax the group's max |W|
//!   (a zero amax reads as 448, as for ModelOpt's formats, so an all-zero group has scale 1);
//! - `weight = e4m3(round(W / scale))`, the quotient rounded to the weight's dtype before the E4M3 cast (torch
//!   divides a bf16 weight by a bf16 scale in bf16), saturating at ±448;
//! - static activations (per tensor) get `bf16(amax / 448)`.
//!
//! The tensors come out in the form of the ModelOpt format of the same granularity ([`super::Fp8`],
//! [`super::Fp8PerChannel`], [`super::Fp8Block`]: F32 scales, every one exactly a bf16 value), so that reading
//! them back and re-encoding them for compressed-tensors (`export::compressed`) is lossless. Projections that
//! read one input do not share an amax: llm-compressor keeps one scale per linear.

use super::{Fp8, Fp8Block, Fp8PerChannel, FP8_BLOCK};
use crate::checkpoint::{Dtype, TensorView};
use crate::error::Result;
use crate::formats::{sanitize_weight_amax, FormatName, QuantFormat, QuantizedWeight, WeightInput};
use crate::numerics::e4m3::{f32_to_e4m3, round_to_bf16, round_to_dtype, E4M3_MAX};

/// Which values share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Granularity {
    /// One scale per tensor, calibrated static activations (`fp8`).
    Tensor,
    /// One scale per output row, dynamic per-token activations (`fp8_pc_pt`).
    Channel,
    /// One scale per 128×128 block (`fp8_pb_wo`).
    Block,
}

/// FP8 with bf16 scales at the given granularity (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Fp8Bf16Scales {
    pub granularity: Fp8Granularity,
}

impl Fp8Bf16Scales {
    /// The ModelOpt format whose tensor form this one shares.
    fn modelopt(&self) -> Box<dyn QuantFormat> {
        match self.granularity {
            Fp8Granularity::Tensor => Box::new(Fp8::default()),
            Fp8Granularity::Channel => Box::new(Fp8PerChannel),
            Fp8Granularity::Block => Box::new(Fp8Block),
        }
    }

    fn scale(name: &str, amax: f32) -> Result<f32> {
        Ok(round_to_bf16(sanitize_weight_amax(name, amax, E4M3_MAX)? / E4M3_MAX))
    }
}

impl QuantFormat for Fp8Bf16Scales {
    fn name(&self) -> FormatName {
        self.modelopt().name()
    }

    fn quant_algo(&self) -> &'static str {
        self.modelopt().quant_algo()
    }

    fn group_size(&self) -> Option<usize> {
        None
    }

    fn bits_per_weight(&self) -> f64 {
        8.0
    }

    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        Self::scale(name, amax)
    }

    fn calibrated(&self) -> bool {
        self.granularity == Fp8Granularity::Tensor
    }

    fn input_scale(&self, amax: f32) -> f32 {
        round_to_bf16(Fp8::default().input_scale(amax))
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let [rows, cols] = weight.shape;
        let (row_groups, col_groups, group_rows, group_cols) = match self.granularity {
            Fp8Granularity::Tensor => (1, 1, rows.max(1), cols.max(1)),
            Fp8Granularity::Channel => (rows, 1, 1, cols.max(1)),
            Fp8Granularity::Block => {
                let [r, c] = Fp8Block::blocks(weight.shape);
                (r, c, FP8_BLOCK, FP8_BLOCK)
            }
        };
        let group = |r: usize, c: usize| (r / group_rows) * col_groups + c / group_cols;
        let mut amaxes = vec![0f32; row_groups * col_groups];
        if self.granularity == Fp8Granularity::Tensor {
            amaxes[0] = amax;
        } else {
            for (r, row) in weight.values.chunks_exact(cols.max(1)).enumerate() {
                for (c, value) in row.iter().enumerate() {
                    let slot = &mut amaxes[group(r, c)];
                    *slot = slot.max(value.abs());
                }
            }
        }
        let scales = amaxes.iter().map(|&a| Self::scale(weight.name, a)).collect::<Result<Vec<f32>>>()?;
        let mut codes = crate::memory::try_zeroed(weight.values.len(), || format!("the FP8 codes of {}", weight.name))?;
        for (r, (row, out)) in
            weight.values.chunks_exact(cols.max(1)).zip(codes.chunks_exact_mut(cols.max(1))).enumerate()
        {
            for (c, (byte, &value)) in out.iter_mut().zip(row).enumerate() {
                *byte = f32_to_e4m3(round_to_dtype(value / scales[group(r, c)], weight.source_dtype));
            }
        }
        let scale_shape = match self.granularity {
            Fp8Granularity::Tensor => Vec::new(),
            Fp8Granularity::Channel => vec![rows],
            Fp8Granularity::Block => Fp8Block::scale_shape(weight.shape),
        };
        Ok(super::fp8_weight(weight.shape, codes, scale_shape, &scales))
    }

    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        self.modelopt().output_layout(shape)
    }

    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        self.modelopt().recognizes(dtypes)
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        self.modelopt().dequantize(name, parts)
    }

    /// llm-compressor gives every linear its own per-tensor scale.
    fn shares_amax(&self, _first: [usize; 2]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3_reference};

    fn bf16_values(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let unit = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                round_to_bf16(unit * 10f32.powi((i % 5) as i32 - 3))
            })
            .collect()
    }

    fn scales_of(q: &QuantizedWeight) -> Vec<f32> {
        q.get("weight_scale").unwrap().data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// Element by element: the group's amax, its bf16 scale, the quotient rounded to bf16, the nearest E4M3 code.
    fn check(granularity: Fp8Granularity, shape: [usize; 2], group_of: impl Fn(usize, usize) -> usize) {
        let values = bf16_values(shape[0] * shape[1], 11);
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let input = WeightInput::new("w", Dtype::BF16, &shape, &values).unwrap();
        let q = Fp8Bf16Scales { granularity }.quantize(&input, amax).unwrap();
        let scales = scales_of(&q);
        let mut group_amax = vec![0f32; scales.len()];
        for (i, v) in values.iter().enumerate() {
            let g = group_of(i / shape[1], i % shape[1]);
            group_amax[g] = group_amax[g].max(v.abs());
        }
        for (g, (&scale, &a)) in scales.iter().zip(&group_amax).enumerate() {
            assert_eq!(scale, half::bf16::from_f32(a / 448.0).to_f32(), "group {g}");
        }
        let codes = &q.get("weight").unwrap().data;
        for (i, &v) in values.iter().enumerate() {
            let scale = scales[group_of(i / shape[1], i % shape[1])];
            let quotient = half::bf16::from_f32(v / scale).to_f32();
            assert_eq!(codes[i], f32_to_e4m3_reference(quotient), "element {i}: {v} / {scale}");
            assert!((e4m3_to_f32(codes[i]) * scale - v).abs() <= v.abs() / 8.0 + scale / 512.0);
        }
    }

    #[test]
    fn per_tensor_per_row_and_per_block_scales_are_bf16_and_the_quotient_is_rounded_to_bf16() {
        check(Fp8Granularity::Tensor, [16, 48], |_, _| 0);
        check(Fp8Granularity::Channel, [16, 48], |r, _| r);
        check(Fp8Granularity::Block, [200, 300], |r, c| (r / 128) * 3 + c / 128);
    }

    #[test]
    fn forms_and_rules_follow_the_modelopt_format_of_the_same_granularity() {
        let block = Fp8Bf16Scales { granularity: Fp8Granularity::Block };
        assert_eq!(block.output_layout([200, 300]), Fp8Block.output_layout([200, 300]));
        assert_eq!(block.name(), FormatName::Fp8PbWo);
        let tensor = Fp8Bf16Scales { granularity: Fp8Granularity::Tensor };
        assert!(tensor.calibrated() && !block.calibrated());
        assert!(!tensor.shares_amax([1, 1]));
        assert_eq!(tensor.input_scale(448.0 * 3.0), 3.0);
        assert_eq!(tensor.input_scale(1.0), half::bf16::from_f32(1.0 / 448.0).to_f32());
        // A zero weight reads as amax 448: scale 1, all codes zero.
        let zeros = [0f32; 32];
        let q = tensor.quantize(&WeightInput::new("w", Dtype::BF16, &[2, 16], &zeros).unwrap(), 0.0).unwrap();
        assert_eq!(scales_of(&q), [1.0]);
        assert!(q.get("weight").unwrap().data.iter().all(|&b| b == 0));
    }
}
