//! NVFP4 as compressed-tensors computes and stores it (llm-compressor's NVFP4 and NVFP4A16 presets), for checkpoints
//! in that form. Its observers and `generate_gparam` run in the weight's dtype, so the global scale is a rounded
//! divisor where ModelOpt's `weight_scale_2` is an exact f32 multiplier:
//!
//! - `weight_global_scale = bf16(bf16(1 / amax) · 448·6)` (torch's number-over-tensor division; F32 `[1]`; the amax shared over q/k/v and gate/up, as for
//!   ModelOpt; a non-finite quotient, from a zero amax, becomes 1);
//! - per block of 16 along K: `s = e4m3(clamp(gs · bf16(block_amax / 6), ±448))`, 0.125 where that is 0
//!   (`weight_scale`, F8_E4M3 `[N, K/16]`);
//! - `weight = e2m1(clamp(W / (f32(s) / gs), ±6))` in f32, packed two per byte as ModelOpt packs them (U8 `[N, K/2]`);
//! - activations (NVFP4): `input_global_scale`, the same of the activations' amax (F32 `[1]`).
//!
//! "bf16" is the weight's dtype (no rounding for f32 weights). Read back: `W = e2m1 · f32(s) / gs`.

use super::NVFP4_BLOCK;
use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::{shape_error, FormatName, OutputTensor, QuantFormat, QuantizedWeight, WeightInput};
use crate::numerics::e2m1::{e2m1_code, e2m1_to_f32, pack_pair, unpack_pair, E2M1_MAX};
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3, round_to_dtype, E4M3_MAX};

/// The E4M3 code of 0.125, compressed-tensors' replacement for a zero block scale.
const EPS_SCALE: u8 = 0x20;

/// NVFP4 with compressed-tensors' arithmetic; `weight_only` for NVFP4A16 (no input scale).
#[derive(Debug, Clone, Copy)]
pub struct Nvfp4CompressedTensors {
    pub weight_only: bool,
}

/// `448·6 / amax` in `dtype` as torch computes a number divided by a tensor (`amax.reciprocal() * 2688`, two
/// roundings), 1 where that is not finite.
fn global_scale(amax: f32, dtype: Dtype) -> f32 {
    let reciprocal = round_to_dtype(1.0 / amax.max(f32::MIN_POSITIVE), dtype);
    let scale = round_to_dtype(reciprocal * (E4M3_MAX * E2M1_MAX), dtype);
    if scale.is_finite() {
        scale
    } else {
        1.0
    }
}

impl QuantFormat for Nvfp4CompressedTensors {
    fn name(&self) -> FormatName {
        if self.weight_only {
            FormatName::W4a16Nvfp4
        } else {
            FormatName::Nvfp4
        }
    }

    fn quant_algo(&self) -> &'static str {
        if self.weight_only {
            "W4A16_NVFP4"
        } else {
            "NVFP4"
        }
    }

    fn group_size(&self) -> Option<usize> {
        Some(NVFP4_BLOCK)
    }

    fn bits_per_weight(&self) -> f64 {
        4.0 + 8.0 / NVFP4_BLOCK as f64
    }

    /// ModelOpt's convention (a multiplier), for callers that ask: `1 / weight_global_scale` of a bf16 weight.
    fn weight_scale(&self, _name: &str, amax: f32) -> Result<f32> {
        Ok(1.0 / global_scale(amax, Dtype::BF16))
    }

    fn calibrated(&self) -> bool {
        !self.weight_only
    }

    /// `input_global_scale` for bf16 activations.
    fn input_scale(&self, amax: f32) -> f32 {
        global_scale(amax, Dtype::BF16)
    }

    fn input_scale_tensor(&self, amax: f32) -> OutputTensor {
        OutputTensor { shape: vec![1], ..OutputTensor::scalar_f32("input_global_scale", self.input_scale(amax)) }
    }

    fn input_scale_layout(&self) -> (&'static str, Dtype, Vec<usize>) {
        ("input_global_scale", Dtype::F32, vec![1])
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let [rows, cols] = weight.shape;
        if cols % NVFP4_BLOCK != 0 {
            return Err(shape_error(
                weight.name,
                &weight.shape,
                format!("NVFP4 quantizes blocks of {NVFP4_BLOCK} along the input dimension, and K = {cols} is not"),
            ));
        }
        let gs = global_scale(amax, weight.source_dtype);
        let mut scales = crate::memory::try_zeroed(weight.values.len() / NVFP4_BLOCK, || {
            format!("the NVFP4 scales of {}", weight.name)
        })?;
        let mut packed =
            crate::memory::try_zeroed(weight.values.len() / 2, || format!("the NVFP4 codes of {}", weight.name))?;
        let blocks = weight.values.chunks_exact(NVFP4_BLOCK).zip(scales.iter_mut()).zip(packed.chunks_exact_mut(8));
        for ((block, scale_byte), out) in blocks {
            let block_amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let local = gs * round_to_dtype(block_amax / E2M1_MAX, weight.source_dtype);
            *scale_byte = match f32_to_e4m3(local.clamp(-E4M3_MAX, E4M3_MAX)) {
                0 | 0x80 => EPS_SCALE,
                code => code,
            };
            let divisor = e4m3_to_f32(*scale_byte) / gs;
            for (byte, pair) in out.iter_mut().zip(block.chunks_exact(2)) {
                let code = |v: f32| e2m1_code((v / divisor).clamp(-E2M1_MAX, E2M1_MAX));
                *byte = pack_pair(code(pair[0]), code(pair[1]));
            }
        }
        let global = OutputTensor { shape: vec![1], ..OutputTensor::scalar_f32("weight_global_scale", gs) };
        Ok(super::nvfp4_weight([rows, cols], packed, scales, global))
    }

    fn output_layout(&self, [rows, cols]: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![
            ("weight", Dtype::U8, vec![rows, cols / 2]),
            ("weight_scale", Dtype::F8E4M3, vec![rows, cols / NVFP4_BLOCK]),
            ("weight_global_scale", Dtype::F32, vec![1]),
        ]
    }

    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::U8), Some(Dtype::F8E4M3), Some(Dtype::F32)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, block_scales, global] = parts else {
            return Err(Error::internal(format!("{name}: NVFP4 dequantizes a weight and its two scales")));
        };
        let [rows, half_cols] = crate::formats::matrix_shape(weight.name, weight.shape)?;
        let gs = match global.to_f32().as_slice() {
            [value] => *value,
            _ => return Err(shape_error(global.name, global.shape, format!("expected one value for {name}"))),
        };
        if block_scales.data.len() * NVFP4_BLOCK != rows * half_cols * 2 || weight.data.len() != rows * half_cols {
            return Err(shape_error(block_scales.name, block_scales.shape, format!("does not fit {name}")));
        }
        let mut values = Vec::with_capacity(rows * half_cols * 2);
        for (bytes, &scale) in weight.data.chunks_exact(NVFP4_BLOCK / 2).zip(block_scales.data) {
            let block_scale = e4m3_to_f32(scale) / gs;
            for &byte in bytes {
                let (even, odd) = unpack_pair(byte);
                values.push(e2m1_to_f32(even) * block_scale);
                values.push(e2m1_to_f32(odd) * block_scale);
            }
        }
        Ok(([rows, half_cols * 2], values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::e4m3::round_to_bf16;

    #[test]
    fn the_global_scale_is_a_bf16_divisor_and_zero_blocks_get_the_smallest_scale_compressed_tensors_allows() {
        // torch: 2688 / bf16 tensor(0.07470703125) = 35840 (1 / amax = 13.386 → 13.375 in bf16, × 2688 = 35952 →
        // 35840), where one rounding of the quotient 35980.55 would give 36096.
        assert_eq!(global_scale(0.074_707_031_25, Dtype::BF16), 35840.0);
        assert_eq!(round_to_bf16(2688.0 / 0.074_707_031_25), 36096.0);
        assert_eq!(global_scale(0.0371, Dtype::F32), (1.0 / 0.0371f32) * 2688.0);
        assert_eq!(global_scale(0.0, Dtype::BF16), 1.0);
        // Row 0: a block on the E2M1 grid scaled by 2^-4; row 1: all zero.
        let grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let mut values: Vec<f32> = grid.iter().flat_map(|&g| [g / 16.0, -g / 16.0]).collect();
        values.extend([0.0f32; 16]);
        let format = Nvfp4CompressedTensors { weight_only: false };
        let q = format.quantize(&WeightInput::new("w", Dtype::BF16, &[2, 16], &values).unwrap(), 6.0 / 16.0).unwrap();
        let gs = f32::from_le_bytes(q.get("weight_global_scale").unwrap().data.clone().try_into().unwrap());
        assert_eq!(gs, 7168.0);
        // gs · bf16(0.375 / 6) = 448: block scale 448; the zero block's 0 becomes 0.125.
        assert_eq!(q.get("weight_scale").unwrap().data, [0x7E, EPS_SCALE]);
        let back = format.dequantize("w", &q.views()).unwrap().1;
        assert_eq!(&back[..16], &values[..16]);
        assert!(back[16..].iter().all(|&v| v == 0.0));
        let input = format.input_scale_tensor(2688.0);
        assert_eq!(
            (input.suffix, input.shape.as_slice(), input.data.as_slice()),
            ("input_global_scale", &[1][..], &1f32.to_le_bytes()[..])
        );
    }
}
