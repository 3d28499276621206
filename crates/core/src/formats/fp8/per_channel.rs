//! FP8 per channel, per token (`quant_algo: "FP8_PER_CHANNEL_PER_TOKEN"`), as ModelOpt 0.47's unified HF
//! export writes it: one f32 scale per output row, `weight_scale[n] = amax_n / 448` (F32 `[N]`, `amax_n` the
//! row's max |W| after `export_amax`: 0 → 448, then clamped to [smallest normal, max] f32), and
//! `weight = e4m3(W / weight_scale[n])` (F8_E4M3 `[N, K]`). Torch divides a bf16 weight by an `[N, 1]` f32
//! tensor in f32 (it promotes: the divisor is not 0-d), so there is one rounding, on the CPU and on CUDA
//! alike. Activations are quantized per token by the serving engine at run time: no `input_scale`, no
//! calibration.

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::{
    dequantize_fp8, sanitize_weight_amax, shape_error, FormatName, OutputTensor, QuantFormat, QuantizedWeight,
    WeightInput,
};
use crate::numerics::e4m3::{f32_to_e4m3, E4M3_MAX};

/// FP8 E4M3 weights with one f32 scale per output channel; activations dynamic per token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fp8PerChannel;

impl QuantFormat for Fp8PerChannel {
    fn name(&self) -> FormatName {
        FormatName::Fp8PcPt
    }

    fn quant_algo(&self) -> &'static str {
        "FP8_PER_CHANNEL_PER_TOKEN"
    }

    fn group_size(&self) -> Option<usize> {
        None
    }

    fn bits_per_weight(&self) -> f64 {
        8.0
    }

    /// Per-channel scales have no per-tensor scale.
    fn weight_scale(&self, name: &str, _amax: f32) -> Result<f32> {
        Err(Error::internal(format!("{name}: FP8_PER_CHANNEL_PER_TOKEN has one weight scale per row, not per tensor")))
    }

    fn calibrated(&self) -> bool {
        false
    }

    /// Never written (activations are scaled per token at run time); the per-tensor FP8 rule for callers
    /// that ask anyway.
    fn input_scale(&self, amax: f32) -> f32 {
        super::Fp8::default().input_scale(amax)
    }

    /// Each row with its own amax; the per-tensor `amax` is not used.
    fn quantize(&self, weight: &WeightInput, _amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let [rows, cols] = weight.shape;
        let mut codes = crate::memory::try_zeroed(weight.values.len(), || format!("the FP8 codes of {}", weight.name))?;
        let mut scales = Vec::with_capacity(rows * 4);
        if cols > 0 {
            for (row, out) in weight.values.chunks_exact(cols).zip(codes.chunks_exact_mut(cols)) {
                let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let scale = sanitize_weight_amax(weight.name, amax, E4M3_MAX)? / E4M3_MAX;
                for (byte, &value) in out.iter_mut().zip(row) {
                    *byte = f32_to_e4m3(value / scale);
                }
                scales.extend_from_slice(&scale.to_le_bytes());
            }
        } else {
            scales.resize(rows * 4, 0);
            for chunk in scales.chunks_exact_mut(4) {
                chunk.copy_from_slice(&1.0f32.to_le_bytes());
            }
        }
        Ok(QuantizedWeight {
            tensors: vec![
                OutputTensor { suffix: "weight", dtype: Dtype::F8E4M3, shape: vec![rows, cols], data: codes },
                OutputTensor { suffix: "weight_scale", dtype: Dtype::F32, shape: vec![rows], data: scales },
            ],
        })
    }

    fn output_layout(&self, [rows, cols]: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![("weight", Dtype::F8E4M3, vec![rows, cols]), ("weight_scale", Dtype::F32, vec![rows])]
    }

    /// A per-channel quantizer over axis 0 of a stack `[E, K, N]` has one channel per expert: one scale each.
    fn stacked_rule(&self) -> Option<crate::formats::StackedRule> {
        Some(crate::formats::StackedRule::ExpertChannel)
    }

    /// An F8_E4M3 weight with an F32 `weight_scale` of one dimension beside it (checked in `dequantize`).
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::F8E4M3), Some(Dtype::F32)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, scale] = parts else {
            return Err(Error::internal(format!("{name}: FP8 dequantizes a weight and its scale")));
        };
        let shape = crate::formats::matrix_shape(weight.name, weight.shape)?;
        if scale.shape != [shape[0]] {
            return Err(shape_error(
                scale.name,
                scale.shape,
                format!("expected one scale per row of {name}: [{}]", shape[0]),
            ));
        }
        Ok((shape, dequantize_fp8(name, shape, weight.data, &scale.to_f32())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3_reference};

    #[test]
    fn one_scale_per_row_and_one_rounding() {
        // Row 0 spans the E4M3 range, row 1 is all zero (scale 1), row 2 is tiny (below the smallest normal).
        let mut values = vec![0.0f32; 3 * 16];
        for (i, v) in values[..16].iter_mut().enumerate() {
            *v = (i as f32 - 7.5) * 0.37;
        }
        values[32] = 1e-39;
        let weight = WeightInput::new("w", Dtype::BF16, &[3, 16], &values).unwrap();
        let q = Fp8PerChannel.quantize(&weight, 123.0).unwrap();
        let scales: Vec<f32> = q
            .get("weight_scale")
            .unwrap()
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(scales, vec![7.5 * 0.37 / 448.0, 1.0, f32::MIN_POSITIVE / 448.0]);
        let codes = &q.get("weight").unwrap().data;
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(codes[i], f32_to_e4m3_reference(v / scales[i / 16]), "element {i}");
        }
        assert_eq!(e4m3_to_f32(codes[15]), 448.0);
        let (shape, restored) = Fp8PerChannel.dequantize("w", &q.views()).unwrap();
        assert_eq!(shape, [3, 16]);
        assert!((restored[15] - values[15]).abs() < 1e-6);
        assert_eq!(
            Fp8PerChannel.output_layout([3, 16]),
            vec![("weight", Dtype::F8E4M3, vec![3, 16]), ("weight_scale", Dtype::F32, vec![3])]
        );
        assert!(!Fp8PerChannel.calibrated());
    }
}
