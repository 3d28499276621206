//! FP8 per-tensor (`quant_algo: "FP8"`, SPEC §4.1), as ModelOpt 0.47's unified HF export writes it:
//! `weight_scale = amax / 448` (F32 0-d) and `weight = e4m3(W / weight_scale)` (F8_E4M3 `[N, K]`).
//!
//! The division happens in the weight's dtype, as torch does for a tensor divided by a 0-d f32 tensor: the
//! quotient is computed in f32, then rounded to bf16 / f16 for such weights, and only then cast to E4M3 (two
//! roundings). The cast saturates at ±448. Where the division runs decides the divisor: torch on the CPU
//! divides by the full f32 scale, torch on CUDA first casts the 0-d scale to the weight's dtype (its kernels
//! load every operand as the common dtype). Measured on an H200 with torch 2.11 (BENCHMARKS.md): ModelOpt's CUDA
//! export equals `e4m3(bf16(W / bf16(scale)))` in every byte, and differs from its CPU export in about 1% of
//! them. [`Fp8::torch_cuda`] selects that arithmetic, so a GPU run writes what ModelOpt writes on a GPU.

mod bf16_scales;
mod block;
mod cuda;
mod per_channel;

pub use bf16_scales::{Fp8Bf16Scales, Fp8Granularity};
pub use block::{dequantize_fp8_blocks, Fp8Block, FP8_BLOCK};
pub use per_channel::Fp8PerChannel;

use super::{
    sanitize_input_amax, sanitize_weight_amax, shape_error, FormatName, OutputTensor, QuantFormat, QuantizedWeight,
    WeightInput,
};
use crate::checkpoint::{Dtype, TensorView};
use crate::error::Result;
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3, round_to_bf16, round_to_f16, E4M3_MAX};

/// FP8 E4M3 weights with one f32 scale per tensor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fp8 {
    /// Divide bf16 / f16 weights by the scale rounded to their dtype, as torch does on CUDA (see the module
    /// documentation); the CPU arithmetic otherwise.
    pub torch_cuda: bool,
}

impl QuantFormat for Fp8 {
    fn name(&self) -> FormatName {
        FormatName::Fp8
    }

    fn quant_algo(&self) -> &'static str {
        "FP8"
    }

    fn group_size(&self) -> Option<usize> {
        None
    }

    fn bits_per_weight(&self) -> f64 {
        8.0
    }

    /// `amax / 448`, after ModelOpt's `export_amax`: 0 or NaN → 448, then clamped to [smallest normal, max] f32.
    fn input_scale(&self, amax: f32) -> f32 {
        sanitize_input_amax(amax, E4M3_MAX).clamp(f32::MIN_POSITIVE, f32::MAX) / E4M3_MAX
    }

    /// `amax / 448`, with a zero amax read as 448 and one below the smallest normal f32 raised to it.
    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        Ok(sanitize_weight_amax(name, amax, E4M3_MAX)? / E4M3_MAX)
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let scale = self.weight_scale(weight.name, amax)?;
        let mut data = crate::memory::try_zeroed(weight.values.len(), || format!("the FP8 codes of {}", weight.name))?;
        let divisor = self.divisor(scale, weight.source_dtype);
        match weight.source_dtype {
            Dtype::BF16 => encode(weight.values, divisor, &mut data, round_to_bf16),
            Dtype::F16 => encode(weight.values, divisor, &mut data, round_to_f16),
            _ => encode(weight.values, divisor, &mut data, |q| q),
        }
        Ok(fp8_weight(weight.shape, data, Vec::new(), &[scale]))
    }

    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![("weight", Dtype::F8E4M3, shape.to_vec()), ("weight_scale", Dtype::F32, Vec::new())]
    }

    /// ModelOpt's one weight quantizer over the whole stack: one scale, each value quantized where it is stored.
    fn stacked_rule(&self) -> Option<crate::formats::StackedRule> {
        Some(crate::formats::StackedRule::Whole)
    }

    /// An F8_E4M3 weight with a `weight_scale` beside it.
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::F8E4M3), Some(scale)] if scale.is_float())
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, scale] = parts else {
            return Err(crate::error::Error::internal(format!("{name}: FP8 dequantizes a weight and its scale")));
        };
        let shape = super::matrix_shape(weight.name, weight.shape)?;
        if !scale.dtype.is_float() {
            return Err(shape_error(
                scale.name,
                scale.shape,
                format!("the scale of an FP8 weight must be floating point, not {}", scale.dtype),
            ));
        }
        let per_row = scale.shape == [shape[0], 1];
        if scale.shape.len() == 4 || (!per_row && scale.shape == Fp8Block::blocks(shape)) {
            // 128×128 block scales (`fp8_pb_wo`; compressed-tensors' `[N/128, K/128]`).
            return Ok((shape, dequantize_fp8_blocks(name, shape, weight.data, scale)?));
        }
        Ok((shape, dequantize_fp8(name, shape, weight.data, &scale.to_f32())?))
    }

    fn on_device(&self) -> Option<&dyn super::DeviceQuantize> {
        Some(self)
    }
}

impl Fp8 {
    /// What a weight of `dtype` is divided by for its `weight_scale`: the scale itself, or on CUDA (torch's
    /// arithmetic there) the scale rounded to a bf16 / f16 weight's dtype.
    pub fn divisor(&self, scale: f32, dtype: Dtype) -> f32 {
        match dtype {
            Dtype::BF16 if self.torch_cuda => round_to_bf16(scale),
            Dtype::F16 if self.torch_cuda => round_to_f16(scale),
            _ => scale,
        }
    }
}

/// An FP8 weight `[N, K]`: its E4M3 codes (`weight`), then its F32 scales (`weight_scale`) of `scale_shape`
/// (0-d for one per tensor).
pub(super) fn fp8_weight(
    shape: [usize; 2],
    codes: Vec<u8>,
    scale_shape: Vec<usize>,
    scales: &[f32],
) -> QuantizedWeight {
    QuantizedWeight {
        tensors: vec![
            OutputTensor { suffix: "weight", dtype: Dtype::F8E4M3, shape: shape.to_vec(), data: codes },
            OutputTensor {
                suffix: "weight_scale",
                dtype: Dtype::F32,
                shape: scale_shape,
                data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            },
        ],
    }
}

/// FP8 weight `[N, K]` (E4M3 bytes) times its scale: one per tensor (`scales.len() == 1`) or one per row
/// (`scales.len() == N`). Returns `N·K` f32 values, row major.
pub fn dequantize_fp8(name: &str, shape: [usize; 2], codes: &[u8], scales: &[f32]) -> Result<Vec<f32>> {
    let [rows, cols] = shape;
    if rows.checked_mul(cols) != Some(codes.len()) {
        return Err(shape_error(name, &shape, format!("{} FP8 bytes were given for this shape", codes.len())));
    }
    match scales.len() {
        1 => {
            let scale = scales[0];
            Ok(codes.iter().map(|&b| e4m3_to_f32(b) * scale).collect())
        }
        n if n == rows => {
            let mut values = Vec::with_capacity(codes.len());
            for (row, &scale) in codes.chunks_exact(cols.max(1)).zip(scales) {
                values.extend(row.iter().map(|&b| e4m3_to_f32(b) * scale));
            }
            Ok(values)
        }
        n => Err(shape_error(
            name,
            &shape,
            format!("an FP8 weight needs one weight_scale per tensor or one per row ({rows}), got {n}"),
        )),
    }
}

/// `out[i] = e4m3(round(values[i] / scale))`; `round` is generic so each dtype gets its own tight loop.
#[inline]
fn encode(values: &[f32], scale: f32, out: &mut [u8], round: impl Fn(f32) -> f32) {
    for (byte, &value) in out.iter_mut().zip(values) {
        *byte = f32_to_e4m3(round(value / scale));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::e4m3::{f32_to_e4m3_reference, round_to_dtype};

    /// The obviously correct path: the nearest-code search encoder, element by element.
    fn quantize_reference(weight: &WeightInput, amax: f32) -> (Vec<u8>, f32) {
        let amax = if amax == 0.0 { E4M3_MAX } else { amax.max(f32::MIN_POSITIVE) };
        let scale = amax / E4M3_MAX;
        let bytes = weight
            .values
            .iter()
            .map(|&v| f32_to_e4m3_reference(round_to_dtype(v / scale, weight.source_dtype)))
            .collect();
        (bytes, scale)
    }

    fn scale_of(q: &QuantizedWeight) -> f32 {
        let t = q.get("weight_scale").unwrap();
        assert_eq!((t.dtype, t.shape.len()), (Dtype::F32, 0));
        f32::from_le_bytes(t.data.clone().try_into().unwrap())
    }

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Magnitudes over several decades, so small values reach E4M3's subnormal range.
                unit * 10f32.powi((i % 7) as i32 - 4)
            })
            .collect()
    }

    #[test]
    fn writes_the_tensors_of_spec_section_5() {
        let values = [1.0f32, -2.0, 0.5, 448.0, -0.0, 3.0];
        let weight = WeightInput::new("w", Dtype::F32, &[2, 3], &values).unwrap();
        let q = Fp8::default().quantize(&weight, 448.0).unwrap();
        let suffixes: Vec<_> = q.tensors.iter().map(|t| t.suffix).collect();
        assert_eq!(suffixes, ["weight", "weight_scale"]);
        let w = q.get("weight").unwrap();
        assert_eq!((w.dtype, w.shape.as_slice()), (Dtype::F8E4M3, &[2usize, 3][..]));
        assert_eq!(w.data, [0x38, 0xC0, 0x30, 0x7E, 0x80, 0x44]);
        assert_eq!(scale_of(&q), 1.0);
    }

    #[test]
    fn all_zero_weight_gets_scale_one_not_nan() {
        let values = [0.0f32, -0.0, 0.0, -0.0];
        let weight = WeightInput::new("w", Dtype::BF16, &[1, 4], &values).unwrap();
        let q = Fp8::default().quantize(&weight, 0.0).unwrap();
        assert_eq!(scale_of(&q), 1.0);
        assert_eq!(q.get("weight").unwrap().data, [0x00, 0x80, 0x00, 0x80]);
    }

    #[test]
    fn saturates_when_the_amax_is_below_the_weights_max() {
        let values = [4.0f32, -4.0, 1.0, 2.0];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 4], &values).unwrap();
        // scale = 2/448: 4 → 896 → 448, 1 → 224, 2 → 448.
        let q = Fp8::default().quantize(&weight, 2.0).unwrap();
        assert_eq!(q.get("weight").unwrap().data, [0x7E, 0xFE, f32_to_e4m3(224.0), 0x7E]);
    }

    #[test]
    fn subnormal_outputs() {
        // amax 448 makes the scale 1, so the weight is encoded as is.
        let values = [2f32.powi(-9), 2f32.powi(-10), 3.0 * 2f32.powi(-10), -7.0 * 2f32.powi(-9), 1e-12, -1e-12];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 6], &values).unwrap();
        let q = Fp8::default().quantize(&weight, 448.0).unwrap();
        assert_eq!(q.get("weight").unwrap().data, [0x01, 0x00, 0x02, 0x87, 0x00, 0x80]);
    }

    #[test]
    fn bf16_weights_divide_in_bf16() {
        // Find a bf16 value whose quotient E4M3-rounds differently once rounded to bf16 first; a BF16 weight
        // must take that path and an F32 weight (same value) the direct one.
        let amax = 0.7f32 * 448.0;
        let scale = amax / 448.0;
        let mut differing = None;
        for i in 0..4096 {
            let v = round_to_bf16(0.001 + i as f32 * 0.0731);
            let direct = f32_to_e4m3(v / scale);
            let via_bf16 = f32_to_e4m3(round_to_bf16(v / scale));
            if direct != via_bf16 {
                differing = Some((v, via_bf16));
                break;
            }
        }
        let (v, expected) = differing.expect("some value rounds differently through bf16");
        let values = [v];
        let weight = WeightInput::new("w", Dtype::BF16, &[1, 1], &values).unwrap();
        assert_eq!(Fp8::default().quantize(&weight, amax).unwrap().get("weight").unwrap().data, [expected]);
        let weight = WeightInput::new("w", Dtype::F32, &[1, 1], &values).unwrap();
        assert_ne!(Fp8::default().quantize(&weight, amax).unwrap().get("weight").unwrap().data, [expected]);
    }

    #[test]
    fn matches_the_reference_path() {
        for (seed, dtype) in [(1, Dtype::F32), (2, Dtype::BF16), (3, Dtype::F16)] {
            let values: Vec<f32> = random_values(64 * 48, seed).into_iter().map(|v| round_to_dtype(v, dtype)).collect();
            let weight = WeightInput::new("w", dtype, &[64, 48], &values).unwrap();
            let amax = crate::numerics::weight_amax(&values);
            for amax in [amax, amax * 1.37, amax * 0.25, 0.0] {
                let q = Fp8::default().quantize(&weight, amax).unwrap();
                let (bytes, scale) = quantize_reference(&weight, amax);
                assert_eq!(q.get("weight").unwrap().data, bytes, "{dtype} amax {amax}");
                assert_eq!(scale_of(&q), scale);
            }
        }
    }

    #[test]
    fn dequantized_values_are_close() {
        let values = random_values(256, 9);
        let weight = WeightInput::new("w", Dtype::F32, &[16, 16], &values).unwrap();
        let amax = crate::numerics::weight_amax(&values);
        let q = Fp8::default().quantize(&weight, amax).unwrap();
        let scale = scale_of(&q);
        for (&v, &b) in values.iter().zip(&q.get("weight").unwrap().data) {
            let back = e4m3_to_f32(b) * scale;
            // Half an E4M3 ulp relative (2^-4), or half the subnormal step.
            assert!((back - v).abs() <= v.abs() / 16.0 + scale * 2f32.powi(-10), "{v} → {back}");
        }
    }

    #[test]
    fn input_scale_follows_modelopt() {
        assert_eq!(Fp8::default().input_scale(448.0), 1.0);
        assert_eq!(Fp8::default().input_scale(0.0), 1.0, "a zero amax becomes 448");
        assert_eq!(Fp8::default().input_scale(f32::NAN), 1.0);
        assert_eq!(Fp8::default().input_scale(f32::INFINITY), f32::MAX / 448.0);
        assert_eq!(Fp8::default().input_scale(1e-45), f32::MIN_POSITIVE / 448.0);
        assert_eq!(Fp8::default().input_scale(3.5), 3.5 / 448.0);
    }

    #[test]
    fn on_cuda_bf16_weights_are_divided_by_the_scale_rounded_to_bf16() {
        // amax 1.0: scale 1/448 is not a bf16 value, so the two arithmetics differ on some weights.
        let values: Vec<f32> = (0..4096).map(|i| round_to_bf16((i as f32 - 2048.0) / 2048.0)).collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[64, 64], &values).unwrap();
        let cpu = Fp8::default().quantize(&weight, 1.0).unwrap();
        let cuda = Fp8 { torch_cuda: true }.quantize(&weight, 1.0).unwrap();
        let scale = 1.0f32 / 448.0;
        let bf16_scale = round_to_bf16(scale);
        assert_ne!(scale, bf16_scale);
        let expected: Vec<u8> = values.iter().map(|&v| f32_to_e4m3(round_to_bf16(v / bf16_scale))).collect();
        assert_eq!(cuda.get("weight").unwrap().data, expected);
        let differing = cpu.get("weight").unwrap().data.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert!(differing > 0, "the two arithmetics should differ on some of these weights");
        // The scale written is the same f32 value either way; f32 weights are unaffected.
        assert_eq!(cuda.get("weight_scale").unwrap().data, cpu.get("weight_scale").unwrap().data);
        let weight = WeightInput::new("w", Dtype::F32, &[64, 64], &values).unwrap();
        assert_eq!(
            Fp8 { torch_cuda: true }.quantize(&weight, 1.0).unwrap().get("weight").unwrap().data,
            Fp8::default().quantize(&weight, 1.0).unwrap().get("weight").unwrap().data
        );
    }
}
